"""Plug-in vs fractional vs uncertainty-aware vs drawdown-constrained Kelly (seed 000 §2.3).

(a) Synthetic: a known fat-tailed world (default Student-t, nu = 3). The policies are fitted
    on one observed sample of ``synthetic.sample_years`` and evaluated on the true model. The
    fitted Gaussian Kelly fraction is also computed on ``n_datasets`` independent samples, to
    show what estimation error costs in growth under the true model.
(b) The shipped S&P 500 daily returns: fitted on 1990..``sp500.fit_end`` (a Student-t by
    maximum likelihood), evaluated out of sample by a stationary block bootstrap of the rest.

Policies: ``plug_in`` (numeric Kelly on the fitted model), ``fractional`` (``c`` times it),
``uncertainty`` (numeric Kelly on the posterior of the mean, ``sim.processes.
ParameterUncertainty``, daily rebalancing), ``drawdown`` (maximum growth subject to
P(max drawdown > level over the horizon) <= probability).

Also: the shrinkage of Kelly under an unknown mean against the sample length, simulated and
in closed form (``sim.kelly.bayes_shrinkage``), with the frequentist optimum multiple.

Writes ``policies.csv`` (one row per part and policy), ``growth_curve.csv``,
``shrinkage.csv``, ``datasets.csv``, ``summary.json`` and the plots ``growth_curve.png``,
``terminal_wealth.png``, ``shrinkage.png``.
"""

from __future__ import annotations

import logging
import math
import time

import hydra
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from experiments.harness import OutputWriter, build_process, hydra_main  # noqa: E402
from sim import engine, kelly  # noqa: E402
from sim.data import load_sp500_index, simple_returns  # noqa: E402
from sim.processes import BlockBootstrap, Gaussian, ParameterUncertainty, StudentT  # noqa: E402
from sim.validation import ParameterError, check_int, check_range  # noqa: E402

log = logging.getLogger(__name__)


def _policies(fitted, sample_years: float, cfg: DictConfig, seed: int) -> tuple[dict, float]:
    """The four policies' fractions for a fitted model (numeric Kelly on common random
    numbers), and the drawdown-constrained policy's breach probability on fresh draws."""
    p, o, spy = cfg.policies, cfg.optimizer, float(cfg.steps_per_year)
    kw = dict(seed=seed, n_paths=o.n_paths, n_steps=round(o.years * spy), steps_per_year=spy, risk_free=cfg.risk_free)
    plug = kelly.optimize(kelly.GrowthObjective(fitted, **kw))
    mu_sd = fitted.sigma / math.sqrt(sample_years)
    posterior = ParameterUncertainty(fitted, names=("mu",), kinds=("normal",), loc=np.array([fitted.mu]),
                                     scale=np.array([mu_sd]), shift=np.array([0.0]))
    unc = kelly.optimize(kelly.GrowthObjective(posterior, **kw))
    dd_kw = dict(kw, n_steps=round(p.drawdown_horizon_years * spy))
    dd = kelly.optimize(kelly.GrowthObjective(fitted, drawdown=(p.drawdown_level, p.drawdown_probability), **dd_kw))
    fractions = {
        "plug_in": plug.full_fraction,
        "fractional": p.fractional_multiple * plug.full_fraction,
        "uncertainty": unc.full_fraction,
        "drawdown": dd.full_fraction,
    }
    return fractions, dd.breach_probability


def _part(name: str, fitted, sample_years: float, evaluation, cfg: DictConfig, eval_seed: int, grid_hi: float) -> dict:
    """Fit -> policies -> evaluation on ``evaluation`` (the truth, or the out-of-sample
    bootstrap): the table rows, terminal log-wealth per policy, the growth curve g(f) of
    the evaluation model with its standard error, and its own Kelly optimum. The policies are
    fitted on ``cfg.seed``'s draws; the evaluation uses ``eval_seed`` and ``eval_seed + 1``."""
    spy = float(cfg.steps_per_year)
    fractions, breach = _policies(fitted, sample_years, cfg, cfg.seed)
    rows, wealth = _evaluate(evaluation, fractions, cfg, eval_seed, spy)
    objective = kelly.GrowthObjective(evaluation, seed=eval_seed + 1, n_paths=cfg.optimizer.n_paths,
                                      n_steps=round(cfg.optimizer.years * spy), steps_per_year=spy,
                                      risk_free=cfg.risk_free)
    optimum = kelly.optimize(objective, x0=0.5)
    grid = np.linspace(0.0, max(grid_hi, 1.2 * max(fractions.values()), 1.5 * optimum.full_fraction), 81)
    g, se = objective.values_and_se(grid)
    return dict(
        fractions=fractions, drawdown_breach_fresh=breach, rows=[{"part": name, **r} for r in rows], wealth=wealth,
        objective=objective, optimum=optimum,
        curve=pd.DataFrame({"part": name, "fraction": grid, "growth": g, "growth_se": se}),
    )


