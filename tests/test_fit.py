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


def test_a_fitted_process_from_a_config_writes_its_fit_table(tmp_path):
    import os
    import subprocess
    import sys

    import pandas as pd

    from sim.data import load_returns, load_sp500_index, simple_returns
    from tests.conftest import ROOT

    r = simple_returns(load_sp500_index()).loc["2000":"2004"]
    path = tmp_path / "mine.csv"
    pd.DataFrame({"Date": r.index.strftime("%Y-%m-%d"), "ret": r.to_numpy()}).to_csv(path, index=False)
    assert load_returns(path)["ret"].to_numpy() == pytest.approx(r.to_numpy())
    direct = fit.fit(r.to_numpy(), "student_t")
    out = subprocess.run([sys.executable, "-m", "experiments.time_vs_ensemble", f"hydra.run.dir={tmp_path / 'run'}",
                          "process=fitted", "process.model=student_t", f"process.data={path}", "process.kind=returns",
                          "coin.n_players=200", "coin.n_rounds=5", "market.n_paths=256", "market.years=0.1",
                          "engine.block_size=128"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert out.returncode == 0, out.stderr[-2000:]
    table = pd.read_csv(tmp_path / "run" / "fit.csv").set_index("parameter")
    for k, v in direct.params.items():
        assert table.loc[k, "estimate"] == pytest.approx(v, rel=1e-8), k
    assert table.loc["aic", "estimate"] == pytest.approx(direct.aic) and set(table.status) == {"converged"}
    held = fit.fit_data("student_t", mu=0.08, sigma=0.2, start="2000", end="2004")
    assert held.params["mu"] == 0.08 and held.fixed == ("mu", "sigma") and held.k == 1
    assert math.isnan(held.se["mu"]) and held.se["nu"] > 0
    bad = tmp_path / "bad.csv"
    bad.write_text("Date,ret\n2020-01-01,0.01\n2020-01-02,abc\n")
    with pytest.raises(ParameterError, match=r"bad.csv: column 'ret' on 2020-01-02"):
        load_returns(bad)


def test_laplace_posterior_draws_keep_the_fits_covariance_and_run_as_a_process():
    from sim import kelly
    from sim.processes import PosteriorDraws

    r = _sample(StudentT(0.08, 0.2, 4.0), 2520, 7)
    f = fit.fit(r, "student_t")
    post = f.laplace(4000, seed=1)
    assert isinstance(post, PosteriorDraws) and post.names == ("mu", "sigma", "nu")
    d = np.asarray(post.draws, np.float64)
    assert (d[:, 1] > 0).all() and (d[:, 2] > 2).all()  # every draw a valid model
    for i, k in enumerate(post.names):  # near the estimate, the delta method: the observed information
        assert d[:, i].std() == pytest.approx(f.se[k], rel=0.15), k
        assert abs(np.median(d[:, i]) - f.params[k]) < 0.3 * f.se[k], k  # the transforms keep the median
    res = engine.simulate(post, n_paths=4096, n_steps=252, seed=0)
    assert np.isfinite(res.stats.log_wealth).all()
    obj = kelly.GrowthObjective(post, seed=0, n_paths=1024, n_steps=252)
    assert np.isfinite(obj(0.5))
    with pytest.raises(ParameterError, match="PosteriorDraws"):
        PosteriorDraws(f.process, names=("mu", "sigma"), draws=d).validate(1 / 252)
    with pytest.raises(ParameterError, match="no Laplace posterior"):
        fit.fit(r, "garch_t", max_iter=2).laplace(10)


def test_replay_and_block_bootstrap_take_a_days_by_assets_matrix():
    from sim import data, kelly
    from sim.processes import BlockBootstrap, Replay

    R = data.simple_returns(data.load_sp500_constituents().loc["2010":"2015"].iloc[:, :3]).to_numpy(np.float32)
    bb = BlockBootstrap(R, 20.0)
    assert bb.n_assets == 3 and BlockBootstrap(R[:, 0]).n_assets == 0
    mean, cov = bb.annual_moments()
    np.testing.assert_allclose(cov, np.cov(R.astype(np.float64), rowvar=False) * 252, rtol=1e-12)
    draws = np.asarray(engine.sample_returns(bb, seed=1, n_paths=16, n_steps=64, block_size=16))
    assert draws.shape[-1] == 3
    rows = {tuple(r) for r in R}
    assert all(tuple(x) in rows for x in draws.reshape(-1, 3))  # every day's cross-section kept together
    res = engine.simulate(Replay(R), policy=engine.ConstantMix(np.full(3, 1 / 3, np.float32)), n_paths=1,
                          n_steps=len(R), block_size=1, record_paths=1)
    direct = np.prod(1 + R.astype(np.float64) @ np.full(3, 1 / 3))
    assert np.exp(float(res.recorded[-1, 0])) == pytest.approx(direct, rel=1e-4)
    best = kelly.optimize(kelly.GrowthObjective(bb, seed=0, n_paths=1024, n_steps=252), long_only=True, budget=1.0)
    assert best.converged and best.constraint["kkt_ok"] and best.full_fraction.sum() <= 1 + 1e-6
    with pytest.raises(ParameterError, match="days x assets"):
        BlockBootstrap(np.zeros((2, 2, 2))).validate(1 / 252)
