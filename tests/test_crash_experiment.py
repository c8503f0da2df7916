"""The crash_protocol experiment end to end, small: the regime model, three policies."""

import os

import pandas as pd
import pytest

from tests.conftest import ROOT, job_dir, run_module, run_multirun

TINY = ["~process@models.merton", "~process@models.garch_t", "~monetize@monetize.profit_take",
        "~monetize@monetize.price_level",
        "simulation.n_paths=256", "simulation.years=2", "simulation.block_size=256", "simulation.bootstrap=20"]


def test_crash_protocol_runs_end_to_end(tmp_path):
    summary = run_multirun("experiments.crash_protocol", TINY, tmp_path,
                           ["real_stages.csv", "real_calm.csv", "real_signals.csv", "real_2008.png", "real_2020.png",
                            "mc_policies.csv", "mc_signals.csv", "mc_policies.png", "summary.json"])[0]
    out = job_dir(tmp_path, 0)
    stages = pd.read_csv(out / "real_stages.csv")
    crash08 = stages[stages.window == "2008"]
    assert crash08.trough_date.iloc[0] == "2009-03-09"  # the S&P 500's closing low
    assert (crash08.event == "entered CRASH (HODL)").any()
    signals = pd.read_csv(out / "real_signals.csv")
    assert len(signals) == 8313 and set(signals.label) == {0, 1, 2}
    pol = pd.read_csv(out / "mc_policies.csv")
    assert list(pol.policy) == ["hold", "protocol", "regime_oracle"]
    assert (pol.loc[pol.policy == "hold", "net_pnl_vs_hold"] == 0).all()
    sig = pd.read_csv(out / "mc_signals.csv")
    assert sig.episodes.iloc[0] > 0 and sig.false_alarm_rate.between(0, 1).all()
    assert summary["real"]["days_with_vix"] > 1000 and summary["real"]["days_with_spread"] > 4000
    assert summary["mc"]["verdicts"]


def test_crash_protocol_rejects_bad_config_before_work(tmp_path):
    """One bad value through the command line (one error line, nothing written); the others
    through the same checks in this process (composition, unknown keys, ``check``)."""
    from hydra import compose, initialize_config_dir

    from experiments import crash_protocol
    from lab.harness import check_known_keys

    out = run_module("experiments.crash_protocol", ["protocol.partial_fraction=1.5", f"hydra.run.dir={tmp_path}"])
    assert out.returncode == 2 and "protocol.partial_fraction" in out.stderr, out.stderr[-1500:]
    assert out.stderr.strip().splitlines()[-1].startswith("error: ")
    assert not (tmp_path / "mc_policies.csv").exists()
    with initialize_config_dir(config_dir=os.path.join(ROOT, "conf"), version_base="1.3"):
        for override, message in [("detector.bogus=1", "detector"),
                                  ("+monetize@monetize.guess=guess", "monetize/guess"),
                                  ("monetize.protocol.max_lag=0", "monetize.max_lag"),
                                  ("market.n_stocks=1", "Market.n_stocks")]:
            with pytest.raises(Exception) as err:
                cfg = compose("crash_protocol", overrides=[override])
                check_known_keys(cfg, "crash_protocol", [override])
                crash_protocol.check(cfg)
            assert message in str(err.value), (override, str(err.value)[-1500:])
