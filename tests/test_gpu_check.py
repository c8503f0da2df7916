"""The device check runs on whatever JAX sees, here the CPU with tiny sizes, so it cannot rot
before a GPU run (``make gpu-check``)."""

import json
import os
import subprocess
import sys

from tests.conftest import ROOT


def test_device_check_prints_every_figure_on_the_cpu():
    out = subprocess.run([sys.executable, "bench/gpu_check.py", "--quick"], cwd=ROOT, capture_output=True, text=True,
                         timeout=600, env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["backend"] == "cpu" and r["devices"] >= 1
    for name in ("gauss", "t3_5"):
        assert set(r[name]) == {"2048", "4096"} and all(v > 0 for v in r[name].values())
    assert r["surface_per_point_path_step"] > 0 and r["surface_vs_single_point"] > 0
    assert 0 < r["hedged_vs_plain"] < 2 and r["peak_memory_bytes"] > 0
    assert r["words_equal_cpu"] is True and r["stats_ok"] is True and r["stats_max_rel_diff_cpu"] == 0.0
    assert set(r["variants"]) == {"unrolled/1", "unrolled/4", "primitive/1", "primitive/4"}
    assert all(v > 0 for v in r["variants"].values()) and r["fastest_vs_default"] >= 1.0
    assert r["words_primitive_equal_cpu"] is True
    assert r["bandwidth_bytes_per_s"] > 0 and r["hbm_ceiling_path_steps_per_s"] > 0 and r["t3_5_vs_ceiling"] > 0
