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
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from lab.harness import OutputWriter, check_fields, hydra_main, instantiate
from sim import dispersion as dsp
from sim import engine, plots
from sim.data import load_sp500_constituents
from sim.market import Basket
from sim.validation import ParameterError, check_int, check_range

log = logging.getLogger(__name__)


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


def check(cfg) -> dict:
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
        points.append(dsp.spread_points(res.extras, float(rho)))
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


# --------------------------------------------------------------------------- entry point


def run(cfg: DictConfig, out_dir) -> dict:
    t_start = time.perf_counter()
    scenarios = check(cfg)
    out = OutputWriter(out_dir, plots=cfg.plots)

    prices = load_sp500_constituents()
    rc = dsp.rolling_correlation(prices, window=int(cfg.real.window))
    out.table("realized_corr.csv", rc.reset_index(names="date"))
    zooms = OmegaConf.to_container(cfg.real.zooms, resolve=True)
    out.figure("realized_corr.png", lambda: plots.realized_correlation(rc, zooms))
    peaks = dsp.correlation_peaks(rc, zooms)
    real = {"first": str(rc.index[0].date()), "last": str(rc.index[-1].date()), "window": int(cfg.real.window),
            "median": float(rc["implied_style"].median()), "peaks": peaks,
            "weights": "w_i = 1 / S_i(first day): equal initial cap weights drifting with prices (no shares shipped)"}
    log.info("real: median realized average correlation %.3f; peaks %s", real["median"], peaks)

    attribution = {}
    for name, scen, mid in (("calm", scenarios["calm"] or {}, False),
                            ("crash", {**(scenarios.get("crash_arrives") or {})}, True)):
        if name == "crash" and "crash_arrives" not in scenarios:
            continue
        table = dsp.attribution_path(build_basket(cfg, **scen), build_trade(cfg), seed=int(cfg.seed),
                                     n_steps=_n_steps(cfg), steps_per_year=float(cfg.steps_per_year),
                                     block_size=int(cfg.simulation.block_size), crash_mid_trade=mid,
                                     lanes=min(256, int(cfg.simulation.block_size), int(cfg.simulation.n_paths)))
        if table is None:
            log.warning("no lane with a crash arriving mid-trade among the first 256: no crash attribution plot")
            continue
        out.table(f"attribution_{name}.csv", table.reset_index())
        title = (f"dispersion book on one simulated path ({name}, lane {int(table['lane'].iloc[0])}): "
                 f"short index vs long constituent straddles, {cfg.trade.sizing}-neutral")
        out.figure(f"attribution_{name}.png", lambda: plots.attribution(table, title))
        attribution[name] = dsp.attribution_totals(table)

    means, points = run_spread(cfg)
    out.table("spread_means.csv", means)
    out.table("pnl_vs_spread.csv", points)
    out.figure("pnl_vs_spread.png", lambda: plots.pnl_vs_spread(points, means, 8000, int(cfg.seed)))

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
