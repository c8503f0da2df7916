"""Determinism soak (bounded): one result-carrying kernel of each family (and each return model
through the engine) hashes identically when run again in the same process in another order,
after whatever this test worker ran before, and in a fresh process with one JAX device instead
of one per core. The long version, every
kernel of ``soak.kernels()``: ``python tests/soak.py --rounds 20 --processes 3``."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import soak  # noqa: E402


@pytest.mark.slow
def test_kernels_hash_identically_across_rounds_orders_and_processes():
    # one kernel of each family, and every return model through the engine (the compilations are
    # the cost: the other policies and grids of soak.kernels() add 6 compiled kernels)
    family = ["engine/GarchT", "surface/StudentT", "kelly_grid/Merton", "hedge/price_level/GarchT",
              "hedge/regime_oracle/RegimeSwitching", "crash_protocol/Market", "dispersion/Basket"]
    names = family + ["engine/Gaussian", "engine/Merton", "engine/RegimeSwitching", "engine/StudentT"]
    here = soak.run_rounds(rounds=2, order_seed=1, names=names)
    # the fresh process has one JAX device (this worker one per core), so it also steps several
    # blocks at a time where that is exact (sim.backend.blocks_per_step, blocks_in_groups)
    out = subprocess.run([sys.executable, soak.__file__, "--json", "--rounds", "1", "--order-seed", "2",
                          "--only", *family], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "FTL_CPU_DEVICES": "off"})
    assert out.returncode == 0, out.stderr[-3000:]
    there = json.loads(out.stdout.strip().splitlines()[-1])
    kernels = set(soak.kernels())  # a family or return model added to the soak must be covered here too
    assert {n.split("/")[0] for n in kernels} == {n.split("/")[0] for n in names}
    assert {n for n in kernels if n.startswith("engine/")} <= set(names) and set(names) <= kernels
    assert set(there) == set(family)
    for name, hashes in here.items():
        assert len(hashes) == 1, (name, hashes)
        if name in there:
            assert set(there[name]) == hashes, (name, hashes, there[name])
