"""One-command device check (``make gpu-check``): what the engine does on whatever JAX sees.

    python bench/gpu_check.py           # sizes by backend: a GPU gets 1e7 / 1e8 paths x 252 steps
    python bench/gpu_check.py --quick   # tiny sizes on any backend (the test suite runs this)

Prints one JSON line:

* ``backend``, ``device`` (kind), ``devices``;
* ``gauss`` and ``t3_5``: engine path-steps/s (``sim.simulate``, constant mix, running
  per-path statistics only) at the two sizes ``sizes.paths`` x ``sizes.steps``;
* ``surface_per_point_path_step``: the ruin-surface grid (``grid`` x ``grid`` points: tail
  index x Kelly multiple) per point-path-step, and ``surface_vs_single_point`` (that rate
  over the single-point Student-t rate at the same paths: >= 1 means the grid costs no more
  per point-path-step than one point);
* ``hedged_vs_plain``: the hedge overlay's throughput over the plain engine's (GARCH-t);
* ``peak_memory_bytes`` of a ``memory`` run (1e8 x 2520 on a GPU): the device's own peak where
  it reports one (``memory_stats``), else this process's peak resident set (``peak_memory_kind``);
* ``words_equal_cpu``: the random words (``sim.samplers.hash_words``) of a fixed key on this
  backend equal those on the CPU, bit for bit; ``stats_max_rel_diff_cpu``: the largest
  difference of a small run's per-path log wealth against the same run on the CPU, over
  ``max(1, |value|)`` (only the last bits of transcendental functions and sums may differ;
  bound ``STATS_BOUND``), the same paths wiped out, ``stats_ok``;
* ``variants``: the Student-t rate at the larger size under each choice of random-word
  generator (``unrolled`` / ``primitive`` Threefry, ``sim.backend.word_generator``) and scan
  unroll factor (``1`` / ``4``, ``sim.backend.scan_unroll``), keyed ``words/unroll``;
  ``fastest_variant`` and its ratio to the default (``unrolled/1``); ``words_primitive_equal_cpu``:
  the primitive's words here equal the CPU path's. Choose with ``FTL_WORDS`` and
  ``FTL_SCAN_UNROLL``;
* ``bandwidth_bytes_per_s``: measured streaming bandwidth (a jitted scale-and-add over a large
  array, read + write), ``bandwidth_reported`` for known devices, the HBM ceiling of a scan
  that reads and writes a 16-byte carry per path-step (``bandwidth / 32``), and
  ``gauss_vs_ceiling`` / ``t3_5_vs_ceiling`` at the larger size.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _timing import best_of  # noqa: E402  (bench/ is this script's own path)

STATS_BOUND = 1e-5  # relative: float32 transcendental functions differ in their last bits only
SPY = 252.0
SIZES = {
    "gpu": dict(paths=(10**7, 10**8), steps=252, grid=64, grid_paths=1 << 16, hedge_paths=1 << 22,
                memory=(10**8, 2520), bandwidth_elems=1 << 28),
    "cpu": dict(paths=(1 << 16, 1 << 18), steps=252, grid=16, grid_paths=1 << 12, hedge_paths=1 << 15,
                memory=(1 << 18, 2520), bandwidth_elems=1 << 25),
    "quick": dict(paths=(1 << 11, 1 << 12), steps=32, grid=4, grid_paths=1 << 9, hedge_paths=1 << 11,
                  memory=(1 << 12, 64), bandwidth_elems=1 << 20),
}
REPORTED_BANDWIDTH = {"H200": 4.8e12, "H100": 3.35e12, "A100": 2.0e12, "L40S": 8.64e11, "L4": 3.0e11}


def engine_rate(process, n_paths: int, n_steps: int, policy=None, repeats: int = 2) -> float:
    import sim

    def run():
        sim.simulate(process, policy=policy or sim.ConstantMix(), seed=1, n_paths=n_paths, n_steps=n_steps,
                     steps_per_year=SPY)

    return n_paths * n_steps / best_of(run, repeats, warmup=True)


def surface_rate(grid: int, n_paths: int, n_steps: int) -> float:
    import numpy as np

    from sim import kelly, surface
    from sim.processes import StudentT

    base = StudentT(0.08, 0.2, 3.5)
    nus = np.linspace(2.5, 30.0, grid)
    fractions = np.outer(np.ones(grid), np.linspace(0.1, 2.5, grid) * float(kelly.reference_kelly(base)))
    processes = surface.batch_process(base, "nu", nus, dt=1 / SPY)

    def run():
        surface.ruin_surface(processes, fractions, axis="nu", values=nus, seed=0, n_paths=n_paths, n_steps=n_steps,
                             steps_per_year=SPY, n_bins=256, progress=lambda i: None)

    return grid * grid * n_paths * n_steps / best_of(run, 1, warmup=True)


def peak_memory(n_paths: int, n_steps: int) -> tuple[float | None, str]:
    import jax

    import sim

    sim.simulate(sim.StudentT(0.08, 0.2, 3.5), seed=0, n_paths=n_paths, n_steps=n_steps, steps_per_year=SPY)
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        return float(stats["peak_bytes_in_use"]), "device peak_bytes_in_use"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0, "process peak resident set (CPU)"


def against_cpu() -> dict:
    """The same words and a small run on this backend and on the CPU."""
    import jax
    import numpy as np

    import sim
    from sim import samplers

    cpu = jax.devices("cpu")[0]
    here = jax.devices()[0]

    def words(device):
        with jax.default_device(device):
            w0, w1 = jax.jit(lambda k: samplers.hash_words(k, 1 << 16))(jax.random.key(20261201))
            return np.asarray(w0), np.asarray(w1)

    def lw(device):
        with jax.default_device(device):
            res = sim.simulate(sim.StudentT(0.08, 0.2, 3.5), policy=sim.ConstantMix(1.5), seed=3, n_paths=4096,
                               n_steps=252, steps_per_year=SPY, devices=[device])
            return res.stats.log_wealth.astype(np.float64)

    a, b = words(here), words(cpu)
    x, y = lw(here), lw(cpu)
    same_wipeouts = bool(np.array_equal(np.isfinite(x), np.isfinite(y)))
    fin = np.isfinite(x) & np.isfinite(y)
    rel = float(np.max(np.abs(x[fin] - y[fin]) / np.maximum(np.abs(y[fin]), 1.0))) if fin.any() else 0.0
    return {"words_equal_cpu": bool(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])),
            "stats_max_rel_diff_cpu": rel, "stats_same_wipeouts_cpu": same_wipeouts, "stats_bound": STATS_BOUND,
            "stats_ok": same_wipeouts and rel <= STATS_BOUND}


def variants(n_paths: int, n_steps: int) -> dict:
    """The Student-t engine's rate under each word generator and scan unroll factor, and the
    primitive's words against the CPU path's."""
    import jax
    import numpy as np

    import sim
    from sim import backend, samplers

    def words(device):
        with jax.default_device(device):
            return np.stack(jax.jit(lambda k: samplers.hash_words(k, 1 << 16))(jax.random.key(20261201)))

    cpu_words = words(jax.devices("cpu")[0])
    rates, same = {}, True
    for gen in backend.WORD_GENERATORS:
        for unroll in (1, 4):
            with backend.choices(words=gen, unroll=unroll):
                rates[f"{gen}/{unroll}"] = engine_rate(sim.StudentT(0.08, 0.2, 3.5), n_paths, n_steps)
                if gen == "primitive" and unroll == 1:
                    same = bool(np.array_equal(words(jax.devices()[0]), cpu_words))
    best = max(rates, key=rates.get)
    return {"variants": rates, "fastest_variant": best, "fastest_vs_default": rates[best] / rates["unrolled/1"],
            "words_primitive_equal_cpu": same}


def bandwidth(n: int) -> float:
    import jax
    import jax.numpy as jnp

    x = jnp.ones((n,), jnp.float32)
    f = jax.jit(lambda v: v * 1.0001 + 1.0)
    seconds = best_of(lambda: f(x).block_until_ready(), 3, warmup=True)
    return 2 * 4 * n / seconds


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny sizes on any backend")
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    import jax

    import sim
    from sim import hedge

    backend = jax.default_backend()
    size = SIZES["quick" if args.quick else ("gpu" if backend == "gpu" else "cpu")]
    device = jax.devices()[0]
    out = {"backend": backend, "device": getattr(device, "device_kind", str(device)), "devices": jax.device_count(),
           "sizes": size}
    gauss, t35 = sim.Gaussian(0.08, 0.2), sim.StudentT(0.08, 0.2, 3.5)
    for name, proc in (("gauss", gauss), ("t3_5", t35)):
        out[name] = {str(n): engine_rate(proc, n, size["steps"]) for n in size["paths"]}
    single = engine_rate(t35, size["grid_paths"], size["steps"])
    out["surface_per_point_path_step"] = surface_rate(size["grid"], size["grid_paths"], size["steps"])
    out["surface_vs_single_point"] = out["surface_per_point_path_step"] / single
    plain = engine_rate(sim.GarchT(), size["hedge_paths"], size["steps"], policy=sim.ConstantMix(1.0))
    hedged = engine_rate(sim.GarchT(), size["hedge_paths"], size["steps"], policy=hedge.HedgeOverlay())
    out["hedged_vs_plain"] = hedged / plain
    out["peak_memory_bytes"], out["peak_memory_kind"] = peak_memory(*size["memory"])
    out["memory_run"] = list(size["memory"])
    out.update(against_cpu())
    out.update(variants(size["paths"][-1], size["steps"]))
    bw = bandwidth(size["bandwidth_elems"])
    reported = next((v for k, v in REPORTED_BANDWIDTH.items() if k in out["device"]), None)
    ceiling = (reported or bw) / 32.0  # a 16-byte carry read and written per path-step
    big = str(size["paths"][-1])
    out.update(bandwidth_bytes_per_s=bw, bandwidth_reported=reported, hbm_ceiling_path_steps_per_s=ceiling,
               gauss_vs_ceiling=out["gauss"][big] / ceiling, t3_5_vs_ceiling=out["t3_5"][big] / ceiling,
               wall_seconds=time.perf_counter() - t_start)
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
