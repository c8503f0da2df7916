"""Posterior draws of a return model's parameters: NUTS (NumPyro) on ``sim.fit``'s likelihood.

``nuts(returns, model)`` samples the posterior of ``model``'s parameters given simple
``returns`` with NumPyro's No-U-Turn sampler, on the very log-likelihood ``sim.fit.fit``
maximizes, in the fit's unconstrained coordinates (so every draw is a valid model: sigma > 0,
nu > 2, alpha + beta < 1), started at the maximum-likelihood estimate with a dense mass
matrix. The priors are weakly informative and stated (``PRIORS``; a config overrides any of
them): each is ``[kind, a, b]`` on the model's own parameter:

* ``normal a b``: mean ``a``, sd ``b``;
* ``lognormal a b``: ``log x ~ N(a, b^2)``;
* ``shifted_gamma a b``: ``x - a ~ Gamma(shape 2, rate b)`` (Juarez & Steel's prior for a
  Student-t's ``nu``, above ``a = 2``);
* ``flat``: a constant density (GARCH's ``alpha``, ``beta``: uniform on ``alpha + beta < 1``).

The result holds the draws per chain and the diagnostics of Vehtari et al. (2021): the
rank-normalized split R-hat and the bulk effective sample size per parameter, with a verdict
(R-hat < 1.01 and bulk ESS > 400 for every parameter); ``process_draws()`` gives them as a
``sim.processes.PosteriorDraws`` (each path takes one joint draw) for the engine.

NumPyro is the optional extra ``[bayes]`` (``pip install -e '.[bayes]'``).
"""

from __future__ import annotations

import dataclasses
import math
import threading

import jax
import jax.numpy as jnp
import numpy as np

from sim import fit as fit_lib
from sim.validation import ParameterError, check_int

__all__ = ["PRIORS", "PosteriorResult", "nuts", "check_priors", "require_numpyro", "rank_rhat", "bulk_ess"]

PRIORS = {
    "mu": ["normal", 0.0, 1.0], "mu_calm": ["normal", 0.0, 1.0], "mu_crash": ["normal", 0.0, 2.0],
    "sigma": ["lognormal", math.log(0.2), 1.0], "sigma_calm": ["lognormal", math.log(0.15), 1.0],
    "sigma_crash": ["lognormal", math.log(0.4), 1.0],
    "nu": ["shifted_gamma", 2.0, 0.1], "nu_calm": ["shifted_gamma", 2.0, 0.1], "nu_crash": ["shifted_gamma", 2.0, 0.1],
    "alpha": ["flat", 0.0, 0.0], "beta": ["flat", 0.0, 0.0],
    "lam": ["lognormal", 0.0, 2.0], "jump_mean": ["normal", 0.0, 0.2], "jump_std": ["lognormal", math.log(0.05), 1.5],
    "rate_to_crash": ["lognormal", 0.0, 1.5], "rate_to_calm": ["lognormal", math.log(2.0), 1.5],
}
_NUMPYRO = threading.Lock()
_KINDS = ("normal", "lognormal", "shifted_gamma", "flat")


def _log_prior(kind: str, a: float, b: float, x):
    from jax.scipy import stats

    if kind == "normal":
        return stats.norm.logpdf(x, a, b)
    if kind == "lognormal":
        return stats.norm.logpdf(jnp.log(x), a, b) - jnp.log(x)
    if kind == "shifted_gamma":
        return stats.gamma.logpdf(x - a, 2.0, scale=1.0 / b)
    return jnp.zeros_like(x)


def check_priors(model: str, priors: dict | None) -> dict:
    """The priors of ``model``'s parameters: ``PRIORS`` with ``priors`` overriding (a config
    may state priors for the parameters of every model: each model takes its own); raises a
    one-line error naming a bad entry."""
    names = fit_lib.SPECS[model]["names"]
    given = dict(priors or {})
    unknown = sorted(set(given) - set(PRIORS))
    if unknown:
        raise ParameterError(f"posterior.priors: {unknown} are not parameters of any model; allowed: {sorted(PRIORS)}")
    out = {k: list(given.get(k, PRIORS[k])) for k in names}
    for k, law in out.items():
        if len(law) != 3 or law[0] not in _KINDS:
            raise ParameterError(f"posterior.priors.{k} = {law}; allowed: [kind, a, b] with kind in {list(_KINDS)}")
        if law[0] in ("normal", "lognormal", "shifted_gamma") and not float(law[2]) > 0:
            raise ParameterError(f"posterior.priors.{k}: scale {law[2]} must be > 0")
    return {k: (kind, float(a), float(b)) for k, (kind, a, b) in out.items()}


