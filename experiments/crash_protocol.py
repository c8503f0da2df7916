"""Crash phase-transition detection and the three-step protocol (seed 000 §3-4).

(a) Real data: the detector (``sim.regime``) and the protocol run over the shipped S&P 500
1990-2022 with VIX where the shipped VIX covers the day (2014-2018; elsewhere the
implied-vol model's level from realized vol), a Corwin-Schultz spread from the daily high and
low where the shipped OHLCV covers the day (1999-2018), and the 20 shipped constituents.
Tables: when each stage fired relative to the trough of each crash window
(``real_stages.csv``), how often each signal fires in calm years (``real_calm.csv``); plots of
the signals and states for 2008 and 2020 (``real_2008.png``, ``real_2020.png``).

(b) Monte Carlo: each model (``models``) wrapped in ``sim.market.Market`` (constituents,
spread); the hedge overlay under each monetization policy on the same draws: hold to
expiry, profit-take at a multiple, the price-level rule, the protocol, and on regime models
the true regime as an oracle. Per policy: hedge value realized (sale and expiry proceeds),
net hedge P&L, payoff multiple and growth, mean with standard error and 5/50/95th
percentiles with bootstrap standard errors (``mc_policies.csv``); on the regime model each
signal's detection rate, lead/lag against the true regime switches and false-alarm rate on
calm steps (``mc_signals.csv``). ``summary.json`` holds everything and the verdicts.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time

import hydra
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from lab.harness import (OutputWriter, build_monetizers, build_portfolio, build_process, build_program,
                                 build_vol_model, build, hydra_main)
from sim import engine, hedge, plots, protocols, regime
from sim.data import detector_inputs
from sim.market import Market
from sim.validation import ParameterError, check_int, check_range

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- config -> objects


def build_market(cfg, base) -> Market:
    return build(cfg.market, "market", 1.0 / float(cfg.steps_per_year), base=base)


def _policies(cfg, process) -> dict:
    """The monetization policies of ``monetize`` (hold, the simple rules, the protocol, the
    regime oracle); the protocol keeps lead/lag diagnostics on a model with a regime."""
    diagnose = protocols.supports(process, protocols.TrueRegime)
    out = build_monetizers(cfg.monetize, process, diagnostics=diagnose)
    if "hold" not in out:
        raise ParameterError("monetize must include hold (the baseline of the paired comparisons)")
    return out


# --------------------------------------------------------------------------- real data


def run_real(cfg, detector, protocol):
    frame, stocks = detector_inputs(cfg.real.start, cfg.real.end, halflife_days=cfg.vol_model.halflife_days,
                                    vrp=cfg.vol_model.vrp, steps_per_year=float(cfg.steps_per_year))
    with jax.enable_x64(True):
        out = regime.run_detector(detector, protocol, x=frame["x"].to_numpy(), vix=frame["vix"].to_numpy(),
                                  r=frame["r"].to_numpy(), dt=1.0 / float(cfg.steps_per_year),
                                  log_spread=frame["log_spread"].to_numpy(), stocks=stocks, dtype=jnp.float64)
    for k, v in out.items():
        frame[k] = v
    return frame


def run_mc(cfg, detector, protocol, spy: float):
    s = cfg.simulation
    n_paths = check_int("simulation.n_paths", s.n_paths, 2)
    n_steps = check_int("simulation.years x steps_per_year", round(float(s.years) * spy), round(spy))
    n_boot = check_int("simulation.bootstrap", s.bootstrap, 0)
    kw = dict(seed=cfg.seed, n_paths=n_paths, n_steps=n_steps, steps_per_year=spy,
              block_size=min(int(s.block_size), n_paths))
    years = n_steps / spy
    rng = np.random.default_rng(cfg.seed)
    pol_rows, sig_rows = [], []
    p = build_portfolio(cfg)
    runs = {}  # model -> (process, {policy: overlay}): the policies on the same draws, one pass per model
    for model, node in cfg.models.items():
        base = build_process(node, steps_per_year=spy)
        process = build_market(cfg, base)
        vm = build_vol_model(cfg, math.sqrt(base.annual_moments()[1]))
        overlay = hedge.HedgeOverlay(fraction=p.fraction, risk_free=p.risk_free, floor=p.floor,
                                     program=build_program(cfg), vol_model=vm)
        runs[model] = (process, {name: dataclasses.replace(overlay, monetize=mon)
                                 for name, mon in _policies(cfg, process).items()})
    done = engine.simulate_each(runs, **kw, done=lambda model, res: log.info(
        "%s: %d policies x %d paths x %d steps in %.1fs", model, len(res), n_paths, n_steps,
        next(iter(res.values())).wall_seconds))
    for model, results in done.items():
        pol_rows += hedge.policy_comparison(model, results, years, rng, n_boot)
        if "protocol" in results and "episodes" in results["protocol"].extras:
            sig_rows += [{"model": model, **row} for row in regime.signal_lead_lag(results["protocol"].extras, spy)]
    return pd.DataFrame(pol_rows), pd.DataFrame(sig_rows)


# --------------------------------------------------------------------------- entry point


def check(cfg: DictConfig):
    """Every model, market, detector, protocol and policy parameter, before any work."""
    spy = float(cfg.steps_per_year)
    check_range("steps_per_year", spy, 1.0)
    detector, protocol = build(cfg.detector, "detector"), build(cfg.protocol, "protocol")
    build_portfolio(cfg)
    build_program(cfg)
    build_vol_model(cfg, 0.2)
    for node in cfg.models.values():  # every model, market and policy parameter, before any work
        _policies(cfg, build_market(cfg, build_process(node, steps_per_year=spy)))
    check_int("simulation.n_paths", cfg.simulation.n_paths, 2)
    check_int("simulation.bootstrap", cfg.simulation.bootstrap, 0)
    return detector, protocol


def run(cfg: DictConfig, out_dir) -> dict:
    t_start = time.perf_counter()
    spy = float(cfg.steps_per_year)
    detector, protocol = check(cfg)
    out = OutputWriter(out_dir, plots=cfg.plots)

    frame = run_real(cfg, detector, protocol)
    windows = OmegaConf.to_container(cfg.real.crashes, resolve=True)
    stages = regime.stage_table(frame, windows)
    out.table("real_stages.csv", stages)
    crash = regime.CrashProtocol(detector=detector, protocol=protocol)
    calm = regime.calm_table(frame, list(cfg.real.calm_years), crash)
    out.table("real_calm.csv", calm)
    cols = list(dict.fromkeys(["price", "vix", "vix_source", "log_spread", "volume", *regime.Signals._fields, "label",
                               "state", "action"]))  # vix is an input and a signal: once
    out.table("real_signals.csv", frame[cols].reset_index(names="date"))
    for name, (a, b) in OmegaConf.to_container(cfg.real.zooms, resolve=True).items():
        out.figure(f"real_{name}.png", lambda: plots.crash_zoom(frame, a, b, f"S&P 500 {name}: signals and protocol states"))
    log.info("real S&P 500 stages:\n%s", stages[["window", "event", "date", "days_from_trough"]].to_string())

    policies, signals = run_mc(cfg, detector, protocol, spy)
    out.table("mc_policies.csv", policies)
    if not signals.empty:
        out.table("mc_signals.csv", signals)
    says = hedge.protocol_verdicts(policies)
    for line in says:
        log.info(line)
    out.figure("mc_policies.png", lambda: plots.policy_pnl(policies))
    summary = {
        "experiment": "crash_protocol",
        "seed": cfg.seed,
        "detector": OmegaConf.to_container(cfg.detector, resolve=True),
        "protocol": OmegaConf.to_container(cfg.protocol, resolve=True),
        "real": {"first": str(frame.index[0].date()), "last": str(frame.index[-1].date()),
                 "days_with_vix": int((frame["vix_source"] == "VIX").sum()),
                 "days_with_spread": int(frame["log_spread"].notna().sum()),
                 "stages": stages.to_dict(orient="records"), "calm_years": calm.to_dict(orient="records")},
        "mc": {"policies": policies.to_dict(orient="records"), "signals": signals.to_dict(orient="records"),
               "verdicts": says},
    }
    out.finish(summary, t_start)
    return summary


@hydra.main(version_base="1.3", config_path="../conf", config_name="crash_protocol")
def main(cfg: DictConfig) -> None:
    hydra_main(run, cfg)


if __name__ == "__main__":
    main()
