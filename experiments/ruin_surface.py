"""Ruin-probability surfaces (the README's main job): Kelly multiple c x a model parameter.

For each value of one model parameter (default: the Student-t tail index ``nu``) and each
Kelly multiple ``c`` (the fraction ``f = c (mu - r) / variance``: ``c = 1`` is the Kelly
fraction of a Gaussian with the same mean and variance), over ``surface.years``:

* P(ruin): wealth ever below ``surface.floor`` x initial;
* P(max drawdown > ``surface.drawdown_level``);
* median time-average growth ``log(W_T) / T`` (ruin absorbing);
* per parameter value, the growth-optimal multiple ``c``: the grid point maximizing
  ``E[log W_T] / T`` on the surface's own draws and horizon (no floor), refined by a
  parabola, with flags where it is pinned below the first wipe-out (then it is not a smooth
  optimum and moves with the number of paths), where it sits at the grid's edge, and its value
  on half of the paths (the sample-size dependence). The heatmaps draw this same quantity.

All (parameter, c) points are computed in one compiled kernel (``sim.surface``). Writes into
the Hydra run directory: ``surface.csv`` (the table behind the plots), ``growth_optimal.csv``,
``summary.json`` and the heatmaps with contour lines ``ruin_probability.png``,
``p_drawdown.png``, ``median_growth.png``; Hydra saves the config in ``.hydra/``.

    python -m experiments.ruin_surface                                   # the default surface
    python -m experiments.ruin_surface --config-name ruin_surface_jumps  # c x jump intensity
    python -m experiments.ruin_surface -m process=student_t,garch_t surface.years=1,10
"""

from __future__ import annotations

import dataclasses
import logging
import time

import hydra
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from experiments.harness import OutputWriter, build_process, hydra_main  # noqa: E402
from sim import kelly, surface  # noqa: E402
from sim.validation import ParameterError, check_int, check_range  # noqa: E402

log = logging.getLogger(__name__)


def _multiples(node) -> np.ndarray:
    if OmegaConf.is_list(node) or isinstance(node, (list, tuple)):
        c = np.asarray(list(node), float)
    else:
        num = check_int("surface.multiples.num", node.num, 2, 4096)
        c = np.linspace(float(node.start), float(node.stop), num)
    check_range("surface.multiples (Kelly multiple c)", c, 0.0, 50.0, lo_closed=False)
    return c


def _heatmap(out: OutputWriter, name: str, res: surface.SurfaceResult, grid: np.ndarray, multiples, title: str,
             levels, cmap: str, optimal_c=None, fmt="%.2f"):
    fig, ax = plt.subplots(figsize=(7.5, 5))
    y = np.arange(len(res.values))
    finite = np.where(np.isfinite(grid), grid, np.nan)
    mesh = ax.pcolormesh(multiples, y, finite, shading="nearest", cmap=cmap)
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
    ax.set_yticks(y, [f"{v:g}" for v in res.values])
    ax.set_xlabel("Kelly multiple c  (f = c (mu - r) / variance)")
    ax.set_ylabel(res.axis)
    ax.set_title(f"{title}, {res.years:g} years, {res.n_paths} paths per point")
    ax.legend(fontsize=7, loc="upper right")
    out.figure(name, fig)


def _tag(pinned: bool, edge: bool) -> str:
    tags = [name for name, on in (("pinned", pinned), ("edge", edge)) if on]
    return f" ({', '.join(tags)})" if tags else ""


INTERIOR = "interior optimum"


def _optimum_note(at_wipeout_edge: bool, at_grid_edge: bool, moves: bool) -> str:
    """One plain sentence per model point on what its growth-optimal c is."""
    parts = []
    if at_wipeout_edge:
        parts.append("pinned just below the first fraction with a wipe-out on these draws (not a "
                     "smooth optimum; it moves with the number of paths)")
    if at_grid_edge:
        parts.append("best at the edge of the grid of c (the optimum may lie beyond it)")
    if moves and not at_wipeout_edge:
        parts.append("differs by more than a grid step on half of the paths (sample-size dependent)")
    return "; ".join(parts) if parts else INTERIOR


