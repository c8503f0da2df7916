"""sim.regime: the seed's detector reproduced exactly, the protocol's state machine on
hand-built paths, the constituents' correlation, and the roll-down accounting."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from sim import data
from sim.market import Market, factor_correlation
from sim.processes import RegimeSwitching
from sim.regime import (ARMED, CRASH, EXIT, LABEL_NAMES, PARTIAL, Detector, Protocol, Signals, corwin_schultz_spread,
                        ewm_init, ewm_update, run_detector, span_alpha)
from sim.validation import ParameterError
from tests.crash_reference import CrashPhysicsDetector, reference_labels


def _jax_labels(price: pd.Series, vvix: pd.Series, window=5):
    with jax.enable_x64(True):
        out = run_detector(Detector(span=window), Protocol(), x=price.to_numpy(), vix=np.full(len(price), 0.2),
                           r=np.zeros(len(price)), dt=1 / 252, vvix=vvix.to_numpy())
    return out, [LABEL_NAMES[i] for i in out["label"]]


def test_ewm_equals_pandas_bit_for_bit():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(500).cumsum()
    x[[0, 1, 7, 100, 101, 102, 300]] = np.nan  # leading and inner gaps
    x[200:210] = 3.0  # a constant stretch (pandas skips the update when mean == x)
    for span in (2, 5, 20):
        expected = pd.Series(x).ewm(span=span).mean().to_numpy()
        with jax.enable_x64(True):
            def body(e, xi):
                e = ewm_update(e, xi, span_alpha(span, jnp.float64))
                return e, e.mean
            got = np.asarray(jax.lax.scan(body, ewm_init((), jnp.float64), jnp.asarray(x))[1])
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("window", [5, 10])
def test_labels_equal_the_seed_reference_on_the_vix_span(window):
    """S&P 500 on the days the shipped VIX covers; VVIX proxy = realized vol of VIX."""
    vix = data.load_vix()
    spx = data.load_sp500_index().reindex(vix.index).dropna()
    vix = vix.reindex(spx.index)
    vvix = np.sqrt((np.log(vix).diff() ** 2).ewm(span=20).mean() * 252)
    expected = reference_labels(spx, vvix, window)
    out, got = _jax_labels(spx, vvix, window)
    assert len(got) == len(expected) == len(spx) > 1200
    mismatch = [i for i, (a, b) in enumerate(zip(got, expected)) if a != b]
    assert not mismatch, f"{len(mismatch)} days differ, first {spx.index[mismatch[0]].date()}"
    # and the kinematics themselves, bit for bit
    vel, acc, jerk = CrashPhysicsDetector(spx, vvix, window).calculate_kinematics()
    np.testing.assert_array_equal(out["velocity"], vel.to_numpy())
    np.testing.assert_array_equal(out["acceleration"], acc.to_numpy())
    np.testing.assert_array_equal(out["jerk"], jerk.to_numpy())
    counts = pd.Series(got).value_counts()
    assert set(counts.index) == set(LABEL_NAMES)  # all three labels occur: the test has teeth


def test_labels_equal_the_seed_reference_1990_2022():
    """The whole shipped index (8313 days) with a VVIX proxy from the index's own vol."""
    spx = data.load_sp500_index()
    vol = np.sqrt((np.log(spx).diff() ** 2).ewm(span=10).mean() * 252)
    vvix = np.sqrt((np.log(vol).diff() ** 2).ewm(span=20).mean() * 252)
    expected = reference_labels(spx, vvix)
    _, got = _jax_labels(spx, vvix)
    assert got == expected


def _signals(n, **kw):
    base = dict(velocity=-1.0, acceleration=-1.0, jerk=0.0, vix=0.3, vix_slope=1.0, vvix=1.0, vvix_slope=1.0,
                liquidity_z=0.0, liquidity_slope=0.0, correlation=0.5, correlation_slope=0.0, dispersion=0.0,
                realized_vol=0.2)
    base.update(kw)
    return Signals(**{k: jnp.full((n,), v, jnp.float32) for k, v in base.items()})


