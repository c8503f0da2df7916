"""The entry points as a user meets them: unknown keys and bad values in one line before any
work, and one directory per run."""

import json
import os
import subprocess
import sys
import time

import pytest
from omegaconf import OmegaConf

from lab import harness
from tests.conftest import ROOT, run_module

TINY = ["coin.n_players=200", "coin.n_rounds=5", "market.n_paths=256", "market.years=0.1", "engine.block_size=128",
        "engine.n_snapshots=2", "plots=false"]


def _run(module, *overrides, wait=True):
    cmd = [sys.executable, "-m", module, *overrides]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    if not wait:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_unknown_keys_in_nested_nodes_and_at_the_root():
    ref = OmegaConf.create({"a": 1, "b": {"c": 2, "m": {"_target_": "x", "mu": 0}}, "hydra": {}})
    cfg = OmegaConf.create({"a": 1, "b": {"c": 2, "bogus": 3, "m": {"_target_": "x", "kappa": 1}}, "zz": 1,
                            "cpu_devices": 2, "hydra": {"anything": 1}})
    # model nodes (with _target_) are checked by their builder against the class instead
    assert harness.unknown_keys(cfg, ref) == ["b.bogus", "zz"]


@pytest.mark.parametrize("module,override,path", [
    ("experiments.ruin_surface", "+surface.bogus=1", "surface.bogus"),
    ("experiments.time_vs_ensemble", "+coin.bogus=1", "coin.bogus"),
    ("experiments.time_vs_ensemble", "++market.bogus=1", "market.bogus"),
])
def test_an_added_unknown_key_fails_in_one_line_before_any_work(tmp_path, module, override, path):
    out = run_module(module, [override, f"hydra.run.dir={tmp_path}"])
    assert out.returncode == 2, out.stderr[-2000:]
    lines = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and repr(path) in lines[0] and "allowed under" in lines[0], out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "summary.json").exists()
    log = next(tmp_path.glob("*.log")).read_text()
    assert "Traceback" in log  # the traceback goes to the log file


def test_a_bad_value_fails_in_one_line(tmp_path):
    out = run_module("experiments.time_vs_ensemble", ["market.floor=1.5", f"hydra.run.dir={tmp_path}"])
    assert out.returncode == 2
    lines = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "floor = 1.5 is out of range; allowed: finite values in [0, 1)" in lines[0], out.stderr
    # a boolean key, checked with the config before any work (the ruin surface writes its
    # outputs only after simulating)
    out = run_module("experiments.ruin_surface", ["plots=sometimes", f"hydra.run.dir={tmp_path / 'b'}"])
    lines = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert out.returncode == 2 and len(lines) == 1 and "plots = 'sometimes'; allowed: true or false" in lines[0], out.stderr
    assert not (tmp_path / "b" / "surface.csv").exists()


def test_claim_refuses_a_live_owner_and_takes_over_a_dead_one(tmp_path):
    claim = harness.claim_run_dir(tmp_path)
    with pytest.raises(harness.RunDirInUse, match="in use by process"):
        harness.claim_run_dir(tmp_path)
    dead = json.loads(claim.read_text())
    dead["pid"] = 2**22 + 12345  # beyond pid_max: no such process
    claim.write_text(json.dumps(dead))
    assert harness.claim_run_dir(tmp_path).exists()


def test_two_runs_started_together_get_their_own_directories(tmp_path):
    pattern = f"hydra.run.dir={tmp_path}/d/" + "${now:%Y-%m-%d_%H-%M-%S}_${pid:}"
    procs = [_run("experiments.time_vs_ensemble", *TINY, pattern, wait=False) for _ in range(2)]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read()[-2000:]
    dirs = sorted((tmp_path / "d").iterdir())
    assert len(dirs) == 2
    for d in dirs:
        overrides = OmegaConf.load(d / ".hydra" / "overrides.yaml")
        assert list(overrides)[:len(TINY)] == TINY
        assert json.loads((d / "summary.json").read_text())["run"]["wall_seconds"] > 0


def test_a_second_run_into_a_directory_in_use_refuses_to_start(tmp_path):
    # The directory is held by a live process of this host (this test's own, through the
    # same claim the experiments take): deterministic, not a race against a running job.
    from lab.harness import claim_run_dir

    claim = claim_run_dir(tmp_path)
    # in this process: the claim's holder is alive whichever process it is, as for another run
    second = run_module("experiments.time_vs_ensemble", [*TINY, f"hydra.run.dir={tmp_path}"])
    assert second.returncode == 2 and "is in use by process" in second.stderr, second.stderr[-2000:]
    assert not (tmp_path / "summary.json").exists()
    claim.unlink()
    third = run_module("experiments.time_vs_ensemble", [*TINY, f"hydra.run.dir={tmp_path}"])
    assert third.returncode == 0, third.stderr[-2000:]
    assert not (tmp_path / ".running.json").exists()  # released at the end
