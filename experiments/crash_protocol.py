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
import matplotlib

matplotlib.use("Agg")
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from experiments.harness import (OutputWriter, build_monetizers, build_portfolio, build_process,  # noqa: E402
                                 build_program, build_vol_model, hydra_main, instantiate)
from sim import engine, hedge, protocols, regime, stats  # noqa: E402
from sim.data import load_sp500_constituents, load_sp500_index, load_sp500_ohlcv, load_vix  # noqa: E402
from sim.market import Market  # noqa: E402
from sim.validation import ParameterError, check_int, check_range  # noqa: E402

log = logging.getLogger(__name__)

STAGE_EVENTS = {"crash_detected": "entered CRASH (HODL)", "partial": "PARTIAL MONETIZE + roll down",
                "full_exit": "FULL EXIT", "rearmed": "re-armed"}


# --------------------------------------------------------------------------- config -> objects


def build_detector(cfg) -> regime.Detector:
    d = instantiate(cfg.detector, "detector")
    d.validate()
    return d


def build_protocol(cfg) -> regime.Protocol:
    p = instantiate(cfg.protocol, "protocol")
    p.validate()
    return p


def build_market(cfg, base) -> Market:
    m = instantiate(cfg.market, "market", base=base)
    m.validate(1.0 / float(cfg.steps_per_year))
    return m


def _policies(cfg, process) -> dict:
    """The monetization policies of ``monetize`` (hold, the simple rules, the protocol, the
    regime oracle); the protocol keeps lead/lag diagnostics on a model with a regime."""
    diagnose = protocols.supports(process, protocols.TrueRegime)
    out = build_monetizers(cfg.monetize, process, diagnostics=diagnose)
    if "hold" not in out:
        raise ParameterError("monetize must include hold (the baseline of the paired comparisons)")
    return out


# --------------------------------------------------------------------------- real data


def real_inputs(cfg) -> tuple[pd.DataFrame, np.ndarray]:
    """The daily inputs of the detector on the shipped data, and the constituents' returns.

    ``vix``: VIX / 100 where the shipped VIX has the day, else the implied-vol model's level
    (EWM realized vol with the configured half-life + vrp), ``vix_source`` says which.
    ``log_spread``: log of the trailing 21-day mean Corwin-Schultz spread where the shipped
    OHLCV has the day, else NaN (the detector skips it). Its limits: the S&P 500 is an index,
    not a traded book, so its high-low range measures intraday volatility as much as any
    spread; the OHLCV's volume (shares of the index's members) rises in crashes, the opposite
    of depth, so it is kept in ``real_signals.csv`` for inspection but not used as a signal.
    """
    start, end = pd.Timestamp(cfg.real.start), pd.Timestamp(cfg.real.end)
    spx = load_sp500_index().loc[start:end]
    if len(spx) < 300:
        raise ParameterError(f"real.start..real.end holds {len(spx)} days of the shipped S&P 500; allowed: >= 300")
    frame = pd.DataFrame({"price": spx})
    frame["x"] = np.log(frame["price"])
    frame["r"] = frame["price"].pct_change().fillna(0.0)
    vm = cfg.vol_model
    hl = float(vm.halflife_days)
    realized = np.sqrt((frame["r"] ** 2).ewm(halflife=hl).mean() * float(cfg.steps_per_year))
    vix = load_vix().reindex(frame.index) / 100.0
    frame["vix_source"] = np.where(vix.notna(), "VIX", "realized+vrp")
    frame["vix"] = vix.fillna(realized + float(vm.vrp))
    ohlcv = load_sp500_ohlcv()
    cs = pd.Series(regime.corwin_schultz_spread(ohlcv["High"], ohlcv["Low"]), index=ohlcv.index)
    # The authors' practice: negative two-day estimates set to 0 (done in the estimator), then
    # averaged; here over the trailing 21 days, so the series stays causal and mostly > 0.
    cs = cs.rolling(21, min_periods=10).mean()
    frame["log_spread"] = np.log(cs.where(cs > 0)).reindex(frame.index)
    frame["volume"] = ohlcv["Volume"].reindex(frame.index)
    stocks = load_sp500_constituents().reindex(frame.index).pct_change().to_numpy(np.float64)
    stocks[0] = np.nan
    return frame, stocks


