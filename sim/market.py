"""An observable market around a return model: constituents and a bid-ask spread per path.

``Market(base, ...)`` is itself a return model (the engine's process interface): its return
``r`` is the base model's (the index, the asset the hedge is written on), and its state also
holds what a crash detector can observe each step besides the index price (seed 000 §3.1):

* the step's returns of N constituents, from a one-factor model on the index return,

      r_i = beta_i r + idio_vol sqrt(dt) eps_i,

  as ``stock_sum`` = sum_i r_i and ``stock_sumsq`` = sum_i r_i^2 (float32[n], what the crash
  detector's correlation and dispersion signals need), and with ``constituents="paths"``
  also every name's return ``stocks`` (float32[n, N]). With ``"paths"`` the ``eps_i`` are
  unit-variance Student-t(``idio_nu``), N draws per path and step. With ``"sums"`` (the
  default) they are standard normal and only the two sums are drawn, exactly and at O(1)
  cost whatever N: in an orthonormal basis of span(1, beta) plus its complement,
  ``sum eps = sqrt(N) a``, ``sum beta_i eps_i = mean(beta) sqrt(N) a + |beta - mean(beta)| b``
  and ``sum eps^2 = a^2 + b^2 + chi2(N - 2)`` with ``a, b`` standard normal and the
  chi-square drawn as ``-2 sum log U`` (plus a squared normal for odd N - 2). The -100%
  floor of single names is not applied in ``"sums"`` mode (it binds with probability ~0 at
  daily steps). Either way their pairwise correlation ``beta_i beta_j s^2 / sqrt((beta_i^2 s^2 + e_i^2)(beta_j^2
  s^2 + e_j^2))`` (``s`` the index vol in force, ``e`` the idiosyncratic vols) rises toward
  1 when the index vol jumps in a crash regime: the "collective mode" of §3.1 signal 4.
  Betas are spread evenly over ``[beta_lo, beta_hi]``.
* ``log_spread``: float32[n] log bid-ask spread, an AR(1) around a level that widens with
  the index vol in force and with the crash regime,

      log s_t = log spread + vol_elasticity log(s_t / long_run_vol) + crash_widening 1{crash}
                + x_t,   x_t = phi x_{t-1} + noise sqrt(1 - phi^2) z_t,

  (``s_t`` the base model's ``conditional_vol`` before the step: the regime's sigma, the
  GARCH variance): §3.1 signal 2, liquidity fracture and refill.

The regime (where the base model has one) stays visible as ``state.regime``. Memory is
O(paths x N); nothing grows with the number of steps.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sim import protocols, samplers
from sim.pytree import choice_field, choice_index, pytree_dataclass
from sim.units import per_step_mean, per_step_prob, per_step_vol
from sim.validation import ParameterError, check_int, check_range, check_correlation, check_same_length, check_vector

__all__ = ["Market", "MarketState", "Basket", "BasketState", "factor_correlation", "correlated_normals", "cap_weights"]

_CONSTITUENTS = ("sums", "paths")

_F32 = jnp.float32


def _f(x):
    return jnp.asarray(x, _F32)


class MarketState(NamedTuple):
    base: Any  # the base model's state
    stock_sum: jax.Array  # float32[n], sum of the constituents' simple returns of the last step
    stock_sumsq: jax.Array  # float32[n], sum of their squares
    stocks: Any  # float32[n, N] the returns themselves (``constituents="paths"``), else None
    n_stocks: jax.Array  # float32[], N
    log_spread: jax.Array  # float32[n], log bid-ask spread after the last step
    noise: jax.Array  # float32[n], the spread's AR(1) deviation

    @property
    def regime(self):
        """The base model's regime of the next step (``RegimeSwitching`` only)."""
        return self.base.regime