CALM = dict(velocity=0.1, acceleration=0.0, vix_slope=-0.1, vvix_slope=-0.1, liquidity_slope=-0.1)
FALLING = dict(velocity=-1.0, acceleration=-1.0, vix_slope=1.0, vvix_slope=1.0, liquidity_z=1.0, liquidity_slope=1.0)
TURNING = dict(velocity=-0.5, acceleration=0.5, vix_slope=-1.0, vvix_slope=-1.0, liquidity_z=0.3,
               liquidity_slope=-0.1, correlation_slope=-0.1)
REBOUND = dict(velocity=0.5, acceleration=0.1, vix_slope=-1.0, vvix_slope=-1.0, liquidity_z=0.1,
               liquidity_slope=-0.1, realized_vol=0.5, vix=0.3)


def _run(protocol, path):
    """``path``: list of (log price, signal overrides); returns the states and actions."""
    p = protocol.init(jnp.zeros((1,)))
    states, actions = [], []
    for x, kw in path:
        p = protocol.update(p, _signals(1, **kw), jnp.full((1,), x))
        states.append(int(p.state[0]))
        actions.append(int(p.action[0]))
    return states, actions


def test_protocol_full_cycle_on_a_hand_built_crash():
    path = [(0.0, CALM), (0.05, CALM),  # new peak 0.05
            (0.0, FALLING),  # drawdown 4.9%: not yet a crash
            (-0.1, FALLING),  # 14%: CRASH (HODL)
            (-0.2, FALLING), (-0.25, FALLING),  # still accelerating: hold
            (-0.3, dict(TURNING, liquidity_z=0.8)),  # converging but liquidity still broken: hold
            (-0.3, TURNING),  # phase transition: PARTIAL, action 1
            (-0.28, TURNING),  # no reversal yet (rebound < 5%)
            (-0.22, dict(REBOUND, realized_vol=0.2)),  # reversal but realized vol < implied: wait
            (-0.2, REBOUND),  # V reversal, depth normal, RV > IV: FULL EXIT, action 2
            (-0.1, REBOUND), (0.02, CALM)]  # drawdown back under 5%: re-armed
    states, actions = _run(Protocol(), path)
    assert states == [ARMED, ARMED, ARMED, CRASH, CRASH, CRASH, CRASH, PARTIAL, PARTIAL, PARTIAL, EXIT, EXIT, ARMED]
    assert actions == [0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 2, 0, 0]


def test_protocol_crash_that_fizzles_rearms_without_selling():
    path = [(0.0, CALM), (-0.12, FALLING), (-0.11, FALLING), (-0.02, CALM), (0.01, CALM)]
    states, actions = _run(Protocol(), path)
    assert states == [ARMED, CRASH, CRASH, ARMED, ARMED] and not any(actions)


def test_protocol_signal_families_can_be_switched_off():
    # A drawdown with no HODL signal of the families in use never enters CRASH.
    quiet = dict(velocity=-1.0, acceleration=0.5, vix_slope=1.0, vvix_slope=1.0, liquidity_z=1.0)
    states, _ = _run(Protocol(signals=("kinematics",)), [(0.0, CALM), (-0.2, quiet), (-0.3, quiet)])
    assert states == [ARMED, ARMED, ARMED]
    states, _ = _run(Protocol(signals=("vol_of_vol",)), [(0.0, CALM), (-0.2, quiet)])
    assert states == [ARMED, CRASH]
    # NaN inputs (no spread data) are neutral: the phase transition still fires.
    nan_liq = dict(TURNING, liquidity_z=math.nan, liquidity_slope=math.nan)
    states, actions = _run(Protocol(), [(0.0, CALM), (-0.2, FALLING), (-0.3, nan_liq)])
    assert states == [ARMED, CRASH, PARTIAL] and actions[-1] == 1


