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
import math
import time

import hydra
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from experiments.harness import OutputWriter, build_process, hydra_main  # noqa: E402
from sim.engine import ConstantMix, SimResult, simulate  # noqa: E402
from sim.processes import Binary, Gaussian  # noqa: E402
from sim.validation import check_int  # noqa: E402

log = logging.getLogger(__name__)

_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def coin_exact(p: float, up: float, down: float, n_rounds: int) -> dict:
    """Exact laws of the coin game after ``n_rounds`` from the binomial distribution."""
    k = np.arange(n_rounds + 1)
    log_pmf = np.array(
        [math.lgamma(n_rounds + 1) - math.lgamma(i + 1) - math.lgamma(n_rounds - i + 1) for i in k]
    ) + k * _log(p) + (n_rounds - k) * _log(1 - p)
    pmf = np.exp(log_pmf)
    log_w = k * math.log1p(up) + (n_rounds - k) * math.log1p(down)
    order = np.argsort(log_w, kind="stable")
    cdf = np.cumsum(pmf[order])
    median_log_w = log_w[order][np.searchsorted(cdf, 0.5)]
    return {
        "ensemble_growth_per_round": math.log(p * (1 + up) + (1 - p) * (1 + down)),
        "time_avg_growth_per_round": p * math.log1p(up) + (1 - p) * math.log1p(down),
        "median_wealth": float(math.exp(median_log_w)),
        "fraction_below_1": float(pmf[log_w < 0].sum()),
        "mean_wealth": float((p * (1 + up) + (1 - p) * (1 + down)) ** n_rounds),
    }


def _log(x: float) -> float:
    return math.log(x) if x > 0 else -math.inf


def fan_table(result: SimResult, time_unit: float) -> pd.DataFrame:
    """Cross-sectional mean and quantiles of wealth at the snapshot times (plus t = 0)."""
    lw = result.snapshots.astype(np.float64)
    n = lw.shape[1]
    mean = np.exp(np.logaddexp.reduce(lw, axis=1) - math.log(n))
    q = np.exp(np.quantile(lw, _QUANTILES, axis=1))
    frame = pd.DataFrame({"time": result.snapshot_steps / time_unit, "mean_wealth": mean})
    for qi, row in zip(_QUANTILES, q):
        frame[f"q{round(qi * 100):02d}_wealth"] = row
    start = pd.DataFrame({c: [0.0 if c == "time" else 1.0] for c in frame.columns})
    return pd.concat([start, frame], ignore_index=True)


def _plot_fan(ax, fan: pd.DataFrame, recorded: np.ndarray, time_unit: float, title: str, exact_mean=None):
    t = fan["time"]
    ax.fill_between(t, fan["q05_wealth"], fan["q95_wealth"], alpha=0.15, color="C0", label="5-95% of paths")
    ax.fill_between(t, fan["q25_wealth"], fan["q75_wealth"], alpha=0.3, color="C0", label="25-75% of paths")
    ax.plot(t, fan["q50_wealth"], color="C0", lw=2, label="median path")
    ax.plot(t, fan["mean_wealth"], color="C3", lw=2, label="sample mean (ensemble)")
    if exact_mean is not None:
        ax.plot(t, exact_mean, color="k", ls="--", lw=1, label="expected wealth (exact)")
    steps = np.arange(recorded.shape[0]) / time_unit
    for i in range(recorded.shape[1]):
        ax.plot(steps, np.exp(recorded[:, i]), color="grey", lw=0.5, alpha=0.7)
    ax.set_yscale("log")
    ax.set_title(title)
    ax.set_ylabel("wealth (W0 = 1)")
    ax.legend(fontsize=8, loc="lower left")


def _histogram(growth: np.ndarray, bins: int = 80):
    finite = growth[np.isfinite(growth)]
    counts, edges = np.histogram(finite, bins=bins)
    return counts, edges


