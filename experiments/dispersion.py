"""Dispersion trading (seed 003) on simulated constituent paths and on the 20 shipped stocks.

The trade (``sim.dispersion.DispersionTrade``): sell an at-the-money index straddle at the
implied correlation ``trade.rho_implied``, buy constituent straddles sized vega-, theta- or
gamma-neutral, delta-hedge everything daily to expiry, over a ``sim.market.Basket`` (20
fat-tailed names, one factor, a crash regime in which correlations jump toward 1).

Outputs:

* ``attribution_<scenario>.csv`` / ``.png``: the per-step attribution on one simulated path
  (calm, and one in which a crash arrives mid-trade): every term as a column
  (``sim.dispersion.attribution_table``), cumulative terms over time, the implied against the
  realized correlation.
* ``pnl_vs_spread.csv`` / ``.png``: per path, P&L against the implied - realized correlation
  spread, over a grid of calm realized correlations, with the theoretical line ``P&L = M
  spread``; ``spread_means.csv``: mean P&L against ``(rho_implied - rho_real) x M`` per grid
  point (standard errors and z-scores).
* ``trades.csv``: every scenario x sizing x direction: mean P&L (SE), std, 5th/95th
  percentiles, ES95 of the loss, the attribution's mean terms, the account's max drawdown and
  ruin probability.
* ``realized_corr.csv`` / ``.png``: the shipped 20 stocks' 63-day realized average
  correlation 1990-2022, with the 2008 and 2020 spikes zoomed.
* ``summary.json``: everything above, the configuration and run information.
"""

from __future__ import annotations

import logging
import time

import hydra
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from experiments.harness import OutputWriter, check_fields, hydra_main, instantiate  # noqa: E402
from sim import dispersion as dsp  # noqa: E402
from sim import engine  # noqa: E402
from sim.data import load_sp500_constituents  # noqa: E402
from sim.market import Basket  # noqa: E402
from sim.validation import ParameterError, check_int, check_range  # noqa: E402

log = logging.getLogger(__name__)

TERMS = list(dsp.ATTRIBUTION_TERMS)


# --------------------------------------------------------------------------- config -> objects


def build_basket(cfg, **override) -> Basket:
    """``basket`` (conf/basket) with a scenario's ``override`` of its keys, validated."""
    check_fields(Basket, override, "scenario")
    b = instantiate({**OmegaConf.to_container(cfg.basket, resolve=True), **override}, "basket")
    b.validate(1.0 / float(cfg.steps_per_year))
    return b


def build_trade(cfg, **override) -> dsp.DispersionTrade:
    """``trade`` (conf/trade) with ``override`` (a sizing, a direction)."""
    return instantiate({**OmegaConf.to_container(cfg.trade, resolve=True), **override}, "trade")


def _n_steps(cfg) -> int:
    return int(round(float(cfg.trade.tenor) * float(cfg.steps_per_year)))


def check_config(cfg) -> dict:
    """Every basket, scenario and trade the run will build, validated before any work."""
    spy = float(cfg.steps_per_year)
    check_range("steps_per_year", spy, 1.0)
    check_int("simulation.n_paths", cfg.simulation.n_paths, 2)
    check_int("simulation.block_size", cfg.simulation.block_size, 1)
    check_int("real.window", cfg.real.window, 3)
    n_steps = _n_steps(cfg)
    if n_steps < 1:
        raise ParameterError(f"trade.tenor = {cfg.trade.tenor} is shorter than one step")
    scenarios = OmegaConf.to_container(cfg.scenarios, resolve=True)
    if "calm" not in scenarios:
        raise ParameterError("scenarios must include 'calm' (the P&L-vs-spread runs use it)")
    for rho in cfg.spread_grid:
        check_range("spread_grid", rho, 0.0, 1.0, hi_closed=False)
    base = build_trade(cfg)
    base.validate(1.0 / spy, n_steps)
    base.check_process(build_basket(cfg, **(scenarios["calm"] or {})))
    for name, override in scenarios.items():
        b = build_basket(cfg, **(override or {}))
        for sizing in cfg.sizings:
            for direction in cfg.directions:
                t = build_trade(cfg, sizing=sizing, direction=direction)
                t.validate(1.0 / spy, n_steps)
                t.check_process(b)
    return scenarios


