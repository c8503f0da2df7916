"""Monte Carlo tier: each return model's per-step law against its definition."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from scipy import stats as sps

from sim.engine import sample_returns
from sim.processes import Binary, BlockBootstrap, GarchT, Gaussian, Merton, RegimeSwitching, StudentT

DT = 1 / 252


def test_gaussian_moments():
    p = Gaussian(mu=0.1, sigma=0.3)
    r = sample_returns(p, seed=1, n_paths=20000, n_steps=50).ravel().astype(np.float64)
    m, s = 0.1 * DT, 0.3 * math.sqrt(DT)
    assert abs(r.mean() - m) < 3 * s / math.sqrt(r.size)
    assert abs(r.var() - s * s) < 3 * s * s * math.sqrt(2 / r.size)
    assert sps.kstest((r - m) / s, "norm").pvalue > 1e-3


def test_student_t_returns_are_scaled_t():
    nu = 3.5
    p = StudentT(mu=0.05, sigma=0.2, nu=nu)
    r = sample_returns(p, seed=2, n_paths=20000, n_steps=50).ravel().astype(np.float64)
    z = (r - 0.05 * DT) / (0.2 * math.sqrt(DT)) / math.sqrt((nu - 2) / nu)
    assert sps.kstest(z, sps.t(nu).cdf).pvalue > 1e-3


def test_merton_log_return_moments():
    p = Merton(mu=0.08, sigma=0.15, lam=20.0, jump_mean=-0.05, jump_std=0.04)
    r = sample_returns(p, seed=3, n_paths=40000, n_steps=50).ravel().astype(np.float64)
    x = np.log1p(r)
    k = math.exp(-0.05 + 0.5 * 0.04**2) - 1
    lam_dt = 20.0 * DT
    mean = (0.08 - 0.5 * 0.15**2 - 20.0 * k) * DT + lam_dt * -0.05
    var = 0.15**2 * DT + lam_dt * (0.05**2 + 0.04**2)
    assert abs(x.mean() - mean) < 3 * math.sqrt(var / x.size)
    fourth = np.mean((x - x.mean()) ** 4)
    assert abs(x.var() - var) < 3 * math.sqrt((fourth - var**2) / x.size)
    # Compensated drift: E[1 + r] = exp(mu dt).
    assert abs(r.mean() - math.expm1(0.08 * DT)) < 3 * r.std() / math.sqrt(r.size)


def test_garch_recursion_and_standardized_residuals():
    nu, a, b, sigma, mu = 6.0, 0.1, 0.85, 0.2, 0.05
    p = GarchT(mu=mu, sigma=sigma, alpha=a, beta=b, nu=nu)
    r = sample_returns(p, seed=4, n_paths=4000, n_steps=200).astype(np.float64)
    # Rebuild the conditional variance independently in numpy.
    omega = sigma**2 * DT * (1 - a - b)
    h = np.full(r.shape[0], sigma**2 * DT)
    z = np.empty_like(r)
    for t in range(r.shape[1]):
        z[:, t] = (r[:, t] - mu * DT) / np.sqrt(h)
        h = omega + a * (r[:, t] - mu * DT) ** 2 + b * h
    z = z.ravel() / math.sqrt((nu - 2) / nu)
    assert sps.kstest(z, sps.t(nu).cdf).pvalue > 1e-3


def _regime_paths(p, n, dt, steps, *, seed):
    """The regime of ``n`` paths of ``p`` at the start ``[n]`` and after each step ``[steps, n]``."""

    @jax.jit
    def run():
        key = jax.random.key(seed)
        state = p.init(jax.random.fold_in(key, 999), n, dt)

        def body(s, t):
            s2, _ = p.step(jax.random.fold_in(key, t), s, n, dt)
            return s2, s2.regime

        return state.regime, lax.scan(body, state, jnp.arange(steps))[1]

    return tuple(np.asarray(x) for x in run())


def test_regime_switching_stationary_occupancy_and_switch_rate():
    p = RegimeSwitching(rate_to_crash=3.0, rate_to_calm=9.0)
    n, steps = 1 << 15, 60
    _, reg = _regime_paths(p, n, DT, steps, seed=5)
    pi = 3.0 / 12.0
    occupancy = reg[-1].mean()  # one time point: independent paths, binomial error
    assert abs(occupancy - pi) < 3 * math.sqrt(pi * (1 - pi) / n)
    calm_before = reg[:-1] == 0
    switched = calm_before & (reg[1:] == 1)
    rate = switched.sum() / calm_before.sum()
    q = -math.expm1(-3.0 * DT)
    assert abs(rate - q) < 3 * math.sqrt(q * (1 - q) / calm_before.sum())


def test_block_bootstrap_walks_blocks_of_the_series():
    series = (np.arange(500) + 1) * 1e-4  # distinct values reveal the index
    p = BlockBootstrap(returns=series, mean_block=10.0)
    r = sample_returns(p, seed=6, n_paths=2000, n_steps=100)
    idx = np.rint(r.astype(np.float64) / 1e-4).astype(int) - 1
    assert np.allclose(series[idx], r, rtol=1e-6)
    restarts = idx[:, 1:] != (idx[:, :-1] + 1) % 500
    # A restart lands on the next index by chance with probability 1/500.
    q = 0.1 * (1 - 1 / 500)
    assert abs(restarts.mean() - q) < 3 * math.sqrt(q * (1 - q) / restarts.size)
    assert sps.chisquare(np.bincount(idx[:, 0], minlength=500)).pvalue > 1e-3


def test_binary_frequency():
    r = sample_returns(Binary(p=0.3, up=1.0, down=-0.5), seed=7, n_paths=10000, n_steps=20)
    assert set(np.unique(r)) == {-0.5, 1.0}
    wins = (r == 1.0).mean()
    assert abs(wins - 0.3) < 3 * math.sqrt(0.21 / r.size)


def test_regime_switching_starts_in_the_stationary_law_of_its_discrete_chain():
    """Monthly steps, fast switching: the crash share is the same at the start and later (the
    continuous-time law, 1/25, is far below the discrete chain's 0.0847)."""
    p = RegimeSwitching(rate_to_crash=1.0, rate_to_calm=24.0)
    dt, n = 1 / 12, 1 << 17
    up, down = 1 - math.exp(-1.0 * dt), 1 - math.exp(-24.0 * dt)
    pi = up / (up + down)
    assert float(p.stationary_crash_probability(dt)) == pytest.approx(pi, rel=1e-6)

    first, later = _regime_paths(p, n, dt, 12, seed=8)
    se = math.sqrt(pi * (1 - pi) / n)
    assert abs(first.mean() - pi) < 4 * se, (first.mean(), pi)
    for t in (0, 5, 11):
        assert abs(later[t].mean() - pi) < 4 * se, (t, later[t].mean(), pi)
    assert abs(first.mean() - 1 / 25) > 20 * se


def test_multi_asset_accepts_a_rounded_correlation_matrix_and_rejects_a_wrong_one():
    from sim.processes import MultiAsset
    from sim.validation import ParameterError

    rng = np.random.default_rng(0)
    x = rng.standard_normal((500, 5)) @ rng.standard_normal((5, 5))
    cov = np.cov(x, rowvar=False)
    sd = np.sqrt(np.diag(cov))
    corr = cov / np.outer(sd, sd)  # 1.0000000000000002 on the diagonal, asymmetric in the last bit
    m = MultiAsset(mu=np.full(5, 0.05), sigma=sd, corr=corr)
    m.validate(1 / 252)
    _, c = m.annual_moments()
    np.testing.assert_allclose(c, cov, rtol=1e-12)
    assert np.all(np.diag(c / np.outer(sd, sd)) == 1.0)
    bad = corr.copy()
    bad[0, 1] += 1e-6
    with pytest.raises(ParameterError, match=r"symmetric with a unit diagonal within 1e-08"):
        MultiAsset(mu=np.full(5, 0.05), sigma=sd, corr=bad).validate(1 / 252)
    with pytest.raises(ParameterError, match=r"MultiAsset.corr"):
        MultiAsset(mu=np.zeros(2), sigma=np.ones(2), corr=np.array([[1.0, 1.1], [1.1, 1.0]])).validate(1 / 252)


def test_parameter_uncertainty_from_joint_draws_keeps_each_row_whole():
    """Each path takes one whole row of the draws (mu and sigma perfectly anti-correlated here:
    a path with independent draws would mix them), every row about equally often."""
    from sim.processes import ParameterUncertainty, PosteriorDraws
    from sim.validation import ParameterError

    rows = np.array([[0.02, 0.30], [0.08, 0.20], [0.14, 0.10]], np.float32)
    post = ParameterUncertainty.from_draws(Gaussian(0.0, 0.2), ("mu", "sigma"), rows)
    assert isinstance(post, PosteriorDraws)
    post.validate(1 / 252)
    n = 30000
    theta = np.asarray(post.init(jax.random.key(4), n, 1 / 252).theta).T  # [n, 2]
    match = (theta[:, None, :] == rows[None, :, :]).all(axis=2)  # [n, 3]: which row each path took
    assert (match.sum(axis=1) == 1).all()  # one whole row per path, never a mix
    counts = match.sum(axis=0)
    assert np.all(np.abs(counts - n / 3) <= 4 * np.sqrt(n * (1 / 3) * (2 / 3))), counts
    with pytest.raises(ParameterError, match="sigma"):  # an invalid row is named before any run
        ParameterUncertainty.from_draws(Gaussian(0.0, 0.2), ("mu", "sigma"), [[0.05, -0.1]]).validate(1 / 252)
