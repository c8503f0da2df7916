"""Maximum-likelihood fits of the return models, on the simulator's own parameterization.

``fit(returns, model)`` fits one of ``MODELS`` to a series of simple returns (float64, JAX,
optax L-BFGS on unconstrained coordinates, as one compiled loop) and returns a ``FitResult``
whose ``process`` *is* the fitted ``sim.processes`` object (annualized, unit-variance
innovations), so the engine runs what was fitted. Standard errors come from the observed
information (the autodiff Hessian of the log-likelihood in the model's own parameters); the
result also holds the log-likelihood, AIC and BIC, and says when the optimizer did not
converge or a parameter sits on a bound. ``compare`` ranks fits by AIC with Akaike weights;
``recovery`` measures an estimator on simulated series; ``sim.posterior`` samples the same
likelihoods by NUTS.

The likelihoods are of the simple returns the simulator draws (``sim.processes``; per-step
drift and volatility through ``sim.units``):

* Gaussian: ``r ~ N(mu dt, sigma^2 dt)``.
* Student-t: ``r = mu dt + sigma sqrt(dt) sqrt((nu - 2) / nu) T``, ``T ~ t(nu)``.
* GARCH(1,1)-t: ``r_t = mu dt + sqrt(h_t) z_t`` with unit-variance t ``z_t``,
  ``h_{t+1} = omega + alpha (r_t - mu dt)^2 + beta h_t``, ``omega = sigma^2 dt (1 - alpha - beta)``,
  ``h_1 = sigma^2 dt`` (the simulator's start). Stationarity is kept by construction:
  ``alpha + beta = sigmoid(a)``, ``alpha / (alpha + beta) = sigmoid(b)``.
* Merton: ``log(1 + r)`` given ``N`` jumps in the step is normal (compensated drift, as the
  simulator's), ``N ~ Poisson(lam dt)``: the mixture over ``N = 0..24`` (the simulator's own
  truncation; the mass beyond is below 1e-25 for ``lam dt <= 1``), with the Jacobian of
  ``log(1 + r)`` so that AIC compares with the other models on the same returns.
* Regime switching (two states, unit-variance t in each): the hidden-Markov likelihood by the
  forward algorithm in log space, switch probabilities ``1 - exp(-rate dt)`` per step after
  each return, the first state drawn from the discrete chain's stationary law (the
  simulator's). The crash state is labelled as the more volatile one.

The mixtures' likelihoods have several local maxima: their fits start from several points
(one vectorized run) and keep the best converged one. Samples are padded to a multiple of
1,024 returns with zero weights (``padded``), so fits of samples of different lengths share a
compiled program.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math

import jax
import jax.numpy as jnp
import numpy as np

from sim.units import per_step_mean, per_step_prob, per_step_rate, per_step_vol
from sim.validation import ParameterError, check_int

__all__ = ["FitResult", "fit", "fit_data", "MODELS", "MIN_RETURNS", "few_events_notes", "MIN_JUMPS", "MIN_CRASHES",
           "regime_step_law", "recovery", "likelihood_ratio_statistic", "profile_interval", "bootstrap_threshold",
           "with_intervals", "check_interval_options", "INTERVALS",
           "BootstrapThreshold", "lower_edge",
           "log_likelihood", "garch_variances", "compare", "model_of", "SPECS", "padded"]

MIN_RETURNS = 30  # the fewest returns a fit takes
_NU_MAX = 200.0  # beyond this a Student-t is a Gaussian for any sample here: flagged as a bound
_NU_SINGULAR = 2.001  # below this a Student-t's scale has collapsed: flagged as a bound


@dataclasses.dataclass
class FitResult:
    model: str
    params: dict  # the model's parameters, annualized (the process's own fields)
    se: dict  # their standard errors from the observed information (NaN where not positive definite)
    loglik: float
    n_obs: int
    converged: bool
    iterations: int
    grad_norm: float
    at_bound: list  # parameters on or near a bound of their domain (their SE is then not reliable)
    process: object  # the fitted sim.processes object

    fixed: tuple = ()  # parameters held at given values (not estimated: no SE, not counted in k)
    steps_per_year: float = 252.0  # the returns' frequency
    few_events: list = dataclasses.field(default_factory=list)  # parameters resting on few events (few_events_notes)
    # name -> (low, high, how): intervals computed by with_intervals (the others: Wald, in table)
    intervals: dict = dataclasses.field(default_factory=dict)
    _u_hat: np.ndarray | None = dataclasses.field(default=None, repr=False)  # the estimate, unconstrained
    _u_cov: np.ndarray | None = dataclasses.field(default=None, repr=False)  # its covariance there (Laplace)

    @property
    def unconstrained_estimate(self) -> np.ndarray:
        """The estimate in the fit's unconstrained coordinates (``SPECS[model]["to_params"]``)."""
        return self._u_hat

    @property
    def has_laplace(self) -> bool:
        """Whether ``laplace`` can draw (converged, information positive definite)."""
        return self.converged and self._u_cov is not None

    @property
    def k(self) -> int:
        return len(self.params) - len(self.fixed)

    @property
    def aic(self) -> float:
        return 2 * self.k - 2 * self.loglik

    @property
    def bic(self) -> float:
        return self.k * math.log(self.n_obs) - 2 * self.loglik

    @property
    def status(self) -> str:
        if not self.converged:
            return "NOT CONVERGED: the best point found, not an estimate"
        if self.at_bound:
            return f"on a bound ({', '.join(self.at_bound)}): standard errors not reliable"
        if self.few_events:
            return f"converged; weakly identified ({'; '.join(self.few_events)})"
        return "converged"

    def laplace(self, n_draws: int = 1000, seed: int = 0):
        """The Laplace approximation of the posterior (flat prior): ``n_draws`` joint draws from
        a normal around the estimate with the inverse observed information as covariance, in
        the fit's unconstrained coordinates (so every draw keeps the model's constraints: sigma
        > 0, nu > 2, alpha + beta < 1), as a ``sim.processes.PosteriorDraws`` of the fitted
        process. Fixed parameters stay fixed. A wide posterior can still hold draws the
        simulator does not run (a Merton lam above one jump a step, a value past float32's
        range: measured on 2008-2009 fits): its ``validate`` names the parameter."""
        from sim.processes import PosteriorDraws

        if not self.converged or self._u_cov is None:
            raise ParameterError(f"{self.model}: no Laplace posterior: {self.status if not self.converged else 'the information is not positive definite'}")
        rng = np.random.default_rng(seed)
        u = rng.multivariate_normal(self._u_hat, self._u_cov, size=check_int("n_draws", n_draws, 1))
        spec = SPECS[self.model]
        with jax.enable_x64(True):
            params = spec["to_params"](jnp.asarray(u.T, jnp.float64))
        names = [k for k in spec["names"] if k not in self.fixed]
        draws = np.stack([np.broadcast_to(np.asarray(params[k], np.float64), (len(u),)) for k in names], axis=1)
        return PosteriorDraws(self.process, names=tuple(names), draws=draws.astype(np.float32))

    def table(self, level: float = 0.95):
        """One row per parameter (estimate, SE, an interval: ``low``, ``high`` and ``interval``
        saying which; Wald at ``level`` unless ``with_intervals`` computed another), then the
        fit's figures."""
        import pandas as pd
        from scipy import stats as sps

        z = float(sps.norm.ppf(0.5 + level / 2))
        rows = []
        for k, v in self.params.items():
            se = self.se[k]
            if k in self.intervals:
                low, high, how = self.intervals[k]
            elif k in self.fixed:
                low, high, how = float("nan"), float("nan"), "held (not estimated)"
            elif math.isfinite(se):
                low, high, how = v - z * se, v + z * se, f"Wald {level:.0%}"
            else:
                low, high, how = float("nan"), float("nan"), "none: no standard error (with_intervals: profile)"
            rows.append({"model": self.model, "parameter": k, "estimate": v, "se": se, "low": low, "high": high,
                         "interval": how})
        for k, v in (("loglik", self.loglik), ("aic", self.aic), ("bic", self.bic), ("n_obs", self.n_obs)):
            rows.append({"model": self.model, "parameter": k, "estimate": float(v), "se": float("nan")})
        out = pd.DataFrame(rows)
        out["status"] = self.status
        return out


