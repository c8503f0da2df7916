"""Kelly under the posterior of fitted models: the closed form, the experiment end to end, bad input."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from sim import engine, fit, kelly
from sim.processes import Gaussian, PosteriorDraws
from tests.conftest import ROOT, run_module

# NUTS on the Gaussian only (the Student-t's: tests/test_fit.py)
TINY = ["models=[gaussian,student_t]", "posterior.nuts_models=[gaussian]", "posterior.num_warmup=100",
        "posterior.num_chains=2",
        "posterior.num_samples=100", "optimizer.n_paths=512", "evaluation.n_paths=512", "evaluation.years=2",
        "posterior.laplace_draws=500", "synthetic.process._target_=sim.processes.StudentT",
        "~synthetic.process.alpha", "~synthetic.process.beta", "synthetic.sample_years=10",
        "sp500.start=2000-01-01"]  # both samples ~2,500 days: one compiled likelihood per model (sim.fit.padded)


def test_kelly_under_the_laplace_posterior_is_the_bayes_closed_form():
    """Gaussian returns, sigma known (held in the fit), T = 2 years of data, bets held a year:
    the Laplace posterior of mu is N(mu_hat, sigma^2 / T) exactly, and Kelly under it is the
    predictive optimum; f_plugin T / (T + tau) to second order."""
    sigma, T, tau = 0.3, 2.0, 1.0
    r = np.asarray(engine.sample_returns(Gaussian(0.06, sigma), seed=5, n_paths=1, n_steps=504, block_size=1)[0],
                   np.float64)
    f = fit.fit(r, "gaussian", fixed={"sigma": sigma})
    assert f.se["mu"] == pytest.approx(sigma / math.sqrt(T), rel=1e-6)
    post = f.laplace(1 << 17, seed=2)
    assert isinstance(post, PosteriorDraws) and post.names == ("mu",)
    assert np.std(post.draws[:, 0]) == pytest.approx(sigma / math.sqrt(T), rel=0.01)
    mu_hat = f.params["mu"]
    kw = dict(seed=21, n_paths=1 << 17, n_steps=1, steps_per_year=1.0 / tau)
    res = kelly.optimize(kelly.GrowthObjective(post, **kw), x0=0.3)
    exact = kelly.gaussian_kelly_discrete(mu_hat, sigma * math.sqrt(1 + tau / T), tau)
    assert abs(res.full_fraction - exact) < 3 * res.fraction_se, (res.full_fraction, exact, res.fraction_se)
    plug = kelly.optimize(kelly.GrowthObjective(Gaussian(mu_hat, sigma), **kw), x0=0.3)
    assert res.full_fraction / plug.full_fraction == pytest.approx(kelly.bayes_shrinkage(T, tau), abs=0.05)


def test_a_kelly_fraction_against_a_wipe_out_barrier_says_so():
    """The S&P 500's Student-t fit on 1990-2009 (nu ~ 2.9) draws a -100% day among 512 x 252
    steps, so f = 1 wipes a path out and the numeric optimum sits just below it (measured:
    0.978 at 512 paths, 0.997 at 4,096): flagged as sample-dependent. A Gaussian's is not."""
    from sim.data import load_sp500_index, simple_returns

    r = simple_returns(load_sp500_index()).loc["1990":"2009"].to_numpy()
    t = fit.fit(r, "student_t")
    kw = dict(seed=0, n_paths=512, n_steps=252, steps_per_year=252)
    obj = kelly.GrowthObjective(t.process, **kw)
    res = kelly.optimize(obj)
    assert not np.isfinite(obj.values_and_se(np.array([1.0], np.float32))[0][0])  # f = 1 wipes a path out
    assert 0.9 < res.full_fraction < 1.0
    assert "moves with the number of paths" in kelly.pinned_note(obj, res.full_fraction)
    gauss = kelly.GrowthObjective(Gaussian(0.08, 0.2), **kw)
    assert kelly.pinned_note(gauss, kelly.optimize(gauss).full_fraction) == ""


