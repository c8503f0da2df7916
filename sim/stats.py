"""Running per-path statistics (the engine's scan carry) and the final summaries.

Per path the engine keeps only ``PathStats``: log-wealth, running peak, maximum drawdown,
first ruin step and the sums needed for a Sharpe ratio. ``update`` advances them by one
step's portfolio return; the engine's savers and ``sim.engine.path_stats_from_returns`` (for a
user's ``(paths, steps)`` matrix of returns) share it, so the same definitions hold everywhere.

Definitions (``W_0 = 1``, ``T`` the horizon in years):

* time-average growth of a path: ``log(W_T) / T``; its mean over paths is the time average.
* ensemble-average growth: ``log(mean_paths W_T) / T``.
* drawdown at ``t``: ``1 - W_t / max_{s<=t} W_s`` with the peak starting at ``W_0``, so a
  loss in the first step counts; compounded, from wealth (not summed returns).
* ruin: the first step at which ``1 + x <= 0`` (a wipe-out) or ``W_t`` falls below the floor.
  Ruin is absorbing: wealth and sums freeze from then on (``log W = -inf`` after a wipe-out).
* CAGR of a path: ``W_T^(1/T) - 1``; Calmar: CAGR / max drawdown; Sharpe: annualized mean
  over standard deviation of the per-step portfolio returns while alive (no risk-free
  adjustment: pass excess returns for that).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "wiped_out_note",
    "NEVER",
    "PathStats",
    "init_path_stats",
    "update",
    "value_at_risk",
    "describe",
    "annual_returns",
    "nav_metrics",
    "expected_shortfall",
    "summarize",
    "paired_difference",
    "strategy_metrics",
    "binary_game_exact",
    "simulated_game",
    "wealth_fan",
    "growth_histogram",
    "FAN_QUANTILES",
]

NEVER = -1  # ruin_step of a path that was never ruined


class PathStats(NamedTuple):
    log_wealth: jax.Array  # float32[n], log(W_t / W_0); -inf after a wipe-out
    log_peak: jax.Array  # float32[n], log of the running peak of wealth (starts at 0)
    max_drawdown_log: jax.Array  # float32[n], max_t log(peak_t / W_t); drawdown = 1 - exp(-x)
    ruin_step: jax.Array  # int32[n], first step (1-based) at which ruined, NEVER if not
    sum_r: jax.Array  # float32[n], sum of per-step portfolio simple returns while alive
    sum_r2: jax.Array  # float32[n], sum of their squares


def init_path_stats(n: int) -> PathStats:
    z = jnp.zeros((n,), jnp.float32)
    return PathStats(z, z, z, jnp.full((n,), NEVER, jnp.int32), z, z)


def update(stats: PathStats, x: jax.Array, step: jax.Array, log_floor: jax.Array) -> PathStats:
    """Advance by one step whose portfolio simple return is ``x`` (``W <- W (1 + x)``).

    Args:
      stats: the running statistics, each ``[n]``.
      x: float32[n] portfolio simple return of this step.
      step: the 1-based index of this step (int scalar).
      log_floor: log of the ruin floor as a fraction of ``W_0`` (``-inf`` for no floor).
    """
    alive = stats.ruin_step == NEVER
    solvent = x > -1.0
    # log1p of a safe argument, so the unselected branch never produces NaN gradients.
    growth = jnp.where(solvent, jnp.log1p(jnp.where(solvent, x, 0.0)), -jnp.inf)
    log_wealth = jnp.where(alive, stats.log_wealth + growth, stats.log_wealth)
    log_peak = jnp.maximum(stats.log_peak, log_wealth)
    max_dd = jnp.maximum(stats.max_drawdown_log, log_peak - log_wealth)
    ruined_now = alive & (~solvent | (log_wealth < log_floor))
    ruin_step = jnp.where(ruined_now, step.astype(jnp.int32), stats.ruin_step)
    x_alive = jnp.where(alive & solvent, x, 0.0)
    return PathStats(log_wealth, log_peak, max_dd, ruin_step, stats.sum_r + x_alive, stats.sum_r2 + x_alive * x_alive)


def _tail_count(n: int, level: float) -> int:
    """Number of worst outcomes in the (1 - level) tail: ``ceil(n (1 - level))``, at least 1.

    The small slack keeps ``ceil`` from rounding up on float noise (``(1 - 0.99) * 4000``
    is ``40.00000000000004``).
    """
    return max(1, math.ceil(n * (1.0 - level) - 1e-9))


def value_at_risk(x, level: float) -> float:
    """VaR at ``level`` (e.g. 0.99) of outcomes ``x`` (returns): minus the k-th worst outcome,
    ``k = ceil(n (1 - level))`` (the empirical quantile by inverting the CDF)."""
    x = np.sort(np.asarray(x, np.float64))
    return float(-x[_tail_count(len(x), level) - 1])


def expected_shortfall(x, level: float) -> float:
    """ES at ``level``: minus the mean of the ``k = ceil(n (1 - level))`` worst outcomes."""
    x = np.sort(np.asarray(x, np.float64))
    return float(-x[: _tail_count(len(x), level)].mean())


def quantiles(x, qs) -> np.ndarray:
    """``np.quantile`` (linear interpolation) that keeps ``-inf`` outcomes (wiped-out paths):
    a quantile interpolated between ``-inf`` and anything is ``-inf``, never NaN."""
    x = np.asarray(x, np.float64)
    low = np.isneginf(x)
    if not low.any():
        return np.quantile(x, qs)
    v = np.quantile(np.where(low, -1e300, x), qs)
    return np.where(v < -1e299, -np.inf, v)


def _quantiles(x, qs=(0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)) -> dict:
    return {f"q{round(q * 100):02d}": float(v) for q, v in zip(qs, quantiles(x, qs))}


def paired_difference(a, b) -> dict:
    """The paired comparison of per-path outcomes ``a`` and ``b`` on the same draws (e.g. the
    hedged and the unhedged growth), where ``-inf`` marks a wiped-out path.

    A difference with a wiped-out side is ``+inf`` or ``-inf`` and cannot be averaged, and
    dropping it biases the mean (the paths a hedge saves are exactly those), so it is reported
    as two shares: ``saved`` (``b`` wiped out, ``a`` not) and ``lost`` (``a`` wiped out, ``b``
    not), each with its standard error; ``mean`` and ``mean_se`` are the difference over the
    paths finite in both (``n_finite`` of ``n``), and ``both_wiped`` the share lost either way.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    n = a.size
    fa, fb = np.isfinite(a), np.isfinite(b)
    both = fa & fb
    d = a[both] - b[both]

    def share(mask):
        p = float(mask.mean())
        return p, float(math.sqrt(p * (1 - p) / n)) if n else float("nan")

    saved, saved_se = share(fa & ~fb)
    lost, lost_se = share(~fa & fb)
    return {
        "mean": float(d.mean()) if d.size else float("nan"),
        "mean_se": float(d.std(ddof=1) / math.sqrt(d.size)) if d.size > 1 else float("nan"),
        "n_finite": int(d.size),
        "n": int(n),
        "saved": saved, "saved_se": saved_se,
        "lost": lost, "lost_se": lost_se,
        "both_wiped": float((~fa & ~fb).mean()),
    }


