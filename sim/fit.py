"""Maximum-likelihood fits of the return models, on the simulator's own parameterization.

``fit(returns, model)`` fits ``"gaussian"``, ``"student_t"`` or ``"garch_t"`` to a series of
simple returns (float64, JAX, optax L-BFGS on unconstrained coordinates; the GARCH variance
recursion is a ``lax.scan``) and returns a ``FitResult`` whose ``process`` *is* the fitted
``sim.processes`` object (annualized, unit-variance innovations), so the engine runs what was
fitted. Standard errors come from the observed information (the autodiff Hessian of the
log-likelihood in the model's own parameters); the result also holds the log-likelihood,
AIC and BIC, and says when the optimizer did not converge or a parameter sits on a bound.

The likelihoods are those the simulator draws from (``sim.processes``; per-step drift and
volatility through ``sim.units``):

* Gaussian: ``r ~ N(mu dt, sigma^2 dt)``.
* Student-t: ``r = mu dt + sigma sqrt(dt) sqrt((nu - 2) / nu) T``, ``T ~ t(nu)``.
* GARCH(1,1)-t: ``r_t = mu dt + sqrt(h_t) z_t`` with unit-variance t ``z_t``,
  ``h_{t+1} = omega + alpha (r_t - mu dt)^2 + beta h_t``, ``omega = sigma^2 dt (1 - alpha - beta)``,
  ``h_1 = sigma^2 dt`` (the simulator's start). Stationarity is kept by construction:
  ``alpha + beta = sigmoid(a)``, ``alpha / (alpha + beta) = sigmoid(b)``.

Not here yet (the issue's list): Merton (a truncated Poisson mixture), the two-state regime
model (forward algorithm), posterior draws; see docs/DESIGN.md.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from sim.units import per_step_mean, per_step_vol
from sim.validation import ParameterError, check_int

__all__ = ["FitResult", "fit", "fit_data", "MODELS"]

MODELS = ("gaussian", "student_t", "garch_t")
_NU_MAX = 200.0  # beyond this a Student-t is a Gaussian for any sample here: flagged as a bound


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
    _u_hat: np.ndarray | None = dataclasses.field(default=None, repr=False)  # the estimate, unconstrained
    _u_cov: np.ndarray | None = dataclasses.field(default=None, repr=False)  # its covariance there (Laplace)

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
        return "converged"

    def laplace(self, n_draws: int = 1000, seed: int = 0):
        """The Laplace approximation of the posterior (flat prior): ``n_draws`` joint draws from
        a normal around the estimate with the inverse observed information as covariance, in
        the fit's unconstrained coordinates (so every draw is a valid model: sigma > 0, nu > 2,
        alpha + beta < 1), as a ``sim.processes.PosteriorDraws`` of the fitted process. Fixed
        parameters stay fixed."""
        from sim.processes import PosteriorDraws

        if not self.converged or self._u_cov is None:
            raise ParameterError(f"{self.model}: no Laplace posterior: {self.status if not self.converged else 'the information is not positive definite'}")
        rng = np.random.default_rng(seed)
        u = rng.multivariate_normal(self._u_hat, self._u_cov, size=check_int("n_draws", n_draws, 1))
        spec = _SPECS[self.model]
        with jax.enable_x64(True):
            params = spec["to_params"](jnp.asarray(u.T, jnp.float64))
        names = [k for k in spec["names"] if k not in self.fixed]
        draws = np.stack([np.broadcast_to(np.asarray(params[k], np.float64), (len(u),)) for k in names], axis=1)
        return PosteriorDraws(self.process, names=tuple(names), draws=draws.astype(np.float32))

    def table(self):
        """One row per parameter (estimate, SE), then the fit's figures."""
        import pandas as pd

        rows = [{"model": self.model, "parameter": k, "estimate": v, "se": self.se[k]} for k, v in self.params.items()]
        for k, v in (("loglik", self.loglik), ("aic", self.aic), ("bic", self.bic), ("n_obs", self.n_obs)):
            rows.append({"model": self.model, "parameter": k, "estimate": float(v), "se": float("nan")})
        out = pd.DataFrame(rows)
        out["status"] = self.status
        return out


# --------------------------------------------------------------------------- the models


def _t_logpdf(x, nu):
    return (jax.scipy.special.gammaln((nu + 1) / 2) - jax.scipy.special.gammaln(nu / 2)
            - 0.5 * jnp.log(nu * jnp.pi) - (nu + 1) / 2 * jnp.log1p(x * x / nu))


def _loglik_gaussian(p, r, dt):
    m, s = per_step_mean(p["mu"], dt), per_step_vol(p["sigma"], dt)
    return jnp.sum(-0.5 * jnp.log(2 * jnp.pi) - jnp.log(s) - 0.5 * ((r - m) / s) ** 2)