def test_posterior_kelly_runs_end_to_end(tmp_path):
    out = run_module("experiments.posterior_kelly", [f"hydra.run.dir={tmp_path}", *TINY, "intervals.method=profile",
                                                      "intervals.parameters=[nu]"])
    assert out.returncode == 0, out.stderr[-3000:]
    for name in ("fits.csv", "model_comparison.csv", "policies.csv", "posterior.csv", "growth_curve.csv",
                 "growth_curve.png", "posterior.png", "summary.json"):
        assert (tmp_path / name).stat().st_size > 0, name
    comparison = pd.read_csv(tmp_path / "model_comparison.csv")
    sp = comparison[comparison.part == "sp500"]
    assert sp.model.iloc[0] == "student_t" and sp.d_aic.iloc[1] > 300  # fat tails, by a mile (638 on 2000-2009)
    assert sp.akaike_weight.sum() == pytest.approx(1.0)
    pol = pd.read_csv(tmp_path / "policies.csv")
    per_model = {"gaussian": {"plug_in", "fractional", "laplace", "nuts", "drawdown"},
                 "student_t": {"plug_in", "fractional", "laplace", "drawdown"}}
    for (part, model), sub in pol.groupby(["part", "model"]):
        assert set(sub.policy) == per_model[model], (part, model)
    frac = pol.set_index(["part", "model", "policy"]).fraction
    for part in ("sp500", "synthetic"):
        for model in per_model:
            assert frac[(part, model, "fractional")] == pytest.approx(0.5 * frac[(part, model, "plug_in")], rel=1e-6)
    wiped = pol[~np.isfinite(pol.time_avg_growth)]
    assert (wiped.wipeout_probability > 0).all() and all("wiped out" in str(n) for n in wiped.evaluation_note)
    assert pol[np.isfinite(pol.time_avg_growth)].evaluation_note.isna().all()  # empty: no note
    pinned = {f"{r.model}/{r.policy}" for r in pol[pol.part == "sp500"].itertuples() if isinstance(r.note, str)}
    post = pd.read_csv(tmp_path / "posterior.csv")
    assert {"r_hat", "ess_bulk", "status"} <= set(post.columns) and set(post.parameter) == {"mu", "sigma"}
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["sp500"]["preferred_model"] == "student_t"
    fits = pd.read_csv(tmp_path / "fits.csv")
    for part in ("sp500", "synthetic"):  # each fit's status, in the summary as in the table
        status = fits[fits.part == part].groupby("model").status.first().to_dict()
        assert summary[part]["fit_status"] == status and set(status) == set(per_model), (part, status)
    nu = fits[fits.parameter == "nu"]  # the profile interval asked for, of the model that has nu
    assert len(nu) == 2 and (nu.interval.str.startswith("profile")).all() and (nu.model == "student_t").all()
    assert ((nu.low < nu.estimate) & (nu.estimate < nu.high)).all()
    others = fits[~fits.parameter.isin(["nu", "loglik", "aic", "bic", "n_obs"])]
    assert len(others) == 8 and others.interval.str.startswith("Wald").all()  # mu, sigma of both models, both parts
    assert set(summary["sp500"]["pinned_by_worst_draw"]) == pinned  # the table's notes, in the summary
    against = summary["synthetic"]["against_plug_in"]["gaussian"]
    assert set(against) >= {"plug_in_fraction", "laplace", "nuts", "fractional", "drawdown"}
    assert against["fractional"]["fraction_over_plug_in"] == pytest.approx(0.5, rel=1e-6)
    assert np.isfinite(against["laplace"]["growth_minus_plug_in_se"])


@pytest.mark.parametrize("override, message", [
    ("models=[gaussian,nope]", "models: 'nope' is not a fitted model"),
    ("sp500.fit_end=1990-03-01", "sp500.start..fit_end"),
    ("posterior.priors.nu=[cauchy,0,1]", "posterior.priors.nu"),
    ("posterior.num_samples=10", "posterior.num_samples"),
    ("intervals.method=bayes", "intervals.method = 'bayes'; allowed"),
    ("intervals.parameters=[rho]", "intervals.parameters: ['rho'] are not parameters"),
])
def test_posterior_kelly_rejects_bad_input_before_work(override, message):
    from hydra import compose, initialize_config_dir

    from experiments import posterior_kelly

    with initialize_config_dir(config_dir=f"{ROOT}/conf", version_base="1.3"):
        cfg = compose("posterior_kelly", overrides=[override])
    with pytest.raises(Exception, match=message.replace("[", r"\[").replace(".", r"\.")):
        posterior_kelly.check(cfg)


def test_the_per_draw_kelly_fraction_is_mean_over_variance():
    from sim.processes import Merton

    draws = PosteriorDraws(Gaussian(0.08, 0.2), names=("mu", "sigma"),
                           draws=np.array([[0.08, 0.2], [0.04, 0.1]], np.float32))
    got = kelly.second_order_kelly_of_draws(draws, risk_free=0.01)
    assert got == pytest.approx([(0.08 - 0.01) / 0.04, (0.04 - 0.01) / 0.01], rel=1e-6)
    jumps = PosteriorDraws(Merton(), names=("lam",), draws=np.array([[2.0]], np.float32))
    mean, var = Merton(lam=2.0).annual_moments()
    assert kelly.second_order_kelly_of_draws(jumps)[0] == pytest.approx(mean / var, rel=1e-6)


