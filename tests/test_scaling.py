"""Scaling out for real on a CPU-only machine: two processes under jax.distributed (loopback
only), and the engine's results equal to a single process's."""

import os
import pathlib
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from sim.validation import ParameterError
from tests.conftest import ROOT, job_dir, prune_compilation_cache, run_module

LOOPBACK = {"0100007F", "0000000000000000FFFF00000100007F", "00000000000000000000000001000000"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(pids) -> list[str]:
    """Local addresses (hex, as in /proc/net/tcp*) of the TCP sockets ``pids`` listen on."""
    inodes = set()
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in pathlib.Path(table).read_text().splitlines()[1:]:
            f = line.split()
            if f[3] == "0A" and f[9] in inodes:
                out.append(f[1].split(":")[0])
    return out


@pytest.mark.slow
def test_two_process_jax_distributed_run_equals_one_process(tmp_path):
    port = _free_port()
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    procs = [subprocess.Popen([sys.executable, "-m", "tests.distributed_worker", f"127.0.0.1:{port}", "2", str(i),
                               str(tmp_path / "out")], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i in range(2)]
    seen = []
    deadline = time.time() + 240
    while any(p.poll() is None for p in procs) and time.time() < deadline:
        seen += _listening([p.pid for p in procs])
        time.sleep(0.2)
    logs = [p.communicate(timeout=60)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), logs
    assert seen, "no listening socket observed (the coordinator should listen while the run lasts)"
    assert set(seen) <= LOOPBACK, f"a server listened beyond loopback: {set(seen) - LOOPBACK}"
    from tests.distributed_worker import run

    single = run()  # this process: one process, its own devices
    for pid in range(2):
        got = np.load(tmp_path / f"out.{pid}.npz")
        for k, v in single.items():
            np.testing.assert_array_equal(got[k], v, err_msg=f"process {pid}: {k}")


# --------------------------------------------------------------------------- sweeps and reproduction

TINY = ["coin.n_rounds=20", "market.n_paths=2000", "market.years=1", "engine.block_size=1024",
        "plots=false"]  # the tables are what these tests compare; figures are tested with each experiment
POINTS = "coin.n_players=2000,2100,2200"
OUT = ["coin_fan.csv", "market_fan.csv", "growth_histogram.csv"]


def _multirun(sweep_dir, *extra, **popen):
    cmd = [sys.executable, "-m", "experiments.time_vs_ensemble", "-m", *extra, *TINY, f"hydra.sweep.dir={sweep_dir}"]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def _finish(proc, timeout=300) -> str:
    out = proc.communicate(timeout=timeout)[0]
    assert proc.returncode == 0, out[-3000:]
    return out


def _done(sweep_dir) -> list[pathlib.Path]:
    return sorted(pathlib.Path(sweep_dir).glob("*/.done.json"))


@pytest.mark.slow
def test_killed_multirun_resumes_without_recomputing_finished_points(tmp_path):
    import signal

    whole, broken = tmp_path / "whole", tmp_path / "broken"
    ref = run_module("experiments.time_vs_ensemble", ["-m", POINTS, *TINY, f"hydra.sweep.dir={whole}"])  # uninterrupted
    assert ref.returncode == 0, ref.stderr[-3000:]
    # the killed sweep compiles into a cache of its own: a SIGKILL in the middle of a cache write would
    # leave a truncated entry in the suite's shared cache (JAX would warn and recompile at every read)
    own = str(tmp_path / "jax-cache")
    proc = _multirun(broken, POINTS, start_new_session=True,
                     env=dict(os.environ, FTL_JAX_CACHE=own, JAX_COMPILATION_CACHE_DIR=own))
    deadline = time.time() + 240
    while len(_done(broken)) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)  # a real signal, mid-sweep: no clean-up runs
    proc.communicate()
    finished = {p.parent.name: p.stat().st_mtime_ns for p in _done(broken)}
    assert len(finished) == 2, finished
    summaries = {n: (broken / n / "summary.json").stat().st_mtime_ns for n in finished}
    again = run_module("experiments.time_vs_ensemble", ["-m", POINTS, *TINY, f"hydra.sweep.dir={broken}"])
    assert again.returncode == 0, again.stderr[-3000:]
    log = again.stdout + again.stderr
    assert log.count("already done for this config") == len(finished), log[-3000:]
    for n, mtime in finished.items():  # not recomputed: records and outputs untouched
        assert (broken / n / ".done.json").stat().st_mtime_ns == mtime
        assert (broken / n / "summary.json").stat().st_mtime_ns == summaries[n]
    assert len(_done(broken)) == 3
    for job in range(3):  # the final results equal an uninterrupted run's
        for f in OUT:
            assert (job_dir(broken, job) / f).read_bytes() == (job_dir(whole, job) / f).read_bytes(), (job, f)
    assert "3/3 points done" in (broken / "progress.log").read_text()


def test_reproduce_a_saved_run_and_catch_an_edited_number(tmp_path, capsys):
    import experiments.reproduce
    from lab.reproduce import main, reproduce

    made = run_module("experiments.time_vs_ensemble", ["-m", "coin.n_players=2000", *TINY, f"hydra.sweep.dir={tmp_path}"])
    assert made.returncode == 0, made.stderr[-3000:]
    run = job_dir(tmp_path, 0)
    assert not list(run.glob("*.png"))  # plots=false: tables and the summary only
    result = reproduce(run)
    assert result["ok"] and result["rtol"] == 0 and result["atol"] == 0, result["mismatches"]
    assert set(result["compared"]) == {*OUT, "summary.json"}
    table = (run / "market_fan.csv").read_text().splitlines()
    cells = table[3].split(",")
    cells[2] = repr(float(cells[2]) * (1 + 1e-6))  # one number, nudged in its 7th digit
    table[3] = ",".join(cells)
    (run / "market_fan.csv").write_text("\n".join(table) + "\n")
    capsys.readouterr()
    assert main([str(run)]) == 1  # the command's own path (python -m experiments.reproduce RUN_DIR)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"MISMATCH: 1 difference(s) against {run}:", lines
    assert lines[1].startswith("  market_fan.csv: row 2, column"), lines
    assert experiments.reproduce.main is main  # the command is this function


@pytest.mark.slow
def test_joblib_and_submitit_local_launchers_run_for_real(tmp_path):
    procs = {"joblib": _multirun(tmp_path / "joblib", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                                 "coin.n_players=2000,2100"),
             "submitit": _multirun(tmp_path / "submitit", "hydra/launcher=submitit_local",
                                   "hydra.launcher.timeout_min=10", "coin.n_players=2000,2100")}
    logs = {k: _finish(p) for k, p in procs.items()}
    assert "Joblib" in logs["joblib"] and "Submitit 'local'" in logs["submitit"]
    for name in procs:
        assert len(_done(tmp_path / name)) == 2, name
        for job in range(2):  # the same numbers whichever launcher ran them
            for f in OUT:
                assert (job_dir(tmp_path / name, job) / f).read_bytes() == (job_dir(tmp_path / "joblib", job) / f).read_bytes()
    assert (tmp_path / "submitit" / ".submitit").is_dir()


def test_slurm_launcher_configs_compose():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=os.path.join(ROOT, "conf"), version_base="1.3"):
        cfg = compose("time_vs_ensemble", overrides=["hydra/launcher=slurm_multinode"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher") and launcher.nodes == 2 and launcher.gpus_per_node == 8


def test_engine_and_surface_on_two_forced_cpu_devices_equal_one(tmp_path):
    """The paths-axis sharding (engine: a mesh over blocks; surface: blocks round-robin over
    devices) gives the same numbers bit for bit on one CPU device and on two, hedge overlay
    (sales and roll downs of the crash protocol) included. This worker has one device per core
    (``import sim``); the child the other count. One device of a multi-core CPU also steps
    several blocks at a time under ``vmap`` (``backend.blocks_per_step``), one per core one."""
    import jax

    from sim import backend

    here = jax.device_count()
    there = 1 if here > 1 else 2
    out = tmp_path / "other.npz"
    script = ("import jax, numpy as np\nfrom tests.distributed_worker import run\n"
              f"assert jax.device_count() == {there}, jax.devices()\nnp.savez({str(out)!r}, **run(hedged=True))\n")
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={there}", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    from tests.distributed_worker import run

    other = np.load(out)
    mine = run(hedged=True)
    if backend.cpu_cores() > 1:  # the grouped loop is what one of the two runs used
        assert max(backend.blocks_per_step("cpu", 1), backend.blocks_per_step("cpu", here)) > 1
    assert mine["hedged_sales"].sum() > 0 and (mine["hedged_premium"] > 0).all()
    for k, v in mine.items():
        np.testing.assert_array_equal(other[k], v, err_msg=k)


def test_use_cpu_cores_sets_devices_before_jax_starts_and_is_harmless_after():
    from sim.parallel import use_cpu_cores

    script = ("import jax\nfrom sim.parallel import use_cpu_cores\nassert use_cpu_cores(3) == 3\n"
              "assert jax.device_count() == 3 and jax.devices()[0].platform == 'cpu', jax.devices()\n")
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=dict(os.environ, JAX_PLATFORMS="cpu"),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    import jax

    jax.devices()  # started: asking again changes nothing and says how many it has
    assert use_cpu_cores(3) == len(jax.devices("cpu"))
    with pytest.raises(ParameterError, match="cpu_devices"):
        use_cpu_cores(0)


def test_the_tests_compilation_cache_is_pruned_oldest_first_and_repaired(tmp_path, monkeypatch):
    """The suite's cache is kept within its bound at session start, the oldest entries going
    first; an access-time file without its entry (a killed writer) is removed, and where the
    user bounds JAX's cache, an entry without one gets one (JAX's eviction fails on it)."""
    for i, name in enumerate(["jit_a-1", "jit_b-2", "jit_c-3"]):
        (tmp_path / f"{name}-cache").write_bytes(b"x" * 100)
        os.utime(tmp_path / f"{name}-cache", ns=(10**18 + i * 10**9,) * 2)  # a is the oldest
    (tmp_path / "jit_h-9-atime").write_bytes(b"t")
    monkeypatch.delenv("JAX_COMPILATION_CACHE_MAX_SIZE", raising=False)
    assert prune_compilation_cache(tmp_path, max_bytes=250) == 2  # the orphan, and a (over the bound)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["jit_b-2-cache", "jit_c-3-cache"]
    monkeypatch.setenv("JAX_COMPILATION_CACHE_MAX_SIZE", str(1 << 30))
    assert prune_compilation_cache(tmp_path, max_bytes=250) == 2
    assert int.from_bytes((tmp_path / "jit_b-2-atime").read_bytes(), "little") == 10**18 + 10**9
    assert prune_compilation_cache(tmp_path, max_bytes=250) == 0
