"""Kelly under the posterior of fitted return models (seed 000 §2.3: size the bet under the
uncertainty of parameters estimated from a finite, fat-tailed history).

Two parts, each fitted on one sample and evaluated where the fitted model is not the truth:
(a) ``sp500``: the shipped S&P 500 daily returns, fitted on ``sp500.start..sp500.fit_end``,
    evaluated out of sample by a stationary block bootstrap of the later days;
(b) ``synthetic``: ``synthetic.sample_years`` simulated from a known process, evaluated on it.

For each model in ``models`` (maximum likelihood, ``sim.fit``): its Laplace posterior
(``laplace_draws`` joint draws) and, for ``posterior.nuts_models``, its NUTS posterior
(``sim.posterior``, with R-hat and bulk ESS). The policies (``sim.kelly.
sizing_under_posteriors``): ``plug_in`` (numeric Kelly on the fitted process), ``fractional``
(``c`` times it), ``laplace`` and ``nuts`` (Kelly with each path running one posterior draw for
the year), ``drawdown`` (constrained). Each is held on the evaluation model on the same draws.

Writes ``fits.csv`` (every fit's estimates, SEs, intervals: Wald, or ``intervals.method``'s for
``intervals.parameters``; log-likelihood, AIC/BIC, status),
``model_comparison.csv`` (per part, AIC/BIC, Akaike weights), ``posterior.csv`` (NUTS
summaries and diagnostics), ``policies.csv`` (part, model, policy, fraction, out-of-sample
growth, ruin, drawdown, ...), ``growth_curve.csv``, ``summary.json`` (the preferred model,
how far posterior sizing moves the fraction and the out-of-sample growth against plug-in,
with paired standard errors, and how much the decision changes between models), and the plots
``posterior.png`` (posterior of nu and of the Kelly fraction) and ``growth_curve.png``.
With NUTS on, the default run takes a few minutes on a 2-core CPU (NUTS is most of it).
"""

from __future__ import annotations

import functools
import logging
import time

import hydra
import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from lab.harness import OutputWriter, build_process, hydra_main
from sim import engine, fit, kelly, parallel, plots, stats
from sim.data import load_sp500_index, simple_returns
from sim.processes import BlockBootstrap
from sim.validation import ParameterError, check_int, check_range

log = logging.getLogger(__name__)


def check(cfg: DictConfig):
    """Every setting checked before any work; returns the two parts' samples and evaluators."""
    spy = float(cfg.steps_per_year)
    models = list(cfg.models)
    for m in models + list(cfg.posterior.nuts_models):
        if m not in fit.MODELS:
            raise ParameterError(f"models: {m!r} is not a fitted model; allowed: {list(fit.MODELS)}")
    if not models:
        raise ParameterError("models is empty; allowed: a list of " + str(list(fit.MODELS)))
    fit.interval_plan(models, cfg.intervals.method, cfg.intervals.parameters, cfg.intervals.bootstrap,
                      keys=("intervals.method", "intervals.parameters", "intervals.bootstrap"))
    check_int("posterior.laplace_draws", cfg.posterior.laplace_draws, 100)
    check_int("optimizer.n_paths", cfg.optimizer.n_paths, 256)
    check_int("evaluation.n_paths", cfg.evaluation.n_paths, 256)
    check_range("synthetic.sample_years", cfg.synthetic.sample_years, 1.0)
    check_range("policies.fractional_multiple", cfg.policies.fractional_multiple, 0.0, 10.0, lo_closed=False)
    check_range("policies.drawdown_level", cfg.policies.drawdown_level, 0.0, 1.0, lo_closed=False, hi_closed=False)
    check_range("policies.drawdown_probability", cfg.policies.drawdown_probability, 0.0, 1.0, lo_closed=False,
                hi_closed=False)
    if cfg.posterior.nuts:
        from sim import posterior

        for m in cfg.posterior.nuts_models:
            posterior.check_priors(m, OmegaConf.to_container(cfg.posterior.priors))
        for name in ("num_warmup", "num_samples"):
            check_int(f"posterior.{name}", cfg.posterior[name], 50)
        check_int("posterior.num_chains", cfg.posterior.num_chains, 2)
        posterior.require_numpyro()
    returns = simple_returns(load_sp500_index()).loc[cfg.sp500.start:]
    fit_part = returns.loc[: cfg.sp500.fit_end].to_numpy()
    test_part = returns.loc[cfg.sp500.fit_end:].iloc[1:].to_numpy()
    if fit_part.size < 252 or test_part.size < 252:
        raise ParameterError(f"sp500.start..fit_end = {cfg.sp500.start}..{cfg.sp500.fit_end} leaves {fit_part.size} "
                             f"days to fit and {test_part.size} to evaluate; allowed: at least 252 each")
    truth = build_process(cfg.synthetic.process, steps_per_year=spy, where="synthetic.process")
    fit.model_of(truth)  # a process with a likelihood here
    observed = engine.sample_returns(truth, seed=int(cfg.seed) + 101, n_paths=1, steps_per_year=spy,
                                     n_steps=round(cfg.synthetic.sample_years * spy), block_size=1)[0]
    return {"sp500": (fit_part, BlockBootstrap(test_part.astype(np.float32), cfg.sp500.mean_block)),
            "synthetic": (np.asarray(observed, np.float64), truth)}


