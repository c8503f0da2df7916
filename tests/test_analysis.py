"""The analysis the experiments used to do themselves, now in the library, against
independent computations (numpy, pandas, hand-computed cases)."""

import math

import numpy as np
import pandas as pd
import pytest

from sim import dispersion, regime, stats
from sim.stats import NEVER, PathStats


def test_describe_matches_numpy_and_its_bootstrap_se_is_about_right():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(4000)
    x[:7] = np.nan  # dropped, and counted out
    d = stats.describe(x, rng=np.random.default_rng(1), n_boot=400)
    fin = x[np.isfinite(x)]
    assert d["finite"] == 3993
    assert d["mean"] == pytest.approx(fin.mean(), abs=1e-15)
    assert d["mean_se"] == pytest.approx(fin.std(ddof=1) / math.sqrt(fin.size), rel=1e-12)
    assert [d["p5"], d["p50"], d["p95"]] == pytest.approx(list(np.percentile(fin, [5, 50, 95])), abs=1e-15)
    # The median of a normal sample has SE sqrt(pi / 2) / sqrt(n); the bootstrap's within 20%.
    assert d["p50_se"] == pytest.approx(math.sqrt(math.pi / 2) / math.sqrt(fin.size), rel=0.2)
    assert math.isnan(stats.describe(np.array([1.0, -np.inf]))["mean"])
    assert math.isnan(stats.describe(x)["p50_se"])  # no bootstrap asked for


def test_annual_returns_from_yearly_snapshots():
    snaps = np.log(np.array([[1.1, 0.5], [1.21, 0.25]]))  # two years, two paths
    got = stats.annual_returns(snaps)
    assert got == pytest.approx([0.1, -0.5, 0.1, -0.5], abs=1e-12)


def test_nav_metrics_on_a_hand_computed_series():
    dates = pd.bdate_range("2001-01-01", periods=505)  # two calendar years and a bit
    down = 1 / 1.01 - 1  # up 1%, then back to the level before
    r = np.tile([0.01, down], 252)
    nav = np.concatenate([[1.0], np.cumprod(1 + r)])
    m = stats.nav_metrics(nav, dates, steps_per_year=252.0, floor=0.5)
    assert m["cagr"] == pytest.approx(0.0, abs=1e-12) and m["time_avg_growth"] == pytest.approx(0.0, abs=1e-12)
    assert m["max_drawdown"] == pytest.approx(-down, rel=1e-9)  # each down day gives back the 1%
    assert m["volatility"] == pytest.approx(np.std(r, ddof=1) * math.sqrt(252), rel=1e-12)
    assert m["sharpe"] == pytest.approx(r.mean() / r.std(ddof=1) * math.sqrt(252), rel=1e-12)
    yearly = pd.Series(nav, index=dates).resample("YE").last()
    ann = np.concatenate([[yearly.iloc[0] - 1.0], yearly.pct_change().dropna().to_numpy()])
    assert m["worst_year"] == pytest.approx(ann.min(), abs=1e-15)
    assert m["es99_daily"] == pytest.approx(-down, rel=1e-9)  # the 6 worst days all lose 1/101
    assert not m["ruined"] and m["final_nav"] == nav[-1]
    assert stats.nav_metrics(np.array([1.0, 0.3, 0.4]), dates[:3], steps_per_year=252.0, floor=0.5)["ruined"]


def test_signal_lead_lag_from_the_protocols_outputs():
    n = 3
    out = {"episodes": np.array([2.0, 1.0, 1.0]), "calm_steps": np.array([100.0, 100.0, 50.0])}
    for name in regime.DIAGNOSED:
        out.update({f"{name}:detected": np.array([2.0, 1.0, 0.0]), f"{name}:lag_onset": np.array([4.0, 6.0, 0.0]),
                    f"{name}:lag_onset_sq": np.array([10.0, 36.0, 0.0]), f"{name}:lag_end": np.array([-2.0, 1.0, 0.0]),
                    f"{name}:lag_end_sq": np.array([2.0, 1.0, 0.0]), f"{name}:false_alarms": np.array([5.0, 0.0, 0.0])})
    rows = regime.signal_lead_lag(out, 252.0)
    assert [r["signal"] for r in rows] == list(regime.DIAGNOSED) and n == 3
    r = rows[0]
    assert r["episodes"] == 4 and r["detection_rate"] == 0.75
    # per-path sums of the lags (10 over 3 detections) and of their squares (46)
    assert r["lag_vs_onset_days"] == pytest.approx(10 / 3)
    assert r["lag_vs_onset_se"] == pytest.approx(math.sqrt((46 / 3 - (10 / 3) ** 2) / 3))
    assert r["false_alarm_rate"] == pytest.approx(5 / 250) and r["false_alarms_per_calm_year"] == pytest.approx(
        5 / 250 * 252)


def test_trade_summary_against_numpy():
    rng = np.random.default_rng(3)
    n = 5000
    pnl = rng.standard_t(4, n) * 0.01
    m = np.full(n, 0.02)
    rho_i = np.full(n, 0.45)
    rho_r = 0.3 + 0.05 * rng.standard_normal(n)
    out = {"pnl": pnl, "index_pnl": pnl * 0.5, "legs_pnl": pnl * 0.5, "index_own": pnl * 0.1, "correlation": pnl * 0.2,
           "legs_theta_gamma": pnl * 0.3, "residual": pnl * 0.4, "multiplier": m, "rho_implied": rho_i,
           "rho_realized": rho_r}
    dd_log = np.abs(rng.standard_normal(n)) * 0.1
    st = PathStats(np.zeros(n), np.zeros(n), dd_log, np.where(np.arange(n) < 50, 5, NEVER), np.zeros(n), np.zeros(n))
    row = dispersion.trade_summary(out, st, rho_real=0.3)
    assert row["pnl_mean"] == pytest.approx(pnl.mean(), abs=1e-15)
    worst = np.sort(-pnl)[-math.ceil(0.05 * n):]
    assert row["loss_es95"] == pytest.approx(worst.mean(), rel=1e-12)
    assert row["ruin_probability"] == pytest.approx(0.01)
    assert row["max_drawdown_median"] == pytest.approx(np.median(1 - np.exp(-dd_log)), rel=1e-12)
    theory = (rho_i - 0.3) * m
    assert row["theory_mean"] == pytest.approx(theory.mean()) and row["gap"] == pytest.approx((pnl - theory).mean())


def test_the_overlays_net_pnl_output_is_its_accounting():
    from sim import engine, hedge, processes

    ov = hedge.HedgeOverlay(program=hedge.HedgeProgram.from_years(budget=0.02, strike=0.9), monetize=hedge.ProfitTake(2.0))
    res = engine.simulate(processes.Merton(lam=2.0), policy=ov, seed=1, n_paths=512, n_steps=252, block_size=256)
    ex = {k: v.astype(np.float64) for k, v in res.extras.items()}
    expected = ex["proceeds"] + ex["hedge_value"] - ex["premium"] - ex["costs"]
    assert np.allclose(ex["net_pnl"], expected, rtol=0, atol=1e-6)
    assert ex["premium"].mean() == pytest.approx(0.02, rel=0.1)  # a year of a 2% budget