# --------------------------------------------------------------------------- the models


def _t_logpdf(x, nu):
    return (jax.scipy.special.gammaln((nu + 1) / 2) - jax.scipy.special.gammaln(nu / 2)
            - 0.5 * jnp.log(nu * jnp.pi) - (nu + 1) / 2 * jnp.log1p(x * x / nu))


def _unit_t_logpdf(e, scale, nu):
    """log density of ``e = scale * z``, ``z`` a unit-variance t(``nu``)."""
    c = scale * jnp.sqrt((nu - 2) / nu)
    return _t_logpdf(e / c, nu) - jnp.log(c)


# Each log-likelihood takes the returns ``r`` and weights ``w`` (1 for an observation, 0 for
# the padding that rounds a sample up to a bucket of lengths, so that fits of samples of
# different lengths share one compiled program; padding sits after the data and changes nothing).


def _loglik_gaussian(p, r, dt, w):
    m, s = per_step_mean(p["mu"], dt), per_step_vol(p["sigma"], dt)
    return jnp.sum(w * (-0.5 * jnp.log(2 * jnp.pi) - jnp.log(s) - 0.5 * ((r - m) / s) ** 2))


def _loglik_student_t(p, r, dt, w):
    return jnp.sum(w * _unit_t_logpdf(r - per_step_mean(p["mu"], dt), per_step_vol(p["sigma"], dt), p["nu"]))


def garch_variances(e, h0, omega, alpha, beta, *, parallel: bool = False):
    """The GARCH(1,1) conditional variances ``h_1 = h0``, ``h_{t+1} = omega + alpha e_t^2 +
    beta h_t`` of the residuals ``e``: step by step (a ``lax.scan``: quick to compile, what
    ``fit`` differentiates twice), or (``parallel``) as an associative scan of the affine
    maps ``h -> beta h + c``, since the recursion is linear in ``h``: the same numbers up to
    float64 rounding (measured: 1e-15 relative), and a gradient several times faster on the
    CPU, which NUTS evaluates thousands of times."""
    c = omega + alpha * e[:-1] * e[:-1]
    if not parallel:
        def step(h, c_t):
            h_next = beta * h + c_t
            return h_next, h_next

        _, rest = jax.lax.scan(step, h0, c)  # over the data's days (a likelihood), not simulated time
    else:
        def compose(first, second):  # apply first, then second
            return first[0] * second[0], second[0] * first[1] + second[1]

        scale, shift = jax.lax.associative_scan(compose, (jnp.broadcast_to(beta, c.shape), c))
        rest = scale * h0 + shift
    return jnp.concatenate([jnp.reshape(h0, (1,)), rest])


def _loglik_garch_t(p, r, dt, w, parallel=False):
    m, nu, a, b = per_step_mean(p["mu"], dt), p["nu"], p["alpha"], p["beta"]
    h0 = per_step_vol(p["sigma"], dt) ** 2
    e = r - m
    h = garch_variances(e, h0, h0 * (1 - a - b), a, b, parallel=parallel)
    return jnp.sum(w * _unit_t_logpdf(e, jnp.sqrt(h), nu))


MERTON_TERMS = 24  # jump counts 0..24 per step, as the simulator's sampler (sim.samplers.poisson_small)


def _loglik_merton(p, r, dt, w):
    """``x = log(1 + r)`` given ``N`` jumps is ``N(drift + N m, sigma^2 dt + N s^2)``, ``N``
    Poisson(``lam dt``): the mixture summed over ``N = 0..MERTON_TERMS`` (the mass beyond is
    below 1e-25 for ``lam dt <= 1``, under float64's precision), plus the Jacobian
    ``-log(1 + r)`` so that the likelihood is of the simple returns, like the other models'."""
    x = jnp.log1p(r)
    m, s, sig, lam = p["jump_mean"], p["jump_std"], p["sigma"], p["lam"]
    k = jnp.expm1(m + 0.5 * s * s)
    drift = per_step_mean(p["mu"] - 0.5 * sig * sig - lam * k, dt)
    rate = per_step_rate(lam, dt)
    n = jnp.arange(MERTON_TERMS + 1, dtype=x.dtype)
    log_w = -rate + jax.scipy.special.xlogy(n, rate) - jax.scipy.special.gammaln(n + 1)
    var = per_step_vol(sig, dt) ** 2 + n * s * s
    dev = x[:, None] - drift - n * m
    comp = log_w - 0.5 * jnp.log(2 * jnp.pi * var) - 0.5 * dev * dev / var
    return jnp.sum(w * (jax.scipy.special.logsumexp(comp, axis=1) - x))


def regime_step_law(p, dt):
    """The regime chain the simulator steps: per-step switch probabilities (calm -> crash,
    crash -> calm) and its stationary P(crash), the law paths start in
    (``sim.processes.RegimeSwitching``)."""
    up, down = per_step_prob(p["rate_to_crash"], dt), per_step_prob(p["rate_to_calm"], dt)
    return up, down, up / (up + down)


def _regime_log_densities(p, r, dt):
    return jnp.stack([_unit_t_logpdf(r - per_step_mean(p[f"mu_{s}"], dt), per_step_vol(p[f"sigma_{s}"], dt),
                                     p[f"nu_{s}"]) for s in ("calm", "crash")], axis=1)


def _loglik_regime(p, r, dt, w):
    """The hidden-Markov likelihood by the forward algorithm in log space: step ``t``'s
    return comes from the regime in force, which then switches with the per-step
    probabilities; the first regime is drawn from the chain's stationary law."""
    up, down, pi = regime_step_law(p, dt)
    log_e = _regime_log_densities(p, r, dt) * w[:, None]  # padding: density 1 in both regimes
    log_p = jnp.log(jnp.stack([jnp.stack([1 - up, up]), jnp.stack([down, 1 - down])]))
    a0 = jnp.log(jnp.stack([1 - pi, pi])) + log_e[0]

    def step(a, e_t):
        return jax.scipy.special.logsumexp(a[:, None] + log_p, axis=0) + e_t, None

    a, _ = jax.lax.scan(step, a0, log_e[1:])  # over the data's days (a likelihood), not simulated time
    return jax.scipy.special.logsumexp(a)


def _sigmoid(x):
    return 1.0 / (1.0 + jnp.exp(-x))


def _logit(p):
    return math.log(p / (1 - p))


def _regime_params(u):
    names = ("mu_calm", "sigma_calm", "nu_calm", "mu_crash", "sigma_crash", "nu_crash", "rate_to_crash",
             "rate_to_calm")
    kinds = ("x", "exp", "nu", "x", "exp", "nu", "exp", "exp")
    to = {"x": lambda v: v, "exp": jnp.exp, "nu": lambda v: 2.0 + jnp.exp(v)}
    return {k: to[kind](u[i]) for i, (k, kind) in enumerate(zip(names, kinds))}


