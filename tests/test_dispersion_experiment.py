"""The dispersion experiment end to end, small: one sizing, two scenarios."""

import subprocess
import sys

import pandas as pd

from tests.conftest import ROOT, run_multirun

TINY = ["sizings=[vega]", "directions=[short_index]", "~scenarios.crash", "spread_grid=[0.2,0.6]",
        "simulation.n_paths=512", "simulation.block_size=512"]


def test_dispersion_runs_end_to_end(tmp_path):
    summary = run_multirun("experiments.dispersion", TINY, tmp_path,
                           ["realized_corr.csv", "realized_corr.png", "attribution_calm.csv", "attribution_calm.png",
                            "spread_means.csv", "pnl_vs_spread.csv", "pnl_vs_spread.png", "trades.csv",
                            "summary.json"])[0]
    out = tmp_path / "0"
    att = pd.read_csv(out / "attribution_calm.csv")
    assert len(att) == 63 and {"pnl", "correlation", "residual", "seed_residual", "net_s0", "net_s19"} <= set(att)
    assert summary["attribution"]["calm"]["closes_to"] < 1e-12
    means = pd.read_csv(out / "spread_means.csv")
    assert list(means.rho_real) == [0.2, 0.6]
    assert (means.pnl_mean.diff().iloc[1:] < 0).all()  # more realized correlation, less P&L for the short index
    trades = pd.read_csv(out / "trades.csv")
    assert list(trades.scenario) == ["calm", "crash_arrives"]
    assert trades.pnl_mean.iloc[1] < trades.pnl_mean.iloc[0]  # the crash (correlation -> 1) hurts the short index
    assert trades.ruin_probability.iloc[0] == 0 and trades.ruin_probability.between(0, 1).all()
    assert summary["real"]["peaks"]["2020"]["date"].startswith("2020-03")


def test_dispersion_rejects_bad_config_before_work(tmp_path):
    for override, message in [("trade.sizing=delta", "sizing"),
                              ("basket.bogus=1", "bogus"),
                              ("trade.rho_implied=-0.9", "non-positive index variance"),
                              ("+scenarios.odd.rho=1.5", "Basket.rho"),
                              ("basket.shares=[1,2]", "mismatched lengths")]:
        cmd = [sys.executable, "-m", "experiments.dispersion", override, f"hydra.run.dir={tmp_path}"]
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert out.returncode != 0 and message in out.stderr, (override, out.stderr[-1500:])
        assert not (tmp_path / "realized_corr.csv").exists()
