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
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from experiments.harness import (OutputWriter, build_monetizers, build_portfolio, build_process,  # noqa: E402
                                 build_program, build_vol_model, hydra_main)
from sim import engine, hedge, stats  # noqa: E402
from sim.data import load_sp500_index, load_vix, simple_returns  # noqa: E402
from sim.processes import Replay  # noqa: E402
from sim.validation import ParameterError, check_int, check_range  # noqa: E402

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


# --------------------------------------------------------------------------- metrics


def _mc_metrics(res, base=None) -> dict:
    s = res.summary()
    years, spy = res.years, res.steps_per_year
    ann = stats.annual_returns(res.snapshots)
    n = res.stats.log_wealth.size
    alive = np.where(res.stats.ruin_step == stats.NEVER, res.n_steps, res.stats.ruin_step).astype(np.float64)
    mean_r = res.stats.sum_r / alive
    vol = np.sqrt(np.maximum(res.stats.sum_r2 / alive - mean_r**2, 0.0) * spy)
    out = {
        "cagr_median": s["cagr_median"],
        "time_avg_growth": s["time_avg_growth"],
        "time_avg_growth_se": s["time_avg_growth_se"],
        "time_avg_growth_median": s["time_avg_growth_median"],
        "wiped_out": float(np.mean(~np.isfinite(res.stats.log_wealth))),
        "volatility": float(np.mean(vol)),
        "max_drawdown_mean": s["max_drawdown_mean"],
        "max_drawdown_median": s["max_drawdown_median"],
        "max_drawdown_q95": s["max_drawdown_q95"],
        "es99_annual": stats.expected_shortfall(ann, 0.99),
        "sharpe_median": s["sharpe_median"],
        "calmar_median": s["calmar_median"],
        "ruin_probability": s["ruin_probability"],
    }
    if res.extras:
        for k in ("premium", "proceeds", "costs", "sales"):
            out[f"{k}_per_year"] = float(np.nanmean(res.extras[k]) / years)
    if base is not None:
        paired = stats.paired_difference(res.stats.log_wealth / years, base.stats.log_wealth / years)
        out["growth_vs_unhedged"] = paired["mean"]  # over the paths finite in both runs
        out["growth_vs_unhedged_se"] = paired["mean_se"]
        out["paths_saved_by_hedge"] = paired["saved"]  # unhedged wiped out, hedged not
        out["paths_saved_by_hedge_se"] = paired["saved_se"]
        out["paths_lost_by_hedge"] = paired["lost"]
        out["paths_lost_by_hedge_se"] = paired["lost_se"]
        out["growth_vs_unhedged_note"] = stats.PAIRED_NOTE if paired["saved"] or paired["lost"] else ""
        base_es = stats.expected_shortfall(stats.annual_returns(base.snapshots), 0.99)
        out["es99_change"] = out["es99_annual"] - base_es
        out["es99_change_relative"] = out["es99_change"] / base_es
        if out.get("premium_per_year", 0) > 0:
            out["es99_reduction_per_premium"] = -out["es99_change"] / out["premium_per_year"]
    out["n_paths"] = n
    return out


# --------------------------------------------------------------------------- parts


