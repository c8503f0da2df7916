"""sim.dispersion: implied correlation two ways, a hand example, and an attribution that
closes at the Taylor rate (while the seed's uncorrected formula does not)."""

import math

import jax
import numpy as np
import pytest

from sim import dispersion as dsp
from sim import market
from sim.validation import ParameterError


def test_implied_correlation_formulas_agree_and_hand_example():
    # Hand computation: x = p sigma = (0.1, 0.09, 0.08); sum x^2 = 0.0245; (sum x)^2 = 0.0729;
    # rho = (0.2^2 - 0.0245) / (0.0729 - 0.0245) = 0.0155 / 0.0484 = 155 / 484.
    p, vols = [0.5, 0.3, 0.2], [0.2, 0.3, 0.4]
    assert dsp.implied_correlation_sums(0.2, p, vols) == pytest.approx(155 / 484, abs=1e-15)
    assert dsp.implied_correlation_pairs(0.2, p, vols) == pytest.approx(155 / 484, abs=1e-15)
    rng = np.random.default_rng(1)
    for n in (2, 5, 20, 100):
        p = rng.dirichlet(np.ones(n))
        vols = rng.uniform(0.1, 0.6, n)
        rho = rng.uniform(-0.2, 0.9)
        corr = np.full((n, n), rho)
        np.fill_diagonal(corr, 1.0)
        if np.linalg.eigvalsh(corr).min() < 0:
            continue
        index_vol = math.sqrt(dsp.index_variance(p, vols, corr))
        a, b = dsp.implied_correlation_pairs(index_vol, p, vols), dsp.implied_correlation_sums(index_vol, p, vols)
        assert abs(a - b) < 1e-12 and abs(a - rho) < 1e-12


def _rate(dts, values):
    return np.polyfit(np.log(dts), np.log(np.abs(values)), 1)[0]


DTS = np.array([1 / 252, 1 / 504, 1 / 1008, 1 / 2016, 1 / 4032])


@pytest.mark.parametrize("call", [False, True])
def test_single_option_attribution_closes_at_rate_three_halves(call):
    """At a fixed move of n = 1.7 standard deviations, the residual of eq. 16 is the Taylor
    remainder: it shrinks like dt^(3/2); theta-gamma like dt."""
    with jax.enable_x64(True):
        rows = [dsp.option_attribution(spot=100.0, spot_next=100.0 * (1 + 1.7 * 0.25 * math.sqrt(dt)), strike=95.0,
                                       expiry=0.5, vol=0.25, dt=dt, call=call) for dt in DTS]
    res = np.array([r["residual"] for r in rows])
    tg = np.array([r["theta_gamma"] for r in rows])
    assert 1.4 < _rate(DTS, res) < 1.6
    assert 0.95 < _rate(DTS, tg) < 1.05
    assert np.all(np.abs(res) < 0.05 * np.abs(tg))


def _index_case(dt, n_moves):
    shares = np.array([3.0, 1.0, 2.0, 5.0, 0.5])
    prices = np.array([50.0, 120.0, 80.0, 20.0, 300.0])
    vols = np.array([0.2, 0.3, 0.25, 0.4, 0.35])
    nxt = prices * (1 + n_moves * vols * math.sqrt(dt))
    return dsp.index_option_attribution(shares=shares, prices=prices, prices_next=nxt, vols=vols, rho=0.45,
                                        strike=float(shares @ prices) * 0.97, expiry=0.25, dt=dt)


def test_index_attribution_closes_and_the_seed_formula_does_not():
    n_moves = np.array([1.2, -0.4, 0.8, 2.0, -1.1])
    with jax.enable_x64(True):
        rows = [_index_case(dt, n_moves) for dt in DTS]
    r0 = rows[0]
    # n_I is exactly the weighted combination of the constituents' moves
    assert r0["n_index"] == pytest.approx(float((r0["weights"] * np.array([0.2, 0.3, 0.25, 0.4, 0.35]) * n_moves).sum())
                                          / r0["index_vol"], rel=1e-12)
    res = np.array([r["residual"] for r in rows])
    seed = np.array([r["uncorrected_residual"] for r in rows])
    assert 1.4 < _rate(DTS, res) < 1.6  # the corrected attribution: Taylor remainder only
    assert 0.95 < _rate(DTS, seed) < 1.05  # the seed's: an O(dt) error that does not vanish relative to theta
    for r in rows:
        assert r["uncorrected_gap"] == pytest.approx(r["dropped_term"], rel=1e-10)  # the gap is the dropped cross term
        theta_scale = abs(r["constituents"].sum() + r["correlation"])
        assert abs(r["uncorrected_gap"]) > 0.1 * theta_scale  # and it is not small