def wiped_out_note(share: float, instead: str = "time_avg_growth_mean_finite is the mean over the other paths, "
                                                "conditional on not being wiped out") -> str:
    """"" when no path was wiped out; else the sentence that goes beside a mean growth of
    ``-inf``: the share wiped out, and ``instead``, where to look (``summary_notes`` uses it)."""
    if share <= 0:
        return ""
    return (f"{share:.4%} of paths are wiped out: time_avg_growth (the mean over all paths) is -inf, which is the "
            f"true E[log W]/T; {instead}")


PAIRED_NOTE = ("paired difference over the paths finite in both runs; paths wiped out in one run only are "
               "counted as saved / lost shares instead (their difference is infinite)")


def _median_over(x, mask) -> float:
    x = np.asarray(x, np.float64)[mask]
    x = x[np.isfinite(x)]
    return float(np.median(x)) if x.size else float("nan")


def summary_notes(summary: dict) -> list[str]:
    """One plain sentence per figure of ``summarize`` that is not what it seems at a glance."""
    notes = []
    if summary.get("wipeout_probability", 0) > 0:
        notes.append(wiped_out_note(summary["wipeout_probability"]))
    if summary.get("survival_share", 1) < 1:
        notes.append(f"sharpe_median and calmar_median are over the {summary['survival_share']:.2%} of paths "
                     "that were never ruined (undefined on a ruined path)")
    return notes


