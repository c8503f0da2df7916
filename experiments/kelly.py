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
import time

import hydra
import numpy as np
import pandas as pd
from omegaconf import DictConfig

from lab.harness import OutputWriter, build_process, hydra_main
from sim import engine, kelly, plots
from sim.data import load_sp500_index, simple_returns
from sim.processes import BlockBootstrap, Gaussian, StudentT
from sim.validation import ParameterError, check_int, check_range

log = logging.getLogger(__name__)


def _part(name: str, fitted, sample_years: float, evaluation, cfg: DictConfig, eval_seed: int, grid_hi: float) -> dict:
    """Fit -> policies -> evaluation on ``evaluation`` (the truth, or the out-of-sample
    bootstrap): the table rows, terminal log-wealth per policy, the growth curve g(f) of
    the evaluation model with its standard error, and its own Kelly optimum. The policies are
    fitted on ``cfg.seed``'s draws; the evaluation uses ``eval_seed`` and ``eval_seed + 1``."""
    spy, p, o, e = float(cfg.steps_per_year), cfg.policies, cfg.optimizer, cfg.evaluation
    fractions, breach = kelly.policy_fractions(
        fitted, sample_years, seed=cfg.seed, n_paths=o.n_paths, n_steps=round(o.years * spy), steps_per_year=spy,
        risk_free=cfg.risk_free, fractional_multiple=p.fractional_multiple, drawdown_level=p.drawdown_level,
        drawdown_probability=p.drawdown_probability, drawdown_steps=round(p.drawdown_horizon_years * spy))
    rows, wealth = kelly.evaluate_fractions(evaluation, fractions, seed=eval_seed, n_paths=e.n_paths,
                                            n_steps=round(e.years * spy), steps_per_year=spy,
                                            risk_free=cfg.risk_free, floor=e.floor)
    objective = kelly.GrowthObjective(evaluation, seed=eval_seed + 1, n_paths=o.n_paths,
                                      n_steps=round(o.years * spy), steps_per_year=spy, risk_free=cfg.risk_free)
    optimum = kelly.optimize(objective, x0=0.5)
    grid = np.linspace(0.0, max(grid_hi, 1.2 * max(fractions.values()), 1.5 * optimum.full_fraction), 81)
    g, se = objective.values_and_se(grid)
    return dict(
        fractions=fractions, drawdown_breach_fresh=breach, rows=[{"part": name, **r} for r in rows], wealth=wealth,
        objective=objective, optimum=optimum,
        curve=pd.DataFrame({"part": name, "fraction": grid, "growth": g, "growth_se": se}),
    )


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


def check(cfg: DictConfig):
    return _check_and_load(cfg, float(cfg.steps_per_year))


def run(cfg: DictConfig, out_dir) -> dict:
    t_start = time.perf_counter()
    spy = float(cfg.steps_per_year)
    true, n_datasets, fit_part, test_part = _check_and_load(cfg, spy)
    out = OutputWriter(out_dir, plots=cfg.plots)

    # (a) synthetic: one observed sample, fitted, policies, evaluated on the truth.
    n_obs = round(cfg.synthetic.sample_years * spy)
    observed = engine.sample_returns(true, seed=cfg.seed + 101, n_paths=1, n_steps=n_obs, block_size=1)[0]
    mu, sigma, nu = kelly.fit_student_t(observed, steps_per_year=spy)
    synth = _part("synthetic", StudentT(mu, sigma, nu), cfg.synthetic.sample_years, true, cfg, cfg.seed + 1,
                  grid_hi=2.0 * float(kelly.reference_kelly(true)))

    # The cost of estimation error: fitted Gaussian Kelly on many independent samples,
    # each rule's growth evaluated under the true model on the same draws (no interpolation).
    datasets = kelly.estimation_error(true, cfg.synthetic.sample_years, n_datasets, synth["objective"],
                                      np.random.default_rng(cfg.seed))
    out.table("datasets.csv", datasets)

    # (b) S&P 500: fit in sample, evaluate on a block bootstrap of the out-of-sample years.
    mu_s, sigma_s, nu_s = kelly.fit_student_t(fit_part, steps_per_year=spy)
    oos = BlockBootstrap(test_part.astype(np.float32), cfg.sp500.mean_block)
    sp = _part("sp500_out_of_sample", StudentT(mu_s, sigma_s, nu_s), fit_part.size / spy, oos, cfg, cfg.seed + 3,
               grid_hi=0.0)
    parts = {"synthetic": synth, "sp500_out_of_sample": sp}

    tau, base = float(cfg.shrinkage.holding_years), Gaussian(0.06, 0.3)
    shrink = kelly.shrinkage_table(base, cfg.shrinkage.sample_years, holding_years=tau, steps_per_year=spy,
                                   seed=cfg.seed)

    table = pd.DataFrame([r for part in parts.values() for r in part["rows"]])
    curve = pd.concat([part["curve"] for part in parts.values()], ignore_index=True)
    out.table("policies.csv", table)
    out.table("growth_curve.csv", curve)
    out.table("shrinkage.csv", shrink)

    out.figure("growth_curve.png", lambda: plots.kelly_growth_curves(curve, {k: v["fractions"] for k, v in parts.items()}))
    out.figure("terminal_wealth.png", lambda: plots.terminal_wealth({k: v["wealth"] for k, v in parts.items()},
                                                                    cfg.evaluation.years))
    out.figure("shrinkage.png", lambda: plots.shrinkage(shrink, tau, spy, base.mu, base.sigma))

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
            "estimation_error": {**kelly.estimation_error_summary(datasets),
                                 "growth_at_true_optimum": synth["optimum"].full_growth},
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