def run_real(cfg, detector, protocol):
    frame, stocks = real_inputs(cfg)
    with jax.enable_x64(True):
        out = regime.run_detector(detector, protocol, x=frame["x"].to_numpy(), vix=frame["vix"].to_numpy(),
                                  r=frame["r"].to_numpy(), dt=1.0 / float(cfg.steps_per_year),
                                  log_spread=frame["log_spread"].to_numpy(), stocks=stocks, dtype=jnp.float64)
    for k, v in out.items():
        frame[k] = v
    return frame


def _events(frame: pd.DataFrame) -> pd.DataFrame:
    """Every stage change of the protocol: date and kind."""
    state = frame["state"].to_numpy()
    prev = np.concatenate([[regime.ARMED], state[:-1]])
    rows = []
    for i in np.flatnonzero(state != prev):
        kind = {regime.CRASH: "crash_detected", regime.PARTIAL: "partial", regime.EXIT: "full_exit",
                regime.ARMED: "rearmed"}[int(state[i])]
        rows.append({"date": frame.index[i], "event": kind})
    return pd.DataFrame(rows, columns=["date", "event"])


def stage_table(frame: pd.DataFrame, windows: dict) -> pd.DataFrame:
    events = _events(frame)
    rows = []
    for name, (a, b) in windows.items():
        w = frame.loc[pd.Timestamp(a):pd.Timestamp(b)]
        if w.empty:
            continue
        trough = w["price"].idxmin()
        peak = frame.loc[pd.Timestamp(a) - pd.Timedelta(days=365):trough, "price"].idxmax()
        pos = {d: i for i, d in enumerate(frame.index)}
        sel = events[(events["date"] >= w.index[0]) & (events["date"] <= w.index[-1])]
        base = {"window": name, "peak_date": str(peak.date()), "trough_date": str(trough.date()),
                "peak_to_trough": float(w.loc[trough, "price"] / frame.loc[peak, "price"] - 1.0)}
        if sel.empty:
            rows.append({**base, "event": "none", "date": None, "days_from_trough": None})
            continue
        for _, e in sel.iterrows():
            d = e["date"]
            rows.append({**base, "event": STAGE_EVENTS[e["event"]], "date": str(d.date()),
                         "days_from_trough": pos[d] - pos[trough],
                         "price_vs_peak": float(frame.loc[d, "price"] / frame.loc[peak, "price"] - 1.0),
                         "price_vs_trough": float(frame.loc[d, "price"] / w.loc[trough, "price"] - 1.0),
                         "vix": float(frame.loc[d, "vix"]), "vix_source": frame.loc[d, "vix_source"]})
    return pd.DataFrame(rows)


def calm_table(frame: pd.DataFrame, years, protocol: regime.Protocol, crash: regime.CrashProtocol) -> pd.DataFrame:
    """Share of days each signal fires in calm years, and the protocol's entries into CRASH."""
    names = regime.DIAGNOSED
    sig = regime.Signals(**{f: jnp.asarray(frame[f].to_numpy()) for f in regime.Signals._fields})
    z = jnp.zeros(len(frame))
    p = regime.ProtocolState(jnp.asarray(frame["state"].to_numpy()), z, z, jnp.asarray(frame["action"].to_numpy()), z)
    fired = np.asarray(crash.fired(sig, p))
    events = _events(frame)
    rows = []
    for y in years:
        mask = np.asarray(frame.index.year == int(y))
        if not mask.any():
            raise ParameterError(f"real.calm_years: {y} is outside the shipped data")
        row = {"year": int(y), "days": int(mask.sum()),
               "index_return": float(frame["price"][mask].iloc[-1] / frame["price"][mask].iloc[0] - 1.0),
               "max_drawdown": float(1 - (frame["price"][mask] / frame["price"][mask].cummax()).min()),
               "crash_entries": int(((events["date"].dt.year == int(y)) & (events["event"] == "crash_detected")).sum())}
        for i, n in enumerate(names):
            row[n] = float(fired[i][mask].mean())
        rows.append(row)
    return pd.DataFrame(rows)


