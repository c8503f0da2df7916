"""The lab's figures, each drawn from the tables a run writes (or from a result object).

Every function returns a ``matplotlib`` figure and draws only what its arguments hold, so a
figure can be redrawn in a notebook from a saved run's CSV files (``pd.read_csv``) without
rerunning anything; the experiments save them with ``OutputWriter.figure``. Matplotlib is
imported on first use with the non-interactive Agg backend unless one is already chosen.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

__all__ = [
    "surface_heatmap", "wealth_fan", "growth_histograms", "kelly_growth_curves", "terminal_wealth", "shrinkage",
    "drawdown_histograms", "nav_and_drawdown", "crash_zoom", "policy_pnl", "attribution", "pnl_vs_spread",
    "realized_correlation",
]


def _plt():
    import sys

    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# --------------------------------------------------------------------------- ruin surface


def surface_heatmap(res, grid: np.ndarray, multiples, title: str, levels, cmap: str, optimal_c=None, fmt="%.2f",
                    center=None):
    """A ``sim.surface.SurfaceResult`` field over (model value x Kelly multiple), with contour
    lines at ``levels`` and the growth-optimal multiple per row (``optimal_c``: ``c``,
    ``wipeout`` and ``grid_edge`` arrays; pinned and edge points marked). Rows are drawn at
    their values (a log axis when they span more than 8x); ``center``: the value a diverging
    colormap is centred on (0 for a growth rate, whose sign matters)."""
    plt = _plt()
    from matplotlib.colors import TwoSlopeNorm

    fig, ax = plt.subplots(figsize=(7.5, 5))
    y = np.asarray(res.values, float)
    finite = np.where(np.isfinite(grid), grid, np.nan)
    norm = None
    if center is not None and np.isfinite(finite).any():
        lo, hi = np.nanmin(finite), np.nanmax(finite)
        span = max(abs(lo - center), abs(hi - center), 1e-12)
        norm = TwoSlopeNorm(vcenter=center, vmin=center - span, vmax=center + span)
    mesh = ax.pcolormesh(multiples, y, finite, shading="nearest", cmap=cmap, norm=norm)
    fig.colorbar(mesh, ax=ax, label=title)
    try:
        cs = ax.contour(multiples, y, finite, levels=levels, colors="k", linewidths=0.8)
        ax.clabel(cs, fmt=fmt, fontsize=7)
    except (ValueError, TypeError):  # a constant field has no contour lines
        pass
    ax.axvline(1.0, color="w", ls="--", lw=1, label="c = 1 (Gaussian Kelly)")
    if optimal_c is not None:
        c, pinned, edge = optimal_c["c"], optimal_c["wipeout"], optimal_c["grid_edge"]
        ax.plot(c, y, "-", color="C1", lw=1.2, label="growth-optimal c: max E[log W_T] on these draws")
        free = ~pinned & ~edge
        ax.plot(c[free], y[free], "o", color="C1", ms=4)
        if pinned.any():
            ax.plot(c[pinned], y[pinned], "x", color="C3", ms=7, mew=2,
                    label="pinned below the first wipe-out (moves with n_paths)")
        if edge.any():
            ax.plot(c[edge], y[edge], ">", color="C0", ms=7, label="at the grid's edge (optimum may lie beyond)")
    if len(y) > 1 and y.min() > 0 and y.max() / y.min() > 8:
        ax.set_yscale("log")
    ax.set_yticks(y, [f"{v:g}" for v in res.values])
    ax.minorticks_off()
    ax.set_xlabel("Kelly multiple c  (f = c (mu - r) / variance)")
    ax.set_ylabel(res.axis)
    ax.set_title(f"{title}, {res.years:g} years, {res.n_paths} paths per point")
    ax.legend(fontsize=7, loc="upper right")
    return fig


# --------------------------------------------------------------------------- time vs ensemble


def wealth_fan(fan: pd.DataFrame, recorded: np.ndarray, time_unit: float, title: str, xlabel: str, exact_mean=None):
    """Quantile bands, median and sample mean of wealth over time (``sim.stats.wealth_fan``),
    recorded paths in grey, and optionally the exact expected wealth."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 5))
    t = fan["time"]
    ax.fill_between(t, fan["q05_wealth"], fan["q95_wealth"], alpha=0.15, color="C0", label="5-95% of paths")
    ax.fill_between(t, fan["q25_wealth"], fan["q75_wealth"], alpha=0.3, color="C0", label="25-75% of paths")
    ax.plot(t, fan["q50_wealth"], color="C0", lw=2, label="median path")
    ax.plot(t, fan["mean_wealth"], color="C3", lw=2, label="sample mean (ensemble)")
    if exact_mean is not None:
        ax.plot(t, exact_mean, color="k", ls="--", lw=1, label="expected wealth (exact)")
    steps = np.arange(recorded.shape[0]) / time_unit
    for i in range(recorded.shape[1]):
        ax.plot(steps, np.exp(recorded[:, i]), color="grey", lw=0.5, alpha=0.7)
    ax.set_yscale("log")
    ax.set_title(title)
    ax.set_ylabel("wealth (W0 = 1)")
    ax.legend(fontsize=8, loc="lower left")
    ax.set_xlabel(xlabel)
    return fig


