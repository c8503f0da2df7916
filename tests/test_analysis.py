"""The analysis the experiments used to do themselves, now in the library, against
independent computations (numpy, pandas, hand-computed cases)."""

import math

import numpy as np
import pandas as pd
import pytest

from sim import dispersion, regime, stats
from sim.stats import NEVER, PathStats
from sim.validation import ParameterError


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


# --------------------------------------------------------------------------- moved out of the experiments


def test_binary_game_exact_against_brute_force_enumeration():
    import itertools

    p, up, down, n = 0.5, 0.5, -0.4, 10
    law = stats.binary_game_exact(p, up, down, n)
    outcomes = [(np.prod([1 + (up if h else down) for h in seq]), p ** sum(seq) * (1 - p) ** (n - sum(seq)))
                for seq in itertools.product([0, 1], repeat=n)]
    w = np.array([o[0] for o in outcomes])
    pr = np.array([o[1] for o in outcomes])
    assert law["mean_wealth"] == pytest.approx(float(w @ pr), rel=1e-12)
    assert law["fraction_below_1"] == pytest.approx(float(pr[w < 1].sum()), rel=1e-12)
    order = np.argsort(w, kind="stable")
    assert law["median_wealth"] == pytest.approx(w[order][np.searchsorted(np.cumsum(pr[order]), 0.5)], rel=1e-12)
    assert law["time_avg_growth_per_round"] == pytest.approx(math.log(0.9) / 2, rel=1e-12)
    sim = stats.simulated_game(np.log(w), n, law)  # every sequence once: an equal-weight sample
    assert sim["mean_wealth"] == pytest.approx(w.mean(), rel=1e-12)
    assert sim["fraction_below_1"] == pytest.approx((w < 1).mean(), abs=1e-15)
    assert sim["time_avg_growth_per_round"] == pytest.approx(np.log(w).mean() / n, rel=1e-12)


def test_wealth_fan_and_growth_histogram_against_numpy():
    from types import SimpleNamespace

    rng = np.random.default_rng(3)
    lw = rng.normal(0.0, 0.3, size=(4, 500))
    res = SimpleNamespace(snapshots=lw.astype(np.float32), snapshot_steps=np.array([5, 10, 15, 20]))
    fan = stats.wealth_fan(res, 5.0)
    assert list(fan["time"]) == [0.0, 1.0, 2.0, 3.0, 4.0] and (fan.iloc[0, 1:] == 1.0).all()
    x = lw.astype(np.float32).astype(np.float64)
    assert fan["mean_wealth"].iloc[1:].to_numpy() == pytest.approx(np.exp(x).mean(axis=1), rel=1e-10)
    assert fan["q25_wealth"].iloc[1:].to_numpy() == pytest.approx(np.exp(np.quantile(x, 0.25, axis=1)), rel=1e-12)
    g = np.concatenate([rng.standard_normal(999), [-np.inf]])
    h = stats.growth_histogram(g, "market", bins=20)
    counts, edges = np.histogram(g[:-1], bins=20)
    assert h["count"].tolist() == counts.tolist() and h["bin_left"].tolist() == edges[:-1].tolist()
    assert h["count"].sum() == 999 and set(h["part"]) == {"market"}


def test_strategy_metrics_against_a_direct_computation():
    from sim.engine import ConstantMix, simulate
    from sim.processes import StudentT

    kw = dict(seed=5, n_paths=512, n_steps=504, steps_per_year=252.0, snapshot_every=252, block_size=256)
    proc = StudentT(0.08, 0.2, 4.0)
    base = simulate(proc, policy=ConstantMix(1.0, 0.0, 0.0), **kw)
    lev = simulate(proc, policy=ConstantMix(2.0, 0.0, 0.0), **kw)
    m = stats.strategy_metrics(lev, base)
    lw = lev.stats.log_wealth.astype(np.float64)
    assert m["time_avg_growth"] == pytest.approx(lw.mean() / 2, rel=1e-6)
    ann = np.expm1(np.diff(np.concatenate([np.zeros((1, 512)), lev.snapshots.astype(np.float64)]), axis=0)).ravel()
    assert m["es99_annual"] == pytest.approx(stats.expected_shortfall(ann, 0.99), rel=1e-12)
    d = (lw - base.stats.log_wealth.astype(np.float64)) / 2
    assert m["growth_vs_unhedged"] == pytest.approx(d.mean(), rel=1e-9)
    assert m["growth_vs_unhedged_se"] == pytest.approx(d.std(ddof=1) / math.sqrt(512), rel=1e-9)
    assert m["paths_saved_by_hedge"] == 0.0 and m["n_paths"] == 512
    assert "premium_per_year" not in m and "growth_vs_unhedged" not in stats.strategy_metrics(base)


