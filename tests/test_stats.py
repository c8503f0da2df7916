"""Statistics on a user's returns matrix against an independent numpy computation."""

import math

import numpy as np

from sim.stats import NEVER, expected_shortfall, path_stats_from_returns, summarize, value_at_risk


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
