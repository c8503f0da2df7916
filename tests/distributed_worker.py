"""One process of a multi-process run of the engine and of a ruin surface (tests/test_scaling.py
starts two of these, and compares with one process)."""

import sys

import numpy as np

from sim.parallel import init_distributed

KW = dict(seed=7, n_paths=3000, n_steps=50, block_size=256, chunk_paths=512, snapshot_every=10, record_paths=3)


def run(hedged: bool = False):
    from sim import engine
    from sim.processes import StudentT

    from sim import surface

    res = engine.simulate(StudentT(0.05, 0.3, 3.0), **KW)
    one_chunk = engine.simulate(StudentT(0.05, 0.3, 3.0), seed=1, n_paths=100, n_steps=10, block_size=128)  # process 1 idle
    nus = [3.0, 5.0]
    grid = surface.ruin_surface(surface.batch_process(StudentT(0.08, 0.2, 4.0), "nu", nus, dt=1 / 252),
                                np.array([[1.0, 2.0, 3.0]] * 2), axis="nu", values=nus, seed=3, n_paths=5 * 512,
                                n_steps=60, block_size=512, floor=0.8)
    out = {}
    if hedged:  # the put overlay with the crash protocol's sales and roll downs
        from sim import hedge, processes, regime

        ov = hedge.HedgeOverlay(program=hedge.HedgeProgram.from_years(budget=0.05, strike=0.9),
                                monetize=regime.CrashProtocol(protocol=regime.Protocol(crash_drawdown=0.06)))
        h = engine.simulate(processes.RegimeSwitching(), policy=ov, **{**KW, "n_steps": 250})
        out = {**{f"hedged_{f}": getattr(h.stats, f) for f in h.stats._fields},
               **{f"hedged_{k}": v for k, v in h.extras.items()}}
    return {**out, **{f: getattr(res.stats, f) for f in res.stats._fields}, "snapshots": res.snapshots,
            "recorded": res.recorded, "one_chunk": one_chunk.stats.log_wealth, **{f"surface_{k}": getattr(grid, k) for k in
                                         ("ruin_probability", "p_drawdown", "median_growth", "mean_growth")}}


if __name__ == "__main__":
    coordinator, n, pid, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    init_distributed(coordinator, n, pid)
    import jax

    assert jax.process_count() == n and jax.process_index() == pid
    np.savez(f"{out}.{pid}.npz", **run())