def _models_part(cfg, out, spy):
    sim_cfg = cfg.simulation
    n_paths = check_int("simulation.n_paths", sim_cfg.n_paths, 2)
    n_steps = check_int("simulation.years x steps_per_year", round(sim_cfg.years * spy), round(spy))
    kw = dict(seed=cfg.seed, n_paths=n_paths, n_steps=n_steps, steps_per_year=spy,
              block_size=min(sim_cfg.block_size, n_paths), snapshot_every=round(spy), progress=lambda info: None)
    rows, mdd = [], {}
    for model, node in cfg.models.items():
        process = build_process(node, steps_per_year=spy)
        vm = build_vol_model(cfg, math.sqrt(process.annual_moments()[1]))
        results = {}
        for name, policy in _overlays(cfg, process, vm).items():
            t0 = time.perf_counter()
            results[name] = engine.simulate(process, policy=policy, **kw)
            log.info("%s / %s: %d paths x %d steps in %.1fs", model, name, n_paths, n_steps, time.perf_counter() - t0)
        base = results["unhedged"]
        for name, res in results.items():
            rows.append({"model": model, "strategy": name,
                         **_mc_metrics(res, None if name == "unhedged" else base)})
        mdd[model] = {name: -np.expm1(-res.stats.max_drawdown_log.astype(np.float64)) for name, res in results.items()}
    table = pd.DataFrame(rows)
    out.table("models.csv", table)
    fig, axes = plt.subplots(1, len(mdd), figsize=(5 * len(mdd), 3.8), squeeze=False)
    for ax, (model, per) in zip(axes[0], mdd.items()):
        bins = np.linspace(0, 1, 51)
        for name, x in per.items():
            ax.hist(x, bins=bins, histtype="step", density=True, lw=1.4 if name == "unhedged" else 1.0, label=name)
        ax.set_title(f"{model}: max drawdown over {sim_cfg.years:g} y")
        ax.set_xlabel("max drawdown")
        ax.legend(fontsize=7)
    out.figure("max_drawdown.png", fig)
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
    for name, policy in _overlays(cfg, process, vm).items():
        res = engine.simulate(process, policy=policy, n_paths=1, n_steps=n_steps, steps_per_year=spy, block_size=1,
                              record_paths=1, progress=lambda info: None)
        nav = np.exp(res.recorded[:, 0].astype(np.float64))
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
    _plot_real(out, navs, dates, r_cfg.zooms)
    covered = int(np.isfinite(implied).sum()) if implied is not None else 0
    return table, {"days": n_steps, "first": str(dates[0].date()), "last": str(dates[-1].date()),
                   "days_priced_from_vix": covered, "long_run_vol": long_run}


def _plot_real(out, navs, dates, zooms):
    def draw(name, lo, hi, title):
        sel = (dates >= pd.Timestamp(lo)) & (dates <= pd.Timestamp(hi))
        fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 6), sharex=True, gridspec_kw=dict(height_ratios=[2, 1]))
        for label, nav in navs.items():
            x = nav[sel] / nav[sel][0]
            ax1.plot(dates[sel], x, lw=1.5 if label == "unhedged" else 1.0, label=label)
            ax2.plot(dates[sel], x / np.maximum.accumulate(x) - 1.0, lw=1.0)
        ax1.set_yscale("log")
        ax1.set_ylabel("NAV (start = 1)")
        ax1.set_title(title)
        ax1.legend(fontsize=7)
        ax2.set_ylabel("drawdown")
        out.figure(name, fig)

    draw("real_equity.png", dates[0], dates[-1], "S&P 500 price index: with and without the put program")
    for tag, (lo, hi) in zooms.items():
        draw(f"real_zoom_{tag}.png", lo, hi, f"S&P 500 {lo} .. {hi}")