def _loglik_student_t(p, r, dt):
    m, nu = per_step_mean(p["mu"], dt), p["nu"]
    c = per_step_vol(p["sigma"], dt) * jnp.sqrt((nu - 2) / nu)
    return jnp.sum(_t_logpdf((r - m) / c, nu) - jnp.log(c))


def _loglik_garch_t(p, r, dt):
    m, nu, a, b = per_step_mean(p["mu"], dt), p["nu"], p["alpha"], p["beta"]
    h0 = per_step_vol(p["sigma"], dt) ** 2
    omega = h0 * (1 - a - b)
    e = r - m

    def step(h, e_t):
        c = jnp.sqrt(h * (nu - 2) / nu)
        return omega + a * e_t * e_t + b * h, _t_logpdf(e_t / c, nu) - jnp.log(c)

    _, ll = jax.lax.scan(step, h0, e)
    return jnp.sum(ll)


def _sigmoid(x):
    return 1.0 / (1.0 + jnp.exp(-x))


def _logit(p):
    return math.log(p / (1 - p))


# unconstrained coordinates <-> the model's parameters, and the starting point
_SPECS = {
    "gaussian": dict(
        names=("mu", "sigma"), loglik=_loglik_gaussian,
        to_params=lambda u: {"mu": u[0], "sigma": jnp.exp(u[1])},
        start=lambda mu, sd: [mu, math.log(sd)]),
    "student_t": dict(
        names=("mu", "sigma", "nu"), loglik=_loglik_student_t,
        to_params=lambda u: {"mu": u[0], "sigma": jnp.exp(u[1]), "nu": 2.0 + jnp.exp(u[2])},
        start=lambda mu, sd: [mu, math.log(sd), math.log(3.0)]),
    "garch_t": dict(
        names=("mu", "sigma", "alpha", "beta", "nu"), loglik=_loglik_garch_t,
        to_params=lambda u: {"mu": u[0], "sigma": jnp.exp(u[1]), "alpha": _sigmoid(u[2]) * _sigmoid(u[3]),
                             "beta": _sigmoid(u[2]) * (1 - _sigmoid(u[3])), "nu": 2.0 + jnp.exp(u[4])},
        start=lambda mu, sd: [mu, math.log(sd), _logit(0.95), _logit(0.08 / 0.95), math.log(4.0)]),
}


# the parameter each unconstrained coordinate moves (GARCH: persistence and share move alpha and beta)
_U_NAMES = {"gaussian": ("mu", "sigma"), "student_t": ("mu", "sigma", "nu"),
            "garch_t": ("mu", "sigma", "alpha", "beta", "nu")}


def _process(model: str, params: dict):
    from sim import processes

    cls = {"gaussian": processes.Gaussian, "student_t": processes.StudentT, "garch_t": processes.GarchT}[model]
    return cls(**params)


def _check_returns(returns) -> np.ndarray:
    r = np.asarray(returns, dtype=np.float64)
    if r.ndim != 1:
        raise ParameterError(f"returns must be one series (1-D), got shape {r.shape}")
    check_int("number of returns", r.size, 30)
    bad = ~np.isfinite(r)
    if bad.any():
        raise ParameterError(f"returns hold {int(bad.sum())} missing or non-finite values (first at position "
                             f"{int(np.argmax(bad))}); allowed: finite numbers only")
    if np.any(r <= -1.0):
        raise ParameterError("returns must be simple returns > -1 (a price cannot fall below zero)")
    return r


def _bounds(model: str, params: dict) -> list:
    out = []
    if "nu" in params and params["nu"] > _NU_MAX:
        out.append(f"nu > {_NU_MAX:g} (tails as thin as a Gaussian's)")
    if model == "garch_t":
        if params["alpha"] < 1e-4:
            out.append("alpha near 0 (no ARCH effect)")
        if params["alpha"] + params["beta"] > 0.999:
            out.append("alpha + beta near 1 (not stationary)")
    return out