def growth_histograms(hist: pd.DataFrame, marks) -> object:
    """Per-path growth rates per ``part`` of ``hist`` (``bin_left``, ``bin_right``, ``count``),
    with ``marks``: one ``(time average, ensemble, unit)`` per part."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, (part, sub), (ta, ens, unit) in zip(axes, hist.groupby("part", sort=False), marks):
        ax.bar(sub["bin_left"], sub["count"], width=sub["bin_right"] - sub["bin_left"], align="edge", color="C0",
               alpha=0.7)
        ax.axvline(ta, color="C0", lw=2, label=f"time average {ta:.4f}")
        ax.axvline(ens, color="C3", lw=2, label=f"ensemble {ens:.4f}")
        ax.set_title(f"{part}: per-path growth rate {unit}")
        ax.set_xlabel("log(W_T / W_0) / T")
        ax.legend(fontsize=8)
    return fig


# --------------------------------------------------------------------------- Kelly


_STYLES = ("-", "--", ":", "-.", (0, (5, 1, 1, 1)))


def kelly_growth_curves(curve: pd.DataFrame, fractions: dict):
    """``g(f)`` per part of ``curve`` with its 95% band and each policy's fraction
    (``fractions[part][policy]``); the region where a path is wiped out shaded."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, (part, sub) in zip(axes, curve.groupby("part", sort=False)):
        ax.plot(sub.fraction, sub.growth, color="k", label="g(f) on the evaluation model")
        ax.fill_between(sub.fraction, sub.growth - 1.96 * sub.growth_se, sub.growth + 1.96 * sub.growth_se,
                        color="k", alpha=0.15, label="95% band (per-path spread)")
        if "posterior_growth" in sub:  # g(f) under a posterior (each path one joint draw), with its band
            label = sub.posterior_label.iloc[0] if "posterior_label" in sub else "the posterior"
            ax.plot(sub.fraction, sub.posterior_growth, color="C9", ls="--", label=f"g(f) under {label}")
            ax.fill_between(sub.fraction, sub.posterior_growth - 1.96 * sub.posterior_growth_se,
                            sub.posterior_growth + 1.96 * sub.posterior_growth_se, color="C9", alpha=0.15)
        for i, (name, f) in enumerate(fractions[part].items()):  # a style each: equal fractions stay visible
            ax.axvline(f, color=f"C{i}", ls=_STYLES[i % len(_STYLES)], lw=2.4 - 0.45 * i, label=f"{name} f = {f:.2f}")
        wiped = sub.fraction[~np.isfinite(sub.growth)]
        if len(wiped):
            ax.axvspan(wiped.min(), sub.fraction.max(), color="C3", alpha=0.1,
                       label=f"g = -inf: some path wiped out (f >= {wiped.min():.2f})")
        finite = sub.growth[np.isfinite(sub.growth)]
        if len(finite):
            ax.set_ylim(max(finite.min(), finite.max() - 0.3), finite.max() + 0.02)
        ax.set_title(f"{part}: growth per year vs fraction")
        ax.set_xlabel("fraction f of wealth in the risky asset")
        ax.set_ylabel("time-average growth, log wealth per year")
        ax.legend(fontsize=7)
    return fig