def _posteriors(name: str, returns, cfg: DictConfig) -> dict:
    """Per model: the fit, its posteriors as processes, and the NUTS result."""
    out, spy, iv = {}, float(cfg.steps_per_year), cfg.intervals
    plan = fit.interval_plan(cfg.models, iv.method, iv.parameters, iv.bootstrap)
    for m in cfg.models:
        f = fit.fit(returns, m, steps_per_year=spy)
        if not f.converged:
            log.warning("%s / %s: %s", name, m, f.status)
        elif plan[m] and iv.method != "wald":
            f = fit.with_intervals(returns, f, iv.method, plan[m], bootstrap=int(iv.bootstrap), seed=int(cfg.seed))
        entry = {"fit": f, "processes": {}, "nuts": None}
        if f.has_laplace:
            entry["processes"]["laplace"] = f.laplace(int(cfg.posterior.laplace_draws), seed=int(cfg.seed))
        if cfg.posterior.nuts and m in cfg.posterior.nuts_models and f.converged:
            from sim import posterior

            post = posterior.nuts(returns, m, priors=OmegaConf.to_container(cfg.posterior.priors),
                                  num_warmup=int(cfg.posterior.num_warmup), num_samples=int(cfg.posterior.num_samples),
                                  num_chains=int(cfg.posterior.num_chains), seed=int(cfg.seed), steps_per_year=spy,
                                  mle=f)
            log.info("%s / %s NUTS: %s (%.0f s)", name, m, post.status, post.seconds)
            entry["nuts"], entry["processes"]["nuts"] = post, post.process_draws()
        out[m] = entry
    return out


def _runnable(part: str, fitted: dict, steps_per_year: float) -> tuple[dict, dict]:
    """The fits whose model the simulator can run (sized and evaluated), and, for the others,
    why not (e.g. a Merton fit with more than one jump a day): they stay in the fit table and
    the model comparison, flagged, and get no sizing rows. A posterior with draws outside the
    range (a Laplace normal reaching past lam = one jump a day) is dropped alike, as
    ``model/method``. At least one model must run."""
    runnable, not_sized, dt = {}, {}, 1.0 / steps_per_year
    for m, e in fitted.items():
        for name, process in [("", e["fit"].process), *((f"/{k}", p) for k, p in e["processes"].items())]:
            try:
                process.validate(dt)
            except ParameterError as err:
                not_sized[m + name] = str(err)
                log.warning("%s / %s%s: not sized, outside the simulator's range: %s", part, m, name, err)
        if m in not_sized:
            continue
        runnable[m] = dict(e, processes={k: p for k, p in e["processes"].items() if f"{m}/{k}" not in not_sized})
    if not runnable:
        raise ParameterError(f"{part}: no fitted model can be simulated ({not_sized})")
    return runnable, not_sized