def _event_part(cfg, spy):
    """A flat market for ``premium_years`` years, then one day of ``drop``: the hedge's gain
    on that day (hedged minus unhedged return, as a fraction of NAV) against the premium paid."""
    e = cfg.event
    check_range("event.drop", e.drop, -0.99, 0.0, hi_closed=False)
    check_range("event.vol_before", e.vol_before, 0.0, 5.0, lo_closed=False)
    check_range("event.vol_after", e.vol_after, 0.0, 5.0, lo_closed=False)
    n_flat = round(e.premium_years * spy)
    r = np.zeros(n_flat + 1)
    r[-1] = e.drop
    implied = np.full(n_flat + 1, e.vol_before)
    implied[-1] = e.vol_after
    process = Replay(r, implied)  # the stated ATM vols; the configured skew on top
    vm = build_vol_model(cfg, e.vol_before, source="model")
    out = {}
    for name, policy in _overlays(cfg, process, vm).items():
        if name not in ("unhedged", "hedged_hold"):
            continue
        res = engine.simulate(process, policy=policy, n_paths=1, n_steps=n_flat + 1, steps_per_year=spy, block_size=1,
                              record_paths=1, progress=lambda info: None)
        nav = np.exp(res.recorded[:, 0].astype(np.float64))
        out[name] = {"nav_before": nav[-2], "nav_after": nav[-1], "day_return": nav[-1] / nav[-2] - 1.0,
                     "premium_paid": float(res.extras["premium"][0]) if res.extras else 0.0}
    h, u = out["hedged_hold"], out["unhedged"]
    gain = h["day_return"] - u["day_return"]
    premium = cfg.hedge.budget * e.premium_years
    return {"drop": e.drop, "premium_years": e.premium_years, "premium_budgeted": premium,
            "premium_paid_fraction_of_nav": h["premium_paid"],
            "hedged_day_return": h["day_return"], "unhedged_day_return": u["day_return"],
            "hedge_gain_fraction_of_nav": gain, "payoff_over_premium": gain / premium if premium > 0 else float("nan"),
            "hedged_nav_after_vs_unhedged": h["nav_after"] / u["nav_after"] - 1.0,
            "atm_vol_before": e.vol_before, "atm_vol_after": e.vol_after}


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
        # optimize_hedge's converged includes its check against a local grid on the same draws
        converged = best.converged and plain.converged
        # Paired difference on the same draws: the hedged optimum against the unhedged one.
        n_blocks = -(-o.n_paths // kw["block_size"])
        args = (kw["seed"], process, ov, n_blocks, kw["block_size"], n_steps, 1.0 / spy)
        diff = _paired_growth_difference(np.array([best.fraction, best.budget, best.strike], np.float32),
                                         np.array([plain.fraction, 0.0, best.strike], np.float32), args)
        rows.append({
            "model": model, "fraction": best.fraction, "budget": best.budget,
            "strike": best.strike if best.budget > 1e-6 else float("nan"), "growth": best.growth,
            "growth_se": best.growth_se, "converged": converged, "iterations": best.iterations,
            "unhedged_converged": plain.converged, "grid_check_best_gain": best.grid_check_gain,
            "status": "optimum" if converged else "NOT CONVERGED: the best point found, not an optimum",
            "unhedged_fraction": plain.fraction, "unhedged_growth": plain.growth,
            "growth_gain": diff["mean"], "growth_gain_se": diff["mean_se"],
            "paths_saved_by_hedge": diff["saved"], "paths_lost_by_hedge": diff["lost"],
            # only stated for a converged optimum (NaN otherwise: not known)
            "hedge_raises_growth": (bool(best.budget > 1e-4 and diff["mean"] > 2 * diff["mean_se"]) if converged
                                    else float("nan")),
            "seconds": time.perf_counter() - t0,
        })
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


def _paired_growth_difference(theta_a, theta_b, args):
    seed, process, ov, n_blocks, block_size, n_steps, dt = args

    def per_path(theta):
        o = hedge.with_parameters(ov, fraction=theta[0], budget=theta[1], strike=theta[2])
        return np.asarray(engine.path_growth(seed, process, o, n_paths=n_blocks * block_size, block_size=block_size,
                                             n_steps=n_steps, dt=dt, sequential=True), np.float64)

    return stats.paired_difference(per_path(np.asarray(theta_a, np.float32)), per_path(np.asarray(theta_b, np.float32)))


# --------------------------------------------------------------------------- entry point


def run(cfg: DictConfig, out_dir) -> dict:
    t_start = time.perf_counter()
    spy = float(cfg.steps_per_year)
    check_range("steps_per_year", spy, 1.0)
    check_range("portfolio.fraction", cfg.portfolio.fraction, 0.0, 10.0)
    build_portfolio(cfg)  # every bad portfolio, hedge, vol-model or policy parameter fails here, before any work
    build_program(cfg)
    build_vol_model(cfg, 0.2)
    build_monetizers(cfg.monetize, None)
    if cfg.optimize.enabled:
        _optimized_models(cfg)
    out = OutputWriter(out_dir)
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
