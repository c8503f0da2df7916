"""The dispersion experiment end to end, small: one sizing, two scenarios."""

import os

import pandas as pd
import pytest

from tests.conftest import ROOT, job_dir, run_multirun

TINY = ["sizings=[vega]", "directions=[short_index]", "~scenarios.crash", "spread_grid=[0.2,0.6]",
        "simulation.n_paths=512", "simulation.block_size=512"]


def test_dispersion_runs_end_to_end(tmp_path):
    summary = run_multirun("experiments.dispersion", TINY, tmp_path,
                           ["realized_corr.csv", "realized_corr.png", "attribution_calm.csv", "attribution_calm.png",
                            "spread_means.csv", "pnl_vs_spread.csv", "pnl_vs_spread.png", "trades.csv",
                            "summary.json"])[0]
    out = job_dir(tmp_path, 0)
    att = pd.read_csv(out / "attribution_calm.csv")
    assert len(att) == 63 and {"pnl", "correlation", "residual", "uncorrected_residual", "net_s0", "net_s19"} <= set(att)
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
    from hydra import compose, initialize_config_dir
    from hydra.errors import ConfigCompositionException

    from experiments.dispersion import run
    from sim.validation import ParameterError

    with initialize_config_dir(config_dir=os.path.join(ROOT, "conf"), version_base="1.3"):
        with pytest.raises(ConfigCompositionException, match="bogus"):  # Hydra's struct mode
            compose("dispersion", overrides=["basket.bogus=1"])
        for override, message in [("trade.sizing=delta", "sizing"),
                                  ("trade.rho_implied=-0.9", "non-positive index variance"),
                                  ("+scenarios.odd.rho=1.5", "Basket.rho"),
                                  ("+scenarios.odd.bogus=1", "scenario: unknown key"),
                                  ("basket.shares=[1,2]", "mismatched lengths")]:
            cfg = compose("dispersion", overrides=[override])
            with pytest.raises(ParameterError, match=message):
                run(cfg, tmp_path / "out")
            assert not (tmp_path / "out").exists(), override  # nothing written: checked before any work
