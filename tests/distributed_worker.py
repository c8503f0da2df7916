"""One process of a multi-process engine run (tests/test_scaling.py starts two of these)."""

import sys

import numpy as np

from sim.parallel import init_distributed

KW = dict(seed=7, n_paths=3000, n_steps=50, block_size=256, chunk_paths=512, snapshot_every=10, record_paths=3)


def run():
    from sim import engine
    from sim.processes import StudentT

    res = engine.simulate(StudentT(0.05, 0.3, 3.0), **KW)
    return {**{f: getattr(res.stats, f) for f in res.stats._fields}, "snapshots": res.snapshots,
            "recorded": res.recorded}


if __name__ == "__main__":
    coordinator, n, pid, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    init_distributed(coordinator, n, pid)
    import jax

    assert jax.process_count() == n and jax.process_index() == pid
    np.savez(f"{out}.{pid}.npz", **run())