def terminal_wealth(wealth: dict, years):
    """Box plots of log10 terminal wealth per policy (``wealth[part][policy]``: log wealth)."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, (part, w) in zip(axes, wealth.items()):
        data = [np.clip(v / math.log(10), -3, None) for v in w.values()]
        ax.boxplot(data, showfliers=False)
        ax.set_xticks(range(1, len(w) + 1), list(w))
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_ylabel(f"log10 terminal wealth after {years} years")
        ax.set_title(f"{part}: terminal wealth per policy")
    return fig


def shrinkage(shrink: pd.DataFrame, tau: float, steps_per_year: float, mu: float, sigma: float):
    """Simulated Kelly shrinkage under an unknown mean against the closed forms."""
    from sim import kelly

    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    ax.errorbar(shrink.sample_years, shrink.simulated, yerr=1.96 * shrink.simulated_se, fmt="o",
                label="simulated (posterior-averaged growth)")
    Ts = np.geomspace(min(shrink.sample_years), max(shrink.sample_years), 100)
    ax.plot(Ts, kelly.bayes_shrinkage(Ts, tau), label=f"T / (T + tau), tau = {tau:g} y")
    ax.plot(Ts, kelly.bayes_shrinkage(Ts, 1 / steps_per_year), label="same, daily rebalancing")
    ax.plot(Ts, kelly.frequentist_shrinkage(mu / sigma, Ts), label="frequentist optimum k*")
    ax.set_xscale("log")
    ticks = sorted(set(float(t) for t in shrink.sample_years))
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("sample length T (years)")
    ax.set_ylabel("Kelly fraction / plug-in")
    ax.set_title(f"Unknown mean, known sigma (mu {mu}, sigma {sigma})")
    ax.legend(fontsize=7)
    return fig


# --------------------------------------------------------------------------- hedge overlay


def drawdown_histograms(mdd: dict, years: float):
    """Max drawdown per path, one panel per model, one line per strategy
    (``mdd[model][strategy]``)."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(mdd), figsize=(5 * len(mdd), 3.8), squeeze=False)
    for ax, (model, per) in zip(axes[0], mdd.items()):
        bins = np.linspace(0, 1, 51)
        for name, x in per.items():
            ax.hist(x, bins=bins, histtype="step", density=True, lw=1.4 if name == "unhedged" else 1.0, label=name)
        ax.set_title(f"{model}: max drawdown over {years:g} y")
        ax.set_xlabel("max drawdown")
        ax.legend(fontsize=7)
    return fig


def nav_and_drawdown(navs: dict, dates, lo, hi, title: str):
    """NAV (log scale, start = 1) and drawdown per strategy between ``lo`` and ``hi``."""
    plt = _plt()
    sel = (dates >= pd.Timestamp(lo)) & (dates <= pd.Timestamp(hi))
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 6), sharex=True, gridspec_kw=dict(height_ratios=[2, 1]))
    for label, nav in navs.items():
        x = nav[sel] / nav[sel][0]
        ax1.plot(dates[sel], x, lw=1.5 if label == "unhedged" else 1.0, label=label)
        ax2.plot(dates[sel], x / np.maximum.accumulate(x) - 1.0, lw=1.0)
    ax1.set_yscale("log")
    ax1.set_ylabel("NAV (start = 1)")
    ax1.set_title(title)
    ax1.legend(fontsize=7)
    ax2.set_ylabel("drawdown")
    return fig


# --------------------------------------------------------------------------- crash protocol


def crash_zoom(frame: pd.DataFrame, a, b, title: str):
    """The index with the protocol's states and actions, and every signal family, between
    ``a`` and ``b`` (``frame``: ``sim.regime.run_detector`` outputs beside the inputs)."""
    from sim import regime

    plt = _plt()
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
                  label="reference label HODL")
    ax[0].scatter(idx[lab == 2], np.full((lab == 2).sum(), w["price"].min() * 0.94), marker="|", color="g", s=30,
                  label="reference label MONETIZE")
    ax[0].set_ylabel("index level")
    ax[0].set_title(title)
    ax[0].legend(loc="lower left", fontsize=7, ncol=2)
    ax[-1].set_xlabel("date")
    for k, series in enumerate(([("velocity", "velocity (EWM d log S)", 1), ("acceleration", "acceleration", 1)],
                                [("vix", "implied vol (VIX / proxy)", 1), ("vvix", "VVIX proxy / 10", 0.1)],
                                [("liquidity_z", "log spread over normal (Corwin-Schultz)", 1)],
                                [("correlation", "avg pairwise correlation (20 stocks)", 1),
                                 ("dispersion", "cross-sectional dispersion x10", 10)]), start=1):
        for col, label, scale in series:
            ax[k].plot(idx, w[col] * scale, label=label, alpha=0.6 if col == "dispersion" else 1.0)
        if all(w[col].isna().all() for col, _, _ in series):
            why = _NO_DATA.get(series[0][0], "no data in this window")
            ax[k].text(0.5, 0.5, why, transform=ax[k].transAxes, ha="center", va="center", fontsize=9, color="0.3")
        if k in (1, 3):
            ax[k].axhline(0, color="grey", lw=0.6)
        ax[k].set_ylabel(("log price change / day", "annualized vol", "log spread, z vs normal", "correlation")[k - 1],
                         fontsize=8)
        ax[k].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig


