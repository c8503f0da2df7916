"""Maximum-likelihood fits (sim.fit) against closed forms, scipy, and a known simulated truth."""

import math

import numpy as np
import pytest
from scipy import stats as sps

from sim import engine, fit
from sim.processes import GarchT, Gaussian, StudentT
from sim.validation import ParameterError


def _sample(process, n, seed):
    return np.asarray(engine.sample_returns(process, seed=seed, n_paths=1, n_steps=n, block_size=1)[0], np.float64)


def test_gaussian_fit_is_the_closed_form():
    r = _sample(Gaussian(0.08, 0.2), 2520, 1)
    f = fit.fit(r, "gaussian")
    mu, sd = r.mean() * 252, r.std() * math.sqrt(252)  # the MLE: the sample mean and the ddof=0 std
    assert f.converged and f.params["mu"] == pytest.approx(mu, rel=1e-9)
    assert f.params["sigma"] == pytest.approx(sd, rel=1e-9)
    assert f.se["mu"] == pytest.approx(sd / math.sqrt(r.size / 252), rel=1e-6)  # sigma / sqrt(T years)
    assert f.se["sigma"] == pytest.approx(sd / math.sqrt(2 * r.size), rel=1e-6)
    assert f.loglik == pytest.approx(sps.norm.logpdf(r, r.mean(), r.std()).sum(), rel=1e-12)
    assert f.aic == pytest.approx(4 - 2 * f.loglik) and f.bic == pytest.approx(2 * math.log(r.size) - 2 * f.loglik)


def test_student_t_fit_equals_scipy_on_the_simulators_parameterization():
    r = _sample(StudentT(0.08, 0.2, 4.0), 5040, 5)
    f = fit.fit(r, "student_t")
    df, loc, scale = sps.t.fit(r)
    assert f.converged and not f.at_bound
    assert f.params["nu"] == pytest.approx(df, rel=1e-4)
    assert f.params["mu"] == pytest.approx(loc * 252, rel=1e-3)
    assert f.params["sigma"] == pytest.approx(scale * math.sqrt(252) / math.sqrt((df - 2) / df), rel=1e-4)
    assert f.loglik == pytest.approx(sps.t.logpdf(r, df, loc, scale).sum(), rel=1e-9)
    assert isinstance(f.process, StudentT) and f.process.nu == f.params["nu"]


def test_garch_t_fit_recovers_a_known_truth_within_its_standard_errors():
    true = GarchT(mu=0.08, sigma=0.2, alpha=0.08, beta=0.9, nu=6.0)
    r = _sample(true, 10080, 4)
    f = fit.fit(r, "garch_t")
    assert f.converged and f.status == "converged", f.status
    for k in ("mu", "sigma", "alpha", "beta", "nu"):
        assert abs(f.params[k] - getattr(true, k)) < 4 * f.se[k], (k, f.params[k], f.se[k])
        assert 0 < f.se[k] < abs(getattr(true, k)), k
    assert f.params["alpha"] + f.params["beta"] < 1
    t = fit.fit(r, "student_t")
    assert f.aic < t.aic - 100 and f.bic < t.bic  # the data prefer the model they came from
    res = engine.simulate(f.process, n_paths=256, n_steps=252, seed=0)  # the fitted object is a process
    assert np.isfinite(res.stats.log_wealth).all()
    table = f.table()
    assert list(table.parameter[:5]) == ["mu", "sigma", "alpha", "beta", "nu"] and set(table.status) == {"converged"}


def test_fit_says_what_it_cannot_do():
    r = _sample(Gaussian(0.08, 0.2), 2520, 2)
    t = fit.fit(r, "student_t")  # Gaussian data: nu runs off to its bound
    assert t.at_bound and "nu" in t.at_bound[0] and "on a bound" in t.status
    stuck = fit.fit(r, "garch_t", max_iter=2)
    assert not stuck.converged and stuck.status.startswith("NOT CONVERGED")
    with pytest.raises(ParameterError, match="fit.model"):
        fit.fit(r, "merton_typo")
    bad = r.copy()
    bad[7] = np.nan
    with pytest.raises(ParameterError, match="position 7"):
        fit.fit(bad, "gaussian")
    with pytest.raises(ParameterError, match="number of returns"):
        fit.fit(r[:10], "gaussian")