def _coin_part(cfg, coin, n_players: int, n_rounds: int, n_snap: int, engine: dict):
    """The coin game (one round is one time unit): the simulation, its fan, and its figures
    against the exact ones."""
    log.info("coin game: %d players x %d rounds", n_players, n_rounds)
    coin_res = simulate(
        coin, seed=cfg.seed, n_paths=n_players, n_steps=n_rounds, steps_per_year=1.0,
        snapshot_every=max(1, n_rounds // n_snap), **engine,
    )
    exact = coin_exact(cfg.coin.p, cfg.coin.up, cfg.coin.down, n_rounds)
    lw_coin = coin_res.stats.log_wealth.astype(np.float64)
    coin_fan = fan_table(coin_res, 1.0)
    coin_fan["expected_wealth_exact"] = np.exp(exact["ensemble_growth_per_round"] * coin_fan["time"])
    coin_summary = {
        "exact": exact,
        "simulated": {
            "median_wealth": float(np.exp(np.median(lw_coin))),
            "fraction_below_1": float((lw_coin < 0).mean()),
            "fraction_below_1_se": float(math.sqrt(exact["fraction_below_1"] * (1 - exact["fraction_below_1"]) / n_players)),
            "mean_wealth": float(np.exp(np.logaddexp.reduce(lw_coin) - math.log(n_players))),
            "time_avg_growth_per_round": float(lw_coin.mean() / n_rounds),
            "time_avg_growth_per_round_se": float(lw_coin.std(ddof=1) / n_rounds / math.sqrt(n_players)),
            "ensemble_growth_per_round": float((np.logaddexp.reduce(lw_coin) - math.log(n_players)) / n_rounds),
        },
    }

    return coin_res, coin_fan, coin_summary, lw_coin, exact


def _plot_histograms(out, hist: pd.DataFrame, coin_summary: dict, exact: dict, market_summary: dict) -> None:
    """Per-path growth rates of both parts, with the time and the ensemble average marked."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, (part, sub), (ta, ens, unit) in zip(
        axes,
        hist.groupby("part", sort=False),
        (
            (coin_summary["simulated"]["time_avg_growth_per_round"], exact["ensemble_growth_per_round"], "per round"),
            (market_summary["time_avg_growth"], market_summary["ensemble_growth"], "per year"),
        ),
    ):
        ax.bar(sub["bin_left"], sub["count"], width=sub["bin_right"] - sub["bin_left"], align="edge", color="C0", alpha=0.7)
        ax.axvline(ta, color="C0", lw=2, label=f"time average {ta:.4f}")
        ax.axvline(ens, color="C3", lw=2, label=f"ensemble {ens:.4f}")
        ax.set_title(f"{part}: per-path growth rate {unit}")
        ax.set_xlabel("log(W_T / W_0) / T")
        ax.legend(fontsize=8)
    out.figure("growth_histogram.png", fig)


def run(cfg: DictConfig, out_dir) -> dict:
    """Run the experiment described by ``cfg`` and write its outputs into ``out_dir``."""
    t_start = time.perf_counter()
    # Validate everything before any compilation.
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

    out = OutputWriter(out_dir)

    coin_res, coin_fan, coin_summary, lw_coin, exact = _coin_part(cfg, coin, n_players, n_rounds, n_snap, engine)

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
    mkt_fan = fan_table(mkt, steps_per_year)

    # Tables.
    out.table("coin_fan.csv", coin_fan)
    out.table("market_fan.csv", mkt_fan)
    hist_rows = []
    for part, growth in (("coin", lw_coin / n_rounds), ("market", mkt.stats.log_wealth.astype(np.float64) / mkt.years)):
        counts, edges = _histogram(growth)
        hist_rows.append(pd.DataFrame({"part": part, "bin_left": edges[:-1], "bin_right": edges[1:], "count": counts}))
    hist = pd.concat(hist_rows, ignore_index=True)
    out.table("growth_histogram.csv", hist)

    # Plots.
    fig, ax = plt.subplots(figsize=(8, 5))
    _plot_fan(ax, coin_fan, coin_res.recorded, 1.0, f"Coin game: {n_players} players, +{cfg.coin.up:.0%}/{cfg.coin.down:.0%}",
              exact_mean=coin_fan["expected_wealth_exact"])
    ax.set_xlabel("round")
    out.figure("coin_fan.png", fig)
    fig, ax = plt.subplots(figsize=(8, 5))
    _plot_fan(ax, mkt_fan, mkt.recorded, steps_per_year, f"{type(process).__name__}: {n_paths} paths")
    ax.set_xlabel("years")
    out.figure("market_fan.png", fig)
    _plot_histograms(out, hist, coin_summary, exact, market_summary)

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
