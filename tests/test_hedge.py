"""The put-program overlay: a known-answer crash, invariances, monetization, bad input, gradients."""

import dataclasses
import math

import jax
import numpy as np
import pytest
from scipy.stats import norm

from sim import engine, hedge, options, processes
from sim.pytree import pytree_dataclass
from sim.validation import ParameterError

FLAT = hedge.ImpliedVolModel(source="constant", vrp=0.0, skew=0.0, mean_reversion=0.0, long_run_vol=0.2)


def bs_put(s, k, tau, vol, rate=0.0):
    """Black-Scholes put in float64 with scipy (independent of sim.options)."""
    if tau <= 0:
        return max(k - s, 0.0)
    d1 = (math.log(s / k) + (rate + 0.5 * vol * vol) * tau) / (vol * math.sqrt(tau))
    return k * math.exp(-rate * tau) * norm.cdf(-(d1 - vol * math.sqrt(tau))) - s * norm.cdf(-d1)


def crash_scenario(years_flat=3, crash=-0.3, after=10):
    n_flat = 252 * years_flat
    r = np.zeros(n_flat + 1 + after)
    r[n_flat] = crash
    return processes.Replay(r), n_flat


def annual_program(**kw):
    return hedge.HedgeProgram.from_years(budget=0.02, strike=0.9, tenor_years=1.0, roll_years=1.0, **kw)


def test_known_answer_crash_after_three_years_of_premium():
    """Flat market for 3 years, 2%/yr spent on 1-year 90% puts at a flat 20% vol, then a -30%
    day: the NAV path equals the closed form on every day."""
    proc, n_flat = crash_scenario()
    n_steps = n_flat + 11
    ov = hedge.HedgeOverlay(fraction=1.0, program=annual_program(), vol_model=FLAT)
    res = engine.simulate(proc, n_paths=1, n_steps=n_steps, block_size=1, policy=ov, record_paths=1)
    p0 = bs_put(1.0, 0.9, 1.0, 0.2)
    expected = [1.0]
    for t in range(1, n_steps + 1):
        k = (t - 1) // 252  # years of premium already lost
        tau = (252 * (k + 1) - t) / 252
        spot = 0.7 if t > n_flat else 1.0
        expected.append(0.98**k * (spot - 0.02 + 0.02 * bs_put(spot, 0.9, tau, 0.2) / p0))
    np.testing.assert_allclose(np.exp(res.recorded[:, 0]), expected, rtol=3e-6)
    # The hedge's P&L in the crash, against three years of premium.
    payoff = 0.02 * bs_put(0.7, 0.9, 251 / 252, 0.2) / p0
    nav_crash = np.exp(res.recorded[n_flat + 1, 0]) / 0.98**3
    assert nav_crash == pytest.approx(0.68 + payoff, rel=3e-6)
    assert payoff / 0.06 == pytest.approx(bs_put(0.7, 0.9, 251 / 252, 0.2) / p0 / 3, rel=1e-12)
    assert res.extras["premium"][0] == pytest.approx(0.02 * 3 + 0.02 * 0.98**3 / (0.98**3 * 1.0), rel=1e-5)


@pytest.mark.parametrize("monetize", [hedge.Hold(), hedge.ProfitTake(2.0, 0.5)], ids=["hold", "profit_take"])
def test_hedged_paths_do_not_depend_on_chunk_size(monetize):
    """Chunk size (blocks per compiled call) changes no path's results, bit for bit, like the
    plain engine's. The engine compiles the step for one block whatever the chunk (a loop over
    blocks, not vmap): before it did, a lax.cond used as a materialization fence in the
    overlay made log-wealth differ by up to 1.3e-6 on ~1% of paths between batch shapes (XLA's
    CPU code generation contracted multiply-adds into FMAs differently), and the profit-take
    proceeds/costs of 12 paths in 65,536 differed in their last bits (1.9e-9)."""
    ov = hedge.HedgeOverlay(program=hedge.HedgeProgram.from_years(budget=0.02, strike=0.85), monetize=monetize)
    runs = [engine.simulate(processes.RegimeSwitching(), seed=0, n_paths=1 << 16, n_steps=60, policy=ov,
                            chunk_paths=c, progress=lambda info: None) for c in (1 << 14, 1 << 15, 1 << 16)]
    for other in runs[1:]:
        for a, b in zip(runs[0].stats, other.stats):
            np.testing.assert_array_equal(a, b)
        for k in runs[0].extras:
            np.testing.assert_array_equal(runs[0].extras[k], other.extras[k])
    assert runs[0].extras["sales"].sum() > 0 or isinstance(ov.monetize, hedge.Hold)


