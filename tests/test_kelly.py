"""Kelly sizing: closed forms against independent references, the gradient optimizer against a
brute-force grid on the same draws, fractional Kelly and the law of ruin, fat tails, parameter
uncertainty, the drawdown constraint, and bad input."""

import math

import jax
import numpy as np
import pytest
from scipy import integrate, optimize as sopt, stats

from sim import engine, kelly
from sim.processes import Binary, GarchT, Gaussian, Merton, MultiAsset, ParameterUncertainty, StudentT
from sim.validation import ParameterError

DT = 1.0 / 252


# ----------------------------------------------------------------------------- closed forms


def test_binary_closed_form_against_scipy():
    for p, b in [(0.6, 1.0), (0.55, 2.0), (0.3, 4.0)]:
        res = sopt.minimize_scalar(lambda f: -kelly.binary_growth(f, p, b), bounds=(0, 0.999), method="bounded",
                                   options=dict(xatol=1e-12))
        assert kelly.binary_kelly(p, b) == pytest.approx(res.x, abs=1e-7)


def test_gaussian_closed_forms():
    mu, sigma, r = 0.09, 0.25, 0.02
    f = kelly.gaussian_kelly(mu, sigma, r)
    assert f == pytest.approx((mu - r) / sigma**2)
    for c in (0.25, 0.5, 1.0, 1.5):
        assert kelly.fractional_kelly_growth(c, mu, sigma, r) == pytest.approx(kelly.gaussian_growth(c * f, mu, sigma, r))
    # Half Kelly keeps exactly 3/4 of the excess growth in continuous time.
    assert (kelly.fractional_kelly_growth(0.5, mu, sigma, r) - r) == pytest.approx(
        0.75 * (kelly.fractional_kelly_growth(1.0, mu, sigma, r) - r))
    cov = np.array([[0.04, 0.01], [0.01, 0.09]])
    np.testing.assert_allclose(kelly.gaussian_kelly([0.08, 0.1], cov), np.linalg.solve(cov, [0.08, 0.1]))


def test_discrete_gaussian_kelly_matches_its_series():
    # E log(1 + f X), X ~ N(mu dt, sigma^2 dt): f* = f0 (1 - f0 mu dt) + O(dt^2), f0 = mu / sigma^2.
    for mu, sigma in [(0.08, 0.2), (0.05, 0.3)]:
        f0 = mu / sigma**2
        assert kelly.gaussian_kelly_discrete(mu, sigma, DT) == pytest.approx(f0 * (1 - f0 * mu * DT), abs=2e-6)


def test_first_passage_formula_and_its_limit():
    theta = 0.4
    for c in (0.5, 1.0, 1.5):
        # against a brute-force simulation of the Brownian motion? No: against its limit and
        # the reflection principle at zero drift, both exact.
        assert kelly.first_passage_probability(0.5, c, theta, 1e7) == pytest.approx(kelly.ruin_probability(0.5, c), rel=1e-6)
    probs = [kelly.first_passage_probability(0.5, 1.0, theta, T) for T in (5, 20, 100, 1000)]
    assert np.all(np.diff(probs) > 0) and probs[-1] == pytest.approx(0.5, abs=1e-6)
    assert kelly.ruin_probability(0.5, 1.0) == 0.5
    # c = 2: zero drift; the reflection principle gives 2 Phi(a / (s sqrt T)).
    a, s, T = math.log(0.5), 2 * theta, 3.0
    assert kelly.first_passage_probability(0.5, 2.0, theta, T) == pytest.approx(2 * stats.norm.cdf(a / (s * math.sqrt(T))))


def test_frequentist_shrinkage_by_monte_carlo():
    # E_muhat[g(k muhat / sigma^2)] under the true mu is maximized at k* = theta^2 / (theta^2 + 1/T).
    rng = np.random.default_rng(0)
    mu, sigma, T = 0.06, 0.2, 5.0
    muhat = mu + sigma / math.sqrt(T) * rng.standard_normal(100_000)
    ks = np.linspace(0.05, 1.5, 581)
    g = [np.mean(kelly.gaussian_growth(k * muhat / sigma**2, mu, sigma)) for k in ks]
    theta = mu / sigma
    assert ks[int(np.argmax(g))] == pytest.approx(kelly.frequentist_shrinkage(theta, T), abs=0.01)