@pytest.mark.parametrize("kw", [dict(crash_drawdown=0.0), dict(rearm_drawdown=0.2), dict(partial_fraction=1.5),
                                dict(reinvest=-0.1), dict(signals=("momentum",)), dict(signals=())])
def test_protocol_bad_parameters(kw):
    with pytest.raises(ParameterError, match="protocol"):
        Protocol(**kw).validate()


def test_corwin_schultz_hand_example():
    high = np.array([101.0, 102.0])
    low = np.array([99.0, 100.0])
    b = math.log(101 / 99) ** 2 + math.log(102 / 100) ** 2
    g = math.log(102 / 99) ** 2
    k = 3 - 2 * math.sqrt(2)
    a = (math.sqrt(2 * b) - math.sqrt(b)) / k - math.sqrt(g / k)
    s = corwin_schultz_spread(high, low)
    assert math.isnan(s[0]) and s[1] == pytest.approx(max(2 * (math.exp(a) - 1) / (1 + math.exp(a)), 0.0), abs=1e-15)


def test_market_correlation_matches_the_factor_model():
    """Calm regime only (no switching): realized pairwise correlation of the constituents
    within 3 standard errors of the configured one-factor correlation."""
    base = RegimeSwitching(rate_to_crash=0.0, mu_calm=0.0, sigma_calm=0.2, nu_calm=6.0)
    m = Market(base=base, n_stocks=4, idio_vol=0.2, constituents="paths")
    dt, n, T = 1 / 252, 4096, 60
    key = jax.random.PRNGKey(3)
    state = m.init(key, n, dt)

    def body(state, t):
        state, r = m.step(jax.random.fold_in(key, t), state, n, dt)
        return state, state.stocks

    _, stocks = jax.lax.scan(body, state, jnp.arange(T))
    x = np.asarray(stocks, np.float64)  # [T, n, 4]
    iu = np.triu_indices(4, 1)
    realized = np.corrcoef(x.reshape(-1, 4), rowvar=False)
    # standard error from 32 independent groups of paths (fat tails inflate the iid formula)
    groups = np.stack([np.corrcoef(g.reshape(-1, 4), rowvar=False)[iu] for g in np.split(x, 32, axis=1)])
    se = groups.std(axis=0, ddof=1) / math.sqrt(32)
    target = factor_correlation(np.asarray(m.betas()), 0.2, 0.2)
    assert np.all(np.abs(realized[iu] - target[iu]) < 3 * se), (realized[iu], target[iu], se)
    # and the correlation rises with the index vol (the crash regime): at 45% vol
    assert factor_correlation(np.asarray(m.betas()), 0.45, 0.2)[iu].min() > target[iu].max()


@pytest.mark.parametrize("n_stocks", [2, 7, 10, 13])
def test_market_sums_mode_draws_the_exact_sums(n_stocks):
    """With the index flat, sum eps^2 must be chi2(N) and sum eps N(0, N) (scipy KS tests),
    and with the index moving, the equal-vol average correlation of the factor model."""
    from scipy import stats as st

    dt, n = 1 / 252, 20000
    e = 0.2 * math.sqrt(dt)
    flat = Market(base=RegimeSwitching(rate_to_crash=0.0, mu_calm=0.0, sigma_calm=0.0), n_stocks=n_stocks,
                  idio_vol=0.2)
    key = jax.random.PRNGKey(5)
    s = flat.step(key, flat.init(key, n, dt), n, dt)[0]
    s1, s2 = np.asarray(s.stock_sum, np.float64) / e, np.asarray(s.stock_sumsq, np.float64) / e**2
    assert st.kstest(s2, st.chi2(n_stocks).cdf).pvalue > 1e-3
    assert st.kstest(s1 / math.sqrt(n_stocks), st.norm.cdf).pvalue > 1e-3
    # Index moving (Gaussian, 20%): E[(sum r)^2] - E[sum r^2] over (N - 1) E[sum r^2].
    m = Market(base=RegimeSwitching(rate_to_crash=0.0, mu_calm=0.0, sigma_calm=0.2, nu_calm=1e6), n_stocks=n_stocks,
               idio_vol=0.2)
    draws = [m.step(jax.random.fold_in(key, t), m.init(key, n, dt), n, dt)[0] for t in range(8)]
    m1 = np.concatenate([np.asarray(d.stock_sum, np.float64) for d in draws])
    m2 = np.concatenate([np.asarray(d.stock_sumsq, np.float64) for d in draws])
    b = np.asarray(m.betas(), np.float64)
    cov = np.outer(b, b) * 0.04 * dt + np.eye(n_stocks) * e**2
    target = (cov.sum() - np.trace(cov)) / ((n_stocks - 1) * np.trace(cov))
    groups = [(g1**2).mean() - g2.mean() for g1, g2 in zip(np.split(m1, 16), np.split(m2, 16))]
    est = ((m1**2).mean() - m2.mean()) / ((n_stocks - 1) * m2.mean())
    se = np.std(groups, ddof=1) / math.sqrt(16) / ((n_stocks - 1) * m2.mean())
    assert abs(est - target) < 3 * se, (est, target, se)
    assert np.mean(m2) == pytest.approx(np.trace(cov), rel=0.02)