def test_surface_helpers():
    from sim import surface
    from sim.processes import StudentT

    assert surface.kelly_multiples([0.5, 1.0]).tolist() == [0.5, 1.0]
    assert surface.kelly_multiples({"start": 0.25, "stop": 2.0, "num": 8}).tolist() == pytest.approx(
        np.linspace(0.25, 2.0, 8).tolist())
    with pytest.raises(ParameterError, match="Kelly multiple"):
        surface.kelly_multiples([0.0, 1.0])
    ref = surface.reference_fractions(StudentT(0.08, 0.2, 4.0), "nu", [3.0, 6.0], 0.0)
    assert ref == pytest.approx([0.08 / 0.04, 0.08 / 0.04], rel=1e-6)  # annual moments are nu-free
    with pytest.raises(ParameterError, match="positive reference"):
        surface.reference_fractions(StudentT(0.01, 0.2, 4.0), "nu", [3.0], 0.05)
    assert surface.optimum_note(False, False, False) == surface.OPTIMUM_INTERIOR
    assert "pinned" in surface.optimum_note(True, False, True) and "half" not in surface.optimum_note(True, False, True)
    assert "edge of the grid" in surface.optimum_note(False, True, False)


def test_estimation_error_tables():
    from types import SimpleNamespace

    from sim import kelly

    true = SimpleNamespace(mu=0.06, sigma=0.2)
    obj = SimpleNamespace(values=lambda f: 0.06 * f - 0.5 * 0.04 * f**2)  # the Gaussian growth, exact
    d = kelly.estimation_error(true, 10.0, 4000, obj, np.random.default_rng(0))
    assert d["f_plug_in"].to_numpy() == pytest.approx(d["mu_hat"].to_numpy() / 0.04)
    assert d["mu_hat"].std() == pytest.approx(0.2 / math.sqrt(10.0), rel=0.05)
    assert d["growth_half"].to_numpy() == pytest.approx(obj.values(d["f_half"].to_numpy()))
    s = kelly.estimation_error_summary(d)
    # E[g(f_hat)] = g(f*) - sigma^2/2 Var(f_hat) = 0.045 - 0.02 * (1/0.04)^2 * 0.004 = 0.045 - 0.05
    assert s["plug_in_expected_growth"] == pytest.approx(0.045 - 0.05, abs=0.004)
    assert s["share_short_plug_in"] == pytest.approx((d.f_plug_in < 0).mean())


def test_hedge_studies():
    from types import SimpleNamespace

    from sim import hedge

    opt = SimpleNamespace(fraction=1.2, budget=0.01, strike=0.8, growth=0.05, growth_se=0.001, converged=True,
                          iterations=7, grid_check_gain=0.0)
    plain = SimpleNamespace(fraction=1.0, growth=0.04, converged=True)
    row = hedge.compare_optima(opt, plain, {"mean": 0.01, "mean_se": 0.002, "saved": 0.0, "lost": 0.0})
    assert row["status"] == "optimum" and row["hedge_raises_growth"] is True
    row = hedge.compare_optima(opt._replace(converged=False) if hasattr(opt, "_replace") else
                               SimpleNamespace(**{**vars(opt), "converged": False}), plain,
                               {"mean": 0.01, "mean_se": 0.002, "saved": 0.0, "lost": 0.0})
    assert row["status"].startswith("NOT CONVERGED") and math.isnan(row["hedge_raises_growth"])
    policies = pd.DataFrame({"model": ["m", "m", "m"], "policy": ["hold", "take", "protocol"],
                             "protocol_net_pnl_gain": [0.01, -0.01, 0.0], "protocol_net_pnl_gain_se": [0.001] * 3})
    says = hedge.protocol_verdicts(policies)
    assert says == ["m: the protocol beats hold on net hedge P&L (+1.000% of NAV per year, SE 0.100)",
                    "m: the protocol loses to take on net hedge P&L (-1.000% of NAV per year, SE 0.100)"]