@dataclasses.dataclass
class PosteriorResult:
    model: str
    draws: dict  # parameter -> float64[chains, samples]
    r_hat: dict  # rank-normalized split R-hat per parameter
    ess_bulk: dict  # bulk effective sample size per parameter
    divergences: int
    seconds: float
    mle: fit_lib.FitResult
    priors: dict

    @property
    def converged(self) -> bool:
        return all(v < 1.01 for v in self.r_hat.values()) and all(v > 400 for v in self.ess_bulk.values())

    @property
    def status(self) -> str:
        if self.converged and not self.divergences:
            return "converged (R-hat < 1.01, bulk ESS > 400)"
        bad = [k for k in self.draws if not (self.r_hat[k] < 1.01 and self.ess_bulk[k] > 400)]
        parts = [f"NOT CONVERGED: {', '.join(bad)} (R-hat >= 1.01 or bulk ESS <= 400)"] if bad else []
        if self.divergences:
            parts.append(f"{self.divergences} divergent transitions")
        return "; ".join(parts)

    def table(self):
        """One row per parameter: posterior mean, sd, 5/50/95% quantiles, the MLE and its SE,
        R-hat, bulk ESS, and the run's status."""
        import pandas as pd

        rows = []
        for k, x in self.draws.items():
            flat = x.ravel()
            q5, q50, q95 = np.quantile(flat, [0.05, 0.5, 0.95])
            rows.append(dict(model=self.model, parameter=k, mean=flat.mean(), sd=flat.std(ddof=1), q05=q5,
                             median=q50, q95=q95, mle=self.mle.params[k], mle_se=self.mle.se[k],
                             r_hat=self.r_hat[k], ess_bulk=self.ess_bulk[k], prior=" ".join(map(str, self.priors[k]))))
        out = pd.DataFrame(rows)
        out["status"] = self.status
        return out

    def process_draws(self, n: int | None = None, seed: int = 0):
        """The draws (all, or ``n`` of them without replacement) as a
        ``sim.processes.PosteriorDraws`` of the fitted process (each path takes one of them, chosen
        by its own random stream)."""
        from sim.processes import PosteriorDraws

        names = tuple(self.draws)
        flat = np.stack([self.draws[k].ravel() for k in names], axis=1)
        if n is not None:
            flat = flat[np.random.default_rng(seed).choice(len(flat), size=check_int("n_draws", n, 1, len(flat)),
                                                           replace=False)]
        return PosteriorDraws(self.mle.process, names=names, draws=flat.astype(np.float32))