def test_realized_correlation_recovers_a_known_matrix():
    rng = np.random.default_rng(7)
    n, rho = 6, 0.35
    corr = np.full((n, n), rho)
    np.fill_diagonal(corr, 1.0)
    z = rng.standard_normal((200_000, n)) @ np.linalg.cholesky(corr).T
    r = z * rng.uniform(0.01, 0.03, n)
    out = dsp.realized_correlation(r)
    assert abs(out["pairwise"] - rho) < 0.01 and abs(out["implied_style"] - rho) < 0.01


def test_bad_input():
    with pytest.raises(ParameterError, match="index"):
        market.cap_weights([1.0, -2.0], [10.0, 10.0])
    with pytest.raises(ParameterError, match="mismatched lengths"):
        market.cap_weights([1.0, 2.0, 3.0], [10.0, 10.0])
    bad = np.array([[1.0, 0.9, -0.9], [0.9, 1.0, 0.9], [-0.9, 0.9, 1.0]])
    with pytest.raises(ParameterError, match="positive semi-definite"):
        dsp.index_variance([0.3, 0.3, 0.4], [0.2, 0.2, 0.2], bad)
    with pytest.raises(ParameterError, match="mismatched lengths"):
        dsp.index_variance([0.5, 0.5], [0.2, 0.2, 0.2], np.eye(3))
    with pytest.raises(ParameterError, match="NaN"):
        dsp.implied_correlation_sums(0.2, [0.5, np.nan], [0.2, 0.2])


def test_shipped_stocks_correlation_spikes_in_2008_and_2020():
    from sim import data

    rc = dsp.rolling_correlation(data.load_sp500_constituents(), window=63)
    calm = rc.loc["2017", "implied_style"].mean()
    assert 0.0 < calm < 0.3
    for crash in (slice("2008-10", "2008-12"), slice("2020-03", "2020-04")):
        assert rc.loc[crash, "implied_style"].mean() > 3 * calm
        assert rc.loc[crash, "pairwise"].mean() > 0.5
    assert rc["implied_style"].idxmax().strftime("%Y-%m") in ("2008-10", "2008-11", "2020-03", "2020-04")
    with pytest.raises(ParameterError, match="window"):
        dsp.rolling_correlation(data.load_sp500_constituents().iloc[:50], window=63)


BASKET = dict(vols=(0.2, 0.3, 0.25, 0.4), shares=(3.0, 1.0, 2.0, 5.0), prices0=(50.0, 120.0, 80.0, 20.0),
              rate_to_crash=0.0, start="calm")


@pytest.mark.parametrize("rho_real,sizing", [(0.2, "vega"), (0.6, "vega"), (0.2, "theta"), (0.6, "gamma")])
def test_dispersion_pnl_matches_the_correlation_spread(rho_real, sizing):
    """Short index straddle against long constituent straddles, delta-hedged daily over
    correlated Gaussian constituents whose realized vols equal the implied: mean P&L =
    (rho_implied - rho_real) x the multiplier, within 3 standard errors (rho_implied: the
    implied average correlation at each day's weights, 0.4 at entry)."""
    from sim import engine
    from sim.market import Basket

    basket = Basket(**BASKET, rho=rho_real, nu=float("inf"))
    trade = dsp.DispersionTrade(rho_implied=0.4, tenor=0.25, sizing=sizing)
    ex = engine.simulate(basket, policy=trade, n_paths=8000, n_steps=63, seed=3).extras
    pnl = ex["pnl"].astype(np.float64)
    predicted = (ex["rho_implied"] - rho_real) * ex["multiplier"].astype(np.float64)
    assert abs(ex["rho_implied"].mean() - 0.4) < 0.002
    d = pnl - predicted
    se = d.std(ddof=1) / math.sqrt(d.size)
    assert abs(d.mean()) < 3 * se, (pnl.mean(), predicted.mean(), se)
    assert abs(pnl.mean()) > 10 * pnl.std(ddof=1) / math.sqrt(pnl.size)  # the effect is resolved, not noise
    assert np.sign(pnl.mean()) == np.sign(0.4 - rho_real)
    # on every path the correlation term is M (rho_implied - rho_realized), and the rest is small
    np.testing.assert_allclose(ex["correlation"], ex["multiplier"] * (ex["rho_implied"] - ex["rho_realized"]),
                               atol=2e-6)
    assert abs(ex["residual"].mean()) < 0.01 * abs(pnl.mean())