def test_padded_posterior_draws_give_the_same_paths_and_moments():
    """``PosteriorDraws.padded`` (what the Kelly objective runs, so that posteriors of 1,600 and
    4,000 draws share one compiled program) takes every path's row as the unpadded draws do."""
    from sim.engine import simulate
    from sim.processes import StudentT

    rng = np.random.default_rng(0)
    rows = np.column_stack([0.08 + 0.03 * rng.standard_normal(1600), 0.2 + 0.01 * rng.standard_normal(1600),
                            4.0 + rng.random(1600)]).astype(np.float32)
    post = PosteriorDraws(StudentT(), names=("mu", "sigma", "nu"), draws=rows)
    pad = post.padded()
    assert pad.draws.shape == (4096, 3) and int(pad.n_rows) == 1600 and np.array_equal(pad.rows, rows)
    a, b = (simulate(p, seed=5, n_paths=3000, n_steps=50).stats for p in (post, pad))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert np.array_equal(post.moments_of_draws()[0], pad.moments_of_draws()[0])
    assert post.annual_moments() == pad.annual_moments()
    other = PosteriorDraws(StudentT(), names=("mu", "sigma", "nu"), draws=np.repeat(rows, 2, axis=0)[:4000]).padded()
    assert other.draws.shape == pad.draws.shape  # one program for both sizes


@pytest.mark.slow
def test_posterior_kelly_runs_the_mixture_models_end_to_end(tmp_path):
    """Merton and the regime model through the whole experiment (fits, Laplace posteriors,
    every sizing policy, the out-of-sample evaluation), on the S&P 500 and on a simulated
    Merton series: each gets its rows, a finite fraction, and its fit's status in the summary."""
    args = ["models=[merton,regime_switching]", "posterior.nuts=false", "optimizer.n_paths=512",
            "evaluation.n_paths=512", "evaluation.years=2", "posterior.laplace_draws=500",
            "synthetic.process._target_=sim.processes.Merton", "~synthetic.process.alpha", "~synthetic.process.beta",
            "~synthetic.process.nu", "synthetic.sample_years=2", "sp500.start=2008-01-01",
            "sp500.fit_end=2009-12-31", "plots=false"]  # both ~504 days: one compiled likelihood per model
    out = run_module("experiments.posterior_kelly", [f"hydra.run.dir={tmp_path}", *args])
    assert out.returncode == 0, out.stderr[-3000:]
    pol = pd.read_csv(tmp_path / "policies.csv")
    fits = pd.read_csv(tmp_path / "fits.csv")
    summary = json.loads((tmp_path / "summary.json").read_text())
    for part in ("sp500", "synthetic"):
        for model in ("merton", "regime_switching"):
            sub = pol[(pol.part == part) & (pol.model == model)]
            table = fits[(fits.part == part) & (fits.model == model)].set_index("parameter")
            assert set(table.index) >= set(fit.SPECS[model]["names"]), (part, model)
            skipped = summary[part]["not_sized"]
            if model in skipped:  # a fit the simulator cannot run: no rows, and its status says why
                assert sub.empty and "outside the simulator's range" in table.status.iloc[0], table.status.iloc[0]
                continue
            has_se = np.isfinite(table.loc[list(fit.SPECS[model]["names"]), "se"]).all()
            # a Laplace posterior where the fit has one and its draws can run (else: said in not_sized)
            laplace = has_se and f"{model}/laplace" not in skipped
            assert all("out of range" in v for v in skipped.values()), skipped
            assert set(sub.policy) == {"plug_in", "fractional", "drawdown"} | ({"laplace"} if laplace else set())
            assert has_se or "on a bound" in table.status.iloc[0] or "not converge" in table.status.iloc[0]
            assert np.isfinite(sub.fraction).all() and (sub.fraction.abs() < 100).all(), sub.fraction.tolist()
        assert set(summary[part]["fit_status"]) == {"merton", "regime_switching"}
        assert summary[part]["preferred_model"] in ("merton", "regime_switching")
        assert summary[part]["sized_model"] not in summary[part]["not_sized"]
    truth = fits[(fits.part == "synthetic") & (fits.model == "merton")].set_index("parameter")
    assert abs(truth.loc["sigma", "estimate"] - 0.18) < 4 * truth.loc["sigma", "se"]  # the simulated truth's sigma