def test_policies_in_one_pass_equal_their_own_runs():
    """``simulate_policies`` steps several policies on the same draws in one scan (the hedge and
    crash-protocol studies' paired runs, one compiled program per model): every member's
    statistics, snapshots, recorded paths and extras equal its own ``simulate`` call's, bit for bit."""
    policies = {"unhedged": engine.ConstantMix(1.2, 0.02, 0.3),
                "hold": hedge.HedgeOverlay(fraction=1.2, risk_free=0.02, floor=0.3),
                "profit_take": hedge.HedgeOverlay(fraction=1.2, monetize=hedge.ProfitTake(1.5, 0.5),
                                                  program=hedge.HedgeProgram.from_years(budget=0.03, strike=0.9)),
                "oracle": hedge.HedgeOverlay(monetize=hedge.RegimeOracle())}
    proc = processes.RegimeSwitching()
    kw = dict(seed=2, n_paths=600, n_steps=120, block_size=256, snapshot_every=40, record_paths=2,
              progress=lambda info: None)
    paired = engine.simulate_policies(proc, policies, **kw)
    assert list(paired) == list(policies)
    for name, policy in policies.items():
        own = engine.simulate(proc, policy=policy, **kw)
        for field, a, b in zip(own.stats._fields, own.stats, paired[name].stats):
            np.testing.assert_array_equal(a, b, err_msg=f"{name}.{field}")
        np.testing.assert_array_equal(own.snapshots, paired[name].snapshots)
        np.testing.assert_array_equal(own.recorded, paired[name].recorded)
        assert sorted(own.extras) == sorted(paired[name].extras)
        for k in own.extras:
            np.testing.assert_array_equal(own.extras[k], paired[name].extras[k], err_msg=f"{name}.{k}")
    assert paired["profit_take"].extras["sales"].sum() > 0  # a policy that trades, not only holds
    with pytest.raises(ParameterError, match=r"^bad: .*fraction"):
        engine.simulate_policies(proc, dict(policies, bad=engine.ConstantMix(float("nan"))), **kw)


def test_zero_budget_is_the_plain_engine():
    proc = processes.Merton()
    kw = dict(seed=4, n_paths=512, n_steps=300, block_size=256)
    plain = engine.simulate(proc, policy=engine.ConstantMix(0.8, 0.02), **kw)
    ov = hedge.HedgeOverlay(fraction=0.8, risk_free=0.02, program=dataclasses.replace(hedge.HedgeProgram(), budget=0.0))
    hedged = engine.simulate(proc, policy=ov, **kw)
    np.testing.assert_allclose(hedged.stats.log_wealth, plain.stats.log_wealth, atol=2e-5)
    np.testing.assert_allclose(hedged.stats.max_drawdown_log, plain.stats.max_drawdown_log, atol=2e-5)
    assert np.all(hedged.extras["premium"] == 0)