# --------------------------------------------------------------------------- simulation


def _simulate(cfg, basket, trade):
    return engine.simulate(basket, policy=trade, seed=int(cfg.seed), n_paths=int(cfg.simulation.n_paths),
                           n_steps=_n_steps(cfg), steps_per_year=float(cfg.steps_per_year),
                           block_size=int(cfg.simulation.block_size))


def run_spread(cfg):
    """Calm baskets over ``spread_grid``: per-path P&L against the correlation spread."""
    trade = build_trade(cfg)
    rows, points = [], []
    for rho in cfg.spread_grid:
        basket = build_basket(cfg, **(OmegaConf.to_container(cfg.scenarios.calm, resolve=True) or {}), rho=float(rho))
        t0 = time.perf_counter()
        res = _simulate(cfg, basket, trade)
        row = {"rho_real": float(rho), "rho_implied": float(cfg.trade.rho_implied), **dsp.trade_summary(res.extras, res.stats, float(rho))}
        rows.append(row)
        ex = res.extras
        points.append(pd.DataFrame({"rho_real_config": float(rho), "spread": ex["rho_implied"] - ex["rho_realized"],
                                    "pnl": ex["pnl"], "multiplier": ex["multiplier"],
                                    "correlation_term": ex["correlation"]}))
        log.info("spread grid rho_real=%.2f: mean P&L %.5f (SE %.5f), theory %.5f, z %.2f (%.1fs)", rho,
                 row["pnl_mean"], row["pnl_se"], row["theory_mean"], row["gap_z"], time.perf_counter() - t0)
    return pd.DataFrame(rows), pd.concat(points, ignore_index=True)


def run_trades(cfg, scenarios: dict) -> pd.DataFrame:
    rows = []
    total = len(scenarios) * len(cfg.sizings) * len(cfg.directions)
    for name, override in scenarios.items():
        basket = build_basket(cfg, **(override or {}))
        for sizing in cfg.sizings:
            for direction in cfg.directions:
                t0 = time.perf_counter()
                trade = build_trade(cfg, sizing=sizing, direction=direction)
                res = _simulate(cfg, basket, trade)
                rho_real = float(basket.rho) if name == "calm" and basket.rho is not None else None
                rows.append({"scenario": name, "sizing": sizing, "direction": direction, **dsp.trade_summary(res.extras, res.stats, rho_real)})
                log.info("trade %d/%d %s %s %s: mean P&L %.5f (SE %.5f), ES95 loss %.5f (%.1fs)", len(rows), total,
                         name, sizing, direction, rows[-1]["pnl_mean"], rows[-1]["pnl_se"], rows[-1]["loss_es95"],
                         time.perf_counter() - t0)
    return pd.DataFrame(rows)


def attribution_path(cfg, scenario: dict, crash_mid_trade: bool):
    """The first lane's constituent path (the engine's own draws), or with ``crash_mid_trade``
    the first lane whose crash starts between 20% and 60% of the way to expiry."""
    basket = build_basket(cfg, **scenario)
    n_steps = _n_steps(cfg)
    lanes = min(256, int(cfg.simulation.block_size), int(cfg.simulation.n_paths))
    sim = dsp.simulate_prices(basket, seed=int(cfg.seed), n_paths=lanes, n_steps=n_steps,
                              steps_per_year=float(cfg.steps_per_year), block_size=int(cfg.simulation.block_size))
    lane = 0
    if crash_mid_trade:
        first = np.where(sim["regime"].any(axis=1), sim["regime"].argmax(axis=1), n_steps)
        ok = np.flatnonzero((first > 0.2 * n_steps) & (first < 0.6 * n_steps))
        if ok.size == 0:
            return None
        lane = int(ok[0])
    table = dsp.attribution_table(basket, build_trade(cfg), sim["prices"][lane],
                                  steps_per_year=float(cfg.steps_per_year))
    table.insert(0, "crash_regime", sim["regime"][lane])
    table.insert(0, "lane", lane)
    return table


