"""Return models: frozen pytrees of parameters with pure ``init`` and ``step`` kernels.

Every model is a frozen dataclass registered as a pytree, whose fields are its parameters
(scalars or arrays, so one compiled kernel can be ``vmap``ped over a parameter grid and
differentiated). The interface, with ``dt`` the step length in years (static)::

    state = process.init(key, n, dt)            # per-path state, a NamedTuple of [n] arrays
    state, r = process.step(key, state, n, dt)  # r: float32[n] simple returns of the step

``r`` is a *simple* return per step (wealth multiplies by ``1 + r``), so the engine can mix
it with cash at a fraction ``f``. Parameters are annualized (drift ``mu`` and volatility
``sigma`` per year, event rates per year) and converted only by ``sim.units``. Innovations
have unit variance. ``validate(dt)`` checks every parameter on the host and raises
``sim.validation.ParameterError`` naming the field and its allowed range.

Limited liability: an asset's price cannot go below zero, so the models with additive
shocks (Gaussian, Student-t, GARCH-t, regime switching, the multi-asset model) floor the
simple return at -1: a shock beyond -100% sends the price to zero. This only touches the far
tail (for Student-t with nu = 3, 20% annual vol, daily steps: about 4e-7 of the days), but
it is what keeps the growth rate E[log(1 + f r)] finite for every f < 1: without it, an
unbounded left tail makes the growth rate minus infinity for every f > 0 (see
``sim.kelly``). A levered position (f > 1) can still be wiped out.

``conditional_vol(state, dt)`` (where a model has it) is the annualized volatility of the
next step given the state after the last draw: what a market maker pricing options on the
model would see (the regime's sigma, GARCH's conditional variance). ``sim.hedge`` prices
puts from it.

``annual_moments()`` gives the annualized mean and variance of the simple returns (exact,
or to first order in ``dt`` where noted), which fix the Gaussian Kelly reference
``f = (mean - r) / variance`` of ``sim.kelly``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sim import samplers
from sim.pytree import pytree_dataclass
from sim.units import per_step_mean, per_step_prob, per_step_rate, per_step_vol
from sim.validation import ParameterError, check_range

__all__ = [
    "PosteriorDraws",
    "Gaussian",
    "StudentT",
    "Merton",
    "GarchT",
    "RegimeSwitching",
    "BlockBootstrap",
    "Binary",
    "MultiAsset",
    "ParameterUncertainty",
    "Replay",
]

_F32 = jnp.float32


def _f(x):
    return jnp.asarray(x, _F32)


def _n_assets(returns) -> int:
    """0 for a series of returns ``[L]``; ``d`` for a (days x assets) matrix ``[L, d]``."""
    return int(np.shape(returns)[1]) if np.ndim(returns) == 2 else 0


def _limited(r):
    """Limited liability: a simple return below -1 sends the price to zero (``r = -1``)."""
    return jnp.maximum(r, jnp.float32(-1.0))


def _unit_t(key, n, nu):
    """Student-t with ``nu`` degrees of freedom scaled to unit variance."""
    nu = _f(nu)
    return samplers.student_t(key, n, nu) * jnp.sqrt((nu - 2.0) / nu)


class NoState(NamedTuple):
    """State of a model without memory."""


@pytree_dataclass
class Gaussian:
    """Gaussian simple returns (Euler-discretized geometric Brownian motion).

    ``r = mu dt + sigma sqrt(dt) Z``, ``Z ~ N(0, 1)``.

    Args (annualized):
      mu: drift of simple returns.
      sigma: volatility, >= 0.
    """

    mu: float = 0.0
    sigma: float = 0.2

    def validate(self, dt: float) -> None:
        check_range("Gaussian.mu", self.mu)
        check_range("Gaussian.sigma", self.sigma, 0.0)

    def init(self, key, n: int, dt: float) -> NoState:
        return NoState()

    def step(self, key, state: NoState, n: int, dt: float):
        z = samplers.normal(key, n)
        return state, _limited(per_step_mean(_f(self.mu), dt) + per_step_vol(_f(self.sigma), dt) * z)

    def conditional_vol(self, state, dt: float):
        return _f(self.sigma)

    def annual_moments(self):
        return self.mu, self.sigma**2


@pytree_dataclass
class StudentT:
    """Student-t simple returns with unit-variance innovations (fat tails, ``nu > 2``).

    ``r = mu dt + sigma sqrt(dt) T sqrt((nu - 2) / nu)``, ``T ~ t(nu)`` drawn exactly
    (``sim.samplers.student_t``), so ``sigma`` is the annualized standard deviation.

    Args (annualized):
      mu: drift; sigma: volatility >= 0; nu: tail index, any real > 2.
    """

    mu: float = 0.0
    sigma: float = 0.2
    nu: float = 3.0

    def validate(self, dt: float) -> None:
        check_range("StudentT.mu", self.mu)
        check_range("StudentT.sigma", self.sigma, 0.0)
        check_range("StudentT.nu", self.nu, 2.0, lo_closed=False)

    def init(self, key, n: int, dt: float) -> NoState:
        return NoState()

    def step(self, key, state: NoState, n: int, dt: float):
        z = _unit_t(key, n, self.nu)
        return state, _limited(per_step_mean(_f(self.mu), dt) + per_step_vol(_f(self.sigma), dt) * z)

    def conditional_vol(self, state, dt: float):
        return _f(self.sigma)

    def annual_moments(self):
        return self.mu, self.sigma**2


@pytree_dataclass
class Merton:
    """Merton jump-diffusion in log space, with drift compensated so ``E[1 + r] = exp(mu dt)``.

    ``log(1 + r) = (mu - sigma^2/2 - lam k) dt + sigma sqrt(dt) Z + sum_{i<=N} J_i``,
    ``N ~ Poisson(lam dt)``, ``J_i ~ N(jump_mean, jump_std^2)``, ``k = exp(jump_mean +
    jump_std^2 / 2) - 1``. Given ``N`` the jump sum is exactly ``N(N m, N s^2)``.

    Args (annualized): mu, sigma >= 0, lam (jumps per year, ``lam dt <= 1``),
      jump_mean (mean log jump), jump_std >= 0.
    """

    mu: float = 0.08
    sigma: float = 0.15
    lam: float = 0.5
    jump_mean: float = -0.1
    jump_std: float = 0.1

    def validate(self, dt: float) -> None:
        check_range("Merton.mu", self.mu)
        check_range("Merton.sigma", self.sigma, 0.0)
        check_range("Merton.lam", self.lam, 0.0, 1.0 / dt)
        check_range("Merton.jump_mean", self.jump_mean, -10.0, 10.0)
        check_range("Merton.jump_std", self.jump_std, 0.0, 10.0)

    def init(self, key, n: int, dt: float) -> NoState:
        return NoState()

    def step(self, key, state: NoState, n: int, dt: float):
        k_diffusion, k_jump, k_count = jax.random.split(key, 3)
        count = samplers.poisson_small(samplers.uniform(k_count, n), per_step_rate(_f(self.lam), dt))
        m, s, sig = _f(self.jump_mean), _f(self.jump_std), _f(self.sigma)
        k = jnp.expm1(m + 0.5 * s * s)
        drift = per_step_mean(_f(self.mu) - 0.5 * sig * sig - _f(self.lam) * k, dt)
        jumps = count * m + jnp.sqrt(count) * s * samplers.normal(k_jump, n)
        return state, jnp.expm1(drift + per_step_vol(sig, dt) * samplers.normal(k_diffusion, n) + jumps)

    def conditional_vol(self, state, dt: float):
        """Total annualized vol, diffusion and jumps (first order in ``dt``)."""
        m, s = _f(self.jump_mean), _f(self.jump_std)
        second = jnp.exp(2 * m + 2 * s * s) - 2 * jnp.exp(m + s * s / 2) + 1
        return jnp.sqrt(_f(self.sigma) ** 2 + _f(self.lam) * second)

    def annual_moments(self):
        """Mean exact (``E[1 + r] = exp(mu dt)``, so ``mu`` to first order); variance to
        first order in ``dt``: ``sigma^2 + lam E[(e^J - 1)^2]``."""
        m, s = self.jump_mean, self.jump_std
        second = np.exp(2 * m + 2 * s**2) - 2 * np.exp(m + s**2 / 2) + 1
        return self.mu, self.sigma**2 + self.lam * second


@pytree_dataclass
class GarchT:
    """GARCH(1,1) with unit-variance Student-t innovations.

    ``r_t = mu dt + sqrt(h_t) z_t``, ``h_{t+1} = omega + alpha (r_t - mu dt)^2 + beta h_t``,
    with ``omega = sigma^2 dt (1 - alpha - beta)`` so that the unconditional annualized
    volatility is ``sigma``. Paths start at the unconditional variance.

    Args: mu (annual), sigma (annual unconditional vol, > 0), alpha >= 0, beta >= 0 with
      ``alpha + beta < 1``, nu > 2.
    """

    mu: float = 0.07
    sigma: float = 0.18
    alpha: float = 0.08
    beta: float = 0.9
    nu: float = 5.0

    def validate(self, dt: float) -> None:
        check_range("GarchT.mu", self.mu)
        check_range("GarchT.sigma", self.sigma, 0.0, lo_closed=False)
        check_range("GarchT.alpha", self.alpha, 0.0, 1.0, hi_closed=False)
        check_range("GarchT.beta", self.beta, 0.0, 1.0, hi_closed=False)
        check_range("GarchT.alpha + GarchT.beta", np.add(self.alpha, self.beta), 0.0, 1.0, hi_closed=False)
        check_range("GarchT.nu", self.nu, 2.0, lo_closed=False)


    def init(self, key, n: int, dt: float) -> "GarchState":
        # A previous step whose squared shock equals the unconditional variance, so the
        # first step's variance is the unconditional one.
        h0 = per_step_vol(_f(self.sigma), dt) ** 2
        return GarchState(jnp.full((n,), h0, _F32), jnp.full((n,), per_step_mean(_f(self.mu), dt) + jnp.sqrt(h0), _F32))

    def step(self, key, state: "GarchState", n: int, dt: float):
        # The variance recursion runs on the previous step's carried return, so the new
        # draws feed one output (see the note on fusion in sim.engine).
        a, b = _f(self.alpha), _f(self.beta)
        mu_dt = per_step_mean(_f(self.mu), dt)
        omega = per_step_vol(_f(self.sigma), dt) ** 2 * (1.0 - a - b)
        prev_shock = state.last_return - mu_dt
        variance = omega + a * prev_shock * prev_shock + b * state.variance
        r = _limited(mu_dt + jnp.sqrt(variance) * _unit_t(key, n, self.nu))
        return GarchState(variance, r), r

    def conditional_vol(self, state: "GarchState", dt: float):
        """Annualized vol of the next step: ``sqrt(h_{t+1} / dt)`` from the recursion."""
        a, b = _f(self.alpha), _f(self.beta)
        omega = per_step_vol(_f(self.sigma), dt) ** 2 * (1.0 - a - b)
        shock = state.last_return - per_step_mean(_f(self.mu), dt)
        return jnp.sqrt((omega + a * shock * shock + b * state.variance) / dt)

    def annual_moments(self):
        return self.mu, self.sigma**2


class GarchState(NamedTuple):
    variance: jax.Array  # float32[n], conditional variance of the last step's return
    last_return: jax.Array  # float32[n], the last step's return


@pytree_dataclass
class RegimeSwitching:
    """Two-state calm/crash Markov regime switching with Student-t innovations.

    In regime ``s`` (0 calm, 1 crash): ``r = mu_s dt + sigma_s sqrt(dt) T_s``, ``T_s`` unit
    variance t(``nu_s``). After each step the regime switches calm -> crash with probability
    ``1 - exp(-rate_to_crash dt)`` and crash -> calm with ``1 - exp(-rate_to_calm dt)``. Paths
    start in the stationary law of that discrete chain, ``P(crash) = p_up / (p_up + p_down)``
    with the two per-step switch probabilities (``rate_to_crash / (rate_to_crash +
    rate_to_calm)`` as ``dt -> 0``). The state keeps the true regime (an oracle for the regime detectors).
    """

    mu_calm: float = 0.1
    sigma_calm: float = 0.12
    nu_calm: float = 6.0
    mu_crash: float = -0.6
    sigma_crash: float = 0.45
    nu_crash: float = 3.5
    rate_to_crash: float = 0.1
    rate_to_calm: float = 2.0

    def validate(self, dt: float) -> None:
        for regime in ("calm", "crash"):
            check_range(f"RegimeSwitching.mu_{regime}", getattr(self, f"mu_{regime}"))
            check_range(f"RegimeSwitching.sigma_{regime}", getattr(self, f"sigma_{regime}"), 0.0)
            check_range(f"RegimeSwitching.nu_{regime}", getattr(self, f"nu_{regime}"), 2.0, lo_closed=False)
        check_range("RegimeSwitching.rate_to_crash", self.rate_to_crash, 0.0)
        check_range("RegimeSwitching.rate_to_calm", self.rate_to_calm, 0.0)
        if np.any(np.add(self.rate_to_crash, self.rate_to_calm) <= 0):
            raise ParameterError(
                "RegimeSwitching.rate_to_crash + rate_to_calm must be > 0 (the stationary law is undefined)"
            )


    def stationary_crash_probability(self, dt: float | None = None):
        """P(crash) in the stationary law: of the discrete chain the model steps (switch
        probabilities ``1 - exp(-rate dt)`` per step) given ``dt``, else of the continuous-time
        chain, ``rate_to_crash / (rate_to_crash + rate_to_calm)`` (the limit ``dt -> 0``)."""
        if dt is None:
            return _f(self.rate_to_crash) / (_f(self.rate_to_crash) + _f(self.rate_to_calm))
        up, down = per_step_prob(_f(self.rate_to_crash), dt), per_step_prob(_f(self.rate_to_calm), dt)
        return up / (up + down)

    def init(self, key, n: int, dt: float) -> "RegimeState":
        # The stationary law of the chain that ``step`` runs, so P(crash) is the same at every
        # step (at monthly steps the continuous-time law is 4x off: 0.0023 against 0.0099).
        u = samplers.uniform(key, n)
        return RegimeState((u <= self.stationary_crash_probability(dt)).astype(jnp.int32))

    def step(self, key, state: "RegimeState", n: int, dt: float):
        k_shock, k_switch = jax.random.split(key)
        crash = state.regime == 1
        pick = lambda calm, crash_value: jnp.where(crash, _f(crash_value), _f(calm))  # noqa: E731
        z = _unit_t(k_shock, n, pick(self.nu_calm, self.nu_crash))
        r = per_step_mean(pick(self.mu_calm, self.mu_crash), dt) + per_step_vol(
            pick(self.sigma_calm, self.sigma_crash), dt
        ) * z
        p_switch = pick(per_step_prob(_f(self.rate_to_crash), dt), per_step_prob(_f(self.rate_to_calm), dt))
        switch = samplers.uniform(k_switch, n) <= p_switch
        return RegimeState(jnp.where(switch, 1 - state.regime, state.regime)), _limited(r)

    def true_regime(self, state: "RegimeState"):
        """The regime in force for the next step (0 calm, 1 crash): ``sim.protocols.TrueRegime``."""
        return state.regime

    def conditional_vol(self, state: "RegimeState", dt: float):
        """The vol of the regime in force for the next step (the true regime: an oracle)."""
        return jnp.where(state.regime == 1, _f(self.sigma_crash), _f(self.sigma_calm))

    def annual_moments(self):
        """Stationary mixture of the two regimes (first order in ``dt``)."""
        p = self.rate_to_crash / (self.rate_to_crash + self.rate_to_calm)
        mean = (1 - p) * self.mu_calm + p * self.mu_crash
        return mean, (1 - p) * self.sigma_calm**2 + p * self.sigma_crash**2


class RegimeState(NamedTuple):
    regime: jax.Array  # int32[n], 0 calm, 1 crash: the regime of the next step


@pytree_dataclass
class BlockBootstrap:
    """Stationary block bootstrap (Politis and Romano 1994) of a real return series.

    Each path walks through ``returns`` one step at a time and, with probability
    ``1 / mean_block`` per step, jumps to a uniformly drawn index (blocks of geometric
    length, mean ``mean_block``), wrapping around at the end. The series' own frequency
    sets ``dt``: daily returns go with 252 steps per year.

    Args:
      returns: float[L] simple returns per step, or float[L, d] for ``d`` assets (a day's
        cross-section is resampled together, so the assets' dependence is kept); finite,
        > -1, L >= 2.
      mean_block: mean block length in steps, >= 1.
    """

    returns: jax.Array
    mean_block: float = 20.0

    @property
    def n_assets(self) -> int:
        """0 for one series; ``d`` for a (days x assets) matrix (returns ``[n, d]``)."""
        return _n_assets(self.returns)

    def validate(self, dt: float) -> None:
        arr = np.asarray(self.returns, dtype=np.float64)
        if arr.ndim not in (1, 2) or arr.shape[0] < 2 or (arr.ndim == 2 and arr.shape[1] < 1):
            raise ParameterError(f"BlockBootstrap.returns must be a series [L] or a (days x assets) matrix [L, d] "
                                 f"with L >= 2, got shape {arr.shape}")
        check_range("BlockBootstrap.returns", arr, -1.0, lo_closed=False)
        check_range("BlockBootstrap.mean_block", self.mean_block, 1.0)


    def init(self, key, n: int, dt: float) -> "BootstrapState":
        return BootstrapState(self._draw_index(samplers.uniform(key, n)))

    def _draw_index(self, u):
        length = self.returns.shape[0]
        return jnp.minimum((u * length).astype(jnp.int32), length - 1)

    def step(self, key, state: "BootstrapState", n: int, dt: float):
        series = _f(self.returns)
        r = series[state.index]
        u_restart, u_index = samplers.uniform_pair(key, n)
        following = (state.index + 1) % series.shape[0]
        restart = u_restart <= 1.0 / _f(self.mean_block)
        return BootstrapState(jnp.where(restart, self._draw_index(u_index), following)), r


    def annual_moments(self, steps_per_year: float = 252.0):
        """Mean and variance (one series), or mean vector and covariance matrix, annualized."""
        r = np.asarray(self.returns, np.float64)
        if r.ndim == 2:
            return r.mean(axis=0) * steps_per_year, np.cov(r, rowvar=False, ddof=1).reshape(r.shape[1], -1) * steps_per_year
        return r.mean() * steps_per_year, r.var(ddof=1) * steps_per_year


class BootstrapState(NamedTuple):
    index: jax.Array  # int32[n], index of the next step's return in the series


@pytree_dataclass
class Replay:
    """A given return series replayed on every path (a real history, a scenario).

    Step ``t`` returns ``returns[t]`` on all paths, so a simulation of ``n_steps <=
    len(returns)`` steps walks the series once. ``implied`` optionally gives an observed
    annualized implied volatility per step (VIX / 100, say: NaN where there is none), which
    ``sim.hedge`` uses to price options where it is known.

    Args:
      returns: float[L] simple returns per step, or float[L, d] for ``d`` assets (returns
        ``[n, d]``); finite, > -1.
      implied: float[L] or None (one series only); finite values must be > 0.
    """

    returns: jax.Array
    implied: jax.Array | None = None

    @property
    def n_assets(self) -> int:
        """0 for one series; ``d`` for a (days x assets) matrix (returns ``[n, d]``)."""
        return _n_assets(self.returns)

    def validate(self, dt: float) -> None:
        arr = np.asarray(self.returns, dtype=np.float64)
        if arr.ndim not in (1, 2) or arr.shape[0] < 1 or (arr.ndim == 2 and arr.shape[1] < 1):
            raise ParameterError(f"Replay.returns must be a series [L] or a (days x assets) matrix [L, d], "
                                 f"got shape {arr.shape}")
        check_range("Replay.returns", arr, -1.0, lo_closed=False)
        if self.implied is not None:
            iv = np.asarray(self.implied, dtype=np.float64)
            if iv.shape != arr.shape[:1] or arr.ndim != 1:
                raise ParameterError(f"Replay.implied must have the shape of returns {arr.shape}, got {iv.shape}")
            check_range("Replay.implied (where given)", iv[np.isfinite(iv)] if np.isfinite(iv).any() else [1.0],
                        0.0, lo_closed=False)

    @property
    def max_steps(self) -> int:
        return int(np.shape(self.returns)[0])

    def init(self, key, n: int, dt: float) -> "ReplayState":
        return ReplayState(jnp.zeros((n,), jnp.int32))

    def step(self, key, state: "ReplayState", n: int, dt: float):
        r = _f(self.returns)[jnp.minimum(state.index, self.returns.shape[0] - 1)]
        return ReplayState(state.index + 1), r

    def implied_vol(self, state: "ReplayState", dt: float):
        """The observed implied vol of the step just replayed (NaN where there is none): the
        ``sim.protocols.ImpliedVolQuote`` capability."""
        if self.implied is None:
            return jnp.full(state.index.shape, jnp.nan, _F32)
        return _f(self.implied)[jnp.clip(state.index - 1, 0, self.implied.shape[0] - 1)]

    def annual_moments(self, steps_per_year: float = 252.0):
        r = np.asarray(self.returns, np.float64)
        if r.ndim == 2:
            return r.mean(axis=0) * steps_per_year, np.cov(r, rowvar=False, ddof=0).reshape(r.shape[1], -1) * steps_per_year
        return r.mean() * steps_per_year, r.var() * steps_per_year


class ReplayState(NamedTuple):
    index: jax.Array  # int32[n], index of the next step's return


@pytree_dataclass
class Binary:
    """A repeated binary bet: ``r = up`` with probability ``p``, else ``r = down``, per step.

    Per-step by nature (a round of a game, not a slice of a year): no annual conversion.
    Peters' coin game is ``Binary(p=0.5, up=0.5, down=-0.4)``; a bet at odds ``b`` staked
    with fraction ``f`` is ``Binary(p, up=b, down=-1)`` played at fraction ``f``.
    """

    p: float = 0.5
    up: float = 0.5
    down: float = -0.4

    def validate(self, dt: float) -> None:
        check_range("Binary.p", self.p, 0.0, 1.0)
        check_range("Binary.up", self.up, -1.0)
        check_range("Binary.down", self.down, -1.0)

    def init(self, key, n: int, dt: float) -> NoState:
        return NoState()

    def step(self, key, state: NoState, n: int, dt: float):
        win = samplers.uniform(key, n) <= _f(self.p)
        return state, jnp.where(win, _f(self.up), _f(self.down))


#: How far a correlation matrix may be from symmetric, unit-diagonal and within [-1, 1] (float
#: rounding, e.g. ``cov / outer(sd, sd)``) before ``MultiAsset`` rejects it instead of cleaning it.
CORR_TOLERANCE = 1e-8


def clean_correlation(xp, corr):
    """``corr`` symmetrized, with a unit diagonal and entries clipped to [-1, 1] (``xp``: numpy
    or jax.numpy). ``MultiAsset.validate`` only lets through matrices within
    ``CORR_TOLERANCE`` of that, so this only removes rounding."""
    sym = xp.clip((corr + corr.T) / 2, -1.0, 1.0)
    eye = xp.eye(corr.shape[-1], dtype=sym.dtype)
    return sym * (1 - eye) + eye


@pytree_dataclass
class MultiAsset:
    """``d`` correlated assets with fat-tailed shocks: ``r = mu dt + sigma sqrt(dt) (L z)``.

    ``L`` is the lower Cholesky factor of ``corr`` and ``z`` holds ``d`` independent
    unit-variance Student-t(``nu``) draws, so the covariance is exactly
    ``diag(sigma) corr diag(sigma) dt`` (correlation = ``corr``, applied as ``L z``, not
    ``z L``). The dependence is not the elliptical multivariate t's: the assets share no
    common variance factor. ``nu = inf`` gives Gaussian shocks. Returns have shape ``[n, d]``.

    Args (annualized): mu[d], sigma[d] >= 0, corr[d, d] a correlation matrix (symmetric,
      unit diagonal, positive definite), nu > 2 or inf.
    """

    mu: jax.Array
    sigma: jax.Array
    corr: jax.Array
    nu: float = float("inf")

    def validate(self, dt: float) -> None:
        mu, sigma = np.atleast_1d(np.asarray(self.mu, float)), np.atleast_1d(np.asarray(self.sigma, float))
        corr = np.asarray(self.corr, float)
        d = mu.shape[0]
        if mu.ndim != 1 or sigma.shape != (d,) or corr.shape != (d, d):
            raise ParameterError(
                f"MultiAsset: mu, sigma must be [d] and corr [d, d]; got {mu.shape}, {sigma.shape}, {corr.shape}"
            )
        check_range("MultiAsset.mu", mu)
        check_range("MultiAsset.sigma", sigma, 0.0)
        tol = CORR_TOLERANCE
        check_range(f"MultiAsset.corr (within {tol:g} of [-1, 1])", corr, -1.0 - tol, 1.0 + tol)
        asym, diag = np.abs(corr - corr.T).max(), np.abs(np.diag(corr) - 1.0).max()
        if asym > tol or diag > tol:
            raise ParameterError(f"MultiAsset.corr must be symmetric with a unit diagonal within {tol:g}; "
                                 f"max |corr - corr.T| = {asym:.3g}, max |diag - 1| = {diag:.3g}")
        smallest = np.linalg.eigvalsh(clean_correlation(np, corr)).min()
        if smallest <= 1e-10:
            raise ParameterError(f"MultiAsset.corr must be positive definite; smallest eigenvalue {smallest:.3g}")
        if not np.isposinf(self.nu):
            check_range("MultiAsset.nu", self.nu, 2.0, lo_closed=False)

    @property
    def n_assets(self) -> int:
        return int(np.shape(self.mu)[0])

    def init(self, key, n: int, dt: float) -> NoState:
        return NoState()

    def step(self, key, state: NoState, n: int, dt: float):
        d = self.n_assets
        keys = jax.random.split(key, d)
        nu = _f(self.nu)
        finite = jnp.isfinite(nu)
        nu_safe = jnp.where(finite, nu, 3.0)

        def shock(k):
            t = samplers.student_t(k, n, nu_safe) * jnp.sqrt((nu_safe - 2.0) / nu_safe)
            return jnp.where(finite, t, samplers.normal(k, n))

        z = jax.vmap(shock, out_axes=1)(keys)  # [n, d]: asset i's shocks from keys[i], traced once for all d
        chol = jnp.linalg.cholesky(clean_correlation(jnp, _f(self.corr)))
        shocks = z @ chol.T  # row i: L z_i
        return state, _limited(per_step_mean(_f(self.mu), dt) + per_step_vol(_f(self.sigma), dt) * shocks)

    def annual_moments(self):
        """Mean vector and covariance matrix (annualized)."""
        sigma = np.asarray(self.sigma, float)
        return np.asarray(self.mu, float), clean_correlation(np, np.asarray(self.corr, float)) * np.outer(sigma, sigma)


_PRIOR_KINDS = ("normal", "lognormal")


@pytree_dataclass
class ParameterUncertainty:
    """A model whose parameters are themselves random: drawn once per path, then held.

    Each path draws its own value of every parameter named in ``names`` (reparameterized:
    ``theta = loc + scale z`` for a normal prior, ``theta = shift + (loc - shift) exp(scale z)``
    for a lognormal one, ``z`` standard normal), and then runs ``process`` with those values.
    Averaging any statistic over paths thus averages it over the prior (or posterior) too:
    the growth rate of ``sim.kelly`` becomes the Bayesian expected growth. Works with every
    model whose ``step`` broadcasts per-path parameters (all single-asset models here).

    Args:
      process: the base model; its values of the named fields are ignored.
      names: tuple of field names of ``process`` (static).
      kinds: tuple, "normal" or "lognormal" per name (static).
      loc, scale, shift: float[k] per name (``shift`` only for lognormal: the lower bound,
        e.g. 2 for a Student-t ``nu``).

    ``ParameterUncertainty.from_draws(process, names, draws)`` takes a set of joint posterior
    draws instead (one row per path: correlations kept).
    """

    process: object
    names: tuple = dataclasses.field(default=(), metadata=dict(static=True))
    kinds: tuple = dataclasses.field(default=(), metadata=dict(static=True))
    loc: jax.Array = ()
    scale: jax.Array = ()
    shift: jax.Array = ()

    def validate(self, dt: float) -> None:
        base = type(self.process).__name__
        fields = [f.name for f in dataclasses.fields(self.process)]
        if len(self.names) != len(self.kinds) or np.shape(self.loc) != (len(self.names),):
            raise ParameterError("ParameterUncertainty: names, kinds, loc, scale, shift must have one entry per name")
        for i, (name, kind) in enumerate(zip(self.names, self.kinds)):
            if name not in fields:
                raise ParameterError(f"ParameterUncertainty: {base} has no parameter {name!r}; allowed: {fields}")
            if kind not in _PRIOR_KINDS:
                raise ParameterError(f"ParameterUncertainty: prior kind {kind!r} for {name}; allowed: {_PRIOR_KINDS}")
            check_range(f"prior scale of {base}.{name}", np.asarray(self.scale)[i], 0.0, lo_closed=False)
            if kind == "lognormal":
                check_range(f"prior loc of {base}.{name} (lognormal median, above shift)",
                            np.asarray(self.loc)[i] - np.asarray(self.shift)[i], 0.0, lo_closed=False)
        # The base model must be valid at the prior's centre; the support of each prior kind
        # (normal for location parameters, lognormal above ``shift`` for scales and tails)
        # keeps the draws valid.
        self._with(np.asarray(self.loc, float)).validate(dt)
        for name, kind, shift in zip(self.names, self.kinds, np.asarray(self.shift)):
            if kind == "normal" and name in ("sigma", "nu", "lam", "jump_std", "alpha", "beta", "p"):
                raise ParameterError(
                    f"ParameterUncertainty: {base}.{name} is bounded; give it a lognormal prior (with shift)"
                )

    @staticmethod
    def from_draws(process, names, draws) -> "PosteriorDraws":
        """Parameter uncertainty given as a set of joint draws instead of per-parameter priors
        (a NUTS or Laplace posterior, a bootstrap of fits): each path takes one whole row of
        ``draws`` (``float[m, len(names)]``), so the correlations between parameters are kept
        (``PosteriorDraws``); the priors of this class draw each parameter independently."""
        return PosteriorDraws(process, names=tuple(names), draws=np.asarray(draws, np.float32))

    def draw_parameters(self, key, n: int):
        z = jnp.stack([samplers.normal(k, n) for k in jax.random.split(key, len(self.names))])  # [k, n]
        loc, scale, shift = _f(self.loc)[:, None], _f(self.scale)[:, None], _f(self.shift)[:, None]
        lognormal = jnp.asarray([k == "lognormal" for k in self.kinds])[:, None]
        return jnp.where(lognormal, shift + (loc - shift) * jnp.exp(scale * z), loc + scale * z)

    def _with(self, theta):
        return _with_parameters(self.process, self.names, theta)

    def init(self, key, n: int, dt: float) -> "UncertainState":
        k_theta, k_base = jax.random.split(key)
        theta = self.draw_parameters(k_theta, n)
        return UncertainState(theta, self._with(theta).init(k_base, n, dt))

    def step(self, key, state: "UncertainState", n: int, dt: float):
        return _step_with_parameters(self.process, self.names, key, state, n, dt)

    def annual_moments(self):
        return self.process.annual_moments()


def _with_parameters(process, names, theta):
    """``process`` with its fields ``names`` set to the rows of ``theta`` (per-path values)."""
    return dataclasses.replace(process, **{name: theta[i] for i, name in enumerate(names)})


def _step_with_parameters(process, names, key, state: "UncertainState", n: int, dt: float):
    """One step of ``process`` at each path's own parameters ``state.theta``."""
    base_state, r = _with_parameters(process, names, state.theta).step(key, state.base, n, dt)
    return UncertainState(state.theta, base_state), r


@pytree_dataclass
class PosteriorDraws:
    """A model whose parameters are one joint draw per path from a set of posterior draws.

    Path ``i`` takes row ``w_i mod m`` of ``draws`` (``w_i`` a random word of the path's own
    stream), so the correlations between parameters in the posterior are kept, and runs
    ``process`` with those values. ``sim.fit.FitResult.laplace`` makes one from a fit.

    Args:
      process: the base model; its values of the named fields are ignored.
      names: tuple of field names of ``process`` (static).
      draws: float[m, k], one row per draw, one column per name; every row must be a valid model.
      n_rows: None (every row of ``draws`` is a draw), or the number ``m`` of leading rows that
        are (traced: ``padded`` makes a copy whose rows are a multiple of a bucket, so that one
        compiled program serves posteriors of different sizes; the padding is never drawn).
    """

    process: object
    names: tuple = dataclasses.field(default=(), metadata=dict(static=True))
    draws: jax.Array = ()
    n_rows: Any = None

    @property
    def rows(self) -> np.ndarray:
        """The draws, ``float64[m, k]`` (without the padding of ``padded``)."""
        d = np.asarray(self.draws, np.float64)
        return d if self.n_rows is None else d[: int(self.n_rows)]

    def padded(self, bucket: int = 4096) -> "PosteriorDraws":
        """The same posterior with its rows padded to a multiple of ``bucket`` (copies of the
        last row, never drawn) and their number traced: every path takes the row it takes here
        (``w mod m`` is the same integer), so results are unchanged, and posteriors of ``m``
        and ``m'`` draws in the same bucket share one compiled program."""
        d = np.asarray(self.rows, np.float32)
        m = d.shape[0]
        pad = -m % bucket
        return dataclasses.replace(self, draws=np.concatenate([d, np.repeat(d[-1:], pad, axis=0)]),
                                   n_rows=np.uint32(m))

    def validate(self, dt: float) -> None:
        d = np.asarray(self.draws, float)
        base = type(self.process).__name__
        fields = [f.name for f in dataclasses.fields(self.process)]
        if d.ndim != 2 or d.shape[0] < 1 or d.shape[1] != len(self.names):
            raise ParameterError(f"PosteriorDraws: draws must be [draws, {len(self.names)}] (one column per name), "
                                 f"got shape {d.shape}")
        for name in self.names:
            if name not in fields:
                raise ParameterError(f"PosteriorDraws: {base} has no parameter {name!r}; allowed: {fields}")
        self._with(d.T).validate(dt)  # every draw at once (the checks take arrays)

    def _with(self, theta):
        return _with_parameters(self.process, self.names, theta)

    def init(self, key, n: int, dt: float) -> "UncertainState":
        k_theta, k_base = jax.random.split(key)
        w, _ = samplers.hash_words(k_theta, n)
        m = jnp.uint32(np.shape(self.draws)[0]) if self.n_rows is None else jnp.asarray(self.n_rows, jnp.uint32)
        rows = (w % m).astype(jnp.int32)
        theta = jnp.take(_f(self.draws), rows, axis=0).T  # [k, n]
        return UncertainState(theta, self._with(theta).init(k_base, n, dt))

    def step(self, key, state: "UncertainState", n: int, dt: float):
        return _step_with_parameters(self.process, self.names, key, state, n, dt)

    def annual_moments(self):
        return self._with(self.rows.mean(axis=0)).annual_moments()

    def moments_of_draws(self) -> tuple[np.ndarray, np.ndarray]:
        """``(mean, variance)`` of the annual return of each draw's model, ``float64[m]`` each
        (every draw at once: ``annual_moments`` takes arrays)."""
        mean, var = self._with(self.rows.T).annual_moments()
        m = self.rows.shape[0]
        return np.broadcast_to(np.asarray(mean, np.float64), (m,)), np.broadcast_to(np.asarray(var, np.float64), (m,))


class UncertainState(NamedTuple):
    theta: jax.Array  # float32[k, n], each path's parameter draw
    base: tuple  # the base model's state