def test_put_price_kernel_equals_black_scholes():
    with jax.enable_x64(True):
        m = np.linspace(0.5, 1.5, 41)[:, None]
        tau = np.array([0.0, 1 / 252, 0.25, 1.0, 2.0])[None, :]
        for vol, rate in [(0.1, 0.0), (0.25, 0.03), (0.8, 0.01)]:
            mine = np.asarray(hedge.put_price(m, tau, vol, rate))
            ref = np.asarray(options.black_scholes(spot=1.0, strike=m, expiry=tau, vol=vol, rate=rate))
            # erfc to 1.2e-7 relative: the at-the-money difference of two ~0.5 terms is
            # good to ~1e-7 of spot (float32 resolution), the out-of-the-money tail relatively
            np.testing.assert_allclose(mine, ref, rtol=2e-6, atol=1.5e-7)


def test_delta_strike_has_the_target_delta_under_the_skew():
    vm = hedge.ImpliedVolModel(skew=0.3, vrp=0.02)
    prog = hedge.HedgeProgram.from_years(strike=0.1, strike_mode="delta", tenor_years=0.25)
    level = np.array([0.12, 0.2, 0.5], np.float32)
    tau = prog.tenor_steps / 252
    k = np.asarray(prog.new_strike(np.float32(tau), level, vm, np.float32(0.0)))
    vol = np.asarray(vm.vol(k, np.float32(tau), level))
    delta = np.asarray(options.greeks(spot=1.0, strike=k, expiry=tau, vol=vol)["delta"])
    np.testing.assert_allclose(delta, -0.1, atol=2e-4)
    assert np.all(k < 1.0)


@pytest.mark.parametrize("policy, sells", [
    (hedge.Hold(), 0), (hedge.ProfitTake(multiple=3.0), 1), (hedge.PriceLevel(drop=0.2), 1),
    (hedge.ProfitTake(multiple=50.0), 0), (hedge.PriceLevel(drop=0.35), 0)])
def test_monetization_on_the_crash(policy, sells):
    """The -30% day marks the puts at 4.9x their price: profit-take at 3x and the 20% price
    rule sell them at the mark; hold, a 50x target and a 35% drop rule do not."""
    proc, n_flat = crash_scenario(after=60)
    ov = hedge.HedgeOverlay(program=annual_program(), vol_model=FLAT, monetize=policy)
    res = engine.simulate(proc, n_paths=1, n_steps=n_flat + 61, block_size=1, policy=ov, record_paths=1)
    assert res.extras["sales"][0] == sells
    p0 = bs_put(1.0, 0.9, 1.0, 0.2)
    mark = 0.02 * bs_put(0.7, 0.9, 251 / 252, 0.2) / p0
    nav_crash = 0.98**3 * (0.68 + mark)
    if sells:
        # sold on the crash day: from then on the wealth is the flat equity plus cash
        assert np.exp(res.recorded[-1, 0]) == pytest.approx(nav_crash, rel=1e-5)
        assert res.extras["proceeds"][0] == pytest.approx(0.98**3 * mark / nav_crash, rel=1e-5)
        assert res.extras["hedge_value"][0] == 0.0
    else:
        tau = (252 - 61) / 252
        later = 0.98**3 * (0.68 + 0.02 * bs_put(0.7, 0.9, tau, 0.2) / p0)
        assert np.exp(res.recorded[-1, 0]) == pytest.approx(later, rel=1e-5)


def test_regime_oracle_sells_when_the_crash_ends():
    proc = processes.RegimeSwitching(rate_to_crash=1.0, rate_to_calm=6.0)
    ov = hedge.HedgeOverlay(monetize=hedge.RegimeOracle())
    res = engine.simulate(proc, seed=1, n_paths=256, n_steps=252, block_size=256, policy=ov)
    assert res.extras["sales"].mean() > 0.5  # about one crash a year ends per path
    with pytest.raises(ParameterError, match="TrueRegime.*RegimeSwitching"):
        engine.simulate(processes.Merton(), n_paths=8, n_steps=100, block_size=8, policy=ov)


