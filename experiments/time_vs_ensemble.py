"""Time average vs ensemble average (seed 000 §2.2): Peters' coin game and a continuous model.

Part 1, the coin game: each round a player's wealth is multiplied by ``1 + up`` or
``1 + down`` on a fair coin (+50% / -40%). The ensemble average grows 5% a round, while the
time-average growth is ``(log 1.5 + log 0.6) / 2 = log 0.9 / 2 < 0``: the median player is
ruined slowly. Exact values come from the binomial distribution.

Part 2, a continuous model from ``conf/process`` (default: GBM with ``mu - sigma^2/2 < 0 <
mu``) held at a constant fraction: ensemble growth ``log(mean W_T) / T`` against the
time-average growth ``mean(log W_T) / T``.

Writes into the Hydra run directory: ``summary.json``, ``coin_fan.csv``, ``market_fan.csv``,
``growth_histogram.csv`` and the plots ``coin_fan.png``, ``market_fan.png``,
``growth_histogram.png``; Hydra saves the resolved config in ``.hydra/``.

    python -m experiments.time_vs_ensemble process=student_t process.nu=2.5 market.n_paths=1000000
"""

from __future__ import annotations

import logging
import time

import hydra
import numpy as np
import pandas as pd
from omegaconf import DictConfig

from lab.harness import OutputWriter, build_process, hydra_main
from sim import plots, stats
from sim.engine import ConstantMix, simulate
from sim.processes import Binary, Gaussian
from sim.validation import check_int

log = logging.getLogger(__name__)


def check(cfg: DictConfig):
    """Every parameter checked and every object built, before any compilation."""
    coin = Binary(p=cfg.coin.p, up=cfg.coin.up, down=cfg.coin.down)
    coin.validate(1.0)
    n_players = check_int("coin.n_players", cfg.coin.n_players, 1)
    n_rounds = check_int("coin.n_rounds", cfg.coin.n_rounds, 1)
    m = cfg.market
    steps_per_year = check_int("market.steps_per_year", m.steps_per_year, 1)
    n_steps = check_int("market.years * market.steps_per_year", round(m.years * steps_per_year), 1)
    n_paths = check_int("market.n_paths", m.n_paths, 1)
    process = build_process(cfg.process, steps_per_year=steps_per_year)
    policy = ConstantMix(fraction=m.fraction, risk_free=m.risk_free, floor=m.floor)
    policy.validate()
    n_snap = check_int("engine.n_snapshots", cfg.engine.n_snapshots, 1)
    engine = dict(block_size=cfg.engine.block_size, chunk_paths=cfg.engine.chunk_paths, record_paths=20)
    return coin, n_players, n_rounds, steps_per_year, n_steps, n_paths, process, policy, n_snap, engine


def run(cfg: DictConfig, out_dir) -> dict:
    """Run the experiment described by ``cfg`` and write its outputs into ``out_dir``."""
    t_start = time.perf_counter()
    coin, n_players, n_rounds, steps_per_year, n_steps, n_paths, process, policy, n_snap, engine = check(cfg)
    m = cfg.market
    out = OutputWriter(out_dir, plots=cfg.plots)

    # Part 1: the coin game (one round is one time unit), against its exact laws.
    log.info("coin game: %d players x %d rounds", n_players, n_rounds)
    coin_res = simulate(coin, seed=cfg.seed, n_paths=n_players, n_steps=n_rounds, steps_per_year=1.0,
                        snapshot_every=max(1, n_rounds // n_snap), **engine)
    exact = stats.binary_game_exact(cfg.coin.p, cfg.coin.up, cfg.coin.down, n_rounds)
    lw_coin = coin_res.stats.log_wealth.astype(np.float64)
    coin_fan = stats.wealth_fan(coin_res, 1.0)
    coin_fan["expected_wealth_exact"] = np.exp(exact["ensemble_growth_per_round"] * coin_fan["time"])
    coin_summary = {"exact": exact, "simulated": stats.simulated_game(lw_coin, n_rounds, exact)}

    # Part 2: the continuous model.
    log.info("%s: %d paths x %d steps", type(process).__name__, n_paths, n_steps)
    mkt = simulate(
        process, seed=cfg.seed + 1, n_paths=n_paths, n_steps=n_steps, steps_per_year=steps_per_year,
        policy=policy, snapshot_every=max(1, n_steps // n_snap), **engine,
    )
    market_summary = mkt.summary()
    if isinstance(process, Gaussian):
        mu, sigma, f = float(process.mu), float(process.sigma), float(m.fraction)
        market_summary["continuous_time_growth_theory"] = f * mu - 0.5 * (f * sigma) ** 2 + (1 - f) * float(m.risk_free)
    mkt_fan = stats.wealth_fan(mkt, steps_per_year)

    out.table("coin_fan.csv", coin_fan)
    out.table("market_fan.csv", mkt_fan)
    hist = pd.concat([stats.growth_histogram(lw_coin / n_rounds, "coin"),
                      stats.growth_histogram(mkt.stats.log_wealth.astype(np.float64) / mkt.years, "market")],
                     ignore_index=True)
    out.table("growth_histogram.csv", hist)

    out.figure("coin_fan.png", lambda: plots.wealth_fan(
        coin_fan, coin_res.recorded, 1.0, f"Coin game: {n_players} players, +{cfg.coin.up:.0%}/{cfg.coin.down:.0%}",
        "round", exact_mean=coin_fan["expected_wealth_exact"]))
    out.figure("market_fan.png", lambda: plots.wealth_fan(mkt_fan, mkt.recorded, steps_per_year,
                                                          f"{type(process).__name__}: {n_paths} paths", "years"))
    out.figure("growth_histogram.png", lambda: plots.growth_histograms(hist, (
        (coin_summary["simulated"]["time_avg_growth_per_round"], exact["ensemble_growth_per_round"], "per round"),
        (market_summary["time_avg_growth"], market_summary["ensemble_growth"], "per year"))))

    summary = {
        "experiment": "time_vs_ensemble",
        "seed": cfg.seed,
        "coin": coin_summary,
        "market": {"process": type(process).__name__, "n_steps": n_steps, **market_summary},
    }
    out.finish(summary, t_start)
    log.info(
        "coin: median %.4g (exact %.4g), below $1 %.4f (exact %.4f); market: time-average %.4f/yr, ensemble %.4f/yr",
        coin_summary["simulated"]["median_wealth"], exact["median_wealth"],
        coin_summary["simulated"]["fraction_below_1"], exact["fraction_below_1"],
        market_summary["time_avg_growth"], market_summary["ensemble_growth"],
    )
    return summary


@hydra.main(version_base="1.3", config_path="../conf", config_name="time_vs_ensemble")
def main(cfg: DictConfig) -> None:
    hydra_main(run, cfg)


if __name__ == "__main__":
    main()