def test_crash_day_pays_the_put_intrinsic_value_and_nothing_without_budget():
    import dataclasses

    from sim import hedge
    from sim.engine import ConstantMix

    plain = ConstantMix(1.0, 0.0, 0.0)
    prog = hedge.HedgeProgram(budget=0.02, strike=0.8)
    vm = hedge.ImpliedVolModel(source="model", long_run_vol=0.2)
    ov = hedge.HedgeOverlay(fraction=1.0, risk_free=0.0, program=prog, vol_model=vm, monetize=hedge.Hold())
    e = hedge.crash_day(plain, ov, drop=-0.3, premium_years=1.0, vol_before=0.2, vol_after=0.6,
                        steps_per_year=252.0)
    assert e["unhedged_day_return"] == pytest.approx(-0.3, abs=1e-6)
    assert e["hedge_gain_fraction_of_nav"] > 0 and e["premium_budgeted"] == pytest.approx(0.02)
    none = hedge.crash_day(plain, dataclasses.replace(ov, program=dataclasses.replace(prog, budget=0.0)), drop=-0.3,
                           premium_years=1.0, vol_before=0.2, vol_after=0.6, steps_per_year=252.0)
    assert none["hedge_gain_fraction_of_nav"] == pytest.approx(0.0, abs=1e-6) and math.isnan(none["payoff_over_premium"])
    with pytest.raises(ParameterError, match="event.drop"):
        hedge.crash_day(plain, ov, drop=0.1, premium_years=1.0, vol_before=0.2, vol_after=0.6, steps_per_year=252.0)


def test_stage_and_calm_tables_on_a_hand_made_history():
    dates = pd.bdate_range("2010-01-01", periods=600)
    price = np.concatenate([np.linspace(100, 120, 300), np.linspace(120, 80, 100), np.linspace(80, 110, 200)])
    state = np.zeros(600, int)
    state[320:340], state[340:380], state[380:420] = regime.CRASH, regime.PARTIAL, regime.EXIT
    frame = pd.DataFrame({"price": price, "state": state, "vix": 0.3, "vix_source": "VIX"}, index=dates)
    ev = regime.protocol_events(frame)
    assert ev["event"].tolist() == ["crash_detected", "partial", "full_exit", "rearmed"]
    assert ev["date"].tolist() == [dates[320], dates[340], dates[380], dates[420]]
    t = regime.stage_table(frame, {"w": (str(dates[300].date()), str(dates[450].date()))})
    assert t["trough_date"].iloc[0] == str(dates[399].date()) and t["peak_date"].iloc[0] == str(dates[299].date())
    assert t["days_from_trough"].tolist() == [320 - 399, 340 - 399, 380 - 399, 420 - 399]
    assert t["peak_to_trough"].iloc[0] == pytest.approx(80 / 120 - 1)
    assert t["price_vs_peak"].iloc[0] == pytest.approx(price[320] / 120 - 1)


def test_detector_inputs_from_the_shipped_data():
    from sim.data import detector_inputs, load_vix

    frame, stocks = detector_inputs("2014-01-01", "2016-12-31", halflife_days=10.0, vrp=0.03)
    assert stocks.shape == (len(frame), 20) and np.isnan(stocks[0]).all() and np.isfinite(stocks[5]).all()
    vix = load_vix().reindex(frame.index) / 100.0
    has = vix.notna().to_numpy()
    assert has.mean() > 0.9 and (frame["vix_source"].to_numpy()[has] == "VIX").all()
    assert frame["vix"].to_numpy()[has] == pytest.approx(vix.to_numpy()[has])
    assert frame["r"].iloc[0] == 0.0 and frame["x"].to_numpy() == pytest.approx(np.log(frame["price"].to_numpy()))
    assert frame["log_spread"].notna().mean() > 0.9  # the shipped OHLCV covers 1999-2018
    with pytest.raises(ParameterError, match="real.start..real.end"):
        detector_inputs("2014-01-01", "2014-03-01", halflife_days=10.0, vrp=0.03)


