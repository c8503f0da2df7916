"""Backend-specific tuning, in one place, so that finance code reads as finance.

XLA's CPU backend emits single-output fusions and recomputes a cheap-enough producer inside
every consumer that reads it. Three workarounds follow from that; each is switched on for the
CPU only (on a GPU the plain form is used) and none changes a result beyond the last bits of
a floating-point sum's order (the tests pin CPU results):

* ``materialize(t, fn, *operands)``: calls ``fn`` under a conditional whose predicate is
  always true (``t >= 0``; its operands and outputs are buffers), so an expensive value read
  by several results (the hedge's Black-Scholes marks, a policy's decision) is computed once.
  Only what the conditional computes goes through it: a pass-through costs a copy.
* ``tranche_sum(x)``: a sum over a small static leading axis as elementwise adds (the CPU
  backend sends a reduction to a library call, 5x slower there than fused adds).
* ``prefetch_draws()``: the engine draws step ``t + 1``'s returns at the end of step ``t`` and
  carries them; a loop-carried value is materialized once, whereas the CPU backend would
  otherwise recompute the whole sampler (hash included) inside each fusion that reads ``r``.
  The draws are the same either way (keys are ``fold_in(k_steps, t)``); only the order of
  the work changes.

A policy whose decision is stateless and cheap may declare ``at_trade = True`` (see
``sim.hedge``): on the CPU it is then decided inside the trades' conditional, from its
operands, instead of in a conditional of its own (``decide_at_trade``).

The gains, measured in paired benchmarks on the 2-core CPU VM, are in docs/DESIGN.md
("Backend workarounds").

``per_lane(shape, *scalars)`` is about exactness, on every backend: scalars broadcast to the
lanes behind an optimization barrier, so that what is computed from them is computed per lane,
with the same multiply-add contractions in every program (device count, grouping).

``note_cpu_devices`` tells a user, once per process, how to get one JAX device per core.

For a paired benchmark, ``FTL_NO_TUNING`` (a comma list of ``fences``, ``sums``, ``prefetch``,
``at_trade``, or ``all``) turns workarounds off on the CPU too, when a kernel is traced.

Execution by backend (``gpu_form``, ``vectorize_blocks``, ``blocks_per_step``,
``target_chunk_paths``). On the CPU a device steps its blocks one at a time (their state stays
in its cache) in chunks of 2^18 paths; a single device of a multi-core CPU steps a few at a time
under ``vmap`` where that gives the same bits and fits the cache (``blocks_in_groups``).
On a GPU, a step must carry many paths to amortize the per-iteration launch cost of a scan, so
the blocks of a chunk are stepped together under ``vmap``, the chunk is sized from the device's
memory (a quarter of it for the per-path state, up to 2^25 paths per device), and none of the
CPU workarounds is used. ``FTL_EXECUTION=gpu`` runs that same form on the CPU: the CPU
stand-in that the test suite compares against the CPU path, so a GPU run is not the first time
that code executes. The random words are the same integers either way (counter-based hashes
of ``(seed, block_size, path, step)``); floating-point results may differ in their last bits
(the order of a sum, a contracted multiply-add), within the bound the tests state.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os

import jax
import jax.extend
import jax.numpy as jnp
from jax import lax

__all__ = ["on_cpu", "gpu_form", "vectorize_blocks", "cpu_cores", "blocks_per_step", "target_chunk_paths",
           "word_generator", "scan_unroll", "choices", "materialize", "trace_once", "blocks_in_groups", "per_lane",
           "tranche_sum", "prefetch_draws", "decide_at_trade", "note_cpu_devices"]

log = logging.getLogger(__name__)
_NOTED = []


def on_cpu() -> bool:
    """Whether traced code is compiled for the CPU (JAX's default backend)."""
    return jax.default_backend() == "cpu"


def gpu_form() -> bool:
    """Whether the engine uses the GPU's execution: on a GPU, or forced on the CPU by
    ``FTL_EXECUTION=gpu`` (its stand-in)."""
    return not on_cpu() or os.environ.get("FTL_EXECUTION", "").lower() == "gpu"


def vectorize_blocks(platform: str) -> bool:
    """Step a chunk's blocks together under ``vmap`` (GPU form) or one at a time (CPU)."""
    return platform != "cpu" or gpu_form()


def cpu_cores() -> int:
    """The cores this process may run on: its affinity mask where the OS has one (Linux), else
    ``os.cpu_count()`` (macOS and Windows have no ``os.sched_getaffinity``)."""
    getaffinity = getattr(os, "sched_getaffinity", None)
    return len(getaffinity(0)) if getaffinity is not None else (os.cpu_count() or 1)


def blocks_per_step(platform: str, n_devices: int) -> int:
    """Blocks a CPU device steps together, under ``vmap``, in each iteration of its loop over
    a chunk's blocks (the CPU form; ``vectorize_blocks`` steps a whole chunk at once elsewhere).

    Where one device has several cores (JAX's default: a single CPU device), XLA splits each
    fusion of a step over them, and one block's 2^14 lanes are too little work to split well:
    four blocks a step made 187-197 M Student-t(3.5) path-steps/s on one device of a 2-core
    CPU against 121-148 M one at a time, with the same outputs bit for bit (each lane's
    arithmetic is elementwise; ``tests/test_scaling.py`` compares one device with two). With
    one device per core, one (2 and 4 measured no faster there). ``2 x`` the cores a device
    has, at most 16; ``FTL_BLOCKS_PER_STEP`` chooses (1..64)."""
    raw = os.environ.get("FTL_BLOCKS_PER_STEP", "").strip()
    if raw:
        if not raw.isdigit() or not 1 <= int(raw) <= 64:
            raise ValueError(f"FTL_BLOCKS_PER_STEP={raw!r}: allowed an integer in 1..64")
        return int(raw)
    if platform != "cpu":
        return 1
    per_device = cpu_cores() // max(1, n_devices)
    return 1 if per_device <= 1 else min(16, 2 * per_device)


_GROUP_ELEMENTS = 1 << 16  # elements of a block's largest array, times the blocks stepped together


def blocks_in_groups(traced, group: int) -> int:
    """How many blocks a device steps together, at most ``group``, for a block function traced
    by ``trace_once``: one where its program holds a conditional or a matrix product (so that
    every block's results are the same bit for bit), else as many as keep its largest array
    within 2^16 elements (so that their state stays in the cache).

    Measured on every kernel of ``tests/soak.py`` on one CPU device, four blocks a step
    against one: the plain engine (every return model), the Kelly grid and the ruin surface
    hash the same; the hedge overlay and the crash protocol (the conditionals of their
    ``materialize`` fences; with the fences off they hash the same) and the dispersion book
    (which holds a matrix product) did not: their last bits moved. And bench/ruin_surface.py's
    grid, whose block carries 16 fractions per path, ran 13-15% slower four blocks at a time
    (536-636 against 630-731 M point-path-steps/s) while the plain engine's 2^14-lane blocks
    ran 1.4x faster."""
    if group <= 1:
        return 1
    largest = 1

    def walk(jaxpr) -> bool:  # False where a conditional or a matrix product is found
        nonlocal largest
        for eqn in jaxpr.eqns:
            if eqn.primitive.name in ("cond", "dot_general"):
                return False
            for v in eqn.outvars:
                largest = max(largest, int(math.prod(getattr(v.aval, "shape", ()))))
            if not all(walk(sub) for sub in jax.extend.core.jaxprs_in_params(eqn.params)):
                return False
        return True

    if not walk(traced.jaxpr.jaxpr):
        return 1
    g = max(1, min(group, _GROUP_ELEMENTS // largest))
    while group % g:  # a divisor of the planned group: the chunk holds a multiple of it
        g -= 1
    return g


def concurrent_runs(platform: str, n_processes: int) -> int:
    """Independent calls run at once by ``parallel.concurrently`` (``engine.simulate_each``): two
    on a one-process CPU run, where XLA compiles a program on one core while the blocks of
    another run on all of them (measured when crash_protocol ran one simulation per model and policy,
    cold: 130 s -> 97 s, warm 42 s -> 36 s, three at once 100 s; 2-core CPU, 2026-12-02); one elsewhere (a GPU's memory would hold two runs' chunks
    at once; several processes must issue their gathers in the same order)."""
    return 2 if platform == "cpu" and n_processes == 1 else 1


_CPU_CHUNK = 1 << 18  # measured as fast as 2^20 on 2 cores, a quarter of the memory
_GPU_CHUNK_MAX = 1 << 25


def target_chunk_paths(bytes_per_path: int = 256) -> int:
    """Paths per compiled call: 2^18 on the CPU; in the GPU form, what a quarter of the
    device's memory holds at ``bytes_per_path`` of state (2^20 .. 2^25 paths; 2^20 on the CPU
    stand-in)."""
    if not gpu_form():
        return _CPU_CHUNK
    stats = (jax.devices()[0].memory_stats() or {}) if not on_cpu() else {}
    limit = stats.get("bytes_limit")
    if not limit:
        return 1 << 20
    return int(min(_GPU_CHUNK_MAX, max(1 << 20, limit // (4 * bytes_per_path))))


WORD_GENERATORS = ("unrolled", "primitive")
_CHOSEN: dict = {}  # set by ``choices`` (a benchmark comparing them in one process), over the environment


def word_generator() -> str:
    """Which Threefry-2x32 computes the random words (``sim.samplers.hash_words``):
    ``unrolled``, written out as elementwise operations that fuse with the sampler (2.4x the
    words per second of the primitive on the 2-core CPU), or ``primitive``, JAX's own
    ``threefry2x32`` (``jax.extend.random.threefry_2x32``, lowered as JAX chooses for the
    backend). Both compute the same function: the words are the same integers
    (tests/test_samplers.py, tests/test_gpu_form.py). ``FTL_WORDS`` chooses; the default is
    ``unrolled`` on every backend until a GPU measurement says otherwise (``make gpu-check``
    times both)."""
    name = _CHOSEN.get("words") or os.environ.get("FTL_WORDS", "").strip().lower() or "unrolled"
    if name not in WORD_GENERATORS:
        raise ValueError(f"FTL_WORDS={name!r}: allowed {', '.join(WORD_GENERATORS)}")
    return name


def scan_unroll() -> int:
    """Steps per iteration of the engine's time loop (``lax.scan(..., unroll=k)``): ``k`` steps
    in one loop body, which on a GPU fuses them into one kernel per ``k`` steps and divides the
    per-iteration launch cost by ``k``. 1 by default (the CPU's measured best: the state stays
    in cache either way); ``FTL_SCAN_UNROLL`` chooses (1..64). The draws of step ``t`` are the
    same whatever ``k`` (keys are ``fold_in(k_steps, t)``); floats may differ in their last bits
    where XLA contracts multiply-adds differently in the longer body (tests/test_gpu_form.py)."""
    raw = _CHOSEN.get("unroll") or os.environ.get("FTL_SCAN_UNROLL", "").strip() or "1"
    try:
        k = int(raw)
    except ValueError:
        k = 0
    if not 1 <= k <= 64:
        raise ValueError(f"FTL_SCAN_UNROLL={raw!r}: allowed an integer in 1..64")
    return k


@contextlib.contextmanager
def choices(*, words: str | None = None, unroll: int | None = None):
    """Trace and run under these choices of ``word_generator`` and ``scan_unroll`` (for a
    benchmark that compares them in one process). JAX's in-memory caches of compiled functions
    are cleared on entry and exit, so kernels are traced again under the choice; the persistent
    cache keys by program, so it never hands back the other choice's code."""
    old = dict(_CHOSEN)
    _CHOSEN.update({k: v for k, v in (("words", words), ("unroll", unroll)) if v is not None})
    try:
        word_generator(), scan_unroll()  # an invalid choice fails here, before any tracing
    except ValueError:
        _CHOSEN.clear()
        _CHOSEN.update(old)
        raise
    jax.clear_caches()
    try:
        yield
    finally:
        _CHOSEN.clear()
        _CHOSEN.update(old)
        jax.clear_caches()


def _tuned(name: str) -> bool:
    off = {w.strip() for w in os.environ.get("FTL_NO_TUNING", "").split(",")}
    return on_cpu() and not gpu_form() and name not in off and "all" not in off


def trace_once(fn, *args):
    """``(call, shapes)``: ``fn`` traced once at ``args`` (its Python runs once), ``call``
    replaying the recorded operations on arguments of the same kinds, and the output's
    shapes. For code that needs a function's output shapes before calling it (a loop's
    buffers, a conditional's other branch): ``jax.eval_shape`` and then a call would run the
    function's Python twice, and tracing the engine's step is most of the time a small
    run takes. The replay binds the same operations, so the program and its results are
    the same as a direct call's. ``call.jaxpr`` is the recorded program."""
    closed, shapes = jax.make_jaxpr(fn, return_shape=True)(*args)
    replay = jax.extend.core.jaxpr_as_fun(closed)
    tree = jax.tree.structure(shapes)

    def call(*a):
        return jax.tree.unflatten(tree, replay(*jax.tree.leaves(a)))

    call.jaxpr = closed
    return call, shapes


def per_lane(shape, *values):
    """``values`` (scalars) broadcast to ``shape``, behind an optimization barrier, so that what
    is computed from them is computed per lane in every program. Without it XLA simplified a
    scalar's arithmetic before its broadcast in some programs and not in others, so the
    multiply-adds contracted into FMAs differed: the dispersion book's index straddle (a scalar
    vol and strike against per-path index levels) moved in its last bits between one JAX CPU
    device and one per core (``tests/test_determinism.py`` compares the two). On every backend:
    a result must not depend on the device count anywhere."""
    return lax.optimization_barrier(tuple(jnp.broadcast_to(jnp.asarray(v), shape) for v in values))


def materialize(t, fn, *operands):
    """``fn(*operands)``, computed once and kept in buffers on the CPU (an always-taken
    conditional on the traced step index ``t >= 0``); a plain call elsewhere."""
    if not _tuned("fences"):
        return fn(*operands)
    call, shapes = trace_once(fn, *operands)
    return lax.cond(t >= 0, call, lambda *_: jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), shapes), *operands)


def tranche_sum(x):
    """Sum over the (static, small) leading axis: unrolled adds on the CPU, ``sum`` elsewhere."""
    if not _tuned("sums"):
        return jnp.sum(x, axis=0)
    total = x[0]
    for j in range(1, x.shape[0]):
        total = total + x[j]
    return total


def prefetch_draws() -> bool:
    """Whether the engine carries the next step's draws (CPU: yes)."""
    return _tuned("prefetch")


def decide_at_trade(policy) -> bool:
    """Whether a monetization policy is decided inside the trades (it says ``at_trade``, CPU)."""
    return bool(getattr(policy, "at_trade", False)) and _tuned("at_trade")


def note_cpu_devices(devices) -> None:
    """Once per process: where the engine runs on a single CPU device of a machine with
    several cores, say how to get one device per core (1.4-2.5x faster, same results)."""
    if _NOTED or not devices or devices[0].platform != "cpu" or len(devices) > 1:
        return
    _NOTED.append(True)
    cores = cpu_cores()
    if cores > 1:
        log.warning("JAX has 1 CPU device on this %d-core machine; sim.parallel.use_cpu_cores() before JAX's first "
                    "operation (the experiments do so) steps one block per core, faster with the "
                    "same results", cores)