def _evaluate(process, fractions: dict, cfg: DictConfig, seed: int, steps_per_year: float) -> tuple[list, dict]:
    rows, wealth = [], {}
    e = cfg.evaluation
    for name, f in fractions.items():
        res = engine.simulate(process, seed=seed, n_paths=e.n_paths, n_steps=round(e.years * steps_per_year),
                              steps_per_year=steps_per_year, policy=engine.ConstantMix(f, cfg.risk_free, e.floor))
        s = res.summary()
        wealth[name] = res.stats.log_wealth
        rows.append({"policy": name, "fraction": f, **{k: s[k] for k in (
            "time_avg_growth", "time_avg_growth_se", "time_avg_growth_median", "median_wealth", "ruin_probability",
            "p_max_drawdown_gt_50", "max_drawdown_median", "es99", "cagr_median", "calmar_median")}})
    return rows, wealth


def _check_and_load(cfg, spy: float):
    """Every parameter checked before any work; the true model and the S&P 500's fit and test parts."""
    check_range("synthetic.sample_years", cfg.synthetic.sample_years, 0.0, lo_closed=False)
    n_datasets = check_int("synthetic.n_datasets", cfg.synthetic.n_datasets, 2)
    check_range("policies.fractional_multiple", cfg.policies.fractional_multiple, 0.0, 10.0, lo_closed=False)
    check_range("policies.drawdown_level", cfg.policies.drawdown_level, 0.0, 1.0, lo_closed=False, hi_closed=False)
    check_range("policies.drawdown_probability", cfg.policies.drawdown_probability, 0.0, 1.0, lo_closed=False,
                hi_closed=False)
    for T in cfg.shrinkage.sample_years:
        check_range("shrinkage.sample_years", T, 0.0, lo_closed=False)
    true = build_process(cfg.synthetic.process, steps_per_year=spy)
    if not isinstance(true, StudentT):
        raise ParameterError(f"synthetic.process must be a StudentT (the fitted family), got {type(true).__name__}")
    prices = load_sp500_index()
    returns = simple_returns(prices)
    fit_part = returns.loc[: cfg.sp500.fit_end].to_numpy()
    test_part = returns.loc[cfg.sp500.fit_end:].iloc[1:].to_numpy()
    if fit_part.size < 252 or test_part.size < 252:
        raise ParameterError(f"sp500.fit_end = {cfg.sp500.fit_end!r} leaves under a year on one side")
    return true, n_datasets, fit_part, test_part


def _shrinkage(cfg, spy: float):
    """Shrinkage of the Kelly fraction against the sample length: simulated (posterior-averaged
    growth) vs the closed forms, for an unknown mean and a known sigma."""
    tau, sh = float(cfg.shrinkage.holding_years), []
    base = Gaussian(0.06, 0.3)
    plug = kelly.optimize(kelly.GrowthObjective(base, seed=cfg.seed, n_paths=1 << 16, n_steps=1,
                                                steps_per_year=1 / tau), x0=0.3)
    for T in cfg.shrinkage.sample_years:
        post = ParameterUncertainty(base, names=("mu",), kinds=("normal",), loc=np.array([base.mu]),
                                    scale=np.array([base.sigma / math.sqrt(T)]), shift=np.array([0.0]))
        res = kelly.optimize(kelly.GrowthObjective(post, seed=cfg.seed, n_paths=1 << 16, n_steps=1,
                                                   steps_per_year=1 / tau), x0=0.3)
        sh.append({"sample_years": T, "simulated": res.full_fraction / plug.full_fraction,
                   "simulated_se": res.fraction_se / plug.full_fraction,
                   "bayes_closed_form": kelly.bayes_shrinkage(T, tau),
                   "bayes_daily_rebalancing": kelly.bayes_shrinkage(T, 1 / spy),
                   "frequentist_optimum": kelly.frequentist_shrinkage(base.mu / base.sigma, T)})
    shrink = pd.DataFrame(sh)
    return shrink, tau, base