# --------------------------------------------------------------------------- plots


def _attribution_plot(table: pd.DataFrame, title: str):
    fig, axes = plt.subplots(3, 1, figsize=(9, 9), sharex=True)
    steps = table.index.to_numpy()
    crash = table["crash_regime"].to_numpy() == 1
    for ax in axes:
        if crash.any():
            ax.axvspan(steps[crash][0] - 0.5, steps[crash][-1] + 0.5, color="red", alpha=0.08, lw=0)
    axes[0].plot(steps, table["index"], color="k")
    axes[0].set_ylabel("index level")
    axes[0].set_title(title)
    for col, style in [("pnl", "k-"), ("index_own", "C0-"), ("correlation", "C1-"), ("legs_theta_gamma", "C2-"),
                       ("residual", "C3:"), ("seed_correlation", "C1--")]:
        label = "seed's correlation term (uncorrected)" if col == "seed_correlation" else col
        axes[1].plot(steps, 100 * table[col].cumsum(), style, label=label, lw=1.4 if col == "pnl" else 1.0)
    axes[1].axhline(0, color="grey", lw=0.5)
    axes[1].set_ylabel("cumulative P&L, % of index notional")
    axes[1].legend(fontsize=7, ncol=2)
    m = table["multiplier"].to_numpy()
    cum_real = np.cumsum(m * table["rho_realized"]) / np.cumsum(m)
    axes[2].plot(steps, table["rho_implied"], "C0-", label="implied average correlation (today's weights)")
    axes[2].plot(steps, cum_real, "C3-", label="realized since entry (multiplier-weighted)")
    axes[2].set_ylabel("average correlation")
    axes[2].set_xlabel("trading day")
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    return fig


def _spread_plot(points: pd.DataFrame, means: pd.DataFrame, sample: int, seed: int):
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    rng = np.random.default_rng(seed)
    pick = points.iloc[rng.permutation(len(points))[: min(sample, len(points))]]
    sc = axes[0].scatter(pick["spread"], 100 * pick["pnl"], c=pick["rho_real_config"], s=3, cmap="viridis", alpha=0.5)
    m = points["multiplier"].mean()
    x = np.linspace(points["spread"].quantile(0.001), points["spread"].quantile(0.999), 50)
    axes[0].plot(x, 100 * m * x, "r-", label=f"theory: P&L = M x spread (mean M = {m:.4f})")
    lo, hi = points["spread"].quantile(0.005), points["spread"].quantile(0.995)
    axes[0].set_xlim(lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo))
    axes[0].set_ylim(100 * points["pnl"].quantile(0.002), 100 * points["pnl"].quantile(0.998))
    axes[0].set_xlabel("implied - realized average correlation (per path; 99% of paths shown)")
    axes[0].set_ylabel("P&L, % of index notional")
    axes[0].legend(fontsize=8)
    fig.colorbar(sc, ax=axes[0], label="configured realized correlation")
    spread = means["rho_implied_mean"] - means["rho_real"]
    axes[1].errorbar(spread, 100 * means["pnl_mean"], yerr=200 * means["pnl_se"], fmt="o", label="mean P&L +-2 SE")
    axes[1].plot(spread, 100 * means["theory_mean"], "r-", label="(rho_implied - rho_real) x M")
    axes[1].set_xlabel("implied - configured realized correlation")
    axes[1].set_ylabel("mean P&L, % of index notional")
    axes[1].legend(fontsize=8)
    axes[1].axhline(0, color="grey", lw=0.5)
    fig.tight_layout()
    return fig