def fit(returns, model: str, *, fixed: dict | None = None, steps_per_year: float = 252.0, max_iter: int = 500,
        gtol: float = 1e-6) -> FitResult:
    """Maximum-likelihood fit of ``model`` (one of ``MODELS``) to simple ``returns``, one per
    step of ``1 / steps_per_year`` years; ``fixed`` holds parameters at given values (the rest
    are estimated given them). Converged when the gradient of the mean negative
    log-likelihood in the unconstrained coordinates is below ``gtol``."""
    import optax

    if model not in _SPECS:
        raise ParameterError(f"fit.model = {model!r}; allowed: {list(MODELS)}")
    r = _check_returns(returns)
    spec = dict(_SPECS[model])
    fixed = {k: float(v) for k, v in (fixed or {}).items()}
    unknown = sorted(set(fixed) - set(spec["names"]))
    if unknown:
        raise ParameterError(f"fit: {unknown} are not parameters of {model}; allowed: {list(spec['names'])}")
    if fixed:
        free_to_params = spec["to_params"]
        spec["to_params"] = lambda u: {**free_to_params(u), **fixed}
    dt = 1.0 / float(steps_per_year)
    with jax.enable_x64(True):
        rj = jnp.asarray(r, jnp.float64)

        def nll(u):  # mean negative log-likelihood: O(1) whatever the sample length
            return -spec["loglik"](spec["to_params"](u), rj, dt) / r.size

        u = jnp.asarray(spec["start"](float(r.mean() * steps_per_year), float(r.std() * math.sqrt(steps_per_year))),
                        jnp.float64)
        opt = optax.lbfgs()
        state = opt.init(u)
        value_and_grad = jax.jit(optax.value_and_grad_from_state(nll))

        @jax.jit
        def one(u, state):
            value, grad = value_and_grad(u, state=state)
            updates, state = opt.update(grad, state, u, value=value, grad=grad, value_fn=nll)
            return optax.apply_updates(u, updates), state, jnp.linalg.norm(grad)

        converged, it, grad_norm = False, 0, float("nan")
        for it in range(1, max_iter + 1):
            u_new, state, g = one(u, state)
            grad_norm = float(g)
            if not np.isfinite(grad_norm):
                break
            if grad_norm < gtol:
                converged = True
                break
            u = u_new
        params = {k: float(v) for k, v in spec["to_params"](u).items()}

        def total(theta):  # the log-likelihood in the model's own parameters, for the information
            return spec["loglik"](dict(zip(spec["names"], theta)), rj, dt)

        free = [k for k in spec["names"] if k not in fixed]

        def total_free(theta):
            return total(jnp.stack([theta[free.index(k)] if k in free else jnp.float64(fixed[k])
                                    for k in spec["names"]]))

        u_info = np.asarray(jax.hessian(lambda v: nll(v) * r.size)(u), np.float64)
        theta = jnp.asarray([params[k] for k in free], jnp.float64)
        loglik = float(total_free(theta))
        info = -np.asarray(jax.hessian(total_free)(theta), np.float64)
    try:
        cov = np.linalg.inv(info)
        se_values = np.sqrt(np.diag(cov)) if np.all(np.linalg.eigvalsh(info) > 0) else np.full(len(theta), np.nan)
    except np.linalg.LinAlgError:
        se_values = np.full(len(theta), np.nan)
    u_cov = _unconstrained_cov(u_info, model, fixed)
    se = {k: float("nan") for k in spec["names"]}
    se.update(zip(free, map(float, se_values)))
    return FitResult(model=model, params=params, se=se, loglik=loglik, n_obs=int(r.size), converged=converged,
                     iterations=it, grad_norm=grad_norm, at_bound=_bounds(model, params),
                     process=_process(model, params), fixed=tuple(sorted(fixed)), _u_hat=np.asarray(u, np.float64),
                     _u_cov=u_cov)


def _unconstrained_cov(u_info, model: str, fixed: dict):
    """The inverse information in the unconstrained coordinates that move (held ones: 0), for
    ``laplace``; None where it is not positive definite, or for a GARCH fit with alpha or beta
    held (their coordinates mix both)."""
    if model == "garch_t" and {"alpha", "beta"} & set(fixed):
        return None
    keep = [i for i, k in enumerate(_U_NAMES[model]) if k not in fixed]
    sub = u_info[np.ix_(keep, keep)]
    if not (np.all(np.isfinite(sub)) and np.all(np.linalg.eigvalsh(sub) > 0)):
        return None
    cov = np.zeros_like(u_info)
    cov[np.ix_(keep, keep)] = np.linalg.inv(sub)
    return cov


@functools.lru_cache(maxsize=32)
def fit_data(model: str = "student_t", data: str = "sp500", column: str | None = None, kind: str = "prices",
             start: str | None = None, end: str | None = None, steps_per_year: float = 252.0, mu=None, sigma=None,
             nu=None, alpha=None, beta=None) -> FitResult:
    """``fit`` on data named in a config (``conf/process/fitted.yaml``): ``data`` is ``sp500``
    (the shipped index) or a CSV/parquet file of ``kind`` ``prices`` or ``returns`` with a
    ``Date`` column (``column``: the one to use, required when there are several); ``start`` /
    ``end`` cut a date range; a parameter given a value (``mu``, ``sigma``, ...) is held there.
    Cached: the same arguments fit once per process."""
    from sim import data as sim_data

    if kind not in ("prices", "returns"):
        raise ParameterError(f"process.kind = {kind!r}; allowed: ['prices', 'returns']")
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
    if len(series) < 30:
        raise ParameterError(f"process.start..process.end = {start}..{end} leaves {len(series)} returns of {data}; "
                             "allowed: at least 30")
    given = {k: v for k, v in dict(mu=mu, sigma=sigma, nu=nu, alpha=alpha, beta=beta).items() if v is not None}
    return fit(series.to_numpy(np.float64), model, fixed=given, steps_per_year=steps_per_year)
