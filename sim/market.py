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

from sim import samplers
from sim.processes import _pytree
from sim.units import per_step_vol
from sim.validation import ParameterError, check_int, check_range

__all__ = ["Market", "MarketState", "factor_correlation", "correlated_normals"]

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


@_pytree
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
        if not hasattr(self.base, "conditional_vol"):
            raise ParameterError(f"Market.base needs conditional_vol (the spread follows it); "
                                 f"{type(self.base).__name__} has none")

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
    from sim.dispersion import check_correlation

    c = check_correlation(corr)
    L = np.linalg.cholesky(c + 1e-12 * np.eye(c.shape[0]))
    z = samplers.normal(key, n * c.shape[0]).reshape(n, c.shape[0])
    return z @ jnp.asarray(L.T, _F32)