@pytree_dataclass
class Market:
    """A return model plus observable constituents and spread (see the module docstring).

    Args:
      base: the index return model (``RegimeSwitching``, ``Merton``, ``GarchT``, ...).
      n_stocks: number of constituents N >= 2 (static).
      constituents: "sums" (Gaussian idiosyncratic shocks, only the two sums drawn) or
        "paths" (Student-t shocks, every name's return), static.
      beta_lo, beta_hi: range of the constituents' betas to the index, 0 < lo <= hi.
      idio_vol: annualized idiosyncratic vol of every constituent, > 0.
      idio_nu: Student-t degrees of freedom of the idiosyncratic shocks, > 2.
      spread: the spread level at ``long_run_vol`` in calm times (fraction of price, > 0).
      long_run_vol: reference index vol for the spread level, > 0.
      vol_elasticity: d log spread / d log vol, >= 0.
      crash_widening: log spread added in the crash regime, >= 0.
      phi: AR(1) persistence of the spread noise per step, in [0, 1).
      noise: stationary std of the spread's log noise, >= 0.
    """

    base: Any = None
    n_stocks: int = dataclasses.field(default=10, metadata=dict(static=True))
    constituents: str = dataclasses.field(default="sums", metadata=dict(static=True))
    beta_lo: float = 0.6
    beta_hi: float = 1.4
    idio_vol: float = 0.25
    idio_nu: float = 5.0
    spread: float = 0.0005
    long_run_vol: float = 0.18
    vol_elasticity: float = 1.0
    crash_widening: float = 1.0
    phi: float = 0.9
    noise: float = 0.2

    def validate(self, dt: float) -> None:
        if self.base is None or not hasattr(self.base, "step"):
            raise ParameterError(f"Market.base must be a return model, got {self.base!r}")
        if isinstance(self.base, Market):
            raise ParameterError("Market.base must not itself be a Market")
        self.base.validate(dt)
        check_int("Market.n_stocks", self.n_stocks, 2, 10_000)
        if self.constituents not in _CONSTITUENTS:
            raise ParameterError(f"Market.constituents = {self.constituents!r}; allowed: {list(_CONSTITUENTS)}")
        check_range("Market.beta_lo", self.beta_lo, 0.0, 10.0, lo_closed=False)
        check_range("Market.beta_hi", self.beta_hi, self.beta_lo, 10.0)
        check_range("Market.idio_vol", self.idio_vol, 0.0, 10.0, lo_closed=False)
        check_range("Market.idio_nu", self.idio_nu, 2.0, 1e6, lo_closed=False)
        check_range("Market.spread", self.spread, 0.0, 1.0, lo_closed=False)
        check_range("Market.long_run_vol", self.long_run_vol, 0.0, 10.0, lo_closed=False)
        check_range("Market.vol_elasticity", self.vol_elasticity, 0.0, 100.0)
        check_range("Market.crash_widening", self.crash_widening, 0.0, 100.0)
        check_range("Market.phi", self.phi, 0.0, 1.0, hi_closed=False)
        check_range("Market.noise", self.noise, 0.0, 10.0)
        protocols.require(self.base, protocols.ConditionalVol, needed_by="Market.base (the spread follows its vol)")

    @property
    def max_steps(self):
        return getattr(self.base, "max_steps", None)

    def betas(self):
        return jnp.linspace(_f(self.beta_lo), _f(self.beta_hi), self.n_stocks)

    def _crash(self, base_state):
        regime = getattr(base_state, "regime", None)
        return jnp.zeros((), bool) if regime is None else regime == 1

    def init(self, key, n: int, dt: float) -> MarketState:
        k_base, k_noise = jax.random.split(key)
        base = self.base.init(k_base, n, dt)
        noise = _f(self.noise) * samplers.normal(k_noise, n)
        z = jnp.zeros((n,), _F32)
        stocks = jnp.zeros((n, self.n_stocks), _F32) if self.constituents == "paths" else None
        return MarketState(base, z, z, stocks, _f(self.n_stocks), self._log_spread(base, noise, dt), noise)

    def _log_spread(self, base_state, noise, dt):
        vol = jnp.maximum(self.base.conditional_vol(base_state, dt), 1e-6)
        return (jnp.log(_f(self.spread)) + _f(self.vol_elasticity) * jnp.log(vol / _f(self.long_run_vol))
                + _f(self.crash_widening) * self._crash(base_state).astype(_F32) + noise)

    def step(self, key, state: MarketState, n: int, dt: float):
        k_base, k_idio, k_noise = jax.random.split(key, 3)
        # The spread of this step reflects the vol and regime in force for it.
        phi = _f(self.phi)
        noise = phi * state.noise + _f(self.noise) * jnp.sqrt(1.0 - phi * phi) * samplers.normal(k_noise, n)
        log_spread = self._log_spread(state.base, noise, dt)
        base, r = self.base.step(k_base, state.base, n, dt)
        e = per_step_vol(_f(self.idio_vol), dt)
        beta = self.betas()
        if self.constituents == "paths":
            nu = _f(self.idio_nu)
            eps = samplers.student_t(k_idio, n * self.n_stocks, nu).reshape(n, self.n_stocks) * jnp.sqrt((nu - 2.0) / nu)
            stocks = jnp.maximum(r[:, None] * beta + e * eps, -1.0)
            s1, s2 = jnp.sum(stocks, axis=1), jnp.sum(stocks * stocks, axis=1)
        else:
            stocks = None
            N = self.n_stocks
            k_a, k_b, k_chi = jax.random.split(k_idio, 3)
            a, b = samplers.normal(k_a, n), samplers.normal(k_b, n)
            chi = jnp.zeros((n,), _F32)  # chi2(N - 2): -2 log U is chi2(2); a squared normal chi2(1)
            m = (N - 2) // 2
            for j in range(m // 2):  # two uniforms per hash
                u1, u2 = samplers.uniform_pair(jax.random.fold_in(k_chi, j), n)
                chi = chi - 2.0 * jnp.log(u1 * u2)
            if m % 2:
                chi = chi - 2.0 * jnp.log(samplers.uniform(jax.random.fold_in(k_chi, m), n))
            if (N - 2) % 2:
                z = samplers.normal(jax.random.fold_in(k_chi, m + 1), n)
                chi = chi + z * z
            sqrt_n = jnp.sqrt(_f(N))
            b_mean = jnp.mean(beta)
            b_spread = jnp.sqrt(jnp.sum((beta - b_mean) ** 2))
            sum_eps = sqrt_n * a
            sum_beta_eps = b_mean * sqrt_n * a + b_spread * b
            sum_eps2 = a * a + b * b + chi
            s1 = r * jnp.sum(beta) + e * sum_eps
            s2 = r * r * jnp.sum(beta * beta) + 2.0 * r * e * sum_beta_eps + e * e * sum_eps2
        return MarketState(base, s1, s2, stocks, _f(self.n_stocks), log_spread, noise), r

    def provides(self, capability) -> bool:
        """The base model's capabilities pass through (``sim.protocols.supports``)."""
        return protocols.supports(self.base, capability)

    def true_regime(self, state: MarketState):
        return self.base.true_regime(state.base)

    def conditional_vol(self, state: MarketState, dt: float):
        return self.base.conditional_vol(state.base, dt)

    def annual_moments(self, *args):
        return self.base.annual_moments(*args)


def factor_correlation(betas, index_vol, idio_vol) -> np.ndarray:
    """The one-factor model's pairwise correlation matrix at a given index vol (float64)."""
    b = np.asarray(betas, np.float64)
    cov = np.outer(b, b) * index_vol**2 + np.eye(b.size) * np.asarray(idio_vol, np.float64) ** 2
    sd = np.sqrt(np.diag(cov))
    return cov / np.outer(sd, sd)


def correlated_normals(key, n: int, corr) -> jax.Array:
    """``float32[n, N]`` standard normal rows with correlation matrix ``corr`` ([N, N], PSD).

    Rows are ``z L^T`` with ``L`` the lower Cholesky factor of ``corr`` (``corr = L L^T``), so
    ``cov(row) = L cov(z) L^T = corr``. Multiplying by ``L`` on the other side (``z L``, a
    bug seen in a peer library) gives covariance ``L^T L``, a different matrix whenever the
    correlations are not all equal; ``tests/test_regime.py`` checks against it. A PSD matrix
    with zero eigenvalues is factored with a 1e-12 diagonal jitter.
    """
    c = check_correlation(corr)
    L = np.linalg.cholesky(c + 1e-12 * np.eye(c.shape[0]))
    z = samplers.normal(key, n * c.shape[0]).reshape(n, c.shape[0])
    return z @ jnp.asarray(L.T, _F32)


# --------------------------------------------------------------------------- constituent paths

_STARTS = ("stationary", "calm", "crash")


class BasketState(NamedTuple):
    prices: jax.Array  # float32[n, N], the constituents' prices after the last step
    stocks: jax.Array  # float32[n, N], their simple returns over the last step
    regime: jax.Array  # int32[n], 0 calm, 1 crash: the regime of the next step


@pytree_dataclass
class Basket:
    """N constituent price paths and the index built from them: a return model whose return
    is the index's, ``I = sum_i w_i S_i`` (``w_i`` share counts), so that the market-cap
    weights ``p_i = w_i S_i / I`` drift along each path and ``dI / I = sum_i p_i r_i`` with
    ``p`` at the start of the step (seed 003).

    Each name's log return over a step is ``(mu - m^2 sigma_i^2 / 2) dt + m sigma_i sqrt(dt)
    z_i`` (``m`` = 1 calm, ``crash_vol`` in the crash regime) with unit-variance shocks from a
    factor model,

        calm:   z_i = sum_k B_ik f_k + sqrt(1 - sum_k B_ik^2) e_i
        crash:  z_i = sqrt(1 - lam) z_i(calm) + sqrt(lam) g,      lam = crash_blend,

    ``f_k``, ``e_i``, ``g`` independent unit-variance Student-t(``nu``) draws (Gaussian for
    ``nu = inf``). So the calm correlation is ``C = B B^T`` off the diagonal (``rho`` alone:
    one factor with every loading ``sqrt(rho)``) and in the crash regime ``C + lam (1 - C)``:
    toward 1 as ``crash_blend`` -> 1, the collective mode. The correlation is exact whatever
    ``nu`` (shocks enter linearly); the tails are fat. The regime follows the two-state Markov
    chain of ``RegimeSwitching`` (``rate_to_crash``, ``rate_to_calm`` per year, switch after
    each step), starting from its stationary law or in a given regime (``start``).

    Args:
      vols: ``[N]`` annualized calm vols, > 0.
      rho: calm pairwise correlation in [0, 1) (one factor); or ``loadings`` ``[N, K]`` with
        every row's squared norm <= 1 (then ``rho`` must be None).
      shares: ``[N]`` share counts (default equal initial cap weights: ``1 / (N S_i(0))``,
        so the index starts at 1); ``prices0``: ``[N]`` initial prices (default 1).
      mu: annual drift of every name. nu: Student-t degrees of freedom, > 2 or inf.
      crash_blend: lam in [0, 1]; crash_vol: the vol multiplier in the crash regime, > 0.
      rate_to_crash, rate_to_calm: switching intensities per year, >= 0.
      start: "stationary" | "calm" | "crash" (static).

    Memory is O(paths x N); nothing grows with the number of steps.
    """

    vols: Any = (0.2, 0.25, 0.3, 0.35, 0.4)
    rho: Any = 0.3
    loadings: Any = None
    shares: Any = None
    prices0: Any = None
    mu: float = 0.0
    nu: float = 5.0
    crash_blend: float = 0.8
    crash_vol: float = 2.0
    rate_to_crash: float = 0.1
    rate_to_calm: float = 2.0
    start: str = choice_field("stationary", _STARTS)  # traced: one compiled kernel for every start

    # ---- host side
    @property
    def n_stocks(self) -> int:
        return int(np.size(self.vols))

    def params(self, xp=np, dtype=np.float64) -> dict:
        """``vols [N]``, ``prices0 [N]``, ``shares [N]``, ``loadings [N, K]`` with the defaults
        filled in, as ``xp`` arrays: numpy float64 on the host (checks, closed forms), jnp
        float32 in the kernel (where the fields may be tracers). One definition for both."""
        vols = xp.reshape(xp.asarray(self.vols, dtype), (-1,))
        n = vols.shape[0]
        p0 = xp.ones((n,), dtype) if self.prices0 is None else xp.reshape(xp.asarray(self.prices0, dtype), (-1,))
        shares = 1.0 / (n * p0) if self.shares is None else xp.reshape(xp.asarray(self.shares, dtype), (-1,))
        loadings = (xp.full((n, 1), xp.sqrt(xp.asarray(self.rho, dtype))) if self.loadings is None
                    else xp.reshape(xp.asarray(self.loadings, dtype), (n, -1)))
        return dict(vols=vols, prices0=p0, shares=shares, loadings=loadings)

    def correlation(self, crash: bool = False) -> np.ndarray:
        """The pairwise correlation matrix of the shocks in the calm or the crash regime."""
        b = self.params()["loadings"]
        c = b @ b.T
        np.fill_diagonal(c, 1.0)
        if crash:
            c = c + float(self.crash_blend) * (1.0 - c)
        return c

    def validate(self, dt: float) -> None:
        vols = check_vector("Basket.vols", self.vols)
        check_int("Basket.vols (number of constituents)", vols.size, 2, 10_000)
        check_range("Basket.vols", vols, 0.0, 10.0, lo_closed=False)
        if self.prices0 is not None:
            p0 = check_vector("Basket.prices0", self.prices0)
            check_same_length(vols=vols, prices0=p0)
            check_range("Basket.prices0", p0, 0.0, lo_closed=False)
        if self.shares is not None:
            w = check_vector("Basket.shares", self.shares)
            check_same_length(vols=vols, shares=w)
            cap_weights(w, self.params()["prices0"])  # the index must start > 0
            check_range("Basket.shares", w, 0.0)  # long-only share counts keep I > 0 on every path
        if (self.rho is None) == (self.loadings is None):
            raise ParameterError("Basket: give exactly one of rho (one factor) and loadings [N, K]")
        if self.loadings is None:
            check_range("Basket.rho", self.rho, 0.0, 1.0, hi_closed=False)
        else:
            b = np.asarray(self.loadings, np.float64)
            if b.ndim != 2 or b.shape[0] != vols.size or b.shape[1] < 1:
                raise ParameterError(f"Basket.loadings must be [N, K] with N = {vols.size} (mismatched lengths), "
                                     f"got shape {b.shape}")
            check_range("Basket.loadings", b, -1.0, 1.0)
            norms = (b * b).sum(axis=1)
            if np.any(norms > 1.0 + 1e-12):
                raise ParameterError(f"Basket.loadings: row {int(np.argmax(norms))} has squared norm "
                                     f"{norms.max():.4g}; allowed: <= 1 (unit-variance shocks)")
        check_range("Basket.mu", self.mu, -10.0, 10.0)
        if not np.isposinf(self.nu):
            check_range("Basket.nu", self.nu, 2.0, lo_closed=False)
        check_range("Basket.crash_blend", self.crash_blend, 0.0, 1.0)
        check_range("Basket.crash_vol", self.crash_vol, 0.0, 100.0, lo_closed=False)
        check_range("Basket.rate_to_crash", self.rate_to_crash, 0.0)
        check_range("Basket.rate_to_calm", self.rate_to_calm, 0.0)
        if self.start not in _STARTS:
            raise ParameterError(f"Basket.start = {self.start!r}; allowed: {list(_STARTS)}")
        if self.start == "stationary" and float(self.rate_to_crash) + float(self.rate_to_calm) <= 0:
            raise ParameterError("Basket.rate_to_crash + rate_to_calm must be > 0 for start = 'stationary'")

    # ---- device side (fields may be tracers here: jnp only)
    def _kernel_params(self) -> dict:
        return self.params(jnp, _F32)

    def _shocks(self, key, n, m):
        nu = _f(self.nu)
        finite = jnp.isfinite(nu)
        nu_safe = jnp.where(finite, nu, 3.0)
        t = samplers.student_t(key, n * m, nu_safe) * jnp.sqrt((nu_safe - 2.0) / nu_safe)
        return jnp.where(finite, t, samplers.normal(key, n * m)).reshape(n, m)

    def init(self, key, n: int, dt: float) -> BasketState:
        p0 = self._kernel_params()["prices0"]
        p0 = jnp.broadcast_to(p0, (n, p0.shape[0]))
        start = choice_index(self.start, _STARTS)
        rates = _f(self.rate_to_crash) + _f(self.rate_to_calm)
        pc = _f(self.rate_to_crash) / jnp.where(rates > 0, rates, 1.0)
        regime = jnp.where(start == 0, samplers.uniform(key, n) <= pc, start == 2).astype(jnp.int32)
        return BasketState(p0, jnp.zeros_like(p0), regime)

    def index_level(self, prices):
        """``I = sum_i w_i S_i`` of ``prices`` ``[..., N]``."""
        return jnp.sum(self._kernel_params()["shares"] * prices, axis=-1)

    def weights(self, prices):
        """Market-cap weights ``p_i = w_i S_i / I`` of ``prices`` ``[..., N]``."""
        cap = self._kernel_params()["shares"] * prices
        return cap / jnp.sum(cap, axis=-1, keepdims=True)

    def step(self, key, state: BasketState, n: int, dt: float):
        par = self._kernel_params()
        b = par["loadings"]  # [N, K]
        N, K = b.shape
        k_z, k_switch = jax.random.split(key)
        z = self._shocks(k_z, n, K + N + 1)
        f, e, g = z[:, :K], z[:, K:K + N], z[:, K + N]
        calm = f @ b.T + e * jnp.sqrt(jnp.maximum(1.0 - jnp.sum(b * b, axis=1), 0.0))
        crash = state.regime == 1
        lam = jnp.where(crash, _f(self.crash_blend), 0.0)[:, None]
        z = jnp.sqrt(1.0 - lam) * calm + jnp.sqrt(lam) * g[:, None]
        vol = par["vols"] * jnp.where(crash, _f(self.crash_vol), 1.0)[:, None]
        x = per_step_mean(_f(self.mu), dt) - 0.5 * vol * vol * dt + per_step_vol(vol, dt) * z
        stocks = jnp.expm1(x)
        r = jnp.sum(self.weights(state.prices) * stocks, axis=1)  # dI / I with p at the start
        p_switch = jnp.where(crash, per_step_prob(_f(self.rate_to_calm), dt), per_step_prob(_f(self.rate_to_crash), dt))
        switch = samplers.uniform(k_switch, n) <= p_switch
        regime = jnp.where(switch, 1 - state.regime, state.regime)
        return BasketState(state.prices * (1.0 + stocks), stocks, regime), r

    def conditional_vol(self, state: BasketState, dt: float):
        """The index vol for the next step: ``sqrt(x' C_regime x)``, ``x = p sigma m``."""
        crash = state.regime == 1
        par = self._kernel_params()
        x = self.weights(state.prices) * par["vols"] * jnp.where(crash, _f(self.crash_vol), 1.0)[:, None]
        b = par["loadings"]
        bx = x @ b  # x' C x with C = B B^T off the diagonal, 1 on it
        calm_var = jnp.sum(bx * bx, axis=1) + jnp.sum(x * x * (1.0 - jnp.sum(b * b, axis=1)), axis=1)
        lam = jnp.where(crash, _f(self.crash_blend), 0.0)
        return jnp.sqrt((1.0 - lam) * calm_var + lam * jnp.sum(x, axis=1) ** 2)

    def annual_moments(self):
        """Mean and variance of the index's annual simple return at the initial weights, calm
        regime, first order in ``dt``."""
        par = self.params()
        p = par["shares"] * par["prices0"]
        x = p / p.sum() * par["vols"]
        return float(self.mu), float(x @ self.correlation(False) @ x)


def cap_weights(shares, prices) -> np.ndarray:
    """``p_i = w_i S_i / I`` with ``I = sum w_i S_i``; raises unless ``I > 0`` and prices > 0."""
    w, s = check_vector("shares", shares), check_vector("prices", prices)
    check_same_length(shares=w, prices=s)
    if np.any(s <= 0):
        raise ParameterError("prices must be > 0")
    index = float(w @ s)
    if not index > 0:
        raise ParameterError(f"the index sum_i w_i S_i = {index:g} must be > 0; allowed: share counts giving a "
                             "positive index")
    return w * s / index