# Per model: its parameter names, its log-likelihood ``loglik(params, r, dt, w)`` (and a
# ``loglik_parallel`` with faster gradients where one exists), the map from unconstrained
# coordinates to parameters, and the starting points (several for the mixtures, whose
# likelihoods have more than one local maximum: the best fit is kept). Public: sim.posterior
# samples the same likelihoods in the same coordinates.
SPECS = {
    "gaussian": dict(
        names=("mu", "sigma"), loglik=_loglik_gaussian,
        to_params=lambda u: {"mu": u[0], "sigma": jnp.exp(u[1])},
        starts=lambda mu, sd: [[mu, math.log(sd)]]),
    "student_t": dict(
        names=("mu", "sigma", "nu"), loglik=_loglik_student_t,
        to_params=lambda u: {"mu": u[0], "sigma": jnp.exp(u[1]), "nu": 2.0 + jnp.exp(u[2])},
        starts=lambda mu, sd: [[mu, math.log(sd), math.log(3.0)]]),
    "garch_t": dict(
        names=("mu", "sigma", "alpha", "beta", "nu"), loglik=_loglik_garch_t,
        loglik_parallel=functools.partial(_loglik_garch_t, parallel=True),
        to_params=lambda u: {"mu": u[0], "sigma": jnp.exp(u[1]), "alpha": _sigmoid(u[2]) * _sigmoid(u[3]),
                             "beta": _sigmoid(u[2]) * (1 - _sigmoid(u[3])), "nu": 2.0 + jnp.exp(u[4])},
        starts=lambda mu, sd: [[mu, math.log(sd), _logit(0.95), _logit(0.08 / 0.95), math.log(4.0)]]),
    "merton": dict(
        names=("mu", "sigma", "lam", "jump_mean", "jump_std"), loglik=_loglik_merton,
        to_params=lambda u: {"mu": u[0], "sigma": jnp.exp(u[1]), "lam": jnp.exp(u[2]), "jump_mean": u[3],
                             "jump_std": jnp.exp(u[4])},
        starts=lambda mu, sd: [[mu, math.log(0.8 * sd), math.log(lam), jm, math.log(js)]
                               for lam, jm, js in ((0.5, -0.1, 0.1), (5.0, -0.03, 0.03), (30.0, 0.0, 0.015),
                                                   (2.0, -0.05, 0.05))]),
    "regime_switching": dict(
        names=tuple(_regime_params(jnp.zeros(8))), loglik=_loglik_regime, to_params=_regime_params,
        starts=lambda mu, sd: [[mu + 0.05, math.log(0.8 * sd), math.log(4.0), mu - 0.5, math.log(2.5 * sd),
                                math.log(2.0), math.log(rc), math.log(rm)]
                               for rc, rm in ((0.1, 2.0), (1.0, 4.0), (0.5, 8.0))]),
}
MODELS = tuple(SPECS)
_ALL_PARAMETERS = {k for spec in SPECS.values() for k in spec["names"]}  # fit_data's held-parameter arguments

# coordinate i moves parameter names[i], except these, moved by more than one coordinate
# (GARCH: persistence and share move alpha and beta together)
_MIXED = {"garch_t": {"alpha", "beta"}}
_RELABEL = {"regime_switching": [3, 4, 5, 0, 1, 2, 7, 6]}  # the same likelihood with the regimes' names swapped


def _process(model: str, params: dict):
    from sim import processes

    cls = {"gaussian": processes.Gaussian, "student_t": processes.StudentT, "garch_t": processes.GarchT,
           "merton": processes.Merton, "regime_switching": processes.RegimeSwitching}[model]
    return cls(**params)


def _check_returns(returns) -> np.ndarray:
    r = np.asarray(returns, dtype=np.float64)
    if r.ndim != 1:
        raise ParameterError(f"returns must be one series (1-D), got shape {r.shape}")
    check_int("number of returns", r.size, MIN_RETURNS)
    bad = ~np.isfinite(r)
    if bad.any():
        raise ParameterError(f"returns hold {int(bad.sum())} missing or non-finite values (first at position "
                             f"{int(np.argmax(bad))}); allowed: finite numbers only")
    if np.any(r <= -1.0):
        raise ParameterError(f"returns must be simple returns > -1 (a price cannot fall below zero); position "
                             f"{int(np.argmax(r <= -1.0))} holds {r[r <= -1.0][0]:g}")
    return r


def _bounds(model: str, params: dict, dt: float) -> list:
    out = []
    for k in ("nu", "nu_calm", "nu_crash"):
        if k in params and params[k] > _NU_MAX:
            out.append(f"{k} > {_NU_MAX:g} (tails as thin as a Gaussian's)")
        if k in params and params[k] < _NU_SINGULAR:
            # the unit-variance Student-t's scale sigma sqrt((nu - 2) / nu) goes to 0: in a mixture
            # the density at one observation is unbounded (measured on a regime fit, docs/DESIGN.md)
            out.append(f"{k} < {_NU_SINGULAR:g} (the density's scale collapses: a singular maximum of the "
                       "likelihood, not an estimate)")
    if model == "garch_t":
        if params["alpha"] < 1e-4:
            out.append("alpha near 0 (no ARCH effect)")
        if params["alpha"] + params["beta"] > 0.999:
            out.append("alpha + beta near 1 (not stationary)")
    if model == "merton":
        if params["lam"] * dt > 1:
            out.append("lam dt > 1 (more than one jump a step: outside the simulator's range)")
        if params["lam"] < 1e-3 or params["jump_std"] < 1e-4:
            out.append("no jumps to speak of (lam or jump_std near 0): a Gaussian")
    if model == "regime_switching" and min(params["rate_to_crash"], params["rate_to_calm"]) < 1e-3:
        out.append("a switching rate near 0 (one regime only)")
    return out


MIN_JUMPS, MIN_CRASHES = 20, 5


def lower_edge(model: str, name: str) -> float:
    """The lower edge of parameter ``name``'s domain in ``model``, from the fit's own map
    from unconstrained coordinates (``SPECS[model]["to_params"]`` at ``u = -inf``): 0 for a
    scale or a rate, 2 for ``nu``, ``-inf`` for a location."""
    with jax.enable_x64(True):
        u = jnp.full(len(SPECS[model]["names"]), -jnp.inf, jnp.float64)
        return float(SPECS[model]["to_params"](u)[name])


def few_events_notes(model: str, params: dict, years: float) -> list:
    """Where a fit's parameters rest on few events in the sample, so that their standard
    errors (and the intervals built on them) are not to be trusted: Merton's jump size with
    fewer than ``MIN_JUMPS`` expected jumps (``lam * years``), the regime model's crash regime
    with fewer than ``MIN_CRASHES`` expected crash episodes (``years * rate_to_crash`` x the
    calm regime's stationary share). Measured (``sim.fit.recovery``, 50 series of 10 years):
    at Merton's defaults (about 5 jumps) the 95% Wald intervals of jump_mean and jump_std
    covered 72% and 56%, the profile-likelihood ones 88% and 82%; at the regime model's
    defaults (about one crash) those of sigma_crash 60% and 82%, of mu_crash 74% and 92%;
    with about 200 jumps or 8 crash episodes, the Wald intervals 88-98%. Merton's jump_std
    interval calibrated by the parametric bootstrap (``profile_interval(..., bootstrap=B)``,
    all starts) covered 96%; the regime model's sigma_crash one 100% (conservative: wide, as
    about one crash warrants; docs/DESIGN.md)."""
    out = []
    if model == "merton":
        jumps = params["lam"] * years
        if jumps < MIN_JUMPS:
            out.append(f"about {jumps:.1f} jumps in the sample, fewer than {MIN_JUMPS}: jump_mean and jump_std rest on "
                       "them and their Wald intervals under-cover (calibrated ones: process.interval=bootstrap, "
                       "fit.with_intervals)")
    if model == "regime_switching":
        up, down = params["rate_to_crash"], params["rate_to_calm"]
        crashes = years * up * down / (up + down)
        if crashes < MIN_CRASHES:
            out.append(f"about {crashes:.1f} crash episodes in the sample, fewer than {MIN_CRASHES}: the crash "
                       "regime's parameters rest on them and their Wald intervals under-cover (closer: "
                       "process.interval=profile or bootstrap, fit.with_intervals)")
    return out