def test_market_correlation_n20_within_three_standard_errors():
    """N = 20 constituents (Student-t idiosyncratic shocks, calm regime): the average
    realized pairwise correlation is within 3 SE of the configured factor-model average."""
    base = RegimeSwitching(rate_to_crash=0.0, mu_calm=0.0, sigma_calm=0.18, nu_calm=6.0)
    m = Market(base=base, n_stocks=20, idio_vol=0.25, constituents="paths")
    dt, n, T = 1 / 252, 2048, 40
    key = jax.random.PRNGKey(11)

    def body(state, t):
        state, _ = m.step(jax.random.fold_in(key, t), state, n, dt)
        return state, state.stocks

    x = np.asarray(jax.lax.scan(body, m.init(key, n, dt), jnp.arange(T))[1], np.float64)
    iu = np.triu_indices(20, 1)
    avg = lambda a: np.corrcoef(a.reshape(-1, 20), rowvar=False)[iu].mean()  # noqa: E731
    groups = np.array([avg(g) for g in np.split(x, 32, axis=1)])
    target = factor_correlation(np.asarray(m.betas()), 0.18, 0.25)[iu].mean()
    se = groups.std(ddof=1) / math.sqrt(32)
    assert abs(avg(x) - target) < 3 * se, (avg(x), target, se)


def test_correlated_normals_multiply_the_cholesky_factor_on_the_right_side():
    from sim.market import correlated_normals

    corr = np.array([[1.0, 0.8, 0.1], [0.8, 1.0, 0.5], [0.1, 0.5, 1.0]])
    z = np.asarray(correlated_normals(jax.random.PRNGKey(2), 400_000, corr), np.float64)
    realized = np.corrcoef(z, rowvar=False)
    np.testing.assert_allclose(realized, corr, atol=0.006)  # SE of a correlation here: < 0.0016
    L = np.linalg.cholesky(corr)
    wrong = L.T @ L  # what z @ L (the wrong side) would produce
    wrong = wrong / np.sqrt(np.outer(np.diag(wrong), np.diag(wrong)))
    assert np.abs(wrong - corr).max() > 0.1  # the bug is detectable by this test
    with pytest.raises(ParameterError, match="positive semi-definite"):
        correlated_normals(jax.random.PRNGKey(2), 10, [[1.0, 0.9, -0.9], [0.9, 1.0, 0.9], [-0.9, 0.9, 1.0]])