def _draw_rows(part: str, model: str, method: str, draws, risk_free: float) -> pd.DataFrame:
    """Long rows for the posterior plot: nu (where the model has one) and each draw's Kelly
    fraction to second order, (mean - r) / variance of the draw's model (its annual moments)."""
    values = dict(zip(draws.names, np.asarray(draws.draws, np.float64).T))
    kelly_f = kelly.second_order_kelly_of_draws(draws, risk_free)
    rows = [pd.DataFrame({"parameter": "kelly_fraction", "value": kelly_f})]
    if "nu" in values:
        rows.append(pd.DataFrame({"parameter": "nu", "value": values["nu"]}))
    return pd.concat(rows, ignore_index=True).assign(part=part, model=model, method=method)[
        ["part", "model", "method", "parameter", "value"]]


def _size_and_evaluate(part: str, entries: dict, evaluation, cfg: DictConfig) -> tuple[pd.DataFrame, dict]:
    spy, p, o, e = float(cfg.steps_per_year), cfg.policies, cfg.optimizer, cfg.evaluation
    sized = []
    for m, entry in entries.items():
        rows = kelly.sizing_under_posteriors(
            entry["fit"].process, entry["processes"], seed=int(cfg.seed), n_paths=int(o.n_paths),
            n_steps=round(o.years * spy), steps_per_year=spy, risk_free=float(cfg.risk_free),
            fractional_multiple=float(p.fractional_multiple), drawdown_level=float(p.drawdown_level),
            drawdown_probability=float(p.drawdown_probability), drawdown_steps=round(p.drawdown_horizon_years * spy))
        sized += [{"part": part, "model": m, "fit_status": entry["fit"].status, **r} for r in rows]
    fractions = {f"{r['model']}|{r['policy']}": r["fraction"] for r in sized}
    evaluated, wealth = kelly.evaluate_fractions(evaluation, fractions, seed=int(cfg.seed) + 7, n_paths=int(e.n_paths),
                                                 n_steps=round(e.years * spy), steps_per_year=spy,
                                                 risk_free=float(cfg.risk_free), floor=float(e.floor))
    table = pd.DataFrame([{**s, **{k: v for k, v in r.items() if k not in ("policy", "fraction")}}
                          for s, r in zip(sized, evaluated)])
    table["evaluation_note"] = [stats.wiped_out_note(w, "see time_avg_growth_median and the summary's paired "
                                                      "differences (saved / lost shares)") for w in table.wipeout_probability]
    return table, wealth


def _against_plug_in(table: pd.DataFrame, wealth: dict, model: str, years: float) -> dict:
    """For one model: each posterior policy's fraction over plug-in's, and the paired
    out-of-sample growth difference (per year) against plug-in on the same draws."""
    out = {}
    plug = table[(table.model == model) & (table.policy == "plug_in")].fraction.iloc[0]
    for policy in ("laplace", "nuts", "fractional", "drawdown"):
        row = table[(table.model == model) & (table.policy == policy)]
        if row.empty:
            continue
        d = stats.paired_difference(wealth[f"{model}|{policy}"] / years, wealth[f"{model}|plug_in"] / years)
        out[policy] = {"fraction": float(row.fraction.iloc[0]), "fraction_over_plug_in": float(row.fraction.iloc[0] / plug),
                       "growth_minus_plug_in": d["mean"], "growth_minus_plug_in_se": d["mean_se"],
                       "paths_saved": d["saved"], "paths_lost": d["lost"]}
    return {"plug_in_fraction": float(plug), **out}


def _growth_curve(part: str, entries: dict, preferred: str, evaluation, fractions, cfg: DictConfig) -> pd.DataFrame:
    spy, o = float(cfg.steps_per_year), cfg.optimizer
    kw = dict(seed=int(cfg.seed) + 11, n_paths=int(o.n_paths), n_steps=round(o.years * spy), steps_per_year=spy,
              risk_free=float(cfg.risk_free))
    grid = np.linspace(0.0, 1.5 * max(max(fractions), 0.5), 41)
    g, se = kelly.GrowthObjective(evaluation, **kw).values_and_se(grid)
    out = pd.DataFrame({"part": part, "fraction": grid, "growth": g, "growth_se": se})
    procs = entries[preferred]["processes"]
    method = "nuts" if "nuts" in procs else "laplace" if "laplace" in procs else None
    if method:
        out["posterior_growth"], out["posterior_growth_se"] = kelly.GrowthObjective(procs[method], **kw).values_and_se(grid)
        out["posterior_label"] = f"the {method} posterior of {preferred}"
    return out