def test_program_fills_its_budget_and_ladders_tranches():
    proc = processes.GarchT()
    ov = hedge.HedgeOverlay(program=hedge.HedgeProgram.from_years(budget=0.03, tenor_years=0.25, roll_years=1 / 12),
                            vol_model=hedge.ImpliedVolModel(source="model"))
    assert ov.program.n_tranches == 3
    res = engine.simulate(proc, seed=2, n_paths=1024, n_steps=504, block_size=512, policy=ov)
    # 24 purchases of budget / 12 each; the first at t = 0
    assert res.extras["premium"].mean() == pytest.approx(0.03 * 2 + 0.03 / 12, rel=1e-4)
    assert np.all(res.extras["hedge_value"] > 0)


@pytest.mark.parametrize("build, match", [
    (lambda: hedge.HedgeProgram.from_years(budget=-0.01), r"hedge\.budget = -0\.01"),
    (lambda: hedge.HedgeProgram.from_years(strike=0.0), r"hedge\.strike .*moneyness"),
    (lambda: hedge.HedgeProgram.from_years(strike=-0.9), r"hedge\.strike"),
    (lambda: hedge.HedgeProgram.from_years(strike=1.2, strike_mode="delta"), r"absolute put delta"),
    (lambda: hedge.HedgeProgram.from_years(tenor_years=0.0), r"hedge\.tenor_years = 0\.0"),
    (lambda: hedge.HedgeProgram.from_years(tenor_years=-1.0), r"hedge\.tenor_years"),
    (lambda: hedge.HedgeProgram.from_years(roll_years=0.0), r"hedge\.roll_years"),
    (lambda: hedge.HedgeProgram.from_years(strike_mode="otm"), r"strike_mode"),
])
def test_bad_program(build, match):
    with pytest.raises(ParameterError, match=match):
        build()


def test_bad_input_reaches_the_user_before_any_work():
    proc = processes.Merton()
    kw = dict(n_paths=8, n_steps=100, block_size=8)
    long_roll = hedge.HedgeOverlay(program=hedge.HedgeProgram.from_years(roll_years=1.0, tenor_years=1.0))
    with pytest.raises(ParameterError, match=r"roll_steps = 252 is longer than the horizon of 100 steps"):
        engine.simulate(proc, policy=long_roll, **kw)
    neg = hedge.HedgeOverlay(program=dataclasses.replace(hedge.HedgeProgram(), budget=-0.02))
    with pytest.raises(ParameterError, match=r"hedge\.budget"):
        engine.simulate(proc, policy=neg, **kw)
    with pytest.raises(ParameterError, match=r"tenor_steps"):
        engine.simulate(proc, policy=hedge.HedgeOverlay(program=dataclasses.replace(hedge.HedgeProgram(), tenor_steps=0)),
                        **kw)
    with pytest.raises(ParameterError, match=r"vol_model\.source"):
        engine.simulate(proc, policy=hedge.HedgeOverlay(vol_model=hedge.ImpliedVolModel(source="vix")), **kw)
    with pytest.raises(ParameterError, match=r"n_steps = 100 is longer than the series"):
        engine.simulate(processes.Replay(np.zeros(50)), policy=hedge.HedgeOverlay(), **kw)


def test_growth_gradient_matches_finite_differences():
    """Forward-mode derivatives of the mean growth in (fraction, budget, strike) against
    central differences on the same draws."""
    proc = processes.Merton(lam=1.0)
    ov = hedge.HedgeOverlay(program=hedge.HedgeProgram.from_years(budget=0.03, strike=0.85))
    args = (0, proc, ov, 2, 256, 126, 1 / 252)
    theta = np.array([1.0, 0.03, 0.85], np.float32)
    _, _, grad = hedge._growth_and_grad(theta, *args)
    with jax.enable_x64(False):
        for i, h in enumerate([0.05, 0.005, 0.02]):
            up, down = theta.copy(), theta.copy()
            up[i] += h
            down[i] -= h
            fd = (float(hedge.growth_on_draws(up, *args)[0]) - float(hedge.growth_on_draws(down, *args)[0])) / (2 * h)
            assert float(grad[i]) == pytest.approx(fd, rel=0.05, abs=2e-3), i


