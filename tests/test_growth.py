"""Closed-form tier: the coin game against the binomial law, GBM against mu - sigma^2/2."""

import math

import numpy as np
from scipy import stats as sps

from sim.engine import simulate
from sim.processes import Binary, Gaussian


def test_coin_game_median_and_fraction_below_one_dollar():
    n_players, rounds = 10000, 100
    res = simulate(Binary(p=0.5, up=0.5, down=-0.4), seed=0, n_paths=n_players, n_steps=rounds, steps_per_year=1)
    lw = res.stats.log_wealth.astype(np.float64)
    # Wealth after k wins: 1.5^k 0.6^(100-k), increasing in k, K ~ Binomial(100, 1/2).
    wins = np.rint((lw - rounds * math.log(0.6)) / math.log(1.5 / 0.6)).astype(int)
    np.testing.assert_allclose(wins * math.log(1.5) + (rounds - wins) * math.log(0.6), lw, atol=1e-3)
    binom = sps.binom(rounds, 0.5)
    # The sample median's rank lies within 3 standard errors of the 1/2 quantile.
    se_rank = math.sqrt(0.25 / n_players)
    lo, hi = binom.ppf(0.5 - 3 * se_rank), binom.ppf(0.5 + 3 * se_rank)
    assert lo <= np.median(wins) <= hi
    exact_median = 1.5 ** binom.median() * 0.6 ** (rounds - binom.median())
    assert math.isclose(float(np.exp(np.median(lw))), exact_median, rel_tol=1e-4) or lo < np.median(wins) < hi
    # P(W < 1) = P(K <= k*) with k* the largest k whose wealth is below 1.
    k_star = math.floor(rounds * math.log(1 / 0.6) / math.log(1.5 / 0.6) - 1e-12)
    p_below = binom.cdf(k_star)
    assert abs((lw < 0).mean() - p_below) < 3 * math.sqrt(p_below * (1 - p_below) / n_players)


def test_gbm_time_average_growth_with_discretization_correction():
    mu, sigma, spy, years = 0.05, 0.4, 252, 10
    dt = 1 / spy
    res = simulate(Gaussian(mu=mu, sigma=sigma), seed=1, n_paths=100000, n_steps=spy * years, steps_per_year=spy)
    g = res.stats.log_wealth.astype(np.float64) / years
    # Per step E[log(1 + m + s Z)], m = mu dt, s = sigma sqrt(dt), by Gauss-Hermite quadrature
    # (exact to float64 here: 1 + m + s Z <= 0 has probability ~1e-300).
    x, w = np.polynomial.hermite_e.hermegauss(80)
    m, s = mu * dt, sigma * math.sqrt(dt)
    per_step = np.sum(w * np.log1p(m + s * x)) / math.sqrt(2 * math.pi)
    exact = per_step / dt
    # Its expansion: mu - sigma^2/2 - (mu^2/2 - mu sigma^2 + 3 sigma^4/4) dt + O(dt^2).
    series = mu - sigma**2 / 2 - (mu**2 / 2 - mu * sigma**2 + 0.75 * sigma**4) * dt
    assert abs(exact - series) < 1e-6
    se = g.std(ddof=1) / math.sqrt(g.size)
    assert abs(g.mean() - exact) < 3 * se
    # The ensemble grows at mu while the time average is negative.
    assert exact < 0 < mu