def _build(cfg: DictConfig):
    """Validate everything and build the model points and the fraction grid."""
    s = cfg.surface
    check_range("surface.years", s.years, 0.0, 1000.0, lo_closed=False)
    steps_per_year = float(s.steps_per_year)
    check_range("surface.steps_per_year", steps_per_year, 0.0, lo_closed=False)
    n_steps = check_int("surface.years * steps_per_year", round(s.years * steps_per_year), 1)
    n_paths = check_int("surface.n_paths", s.n_paths, 2)  # a standard error needs two paths
    check_range("surface.floor", s.floor, 0.0, 1.0, lo_closed=False, hi_closed=False)
    check_range("surface.drawdown_level", s.drawdown_level, 0.0, 1.0, lo_closed=False, hi_closed=False)
    dt = 1.0 / steps_per_year
    base = build_process(cfg.process, steps_per_year=steps_per_year)
    values = np.asarray(list(s["values"]), float)
    processes = surface.batch_process(base, s.axis, values, dt=dt)  # validates every point
    multiples = _multiples(s.multiples)
    reference = np.array([
        float(kelly.reference_kelly(dataclasses.replace(base, **{s.axis: v}), s.risk_free)) for v in values
    ])
    if not np.all(reference > 0):
        raise ParameterError(
            f"the Kelly multiple axis needs a positive reference fraction (mu > risk_free); got {reference}"
        )
    fractions = np.outer(reference, multiples)
    log.info("surface: %s, %s in %s x %d multiples, %d paths x %d steps per point",
             type(base).__name__, s.axis, values.tolist(), len(multiples), n_paths, n_steps)
    return base, values, processes, multiples, reference, fractions, n_paths, n_steps, steps_per_year


def _optimum_table(res, axis: str, values, reference, multiples):
    """The growth-optimal fraction per model point, with its flags, half-sample value and note."""
    flags = res.optimum_flags()
    optimal_f, half_f = flags["fraction"], res.growth_optimal_half_sample()
    grid_step = float(np.diff(multiples).max())
    moves = np.abs(optimal_f - half_f) / reference > grid_step
    notes = [_optimum_note(w, e, m) for w, e, m in zip(flags["at_wipeout_edge"], flags["at_grid_edge"], moves)]
    return pd.DataFrame({
        axis: values,
        "gaussian_kelly_fraction": reference,
        "growth_optimal_fraction": optimal_f,
        "growth_optimal_multiple": optimal_f / reference,
        "growth_optimal_multiple_half_sample": half_f / reference,
        "at_wipeout_edge": flags["at_wipeout_edge"],
        "at_grid_edge": flags["at_grid_edge"],
        "moves_with_sample_size": moves,
        "grid_step_in_c": grid_step,
        "n_paths": res.n_paths,
        "note": notes,
    })