def test_optimizer_finds_the_grid_maximum_of_the_fraction_without_hedge():
    """With the budget pinned at 0 the optimum fraction is the Kelly fraction of the same
    draws (a grid over f, on common random numbers)."""
    proc = processes.Merton(mu=0.08, sigma=0.2, lam=0.5)
    ov = hedge.HedgeOverlay(program=dataclasses.replace(hedge.HedgeProgram(), budget=0.0))
    kw = dict(seed=3, n_paths=1024, n_steps=126, block_size=512)
    opt = hedge.optimize_hedge(proc, ov, bounds=((0.0, 3.0), (0.0, 1e-9), (0.8, 0.9)), max_iter=150, **kw)
    grid = np.linspace(0.5, 3.0, 51)
    values = [float(hedge.growth_on_draws(np.array([f, 0.0, 0.85], np.float32), 3, proc, ov, 2, 512, 126, 1 / 252)[0])
              for f in grid]
    best = grid[int(np.argmax(values))]
    assert opt.converged
    assert opt.fraction == pytest.approx(best, abs=0.05)
    assert opt.growth >= max(values) - 1e-4


@pytree_dataclass
class _StatefulAtTrade(hedge.RegimeOracle):
    at_trade = True


@pytest.mark.parametrize("make", [lambda m: m.ProfitTake(1.5, 0.5), lambda m: m.PriceLevel(0.05, 0.5)],
                         ids=["profit_take", "price_level"])
def test_at_trade_decisions_equal_fenced_ones(make):
    """An ``at_trade`` policy decides inside the step's trades; decided in its own fence and
    passed to the trades (the path of a policy with state) the same decision gives the same
    paths and diagnostics, bit for bit."""
    pol = make(hedge)
    fenced = pytree_dataclass(type("Fenced", (type(pol),), {"at_trade": False}))(**dataclasses.asdict(pol))
    assert pol.at_trade and not fenced.at_trade
    runs = []
    for mon in (pol, fenced):
        ov = hedge.HedgeOverlay(program=hedge.HedgeProgram.from_years(budget=0.03, strike=0.9), monetize=mon)
        runs.append(engine.simulate(processes.GarchT(), seed=2, n_paths=4096, n_steps=300, block_size=1024, policy=ov))
    assert runs[0].extras["sales"].sum() > 100
    for a, b in zip(runs[0].stats, runs[1].stats):
        np.testing.assert_array_equal(a, b)
    for k in runs[0].extras:
        np.testing.assert_array_equal(runs[0].extras[k], runs[1].extras[k])


def test_at_trade_needs_a_stateless_policy():
    ov = hedge.HedgeOverlay(monetize=_StatefulAtTrade())
    with pytest.raises(ParameterError, match="at_trade"):
        engine.simulate(processes.RegimeSwitching(), n_paths=8, n_steps=30, policy=ov)


def test_hedge_optimizer_converges_and_no_grid_neighbour_is_better():
    """Fraction, budget and strike together on a regime-switching model (the former Adam
    optimizer stopped unconverged at its iteration cap, and its last point was reported)."""
    proc = processes.RegimeSwitching()
    ov = hedge.HedgeOverlay(program=hedge.HedgeProgram.from_years(budget=0.02, strike=0.85))
    kw = dict(seed=5, n_paths=512, n_steps=126, block_size=512)
    bounds = ((0.0, 3.0), (0.0, 0.1), (0.5, 1.0))
    opt = hedge.optimize_hedge(proc, ov, bounds=bounds, max_iter=100, **kw)
    assert opt.converged, opt.history[-3:]
    args = (5, proc, ov, 1, 512, 126, 1 / 252)  # the optimizer's draws
    check = hedge.local_grid_check([opt.fraction, opt.budget, opt.strike], bounds, args)
    assert check["ok"] and opt.grid_check_gain <= 1e-6, check
