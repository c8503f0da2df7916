"""Tail-hedge overlays: the seed's three arguments measured (seed 000 §1.2).

For each crash-prone return model (regime switching, Merton, GARCH-t: ``models`` in the
config) and for the shipped S&P 500 price index 1990-2022 replayed as one path, equity at
the fraction ``portfolio.fraction`` is simulated without hedge and with the put program of
``hedge`` under each monetization policy, on the same draws (paired):

1. drawdown engineering: max drawdown (mean, median, distribution), Sharpe, Calmar;
2. expected shortfall: ES99 of annual returns, and its reduction per unit of premium;
3. convexity: the hedge's payoff in a -30% day after three years of premium (a scenario),
   against those three years of premium;

plus CAGR, volatility, time-average growth (paired difference: the drag per year), ruin
probability. Then (``optimize``; the models of ``optimize.models``, by default the regime
model) the growth-optimal equity fraction, budget and strike by gradient, against the best unhedged fraction on the same draws: does a hedge raise
the geometric return ("safe haven")? The answer is measured, not assumed.

Writes ``models.csv`` (model x strategy), ``real.csv`` (S&P 500 strategies), ``real_paths.csv``
(daily NAV per strategy), ``growth_optimal.csv``, ``event.json`` figures inside
``summary.json``, and the plots ``real_equity.png``, ``real_zoom_2008.png``,
``real_zoom_2020.png``, ``max_drawdown.png``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time

import hydra
import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from lab.harness import (OutputWriter, build_monetizers, build_portfolio, build_process, build_program,
                                 build_vol_model, hydra_main)
from sim import engine, hedge, plots, stats
from sim.data import load_sp500_index, load_vix, simple_returns
from sim.processes import Replay
from sim.validation import ParameterError, check_int, check_range

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- config -> objects
# Each node below is an option of a config group that mirrors sim/ (conf/portfolio,
# conf/hedge, conf/vol_model, conf/monetize): its _target_ names the class.


def _overlays(cfg: DictConfig, process, vol_model) -> dict:
    p = build_portfolio(cfg)
    base = hedge.HedgeOverlay(fraction=p.fraction, risk_free=p.risk_free, floor=p.floor, program=build_program(cfg),
                              vol_model=vol_model)
    strategies = {"unhedged": p}
    for name, m in build_monetizers(cfg.monetize, process).items():
        strategies[f"hedged_{name}"] = dataclasses.replace(base, monetize=m)
    return strategies


# --------------------------------------------------------------------------- parts


def _models_part(cfg, out, spy):
    sim_cfg = cfg.simulation
    n_paths = check_int("simulation.n_paths", sim_cfg.n_paths, 2)
    n_steps = check_int("simulation.years x steps_per_year", round(sim_cfg.years * spy), round(spy))
    kw = dict(seed=cfg.seed, n_paths=n_paths, n_steps=n_steps, steps_per_year=spy,
              block_size=min(sim_cfg.block_size, n_paths), snapshot_every=round(spy), progress=lambda info: None)
    rows, mdd, runs = [], {}, {}
    for model, node in cfg.models.items():  # model -> (process, {strategy: policy}): one pass per model
        process = build_process(node, steps_per_year=spy)
        vm = build_vol_model(cfg, math.sqrt(process.annual_moments()[1]))
        runs[model] = (process, _overlays(cfg, process, vm))
    done = engine.simulate_each(runs, **kw, done=lambda model, res: log.info(
        "%s: %d strategies x %d paths x %d steps in %.1fs", model, len(res), n_paths, n_steps,
        next(iter(res.values())).wall_seconds))
    for model, results in done.items():
        base = results["unhedged"]
        for name, res in results.items():
            rows.append({"model": model, "strategy": name,
                         **stats.strategy_metrics(res, None if name == "unhedged" else base)})
        mdd[model] = {name: -np.expm1(-res.stats.max_drawdown_log.astype(np.float64)) for name, res in results.items()}
    table = pd.DataFrame(rows)
    out.table("models.csv", table)
    out.figure("max_drawdown.png", lambda: plots.drawdown_histograms(mdd, sim_cfg.years))
    return table


def _real_part(cfg, out, spy):
    r_cfg = cfg.real
    prices = load_sp500_index().loc[r_cfg.start:r_cfg.end]
    if len(prices) < 2 * spy:
        raise ParameterError(f"real.start..real.end = {r_cfg.start}..{r_cfg.end} holds {len(prices)} days; "
                             f"allowed: at least two years of the shipped 1990-01-02..2022-12-28")
    returns = simple_returns(prices).to_numpy(np.float64)
    dates = prices.index
    implied = None
    if r_cfg.use_vix:
        vix = load_vix().reindex(dates[1:]) / 100.0
        implied = vix.to_numpy(np.float64)
    process = Replay(returns, implied)
    long_run = float(np.std(returns[: round(5 * spy)]) * math.sqrt(spy))  # the first five years
    vm = build_vol_model(cfg, long_run, source="model")  # realized + vrp, or VIX where it covers the day
    n_steps = len(returns)
    navs, rows = {}, []
    for name, (nav, res) in hedge.replay_nav(process, _overlays(cfg, process, vm), n_steps=n_steps,
                                             steps_per_year=spy).items():
        navs[name] = nav
        row = {"strategy": name, **stats.nav_metrics(nav, dates, steps_per_year=spy, floor=cfg.portfolio.floor)}
        if res.extras:
            row["premium_per_year"] = float(res.extras["premium"][0] / res.years)
            row["proceeds_per_year"] = float(res.extras["proceeds"][0] / res.years)
            row["sales"] = int(res.extras["sales"][0])
        rows.append(row)
    table = pd.DataFrame(rows)
    base = table.set_index("strategy").loc["unhedged"]
    table["growth_vs_unhedged"] = table.time_avg_growth - base.time_avg_growth
    table["es99_annual_change"] = table.es99_annual - base.es99_annual
    out.table("real.csv", table)
    out.table("real_paths.csv", pd.DataFrame({"date": dates, **navs}))
    out.figure("real_equity.png", lambda: plots.nav_and_drawdown(navs, dates, dates[0], dates[-1],
                                                                 "S&P 500 price index: with and without the put program"))
    for tag, (lo, hi) in r_cfg.zooms.items():
        out.figure(f"real_zoom_{tag}.png", lambda: plots.nav_and_drawdown(navs, dates, lo, hi, f"S&P 500 {lo} .. {hi}"))
    covered = int(np.isfinite(implied).sum()) if implied is not None else 0
    return table, {"days": n_steps, "first": str(dates[0].date()), "last": str(dates[-1].date()),
                   "days_priced_from_vix": covered, "long_run_vol": long_run}


def _event_part(cfg, spy):
    """A flat market, then one crash day: the hedge's payoff against its premium."""
    e = cfg.event
    strategies = _overlays(cfg, None, build_vol_model(cfg, e.vol_before, source="model"))
    return hedge.crash_day(strategies["unhedged"], strategies["hedged_hold"], drop=e.drop,
                           premium_years=e.premium_years, vol_before=e.vol_before, vol_after=e.vol_after,
                           steps_per_year=spy)


