"""Engine benchmark: path-steps per second against a good numpy baseline, and peak memory.

    python bench/engine.py            # full: 1e6 x 252 throughput, then a 1e7 x 2520 memory run
    python bench/engine.py --quick    # smaller sizes, no memory run (a smoke test)

Prints one JSON line with ``numpy_t3``, ``gauss``, ``t3``, ``t3_5`` (path-steps/s on JAX's
default configuration: one CPU device, what a notebook gets), the same under ``per_core`` (one
XLA CPU device per core, ``sim.parallel.use_cpu_cores``: what the experiments use; measured
in a child process, since the device count is fixed when JAX starts) with their ratio to the
single-device figures, ``ratio_t3_5_vs_numpy``, ``ratio_t3_5_vs_gauss``,
``peak_rss_gb_1e7x2520``, ``backend``, ``devices``. Each engine figure is the best of ``--repeats`` timed runs after a warm-up run
(compilation excluded), the three engines interleaved round by round. The memory run executes in a child process so its peak resident
set size is its own.

The numpy baseline does the engine's work the way a good numpy user would: float64
``default_rng().standard_t`` drawn in (steps x paths) blocks, vectorized ``log1p``,
``cumsum`` for log-wealth and the return sums, ``maximum.accumulate`` for the running peak
and drawdown, and the first ruin step, chunked over paths so memory stays bounded. Its rate
per path-step does not depend on the number of paths, so it is timed on ``--numpy-paths``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The main figures are JAX's plain configuration (one CPU device); ``import sim`` would give
# one device per core (sim.parallel.default_cpu_devices), which the child measures instead.
os.environ.setdefault("FTL_CPU_DEVICES", "off")

from _timing import best_of  # noqa: E402  (bench/ is this script's own path)

MU, SIGMA, SPY = 0.08, 0.2, 252.0


def numpy_baseline(n_paths: int, n_steps: int, nu: float, chunk: int = 1 << 15, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    dt = 1.0 / SPY
    scale = SIGMA * np.sqrt(dt) * np.sqrt((nu - 2) / nu)
    out = {"log_wealth": [], "max_dd": [], "ruin": [], "sum_r": [], "sum_r2": []}
    for start in range(0, n_paths, chunk):
        m = min(chunk, n_paths - start)
        r = MU * dt + scale * rng.standard_t(nu, size=(n_steps, m))
        wiped = r <= -1.0
        logw = np.cumsum(np.log1p(np.where(wiped, 0.0, r)), axis=0)
        peak = np.maximum(np.maximum.accumulate(logw, axis=0), 0.0)
        out["max_dd"].append((peak - logw).max(axis=0))
        out["log_wealth"].append(logw[-1])
        out["ruin"].append(np.where(wiped.any(axis=0), wiped.argmax(axis=0) + 1, -1))
        out["sum_r"].append(r.sum(axis=0))
        out["sum_r2"].append((r * r).sum(axis=0))
    return {k: np.concatenate(v) for k, v in out.items()}


def engine_rates(processes: dict, n_paths: int, n_steps: int, repeats: int) -> dict:
    """Best-of-``repeats`` path-steps/s of each process, the runs interleaved round by round
    so that a slow spell of a shared machine does not fall on one process only."""
    from sim.engine import simulate

    for process in processes.values():  # warm-up: compiles
        simulate(process, seed=0, n_paths=n_paths, n_steps=n_steps, steps_per_year=SPY)
    best = dict.fromkeys(processes, float("inf"))
    for _ in range(repeats):
        for name, process in processes.items():
            t0 = time.perf_counter()
            simulate(process, seed=1, n_paths=n_paths, n_steps=n_steps, steps_per_year=SPY)
            best[name] = min(best[name], time.perf_counter() - t0)
    return {name: n_paths * n_steps / seconds for name, seconds in best.items()}


def memory_child(n_paths: int, n_steps: int) -> None:
    from sim.engine import simulate
    from sim.processes import StudentT

    res = simulate(StudentT(MU, SIGMA, 3.5), seed=0, n_paths=n_paths, n_steps=n_steps, steps_per_year=SPY)
    print(json.dumps({"seconds": res.wall_seconds, "paths": n_paths, "steps": n_steps}))


def peak_rss_of_child(n_paths: int, n_steps: int) -> tuple[float, dict]:
    cmd = [sys.executable, os.path.abspath(__file__), "--memory-child", str(n_paths), str(n_steps)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # Linux: KiB
    return kib / 2**20, json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--paths", type=int, default=1_000_000)
    ap.add_argument("--steps", type=int, default=252)
    ap.add_argument("--numpy-paths", type=int, default=1 << 18)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--memory-paths", type=int, default=10_000_000)
    ap.add_argument("--memory-steps", type=int, default=2520)
    ap.add_argument("--quick", action="store_true", help="small sizes, skip the memory run")
    ap.add_argument("--memory-child", nargs=2, type=int, help=argparse.SUPPRESS)
    ap.add_argument("--per-core-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--no-per-core", action="store_true", help="skip the one-device-per-core figures")
    args = ap.parse_args()
    if args.memory_child:
        memory_child(*args.memory_child)
        return
    if args.per_core_child:
        from sim.parallel import use_cpu_cores

        n = use_cpu_cores()
        from sim.processes import Gaussian, StudentT

        rates = engine_rates({"gauss": Gaussian(MU, SIGMA), "t3": StudentT(MU, SIGMA, 3.0),
                              "t3_5": StudentT(MU, SIGMA, 3.5)}, args.paths, args.steps, args.repeats)
        print(json.dumps({**rates, "devices": n}))
        return
    if args.quick:
        args.paths, args.numpy_paths, args.repeats = 1 << 17, 1 << 15, 1

    import jax

    from sim.processes import Gaussian, StudentT

    numpy_seconds = best_of(lambda: numpy_baseline(args.numpy_paths, args.steps, 3.0), max(1, args.repeats - 1))
    result = {"numpy_t3": args.numpy_paths * args.steps / numpy_seconds}
    processes = {"gauss": Gaussian(MU, SIGMA), "t3": StudentT(MU, SIGMA, 3.0), "t3_5": StudentT(MU, SIGMA, 3.5)}
    result.update(engine_rates(processes, args.paths, args.steps, args.repeats))
    if not args.no_per_core:
        cmd = [sys.executable, os.path.abspath(__file__), "--per-core-child", "--paths", str(args.paths), "--steps",
               str(args.steps), "--repeats", str(args.repeats)]
        child = subprocess.run(cmd, capture_output=True, text=True, check=True)
        per_core = json.loads(child.stdout.strip().splitlines()[-1])
        per_core.update({f"ratio_{k}_vs_single_device": per_core[k] / result[k] for k in ("gauss", "t3", "t3_5")})
        result["per_core"] = per_core
    result["ratio_t3_5_vs_numpy"] = result["t3_5"] / result["numpy_t3"]
    result["ratio_t3_5_vs_gauss"] = result["t3_5"] / result["gauss"]
    if not args.quick:
        rss, info = peak_rss_of_child(args.memory_paths, args.memory_steps)
        result["peak_rss_gb_1e7x2520"] = rss
        result["memory_run_path_steps_per_s"] = info["paths"] * info["steps"] / info["seconds"]
    else:
        result["peak_rss_gb_1e7x2520"] = None
    result["backend"] = jax.default_backend()
    result["devices"] = jax.device_count()
    result["sizes"] = {"paths": args.paths, "steps": args.steps, "numpy_paths": args.numpy_paths}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