def _realized_plot(rc: pd.DataFrame, zooms: dict):
    fig = plt.figure(figsize=(12, 7))
    top = fig.add_subplot(2, 1, 1)
    top.plot(rc.index, rc["implied_style"], lw=0.8, label="average correlation (seed's formula, realized vols)")
    top.plot(rc.index, rc["pairwise"], lw=0.8, alpha=0.7, label="mean pairwise correlation")
    top.set_ylabel("63-day realized correlation")
    top.set_title("20 shipped S&P 500 stocks: realized average correlation")
    top.legend(fontsize=8)
    for i, (name, (a, b)) in enumerate(zooms.items()):
        ax = fig.add_subplot(2, len(zooms), len(zooms) + i + 1)
        z = rc.loc[a:b]
        ax.plot(z.index, z["implied_style"], lw=1)
        ax2 = ax.twinx()
        ax2.plot(z.index, z["index_vol"], "C3-", lw=0.8, alpha=0.7)
        ax2.set_ylabel("basket vol (annualized)", color="C3")
        ax.set_ylabel("average correlation")
        ax.set_title(name)
        ax.tick_params(axis="x", labelrotation=30, labelsize=7)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- entry point


def run(cfg: DictConfig, out_dir) -> dict:
    t_start = time.perf_counter()
    scenarios = check_config(cfg)
    out = OutputWriter(out_dir)

    prices = load_sp500_constituents()
    rc = dsp.rolling_correlation(prices, window=int(cfg.real.window))
    out.table("realized_corr.csv", rc.reset_index(names="date"))
    zooms = OmegaConf.to_container(cfg.real.zooms, resolve=True)
    out.figure("realized_corr.png", _realized_plot(rc, zooms))
    peaks = {name: {"max": float(rc.loc[a:b, "implied_style"].max()),
                    "date": str(rc.loc[a:b, "implied_style"].idxmax().date())} for name, (a, b) in zooms.items()}
    real = {"first": str(rc.index[0].date()), "last": str(rc.index[-1].date()), "window": int(cfg.real.window),
            "median": float(rc["implied_style"].median()), "peaks": peaks,
            "weights": "w_i = 1 / S_i(first day): equal initial cap weights drifting with prices (no shares shipped)"}
    log.info("real: median realized average correlation %.3f; peaks %s", real["median"], peaks)

    attribution = {}
    for name, scen, mid in (("calm", scenarios["calm"] or {}, False),
                            ("crash", {**(scenarios.get("crash_arrives") or {})}, True)):
        if name == "crash" and "crash_arrives" not in scenarios:
            continue
        table = attribution_path(cfg, scen, mid)
        if table is None:
            log.warning("no lane with a crash arriving mid-trade among the first 256: no crash attribution plot")
            continue
        out.table(f"attribution_{name}.csv", table.reset_index())
        title = (f"dispersion book on one simulated path ({name}, lane {int(table['lane'].iloc[0])}): "
                 f"short index vs long constituent straddles, {cfg.trade.sizing}-neutral")
        out.figure(f"attribution_{name}.png", _attribution_plot(table, title))
        attribution[name] = {"lane": int(table["lane"].iloc[0]),
                             **{k: float(table[k].sum()) for k in ["pnl", *TERMS, "seed_correlation", "seed_residual"]},
                             "closes_to": float((table["pnl"] - table.filter(like="net_").sum(axis=1)
                                                 - table["correlation"] - table["residual"]).abs().max())}

    means, points = run_spread(cfg)
    out.table("spread_means.csv", means)
    out.table("pnl_vs_spread.csv", points)
    out.figure("pnl_vs_spread.png", _spread_plot(points, means, 8000, int(cfg.seed)))

    trades = run_trades(cfg, scenarios)
    out.table("trades.csv", trades)

    summary = {
        "experiment": "dispersion",
        "seed": cfg.seed,
        "basket": OmegaConf.to_container(cfg.basket, resolve=True),
        "trade": OmegaConf.to_container(cfg.trade, resolve=True),
        "n_paths": int(cfg.simulation.n_paths),
        "n_steps": _n_steps(cfg),
        "spread": means.to_dict(orient="records"),
        "trades": trades.to_dict(orient="records"),
        "attribution": attribution,
        "real": real,
    }
    out.finish(summary, t_start)
    return summary


@hydra.main(version_base="1.3", config_path="../conf", config_name="dispersion")
def main(cfg: DictConfig) -> None:
    hydra_main(run, cfg)


if __name__ == "__main__":
    main()