_NO_DATA = {"liquidity_z": "no spread in this window: the shipped OHLCV (its high-low range) covers 1999-2018",
            "correlation": "no constituents in this window: the shipped 20 stocks do not cover it"}


def policy_pnl(policies: pd.DataFrame):
    """Net hedge P&L per monetization policy (mean +-2 SE, 5-95% bar), one panel per model."""
    plt = _plt()
    n = policies["model"].nunique()
    fig, axes = plt.subplots(1, n, figsize=(5 * n, 3.8), squeeze=False)
    for ax, (model, g) in zip(axes[0], policies.groupby("model", sort=False)):
        y = np.arange(len(g))
        ax.errorbar(100 * g["net_pnl_per_year_mean"], y, xerr=200 * g["net_pnl_per_year_mean_se"], fmt="o")
        ax.hlines(y, 100 * g["net_pnl_per_year_p5"], 100 * g["net_pnl_per_year_p95"], alpha=0.3, lw=6)
        ax.set_yticks(y, g["policy"])
        ax.axvline(0, color="grey", lw=0.6)
        ax.set_xlabel("net hedge P&L, % of NAV per year (mean +-2 SE; bar: 5-95%)")
        ax.set_title(model)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- dispersion


def attribution(table: pd.DataFrame, title: str):
    """One path's dispersion book: the index, the cumulative attribution terms, and the implied
    against the realized correlation (``sim.dispersion.attribution_table`` + ``crash_regime``)."""
    plt = _plt()
    fig, axes = plt.subplots(3, 1, figsize=(9, 9), sharex=True)
    steps = table.index.to_numpy()
    crash = table["crash_regime"].to_numpy() == 1
    for ax in axes:
        if crash.any():
            ax.axvspan(steps[crash][0] - 0.5, steps[crash][-1] + 0.5, color="red", alpha=0.08, lw=0)
    axes[0].plot(steps, table["index"], color="k")
    axes[0].set_ylabel("index level")
    axes[0].set_title(title)
    for col, style in [("pnl", "k-"), ("index_own", "C0-"), ("correlation", "C1-"), ("legs_theta_gamma", "C2-"),
                       ("residual", "C3:"), ("uncorrected_correlation", "C1--")]:
        label = "correlation term without the weights' own part (uncorrected)" if col == "uncorrected_correlation" else col
        axes[1].plot(steps, 100 * table[col].cumsum(), style, label=label, lw=1.4 if col == "pnl" else 1.0)
    axes[1].axhline(0, color="grey", lw=0.5)
    axes[1].set_ylabel("cumulative P&L, % of index notional")
    axes[1].legend(fontsize=7, ncol=2)
    m = table["multiplier"].to_numpy()
    cum_real = np.cumsum(m * table["rho_realized"]) / np.cumsum(m)
    axes[2].plot(steps, table["rho_implied"], "C0-", label="implied average correlation (today's weights)")
    axes[2].plot(steps, cum_real, "C3-", label="realized since entry (multiplier-weighted)")
    axes[2].set_ylabel("average correlation")
    axes[2].set_xlabel("trading day")
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    return fig