def nuts(returns, model: str, *, priors: dict | None = None, num_warmup: int = 300, num_samples: int = 300,
         num_chains: int = 4, seed: int = 0, steps_per_year: float = 252.0,
         mle: fit_lib.FitResult | None = None) -> PosteriorResult:
    """NUTS draws of ``model``'s parameters given simple ``returns`` (see the module's text).
    ``num_chains`` chains run vectorized on one device, each started at the MLE (``mle``, a
    fit of ``model`` to these returns, or fitted here) plus a small jitter; raises when the
    MLE did not converge (no sensible start)."""
    import time

    require_numpyro()
    from numpyro.infer import MCMC, NUTS

    for name, v, lo in (("num_warmup", num_warmup, 50), ("num_samples", num_samples, 50), ("num_chains", num_chains, 2)):
        check_int(f"posterior.{name}", v, lo)
    spec = fit_lib.SPECS.get(model)
    if spec is None:
        raise ParameterError(f"fit.model = {model!r}; allowed: {list(fit_lib.MODELS)}")
    laws = check_priors(model, priors)
    if mle is None:
        mle = fit_lib.fit(returns, model, steps_per_year=steps_per_year)
    elif mle.model != model or mle.n_obs != np.size(returns) or mle.fixed:
        raise ParameterError(f"nuts: the start must be a free fit of {model} to these {np.size(returns)} returns, "
                             f"got {mle.model} ({mle.n_obs} returns, held {list(mle.fixed)})")
    if not mle.converged:
        raise ParameterError(f"{model}: the maximum-likelihood fit did not converge ({mle.status}); no NUTS start")
    r, dt = np.asarray(returns, np.float64), 1.0 / float(steps_per_year)
    names = spec["names"]
    loglik = spec.get("loglik_parallel", spec["loglik"])  # the same likelihood, faster gradients where one exists
    t0 = time.perf_counter()
    with jax.enable_x64(True):
        rj, wj = fit_lib.padded(r)

        def as_vector(u):
            p = spec["to_params"](u)
            return jnp.stack([p[k] for k in names])

        def potential(u):  # minus the log posterior density in the unconstrained coordinates
            p = spec["to_params"](u)
            log_prior = sum(_log_prior(*laws[k], p[k]) for k in names)
            log_jac = jnp.linalg.slogdet(jax.jacfwd(as_vector)(u))[1]
            return -(loglik(p, rj, dt, wj) + log_prior + log_jac)

        key = jax.random.key(seed)
        u_hat = jnp.asarray(mle.unconstrained_estimate, jnp.float64)
        init = u_hat + 0.01 * jax.random.normal(jax.random.fold_in(key, 1), (num_chains, u_hat.size), jnp.float64)
        mcmc = MCMC(NUTS(potential_fn=potential, dense_mass=True), num_warmup=num_warmup, num_samples=num_samples,
                    num_chains=num_chains, chain_method="vectorized", progress_bar=False)
        # one MCMC run at a time: NumPyro's effect-handler stack (numpyro.primitives._PYRO_STACK) is one list for
        # all threads; a potential_fn run should not push onto it, but NumPyro does not promise thread safety
        with _NUMPYRO:
            mcmc.run(jax.random.key_data(jax.random.fold_in(key, 2)), init_params=init, extra_fields=("diverging",))
        u = np.asarray(mcmc.get_samples(group_by_chain=True), np.float64)  # [chains, samples, dim]
        params = jax.vmap(jax.vmap(spec["to_params"]))(jnp.asarray(u))
        draws = {k: np.asarray(params[k], np.float64) for k in names}
        divergences = int(np.asarray(mcmc.get_extra_fields()["diverging"]).sum())
    return PosteriorResult(model=model, draws=draws, r_hat={k: rank_rhat(v) for k, v in draws.items()},
                           ess_bulk={k: bulk_ess(v) for k, v in draws.items()}, divergences=divergences,
                           seconds=time.perf_counter() - t0, mle=mle, priors=laws)


def require_numpyro() -> None:
    """Raise a one-line error when NumPyro (the extra ``[bayes]``) is not installed."""
    try:
        import numpyro  # noqa: F401
    except ImportError as err:  # pragma: no cover - make test installs it
        raise ParameterError("posterior.nuts needs NumPyro: pip install -e '.[bayes]' (or posterior.nuts=false)") from err


def _rank_normal(x: np.ndarray) -> np.ndarray:
    from scipy import stats

    ranks = stats.rankdata(x, method="average").reshape(x.shape)
    return stats.norm.ppf((ranks - 3 / 8) / (x.size + 1 / 4))


def _split(x: np.ndarray) -> np.ndarray:
    half = x.shape[1] // 2
    return np.concatenate([x[:, :half], x[:, half:2 * half]], axis=0)


def rank_rhat(x: np.ndarray) -> float:
    """Rank-normalized split R-hat of draws ``[chains, samples]`` (Vehtari et al. 2021: the
    larger of the bulk and the folded, tail, R-hat)."""
    def rhat(z):
        z = _split(z)
        n = z.shape[1]
        w = z.var(axis=1, ddof=1).mean()
        b = n * z.mean(axis=1).var(ddof=1)
        return float(np.sqrt(((n - 1) / n * w + b / n) / w))

    return max(rhat(_rank_normal(x)), rhat(_rank_normal(np.abs(x - np.median(x)))))


def bulk_ess(x: np.ndarray) -> float:
    """Bulk effective sample size of draws ``[chains, samples]``: the ESS of the rank-normalized
    split chains (NumPyro's autocorrelation estimator)."""
    from numpyro.diagnostics import effective_sample_size

    return float(effective_sample_size(_split(_rank_normal(x))))
