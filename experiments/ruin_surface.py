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

import logging
import time

import hydra
import numpy as np
from omegaconf import DictConfig

from lab.harness import OutputWriter, build_process, hydra_main
from sim import plots, surface
from sim.validation import check_int, check_range

log = logging.getLogger(__name__)


def _tag(pinned: bool, edge: bool) -> str:
    tags = [name for name, on in (("pinned", pinned), ("edge", edge)) if on]
    return f" ({', '.join(tags)})" if tags else ""


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
    multiples = surface.kelly_multiples(s.multiples)
    reference = surface.reference_fractions(base, s.axis, values, s.risk_free)
    fractions = np.outer(reference, multiples)
    log.info("surface: %s, %s in %s x %d multiples, %d paths x %d steps per point",
             type(base).__name__, s.axis, values.tolist(), len(multiples), n_paths, n_steps)
    return base, values, processes, multiples, reference, fractions, n_paths, n_steps, steps_per_year


check = _build  # every parameter, every model point, before any work (also per sweep point)


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
    out = OutputWriter(out_dir, plots=cfg.plots)
    table = res.table()
    table.insert(1, "kelly_multiple", np.tile(multiples, len(values)))
    out.table("surface.csv", table)
    optimal = res.optimum_table(reference, multiples)
    out.table("growth_optimal.csv", optimal)
    optimal_f = optimal["growth_optimal_fraction"].to_numpy()
    flags = {k: optimal[k].to_numpy() for k in ("at_wipeout_edge", "at_grid_edge")}
    notes, grid_step = list(optimal["note"]), float(optimal["grid_step_in_c"].iloc[0])
    c_opt = dict(c=optimal_f / reference, wipeout=flags["at_wipeout_edge"], grid_edge=flags["at_grid_edge"])

    for name, grid, title, levels, cmap in (
            ("ruin_probability.png", res.ruin_probability, f"P(wealth < {s.floor:g} x initial)",
             [0.01, 0.05, 0.1, 0.25, 0.5, 0.9], "magma_r"),
            ("p_drawdown.png", res.p_drawdown, f"P(max drawdown > {s.drawdown_level:.0%})",
             [0.05, 0.1, 0.25, 0.5, 0.75, 0.95], "magma_r"),
            ("median_growth.png", res.median_growth, "median time-average growth / yr",
             [-0.2, -0.1, -0.05, 0.0, 0.05, 0.1], "RdYlGn")):
        out.figure(name, lambda: plots.surface_heatmap(res, grid, multiples, title, levels, cmap, c_opt,
                                                       center=0.0 if cmap == "RdYlGn" else None))

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
        "at_multiple_nearest_1": res.at_multiple(multiples, 1.0),
        "growth_optimal_multiple": dict(zip(map(str, values), optimal_f / reference)),
        "growth_optimal_multiple_half_sample": dict(zip(map(str, values), optimal["growth_optimal_multiple_half_sample"])),
        "growth_optimal_note": dict(zip(map(str, values), notes)),
        "warnings": [f"{s.axis} = {v:g}: {n}" for v, n in zip(values, notes) if n != surface.OPTIMUM_INTERIOR],
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