def test_reverse_trade_and_attribution_table_agree_with_the_engine():
    from sim import engine
    from sim.market import Basket

    basket = Basket(**BASKET, rho=0.3, nu=5.0)
    short = dsp.DispersionTrade(rho_implied=0.45, tenor=0.25)
    long = dsp.DispersionTrade(rho_implied=0.45, tenor=0.25, direction="long_index")
    a = engine.simulate(basket, policy=short, n_paths=64, n_steps=63, seed=5, block_size=64).extras
    b = engine.simulate(basket, policy=long, n_paths=64, n_steps=63, seed=5, block_size=64).extras
    np.testing.assert_array_equal(a["pnl"], -b["pnl"])
    paths = dsp.simulate_prices(basket, seed=5, n_paths=2, n_steps=63, block_size=64)["prices"]
    for i in range(2):
        tab = dsp.attribution_table(basket, short, paths[i])
        assert len(tab) == 63
        # float64 table against the float32 kernel, path by path
        for k in ("pnl", "correlation", "index_own", "legs_theta_gamma", "multiplier"):
            assert tab[k].sum() == pytest.approx(float(a[k][i]), abs=2e-6), k
        # the combined book closes: per-constituent net terms + correlation + residual
        net = tab.filter(like="net_").sum(axis=1)
        np.testing.assert_allclose(net + tab["correlation"] + tab["residual"], tab["pnl"], rtol=0, atol=1e-15)
        # the residual is the small Taylor remainder; the seed's formula leaves the cross term
        assert tab["residual"].abs().sum() < 0.25 * tab["uncorrected_residual"].abs().sum()


def test_basket_realized_correlation_for_20_names_and_the_crash_regime():
    """N = 20 fat-tailed constituents: mean pairwise correlation of the simulated returns
    within 3 standard errors (batch means over 20 batches of paths) of the configured 0.3 in
    the calm regime and of 0.3 + 0.8 (1 - 0.3) = 0.86 in the crash regime; the index return is
    the cap-weighted constituent return with the weights drifting along the path."""
    from sim import engine
    from sim.market import Basket

    vols = tuple(np.linspace(0.15, 0.5, 20))
    for start, target in (("calm", 0.3), ("crash", 0.3 + 0.8 * 0.7)):
        b = Basket(vols=vols, rho=0.3, nu=5.0, crash_blend=0.8, rate_to_crash=0.0, rate_to_calm=0.0, start=start)
        np.testing.assert_allclose(b.correlation(start == "crash")[0, 1], target)
        p = dsp.simulate_prices(b, seed=11, n_paths=2000, n_steps=50, block_size=2000)["prices"]
        x = np.log(p[:, 1:] / p[:, :-1])
        iu = np.triu_indices(20, 1)
        means = [np.corrcoef(batch.reshape(-1, 20), rowvar=False)[iu].mean() for batch in np.split(x, 20)]
        se = np.std(means, ddof=1) / math.sqrt(len(means))
        assert abs(np.mean(means) - target) < 3 * se, (start, np.mean(means), target, se)
        assert se < 0.01
    # the index: I = sum w_i S_i, and the process's return is its return
    b = Basket(**BASKET, rho=0.3)
    p = dsp.simulate_prices(b, seed=2, n_paths=8, n_steps=30, block_size=8)["prices"]
    level = p @ np.array(BASKET["shares"])
    r = engine.sample_returns(b, seed=2, n_paths=8, n_steps=30, block_size=8)
    np.testing.assert_allclose(r, level[:, 1:] / level[:, :-1] - 1, rtol=0, atol=2e-6)