def _plots(out, curve: pd.DataFrame, parts: dict, shrink: pd.DataFrame, tau: float, spy: float, base, years) -> None:
    """The growth curves with each policy's fraction, the terminal wealth per policy, the shrinkage."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, (part, sub) in zip(axes, curve.groupby("part", sort=False)):
        ax.plot(sub.fraction, sub.growth, color="k", label="g(f) on the evaluation model")
        ax.fill_between(sub.fraction, sub.growth - 1.96 * sub.growth_se, sub.growth + 1.96 * sub.growth_se,
                        color="k", alpha=0.15, label="95% band (per-path spread)")
        for i, (name, f) in enumerate(parts[part]["fractions"].items()):
            ax.axvline(f, color=f"C{i}", ls="--", label=f"{name} f = {f:.2f}")
        wiped = sub.fraction[~np.isfinite(sub.growth)]
        if len(wiped):
            ax.axvspan(wiped.min(), sub.fraction.max(), color="C3", alpha=0.1,
                       label=f"g = -inf: some path wiped out (f >= {wiped.min():.2f})")
        finite = sub.growth[np.isfinite(sub.growth)]
        if len(finite):
            ax.set_ylim(max(finite.min(), finite.max() - 0.3), finite.max() + 0.02)
        ax.set_title(f"{part}: growth per year vs fraction")
        ax.set_xlabel("fraction f")
        ax.legend(fontsize=7)
    out.figure("growth_curve.png", fig)

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, (part, w) in zip(axes, ((k, v["wealth"]) for k, v in parts.items())):
        data = [np.clip(v / math.log(10), -3, None) for v in w.values()]
        ax.boxplot(data, showfliers=False)
        ax.set_xticks(range(1, len(w) + 1), list(w))
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_ylabel(f"log10 terminal wealth after {years} years")
        ax.set_title(f"{part}: terminal wealth per policy")
    out.figure("terminal_wealth.png", fig)

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    ax.errorbar(shrink.sample_years, shrink.simulated, yerr=1.96 * shrink.simulated_se, fmt="o", label="simulated (posterior-averaged growth)")
    Ts = np.geomspace(min(shrink.sample_years), max(shrink.sample_years), 100)
    ax.plot(Ts, kelly.bayes_shrinkage(Ts, tau), label=f"T / (T + tau), tau = {tau:g} y")
    ax.plot(Ts, kelly.bayes_shrinkage(Ts, 1 / spy), label="same, daily rebalancing")
    ax.plot(Ts, kelly.frequentist_shrinkage(base.mu / base.sigma, Ts), label="frequentist optimum k*")
    ax.set_xscale("log")
    ax.set_xlabel("sample length T (years)")
    ax.set_ylabel("Kelly fraction / plug-in")
    ax.set_title(f"Unknown mean, known sigma (mu {base.mu}, sigma {base.sigma})")
    ax.legend(fontsize=7)
    out.figure("shrinkage.png", fig)


def run(cfg: DictConfig, out_dir) -> dict:
    t_start = time.perf_counter()
    spy = float(cfg.steps_per_year)
    true, n_datasets, fit_part, test_part = _check_and_load(cfg, spy)
    out = OutputWriter(out_dir)

    # (a) synthetic: one observed sample, fitted, policies, evaluated on the truth.
    n_obs = round(cfg.synthetic.sample_years * spy)
    observed = engine.sample_returns(true, seed=cfg.seed + 101, n_paths=1, n_steps=n_obs, block_size=1)[0]
    mu, sigma, nu = kelly.fit_student_t(observed, steps_per_year=spy)
    synth = _part("synthetic", StudentT(mu, sigma, nu), cfg.synthetic.sample_years, true, cfg, cfg.seed + 1,
                  grid_hi=2.0 * float(kelly.reference_kelly(true)))

    # The cost of estimation error: fitted Gaussian Kelly on many independent samples,
    # each rule's growth evaluated under the true model on the same draws (no interpolation).
    rng = np.random.default_rng(cfg.seed)
    mu_hat = true.mu + true.sigma / math.sqrt(cfg.synthetic.sample_years) * rng.standard_normal(n_datasets)
    f_hat = mu_hat / true.sigma**2
    theta_hat = mu_hat / true.sigma
    k_hat = np.clip((theta_hat**2 - 1 / cfg.synthetic.sample_years) / np.maximum(theta_hat**2, 1e-12), 0, 1)
    datasets = pd.DataFrame({"mu_hat": mu_hat, "f_plug_in": f_hat, "f_half": 0.5 * f_hat, "f_shrunk": k_hat * f_hat})
    for col in ("f_plug_in", "f_half", "f_shrunk"):
        datasets["growth_" + col[2:]] = synth["objective"].values(datasets[col].to_numpy())
    out.table("datasets.csv", datasets)

    # (b) S&P 500: fit in sample, evaluate on a block bootstrap of the out-of-sample years.
    mu_s, sigma_s, nu_s = kelly.fit_student_t(fit_part, steps_per_year=spy)
    oos = BlockBootstrap(test_part.astype(np.float32), cfg.sp500.mean_block)
    sp = _part("sp500_out_of_sample", StudentT(mu_s, sigma_s, nu_s), fit_part.size / spy, oos, cfg, cfg.seed + 3,
               grid_hi=0.0)
    parts = {"synthetic": synth, "sp500_out_of_sample": sp}

    shrink, tau, base = _shrinkage(cfg, spy)

    table = pd.DataFrame([r for part in parts.values() for r in part["rows"]])
    curve = pd.concat([part["curve"] for part in parts.values()], ignore_index=True)
    out.table("policies.csv", table)
    out.table("growth_curve.csv", curve)
    out.table("shrinkage.csv", shrink)

    _plots(out, curve, parts, shrink, tau, spy, base, cfg.evaluation.years)

    summary = {
        "experiment": "kelly",
        "seed": cfg.seed,
        "synthetic": {
            "true": {"mu": true.mu, "sigma": true.sigma, "nu": true.nu},
            "fitted": {"mu": mu, "sigma": sigma, "nu": nu},
            "true_growth_optimal_fraction": synth["optimum"].full_fraction,
            "gaussian_kelly_of_truth": float(kelly.reference_kelly(true)),
            "fractions": synth["fractions"],
            "drawdown_breach_fresh": synth["drawdown_breach_fresh"],
            "estimation_error": {
                **{f"{rule}_{stat}": value for rule in ("plug_in", "half", "shrunk") for stat, value in (
                    ("expected_growth", float(datasets["growth_" + rule].mean())),
                    ("median_growth", float(datasets["growth_" + rule].median())),
                    ("share_wiped_out", float((~np.isfinite(datasets["growth_" + rule])).mean())),
                )},
                "share_levered_plug_in": float((datasets.f_plug_in > 1).mean()),
                "share_short_plug_in": float((datasets.f_plug_in < 0).mean()),
                "growth_at_true_optimum": synth["optimum"].full_growth,
            },
        },
        "sp500": {"fit_end": cfg.sp500.fit_end, "fitted": {"mu": mu_s, "sigma": sigma_s, "nu": nu_s},
                  "fractions": sp["fractions"], "drawdown_breach_fresh": sp["drawdown_breach_fresh"],
                  "out_of_sample_growth_optimal_fraction": sp["optimum"].full_fraction},
        "policies": table.to_dict(orient="records"),
        "shrinkage": shrink.to_dict(orient="records"),
    }
    out.finish(summary, t_start)
    log.info("synthetic fractions %s; S&P 500 fractions %s; out-of-sample optimum %.3f",
             {k: round(v, 3) for k, v in synth["fractions"].items()},
             {k: round(v, 3) for k, v in sp["fractions"].items()}, sp["optimum"].full_fraction)
    return summary


@hydra.main(version_base="1.3", config_path="../conf", config_name="kelly")
def main(cfg: DictConfig) -> None:
    hydra_main(run, cfg)


if __name__ == "__main__":
    main()