_BUCKET = 1024


def padded(r: np.ndarray):
    """``(r, w)`` as float64 arrays rounded up to a multiple of 1,024 observations: the
    returns with zeros after them, and weights 1 for the data, 0 for the padding."""
    n = -(-r.size // _BUCKET) * _BUCKET
    w = np.zeros(n)
    w[: r.size] = 1.0
    return jnp.asarray(np.pad(r, (0, n - r.size)), jnp.float64), jnp.asarray(w, jnp.float64)


def _with_fixed(model: str, fixed_names: tuple):
    """``to_params(u, fixed_values)``: the model's parameters with the held ones replaced."""
    to_params = SPECS[model]["to_params"]

    def params(u, fixed_values):
        return {**to_params(u), **dict(zip(fixed_names, fixed_values))}

    return params


@functools.partial(jax.jit, static_argnames=("model", "fixed_names"))
def _minimize(u0, r, w, dt, fixed_values, gtol, max_iter, *, model, fixed_names):
    """L-BFGS on the mean negative log-likelihood in unconstrained coordinates, as one
    compiled loop: ``(u, iterations, gradient norm)``, stopped when the gradient norm at
    ``u`` is below ``gtol`` (``u`` is then kept), not finite, or after ``max_iter``."""
    import optax

    loglik, params = SPECS[model]["loglik"], _with_fixed(model, fixed_names)

    def nll(u):  # mean: O(1) whatever the sample length
        return -loglik(params(u, fixed_values), r, dt, w) / jnp.sum(w)

    opt = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(nll)

    def body(carry):
        u, state, it, _ = carry
        value, grad = value_and_grad(u, state=state)
        g = jnp.linalg.norm(grad)
        updates, state = opt.update(grad, state, u, value=value, grad=grad, value_fn=nll)
        stop = (g < gtol) | ~jnp.isfinite(g)
        return jnp.where(stop, u, optax.apply_updates(u, updates)), state, it + 1, g

    def cond(carry):
        _, _, it, g = carry
        return (it < max_iter) & ((it == 0) | ((g >= gtol) & jnp.isfinite(g)))

    u, _, it, g = jax.lax.while_loop(cond, body, (u0, opt.init(u0), jnp.int32(0), jnp.asarray(jnp.inf, u0.dtype)))
    return u, it, g


@functools.partial(jax.jit, static_argnames=("model", "fixed_names"))
def _from_starts(u0, r, w, dt, fixed_values, gtol, max_iter, *, model, fixed_names):
    """``_minimize`` from every row of ``u0`` and the negative log-likelihood at each end, as
    one compiled program (traced once per model, held names, padded length and number of
    starts; outside jit the batched loop and the likelihood were traced again at every fit)."""
    u, its, gs = jax.vmap(lambda v: _minimize(v, r, w, dt, fixed_values, gtol, max_iter, model=model,
                                              fixed_names=fixed_names))(u0)
    params = _with_fixed(model, fixed_names)
    nlls = jax.vmap(lambda v: -SPECS[model]["loglik"](params(v, fixed_values), r, dt, w))(u)
    return u, its, gs, nlls


@functools.partial(jax.jit, static_argnames=("model", "fixed_names"))
def _information(u, r, w, dt, fixed_values, *, model, fixed_names):
    """At the estimate ``u``: the parameters, the log-likelihood, and minus its Hessian in the
    free parameters (the observed information) and in the unconstrained coordinates."""
    spec, params = SPECS[model], _with_fixed(model, fixed_names)
    free = [k for k in spec["names"] if k not in fixed_names]
    theta_hat = params(u, fixed_values)

    def total_free(theta):  # the log-likelihood in the model's own (free) parameters
        return spec["loglik"]({**theta_hat, **dict(zip(free, theta))}, r, dt, w)

    def free_theta(v):  # the unconstrained coordinates to the free parameters (no data: cheap)
        p = params(v, fixed_values)
        return jnp.stack([p[k] for k in free])

    theta = jnp.stack([theta_hat[k] for k in free])
    grad = jax.grad(total_free)
    hess = jax.jacfwd(grad)(theta)
    # the Hessian in u by the chain rule, exactly (one second derivative of the likelihood, not
    # two): d2l/du2 = J' H J + sum_k dl/dtheta_k d2theta_k/du2, J = dtheta/du
    jac = jax.jacfwd(free_theta)(u)
    u_hess = jac.T @ hess @ jac + jnp.einsum("k,kij->ij", grad(theta), jax.hessian(free_theta)(u))
    return theta_hat, total_free(theta), -hess, -u_hess


def fit(returns, model: str, *, fixed: dict | None = None, steps_per_year: float = 252.0, max_iter: int = 500,
        gtol: float = 1e-6, starts=None, own_starts: bool = True) -> FitResult:
    """Maximum-likelihood fit of ``model`` (one of ``MODELS``) to simple ``returns``, one per
    step of ``1 / steps_per_year`` years; ``fixed`` holds parameters at given values (the rest
    are estimated given them). Converged when the gradient of the mean negative
    log-likelihood in the unconstrained coordinates is below ``gtol``. The mixtures (Merton,
    regime switching) start from several points and keep the best converged fit; ``starts``
    adds points of the model's unconstrained coordinates (``FitResult.unconstrained_estimate``;
    a held parameter's coordinate is ignored), e.g. the free fit's estimate for a held fit;
    without ``own_starts`` only those are used (a parametric bootstrap's series, drawn from a
    fit, start at that fit)."""
    if model not in SPECS:
        raise ParameterError(f"fit.model = {model!r}; allowed: {list(MODELS)}")
    r = _check_returns(returns)
    spec = SPECS[model]
    fixed = {k: float(v) for k, v in (fixed or {}).items()}
    unknown = sorted(set(fixed) - set(spec["names"]))
    if unknown:
        raise ParameterError(f"fit: {unknown} are not parameters of {model}; allowed: {list(spec['names'])}")
    names = tuple(sorted(fixed))
    dt = 1.0 / float(steps_per_year)
    with jax.enable_x64(True):
        (rj, wj), values = padded(r), jnp.asarray([fixed[k] for k in names], jnp.float64)
        u0 = spec["starts"](float(r.mean() * steps_per_year), float(r.std() * math.sqrt(steps_per_year)))
        if not own_starts:
            if starts is None:
                raise ParameterError("fit: own_starts=False needs starts")
            u0 = []
        if starts is not None:
            extra = np.asarray(starts, np.float64).reshape(-1, len(spec["names"]))
            if not np.isfinite(extra).all():
                raise ParameterError(f"fit: starts must be finite points of {len(spec['names'])} coordinates")
            u0 = [*u0, *extra.tolist()]
        u0 = jnp.asarray(u0, jnp.float64)
        u, its, gs, nlls = _from_starts(u0, rj, wj, dt, values, gtol, max_iter, model=model, fixed_names=names)
        its, gs = np.asarray(its), np.asarray(gs, np.float64)
        best = _best_start(np.asarray(nlls), gs, gtol)
        u_best = u[best]
        if model in _RELABEL and not fixed:
            p = spec["to_params"](u_best)
            if float(p["sigma_crash"]) < float(p["sigma_calm"]):
                u_best = u_best[jnp.asarray(_RELABEL[model])]  # the crash regime is the volatile one
        theta_hat, loglik, info, u_info = _information(u_best, rj, wj, dt, values, model=model, fixed_names=names)
        params = {k: float(v) for k, v in theta_hat.items()}
        info, u_info = np.asarray(info, np.float64), np.asarray(u_info, np.float64)
    free = [k for k in spec["names"] if k not in fixed]
    se = {k: float("nan") for k in spec["names"]}
    se.update(zip(free, map(float, _standard_errors(info))))
    grad_norm, converged = float(gs[best]), bool(gs[best] < gtol)
    return FitResult(model=model, params={k: params[k] for k in spec["names"]}, se=se, loglik=float(loglik),
                     n_obs=int(r.size), converged=converged, iterations=int(its[best]), grad_norm=grad_norm,
                     at_bound=_bounds(model, params, dt), process=_process(model, params), fixed=names,
                     steps_per_year=float(steps_per_year),
                     few_events=few_events_notes(model, params, r.size * dt), _u_hat=np.asarray(u_best, np.float64),
                     _u_cov=_unconstrained_cov(u_info, model, fixed))


def _best_start(nlls: np.ndarray, grad_norms: np.ndarray, gtol: float) -> int:
    """The start with the smallest negative log-likelihood among the converged ones (among
    all where none converged)."""
    ok = np.isfinite(nlls) & (grad_norms < gtol)
    pool = np.where(ok if ok.any() else np.isfinite(nlls), nlls, np.inf)
    return int(np.argmin(pool))


def _standard_errors(info: np.ndarray) -> np.ndarray:
    """Square roots of the inverse information's diagonal; NaN where it is not positive definite
    (or so ill-conditioned that the inverse's diagonal comes out negative)."""
    if not np.all(np.isfinite(info)):
        return np.full(len(info), np.nan)
    try:
        if np.all(np.linalg.eigvalsh(info) > 0):
            var = np.diag(np.linalg.inv(info))
            return np.where(var > 0, np.sqrt(np.abs(var)), np.nan)
    except np.linalg.LinAlgError:
        pass
    return np.full(len(info), np.nan)


def _unconstrained_cov(u_info, model: str, fixed: dict):
    """The inverse information in the unconstrained coordinates that move (held ones: 0), for
    ``laplace``; None where it is not positive definite, or for a fit with a parameter held
    that several coordinates move (GARCH's alpha or beta)."""
    if _MIXED.get(model, set()) & set(fixed):
        return None
    keep = [i for i, k in enumerate(SPECS[model]["names"]) if k not in fixed]
    sub = u_info[np.ix_(keep, keep)]
    if not (np.all(np.isfinite(sub)) and np.all(np.linalg.eigvalsh(sub) > 0)):
        return None
    cov = np.zeros_like(u_info)
    cov[np.ix_(keep, keep)] = np.linalg.inv(sub)
    return cov


@functools.lru_cache(maxsize=32)
def _fit_data(model: str = "student_t", data: str = "sp500", column: str | None = None, kind: str = "prices",
             start: str | None = None, end: str | None = None, steps_per_year: float = 252.0, mu=None, sigma=None,
             nu=None, alpha=None, beta=None, lam=None, jump_mean=None, jump_std=None, mu_calm=None, sigma_calm=None,
             nu_calm=None, mu_crash=None, sigma_crash=None, nu_crash=None, rate_to_crash=None,
             rate_to_calm=None, interval: str = "wald", interval_parameters=None, bootstrap: int = 100) -> FitResult:
    """``fit`` on data named in a config (``conf/process/fitted.yaml``): ``data`` is ``sp500``
    (the shipped index) or a CSV/parquet file of ``kind`` ``prices`` or ``returns`` with a
    ``Date`` column (``column``: the one to use, required when there are several); ``start`` /
    ``end`` cut a date range; a parameter of the model given a value (``mu=0.08``, ...) is held
    there, one given ``None`` is fitted. ``interval`` chooses the intervals of the fit's table
    (``with_intervals``: ``wald``, ``profile`` or ``bootstrap`` with ``bootstrap`` replicates)
    for ``interval_parameters`` (a list of names; default every free parameter); the options
    are checked before the data are read.
    Cached: the same arguments fit once per process."""
    held = {k: v for k, v in locals().items() if k in _ALL_PARAMETERS}  # the arguments, before any local
    from sim import data as sim_data

    if model not in SPECS:
        raise ParameterError(f"process.model = {model!r}; allowed: {list(MODELS)}")
    if kind not in ("prices", "returns"):
        raise ParameterError(f"process.kind = {kind!r}; allowed: ['prices', 'returns']")
    given = {k: v for k, v in held.items() if v is not None}
    other = sorted(set(given) - set(SPECS[model]["names"]))
    if other:
        raise ParameterError(f"process.{other[0]} is given but is not a parameter of {model}; allowed: "
                             f"{list(SPECS[model]['names'])}")
    keys = ("process.interval", "process.interval_parameters", "process.bootstrap")
    check_interval_options(model, interval, interval_parameters, bootstrap, tuple(given), keys)
    if data == "sp500":
        series = sim_data.simple_returns(sim_data.load_sp500_index())
    else:
        cols = None if column is None else [column]
        frame = sim_data.load_prices(data, columns=cols) if kind == "prices" else sim_data.load_returns(data, columns=cols)
        if frame.shape[1] != 1:
            raise ParameterError(f"{data}: {frame.shape[1]} columns {list(frame.columns)}; set process.column to one")
        series = frame.iloc[:, 0]
        series = sim_data.simple_returns(series) if kind == "prices" else series
    series = series.loc[start:end]
    if len(series) < MIN_RETURNS:
        raise ParameterError(f"process.start..process.end = {start}..{end} leaves {len(series)} returns of {data}; "
                             f"allowed: at least {MIN_RETURNS}")
    r = series.to_numpy(np.float64)
    return with_intervals(r, fit(r, model, fixed=given, steps_per_year=steps_per_year), interval, interval_parameters,
                          bootstrap=bootstrap)


def fit_data(*args, **kwargs) -> FitResult:
    lst = kwargs.get("interval_parameters")
    if lst is not None:  # a config's list (or one name): hashable for the cache
        kwargs["interval_parameters"] = (lst,) if isinstance(lst, str) else tuple(lst)
    return _fit_data(*args, **kwargs)


fit_data.__doc__ = _fit_data.__doc__
fit_data.__signature__ = inspect.signature(_fit_data)  # what sim.config.instantiate checks a config against


def recovery(process, model: str | None = None, *, n_series: int = 50, years: float = 10.0,
             steps_per_year: float = 252.0, seed: int = 0, level: float = 0.95, likelihood_ratio: bool = True,
             bootstrap: int = 0, bootstrap_parameters=None, bootstrap_at: str = "truth",
             bootstrap_starts: str = "all", bootstrap_sequential: bool = False, progress=None):
    """Parameter recovery: fit ``model`` (default: the process's own) to ``n_series``
    simulated series of ``years`` of returns from ``process`` (the engine's draws,
    ``sim.engine.sample_returns``), and per parameter: the truth, the mean estimate, its
    standard error over the series, the bias in those standard errors, and the share of the
    series whose Wald interval at ``level`` (estimate +- z SE) covers the truth. Fits that did
    not converge, or whose information is not positive definite, are counted and left out;
    those on a bound (``FitResult.at_bound``) are kept and counted.
    With ``likelihood_ratio``, also ``coverage_lr``: the share of the converged fits whose
    profile-likelihood interval at ``level`` covers the truth, i.e. ``2 (loglik - loglik with
    the parameter held at the truth) <= chi2_1(level)`` (one more fit per series and
    parameter; no information matrix needed, so singular fits count too; ``n_used_lr``).
    With ``bootstrap`` (a number of replicates) also ``coverage_lr_boot`` (and ``coverage_lr``,
    whose held fits it needs, even without ``likelihood_ratio``) for the
    ``bootstrap_parameters`` (default: every one): the same statistic against each series'
    own ``bootstrap_threshold`` (seeded from ``seed`` and the series), with the median
    threshold (``median_threshold_boot``; chi2_1(0.95) is 3.84) and ``n_used_boot``: drawn
    from the series' fit with the parameter held at the truth (``bootstrap_at="truth"``: the
    parametric-bootstrap test of the truth, what the calibrated interval's coverage is) or from
    its free fit (``"estimate"``: one plug-in threshold per series); ``bootstrap_starts`` is
    ``bootstrap_threshold``'s ``starts``.
    ``progress(done, total)`` is called after each series' bootstrap.
    A ``pandas.DataFrame``, one row per parameter."""
    import pandas as pd
    from scipy import stats as sps

    from sim import engine

    model = model or model_of(process)
    n_steps = int(round(years * steps_per_year))
    paths = engine.sample_returns(process, seed=seed, n_paths=n_series, n_steps=n_steps,
                                  steps_per_year=steps_per_year, block_size=min(n_series, 256))
    z = float(sps.norm.ppf(0.5 + level / 2))
    series = [np.asarray(x, np.float64) for x in paths]
    fits = [fit(x, model, steps_per_year=steps_per_year) for x in series]
    ok = [f for f in fits if f.converged and all(np.isfinite(f.se[k]) for k in f.params)]
    chi2 = float(sps.chi2.ppf(level, 1))
    if bootstrap_at not in ("truth", "estimate"):
        raise ParameterError(f"recovery: bootstrap_at = {bootstrap_at!r}; allowed: ['truth', 'estimate']")
    boot_names = list(SPECS[model]["names"]) if bootstrap_parameters is None else list(bootstrap_parameters)
    other = sorted(set(boot_names) - set(SPECS[model]["names"]))
    if other:
        raise ParameterError(f"recovery: bootstrap_parameters {other} are not parameters of {model}; allowed: "
                             f"{list(SPECS[model]['names'])}")
    rows = []
    for k in SPECS[model]["names"]:
        truth = float(getattr(process, k))
        est = np.array([f.params[k] for f in ok])
        se = np.array([f.se[k] for f in ok])
        spread = est.std(ddof=1) / math.sqrt(len(est)) if len(est) > 1 else float("nan")
        row = dict(model=model, parameter=k, truth=truth, mean_estimate=est.mean(), median_estimate=np.median(est),
                   se_of_mean=spread, bias_in_se=(est.mean() - truth) / spread, median_reported_se=np.median(se),
                   coverage=float(np.mean(np.abs(est - truth) <= z * se)), n_used=len(ok),
                   n_not_converged=sum(not f.converged for f in fits),
                   n_at_bound=sum(bool(f.at_bound) for f in ok), n_series=n_series, years=years)
        used = [i for i, f in enumerate(fits) if f.converged]
        if likelihood_ratio or (bootstrap and k in boot_names):
            held = [_held_fit(series[i], fits[i], {k: truth}) for i in used]
            lr = [_statistic(fits[i], h) for i, h in zip(used, held)]
            row.update(coverage_lr=float(np.mean(np.asarray(lr) <= chi2)), n_used_lr=len(lr))
        if bootstrap and k in boot_names:
            worlds = held if bootstrap_at == "truth" else [fits[i] for i in used]
            row.update(_bootstrap_coverage(worlds, used, lr, k, dict(n_boot=bootstrap, level=level,
                                                                     starts=bootstrap_starts), seed, progress,
                                           bootstrap_sequential))
        rows.append(row)
    return pd.DataFrame(rows)


def _bootstrap_coverage(worlds, used, lr, name, options, seed, progress, sequential=False) -> dict:
    """``recovery``'s bootstrap columns: per series (``used``: their numbers) the threshold drawn
    from its world, and the share of the statistics ``lr`` at or below their own; ``sequential``:
    only whether each is (``bootstrap_covers``, the same decision; no thresholds)."""
    thresholds, covered = np.full(len(used), np.nan), np.full(len(used), np.nan)
    for j, (i, world) in enumerate(zip(used, worlds)):
        try:
            if sequential:
                covered[j] = bootstrap_covers(world, name, lr[j], seed=seed * 1_000_003 + 7_919 * (i + 1), **options)[0]
            else:
                thresholds[j] = bootstrap_threshold(world, name, seed=seed * 1_000_003 + 7_919 * (i + 1),
                                                    **options).threshold
                covered[j] = lr[j] <= thresholds[j]
        except ParameterError:  # a fit the simulator cannot run (lam dt > 1), or too few replicates converged
            pass
        if progress is not None:
            progress(j + 1, len(used))
    if sequential:
        ok = np.isfinite(covered)
        return dict(coverage_lr_boot=float(covered[ok].mean()) if ok.any() else np.nan, median_threshold_boot=np.nan,
                    n_used_boot=int(ok.sum()))
    ok = np.isfinite(thresholds)
    if not ok.any():
        return dict(coverage_lr_boot=np.nan, median_threshold_boot=np.nan, n_used_boot=0)
    return dict(coverage_lr_boot=float(np.mean(np.asarray(lr)[ok] <= thresholds[ok])),
                median_threshold_boot=float(np.median(thresholds[ok])), n_used_boot=int(ok.sum()))


def likelihood_ratio_statistic(returns, result: FitResult, held: dict) -> float:
    """``2 (loglik at the estimate - loglik maximized with ``held`` parameters at their
    values)`` for simple ``returns`` and their free fit ``result``: chi-square with
    ``len(held)`` degrees of freedom under the hypothesis that the held values are the truth
    (Wilks). Clipped at 0 (a held fit that climbs above the free one's optimum gives 0); inf
    where the held values leave the model's domain. The held fit also starts from the free
    fit's estimate: from the model's own starts alone, a held mixture could stop at a lower
    local maximum (the regime model's in the other labelling), which inflates the statistic."""
    return _statistic(result, _held_fit(returns, result, held))


def _held_fit(returns, result: FitResult, held: dict) -> FitResult:
    return fit(returns, result.model, fixed=held, steps_per_year=result.steps_per_year,
               starts=[result.unconstrained_estimate])


def _statistic(result: FitResult, held_fit: FitResult) -> float:
    if not np.isfinite(held_fit.loglik):  # held outside the model's domain: no likelihood there
        return math.inf
    return max(0.0, 2.0 * (result.loglik - held_fit.loglik))


def profile_interval(returns, result: FitResult, name: str, *, level: float = 0.95, max_doublings: int = 12,
                     threshold: float | None = None, bootstrap: int = 0, seed: int = 0, starts: str = "all"):
    """The profile-likelihood interval of parameter ``name`` at ``level``: the values ``v``
    where ``likelihood_ratio_statistic(returns, result, {name: v}) <= chi2_1(level)``, found
    by bracketing outward from the estimate and Brent's method on each side (each evaluation
    is one fit with ``name`` held). Positive parameters (scales, rates, ``nu - 2``) are
    searched on a log scale above their edge (``lower_edge``). Returns ``(low, high)``; a side where the statistic stays below
    the threshold up to the domain's edge (after ``max_doublings`` doublings of the
    distance) is that edge (``0``, ``2`` for ``nu``, ``inf``): the data do not bound it.
    ``threshold`` replaces chi2_1(level) by one number. ``bootstrap`` (a number of
    replicates) calibrates instead each value's own test: ``v`` is in the interval where the
    statistic is at most ``bootstrap_threshold`` of the fit held at ``v`` (drawn with
    ``seed`` and ``starts``), the inversion of the parametric-bootstrap test. That is the
    interval to read where a fit is weakly identified (``few_events_notes``): at Merton's
    defaults its measured coverage is 0.96 where the chi-square one's is 0.82 (docs/DESIGN.md).
    Each evaluation is then a bootstrap (``bootstrap`` x 2 fits): many minutes, not seconds."""
    from scipy import optimize as sopt
    from scipy import stats as sps

    if name not in result.params or name in result.fixed:
        raise ParameterError(f"profile_interval: {name!r} is not a free parameter of this {result.model} fit; "
                             f"allowed: {[k for k in result.params if k not in result.fixed]}")
    r = _check_returns(returns)
    chi2 = float(sps.chi2.ppf(level, 1)) if threshold is None else float(threshold)
    if not (math.isfinite(chi2) and chi2 > 0):
        raise ParameterError(f"profile_interval: threshold = {threshold}; allowed: a finite number > 0")
    if bootstrap and threshold is not None:
        raise ParameterError("profile_interval: threshold and bootstrap given; allowed: one of them")
    if bootstrap:
        check_int("bootstrap", bootstrap, 20)
    est, se = float(result.params[name]), float(result.se[name])
    edge = lower_edge(result.model, name)
    floor = None if math.isinf(edge) else edge

    def to_x(v):  # the search coordinate
        return v if floor is None else math.log(v - floor)

    def to_v(x):
        return x if floor is None else floor + math.exp(x)

    def excess(x):
        held = _held_fit(r, result, {name: to_v(x)})
        stat = min(_statistic(result, held), 1e6)
        if not bootstrap or stat >= 1e6:
            return stat - chi2
        return stat - bootstrap_threshold(held, name, n_boot=bootstrap, level=level, seed=seed,
                                          starts=starts).threshold

    x0 = to_x(est)
    width = (se if np.isfinite(se) and se > 0 else 0.1 * max(abs(est), 1e-3))
    step = width if floor is None else max(width / max(est - floor, 1e-12), 0.05)
    ends = []
    for sign in (-1.0, 1.0):
        d, found = step, None
        for _ in range(max_doublings):
            if excess(x0 + sign * d) > 0:
                found = sopt.brentq(excess, *sorted((x0 + sign * d / 2 if d > step else x0, x0 + sign * d)),
                                    xtol=(1e-4 if bootstrap else 1e-6) * max(1.0, abs(x0)))
                break
            d *= 2.0
        edge = (floor if floor is not None else -math.inf) if sign < 0 else math.inf
        ends.append(to_v(found) if found is not None else edge)
    return ends[0], ends[1]


INTERVALS = ("wald", "profile", "bootstrap")


def with_intervals(returns, result: FitResult, method: str = "profile", names=None, *, level: float = 0.95,
                   bootstrap: int = 100, seed: int = 0) -> FitResult:
    """``result`` with intervals of ``names`` (default: every free parameter) at ``level`` for
    its ``table``: ``profile_interval``'s (``method="profile"``: a few dozen held fits per
    parameter) or its parametric-bootstrap calibration (``"bootstrap"``, ``bootstrap``
    replicates per evaluation: minutes to hours; measured coverage in docs/DESIGN.md), or the
    Wald ones (``"wald"``: ``result`` as it is). Each interval is logged as it is found."""
    import logging
    import time

    names = check_interval_options(result.model, method, names, bootstrap, result.fixed)
    if method == "wald":
        return result
    how = f"profile likelihood {level:.0%}" + (f", bootstrap-calibrated (B={bootstrap})" if method == "bootstrap" else "")
    found = dict(result.intervals)
    for k in names:
        t0 = time.perf_counter()
        low, high = profile_interval(returns, result, k, level=level, bootstrap=bootstrap if method == "bootstrap" else 0,
                                     seed=seed)
        found[k] = (low, high, how)
        logging.getLogger(__name__).info("%s %s: %s interval [%.6g, %.6g] (%.1f s)", result.model, k, how, low, high,
                                         time.perf_counter() - t0)
    return dataclasses.replace(result, intervals=found)


def check_interval_options(model: str, method: str, names, bootstrap: int, fixed=(),
                           keys=("method", "names", "bootstrap")) -> list:
    """The parameters ``with_intervals`` would compute (every free one where ``names`` is
    None), after checking its options (called ``keys`` in the errors: a config's own names):
    one error naming the option and what is allowed."""
    if method not in INTERVALS:
        raise ParameterError(f"{keys[0]} = {method!r}; allowed: {list(INTERVALS)}")
    free = [k for k in SPECS[model]["names"] if k not in fixed]
    names = free if names is None else list(names)
    other = [k for k in names if k not in free]
    if other:
        raise ParameterError(f"{keys[1]}: {other} are not free parameters of this {model} fit; allowed: {free}")
    if method == "bootstrap":
        check_int(keys[2], bootstrap, 20)
    return names


def interval_plan(models, method: str, names, bootstrap: int, keys=("method", "names", "bootstrap")) -> dict:
    """``check_interval_options`` for several models that share one set of options: each
    model's parameters to compute. A name in ``names`` applies to each model that has it
    (None: every free parameter of each); a name that no model has is the error."""
    if names is not None:
        known = sorted({k for m in models for k in SPECS[m]["names"]})
        other = sorted(set(names) - set(known))
        if other:
            raise ParameterError(f"{keys[1]}: {other} are not parameters of {list(models)}; allowed: {known}")
    return {m: check_interval_options(m, method, None if names is None else [k for k in names if k in SPECS[m]["names"]],
                                      bootstrap, keys=keys) for m in models}


@dataclasses.dataclass(frozen=True)
class BootstrapThreshold:
    """``bootstrap_threshold``'s answer: the critical value at ``level``, chi2_1(level) beside
    it, the bootstrap statistics themselves and how many replicates were used of ``n_boot``
    (a replicate whose free fit did not converge is left out)."""

    name: str
    level: float
    threshold: float
    chi2: float
    statistics: np.ndarray
    n_boot: int

    @property
    def n_used(self) -> int:
        return int(self.statistics.size)


def _free_start(result: FitResult):
    """A point of the unconstrained coordinates for a free fit near ``result``: its estimate,
    with each held coordinate set to the held value (``lower_edge``'s inverse map: the value
    itself, or the log of its distance to the edge); None where a held parameter moves with
    others (GARCH's alpha, beta) or the model's map does not give the value back from it."""
    spec, u = SPECS[result.model], np.array(result.unconstrained_estimate, np.float64)
    for name in result.fixed:
        if name in _MIXED.get(result.model, set()):
            return None
        edge, v = lower_edge(result.model, name), float(result.params[name])
        u[spec["names"].index(name)] = v if math.isinf(edge) else math.log(max(v - edge, 1e-300))
    with jax.enable_x64(True):
        back = spec["to_params"](jnp.asarray(u, jnp.float64))
    if not all(math.isclose(float(back[k]), float(result.params[k]), rel_tol=1e-9, abs_tol=1e-12)
               for k in result.fixed):
        return None
    return u


def bootstrap_threshold(result: FitResult, name: str, *, n_boot: int = 200, level: float = 0.95, seed: int = 0,
                        starts: str = "all") -> BootstrapThreshold:
    """The parametric-bootstrap critical value of the likelihood-ratio statistic for the
    parameter ``name`` at ``result.params[name]``: ``n_boot`` series of ``result.n_obs``
    returns drawn from ``result.process`` (``sim.engine.sample_returns``, ``seed``), each
    fitted free and with ``name`` held at that value (the truth of the bootstrap's world), and
    the ``level`` quantile of ``2 (loglik free - loglik held)`` (the ceil((n + 1) level)-th
    smallest of the n used).

    ``result`` is either the free fit (the world is the estimate: a plug-in calibration) or a
    fit with ``name`` held at a value to test (``fit(..., fixed={name: v})``: the world is the
    best fit given ``v``, the parametric-bootstrap test of ``name = v``; the values it does not
    reject form the calibrated interval). Where a parameter rests on few events
    (``few_events_notes``) the statistic's law is wider than chi2_1 and the chi-square
    interval under-covers.

    Each replicate is two fits computed as the statistic on the data is (``starts="all"``:
    the model's own starts and the world's point; the held fit also the free estimate): 2.7-3.2 s
    a Merton replicate and about 4 s a regime-model one on one core (the vectorized starts run
    until the slowest converges). ``starts="world"`` starts at the world's point only, 0.15-0.4 s
    a replicate, but a free fit can then stop at a lower maximum and the threshold comes out too
    low: for Merton in 9 of 120 replicates (coverage 0.90 with this, 0.96 with all starts); for the
    regime model, whose crash state a held world may hardly visit, the free fit stayed at the
    world's point and every statistic was 0 in one series (docs/DESIGN.md)."""
    from scipy import stats as sps

    stats = [v for v in _replicate_statistics(result, name, n_boot, level, seed, starts) if v is not None]
    if len(stats) < 20:
        raise ParameterError(f"bootstrap_threshold: only {len(stats)} of {n_boot} bootstrap fits converged; "
                             "allowed: at least 20")
    stats = np.sort(np.asarray(stats, np.float64))
    rank = min(len(stats), math.ceil((len(stats) + 1) * level))
    return BootstrapThreshold(name=name, level=level, threshold=float(stats[rank - 1]),
                              chi2=float(sps.chi2.ppf(level, 1)), statistics=stats, n_boot=n_boot)


def _replicate_statistics(result: FitResult, name: str, n_boot: int, level: float, seed: int, starts: str):
    """``bootstrap_threshold``'s replicate statistics one at a time, in order (None where a
    replicate's free fit did not converge), after checking the options."""
    from sim import engine

    if name not in result.params:
        raise ParameterError(f"bootstrap_threshold: {name!r} is not a parameter of {result.model}; "
                             f"allowed: {list(result.params)}")
    if not result.converged:
        raise ParameterError(f"bootstrap_threshold: the {result.model} fit did not converge: no world to draw from")
    if not 0.0 < level < 1.0:
        raise ParameterError(f"bootstrap_threshold: level = {level}; allowed: 0 < level < 1")
    n_boot = check_int("n_boot", n_boot, 20)
    if starts not in ("all", "world"):
        raise ParameterError(f"bootstrap_threshold: starts = {starts!r}; allowed: ['all', 'world']")
    try:
        draws = engine.sample_returns(result.process, seed=seed, n_paths=n_boot, n_steps=result.n_obs,
                                      steps_per_year=result.steps_per_year, block_size=min(n_boot, 256))
    except ParameterError as e:
        raise ParameterError(f"bootstrap_threshold: the fitted {result.model} cannot be simulated ({e})") from e
    start = _free_start(result)
    free_starts = [] if start is None else [start]
    own = starts == "all" or start is None
    held_fixed = {**{k: result.params[k] for k in result.fixed}, name: result.params[name]}
    for x in np.asarray(draws, np.float64):
        free = fit(x, result.model, steps_per_year=result.steps_per_year, starts=free_starts or None, own_starts=own,
                   fixed={k: result.params[k] for k in result.fixed if k != name})
        if not free.converged:
            yield None
            continue
        held = fit(x, result.model, fixed=held_fixed, steps_per_year=result.steps_per_year,
                   starts=[free.unconstrained_estimate, *free_starts], own_starts=own)
        yield _statistic(free, held)


def bootstrap_covers(result: FitResult, name: str, statistic: float, *, n_boot: int = 39, level: float = 0.95,
                     seed: int = 0, starts: str = "all") -> tuple[bool, int]:
    """Whether ``statistic`` (the data's likelihood-ratio statistic for ``name`` at the value
    ``result`` holds) is at or below ``bootstrap_threshold(result, name, ...)``'s threshold,
    i.e. the value is inside the calibrated interval: the same decision from the same
    replicates in the same order, stopped as soon as the remaining ones cannot change it
    (Besag and Clifford's sequential Monte Carlo test). Returns (covered, replicates fitted).
    A statistic well inside is decided after a few replicates: with ``n_boot=39`` at 95%, as
    soon as two reach it. Decided early, it does not know whether 20 replicates would have
    converged (where fewer do, ``bootstrap_threshold`` raises)."""
    reach = below = fitted = 0
    need_reach = max(1, n_boot + 1 - math.ceil((n_boot + 1) * level))  # the most any number used can need
    need_below = math.ceil((n_boot + 1) * level)
    used = []
    for v in _replicate_statistics(result, name, n_boot, level, seed, starts):
        fitted += 1
        if v is None:
            continue
        used.append(v)
        reach, below = reach + (v >= statistic), below + (v < statistic)
        if reach >= need_reach or below >= need_below:
            return bool(reach >= need_reach), fitted
    if len(used) < 20:
        raise ParameterError(f"bootstrap_covers: only {len(used)} of {n_boot} bootstrap fits converged; "
                             "allowed: at least 20")
    rank = min(len(used), math.ceil((len(used) + 1) * level))
    return bool(statistic <= np.sort(np.asarray(used, np.float64))[rank - 1]), fitted


def log_likelihood(returns, model: str, params: dict, *, steps_per_year: float = 252.0) -> float:
    """The log-likelihood of simple ``returns`` under ``model`` at ``params`` (the model's
    annualized parameters, every one given), in float64: what ``fit`` maximizes."""
    if model not in SPECS:
        raise ParameterError(f"fit.model = {model!r}; allowed: {list(MODELS)}")
    missing = sorted(set(SPECS[model]["names"]) - set(params))
    if missing:
        raise ParameterError(f"log_likelihood: {model} needs {missing}")
    r = _check_returns(returns)
    with jax.enable_x64(True):
        p = {k: jnp.float64(params[k]) for k in SPECS[model]["names"]}
        rp, wp = padded(r)
        return float(_loglik(p, rp, jnp.float64(1.0 / float(steps_per_year)), wp, model=model))


@functools.partial(jax.jit, static_argnames=("model",))
def _loglik(p, r, dt, w, *, model):
    """The model's log-likelihood as one compiled program (eagerly, each operation around the
    likelihood's scan was compiled on its own at every new padded length)."""
    return SPECS[model]["loglik"](p, r, dt, w)


def compare(fits: dict):
    """The model comparison of fits to the same returns (``{name: FitResult}``): per model
    the log-likelihood, parameter count, AIC, BIC, their distance to the best, and the Akaike
    weight ``exp(-dAIC / 2)`` normalized (the data's relative support for each model); the
    rows sorted by AIC, the preferred model first, each fit's status beside it."""
    import pandas as pd

    sizes = {f.n_obs for f in fits.values()}
    if len(sizes) > 1:
        raise ParameterError(f"compare: the fits are to samples of different lengths {sorted(sizes)}")
    rows = [dict(model=name, loglik=f.loglik, k=f.k, aic=f.aic, bic=f.bic, status=f.status) for name, f in fits.items()]
    out = pd.DataFrame(rows).sort_values("aic", ignore_index=True)
    out["d_aic"] = out.aic - out.aic.min()
    out["d_bic"] = out.bic - out.bic.min()
    w = np.exp(-0.5 * out.d_aic.to_numpy())
    out["akaike_weight"] = w / w.sum()
    return out[["model", "loglik", "k", "aic", "d_aic", "bic", "d_bic", "akaike_weight", "status"]]


def model_of(process) -> str:
    """The name in ``MODELS`` of a process's likelihood; an error naming the allowed ones."""
    from sim import processes

    kinds = {processes.Gaussian: "gaussian", processes.StudentT: "student_t", processes.GarchT: "garch_t",
             processes.Merton: "merton", processes.RegimeSwitching: "regime_switching"}
    if type(process) not in kinds:
        raise ParameterError(f"recovery: no likelihood for {type(process).__name__}; allowed: "
                             f"{[c.__name__ for c in kinds]}")
    return kinds[type(process)]