def test_basket_and_trade_bad_input():
    from sim import engine
    from sim.market import Basket
    from sim.processes import Gaussian

    bad = [
        (dict(vols=(0.2, 0.3), rho=0.3, shares=(1.0, 2.0, 3.0)), "mismatched lengths"),
        (dict(vols=(0.2, 0.3), rho=0.3, shares=(-1.0, 0.5)), "index"),
        (dict(vols=(0.2, 0.3), rho=0.3, loadings=((0.5,), (0.5,))), "exactly one"),
        (dict(vols=(0.2, 0.3), rho=None, loadings=((0.9, 0.6), (0.5, 0.1))), "squared norm"),
        (dict(vols=(0.2, -0.3), rho=0.3), "Basket.vols"),
        (dict(vols=(0.2, 0.3), rho=1.5), "Basket.rho"),
        (dict(vols=(0.2, 0.3), rho=0.3, start="boom"), "Basket.start"),
    ]
    for kw, match in bad:
        with pytest.raises(ParameterError, match=match):
            Basket(**kw).validate(1 / 252)
    b = Basket(vols=(0.2, 0.3, 0.4), rho=0.3)
    for trade, match, process in [
        (dsp.DispersionTrade(tenor=0.1), "longer than the straddles' tenor", b),
        (dsp.DispersionTrade(sizing="delta"), "sizing", b),
        (dsp.DispersionTrade(rho_implied=-0.9), "non-positive index variance", b),
        (dsp.DispersionTrade(), "needs a sim.market.Basket", Gaussian()),
    ]:
        with pytest.raises(ParameterError, match=match):
            engine.simulate(process, policy=trade, n_paths=4, n_steps=63)


def test_book_attribution_table_closes_at_the_taylor_rate():
    """The combined book's table (index straddle against constituent straddles) over one step
    at a fixed move in standard deviations: residual ~ dt^(3/2), the seed's ~ dt."""
    from sim.market import Basket

    basket = Basket(**BASKET, rho=0.3)
    vols = np.array(BASKET["vols"])
    moves = np.array([1.2, -0.4, 0.8, 2.0])
    res, seed = [], []
    for dt in DTS:
        s0 = np.array(BASKET["prices0"])
        path = np.stack([s0, s0 * (1 + moves * vols * math.sqrt(dt))])
        tab = dsp.attribution_table(basket, dsp.DispersionTrade(rho_implied=0.45, tenor=0.25), path,
                                    steps_per_year=1 / dt)
        res.append(tab["residual"].iloc[0])
        seed.append(tab["uncorrected_residual"].iloc[0])
    assert 1.4 < _rate(DTS, np.array(res)) < 1.6
    assert 0.95 < _rate(DTS, np.array(seed)) < 1.05


def test_book_kernel_terms_equal_the_double_sum_definition():
    """The book's O(N) index terms (``attribution_table``, a straddle = call + put, short, per
    unit of index level) equal ``index_option_attribution``'s double sums on the entry step."""
    from sim.market import Basket

    basket = Basket(**BASKET, rho=0.3)
    trade = dsp.DispersionTrade(rho_implied=0.45, tenor=0.25)
    s0 = np.array(BASKET["prices0"])
    s1 = s0 * (1 + np.array([0.011, -0.004, 0.02, -0.013]))
    level = float(np.array(BASKET["shares"]) @ s0)
    tab = dsp.attribution_table(basket, trade, np.stack([s0, s1])).iloc[0]
    with jax.enable_x64(True):
        legs = [dsp.index_option_attribution(shares=BASKET["shares"], prices=s0, prices_next=s1,
                                             vols=BASKET["vols"], rho=0.45, strike=level, expiry=0.25, dt=1 / 252,
                                             call=call) for call in (True, False)]
    both = {k: sum(np.sum(leg[k]) for leg in legs) for k in ("full", "delta", "constituents", "correlation",
                                                              "uncorrected_correlation")}
    assert tab["index_pnl"] == pytest.approx(-(both["full"] - both["delta"]) / level, rel=1e-12)
    assert tab["index_own"] == pytest.approx(-both["constituents"] / level, rel=1e-10)
    assert tab["correlation"] == pytest.approx(-both["correlation"] / level, rel=1e-10)
    assert tab["uncorrected_correlation"] == pytest.approx(-both["uncorrected_correlation"] / level, rel=1e-10)
    assert tab["rho_implied"] == pytest.approx(0.45, abs=1e-12)