def _optimized_models(cfg) -> list[str]:
    names = list(cfg.models) if cfg.optimize.models is None else list(cfg.optimize.models)
    unknown = [m for m in names if m not in cfg.models]
    if unknown:
        raise ParameterError(f"optimize.models: {unknown} not among the models {list(cfg.models)}; allowed: a subset, "
                             "or null for all")
    return names


def _optimize_part(cfg, spy):
    o = cfg.optimize
    p = cfg.portfolio
    b = o.bounds
    bounds = (tuple(b.fraction), tuple(b.budget), tuple(b.strike))
    n_steps = round(o.years * spy)
    rows = []
    for model in _optimized_models(cfg):
        process = build_process(cfg.models[model], steps_per_year=spy)
        vm = build_vol_model(cfg, math.sqrt(process.annual_moments()[1]))
        ov = hedge.HedgeOverlay(fraction=p.fraction, risk_free=p.risk_free, program=build_program(cfg), vol_model=vm)
        kw = dict(seed=cfg.seed + 7, n_paths=o.n_paths, n_steps=n_steps, steps_per_year=spy,
                  block_size=min(1024, o.n_paths), max_iter=o.max_iter, gtol=o.gtol)
        t0 = time.perf_counter()

        def progress(kind):
            return lambda i: log.info("optimize %s (%s): iteration %d/%d, f %.3f budget %.4f strike %.3f, growth %.5f, "
                                      "|projected gradient| %.2g (converged below %g), %.0fs", model, kind,
                                      i["iteration"], o.max_iter, *i["theta"], i["growth"], i["projected_gradient"],
                                      o.gtol, time.perf_counter() - t0)

        best = hedge.optimize_hedge(process, ov, bounds=bounds, progress=progress("hedged"), **kw)
        plain = hedge.optimize_hedge(process, hedge.with_parameters(ov, budget=0.0),
                                     bounds=(bounds[0], (0.0, 1e-9), bounds[2]), progress=progress("unhedged"), **kw)
        # Paired difference on the same draws: the hedged optimum against the unhedged one.
        bs = kw["block_size"]
        diff = hedge.paired_growth_difference(
            process, ov, [best.fraction, best.budget, best.strike], [plain.fraction, 0.0, best.strike],
            seed=kw["seed"], n_paths=-(-o.n_paths // bs) * bs, block_size=bs, n_steps=n_steps, steps_per_year=spy)
        row = {"model": model, **hedge.compare_optima(best, plain, diff), "seconds": time.perf_counter() - t0}
        rows.append(row)
        converged = row["converged"]
        strike = f"{best.strike:.3f}" if best.budget > 1e-6 else "n/a (no budget)"
        log.log(logging.INFO if converged else logging.WARNING,
                "%s: %s f %.3f budget %.4f strike %s growth %.4f; unhedged f %.3f growth %.4f%s", model,
                "optimum" if converged else "NOT CONVERGED, best point found:", best.fraction, best.budget, strike,
                best.growth, plain.fraction, plain.growth,
                "" if best.grid_check_gain <= 1e-6 else f" (a grid point {best.grid_check_gain:.2g}/yr better)")
    return pd.DataFrame(rows)


def _warnings(models: pd.DataFrame, optimum) -> list[str]:
    """Plain sentences for what the tables hold that is not what it seems at a glance."""
    out = []
    if optimum is not None:
        for _, row in optimum.iterrows():
            if not row["converged"]:
                out.append(f"{row['model']}: the growth-optimal search did not converge; growth_optimal.csv holds the "
                           "best point found, not an optimum")
    if "growth_vs_unhedged_note" in models:
        for _, row in models.iterrows():
            if isinstance(row.get("growth_vs_unhedged_note"), str) and row["growth_vs_unhedged_note"]:
                out.append(f"{row['model']} / {row['strategy']}: hedge saved {row['paths_saved_by_hedge']:.4%} and "
                           f"lost {row['paths_lost_by_hedge']:.4%} of paths from a wipe-out; growth_vs_unhedged is "
                           "over the paths finite in both")
    return out


# --------------------------------------------------------------------------- entry point


def check(cfg: DictConfig) -> None:
    """Every bad portfolio, hedge, vol-model, policy or model parameter fails here, before any work."""
    spy = float(cfg.steps_per_year)
    check_range("steps_per_year", spy, 1.0)
    check_range("portfolio.fraction", cfg.portfolio.fraction, 0.0, 10.0)
    build_portfolio(cfg)
    build_program(cfg)
    build_vol_model(cfg, 0.2)
    build_monetizers(cfg.monetize, None)
    for node in cfg.models.values():
        build_process(node, steps_per_year=spy)
    if cfg.optimize.enabled:
        _optimized_models(cfg)


def run(cfg: DictConfig, out_dir) -> dict:
    t_start = time.perf_counter()
    check(cfg)
    spy = float(cfg.steps_per_year)
    out = OutputWriter(out_dir, plots=cfg.plots)
    event = _event_part(cfg, spy)
    log.info("event: a %.0f%% day pays the hedge %.2f%% of NAV, %.2fx the %g years of premium", 100 * event["drop"],
             100 * event["hedge_gain_fraction_of_nav"], event["payoff_over_premium"], event["premium_years"])
    real, real_info = _real_part(cfg, out, spy)
    log.info("S&P 500 %s..%s:\n%s", real_info["first"], real_info["last"],
             real[["strategy", "cagr", "volatility", "max_drawdown", "es99_annual", "sharpe", "calmar"]].to_string())
    models = _models_part(cfg, out, spy)
    optimum = None
    if cfg.optimize.enabled:
        optimum = _optimize_part(cfg, spy)
        out.table("growth_optimal.csv", optimum)
    summary = {
        "experiment": "hedge_overlay",
        "seed": cfg.seed,
        "program": OmegaConf.to_container(cfg.hedge, resolve=True),
        "event": event,
        "real": {**real_info, "table": real.to_dict(orient="records")},
        "models": models.to_dict(orient="records"),
        "growth_optimal": None if optimum is None else optimum.to_dict(orient="records"),
        "warnings": _warnings(models, optimum),
    }
    out.finish(summary, t_start)
    return summary


@hydra.main(version_base="1.3", config_path="../conf", config_name="hedge_overlay")
def main(cfg: DictConfig) -> None:
    hydra_main(run, cfg)


if __name__ == "__main__":
    main()