def _zoom_plot(frame: pd.DataFrame, a, b, title: str):
    w = frame.loc[pd.Timestamp(a):pd.Timestamp(b)]
    fig, ax = plt.subplots(5, 1, figsize=(11, 12), sharex=True, gridspec_kw=dict(height_ratios=[3, 1.3, 1.3, 1.3, 1.3]))
    colors = {regime.CRASH: "#f4a3a3", regime.PARTIAL: "#f8d27a", regime.EXIT: "#9fd6a0"}
    idx = w.index
    for s, c in colors.items():
        on = (w["state"] == s).to_numpy()
        ax[0].fill_between(idx, 0, 1, where=on, color=c, alpha=0.6, transform=ax[0].get_xaxis_transform(), step="post",
                           label=regime.STATE_NAMES[s])
    ax[0].plot(idx, w["price"], color="k", lw=1.2, label="S&P 500")
    for act, (m, c) in {1: ("v", "#b8860b"), 2: ("^", "#1a7f1a")}.items():
        d = w.index[w["action"] == act]
        ax[0].scatter(d, w.loc[d, "price"], marker=m, color=c, s=70, zorder=5,
                      label="partial monetize" if act == 1 else "full exit")
    lab = w["label"].to_numpy()
    ax[0].scatter(idx[lab == 1], np.full((lab == 1).sum(), w["price"].min() * 0.97), marker="|", color="r", s=30,
                  label="seed label HODL")
    ax[0].scatter(idx[lab == 2], np.full((lab == 2).sum(), w["price"].min() * 0.94), marker="|", color="g", s=30,
                  label="seed label MONETIZE")
    ax[0].set_ylabel("index")
    ax[0].set_title(title)
    ax[0].legend(loc="lower left", fontsize=7, ncol=2)
    ax[1].plot(idx, w["velocity"], label="velocity (EWM d log S)")
    ax[1].plot(idx, w["acceleration"], label="acceleration")
    ax[1].axhline(0, color="grey", lw=0.6)
    ax[1].legend(fontsize=7, loc="upper left")
    ax[2].plot(idx, w["vix"], label="implied vol (VIX / proxy)")
    ax[2].plot(idx, w["vvix"] / 10, label="VVIX proxy / 10")
    ax[2].legend(fontsize=7, loc="upper left")
    ax[3].plot(idx, w["liquidity_z"], label="log spread over normal (Corwin-Schultz)")
    ax[3].axhline(0, color="grey", lw=0.6)
    ax[3].legend(fontsize=7, loc="upper left")
    ax[4].plot(idx, w["correlation"], label="avg pairwise correlation (20 stocks)")
    ax[4].plot(idx, w["dispersion"] * 10, label="cross-sectional dispersion x10", alpha=0.6)
    ax[4].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- Monte Carlo


