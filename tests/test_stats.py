"""Statistics on a user's returns matrix against an independent numpy computation."""

import math

import numpy as np
import pytest

from sim.engine import path_stats_from_returns
from sim.stats import NEVER, expected_shortfall, summarize, value_at_risk


def test_summary_matches_numpy(rng):
    n, steps, spy = 4000, 250, 250.0
    r = rng.standard_t(4, size=(n, steps)) * 0.01 + 0.0004
    r[:, 0] = -0.05  # a first-period loss must count in the drawdown
    st = path_stats_from_returns(r)
    s = summarize(st, years=steps / spy, steps_per_year=spy)
    wealth = np.cumprod(1 + r, axis=1)
    peak = np.maximum.accumulate(np.concatenate([np.ones((n, 1)), wealth], axis=1), axis=1)[:, 1:]
    dd = (1 - wealth / peak).max(axis=1)
    years = steps / spy
    g = np.log(wealth[:, -1]) / years
    np.testing.assert_allclose(-np.expm1(-st.max_drawdown_log), dd, rtol=2e-4, atol=1e-6)
    assert np.all(dd >= 0.05 - 1e-6)
    assert math.isclose(s["time_avg_growth"], g.mean(), rel_tol=1e-4, abs_tol=1e-6)
    assert math.isclose(s["ensemble_growth"], np.log(wealth[:, -1].mean()) / years, rel_tol=1e-4, abs_tol=1e-6)
    assert math.isclose(s["median_wealth"], np.median(wealth[:, -1]), rel_tol=1e-4)
    sharpe = r.mean(axis=1) / r.std(axis=1, ddof=1) * math.sqrt(spy)
    assert math.isclose(s["sharpe_median"], np.median(sharpe), rel_tol=1e-3)
    cagr = wealth[:, -1] ** (1 / years) - 1
    assert math.isclose(s["cagr_median"], np.median(cagr), rel_tol=1e-4, abs_tol=1e-6)
    assert math.isclose(s["calmar_median"], np.median(cagr / dd), rel_tol=1e-3)
    horizon = wealth[:, -1] - 1
    srt = np.sort(horizon)
    assert math.isclose(s["var99"], -srt[int(np.ceil(0.01 * n)) - 1], rel_tol=1e-4)
    assert math.isclose(s["es99"], -srt[: int(np.ceil(0.01 * n))].mean(), rel_tol=1e-4)
    assert s["ruin_probability"] == 0.0


def test_var_es_small_example():
    x = np.array([-0.5, -0.2, -0.1, 0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    assert value_at_risk(x, 0.9) == 0.5
    assert math.isclose(expected_shortfall(x, 0.8), 0.35)


def test_ruin_in_returns_matrix():
    r = np.array([[0.1, -1.2, 0.5], [0.1, -0.5, -0.5], [0.0, 0.0, 0.0]])
    st = path_stats_from_returns(r, floor=0.3)
    assert list(st.ruin_step) == [2, 3, NEVER]
    assert np.isneginf(st.log_wealth[0])
    assert math.isclose(float(st.log_wealth[1]), math.log(1.1 * 0.5 * 0.5), rel_tol=1e-6)


def test_paired_difference_counts_saved_and_lost_paths_instead_of_dropping_them():
    from sim.stats import paired_difference

    ninf = -np.inf
    hedged = np.array([0.1, 0.2, 0.05, 0.0, ninf, ninf])
    plain = np.array([0.0, 0.1, ninf, ninf, 0.3, ninf])
    d = paired_difference(hedged, plain)
    assert d["saved"] == pytest.approx(2 / 6) and d["lost"] == pytest.approx(1 / 6)
    assert d["both_wiped"] == pytest.approx(1 / 6) and d["n_finite"] == 2 and d["n"] == 6
    assert d["mean"] == pytest.approx(0.1) and d["mean_se"] == pytest.approx(0.0, abs=1e-12)
    assert d["saved_se"] == pytest.approx(math.sqrt((1 / 3) * (2 / 3) / 6))


def test_summary_with_wiped_out_paths_says_so_and_has_no_nan_quantiles():
    from sim.engine import path_stats_from_returns
    from sim.stats import summarize

    x = np.full((10, 5), 0.01)
    x[:, 3] = -0.005  # a drawdown, so that every survivor has a Calmar ratio
    x[:3, 2] = -1.0  # three of ten paths wiped out
    s = summarize(path_stats_from_returns(x), years=1.0, steps_per_year=5.0)
    assert s["time_avg_growth"] == -np.inf and s["wipeout_probability"] == pytest.approx(0.3)
    g = math.log(1.01) * 4 + math.log(0.995)
    assert s["time_avg_growth_q01"] == -np.inf and s["time_avg_growth_q50"] == pytest.approx(g)
    assert s["time_avg_growth_q25"] == -np.inf  # interpolated between -inf and a value: -inf, not NaN
    for k, v in s.items():
        if isinstance(v, float):
            assert not math.isnan(v) or k.endswith("_se"), k
    assert s["time_avg_growth_mean_finite"] == pytest.approx(g)
    assert s["survival_share"] == pytest.approx(0.7)
    assert any("wiped out" in n for n in s["notes"]) and any("never ruined" in n for n in s["notes"])
    allruined = np.full((4, 3), -1.0)
    s = summarize(path_stats_from_returns(allruined), years=1.0, steps_per_year=3.0)
    assert s["survival_share"] == 0.0 and math.isnan(s["sharpe_median"])  # not a Sharpe beside ruin 1.0


def test_a_mean_growth_of_minus_infinity_says_why():
    from sim.stats import wiped_out_note

    assert wiped_out_note(0.0) == ""
    note = wiped_out_note(0.0164)
    assert note.startswith("1.6400% of paths are wiped out") and "-inf" in note
    assert wiped_out_note(0.0164, "see the median").endswith("; see the median")
