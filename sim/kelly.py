"""Growth-optimal (Kelly) sizing: closed forms, and numeric Kelly by gradient on simulations.

The growth rate of a constant mix holding a fraction ``f`` of wealth in the risky asset(s)
and ``1 - f`` at the risk-free rate ``r_f`` is (seed 000 §2.2-2.3)::

    g(f) = E[log(1 + f X + (1 - f) r_f)]          per step; reported per year.

**Closed forms** (float64, numpy): the binary bet (``f* = (p (b + 1) - 1) / b``), the
continuous-time Gaussian case (``f* = (mu - r) / sigma^2``, ``g(c f*) = r + c (2 - c)
(mu - r)^2 / (2 sigma^2)``), the exact law of ruin of fractional Kelly in continuous time
(``P(W ever <= x W_0) = x^(2/c - 1)``) and its finite-horizon version (first passage of a
Brownian motion with drift), the exact optimum of a discrete Gaussian step by Gauss-Hermite
quadrature, and the shrinkage formulas of Kelly under an unknown mean (below).

**Numeric Kelly** (``GrowthObjective`` and ``optimize``): ``g`` is estimated on common random
numbers, i.e. on the engine's own draws for a fixed seed, so that ``g`` is a deterministic,
concave function of ``f`` (a sample average of ``log`` of affine functions) whose maximizer
a grid search on the same draws must find too. The gradient comes from forward-mode
differentiation through the engine's scan (``jax.jacfwd``), so memory stays proportional to
the number of paths (reverse mode would store every step); a ``custom_vjp`` hands that
gradient to the optimizers (Newton steps on the exact derivatives for one asset; L-BFGS
for several assets under a drawdown constraint). A draw with ``1 + f X <= 0`` wipes the
path out and makes ``g = -inf``: the line search treats that as
outside the domain and steps back, so the optimizer never returns such an ``f``.

Every return model of ``sim.processes`` works, including several assets (``MultiAsset``;
``f`` is then a vector, optionally long-only and within a budget ``sum f <= B``, handled
by reparameterization) and random parameters (``ParameterUncertainty``: the growth is then
averaged over the prior or posterior, which is Kelly under parameter uncertainty).

**Kelly under an unknown mean** (Gaussian returns, known ``sigma``, flat prior, a sample of
length ``T`` years): the posterior is ``mu ~ N(mu_hat, sigma^2 / T)``. A bet held for a
period ``tau`` (years) then has the predictive law ``N(mu_hat tau, sigma^2 tau (1 + tau /
T))``, so the posterior-averaged growth is maximized (to second order) by::

    f_bayes = (mu_hat - r) / (sigma^2 (1 + tau / T)) = f_plugin * T / (T + tau)

a negligible shrinkage for daily rebalancing (``tau = 1/252``) and a real one for bets held
a year against a few years of data. The expected growth under the *true* ``mu`` of the rule
``k f_plugin`` is instead maximized by ``k* = theta^2 / (theta^2 + 1 / T)`` (``theta`` the
Sharpe ratio): estimation error costs ``sigma^2 Var(f_hat) / 2`` of growth, the
frequentist case for fractional Kelly. ``bayes_shrinkage`` and ``frequentist_shrinkage``
give both; the ``kelly`` experiment measures both by simulation.

**Drawdown constraint**: maximize ``g`` subject to ``P(max drawdown over the horizon > d) <=
eps``, with the indicator smoothed by a logistic of width ``temperature`` (in log-drawdown)
and an augmented Lagrangian; the achieved probability is then measured with the exact
indicator on fresh draws.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sim import engine
from sim.processes import PosteriorDraws
from sim.units import per_step_mean
from sim.validation import ParameterError, check_int, check_range

__all__ = [
    "KellyConvergenceError",
    "unknown_mean",
    "sizing_under_posteriors",
    "pinned_note",
    "second_order_kelly_of_draws",
    "policy_fractions",
    "evaluate_fractions",
    "estimation_error",
    "estimation_error_summary",
    "shrinkage_table",
    "EVALUATION_COLUMNS",
    "binary_kelly",
    "binary_growth",
    "gaussian_kelly",
    "gaussian_growth",
    "fractional_kelly_growth",
    "ruin_probability",
    "first_passage_probability",
    "gaussian_kelly_discrete",
    "bayes_shrinkage",
    "frequentist_shrinkage",
    "reference_kelly",
    "mean_posterior",
    "GrowthObjective",
    "KellyResult",
    "optimize",
    "grid_search",
    "refine_grid_maximum",
    "fit_student_t",
]


class KellyConvergenceError(RuntimeError):
    """The optimizer did not converge; the message says how far it got."""


# --------------------------------------------------------------------------- closed forms


def binary_kelly(p, b):
    """Kelly fraction of a bet won with probability ``p`` at odds ``b`` (lose the stake
    otherwise): ``f* = (p (b + 1) - 1) / b`` (negative: do not bet)."""
    return (np.asarray(p, float) * (np.asarray(b, float) + 1.0) - 1.0) / np.asarray(b, float)


def binary_growth(f, p, b):
    """Growth per bet ``p log(1 + f b) + (1 - p) log(1 - f)``."""
    f, p, b = (np.asarray(x, float) for x in (f, p, b))
    with np.errstate(divide="ignore", invalid="ignore"):
        return p * np.log1p(f * b) + (1.0 - p) * np.log1p(-f)


def gaussian_kelly(mu, sigma_or_cov, risk_free=0.0):
    """Continuous-time Kelly fraction ``(mu - r) / sigma^2``; for a mean vector and a
    covariance matrix, ``cov^-1 (mu - r)``."""
    mu = np.asarray(mu, float)
    s = np.asarray(sigma_or_cov, float)
    if s.ndim == 2:
        return np.linalg.solve(s, mu - risk_free)
    return (mu - risk_free) / s**2


def gaussian_growth(f, mu, sigma, risk_free=0.0):
    """Continuous-time growth per year of the constant mix ``f``: ``r + f (mu - r) - f^2 sigma^2 / 2``."""
    return risk_free + f * (mu - risk_free) - 0.5 * np.square(f) * np.square(sigma)


def fractional_kelly_growth(c, mu, sigma, risk_free=0.0):
    """Growth of ``c`` times Kelly: ``r + c (2 - c) (mu - r)^2 / (2 sigma^2)``."""
    return risk_free + c * (2.0 - c) * (mu - risk_free) ** 2 / (2.0 * sigma**2)


def ruin_probability(x, c):
    """Continuous time, infinite horizon: ``P(W ever <= x W_0) = x^(2/c - 1)`` for ``c``
    times Kelly (``0 < x < 1``); 1 for ``c >= 2``, where growth is not positive."""
    x, c = np.asarray(x, float), np.asarray(c, float)
    return np.where(c < 2.0, x ** (2.0 / c - 1.0), 1.0)


def _norm_cdf(z):
    return 0.5 * np.vectorize(math.erfc)(-np.asarray(z, float) / math.sqrt(2.0))


def first_passage_probability(x, c, sharpe, years):
    """``P(min_{t <= T} W_t <= x W_0)`` for ``c`` times Kelly on GBM with Sharpe ``theta``.

    ``log W`` is a Brownian motion with drift ``m = theta^2 c (2 - c) / 2`` and volatility
    ``s = c theta`` (risk-free excess); with ``a = log x < 0``::

        P = Phi((a - m T) / (s sqrt T)) + exp(2 m a / s^2) Phi((a + m T) / (s sqrt T))

    which tends to ``x^(2/c - 1)`` as ``T -> inf`` (``c < 2``).
    """
    a = np.log(np.asarray(x, float))
    c = np.asarray(c, float)
    m = sharpe**2 * c * (2.0 - c) / 2.0
    s = c * abs(sharpe)
    rt = s * np.sqrt(years)
    return _norm_cdf((a - m * years) / rt) + np.exp(2.0 * m * a / s**2) * _norm_cdf((a + m * years) / rt)


def gaussian_kelly_discrete(mu, sigma, dt, risk_free=0.0, n_nodes=80):
    """Exact Kelly fraction of one Gaussian step of ``dt`` years (float64).

    Maximizes ``E[log(1 + r_f dt + f ((mu - r_f) dt + sigma sqrt(dt) Z))]`` by Newton's
    method on a Gauss-Hermite rule; it differs from ``(mu - r) / sigma^2`` by ``O(dt)``.
    (The region ``1 + ... <= 0`` has probability below 1e-300 for the daily steps and
    fractions this is meant for, and is ignored.)
    """
    z, w = np.polynomial.hermite_e.hermegauss(n_nodes)
    w = w / w.sum()
    excess = (mu - risk_free) * dt + sigma * math.sqrt(dt) * z
    f = (mu - risk_free) / sigma**2
    for _ in range(50):
        x = 1.0 + risk_free * dt + f * excess
        g1 = np.sum(w * excess / x)
        g2 = -np.sum(w * excess**2 / x**2)
        step = g1 / g2
        f -= step
        if abs(step) < 1e-15:
            break
    return f


def bayes_shrinkage(sample_years, holding_years):
    """``T / (T + tau)``: the posterior-averaged Kelly fraction over the plug-in one, for an
    unknown Gaussian mean with known sigma (flat prior), ``T`` years of data and bets held
    for ``tau`` years (second order in the step; see the module docstring)."""
    return sample_years / (sample_years + holding_years)


def frequentist_shrinkage(sharpe, sample_years):
    """``theta^2 / (theta^2 + 1 / T)``: the multiple of the plug-in Kelly fraction that
    maximizes the expected growth under the true mean (continuous time)."""
    return sharpe**2 / (sharpe**2 + 1.0 / sample_years)


def reference_kelly(process, risk_free=0.0):
    """The Gaussian Kelly fraction with the same annual mean and variance as ``process``
    (``process.annual_moments()``): the reference of the Kelly multiple ``c``."""
    mean, var = process.annual_moments()
    return gaussian_kelly(mean, np.sqrt(var) if np.ndim(var) == 0 else var, risk_free)


def mean_posterior(returns, *, sigma=None, steps_per_year=252.0):
    """Posterior of the annual mean of simple ``returns`` (flat prior, known ``sigma``; the
    sample's own volatility if ``sigma`` is None): ``(mu_hat, sd)`` with ``sd = sigma /
    sqrt(T)``, ``T`` the sample length in years."""
    r = np.asarray(returns, float)
    if r.ndim != 1 or r.size < 2 or not np.isfinite(r).all():
        raise ParameterError(f"returns must be a finite 1-D series of length >= 2, got shape {r.shape}")
    years = r.size / steps_per_year
    sigma = r.std(ddof=1) * math.sqrt(steps_per_year) if sigma is None else float(sigma)
    return r.mean() * steps_per_year, sigma / math.sqrt(years)


# --------------------------------------------------------------------------- simulated growth


class _Spec(NamedTuple):
    """The static part of a growth sample (hashable: a jit cache key)."""

    n_blocks: int
    block_size: int
    n_steps: int
    steps_per_year: float
    risk_free: float
    drawdown_level: float | None
    temperature: float
    n_paths: int  # paths counted: the first n_paths of the n_blocks * block_size simulated


def _run_blocks(seed, process, policy, spec: _Spec, policy_axes=None) -> dict:
    """The engine's blocks of the sample, in one traced function (``engine.block_outputs``)."""
    return engine.block_outputs(seed, process, policy, n_blocks=spec.n_blocks, block_size=spec.block_size,
                                n_steps=spec.n_steps, dt=1.0 / spec.steps_per_year, policy_axes=policy_axes)


def _counted(x, spec: _Spec):
    return engine.counted(x, spec.n_paths)


def _paths(f, seed, process, spec: _Spec):
    """Per-path (time-average growth, smoothed drawdown indicator), each [n_paths]. The seed
    and the model are traced, so one compilation serves every seed and parameter value."""
    policy = engine.ConstantMix(jnp.asarray(f, jnp.float32), jnp.float32(spec.risk_free), jnp.float32(0.0))
    st = _run_blocks(seed, process, policy, spec)["stats"]
    growth = _counted(st.log_wealth, spec) / (spec.n_steps / spec.steps_per_year)
    if spec.drawdown_level is None:
        return growth, jnp.zeros_like(growth)
    level = -math.log1p(-spec.drawdown_level)
    breach = jax.nn.sigmoid((_counted(st.max_drawdown_log, spec) - level) / spec.temperature)
    return growth, breach


def _means(f, seed, process, spec: _Spec):
    growth, breach = _paths(f, seed, process, spec)
    return jnp.stack([jnp.mean(growth), jnp.mean(breach)])


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _means_fwd_mode(f, seed, process, spec):
    """``f -> [g, P_breach]`` whose reverse-mode derivative is computed in forward mode."""
    return _means(f, seed, process, spec)


def _means_fwd(f, seed, process, spec):
    return _means(f, seed, process, spec), jax.jacfwd(_means)(f, seed, process, spec)


def _means_bwd(spec, jac, ct):
    return jnp.tensordot(ct, jac, axes=1), None, None  # no derivative in the seed or the model


_means_fwd_mode.defvjp(_means_fwd, _means_bwd)

_paths_jit = jax.jit(_paths, static_argnums=3)
def _grid(fs, seed, process, spec: _Spec, with_sd: bool):
    """The mean growth per fraction ``[G]``, and its standard deviation across paths."""

    def one(f):
        growth = _paths(f, seed, process, spec)[0]
        return (jnp.mean(growth), jnp.std(growth, ddof=1)) if with_sd else (jnp.mean(growth),)

    return jax.vmap(one)(fs)


_grid_jit = jax.jit(_grid, static_argnums=(3, 4))


class _GrowthDerivatives(NamedTuple):
    """A constant-mix engine policy that also carries, per path, the gradient of
    ``log W_T`` in ``f`` and, per block, the sum of its Hessian over paths. For the mix,
    ``log W_T = sum_t log(1 + x_t)``, ``x_t = f . r_t + (1 - sum f) r_f``, so the gradient is
    ``sum_t e_t / (1 + x_t)`` and the Hessian ``-sum_t e_t e_t^T / (1 + x_t)^2`` with
    ``e_t = r_t - r_f``: one pass, whatever the number of assets (nested forward-mode
    differentiation costs d^2 tangents)."""

    fraction: Any
    risk_free: Any
    floor: Any = 0.0
    valid: Any = True  # bool[block_size] (vmapped over blocks): the lanes that count

    def init(self, n: int, dt: float, process=None, process_state=None):
        d = int(np.size(self.fraction))
        return jnp.zeros((n, d), jnp.float32), jnp.zeros((d, d), jnp.float32)

    def step(self, key, state, r, process, process_state, t, dt: float):
        rf = per_step_mean(jnp.asarray(self.risk_free, jnp.float32), dt)
        x = engine.portfolio_return(jnp.asarray(self.fraction, jnp.float32), r, rf)  # the engine's own mix
        alive = 1.0 + x > 0
        w = jnp.where(alive & self.valid, 1.0 / jnp.where(alive, 1.0 + x, 1.0), 0.0)
        ew = jnp.reshape(r - rf, (r.shape[0], -1)) * w[:, None]
        grad, hess = state
        return (grad + ew, hess - ew.T @ ew), x

    def outputs(self, state) -> dict:
        return {"grad": state[0], "hess": state[1]}


def _analytic_derivs(f, seed, process, spec: _Spec):
    """Per-path growth ``[n]`` and gradient ``[n, d]`` (per year), and the mean Hessian ``[d, d]``."""
    lanes = jnp.arange(spec.n_blocks * spec.block_size).reshape(spec.n_blocks, spec.block_size)
    policy = _GrowthDerivatives(jnp.asarray(f, jnp.float32), jnp.float32(spec.risk_free), 0.0, lanes < spec.n_paths)
    out = _run_blocks(seed, process, policy, spec, policy_axes=_GrowthDerivatives(None, None, None, 0))
    years = spec.n_steps / spec.steps_per_year
    return (_counted(out["stats"].log_wealth, spec) / years, _counted(out["extras"]["grad"], spec) / years,
            out["extras"]["hess"].sum(axis=0) / years / spec.n_paths)


_analytic_derivs_jit = jax.jit(_analytic_derivs, static_argnums=3)


class GrowthObjective:
    """The growth rate ``g(f)`` (per year) on a fixed sample of the engine's draws.

    Args:
      process: a model from ``sim.processes``.
      seed, n_paths, n_steps, steps_per_year, block_size: the sample (exactly ``n_paths``
        paths, the engine's first ``n_paths`` for the same arguments).
      risk_free: annual rate on ``1 - sum f``.
      drawdown: ``(d, eps)`` to also estimate the smoothed ``P(max drawdown > d)`` over the
        horizon ``n_steps`` (for the constrained optimizer); None otherwise.
      temperature: width of the logistic smoothing, in units of ``log(peak / W)``.
    """

    def __init__(self, process, *, seed: int = 0, n_paths: int = 1 << 14, n_steps: int = 252,
                 steps_per_year: float = 252.0, risk_free: float = 0.0, block_size: int | None = None,
                 drawdown: tuple[float, float] | None = None, temperature: float = 0.02):
        n_paths = check_int("n_paths", n_paths, 2)
        n_steps = check_int("n_steps", n_steps, 1)
        check_range("steps_per_year", steps_per_year, 0.0, lo_closed=False)
        check_range("risk_free", risk_free, -1.0, 10.0, lo_closed=False)
        block_size = min(engine.DEFAULT_BLOCK_SIZE, n_paths) if block_size is None else check_int(
            "block_size", block_size, 1)
        process.validate(1.0 / steps_per_year)
        if isinstance(process, PosteriorDraws) and process.n_rows is None:
            process = process.padded()  # one compiled program for posteriors of up to 4,096 draws (same results)
        self.process = process
        self.n_assets = int(process.n_assets) if hasattr(process, "n_assets") else 0
        self.seed, self.n_steps, self.steps_per_year = seed, n_steps, float(steps_per_year)
        self.risk_free, self.block_size = float(risk_free), block_size
        self.n_blocks = -(-n_paths // block_size)
        self.n_paths = n_paths  # exactly: the last block's other lanes are simulated, not counted
        self.years = n_steps / self.steps_per_year
        if drawdown is not None:
            d, eps = drawdown
            check_range("max_drawdown", d, 0.0, 1.0, lo_closed=False, hi_closed=False)
            check_range("drawdown probability eps", eps, 0.0, 1.0, lo_closed=False, hi_closed=False)
            check_range("temperature", temperature, 0.0, lo_closed=False)
            if risk_free < 0 and -math.expm1(math.log1p(risk_free / self.steps_per_year) * n_steps) > d:
                raise ParameterError(
                    f"drawdown constraint P(max drawdown > {d}) <= {eps} is infeasible: with risk_free = "
                    f"{risk_free} even f = 0 draws down more than {d} over {self.years:g} years"
                )
        self.drawdown, self.temperature = drawdown, float(temperature)
        self.spec = _Spec(self.n_blocks, block_size, n_steps, self.steps_per_year, self.risk_free,
                          None if drawdown is None else float(drawdown[0]), self.temperature, n_paths)
        # the derivatives do not use the drawdown fields: one program with and without a constraint
        self._derivs_spec = self.spec._replace(drawdown_level=None, temperature=0.0)

    def _args(self):
        return jnp.uint32(self.seed), self.process

    # -- public API
    def _as_f(self, f):
        f = jnp.asarray(f, jnp.float32)
        want = () if self.n_assets == 0 else (self.n_assets,)
        if f.shape != want:
            raise ParameterError(f"fraction must have shape {want} for {type(self.process).__name__}, got {f.shape}")
        return f

    def __call__(self, f) -> float:
        """``g(f)``, annualized, on the sample (``-inf`` if any path is wiped out)."""
        return float(_paths_jit(self._as_f(f), *self._args(), self.spec)[0].mean())

    def values(self, fractions) -> np.ndarray:
        """``g`` on a batch of fractions ``[G]`` (or ``[G, d]``): one compiled vmapped kernel
        in which the draws are shared by every grid point."""
        fs = jnp.asarray(fractions, jnp.float32)
        return np.asarray(_grid_jit(fs, *self._args(), self.spec, False)[0], float)

    def values_and_se(self, fractions) -> tuple[np.ndarray, np.ndarray]:
        """``g`` on a batch of fractions and its standard error (spread across paths)."""
        mean, sd = _grid_jit(jnp.asarray(fractions, jnp.float32), *self._args(), self.spec, True)
        return np.asarray(mean, float), np.asarray(sd, float) / math.sqrt(self.n_paths)

    def value_and_grad(self, f):
        g, _, grad, _, _ = self.derivatives(f)
        return float(g), grad

    def breach_probability(self, f, *, exact: bool = True) -> float:
        """``P(max drawdown > d)`` on this sample: the exact indicator, or the smoothed one."""
        if self.drawdown is None:
            raise ParameterError("breach_probability needs GrowthObjective(drawdown=(d, eps))")
        if not exact:
            return float(_paths_jit(self._as_f(f), *self._args(), self.spec)[1].mean())
        level = -math.log1p(-self.drawdown[0])
        return float(np.mean(self.max_drawdown_log(f) > level))

    def max_drawdown_log(self, f) -> np.ndarray:
        result = engine.simulate(self.process, seed=self.seed, n_paths=self.n_paths, n_steps=self.n_steps,
                                 steps_per_year=self.steps_per_year, block_size=self.block_size,
                                 policy=engine.ConstantMix(np.asarray(f), self.risk_free, 0.0))
        return np.asarray(result.stats.max_drawdown_log)

    def derivatives(self, f):
        """``(g, g_se, grad, grad_cov, hessian)`` at ``f``, in float64 on the host: the mean
        growth and its standard error, the gradient and the covariance of its sample mean
        (from the per-path gradients), and the Hessian. The last point's result is kept: the
        optimizers ask again at the point they start from and the point they stop at (one
        engine pass each saved), and get copies."""
        f32 = np.asarray(self._as_f(f))
        key = (f32.shape, f32.tobytes())
        last = getattr(self, "_last_derivatives", None)
        if last is None or last[0] != key:
            growth, jac, hess = (np.asarray(a, float) for a in
                                 _analytic_derivs_jit(jnp.asarray(f32), *self._args(), self._derivs_spec))
            if self.n_assets == 0:
                jac, hess = jac[:, 0], hess.reshape(1, 1)
            n = growth.shape[0]
            g_se = growth.std(ddof=1) / math.sqrt(n) if np.isfinite(growth).all() else float("nan")
            grad_cov = np.atleast_2d(np.cov(jac, rowvar=False)) / n
            last = self._last_derivatives = (key, (growth.mean(), g_se, jac.mean(axis=0), grad_cov, hess))
        return tuple(np.copy(v) if isinstance(v, np.ndarray) else v for v in last[1])

    def _replace(self, **changes) -> "GrowthObjective":
        args = dict(seed=self.seed, n_paths=self.n_paths, n_steps=self.n_steps, steps_per_year=self.steps_per_year,
                    risk_free=self.risk_free, block_size=self.block_size, drawdown=self.drawdown,
                    temperature=self.temperature)
        return GrowthObjective(self.process, **(args | changes))

    def without_drawdown(self) -> "GrowthObjective":
        """The same objective and draws with no drawdown constraint."""
        return self._replace(drawdown=None)

    def with_seed(self, seed: int) -> "GrowthObjective":
        """The same objective on fresh draws."""
        return self._replace(seed=seed)


# --------------------------------------------------------------------------- optimization


@dataclasses.dataclass
class KellyResult:
    """The outcome of ``optimize``.

    fraction: the fraction(s) to hold: ``multiple * full_fraction``.
    full_fraction: the optimum found (growth-optimal, or constrained-optimal).
    growth, growth_se: ``g`` at ``fraction`` on the sample, per year, and its standard error.
    full_growth: ``g`` at ``full_fraction``.
    fraction_se: Monte Carlo standard error of ``full_fraction`` (sandwich: the spread of
      the per-path gradient over the curvature), for an unconstrained interior optimum.
    grad_norm: norm of the gradient of ``g`` in the optimizer's coordinates at the end.
    breach_probability: for a drawdown constraint, ``P(max drawdown > d)`` at ``fraction``
      on fresh draws (exact indicator); None otherwise.
    """

    fraction: Any
    full_fraction: Any
    multiple: float
    growth: float
    growth_se: float
    full_growth: float
    fraction_se: Any
    grad_norm: float
    iterations: int
    converged: bool
    constraint: dict | None = None
    breach_probability: float | None = None

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        return {k: (np.asarray(v).tolist() if isinstance(v, np.ndarray) else v) for k, v in out.items()}


class _Transform(NamedTuple):
    """The map from the optimizer's free coordinates ``u`` to fractions ``f`` that enforces
    the constraints (hashable: a jit cache key), and an inverse for the starting point."""

    n_assets: int
    long_only: bool
    budget: float | None

    def to_f(self, u):
        if self.budget is not None and self.long_only:
            # f = B softmax([u, 0])[:d]: f >= 0 and sum f <= B (the last weight is the slack).
            return self.budget * jax.nn.softmax(jnp.append(u, 0.0))[:-1]
        if self.long_only:
            return jax.nn.softplus(u)
        if self.budget is not None:
            # Projection onto {sum f <= B} along (1, ..., 1): continuous, identity inside.
            return u - jnp.maximum(jnp.sum(u) - self.budget, 0.0) / max(self.n_assets, 1)
        return u

    def to_u(self, f):
        f = np.asarray(f, float)
        if self.budget is not None and self.long_only:
            f = np.clip(f, 1e-4 * self.budget, None)
            slack = max(self.budget - f.sum(), 1e-3 * self.budget)
            if f.sum() + slack > self.budget:
                f = f * (self.budget - slack) / f.sum()
            return np.log(f / slack)
        if self.long_only:
            f = np.clip(f, 1e-4, None)
            return np.where(f > 20, f, np.log(np.expm1(np.minimum(f, 20))))
        return f


def _loss(u, lam, rho, eps, seed, process, spec: _Spec, transform: _Transform):
    """``-g``, plus the augmented-Lagrangian term of the drawdown constraint if any."""
    g, p = _means_fwd_mode(transform.to_f(u), seed, process, spec)
    if spec.drawdown_level is None:
        return -g
    return -g + 0.5 * rho * jnp.square(jnp.maximum(p - eps + lam / rho, 0.0)) - 0.5 * lam**2 / rho


_loss_vg = jax.jit(jax.value_and_grad(_loss), static_argnums=(6, 7))
_LBFGS = optax.lbfgs(learning_rate=1.0, linesearch=None)  # the L-BFGS direction only
_direction = jax.jit(_LBFGS.update)


def _starting_point(objective: GrowthObjective, x0):
    if x0 is None:
        try:
            x0 = reference_kelly(objective.process, objective.risk_free)
        except (AttributeError, np.linalg.LinAlgError):
            x0 = np.full(max(objective.n_assets, 1), 0.5) if objective.n_assets else 0.5
    x0 = np.asarray(x0, float)
    for _ in range(60):  # step back toward f = 0 until every path survives
        if _survives(objective, x0):
            return x0
        x0 = x0 * 0.5
    raise KellyConvergenceError(
        f"no fraction with finite growth found on the path from the starting point to 0 "
        f"({type(objective.process).__name__}): every fraction tried wipes a path out"
    )


def _survives(objective: GrowthObjective, f) -> bool:
    """Whether every path survives at ``f`` (finite growth), from the derivatives' engine pass
    (``derivatives``), the program the Newton solves run anyway: a separate value program
    would be compiled for this check alone."""
    return bool(np.isfinite(objective.derivatives(f)[0]))


def project_feasible(f, long_only: bool, budget: float | None) -> np.ndarray:
    """The Euclidean projection of ``f`` onto ``{f >= 0 (long_only), sum f <= budget}``."""
    f = np.asarray(f, float).copy()
    if long_only:
        f = np.maximum(f, 0.0)
    if budget is None or f.sum() <= budget:
        return f
    if not long_only:
        return f - (f.sum() - budget) / f.size
    # onto the simplex {f >= 0, sum f = budget} (Duchi et al. 2008)
    u = np.sort(f)[::-1]
    css = np.cumsum(u) - budget
    k = np.flatnonzero(u - css / np.arange(1, f.size + 1) > 0)[-1]
    return np.maximum(f - css[k] / (k + 1), 0.0)


def kkt_check(grad, f, *, long_only: bool, budget: float | None, tol: float) -> dict:
    """First-order optimality of ``f`` for ``max g`` s.t. ``f >= 0`` (long_only) and
    ``sum f <= budget``, from the gradient ``grad`` of ``g`` in weight space: the assets held
    have equal marginal growth ``grad_i = nu`` (``nu >= 0`` the budget's multiplier, 0 when it
    is slack), those at zero have ``grad_i <= nu``. Returns ``ok``, ``multiplier`` (nu),
    ``max_violation`` (per year), ``held``, ``at_zero``, ``budget_binds``."""
    grad, f = np.atleast_1d(np.asarray(grad, float)), np.atleast_1d(np.asarray(f, float))
    scale = max(1.0, float(np.abs(f).sum()))
    at_zero = long_only & (f <= 1e-7 * scale)
    held = ~at_zero
    binds = budget is not None and f.sum() >= budget - 1e-6 * scale
    nu = float(np.mean(grad[held])) if binds and held.any() else 0.0
    if binds and not held.any():
        nu = max(float(grad.max()), 0.0)
    viol = [np.abs(grad[held] - nu)] if held.any() else []
    if at_zero.any():
        viol.append(np.maximum(grad[at_zero] - nu, 0.0))
    viol.append(np.array([max(-nu, 0.0)]))
    worst = float(np.concatenate(viol).max())
    return dict(ok=worst <= tol, multiplier=nu, max_violation=worst, held=held, at_zero=at_zero, budget_binds=binds)


def _weight_start(objective: GrowthObjective, x0, long_only: bool, budget: float | None, as_f) -> np.ndarray:
    """A start strictly inside the feasible set, where every path survives."""
    d = max(objective.n_assets, 1)
    f = project_feasible(np.atleast_1d(_starting_point(objective, x0)).astype(float), long_only, budget)
    if long_only or budget is not None:  # halfway to an interior point, off every bound
        interior = np.full(d, (budget if budget is not None else 1.0) / (d + 1)) if long_only else np.zeros(d)
        f = 0.5 * f + 0.5 * interior
    while not _survives(objective, as_f(f)):
        f = 0.5 * f
    return f


def _newton_step(grad, hess, zero, budget_on: bool):
    """The Newton step on the free assets (``~zero``), on ``{sum of the free weights fixed}``
    when the budget binds (``H s - nu 1 = -grad, 1's = 0``). Returns ``(step, free index)``."""
    idx = np.flatnonzero(~zero)
    step = np.zeros(grad.size)
    if idx.size:
        h = hess[np.ix_(idx, idx)]
        if budget_on:
            k = idx.size
            kkt_matrix = np.block([[h, -np.ones((k, 1))], [np.ones((1, k)), np.zeros((1, 1))]])
            step[idx] = np.linalg.lstsq(kkt_matrix, np.append(-grad[idx], 0.0), rcond=None)[0][:k]
        else:
            step[idx] = np.linalg.lstsq(h, -grad[idx], rcond=None)[0]
    return step, idx


def _release(kkt: dict, zero, grad, budget_on: bool, kkt_tol: float):
    """Release the constraint whose multiplier has the wrong sign, the worst first (``zero``
    is updated in place). Returns ``(released, budget_on)``."""
    nu_now = kkt["multiplier"] if budget_on else 0.0
    if budget_on and nu_now < -kkt_tol:
        return True, False
    excess = np.where(zero, grad - nu_now, -np.inf)
    if zero.any() and excess.max() > kkt_tol:
        zero[int(np.argmax(excess))] = False
        return True, budget_on
    return False, budget_on


def _projected_newton(derivs, f, g, grad, step, zero, long_only: bool, budget: float | None):
    """The full Newton step projected onto the feasible set: it finds many bounds at once (20
    assets, 18 at zero: 6 iterations instead of 22). Kept only when it increases ``g``; then
    every asset it put at zero, and the budget if it binds, are held. Returns ``(f, derivs at
    f, zero, budget_on)`` or None."""
    f_proj = project_feasible(f + step, long_only, budget)
    if long_only:
        f_proj[zero] = 0.0
    ascent = float(grad @ (f_proj - f))
    if not (ascent > 0 and np.abs(f_proj - f - step).max() > 1e-12):
        return None
    trial = derivs(f_proj)
    if not (np.isfinite(trial[0]) and trial[0] >= g + 1e-4 * ascent):
        return None
    if long_only:
        zero = f_proj <= 0.0
    budget_on = budget is not None and f_proj.sum() >= budget - 1e-12 * max(1.0, budget)
    return f_proj, trial, zero, budget_on


def _boundary(f, step, idx, long_only: bool, budget: float | None, budget_on: bool):
    """The longest feasible step along ``step`` and the bound it hits: ``(t_max, hit)``."""
    t_max, hit = 1.0, None
    for i in idx if long_only else ():
        if step[i] < 0 and f[i] + step[i] < 0:
            t = f[i] / -step[i]
            if t < t_max:
                t_max, hit = t, ("zero", i)
    if budget is not None and not budget_on and step.sum() > 0 and f.sum() + step.sum() > budget:
        t = (budget - f.sum()) / step.sum()
        if t < t_max:
            t_max, hit = t, ("budget", None)
    return t_max, hit


def _backtrack(derivs, f, g, grad, step, t_max: float, hit, budget: float | None):
    """Backtracking from ``t_max`` that keeps every path solvent: ``(f_try, derivs at it, t)``,
    or None when no step of 40 halvings increases ``g`` beyond float32 resolution."""
    slope = float(grad @ step)
    t = t_max
    for _ in range(40):
        f_try = f + t * step
        if hit is not None and t == t_max:
            if hit[0] == "zero":
                f_try[hit[1]] = 0.0
            else:
                f_try = f_try * (budget / f_try.sum()) if f_try.sum() > 0 else f_try
        trial = derivs(f_try)  # one engine pass: value, gradient and Hessian at the trial point
        resolution = 8 * float(np.spacing(np.float32(abs(g) + 1e-30)))
        if np.isfinite(trial[0]) and (trial[0] >= g + 1e-4 * t * slope or trial[0] >= g - resolution):
            return f_try, trial, t
        t *= 0.5
    return None


def _optimize_weights(objective: GrowthObjective, *, long_only: bool, budget: float | None, x0, max_iter: int,
                      kkt_tol: float, xtol: float):
    """Maximize the concave ``g`` over ``{f >= 0 (long_only), sum f <= budget}`` directly in
    weight space: Newton steps with the exact gradient and Hessian on the free assets (one
    engine pass each, ``_GrowthDerivatives``), a primal active set (an asset that reaches 0,
    or the budget when it binds, is held there; released when its multiplier has the wrong
    sign), a backtracking line search that keeps every path solvent, and convergence only when
    the KKT conditions hold (``kkt_check``). Returns ``(f, kkt, iterations, converged)``."""
    scalar = objective.n_assets == 0
    as_f = (lambda v: float(v[0])) if scalar else (lambda v: v)  # noqa: E731

    def derivs(f):
        g, _, grad, _, hess = objective.derivatives(as_f(f))
        return float(g), np.atleast_1d(grad), np.atleast_2d(hess)

    f = _weight_start(objective, x0, long_only, budget, as_f)
    zero = np.zeros(f.size, bool)  # assets held at their lower bound 0
    budget_on = False
    cached = None  # (g, grad, hess) at f, from the line search's last evaluation
    for it in range(1, max_iter + 1):
        g, grad, hess = cached = derivs(f) if cached is None else cached
        step, idx = _newton_step(grad, hess, zero, budget_on)
        if np.abs(step).max() <= xtol:
            kkt = kkt_check(grad, f, long_only=long_only, budget=budget, tol=kkt_tol)
            if kkt["ok"]:
                return as_f(f), kkt, it, True
            if not (long_only or budget is not None) and np.all(np.linalg.eigvalsh(hess) < 0):
                # no constraint: the stationary point is within xtol (the Newton step of a concave
                # g), the rule L-BFGS used; near a wipe-out barrier the curvature is so large that
                # float32 cannot bring the gradient itself below kkt_tol
                return as_f(f), kkt, it, True
            released, budget_on = _release(kkt, zero, grad, budget_on, kkt_tol)
            if released:
                continue
            return as_f(f), kkt, it, False  # stuck: the KKT check fails and no constraint to release
        if long_only or budget is not None:
            jumped = _projected_newton(derivs, f, g, grad, step, zero, long_only, budget)
            if jumped is not None:
                f, cached, zero, budget_on = jumped
                continue
        t_max, hit = _boundary(f, step, idx, long_only, budget, budget_on)
        found = _backtrack(derivs, f, g, grad, step, t_max, hit, budget)
        if found is None:
            kkt = kkt_check(grad, f, long_only=long_only, budget=budget, tol=kkt_tol)
            return as_f(f), kkt, it, kkt["ok"]
        f, cached, t = found
        if hit is not None and t == t_max:
            if hit[0] == "zero":
                zero[hit[1]] = True
            else:
                budget_on = True
    g, grad, _ = derivs(f)
    kkt = kkt_check(grad, f, long_only=long_only, budget=budget, tol=kkt_tol)
    return as_f(f), kkt, max_iter, False


def _lbfgs(loss_vg, u, max_iter: int, gtol: float, xtol: float, to_f):
    """L-BFGS from optax with an Armijo backtracking line search that also steps back out of
    the region where a path is wiped out (``g = -inf``). Returns ``(u, |grad|, iterations,
    converged)``."""
    opt = _LBFGS
    state = opt.init(u)
    value, grad = loss_vg(u)
    if not np.isfinite(float(value)):
        raise KellyConvergenceError(f"growth is not finite at the starting point f = {np.asarray(to_f(u))}")
    for it in range(1, max_iter + 1):
        grad_norm = float(jnp.linalg.norm(grad))
        if grad_norm <= gtol:
            return u, grad_norm, it - 1, True
        updates, state = _direction(grad, state, u)
        if it > 2 and float(jnp.linalg.norm(updates)) <= xtol:
            return u, grad_norm, it - 1, True  # the quasi-Newton step is below xtol
        slope = float(jnp.vdot(grad, updates))
        if not slope < 0:  # not a descent direction: restart from steepest descent
            state, updates = opt.init(u), -grad / max(grad_norm, 1.0)
            slope = float(jnp.vdot(grad, updates))
        t = 1.0
        for _ in range(40):
            u_try = u + t * updates
            v_try, g_try = loss_vg(u_try)
            if not np.isfinite(float(v_try)):
                t *= 0.5
                continue
            if float(v_try) <= float(value) + 1e-4 * t * slope:
                break  # Armijo
            # Near the optimum the decrease is below float32 resolution of the value: accept
            # a step that does not increase it and shrinks the directional derivative.
            resolution = 4 * float(np.spacing(np.float32(abs(float(value)) + 1e-30)))
            if float(v_try) <= float(value) + resolution and abs(float(jnp.vdot(g_try, updates))) <= 0.9 * abs(slope):
                break
            t *= 0.5
        else:  # no decrease possible in float32: converged if the step was already tiny
            return u, grad_norm, it, grad_norm <= 10 * gtol or float(jnp.linalg.norm(updates)) <= 10 * xtol
        u, value, grad = u_try, v_try, g_try
    return u, float(jnp.linalg.norm(grad)), max_iter, float(jnp.linalg.norm(grad)) <= gtol


def _drawdown_on_ray(objective: GrowthObjective, *, x0, max_iter: int, gtol: float, xtol: float):
    """One asset under ``P(max drawdown > d) <= eps``: ``g`` is concave and the breach
    probability grows with ``|f|`` along the ray from 0 to the unconstrained optimum, so the
    constrained optimum is that optimum if it meets the constraint, else the largest ``f`` on
    the ray that does, with the exact indicator on these draws (bisection). The logistic
    smoothing of the former augmented Lagrangian biased P up and bound too early (a true
    breach rate of about 2/3 of eps). Returns ``(f, |grad|, iterations, converged, info)``."""
    dd = objective.drawdown
    free = optimize(objective.without_drawdown(), x0=x0, max_iter=max_iter, gtol=gtol, xtol=xtol, strict=False)
    f_free = float(free.full_fraction)
    p_free = objective.breach_probability(f_free)
    if p_free <= dd[1]:
        f_w, binds, p_in = f_free, False, p_free
    else:
        lo_s, hi_s, p_in = 0.0, 1.0, objective.breach_probability(0.0)
        if p_in > dd[1]:
            raise KellyConvergenceError(f"drawdown constraint P(max drawdown > {dd[0]}) <= {dd[1]} is infeasible "
                                        f"on these draws: even f = 0 breaches it with probability {p_in:.4g}")
        for _ in range(40):
            mid = 0.5 * (lo_s + hi_s)
            p_mid = objective.breach_probability(mid * f_free)
            if p_mid <= dd[1]:
                lo_s, p_in = mid, p_mid
            else:
                hi_s = mid
            if (hi_s - lo_s) * abs(f_free) < 1e-5:
                break
        f_w, binds = lo_s * f_free, True
    n = objective.n_paths
    info = dict(max_drawdown=dd[0], eps=dd[1], binds=binds, unconstrained_fraction=f_free,
                in_sample_probability=p_in, in_sample_probability_se=math.sqrt(p_in * (1 - p_in) / n),
                method="exact indicator, bisection along the ray to the unconstrained optimum")
    return f_w, free.grad_norm, free.iterations, free.converged, info


def _augmented_lagrangian(loss_vg, means, u, eps: float, *, max_iter: int, gtol: float, xtol: float,
                          constraint_tol: float, to_f):
    """Several assets under the smoothed drawdown constraint: L-BFGS solves of the augmented
    Lagrangian, the multiplier updated between them. Returns ``(u, |grad|, iterations,
    converged, info)``."""
    lam, rho, iterations, converged, p, grad_norm = 0.0, 50.0, 0, False, float("nan"), float("nan")
    for _outer in range(12):
        lam32, rho32 = jnp.float32(lam), jnp.float32(rho)
        u, grad_norm, it, ok = _lbfgs(lambda v: loss_vg(v, lam32, rho32), u, max_iter, gtol, xtol, to_f)
        iterations += it
        p = float(means(to_f(u))[1])
        lam = max(0.0, lam + rho * (p - eps))
        if ok and p <= eps + constraint_tol and (lam == 0.0 or abs(p - eps) <= constraint_tol):
            converged = True
            break
        rho *= 4.0
    info = dict(max_drawdown=None, eps=eps, smoothed_probability=p, multiplier=lam,
                method="augmented Lagrangian on the logistic-smoothed indicator (several assets): "
                       "the smoothing biases P up, so the constraint binds early")
    return u, grad_norm, iterations, converged, info


def optimize(objective: GrowthObjective, *, multiple: float = 1.0, long_only: bool = False,
             budget: float | None = None, x0=None, max_iter: int = 200, gtol: float = 1e-6, xtol: float = 1e-6,
             constraint_tol: float = 2e-3, kkt_tol: float = 1e-5, strict: bool = True) -> KellyResult:
    """Kelly (or fractional Kelly) on ``objective``'s draws: Newton steps on the exact gradient
    and Hessian for one asset or under long-only / budget constraints (``_optimize_weights``),
    the ray bisection for one asset under the drawdown constraint, optax L-BFGS on an
    augmented Lagrangian for several assets under it.

    Args:
      objective: a ``GrowthObjective``; built with ``drawdown=(d, eps)`` it maximizes ``g``
        subject to the smoothed ``P(max drawdown > d) <= eps`` (augmented Lagrangian).
      multiple: the Kelly multiple ``c`` (0.5 for half Kelly); ``fraction = c * optimum``.
      long_only, budget: constraints for several assets (``f >= 0``, ``sum f <= budget``).
      x0: starting fraction (default: the Gaussian reference Kelly, stepped back into the
        domain).
      max_iter, gtol, xtol: at most ``max_iter`` steps per solve; (L-BFGS) converged when the
        gradient norm (per year, in the optimizer's coordinates) is below ``gtol`` or the
        quasi-Newton step is shorter than ``xtol`` (near a wipe-out barrier the curvature is
        huge and float32 cannot push the gradient itself below ``gtol``).
      constraint_tol: allowed excess of the smoothed breach probability over ``eps``.
      kkt_tol: for the Newton solves (one asset, ``long_only`` or ``budget``), the largest
        violation (per year) of the optimality conditions in weight space allowed for
        ``converged=True`` (``kkt_check``: a zero gradient for one free asset; equal marginal
        growth on the assets held, no higher on those at zero).
      strict: raise ``KellyConvergenceError`` instead of returning an unconverged result.
    """
    check_range("multiple (Kelly multiple c)", multiple, 0.0, 10.0, lo_closed=False)
    check_int("max_iter", max_iter, 1)
    check_range("gtol", gtol, 0.0, lo_closed=False)
    check_range("xtol", xtol, 0.0, lo_closed=False)
    if budget is not None:
        check_range("budget", budget, 0.0, lo_closed=False)
        if objective.n_assets == 0:
            raise ParameterError("budget applies to several assets (MultiAsset); for one asset bound f directly")
    transform = _Transform(objective.n_assets, bool(long_only), None if budget is None else float(budget))
    to_f = transform.to_f
    dd = objective.drawdown
    eps = jnp.float32(dd[1] if dd is not None else 0.0)
    seed, process = objective._args()

    def loss_vg(u, lam, rho):
        return _loss_vg(u, lam, rho, eps, seed, process, objective.spec, transform)

    def start_u():
        return jnp.asarray(transform.to_u(_starting_point(objective, x0)), jnp.float32)

    constraint_info, f_w, u = None, None, None
    if dd is None and (long_only or budget is not None or objective.n_assets == 0):
        f_w, kkt, iterations, converged = _optimize_weights(
            objective, long_only=bool(long_only), budget=None if budget is None else float(budget), x0=x0,
            max_iter=max_iter, kkt_tol=kkt_tol, xtol=xtol)
        grad_norm = kkt["max_violation"]
        constraint_info = dict(long_only=bool(long_only), budget=budget, kkt_ok=kkt["ok"],
                               kkt_max_violation=kkt["max_violation"], budget_multiplier=kkt["multiplier"],
                               budget_binds=kkt["budget_binds"], n_held=int(kkt["held"].sum()))
    elif dd is None:
        zero = jnp.float32(0.0), jnp.float32(1.0)
        u, grad_norm, iterations, converged = _lbfgs(lambda v: loss_vg(v, *zero), start_u(), max_iter, gtol, xtol,
                                                     to_f)
    elif objective.n_assets == 0 and not long_only:
        f_w, grad_norm, iterations, converged, constraint_info = _drawdown_on_ray(
            objective, x0=x0, max_iter=max_iter, gtol=gtol, xtol=xtol)
    else:
        u, grad_norm, iterations, converged, constraint_info = _augmented_lagrangian(
            loss_vg, lambda f: _means_fwd_mode(f, seed, process, objective.spec), start_u(), dd[1],
            max_iter=max_iter, gtol=gtol, xtol=xtol, constraint_tol=constraint_tol, to_f=to_f)
        constraint_info["max_drawdown"] = dd[0]
    f_full = np.asarray(to_f(u), float) if u is not None else np.asarray(f_w, float)
    if not converged and strict:
        raise KellyConvergenceError(
            f"Kelly optimizer did not converge for {type(objective.process).__name__} after {iterations} "
            f"iterations: gradient norm {grad_norm:.3g} > gtol {gtol:g} at f = {f_full}"
            + (f"; constraint {constraint_info}" if constraint_info else "")
        )
    return _kelly_result(objective, f_full, multiple, grad_norm, iterations, converged, constraint_info,
                         sandwich=dd is None and not long_only and budget is None)


def _kelly_result(objective: GrowthObjective, f_full, multiple: float, grad_norm, iterations: int, converged: bool,
                  constraint_info, *, sandwich: bool) -> KellyResult:
    dd = objective.drawdown
    f = multiple * f_full
    g_full, g_full_se, _, grad_cov, hess = objective.derivatives(f_full)
    fraction_se = None
    if sandwich:
        # Sandwich: f_hat - f* ~ -H^-1 grad_hat, so Cov(f_hat) = H^-1 Cov(grad_hat) H^-1.
        h_inv = np.linalg.inv(hess)
        fraction_se = np.sqrt(np.diag(h_inv @ grad_cov @ h_inv))
        fraction_se = float(fraction_se[0]) if objective.n_assets == 0 else fraction_se
    g, g_se = (g_full, g_full_se) if multiple == 1.0 else objective.derivatives(f)[:2]
    breach = None
    if dd is not None:
        breach = objective.with_seed(objective.seed + 1_000_003).breach_probability(f)
        constraint_info["fresh_draws_probability"] = breach
        constraint_info["fresh_draws_probability_se"] = math.sqrt(breach * (1 - breach) / objective.n_paths)
    scalar = objective.n_assets == 0
    return KellyResult(
        fraction=float(f) if scalar else f,
        full_fraction=float(f_full) if scalar else f_full,
        multiple=float(multiple),
        growth=float(g),
        growth_se=float(g_se),
        full_growth=float(g_full),
        fraction_se=fraction_se,
        grad_norm=grad_norm,
        iterations=iterations,
        converged=converged,
        constraint=constraint_info,
        breach_probability=breach,
    )


def grid_search(objective: GrowthObjective, lo: float, hi: float, *, n_coarse: int = 121, n_fine: int = 201):
    """Brute-force maximizer of a one-asset ``g`` on ``[lo, hi]``, on the same draws.

    A coarse grid, then a fine grid over the two coarse cells either side of the best
    point, then the vertex of the parabola through the best fine point and its neighbours.
    Returns ``(f_best, g_best, fine_grid, fine_values)``.
    """
    if objective.n_assets:
        raise ParameterError("grid_search is for one asset")
    coarse = np.linspace(lo, hi, n_coarse)
    vals = objective.values(coarse)
    if not np.isfinite(vals).any():
        raise KellyConvergenceError(
            f"growth is not finite anywhere on the grid [{lo}, {hi}] (first values {vals[:3]}; "
            f"g({lo}) = {objective(lo)} by the single-point kernel)"
        )
    i = int(np.nanargmax(np.where(np.isfinite(vals), vals, -np.inf)))
    step = coarse[1] - coarse[0]
    fine = np.linspace(max(lo, coarse[i] - 2 * step), min(hi, coarse[i] + 2 * step), n_fine)
    fvals = objective.values(fine)
    best, j = refine_grid_maximum(fine, fvals)
    return best, float(fvals[j]), fine, fvals


def refine_grid_maximum(x, y) -> tuple[float, int]:
    """The maximizer of ``y`` on the grid ``x`` (``-inf``/NaN values skipped), moved to the
    vertex of the parabola through the best point and its two neighbours when all three are
    finite and the parabola is concave. Returns ``(x_best, index of the best grid point)``."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    finite = np.isfinite(y)
    j = int(np.argmax(np.where(finite, y, -np.inf)))
    if not (0 < j < len(x) - 1 and finite[j - 1 : j + 2].all()):
        return float(x[j]), j
    (x0, x1, x2), (y0, y1, y2) = x[j - 1 : j + 2], y[j - 1 : j + 2]
    denom = (x0 - x1) * (x0 - x2) * (x1 - x2)
    a = (x2 * (y1 - y0) + x1 * (y0 - y2) + x0 * (y2 - y1)) / denom
    b = (x2**2 * (y0 - y1) + x1**2 * (y2 - y0) + x0**2 * (y1 - y2)) / denom
    return (float(np.clip(-b / (2 * a), x0, x2)) if a < 0 else float(x[j])), j


def fit_student_t(returns, *, steps_per_year: float = 252.0, nus=None):
    """Fit ``StudentT(mu, sigma, nu)`` to simple returns: ``mu`` and ``sigma`` from the
    sample mean and standard deviation (annualized; the model's sigma is the total
    volatility), ``nu`` by maximizing the likelihood of the standardized returns over a grid
    (profile likelihood, unit-variance t). Returns ``(mu, sigma, nu)``."""
    r = np.asarray(returns, float)
    if r.ndim != 1 or r.size < 10 or not np.isfinite(r).all():
        raise ParameterError(f"returns must be a finite 1-D series of length >= 10, got shape {r.shape}")
    m, s = r.mean(), r.std(ddof=1)
    z = (r - m) / s
    nus = np.concatenate([np.linspace(2.1, 10, 159), np.linspace(10.5, 60, 100)]) if nus is None else np.asarray(nus)

    def loglik(nu):
        scale = math.sqrt((nu - 2.0) / nu)  # unit-variance t has scale sqrt((nu - 2) / nu)
        c = math.lgamma((nu + 1) / 2) - math.lgamma(nu / 2) - 0.5 * math.log(nu * math.pi) - math.log(scale)
        return z.size * c - (nu + 1) / 2 * np.log1p((z / scale) ** 2 / nu).sum()

    ll = np.array([loglik(nu) for nu in nus])
    return m * steps_per_year, s * math.sqrt(steps_per_year), float(nus[int(np.argmax(ll))])


# --------------------------------------------------------------------------- policy studies

#: the columns of ``evaluate_fractions``'s rows, from ``SimResult.summary``
EVALUATION_COLUMNS = ("time_avg_growth", "time_avg_growth_se", "time_avg_growth_median", "median_wealth",
                      "ruin_probability", "p_max_drawdown_gt_50", "max_drawdown_median", "es99", "cagr_median",
                      "calmar_median", "wipeout_probability")


def unknown_mean(fitted, sample_years: float):
    """``fitted`` with its mean unknown: normal around ``fitted.mu`` with the standard error of
    a mean over ``sample_years`` (``sigma / sqrt(T)``), each path drawing its own mean."""
    from sim.processes import ParameterUncertainty

    return ParameterUncertainty(fitted, names=("mu",), kinds=("normal",), loc=np.array([fitted.mu]),
                                scale=np.array([fitted.sigma / math.sqrt(sample_years)]), shift=np.array([0.0]))


def policy_fractions(fitted, sample_years: float, *, seed: int, n_paths: int, n_steps: int, steps_per_year: float,
                     risk_free: float, fractional_multiple: float, drawdown_level: float,
                     drawdown_probability: float, drawdown_steps: int) -> tuple[dict, float]:
    """The four sizing policies for a fitted model, by numeric Kelly on common random numbers:
    ``plug_in`` (the fitted model's optimum), ``fractional`` (``fractional_multiple`` times
    it), ``uncertainty`` (the optimum under ``unknown_mean``), ``drawdown`` (maximum growth
    with ``P(max drawdown > level over drawdown_steps) <= probability``). Returns the
    fractions and the drawdown policy's breach probability on fresh draws."""
    kw = dict(seed=seed, n_paths=n_paths, n_steps=n_steps, steps_per_year=steps_per_year, risk_free=risk_free)
    plug = optimize(GrowthObjective(fitted, **kw))
    unc = optimize(GrowthObjective(unknown_mean(fitted, sample_years), **kw))
    dd = optimize(GrowthObjective(fitted, drawdown=(drawdown_level, drawdown_probability),
                                  **dict(kw, n_steps=drawdown_steps)))
    fractions = {"plug_in": plug.full_fraction, "fractional": fractional_multiple * plug.full_fraction,
                 "uncertainty": unc.full_fraction, "drawdown": dd.full_fraction}
    return fractions, dd.breach_probability


def evaluate_fractions(process, fractions: dict, *, seed: int, n_paths: int, n_steps: int, steps_per_year: float,
                       risk_free: float, floor: float) -> tuple[list, dict]:
    """Each fraction held on ``process`` (the same draws for all): one row per policy with
    ``EVALUATION_COLUMNS``, and the per-path terminal log wealth per policy."""
    rows, wealth = [], {}
    results = engine.simulate_fractions(process, list(fractions.values()), seed=seed, n_paths=n_paths,
                                        n_steps=n_steps, steps_per_year=steps_per_year, risk_free=risk_free,
                                        floor=floor)  # one pass: the process is simulated once for all
    for (name, f), res in zip(fractions.items(), results):
        s = res.summary()
        wealth[name] = res.stats.log_wealth
        rows.append({"policy": name, "fraction": f, **{k: s[k] for k in EVALUATION_COLUMNS}})
    return rows, wealth


def estimation_error(true, sample_years: float, n_datasets: int, objective: GrowthObjective, rng) :
    """What estimating the mean costs: the fitted Gaussian Kelly fraction on ``n_datasets``
    independent samples of ``sample_years`` of a known-sigma ``true`` model (plug-in, half,
    and shrunk by ``frequentist_shrinkage``'s estimated ``k``), each rule's growth evaluated by
    ``objective`` (the true model, the same draws for every rule: no interpolation)."""
    import pandas as pd

    mu_hat = true.mu + true.sigma / math.sqrt(sample_years) * rng.standard_normal(n_datasets)
    f_hat = mu_hat / true.sigma**2
    theta_hat = mu_hat / true.sigma
    k_hat = np.clip((theta_hat**2 - 1 / sample_years) / np.maximum(theta_hat**2, 1e-12), 0, 1)
    out = pd.DataFrame({"mu_hat": mu_hat, "f_plug_in": f_hat, "f_half": 0.5 * f_hat, "f_shrunk": k_hat * f_hat})
    for col in ("f_plug_in", "f_half", "f_shrunk"):
        out["growth_" + col[2:]] = objective.values(out[col].to_numpy())
    return out


def estimation_error_summary(datasets) -> dict:
    """Expected and median growth and the share wiped out per rule of ``estimation_error``,
    and how often the plug-in fraction is levered or short."""
    out = {f"{rule}_{stat}": value for rule in ("plug_in", "half", "shrunk") for stat, value in (
        ("expected_growth", float(datasets["growth_" + rule].mean())),
        ("median_growth", float(datasets["growth_" + rule].median())),
        ("share_wiped_out", float((~np.isfinite(datasets["growth_" + rule])).mean())),
    )}
    out["share_levered_plug_in"] = float((datasets.f_plug_in > 1).mean())
    out["share_short_plug_in"] = float((datasets.f_plug_in < 0).mean())
    return out


def shrinkage_table(base, sample_years, *, holding_years: float, steps_per_year: float, seed: int,
                    n_paths: int = 1 << 16) :
    """Kelly under an unknown mean (known sigma) against the sample length ``T``: the simulated
    ratio of the posterior-averaged optimum to the plug-in one over one holding period, with
    its standard error, against ``bayes_shrinkage`` (for that period and for daily
    rebalancing) and ``frequentist_shrinkage``."""
    import pandas as pd

    kw = dict(seed=seed, n_paths=n_paths, n_steps=1, steps_per_year=1 / holding_years)
    plug = optimize(GrowthObjective(base, **kw), x0=0.3)
    rows = []
    for T in sample_years:
        res = optimize(GrowthObjective(unknown_mean(base, T), **kw), x0=0.3)
        rows.append({"sample_years": T, "simulated": res.full_fraction / plug.full_fraction,
                     "simulated_se": res.fraction_se / plug.full_fraction,
                     "bayes_closed_form": bayes_shrinkage(T, holding_years),
                     "bayes_daily_rebalancing": bayes_shrinkage(T, 1 / steps_per_year),
                     "frequentist_optimum": frequentist_shrinkage(base.mu / base.sigma, T)})
    return pd.DataFrame(rows)


def sizing_under_posteriors(fitted, posteriors: dict, *, seed: int, n_paths: int, n_steps: int,
                            steps_per_year: float, risk_free: float, fractional_multiple: float,
                            drawdown_level: float, drawdown_probability: float, drawdown_steps: int) -> list:
    """The sizing policies of one fitted model on common random numbers: ``plug_in`` (numeric
    Kelly on the fitted process), ``fractional`` (``fractional_multiple`` times it), one Kelly
    per posterior in ``posteriors`` (``{name: process}``, e.g. a fit's Laplace draws or NUTS
    draws as ``PosteriorDraws``: each path runs one joint draw for the horizon), and
    ``drawdown`` (maximum growth with ``P(max drawdown > level over drawdown_steps) <=
    probability`` on the fitted process). One dict per policy: ``policy``, ``fraction``,
    ``converged`` and the fraction's Monte Carlo standard error where it has one."""
    kw = dict(seed=seed, n_paths=n_paths, n_steps=n_steps, steps_per_year=steps_per_year, risk_free=risk_free)

    def row(name, res, objective, fraction=None):
        f = float(res.full_fraction if fraction is None else fraction)
        se = res.fraction_se if fraction is None else None
        return {"policy": name, "fraction": f, "fraction_se": float(se) if se is not None else float("nan"),
                "converged": bool(res.converged), "note": pinned_note(objective, f) if fraction is None else ""}

    plug_objective = GrowthObjective(fitted, **kw)
    plug = optimize(plug_objective)
    rows = [row("plug_in", plug, plug_objective), row("fractional", plug, plug_objective,
                                                      fractional_multiple * plug.full_fraction)]
    for name, process in posteriors.items():
        objective = GrowthObjective(process, **kw)
        rows.append(row(name, optimize(objective), objective))
    dd_objective = GrowthObjective(fitted, drawdown=(drawdown_level, drawdown_probability),
                                   **dict(kw, n_steps=drawdown_steps))
    rows.append(row("drawdown", optimize(dd_objective), dd_objective))
    return rows


def pinned_note(objective: GrowthObjective, f: float, step: float = 0.05) -> str:
    """"" when ``f`` is an interior optimum; a warning when ``(1 + step) f`` already wipes a
    path of the objective's sample out: the optimum then sits against that path's barrier
    (its fraction is set by the sample's worst draw and moves with the number of paths: more
    paths, a worse worst draw), so it is not an optimum of the model. Measured on the S&P
    500's Student-t fit (nu 2.9): 0.978 at 512 paths, 0.997 at 4,096, 0.998 at 32,768."""
    if _survives(objective, f * (1 + step)):  # the Newton solves' own derivatives program: no new compile
        return ""
    return (f"within {100 * step:.0f}% of a fraction that wipes out a path of {objective.n_paths}: set by the "
            "worst draw, it moves with the number of paths; not an optimum of the model")


def second_order_kelly_of_draws(draws, risk_free: float = 0.0) -> np.ndarray:
    """For each joint draw of a ``sim.processes.PosteriorDraws``: the Kelly fraction of the
    model with that draw's parameters, to second order, ``(mean - r) / variance`` of its
    annual moments (``annual_moments``; the growth-optimal fraction under daily rebalancing
    up to O(dt) terms). The posterior of the Kelly fraction, for plots and tables."""
    mean, var = draws.moments_of_draws()
    return (mean - risk_free) / var