def _paired(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    d = stats.paired_difference(a, b)
    return d["mean"], d["mean_se"]


def _net_pnl(res, years: float) -> np.ndarray:
    """Per path and year: the hedge's net P&L (sim.hedge: proceeds + final mark - premium - costs)."""
    return res.extras["net_pnl"].astype(np.float64) / years


def mc_policy_rows(model: str, results: dict, years: float, rng, n_boot: int) -> list[dict]:
    rows = []
    base = results["hold"]
    base_net = _net_pnl(base, years)
    for name, res in results.items():
        ex = res.extras
        proceeds = ex["proceeds"].astype(np.float64) / years
        net = _net_pnl(res, years)
        with np.errstate(divide="ignore", invalid="ignore"):
            multiple = ex["proceeds"].astype(np.float64) / ex["premium"]
        growth = res.stats.log_wealth.astype(np.float64) / years
        row = {"model": model, "policy": name, "n_paths": growth.size}
        for label, x in (("realized_per_year", proceeds), ("net_pnl_per_year", net), ("payoff_multiple", multiple),
                         ("growth", growth)):
            row.update({f"{label}_{k}": v for k, v in stats.describe(x, rng=rng, n_boot=n_boot).items()})
        row["net_pnl_vs_hold"], row["net_pnl_vs_hold_se"] = _paired(net, base_net)
        if "protocol" in results:
            row["protocol_net_pnl_gain"], row["protocol_net_pnl_gain_se"] = _paired(
                _net_pnl(results["protocol"], years), net)
            with np.errstate(invalid="ignore"):
                d = _net_pnl(results["protocol"], years) - net
            row["protocol_net_pnl_gain_median"] = float(np.median(d[np.isfinite(d)]))
            row["protocol_wins_share"] = float(np.mean(d[np.isfinite(d)] > 0))
        row["growth_vs_hold"], row["growth_vs_hold_se"] = _paired(growth, base.stats.log_wealth / years)
        row["sales_per_year"] = float(np.mean(ex["sales"]) / years)
        row["wiped_out"] = float(np.mean(~np.isfinite(growth)))
        rows.append(row)
    return rows


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
    for model, node in cfg.models.items():
        base = build_process(node, steps_per_year=spy)
        process = build_market(cfg, base)
        vm = build_vol_model(cfg, math.sqrt(base.annual_moments()[1]))
        overlay = hedge.HedgeOverlay(fraction=p.fraction, risk_free=p.risk_free, floor=p.floor,
                                     program=build_program(cfg), vol_model=vm)
        results = {}
        for name, mon in _policies(cfg, process).items():
            t0 = time.perf_counter()
            results[name] = engine.simulate(process, policy=dataclasses.replace(overlay, monetize=mon), **kw)
            log.info("%s / %s: %d paths x %d steps in %.1fs", model, name, n_paths, n_steps, time.perf_counter() - t0)
        pol_rows += mc_policy_rows(model, results, years, rng, n_boot)
        if "protocol" in results and "episodes" in results["protocol"].extras:
            sig_rows += [{"model": model, **row} for row in regime.signal_lead_lag(results["protocol"].extras, spy)]
    return pd.DataFrame(pol_rows), pd.DataFrame(sig_rows)


def verdicts(policies: pd.DataFrame) -> list[str]:
    """Plain sentences: does the protocol beat each simple policy, per model? On net hedge
    P&L, paired on the same paths, at 2 standard errors."""
    out = []
    for model, g in policies.groupby("model", sort=False):
        if "protocol_net_pnl_gain" not in g:
            continue
        for _, row in g[g.policy != "protocol"].iterrows():
            d, se = row["protocol_net_pnl_gain"], row["protocol_net_pnl_gain_se"]
            verdict = "beats" if d > 2 * se else ("loses to" if d < -2 * se else "does not differ from")
            out.append(f"{model}: the protocol {verdict} {row['policy']} on net hedge P&L "
                       f"({100 * d:+.3f}% of NAV per year, SE {100 * se:.3f})")
    return out


# --------------------------------------------------------------------------- entry point


def run(cfg: DictConfig, out_dir) -> dict:
    t_start = time.perf_counter()
    spy = float(cfg.steps_per_year)
    check_range("steps_per_year", spy, 1.0)
    detector, protocol = build_detector(cfg), build_protocol(cfg)
    build_portfolio(cfg)
    build_program(cfg)
    build_vol_model(cfg, 0.2)
    for node in cfg.models.values():  # every model, market and policy parameter, before any work
        _policies(cfg, build_market(cfg, build_process(node, steps_per_year=spy)))
    check_int("simulation.n_paths", cfg.simulation.n_paths, 2)
    check_int("simulation.bootstrap", cfg.simulation.bootstrap, 0)
    out = OutputWriter(out_dir)

    frame = run_real(cfg, detector, protocol)
    windows = OmegaConf.to_container(cfg.real.crashes, resolve=True)
    stages = stage_table(frame, windows)
    out.table("real_stages.csv", stages)
    crash = regime.CrashProtocol(detector=detector, protocol=protocol)
    calm = calm_table(frame, list(cfg.real.calm_years), protocol, crash)
    out.table("real_calm.csv", calm)
    cols = ["price", "vix", "vix_source", "log_spread", "volume", *regime.Signals._fields, "label", "state", "action"]
    out.table("real_signals.csv", frame[cols].reset_index(names="date"))
    for name, (a, b) in OmegaConf.to_container(cfg.real.zooms, resolve=True).items():
        out.figure(f"real_{name}.png", _zoom_plot(frame, a, b, f"S&P 500 {name}: signals and protocol states"))
    log.info("real S&P 500 stages:\n%s", stages[["window", "event", "date", "days_from_trough"]].to_string())

    policies, signals = run_mc(cfg, detector, protocol, spy)
    out.table("mc_policies.csv", policies)
    if not signals.empty:
        out.table("mc_signals.csv", signals)
    says = verdicts(policies)
    for line in says:
        log.info(line)
    fig, axes = plt.subplots(1, policies["model"].nunique(), figsize=(5 * policies["model"].nunique(), 3.8),
                             squeeze=False)
    for ax, (model, g) in zip(axes[0], policies.groupby("model", sort=False)):
        y = np.arange(len(g))
        ax.errorbar(100 * g["net_pnl_per_year_mean"], y, xerr=200 * g["net_pnl_per_year_mean_se"], fmt="o")
        ax.hlines(y, 100 * g["net_pnl_per_year_p5"], 100 * g["net_pnl_per_year_p95"], alpha=0.3, lw=6)
        ax.set_yticks(y, g["policy"])
        ax.axvline(0, color="grey", lw=0.6)
        ax.set_xlabel("net hedge P&L, % of NAV per year (mean +-2 SE; bar: 5-95%)")
        ax.set_title(model)
    fig.tight_layout()
    out.figure("mc_policies.png", fig)
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
