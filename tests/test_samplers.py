"""Distribution tier: the samplers are exact (KS, tail quantiles, moments, independence)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.extend.random import threefry2x32_p
from scipy import stats as sps

from sim import samplers
from tests.conftest import chi2_uniform_2d, tail_count_ok

N = 1 << 21  # 2.1 million draws per distribution


def draw(fn, seed, *args):
    return np.asarray(jax.jit(fn, static_argnums=1)(jax.random.key(seed), N, *args), np.float64)


def test_unrolled_threefry_equals_jax_primitive():
    k = jax.random.key_data(jax.random.key(2024))
    c0 = jnp.arange(1 << 16, dtype=jnp.uint32)
    c1 = (c0 * jnp.uint32(2654435761)) ^ jnp.uint32(7)
    ours = jax.jit(samplers.threefry2x32)(k[0], k[1], c0, c1)
    ref = threefry2x32_p.bind(k[0], k[1], c0, c1)
    for a, b in zip(ours, ref):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("nu", [2.05, 2.5, 3.0, 3.5, 5.0, 30.0])
def test_student_t_ks_and_tails(nu):
    x = draw(samplers.student_t, int(nu * 100), nu)
    assert sps.kstest(x, sps.t(nu).cdf).pvalue > 1e-3
    for p in (1e-3, 1e-4):
        for upper in (False, True):
            q = sps.t(nu).ppf(1 - p if upper else p)
            ok, count, expect, sd = tail_count_ok(x, q, p, upper)
            assert ok, f"nu={nu} p={p} upper={upper}: {count} beyond, expected {expect:.1f} +- {sd:.1f}"


def test_expm1_of_the_t_radius_is_within_two_ulp_of_float64():
    # A float64 reference on the radius' whole range (x = -(2/nu) log U1 <= 22.2 / (nu / 2)),
    # densest near 0, where exp(x) - 1 would cancel. XLA's own expm1 is 3.4e-7 off here.
    x = np.concatenate([np.logspace(-9, 0, 20_000), np.linspace(0, 23, 20_000)[1:]]).astype(np.float32)
    got = np.asarray(jax.jit(samplers._expm1_nonneg)(jnp.asarray(x)), np.float64)
    ref = np.expm1(x.astype(np.float64))
    assert np.max(np.abs(got - ref) / ref) < 2 * 2.0**-23


@pytest.mark.parametrize("nu", [2.05, 3.5, 30.0])
def test_student_t_is_bailey_formula_in_float64_on_the_same_uniforms(nu):
    key = jax.random.key(3)
    w0, w1 = samplers.hash_words(key, 1 << 14)
    u1 = np.asarray(samplers._unit_open_closed(w0), np.float64)
    sign_sin = np.asarray(samplers._signed_arcsine(w1), np.float64)
    ref = np.sqrt(nu * np.expm1(-(2.0 / nu) * np.log(u1))) * sign_sin
    got = np.asarray(samplers.student_t(key, 1 << 14, nu), np.float64)
    # log, scale, expm1, sqrt and the product in float32: a few ulp of the variate.
    np.testing.assert_allclose(got, ref, rtol=6 * 2.0**-23, atol=0)


@pytest.mark.parametrize("nu", [5.0, 10.0])
def test_student_t_unit_variance_when_fourth_moment_exists(nu):
    # Scaled to unit variance as sim.processes does; kurtosis of t: 3 (nu-2)/(nu-4).
    x = draw(samplers.student_t, 7 + int(nu), nu) * np.sqrt((nu - 2) / nu)
    fourth = 3 * (nu - 2) / (nu - 4)
    se = np.sqrt((fourth - 1) / N)
    assert abs(x.var() - 1) < 3 * se


def test_normal_ks_tails_and_moments():
    x = draw(samplers.normal, 11)
    assert sps.kstest(x, sps.norm.cdf).pvalue > 1e-3
    for p in (1e-3, 1e-4):
        for upper in (False, True):
            ok, count, expect, sd = tail_count_ok(x, sps.norm.ppf(1 - p if upper else p), p, upper)
            assert ok, (p, upper, count, expect, sd)
    assert abs(x.mean()) < 3 / np.sqrt(N)
    assert abs(x.var() - 1) < 3 * np.sqrt(2 / N)


def test_uniform_and_pair_independence():
    u = draw(samplers.uniform, 3)
    assert u.min() > 0 and u.max() <= 1
    assert sps.kstest(u, "uniform").pvalue > 1e-3
    a, b = jax.jit(samplers.uniform_pair, static_argnums=1)(jax.random.key(4), N)
    a, b = np.asarray(a), np.asarray(b)
    # The two words of one counter, and neighbouring counters, are independent.
    assert chi2_uniform_2d(a, b) > 1e-3
    assert chi2_uniform_2d(a[:-1], a[1:]) > 1e-3


def test_t_variates_sharing_a_counter_or_a_step_are_independent():
    # Radius (word 0) and angle/sign (word 1) feed one variate; neighbouring lanes and
    # consecutive steps (fold_in keys) must be independent: compare their CDF-transforms.
    nu = 3.0
    key = jax.random.key(5)
    t0 = np.asarray(samplers.student_t(key, N, nu), np.float64)
    t1 = np.asarray(samplers.student_t(jax.random.fold_in(key, 1), N, nu), np.float64)
    u0, u1 = sps.t(nu).cdf(t0), sps.t(nu).cdf(t1)
    assert chi2_uniform_2d(u0, u1) > 1e-3  # consecutive steps, same lane
    assert chi2_uniform_2d(u0[:-1], u0[1:]) > 1e-3  # neighbouring lanes
    # |T| (radius and |angle|) is independent of the sign bit.
    above = np.abs(t0) > np.median(np.abs(t0))
    table = np.array([[np.sum(above & (t0 > 0)), np.sum(above & (t0 < 0))],
                      [np.sum(~above & (t0 > 0)), np.sum(~above & (t0 < 0))]])
    assert sps.chi2_contingency(table).pvalue > 1e-3


@pytest.mark.parametrize("lam", [0.002, 0.3, 1.0])
def test_poisson_small_matches_pmf(lam):
    u = jax.random.uniform(jax.random.key(6), (N,), minval=1e-12, maxval=1.0)
    k = np.asarray(samplers.poisson_small(u, lam)).astype(int)
    kmax = max(3, int(sps.poisson(lam).ppf(1 - 1e-6)))
    observed = np.bincount(np.minimum(k, kmax), minlength=kmax + 1)
    expected = sps.poisson(lam).pmf(np.arange(kmax + 1)) * N
    expected[-1] = sps.poisson(lam).sf(kmax - 1) * N
    keep = expected > 5
    stat = ((observed[keep] - expected[keep]) ** 2 / expected[keep]).sum()
    assert sps.chi2.sf(stat, keep.sum() - 1) > 1e-3
    assert k.max() <= kmax + 3