def test_dispersion_tables():
    table = pd.DataFrame({"lane": 3, "pnl": [0.3, -0.1], "index_own": [0.1, 0.0], "correlation": [0.1, -0.05],
                          "legs_theta_gamma": [0.05, -0.05], "residual": [0.05, 0.0], "uncorrected_correlation": [0.2, 0.0],
                          "uncorrected_residual": [0.0, 0.0], "net_a": [0.15, -0.05]})
    tot = dispersion.attribution_totals(table)
    assert tot["lane"] == 3 and tot["pnl"] == pytest.approx(0.2) and tot["correlation"] == pytest.approx(0.05)
    assert tot["closes_to"] == pytest.approx(0.0, abs=1e-12)
    pts = dispersion.spread_points({"rho_implied": np.array([0.5, 0.6]), "rho_realized": np.array([0.4, 0.7]),
                                    "pnl": np.array([1.0, 2.0]), "multiplier": np.array([1.0, 1.0]),
                                    "correlation": np.array([0.1, -0.1])}, 0.4)
    assert pts["spread"].to_numpy() == pytest.approx([0.1, -0.1]) and (pts["rho_real_config"] == 0.4).all()
    rc = pd.DataFrame({"implied_style": [0.2, 0.9, 0.3]}, index=pd.to_datetime(["2008-01-02", "2008-10-10", "2009-01-05"]))
    assert dispersion.correlation_peaks(rc, {"2008": ("2008-01-01", "2008-12-31")}) == {
        "2008": {"max": 0.9, "date": "2008-10-10"}}


def test_every_plot_draws_from_its_table():
    from types import SimpleNamespace

    from sim import plots

    figs = []
    res = SimpleNamespace(values=np.array([3.0, 5.0]), axis="nu", years=1.0, n_paths=10)
    grid = np.array([[0.1, 0.2, 0.3], [0.0, 0.1, 0.2]])
    figs.append(plots.surface_heatmap(res, grid, np.array([0.5, 1.0, 1.5]), "P", [0.1], "magma_r",
                                      dict(c=np.array([1.0, 1.5]), wipeout=np.array([True, False]),
                                           grid_edge=np.array([False, True]))))
    fan = pd.DataFrame({"time": [0, 1], "mean_wealth": [1, 2], **{f"q{q:02d}_wealth": [1, 1.5] for q in (5, 25, 50, 75, 95)}})
    figs.append(plots.wealth_fan(fan, np.zeros((3, 2)), 1.0, "t", "round"))
    curve = pd.DataFrame({"part": ["a"] * 3 + ["b"] * 3, "fraction": [0, 1, 2] * 2, "growth": [0, 0.1, -np.inf] * 2,
                          "growth_se": [0.01] * 6})
    figs.append(plots.kelly_growth_curves(curve, {"a": {"plug_in": 1.0}, "b": {"plug_in": 0.5}}))
    figs.append(plots.policy_pnl(pd.DataFrame({"model": ["m", "m"], "policy": ["hold", "p"],
                                               "net_pnl_per_year_mean": [0.0, 0.01],
                                               "net_pnl_per_year_mean_se": [0.001] * 2,
                                               "net_pnl_per_year_p5": [-0.01] * 2, "net_pnl_per_year_p95": [0.02] * 2})))
    figs.append(plots.drawdown_histograms({"m": {"unhedged": np.array([0.1, 0.5]), "hedged": np.array([0.1, 0.3])}},
                                          2.0))
    assert [len(f.axes) for f in figs] == [2, 1, 2, 1, 1]  # the heatmap has its colour bar
    assert figs[0].axes[0].get_ylabel() == "nu" and figs[3].axes[0].get_title() == "m"
    import matplotlib.pyplot as plt

    for f in figs:
        plt.close(f)