def test_market_bad_input():
    with pytest.raises(ParameterError, match="Market.n_stocks"):
        Market(base=RegimeSwitching(), n_stocks=1).validate(1 / 252)
    with pytest.raises(ParameterError, match="Market.beta_hi"):
        Market(base=RegimeSwitching(), beta_lo=1.0, beta_hi=0.5).validate(1 / 252)
    with pytest.raises(ParameterError, match="Market.base"):
        Market().validate(1 / 252)
    with pytest.raises(ParameterError, match="Market.constituents"):
        Market(base=RegimeSwitching(), constituents="all").validate(1 / 252)


def test_protocol_in_the_overlay_trades_at_marks_and_locks_cash():
    """A hand-built crash replayed through the hedge overlay. With zero trading costs the
    partial sale and roll down happen at the marks, so the NAV on the action day equals
    the hold-to-expiry NAV and first differs the day after; in the rebound the protocol,
    having locked cash, ends above hold."""
    from sim import engine, hedge, processes
    from sim.regime import CrashProtocol

    crash = [-0.005, -0.01, -0.02, -0.03, -0.04, -0.04, -0.03, -0.02, -0.01, -0.005, -0.002]
    r = np.concatenate([np.zeros(60), crash, np.full(30, 0.01)]).astype(np.float32)
    flat = hedge.ImpliedVolModel(source="constant", vrp=0.0, skew=0.0, mean_reversion=0.0, long_run_vol=0.2)
    prog = hedge.HedgeProgram.from_years(budget=0.2, strike=0.95, tenor_years=1.0, roll_years=100 / 252)
    protocol = Protocol(signals=("kinematics",), crash_drawdown=0.08)
    navs, extras = {}, {}
    for name, mon in (("hold", hedge.Hold()), ("protocol", CrashProtocol(protocol=protocol))):
        ov = hedge.HedgeOverlay(fraction=1.0, program=prog, vol_model=flat, monetize=mon)
        res = engine.simulate(processes.Replay(r), policy=ov, n_paths=1, n_steps=len(r), block_size=1,
                              record_paths=1)
        navs[name] = np.exp(res.recorded[:, 0].astype(np.float64))
        extras[name] = res.extras
    x = np.log(np.cumprod(1 + r, dtype=np.float32))  # the overlay's spot, in float32 as there
    ref = run_detector(Detector(), protocol, x=x, vix=np.full(len(r), 0.2), r=r, dt=1 / 252, dtype=jnp.float32)
    acts = np.flatnonzero(ref["action"] > 0)
    assert ref["action"][acts[0]] == 1 and 60 < acts[0] < 80  # the partial sale, after the turn
    first_diff = np.flatnonzero(np.abs(navs["protocol"] / navs["hold"] - 1) > 1e-6)[0]
    # ref[i] is step i + 1; recorded[j] is the NAV after step j (recorded[0] = W_0): the NAV
    # is the same after the action step acts[0] + 1 and differs from the next step on.
    assert first_diff == acts[0] + 2
    assert extras["protocol"]["sales"][0] >= 1 and extras["hold"]["sales"][0] == 0
    assert extras["protocol"]["premium"][0] > extras["hold"]["premium"][0]  # the roll-down purchase
    assert navs["protocol"][-1] > navs["hold"][-1]


def test_protocol_rearms_after_a_full_exit_and_sees_a_second_leg():
    """2008 after 2007-08: a full exit far below the old peak re-arms after rearm_days with
    the peak reset, so a second 10% leg down is a new crash."""
    protocol = Protocol(rearm_days=3)
    path = [(0.0, CALM), (-0.15, FALLING), (-0.2, TURNING), (-0.14, REBOUND),  # crash, partial, exit
            (-0.13, CALM), (-0.13, CALM), (-0.12, CALM),  # three days in EXIT: re-armed, peak = -0.12
            (-0.2, FALLING), (-0.26, FALLING)]  # 7.7% below the new peak: not yet; 13%: CRASH again
    states, actions = _run(protocol, path)
    assert states == [ARMED, CRASH, PARTIAL, EXIT, EXIT, EXIT, ARMED, ARMED, CRASH]
    assert actions == [0, 0, 1, 2, 0, 0, 0, 0, 0]