# ----------------------------------------------------------------------------- numeric Kelly


MODELS = {
    "gaussian": Gaussian(0.08, 0.2),
    "student_t3": StudentT(0.05, 0.3, 3.0),
    "student_t4": StudentT(0.06, 0.25, 4.0),
    "merton": Merton(),
    "garch_t": GarchT(mu=0.06, sigma=0.3),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_gradient_kelly_equals_grid_optimum_on_the_same_draws(name):
    process = MODELS[name]
    obj = kelly.GrowthObjective(process, seed=11, n_paths=2048, n_steps=252, block_size=2048)
    res = kelly.optimize(obj)
    f_grid, g_grid, _, _ = kelly.grid_search(obj, 0.0, 1.6 * kelly.reference_kelly(process))
    assert res.converged
    assert abs(res.full_fraction - f_grid) < 1e-3, (name, res.full_fraction, f_grid)
    assert res.growth >= g_grid - 1e-6


def test_gaussian_kelly_within_monte_carlo_error_of_the_discrete_optimum():
    mu, sigma = 0.08, 0.2
    obj = kelly.GrowthObjective(Gaussian(mu, sigma), seed=5, n_paths=1 << 14, n_steps=4 * 252)
    res = kelly.optimize(obj)
    exact = kelly.gaussian_kelly_discrete(mu, sigma, DT)
    assert abs(res.full_fraction - exact) < 3 * res.fraction_se, (res.full_fraction, exact, res.fraction_se)
    assert res.fraction_se < 0.03


def test_binary_bet_kelly_is_exact_on_the_sample():
    p, b = 0.6, 1.0
    proc = Binary(p=p, up=b, down=-1.0)
    obj = kelly.GrowthObjective(proc, seed=2, n_paths=2048, n_steps=50, steps_per_year=1.0, block_size=2048)
    res = kelly.optimize(obj, x0=0.1)
    wins = (engine.sample_returns(proc, seed=2, n_paths=2048, n_steps=50, steps_per_year=1.0, block_size=2048) > 0).mean()
    assert res.full_fraction == pytest.approx(kelly.binary_kelly(wins, b), abs=1e-5)
    assert abs(wins - p) < 0.01


def test_half_kelly_keeps_three_quarters_of_the_growth():
    mu, sigma = 0.1, 0.25
    f = kelly.gaussian_kelly(mu, sigma)
    kw = dict(seed=7, n_paths=1 << 15, n_steps=10 * 252)
    full = engine.simulate(Gaussian(mu, sigma), policy=engine.ConstantMix(f), **kw)
    half = engine.simulate(Gaussian(mu, sigma), policy=engine.ConstantMix(0.5 * f), **kw)
    years = full.years
    d = (half.stats.log_wealth.astype(float) - 0.75 * full.stats.log_wealth.astype(float)) / years
    assert abs(d.mean()) < 3 * d.std(ddof=1) / math.sqrt(d.size), (d.mean(), d.std() / math.sqrt(d.size))
    g_full = full.stats.log_wealth.astype(float) / years
    assert abs(g_full.mean() - kelly.fractional_kelly_growth(1.0, mu, sigma)) < 3 * g_full.std() / math.sqrt(g_full.size)


@pytest.mark.parametrize("years", [2.0, 10.0])
def test_full_kelly_halving_probability_matches_first_passage(years):
    mu, sigma = 0.1, 0.25
    theta, f = mu / sigma, kelly.gaussian_kelly(mu, sigma)
    spy = 252
    res = engine.simulate(Gaussian(mu, sigma), seed=3, n_paths=1 << 14, n_steps=int(years * spy),
                          steps_per_year=spy, policy=engine.ConstantMix(f, 0.0, 0.5))
    p_sim = (res.stats.ruin_step != -1).mean()
    # Daily monitoring misses crossings between steps: the continuity correction of Broadie,
    # Glasserman and Kou (1997) moves the barrier by exp(-0.5826 s sqrt(dt)), s = f sigma.
    barrier = 0.5 * math.exp(-0.5826 * f * sigma * math.sqrt(1 / spy))
    p_exact = kelly.first_passage_probability(barrier, 1.0, theta, years)
    se = math.sqrt(p_exact * (1 - p_exact) / res.stats.ruin_step.size)
    assert abs(p_sim - p_exact) < 3 * se + 0.003, (p_sim, p_exact, se)
    assert p_exact < 0.5


# ----------------------------------------------------------------------------- fat tails


def _exact_growth(f, mu, s, nu):
    """E log(1 + f max(X, -1)) by quadrature; X = mu + s T_unit (t(nu) at unit variance) or
    Gaussian. -inf where P(1 + f X <= 0) > 0 in float64 (limited liability: X >= -1)."""
    dist = stats.norm(mu, s) if nu is None else stats.t(nu, loc=mu, scale=s * math.sqrt((nu - 2) / nu))
    edge = max(-1.0, -1.0 / f) if f > 0 else -1.0
    if f >= 1 and dist.cdf(edge) > 0:
        return -np.inf
    cuts = sorted({edge, mu - 20 * s, mu + 20 * s})
    body = sum(integrate.quad(lambda x: np.log1p(f * x) * dist.pdf(x), a, b, limit=400)[0]
               for a, b in zip(cuts, cuts[1:]))
    body += integrate.quad(lambda x: np.log1p(f * x) * dist.pdf(x), cuts[-1], np.inf, limit=400)[0]
    return body + (dist.cdf(-1.0) * np.log1p(-f) if f < 1 else 0.0)


def _exact_optimum(mu, s, nu, hi):
    return sopt.minimize_scalar(lambda f: -_exact_growth(f, mu, s, nu), bounds=(0.0, hi), method="bounded",
                                options=dict(xatol=1e-8)).x


def test_fat_tails_put_the_growth_optimal_fraction_below_gaussian_kelly():
    """Daily steps, mu = 8%, sigma = 20%: Gaussian Kelly is mu / sigma^2 = 2 (levered). With
    t(3) shocks of the same mean and variance, any f > 1 can be wiped out in one day (the
    growth rate is -inf there) and the optimum is just below 1."""
    mu, sigma = 0.08, 0.2
    m, s = mu * DT, sigma * math.sqrt(DT)
    f_gauss = _exact_optimum(m, s, None, 3.0)
    f_t3 = _exact_optimum(m, s, 3.0, 0.999999)
    assert f_gauss == pytest.approx(kelly.gaussian_kelly_discrete(mu, sigma, DT), abs=1e-4)
    assert 0.99 < f_t3 < 1.0  # measured 0.9972: below mu / sigma^2 = 2 by 1.003
    assert mu / sigma**2 - f_t3 > 0.99
    # The simulated optimum on the engine's own draws agrees.
    obj = kelly.GrowthObjective(StudentT(mu, sigma, 3.0), seed=4, n_paths=1 << 14, n_steps=252)
    res = kelly.optimize(obj)
    assert abs(res.full_fraction - f_t3) < 0.01, (res.full_fraction, f_t3)


def test_unlevered_fat_tail_effect_is_small_and_of_either_sign():
    """With mu / sigma^2 < 1 the optimum is interior: t(5) lowers it, t(3) (infinite fourth
    moment, losses capped at -100%) raises it slightly. Measured, daily, mu 5%, sigma 30%."""
    m, s = 0.05 * DT, 0.3 * math.sqrt(DT)
    f_g = _exact_optimum(m, s, None, 0.99)
    f_5 = _exact_optimum(m, s, 5.0, 0.99)
    f_3 = _exact_optimum(m, s, 3.0, 0.99)
    assert f_5 < f_g < f_3
    assert abs(f_3 - f_g) < 0.01 and abs(f_5 - f_g) < 0.001


# ----------------------------------------------------------------------------- several assets


def test_two_asset_kelly_and_budget_constraint():
    mu, sigma = np.array([0.06, 0.09]), np.array([0.2, 0.3])
    corr = np.array([[1.0, 0.3], [0.3, 1.0]])
    proc = MultiAsset(mu, sigma, corr, float("inf"))
    obj = kelly.GrowthObjective(proc, seed=9, n_paths=2048, n_steps=252, block_size=2048)
    res = kelly.optimize(obj)
    target = kelly.gaussian_kelly(mu, np.outer(sigma, sigma) * corr)
    assert np.all(np.abs(res.full_fraction - target) < 3 * res.fraction_se + 0.01), (res.full_fraction, target)
    # Long-only with budget 1: the optimum lies on f1 + f2 = 1; a 1-D grid along that edge.
    small = obj  # the same draws and compiled kernels
    con = kelly.optimize(small, long_only=True, budget=1.0)
    assert con.full_fraction.sum() <= 1.0 + 1e-6 and np.all(con.full_fraction >= 0)
    a = np.linspace(0.0, 1.0, 401)
    vals = small.values(np.stack([a, 1 - a], axis=1))
    j = int(np.argmax(vals))
    fine = np.linspace(a[j - 1], a[j + 1], 401)
    best = fine[int(np.argmax(small.values(np.stack([fine, 1 - fine], axis=1))))]
    assert abs(con.full_fraction[0] - best) < 1e-3, (con.full_fraction, best)
    assert con.full_fraction.sum() == pytest.approx(1.0, abs=1e-3)


# ----------------------------------------------------------------------------- uncertainty, drawdown


def test_uncertainty_aware_kelly_matches_the_bayes_closed_form():
    """Unknown mean, known sigma, T = 2 years of data, bets held a year: predictive law
    N(mu_hat, sigma^2 (1 + tau / T)); exact optimum by Gauss-Hermite, closed form
    f_plugin * T / (T + tau) to second order."""
    mu_hat, sigma, T, tau = 0.06, 0.3, 2.0, 1.0
    prior = ParameterUncertainty(Gaussian(mu_hat, sigma), names=("mu",), kinds=("normal",),
                                 loc=np.array([mu_hat]), scale=np.array([sigma / math.sqrt(T)]), shift=np.array([0.0]))
    obj = kelly.GrowthObjective(prior, seed=21, n_paths=1 << 17, n_steps=1, steps_per_year=1.0 / tau)
    res = kelly.optimize(obj, x0=0.3)
    exact = kelly.gaussian_kelly_discrete(mu_hat, sigma * math.sqrt(1 + tau / T), tau)
    assert abs(res.full_fraction - exact) < 3 * res.fraction_se, (res.full_fraction, exact, res.fraction_se)
    plug_in = kelly.optimize(kelly.GrowthObjective(Gaussian(mu_hat, sigma), seed=21, n_paths=1 << 17, n_steps=1,
                                                   steps_per_year=1.0), x0=0.3)
    shrink = res.full_fraction / plug_in.full_fraction
    assert shrink == pytest.approx(kelly.bayes_shrinkage(T, tau), abs=0.05)


def test_drawdown_constrained_kelly_meets_the_constraint_on_fresh_draws():
    obj = kelly.GrowthObjective(Gaussian(0.08, 0.2), seed=13, n_paths=1 << 13, n_steps=252, drawdown=(0.2, 0.05))
    res = kelly.optimize(obj)
    free = kelly.optimize(kelly.GrowthObjective(Gaussian(0.08, 0.2), seed=13, n_paths=1 << 13, n_steps=252))
    assert res.full_fraction < free.full_fraction  # the constraint binds
    se = math.sqrt(0.05 * 0.95 / obj.n_paths)
    assert abs(res.breach_probability - 0.05) < 3 * se, res.breach_probability
    assert res.constraint["binds"] and res.constraint["fresh_draws_probability_se"] > 0


# ----------------------------------------------------------------------------- bad input


def test_bad_input_is_rejected_before_work():
    obj = kelly.GrowthObjective(Gaussian(0.08, 0.2), n_paths=256, n_steps=10, block_size=256)
    for c in (0.0, -0.5):
        with pytest.raises(ParameterError, match="Kelly multiple c"):
            kelly.optimize(obj, multiple=c)
    with pytest.raises(ParameterError, match="max_drawdown"):
        kelly.GrowthObjective(Gaussian(), n_paths=256, n_steps=10, drawdown=(1.2, 0.05))
    with pytest.raises(ParameterError, match="drawdown probability eps"):
        kelly.GrowthObjective(Gaussian(), n_paths=256, n_steps=10, drawdown=(0.2, 0.0))
    with pytest.raises(ParameterError, match="infeasible"):
        kelly.GrowthObjective(Gaussian(), n_paths=256, n_steps=2520, steps_per_year=252, risk_free=-0.05,
                              drawdown=(0.2, 0.05))
    with pytest.raises(ParameterError, match="prior scale of Gaussian.mu"):
        ParameterUncertainty(Gaussian(), names=("mu",), kinds=("normal",), loc=np.array([0.05]),
                             scale=np.array([0.0]), shift=np.array([0.0])).validate(DT)
    with pytest.raises(ParameterError, match="lognormal"):
        ParameterUncertainty(StudentT(), names=("nu",), kinds=("normal",), loc=np.array([4.0]),
                             scale=np.array([0.1]), shift=np.array([0.0])).validate(DT)


def test_non_convergence_is_reported():
    obj = kelly.GrowthObjective(StudentT(0.05, 0.3, 3.0), n_paths=1024, n_steps=252, block_size=1024)
    with pytest.raises(kelly.KellyConvergenceError, match="did not converge"):
        kelly.optimize(obj, max_iter=1, gtol=1e-12, xtol=1e-12)
    res = kelly.optimize(obj, max_iter=1, gtol=1e-12, xtol=1e-12, strict=False)
    assert not res.converged


# ------------------------------------------------- constrained optimum against scipy, same draws


def _fitted_stocks(d, offset=0):
    from sim import data

    px = data.load_sp500_constituents().loc["2018":"2022"]
    r = data.simple_returns(px).iloc[:, offset:offset + d].to_numpy()
    mu, cov = r.mean(0) * 252, np.cov(r, rowvar=False) * 252
    sd = np.sqrt(np.diag(cov))
    return MultiAsset(mu=mu, sigma=sd, corr=cov / np.outer(sd, sd))  # cov / outer(sd, sd): rounding cleaned


def _scipy_optimum(proc, n, budget, long_only=True, seed=0):
    """SLSQP on the float64 log-growth of the engine's very draws (materialized: small sizes)."""
    from scipy.optimize import minimize

    from sim import engine

    R = np.asarray(engine.sample_returns(proc, seed=seed, n_paths=n, n_steps=252, block_size=n), float)
    d = R.shape[-1]

    def neg(f):
        return -np.log1p(R @ f).sum(axis=1).mean()

    def jac(f):
        return -(R / (1 + R @ f)[..., None]).sum(axis=1).mean(axis=0)

    cons = [{"type": "ineq", "fun": lambda f: budget - f.sum(), "jac": lambda f: -np.ones(d)}]
    res = minimize(neg, np.full(d, budget / (d + 1)), jac=jac, bounds=[(0, None) if long_only else (None, None)] * d,
                   constraints=cons, method="SLSQP", options=dict(ftol=1e-15, maxiter=1000))
    assert res.success, res.message
    return res.x, -res.fun, neg


@pytest.mark.parametrize("d,offset,budget,shape", [
    (2, 0, 1.0, "corner"),      # all in one stock
    (5, 5, 1.0, "face"),        # two held, on the budget face
    (5, 10, 1.0, "corner"),
    (5, 0, 0.4, "corner"),      # a small budget
    pytest.param(20, 0, 1.0, "face", marks=pytest.mark.slow),
])
def test_constrained_optimum_agrees_with_scipy_on_the_same_draws(d, offset, budget, shape):
    proc = _fitted_stocks(d, offset)
    obj = kelly.GrowthObjective(proc, seed=0, n_paths=1024, n_steps=252, block_size=1024)
    res = kelly.optimize(obj, long_only=True, budget=budget)
    x, g_ref, neg = _scipy_optimum(proc, 1024, budget)
    assert res.converged and res.constraint["kkt_ok"]
    np.testing.assert_allclose(res.full_fraction, x, atol=1e-3)
    assert abs(-neg(res.full_fraction) - g_ref) < 1e-5, (-neg(res.full_fraction), g_ref)
    held = int((x > 1e-6).sum())
    assert (held == 1) == (shape == "corner"), (x, shape)


def test_constrained_optimum_with_a_slack_budget_and_a_start_at_the_optimum():
    """Long-only, budget 5 never binds for these volatile stocks: the held assets have zero
    marginal growth; started at the optimum the optimizer stays there."""
    proc = _fitted_stocks(5, 5)
    obj = kelly.GrowthObjective(proc, seed=1, n_paths=1024, n_steps=252, block_size=1024)
    res = kelly.optimize(obj, long_only=True, budget=5.0)
    x, g_ref, neg = _scipy_optimum(proc, 1024, 5.0, seed=1)
    assert res.converged and not res.constraint["budget_binds"]
    np.testing.assert_allclose(res.full_fraction, x, atol=1e-3)
    again = kelly.optimize(obj, long_only=True, budget=5.0, x0=res.full_fraction)
    assert again.converged
    np.testing.assert_allclose(again.full_fraction, res.full_fraction, atol=1e-4)


def test_converged_never_accompanies_a_point_that_fails_the_optimality_check():
    proc = _fitted_stocks(5, 5)
    obj = kelly.GrowthObjective(proc, seed=0, n_paths=1024, n_steps=252, block_size=1024)
    res = kelly.optimize(obj, long_only=True, budget=1.0, max_iter=1, strict=False)
    _, _, grad, _, _ = obj.derivatives(res.full_fraction)
    check = kelly.kkt_check(grad, res.full_fraction, long_only=True, budget=1.0, tol=1e-5)
    assert not res.converged and not check["ok"]
    with pytest.raises(kelly.KellyConvergenceError):
        kelly.optimize(obj, long_only=True, budget=1.0, max_iter=1)
    # the corner [1, 0, 0, 0, 0] that the former softmax optimizer reported as converged
    corner = np.array([1.0, 0, 0, 0, 0])
    _, _, grad, _, _ = obj.derivatives(corner)
    assert not kelly.kkt_check(grad, corner, long_only=True, budget=1.0, tol=1e-5)["ok"]


def test_analytic_growth_derivatives_equal_forward_mode_autodiff():
    mu, sigma = np.array([0.06, 0.09, 0.12]), np.array([0.2, 0.3, 0.4])
    corr = np.array([[1.0, 0.3, 0.2], [0.3, 1.0, 0.5], [0.2, 0.5, 1.0]])
    obj = kelly.GrowthObjective(MultiAsset(mu, sigma, corr, 5.0), seed=9, n_paths=512, n_steps=50,
                                block_size=256, risk_free=0.02)
    f = obj._as_f(np.array([0.5, 0.3, 0.2]))
    seed, proc = obj._args()

    def growth(x):
        return kelly._paths(x, seed, proc, obj.spec)[0]

    # the objective's own compiled value (bit for bit); forward-mode autodiff through the
    # engine's scan for the per-path gradient and the mean Hessian (compiled: eagerly, each of
    # the derivatives' operations around the scan compiled on its own, ~100 small programs)
    auto = [np.asarray(a, float) for a in (kelly._paths_jit(f, seed, proc, obj.spec)[0], jax.jit(jax.jacfwd(growth))(f),
                                            jax.jit(jax.jacfwd(jax.jacfwd(lambda x: growth(x).mean())))(f))]
    mine = [np.asarray(a, float) for a in kelly._analytic_derivs_jit(f, *obj._args(), obj.spec)]
    np.testing.assert_array_equal(auto[0], mine[0])
    np.testing.assert_allclose(mine[1], auto[1], atol=1e-5 * np.abs(auto[1]).max())
    np.testing.assert_allclose(mine[2], auto[2], atol=1e-5 * np.abs(auto[2]).max())


def test_drawdown_constraint_binds_at_eps_on_fresh_draws_and_loosens_with_eps():
    """With the exact indicator the breach probability of the returned fraction on fresh draws
    is within 3 SE of eps (the former logistic smoothing gave about 2/3 of eps); a larger eps
    gives a larger fraction, up to the unconstrained optimum."""
    proc = StudentT(0.1, 0.2, 4.0)
    kw = dict(seed=21, n_paths=1 << 13, n_steps=252, block_size=4096)
    free = kelly.optimize(kelly.GrowthObjective(proc, **kw))
    fractions = []
    for eps in (0.05, 0.1, 0.2, 0.95):
        res = kelly.optimize(kelly.GrowthObjective(proc, drawdown=(0.2, eps), **kw))
        c = res.constraint
        fractions.append(res.full_fraction)
        if c["binds"]:
            se = math.sqrt(eps * (1 - eps) / kw["n_paths"])
            assert abs(res.breach_probability - eps) < 3 * se, (eps, res.breach_probability, se)
            assert c["in_sample_probability"] <= eps and eps - c["in_sample_probability"] < 3 / kw["n_paths"] + 1e-12
        else:
            assert res.full_fraction == pytest.approx(free.full_fraction, rel=1e-6)
    assert fractions[0] < fractions[1] < fractions[2] <= fractions[3] + 1e-9
    assert fractions[3] == pytest.approx(free.full_fraction, rel=1e-6)


def test_growth_objective_counts_exactly_the_paths_asked_for():
    """1,500 paths in blocks of 1,024: the objective, its gradient and Hessian, and the engine
    use the same 1,500 paths."""
    from sim import engine

    proc = StudentT(0.08, 0.2, 4.0)
    obj = kelly.GrowthObjective(proc, seed=2, n_paths=1500, n_steps=100, block_size=1024)
    assert obj.n_paths == 1500
    res = engine.simulate(proc, seed=2, n_paths=1500, n_steps=100, block_size=1024, policy=engine.ConstantMix(0.8))
    growth = res.stats.log_wealth.astype(np.float64) / res.years
    g, g_se, grad, _, hess = obj.derivatives(0.8)
    assert g == pytest.approx(growth.mean(), rel=1e-6) and g_se == pytest.approx(growth.std(ddof=1) / math.sqrt(1500))
    assert obj(0.8) == pytest.approx(growth.mean(), rel=1e-6)
    r = np.asarray(engine.sample_returns(proc, seed=2, n_paths=1500, n_steps=100, block_size=1024), np.float64)
    w = 1 / (1 + 0.8 * r)
    years = 100 / 252
    assert grad == pytest.approx((r * w).sum(axis=1).mean() / years, rel=1e-4)
    assert hess[0, 0] == pytest.approx(-(r * r * w * w).sum(axis=1).mean() / years, rel=1e-4)


@pytest.mark.parametrize("mu,sigma,nu", [(0.15, 0.12, 3.0), (0.15, 0.12, 4.0), (0.15, 0.2, 2.5)])
def test_one_asset_newton_converges_near_the_wipe_out_barrier(mu, sigma, nu):
    """Fat tails, a high Sharpe ratio: the optimum sits close to the first wipe-out, where the
    curvature is so large that float32 cannot push the gradient below kkt_tol (the Newton
    solve of one asset once stopped there as 'not converged'). Converged, and no neighbour on
    the same draws is better."""
    obj = kelly.GrowthObjective(StudentT(mu, sigma, nu), n_paths=4096, n_steps=252)
    res = kelly.optimize(obj)
    assert res.converged
    f = res.full_fraction
    near = obj.values(np.array([f * (1 - 1e-3), f, f * (1 + 1e-3)]))
    assert near[1] >= max(near[0], near[2]) or not np.isfinite(near[2]), near
