"""Ruin-surface benchmark: a (tail index x Kelly multiple) grid against single-point throughput.

    python bench/ruin_surface.py           # full: 64 x 64 grid, 1e5 paths x 252 steps per point
    python bench/ruin_surface.py --quick   # 16 x 16 grid, 16384 paths (a smoke test)

Prints one JSON line: ``single_point`` (path-steps/s of ``sim.engine.simulate`` on one
Student-t model, best of ``--repeats`` after a warm-up), ``grid`` (point-path-steps/s of
``sim.surface.ruin_surface`` over the whole grid, after a warm-up call that compiles), and
``ratio_grid_vs_single_point`` (the acceptance figure: must be >= 1, i.e. the grid is not
slower per path-step than a single point). Both use blocks of 2^14 paths.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# JAX's plain configuration (one CPU device), as this benchmark has always measured;
# FTL_CPU_DEVICES=auto for one device per core (sim.parallel.default_cpu_devices).
os.environ.setdefault("FTL_CPU_DEVICES", "off")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    import jax

    from sim import engine, kelly, surface
    from sim.processes import StudentT

    n_grid, n_paths = (16, 1 << 14) if args.quick else (64, 100_000)
    n_steps, block = 252, 1 << 14
    base = StudentT(0.08, 0.2, 3.0)

    single_paths = 1 << 18
    engine.simulate(base, seed=0, n_paths=single_paths, n_steps=n_steps, block_size=block)  # compile
    best = float("inf")
    for r in range(args.repeats):
        t0 = time.perf_counter()
        engine.simulate(base, seed=r + 1, n_paths=single_paths, n_steps=n_steps, block_size=block)
        best = min(best, time.perf_counter() - t0)
    single = single_paths * n_steps / best

    nus = np.linspace(2.5, 30.0, n_grid)
    cs = np.linspace(0.05, 2.5, n_grid)
    procs = surface.batch_process(base, "nu", nus, dt=1 / 252)
    fractions = np.outer(np.ones(n_grid), cs * kelly.reference_kelly(base))
    kw = dict(axis="nu", values=nus, n_steps=n_steps, block_size=block, floor=0.1, progress=lambda info: None)
    t0 = time.perf_counter()
    surface.ruin_surface(procs, fractions, seed=0, n_paths=block, **kw)  # compile + one block
    warm = time.perf_counter() - t0
    res = surface.ruin_surface(procs, fractions, seed=1, n_paths=n_paths, **kw)
    grid = fractions.size * res.n_paths * n_steps / res.wall_seconds
    print(json.dumps({
        "grid_shape": [n_grid, n_grid],
        "paths_per_point": res.n_paths,
        "n_steps": n_steps,
        "single_point": single,
        "grid": grid,
        "ratio_grid_vs_single_point": grid / single,
        "grid_seconds": res.wall_seconds,
        "warmup_seconds_incl_compile": warm,
        "backend": jax.default_backend(),
        "devices": jax.device_count(),
    }))


if __name__ == "__main__":
    main()