def run(cfg: DictConfig, out_dir) -> dict:
    """Validate everything, compute the surface, write tables, plots and the summary."""
    t_start = time.perf_counter()
    s = cfg.surface
    base, values, processes, multiples, reference, fractions, n_paths, n_steps, steps_per_year = _build(cfg)
    res = surface.ruin_surface(
        processes, fractions, axis=s.axis, values=values, seed=cfg.seed, n_paths=n_paths, n_steps=n_steps,
        steps_per_year=steps_per_year, risk_free=s.risk_free, floor=s.floor, drawdown_level=s.drawdown_level,
        growth_range=tuple(s.growth_range), n_bins=s.n_bins, block_size=cfg.engine.block_size,
        progress=lambda i: log.info("chunk %d/%d: %d of %d paths, %.1fs, ETA %.1fs", i["chunk"], i["n_chunks"],
                                    i["paths_done"], i["n_paths"], i["elapsed_s"], i["eta_s"]),
    )
    out = OutputWriter(out_dir)
    table = res.table()
    table.insert(1, "kelly_multiple", np.tile(multiples, len(values)))
    out.table("surface.csv", table)
    optimal = _optimum_table(res, s.axis, values, reference, multiples)
    out.table("growth_optimal.csv", optimal)
    optimal_f = optimal["growth_optimal_fraction"].to_numpy()
    flags = {k: optimal[k].to_numpy() for k in ("at_wipeout_edge", "at_grid_edge")}
    notes, grid_step = list(optimal["note"]), float(optimal["grid_step_in_c"].iloc[0])
    c_opt = dict(c=optimal_f / reference, wipeout=flags["at_wipeout_edge"], grid_edge=flags["at_grid_edge"])

    _heatmap(out, "ruin_probability.png", res, res.ruin_probability, multiples,
             f"P(wealth < {s.floor:g} x initial)", [0.01, 0.05, 0.1, 0.25, 0.5, 0.9], "magma_r", c_opt)
    _heatmap(out, "p_drawdown.png", res, res.p_drawdown, multiples,
             f"P(max drawdown > {s.drawdown_level:.0%})", [0.05, 0.1, 0.25, 0.5, 0.75, 0.95], "magma_r", c_opt)
    _heatmap(out, "median_growth.png", res, res.median_growth, multiples, "median time-average growth / yr",
             [-0.2, -0.1, -0.05, 0.0, 0.05, 0.1], "RdYlGn", c_opt, fmt="%.2f")

    i1 = int(np.argmin(np.abs(multiples - 1.0)))
    summary = {
        "experiment": "ruin_surface",
        "seed": cfg.seed,
        "process": type(base).__name__,
        "axis": s.axis,
        "values": values,
        "multiples": multiples,
        "years": res.years,
        "n_paths_per_point": res.n_paths,
        "n_steps": n_steps,
        "floor": s.floor,
        "drawdown_level": s.drawdown_level,
        "growth_bin_width": res.bin_width,
        "at_multiple_nearest_1": {
            "multiple": multiples[i1],
            "ruin_probability": dict(zip(map(str, values), res.ruin_probability[:, i1])),
            "p_drawdown": dict(zip(map(str, values), res.p_drawdown[:, i1])),
            "median_growth": dict(zip(map(str, values), res.median_growth[:, i1])),
        },
        "growth_optimal_multiple": dict(zip(map(str, values), optimal_f / reference)),
        "growth_optimal_multiple_half_sample": dict(zip(map(str, values), optimal["growth_optimal_multiple_half_sample"])),
        "growth_optimal_note": dict(zip(map(str, values), notes)),
        "warnings": [f"{s.axis} = {v:g}: {n}" for v, n in zip(values, notes) if n != INTERIOR],
        "kernel_seconds": res.wall_seconds,
        "point_path_steps_per_second": res.fractions.size * res.n_paths * n_steps / res.wall_seconds,
    }
    out.finish(summary, t_start)
    log.info("growth-optimal multiple c by %s (E[log W_T] on the surface's draws, grid step %.3g): %s", s.axis,
             grid_step, ", ".join(f"{v:g}: {c:.3f}{_tag(w, e)}" for v, c, w, e in
                                  zip(values, optimal_f / reference, flags["at_wipeout_edge"], flags["at_grid_edge"])))
    if summary["warnings"]:
        log.warning("growth_optimal.csv, column note: pinned = just below the first wipe-out on these draws (moves "
                    "with n_paths), edge = at the grid's edge")
    return summary


@hydra.main(version_base="1.3", config_path="../conf", config_name="ruin_surface")
def main(cfg: DictConfig) -> None:
    hydra_main(run, cfg)


if __name__ == "__main__":
    main()