def summarize(stats: PathStats, *, years: float, steps_per_year: float) -> dict:
    """Aggregate statistics over paths, in float64 on the host, as a flat dict.

    Every figure that is a mean over paths comes with its standard error (``*_se``).
    """
    lw = np.asarray(stats.log_wealth, np.float64)
    n = lw.size
    ruined = np.asarray(stats.ruin_step) != NEVER
    growth = lw / years
    finite = np.isfinite(growth)
    drawdown = -np.expm1(-np.asarray(stats.max_drawdown_log, np.float64))
    cagr = np.expm1(growth)
    steps_alive = np.where(ruined, np.asarray(stats.ruin_step), round(years * steps_per_year)).astype(np.float64)
    s1 = np.asarray(stats.sum_r, np.float64)
    s2 = np.asarray(stats.sum_r2, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_r = s1 / steps_alive
        var_r = (s2 - steps_alive * mean_r**2) / (steps_alive - 1)
        sharpe = mean_r / np.sqrt(var_r) * math.sqrt(steps_per_year)
        calmar = cagr / drawdown
    lse = np.logaddexp.reduce(lw) if n else -np.inf
    horizon_return = np.expm1(lw)
    out = {
        "n_paths": n,
        "years": years,
        "time_avg_growth": float(growth.mean()),
        "time_avg_growth_se": float(growth.std(ddof=1) / math.sqrt(n)) if n > 1 and finite.all() else float("nan"),
        "time_avg_growth_median": float(quantiles(growth, 0.5)),
        "wipeout_probability": float(np.mean(~finite)),
        "survival_share": float(np.mean(~ruined)),
        "time_avg_growth_mean_finite": float(growth[finite].mean()) if finite.any() else float("nan"),
        "time_avg_growth_mean_finite_se": (float(growth[finite].std(ddof=1) / math.sqrt(finite.sum()))
                                           if finite.sum() > 1 else float("nan")),
        "ensemble_growth": float((lse - math.log(n)) / years),
        "mean_wealth": float(math.exp(lse - math.log(n))) if np.isfinite(lse) else 0.0,
        "median_wealth": float(np.exp(quantiles(lw, 0.5))),
        "ruin_probability": float(ruined.mean()),
        "ruin_probability_se": float(math.sqrt(ruined.mean() * (1 - ruined.mean()) / n)),
        "max_drawdown_mean": float(drawdown.mean()),
        "max_drawdown_median": float(np.median(drawdown)),
        "p_max_drawdown_gt_50": float((drawdown > 0.5).mean()),
        "var95": value_at_risk(horizon_return, 0.95),
        "var99": value_at_risk(horizon_return, 0.99),
        "es95": expected_shortfall(horizon_return, 0.95),
        "es99": expected_shortfall(horizon_return, 0.99),
        "cagr_median": float(np.median(cagr)),
        # Sharpe and Calmar of a ruined path are not defined: medians over the survivors,
        # with ``survival_share`` beside them (and NaN when no path survives).
        "sharpe_median": _median_over(sharpe, ~ruined),
        "calmar_median": _median_over(calmar, ~ruined),
    }
    out["notes"] = summary_notes(out)
    out.update({f"time_avg_growth_{k}": v for k, v in _quantiles(growth).items()})
    out.update({f"max_drawdown_{k}": v for k, v in _quantiles(drawdown).items()})
    return out


def describe(x, *, rng=None, n_boot: int = 0, qs=(5, 50, 95)) -> dict:
    """Mean (with its standard error) and percentiles ``qs`` of the finite entries of ``x``,
    each percentile with a bootstrap standard error over ``n_boot`` resamples (NaN when
    ``n_boot < 2``); ``finite`` counts the entries used. All NaN below two finite entries."""
    x = np.asarray(x, np.float64)
    x = x[np.isfinite(x)]
    if x.size < 2:  # nothing finite to describe (say, every path wiped out)
        nan = float("nan")
        return {"mean": nan, "mean_se": nan, **{f"p{q}{s}": nan for q in qs for s in ("", "_se")}, "finite": x.size}
    out = {"mean": float(x.mean()), "mean_se": float(x.std(ddof=1) / math.sqrt(x.size))}
    pct = np.percentile(x, qs)
    if n_boot > 1:
        boot = np.percentile(x[rng.integers(0, x.size, (n_boot, x.size))], qs, axis=1)
        se = boot.std(axis=1, ddof=1)
    else:
        se = np.full(len(qs), np.nan)
    for q, v, e in zip(qs, pct, se):
        out[f"p{q}"] = float(v)
        out[f"p{q}_se"] = float(e)
    out["finite"] = x.size
    return out


def annual_returns(snapshots) -> np.ndarray:
    """Pooled simple returns of every path and year from yearly log-wealth snapshots
    ``[K, n]`` (``sim.engine.simulate(snapshot_every=steps_per_year)``), starting at ``W_0 = 1``."""
    lw = np.asarray(snapshots, np.float64)
    lw = np.concatenate([np.zeros((1, lw.shape[1])), lw], axis=0)
    return np.expm1(np.diff(lw, axis=0)).ravel()


def nav_metrics(nav, dates, *, steps_per_year: float, floor: float) -> dict:
    """The usual figures of one NAV series ``[T + 1]`` (from its start, ``dates`` its days):
    CAGR, time-average growth, volatility, max drawdown, ES99 of calendar-year and daily
    returns (the first year from the start), worst year, Sharpe (no risk-free), Calmar,
    whether it fell below ``floor`` x its start, the final NAV."""
    import pandas as pd

    nav = np.asarray(nav, np.float64)
    r = nav[1:] / nav[:-1] - 1.0
    years = (len(nav) - 1) / steps_per_year
    mdd = float(np.max(1.0 - nav / np.maximum.accumulate(nav)))
    cagr = float((nav[-1] / nav[0]) ** (1.0 / years) - 1.0)
    yearly = pd.Series(nav, index=dates).resample("YE").last()
    ann = np.concatenate([[yearly.iloc[0] / nav[0] - 1.0], yearly.pct_change().dropna().to_numpy()])
    return {
        "cagr": cagr,
        "time_avg_growth": float(math.log(nav[-1] / nav[0]) / years),
        "volatility": float(r.std(ddof=1) * math.sqrt(steps_per_year)),
        "max_drawdown": mdd,
        "es99_annual": expected_shortfall(ann, 0.99),
        "es99_daily": expected_shortfall(r, 0.99),
        "worst_year": float(ann.min()),
        "sharpe": float(r.mean() / r.std(ddof=1) * math.sqrt(steps_per_year)),
        "calmar": cagr / mdd if mdd > 0 else float("nan"),
        "ruined": bool(np.any(nav < floor * nav[0])),
        "final_nav": float(nav[-1]),
    }


# --------------------------------------------------------------------------- a run against a baseline


def strategy_metrics(res, base=None) -> dict:
    """One strategy's figures from a ``sim.engine.SimResult`` with yearly snapshots: median
    CAGR, time-average growth (mean with SE, median), the share wiped out, mean annualized
    volatility of the per-step returns while alive, max drawdown (mean, median, 95th
    percentile), ES99 of the pooled annual returns, median Sharpe and Calmar, ruin probability;
    a hedge's premium, proceeds, costs and sales per year where ``res.extras`` holds them.

    With ``base`` (the same draws without the overlay): the paired growth difference with its
    standard error over the paths finite in both, the shares of paths saved from and lost to a
    wipe-out, and the change in ES99 (absolute, relative, per unit of premium)."""
    s = res.summary()
    years, spy = res.years, res.steps_per_year
    ann = annual_returns(res.snapshots)
    alive = np.where(res.stats.ruin_step == NEVER, res.n_steps, res.stats.ruin_step).astype(np.float64)
    mean_r = res.stats.sum_r / alive
    vol = np.sqrt(np.maximum(res.stats.sum_r2 / alive - mean_r**2, 0.0) * spy)
    out = {k: s[k] for k in ("cagr_median", "time_avg_growth", "time_avg_growth_se", "time_avg_growth_median")}
    out["wiped_out"] = float(np.mean(~np.isfinite(res.stats.log_wealth)))
    out["volatility"] = float(np.mean(vol))
    out.update({k: s[k] for k in ("max_drawdown_mean", "max_drawdown_median", "max_drawdown_q95")})
    out["es99_annual"] = expected_shortfall(ann, 0.99)
    out.update({k: s[k] for k in ("sharpe_median", "calmar_median", "ruin_probability")})
    if res.extras:
        for k in ("premium", "proceeds", "costs", "sales"):
            out[f"{k}_per_year"] = float(np.nanmean(res.extras[k]) / years)
    if base is not None:
        paired = paired_difference(res.stats.log_wealth / years, base.stats.log_wealth / years)
        out["growth_vs_unhedged"] = paired["mean"]  # over the paths finite in both runs
        out["growth_vs_unhedged_se"] = paired["mean_se"]
        out["paths_saved_by_hedge"] = paired["saved"]  # unhedged wiped out, hedged not
        out["paths_saved_by_hedge_se"] = paired["saved_se"]
        out["paths_lost_by_hedge"] = paired["lost"]
        out["paths_lost_by_hedge_se"] = paired["lost_se"]
        out["growth_vs_unhedged_note"] = PAIRED_NOTE if paired["saved"] or paired["lost"] else ""
        base_es = expected_shortfall(annual_returns(base.snapshots), 0.99)
        out["es99_change"] = out["es99_annual"] - base_es
        out["es99_change_relative"] = out["es99_change"] / base_es
        if out.get("premium_per_year", 0) > 0:
            out["es99_reduction_per_premium"] = -out["es99_change"] / out["premium_per_year"]
    out["n_paths"] = res.stats.log_wealth.size
    return out


# --------------------------------------------------------------------------- time vs ensemble averages

FAN_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def _log(x: float) -> float:
    return math.log(x) if x > 0 else -math.inf


def binary_game_exact(p: float, up: float, down: float, n_rounds: int) -> dict:
    """Exact laws of the multiplicative coin game (``1 + up`` with probability ``p``, else
    ``1 + down``; Peters' +50% / -40%) after ``n_rounds``, from the binomial distribution:
    ensemble and time-average growth per round, median and mean wealth, P(wealth < 1)."""
    k = np.arange(n_rounds + 1)
    log_pmf = np.array(
        [math.lgamma(n_rounds + 1) - math.lgamma(i + 1) - math.lgamma(n_rounds - i + 1) for i in k]
    ) + k * _log(p) + (n_rounds - k) * _log(1 - p)
    pmf = np.exp(log_pmf)
    log_w = k * math.log1p(up) + (n_rounds - k) * math.log1p(down)
    order = np.argsort(log_w, kind="stable")
    cdf = np.cumsum(pmf[order])
    median_log_w = log_w[order][np.searchsorted(cdf, 0.5)]
    return {
        "ensemble_growth_per_round": math.log(p * (1 + up) + (1 - p) * (1 + down)),
        "time_avg_growth_per_round": p * math.log1p(up) + (1 - p) * math.log1p(down),
        "median_wealth": float(math.exp(median_log_w)),
        "fraction_below_1": float(pmf[log_w < 0].sum()),
        "mean_wealth": float((p * (1 + up) + (1 - p) * (1 + down)) ** n_rounds),
    }


def simulated_game(log_wealth, n_rounds: int, exact: dict) -> dict:
    """The simulated counterparts of ``binary_game_exact`` from per-path log wealth, with
    standard errors (that of P(wealth < 1) from the exact probability)."""
    lw = np.asarray(log_wealth, np.float64)
    n = lw.size
    ensemble = np.logaddexp.reduce(lw) - math.log(n)
    return {
        "median_wealth": float(np.exp(np.median(lw))),
        "fraction_below_1": float((lw < 0).mean()),
        "fraction_below_1_se": float(math.sqrt(exact["fraction_below_1"] * (1 - exact["fraction_below_1"]) / n)),
        "mean_wealth": float(np.exp(ensemble)),
        "time_avg_growth_per_round": float(lw.mean() / n_rounds),
        "time_avg_growth_per_round_se": float(lw.std(ddof=1) / n_rounds / math.sqrt(n)),
        "ensemble_growth_per_round": float(ensemble / n_rounds),
    }


def wealth_fan(result, time_unit: float):
    """Cross-sectional mean and quantiles (``FAN_QUANTILES``) of wealth at a result's snapshot
    times, plus ``t = 0``: a ``pandas.DataFrame`` with ``time`` in units of ``time_unit`` steps."""
    import pandas as pd

    lw = result.snapshots.astype(np.float64)
    n = lw.shape[1]
    mean = np.exp(np.logaddexp.reduce(lw, axis=1) - math.log(n))
    q = np.exp(np.quantile(lw, FAN_QUANTILES, axis=1))
    frame = pd.DataFrame({"time": result.snapshot_steps / time_unit, "mean_wealth": mean})
    for qi, row in zip(FAN_QUANTILES, q):
        frame[f"q{round(qi * 100):02d}_wealth"] = row
    start = pd.DataFrame({c: [0.0 if c == "time" else 1.0] for c in frame.columns})
    return pd.concat([start, frame], ignore_index=True)


def growth_histogram(growth, part: str, bins: int = 80):
    """Histogram of the finite per-path growth rates: ``part``, ``bin_left``, ``bin_right``,
    ``count`` (paths wiped out, ``-inf``, are left out)."""
    import pandas as pd

    growth = np.asarray(growth)
    counts, edges = np.histogram(growth[np.isfinite(growth)], bins=bins)
    return pd.DataFrame({"part": part, "bin_left": edges[:-1], "bin_right": edges[1:], "count": counts})