def _part(part, returns, evaluation, cfg) -> dict:
    """One sample's fits, posteriors, sizing and evaluation: its rows of every table and its
    part of the summary."""
    fitted = _posteriors(part, returns, cfg)
    comparison = fit.compare({m: e["fit"] for m, e in fitted.items()})
    entries, not_sized = _runnable(part, fitted, float(cfg.steps_per_year))
    preferred = next(m for m in comparison.model if m in entries)
    table, wealth = _size_and_evaluate(part, entries, evaluation, cfg)
    plug = table[table.policy == "plug_in"].set_index("model").fraction
    years = float(cfg.evaluation.years)
    summary = {
        "n_obs": int(len(returns)), "preferred_model": comparison.model.iloc[0], "sized_model": preferred,
        "not_sized": not_sized,  # fits the simulator cannot run (their fit_status says why)
        "akaike_weights": dict(zip(comparison.model, comparison.akaike_weight.round(6))),
        "against_plug_in": {m: _against_plug_in(table, wealth, m, years) for m in entries},
        "plug_in_fraction_range_across_models": [float(plug.min()), float(plug.max())],
        "growth_range_across_models_plug_in": [float(table[table.policy == "plug_in"].time_avg_growth.min()),
                                               float(table[table.policy == "plug_in"].time_avg_growth.max())],
        "fit_status": {m: e["fit"].status for m, e in fitted.items()},  # weakly identified, on a bound, ...
        "not_converged": [f"{r.model}/{r.policy}" for r in table.itertuples() if not r.converged],
        "pinned_by_worst_draw": [f"{r.model}/{r.policy}" for r in table.itertuples() if r.note],
        "nuts_status": {m: e["nuts"].status for m, e in entries.items() if e["nuts"] is not None},
    }
    return dict(
        fits=[e["fit"].table().assign(part=part) for e in fitted.values()],
        nuts=[e["nuts"].table().assign(part=part) for e in entries.values() if e["nuts"] is not None],
        draws=[_draw_rows(part, m, method, proc, float(cfg.risk_free))
               for m, e in entries.items() for method, proc in e["processes"].items()],
        comparison=[comparison.assign(part=part)], policies=[table],
        curve=[_growth_curve(part, entries, preferred, evaluation, table.fraction, cfg)],
        marks=plug.to_dict(), summary=summary)


def run(cfg: DictConfig, out_dir) -> dict:
    t_start = time.perf_counter()
    parts = check(cfg)
    out = OutputWriter(out_dir, plots=cfg.plots)
    # the samples side by side on a one-process CPU run (parallel.concurrently): each one's numbers are its own
    done = parallel.concurrently({part: functools.partial(_part, part, returns, evaluation, cfg)
                                  for part, (returns, evaluation) in parts.items()})
    rows = {k: [t for d in done.values() for t in d[k]] for k in ("fits", "comparison", "policies", "curve", "nuts")}
    for name, k in (("fits", "fits"), ("model_comparison", "comparison"), ("policies", "policies"),
                    ("growth_curve", "curve"), ("posterior", "nuts")):  # posterior.csv: where NUTS ran
        if rows[k]:
            out.table(f"{name}.csv", pd.concat(rows[k], ignore_index=True))
    curve, draws = pd.concat(rows["curve"], ignore_index=True), [t for d in done.values() for t in d["draws"]]
    marks, summary_parts = {p: d["marks"] for p, d in done.items()}, {p: d["summary"] for p, d in done.items()}
    out.figure("growth_curve.png", lambda: plots.kelly_growth_curves(curve, {p: {f"{m} plug-in": f for m, f in v.items()}
                                                                            for p, v in marks.items()}))
    if draws:
        out.figure("posterior.png", lambda: plots.posterior_panels(pd.concat(draws, ignore_index=True), marks))
    summary = {"experiment": "posterior_kelly", "seed": cfg.seed, "models": list(cfg.models), **summary_parts}
    out.finish(summary, t_start)
    log.info("preferred: %s", {p: v["preferred_model"] for p, v in summary_parts.items()})
    return summary


@hydra.main(version_base="1.3", config_path="../conf", config_name="posterior_kelly")
def main(cfg: DictConfig) -> None:
    hydra_main(run, cfg)


if __name__ == "__main__":
    main()