def pnl_vs_spread(points: pd.DataFrame, means: pd.DataFrame, sample: int, seed: int):
    """Per-path P&L against the correlation spread (a random ``sample`` of paths), and the mean
    P&L per grid point against ``(rho_implied - rho_real) x M``."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    rng = np.random.default_rng(seed)
    pick = points.iloc[rng.permutation(len(points))[: min(sample, len(points))]]
    sc = axes[0].scatter(pick["spread"], 100 * pick["pnl"], c=pick["rho_real_config"], s=3, cmap="viridis", alpha=0.5)
    m = points["multiplier"].mean()
    x = np.linspace(points["spread"].quantile(0.001), points["spread"].quantile(0.999), 50)
    axes[0].plot(x, 100 * m * x, "r-", label=f"theory: P&L = M x spread (mean M = {m:.4f})")
    lo, hi = points["spread"].quantile(0.005), points["spread"].quantile(0.995)
    axes[0].set_xlim(lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo))
    axes[0].set_ylim(100 * points["pnl"].quantile(0.002), 100 * points["pnl"].quantile(0.998))
    axes[0].set_xlabel("implied - realized average correlation (per path; 99% of paths shown)")
    axes[0].set_ylabel("P&L, % of index notional")
    axes[0].legend(fontsize=8)
    fig.colorbar(sc, ax=axes[0], label="configured realized correlation")
    spread = means["rho_implied_mean"] - means["rho_real"]
    axes[1].errorbar(spread, 100 * means["pnl_mean"], yerr=200 * means["pnl_se"], fmt="o", label="mean P&L +-2 SE")
    axes[1].plot(spread, 100 * means["theory_mean"], "r-", label="(rho_implied - rho_real) x M")
    axes[1].set_xlabel("implied - configured realized correlation")
    axes[1].set_ylabel("mean P&L, % of index notional")
    axes[1].legend(fontsize=8)
    axes[1].axhline(0, color="grey", lw=0.5)
    fig.tight_layout()
    return fig


def realized_correlation(rc: pd.DataFrame, zooms: dict):
    """The shipped stocks' rolling realized average correlation, with zoomed windows."""
    plt = _plt()
    fig = plt.figure(figsize=(12, 7))
    top = fig.add_subplot(2, 1, 1)
    top.plot(rc.index, rc["implied_style"], lw=0.8, label="average correlation (implied-style formula, realized vols)")
    top.plot(rc.index, rc["pairwise"], lw=0.8, alpha=0.7, label="mean pairwise correlation")
    top.set_ylabel("63-day realized correlation")
    top.set_title("20 shipped S&P 500 stocks: realized average correlation")
    top.legend(fontsize=8)
    for i, (name, (a, b)) in enumerate(zooms.items()):
        ax = fig.add_subplot(2, len(zooms), len(zooms) + i + 1)
        z = rc.loc[a:b]
        ax.plot(z.index, z["implied_style"], lw=1)
        ax2 = ax.twinx()
        ax2.plot(z.index, z["index_vol"], "C3-", lw=0.8, alpha=0.7)
        ax2.set_ylabel("basket vol (annualized)", color="C3")
        ax.set_ylabel("average correlation")
        ax.set_title(name)
        ax.tick_params(axis="x", labelrotation=30, labelsize=7)
    fig.tight_layout()
    return fig


def posterior_panels(draws: pd.DataFrame, plug_in: dict):
    """Per part (rows): the posterior of ``nu`` for each fitted model with one, and of the
    Kelly fraction ``(mean - r) / variance`` of each draw (second order), by method (Laplace, NUTS), with the plug-in
    Kelly fraction of each model marked (``plug_in[part][model]``). ``draws``: long format
    with columns part, model, method, parameter, value."""
    plt = _plt()
    parts = list(dict.fromkeys(draws.part))
    fig, axes = plt.subplots(len(parts), 2, figsize=(12, 4 * len(parts)), squeeze=False)
    for row, part in zip(axes, parts):
        sub = draws[draws.part == part]
        for ax, parameter, xlabel in ((row[0], "nu", "degrees of freedom nu"),
                                      (row[1], "kelly_fraction", "Kelly fraction (mean - r) / variance of the draw")):
            cut = sub[(sub.parameter == parameter) & np.isfinite(sub.value)]
            for i, ((model, method), one) in enumerate(cut.groupby(["model", "method"], sort=False)):
                ax.hist(one.value, bins=60, density=True, histtype="step", lw=1.6, color=f"C{i}",
                        ls=_STYLES[i % len(_STYLES)], label=f"{model}, {method} ({len(one)} draws)")
            if parameter == "kelly_fraction":
                for i, (model, f) in enumerate(plug_in.get(part, {}).items()):
                    ax.axvline(f, color="k", ls=_STYLES[i % len(_STYLES)], lw=1.0, label=f"{model} plug-in f = {f:.2f}")
            if cut.empty:
                empty = "no model here has a single nu" if parameter == "nu" else "no finite Kelly fraction of a draw"
                ax.text(0.5, 0.5, empty, ha="center", va="center", transform=ax.transAxes)
            ax.set_title(f"{part}: posterior of {'nu' if parameter == 'nu' else 'the Kelly fraction'}")
            ax.set_xlabel(xlabel)
            ax.set_ylabel("density")
            if not cut.empty:
                ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
