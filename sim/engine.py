"""The simulation engine: the one loop over time, and the one host driver of blocks of paths.

Paths are simulated in blocks of ``block_size`` lanes. Block ``b`` draws from
``fold_in(key, b)`` and, inside it, step ``t`` from ``fold_in(k_steps, t)``, where
``k_init, k_steps = split(fold_in(key, b))``; every sampler is counter based over lanes. So
path ``i``'s numbers are a pure function of ``(seed, block_size, i)``: results are
bit-identical whatever the chunk size (blocks per compiled call) or the number of devices the
blocks of a chunk are sharded over, and a larger ``n_paths`` extends the sample. For the
bits to match too, each device loops over its blocks and the step is compiled for one block,
the same code whatever the chunk (``_run_chunk``).

Three pieces, each declared in ``sim.protocols``:

* a **process** draws the step's returns (``sim.processes``, ``sim.market``);
* a **policy** turns them into the portfolio's simple return ``x`` (``ConstantMix`` here,
  ``sim.hedge.HedgeOverlay``, ``sim.dispersion.DispersionTrade``, a grid of fractions in
  ``sim.surface``);
* a **saver** keeps what the run needs of ``x`` (in the spirit of diffrax's
  ``SaveAt(fn=...)``): per-path statistics by default (``PathStatsSaver``), plus snapshots and
  recorded paths on request (``PathRecorder``), or a surface's counts (``sim.surface``).

``simulate_block`` is the only ``lax.scan`` over simulated time in ``sim/``: memory grows with
the number of paths, never with paths x steps (a saver's accumulator is per path, or smaller).
``run_blocks`` is the only host driver: it dispatches chunks of blocks over the devices (one
chunk in flight ahead), copies each back, reports progress, and in a multi-process run
(``sim.parallel``) gathers every process's blocks to all of them. ``simulate`` is the two
together with the default saver; ``simulate_policies`` steps several policies on the same
draws inside the one scan (a paired comparison: one compiled program, the process simulated
once); ``block_outputs`` runs the blocks inside one traced function (for objectives that are
differentiated: ``sim.kelly``, ``sim.hedge``).

The wealth update, with ``f`` the fraction in the risky asset (``f > 1`` is leverage) and
``r_f`` the per-step risk-free rate on the rest::

    W <- W (1 + f r + (1 - f) r_f)

For a model of several assets (``r`` of shape ``[n, d]``) ``f`` is a vector and the update is
``W <- W (1 + f . r + (1 - sum f) r_f)`` (``portfolio_return``).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from sim import backend
from sim import protocols
from sim import stats as stats_lib
from sim.outputs import check_stop, progress_bar
from sim.pytree import pytree_dataclass, static_field
from sim.units import per_step_mean
from sim.validation import ParameterError, check_int, check_range

__all__ = [
    "ConstantMix",
    "PathStatsSaver",
    "PathRecorder",
    "SimResult",
    "simulate",
    "simulate_each",
    "simulate_policies",
    "simulate_block",
    "run_blocks",
    "bind",
    "block_outputs",
    "counted",
    "path_growth",
    "mean_growth",
    "path_stats_from_returns",
    "sample_returns",
    "portfolio_return",
    "block_keys",
    "DEFAULT_BLOCK_SIZE",
]

log = logging.getLogger(__name__)

DEFAULT_BLOCK_SIZE = 1 << 14
_POLICY_STREAM = 0xFFFFFFFF  # fold_in(k_steps, this): the policies' keys; steps never reach it


class ConstantMix(NamedTuple):
    """The constant-mix policy (a pytree: vmappable over a grid, differentiable in ``fraction``).

    fraction: share of wealth in the risky asset each step (f > 1 leverage, f < 0 short);
      a vector ``[d]`` for a model of ``d`` assets.
    risk_free: annual simple rate earned on ``1 - fraction``.
    floor: ruin floor as a fraction of initial wealth, in [0, 1); 0 means ruin only on a
      wipe-out (a step with ``1 + x <= 0``).
    """

    fraction: Any = 1.0
    risk_free: Any = 0.0
    floor: Any = 0.0

    def validate(self, dt: float | None = None, n_steps: int | None = None) -> None:
        check_range("fraction", self.fraction, -100.0, 100.0)
        check_range("risk_free", self.risk_free, -1.0, 10.0, lo_closed=False)
        check_range("floor", self.floor, 0.0, 1.0, hi_closed=False)

    def init(self, n: int, dt: float, process=None, process_state=None):
        return ()

    def step(self, key, state, r, process, process_state, t, dt: float):
        f = jnp.asarray(self.fraction, jnp.float32)
        rf = per_step_mean(jnp.asarray(self.risk_free, jnp.float32), dt)
        return state, portfolio_return(f, r, rf)

    def outputs(self, state) -> dict:
        return {}


def log_floor(floor) -> jax.Array:
    """``log(floor)``, ``-inf`` for no floor (``floor = 0``)."""
    floor = jnp.asarray(floor, jnp.float32)
    return jnp.where(floor > 0, jnp.log(jnp.where(floor > 0, floor, 1.0)), -jnp.inf)


class PathStatsSaver(NamedTuple):
    """The default saver: ``sim.stats.PathStats`` of every path (``floor`` as in ``ConstantMix``)."""

    floor: Any = 0.0

    def init(self, n: int) -> stats_lib.PathStats:
        return stats_lib.init_path_stats(n)

    def update(self, acc, x, t):
        return stats_lib.update(acc, x, t, log_floor(self.floor))

    def finish(self, acc, valid) -> dict:
        return {"stats": acc}


@pytree_dataclass
class PathRecorder:
    """``PathStats`` plus, every ``snapshot_every`` steps, every path's log-wealth (``n_snap``
    snapshots: paths x a handful of times, for cross-sectional quantiles and annual returns)
    and the full log-wealth path of the first ``record_paths`` lanes of each block.

    Outputs ``stats``, ``snapshots`` ``[n_snap, n]`` and ``recorded`` ``[n_steps, record_paths]``.
    """

    floor: Any
    snapshot_every: int = static_field()
    n_snap: int = static_field()
    record_paths: int = static_field()
    n_steps: int = static_field()

    def init(self, n: int):
        return (stats_lib.init_path_stats(n), jnp.zeros((self.n_snap, n), jnp.float32),
                jnp.zeros((self.n_steps, self.record_paths), jnp.float32))

    def update(self, acc, x, t):
        st, snaps, rec = acc
        st = stats_lib.update(st, x, t, log_floor(self.floor))
        if self.n_snap:
            row = jnp.maximum(t // self.snapshot_every - 1, 0)
            old = lax.dynamic_index_in_dim(snaps, row, keepdims=False)
            new = jnp.where(t % self.snapshot_every == 0, st.log_wealth, old)
            snaps = lax.dynamic_update_index_in_dim(snaps, new, row, 0)
        if self.record_paths:
            rec = lax.dynamic_update_index_in_dim(rec, st.log_wealth[: self.record_paths], t - 1, 0)
        return st, snaps, rec

    def finish(self, acc, valid) -> dict:
        st, snaps, rec = acc
        return {"stats": st, "snapshots": snaps, "recorded": rec}


def portfolio_return(f: jax.Array, r: jax.Array, rf: jax.Array) -> jax.Array:
    """Simple return of the constant mix: ``f r + (1 - f) r_f``, or ``r . f + (1 - sum f) r_f``
    for ``r`` of shape ``[n, d]`` and ``f`` of shape ``[d]``."""
    if r.ndim == 1:
        return f * r + (1.0 - f) * rf
    return r @ f + (1.0 - jnp.sum(f)) * rf


def block_keys(key: jax.Array, block) -> tuple[jax.Array, jax.Array]:
    """``(k_init, k_steps)`` of a block; step ``t`` draws from ``fold_in(k_steps, t)``.

    The one definition of the random stream, shared by ``simulate_block`` and
    ``sample_returns`` so that both see the very same draws.
    """
    return tuple(jax.random.split(jax.random.fold_in(key, block)))


def simulate_block(key: jax.Array, block, process, policy, saver=None, *, block_size: int, n_steps: int, dt: float,
                   n_valid=None) -> dict:
    """Simulate one block of ``block_size`` paths over ``n_steps`` steps of ``dt`` years.

    Returns ``saver.finish(acc, valid)`` (default ``PathStatsSaver(policy.floor)``: ``stats``)
    with the policy's per-path ``extras``; ``valid`` marks the first ``n_valid`` lanes (the
    paths a run counts; default all). Pure and branch free: ``vmap`` it over blocks, or over a
    grid of process or policy parameters; differentiate it with respect to the policy's
    parameters. The policy's step ``t`` gets the key ``fold_in(fold_in(k_steps, 2^32 - 1), t)``.
    """
    saver = PathStatsSaver(policy.floor) if saver is None else saver
    k_init, k_steps = block_keys(key, block)
    k_policy = jax.random.fold_in(k_steps, _POLICY_STREAM)

    def draw(pstate, t):
        return process.step(jax.random.fold_in(k_steps, t), pstate, block_size, dt)

    def advance(pstate, r, acc, pol, t):
        pol, x = policy.step(jax.random.fold_in(k_policy, t + 1), pol, r, process, pstate, t + 1, dt)
        return saver.update(acc, x, t + 1), pol

    pstate0 = process.init(k_init, block_size, dt)
    acc0, pol0 = saver.init(block_size), policy.init(block_size, dt, process, pstate0)
    steps = jnp.arange(n_steps, dtype=jnp.int32)
    if backend.prefetch_draws():  # step t + 1's draws made in step t and carried
        draw, _ = backend.trace_once(draw, pstate0, jnp.int32(0))  # one trace for both calls

        def one_step(carry, t):
            pstate, r, acc, pol = carry
            acc, pol = advance(pstate, r, acc, pol, t)
            pstate, r_next = draw(pstate, t + 1)
            return (pstate, r_next, acc, pol), None

        (_, _, acc, pol), _ = lax.scan(one_step, (*draw(pstate0, jnp.int32(0)), acc0, pol0), steps,
                                       unroll=backend.scan_unroll())
    else:

        def one_step(carry, t):
            pstate, acc, pol = carry
            pstate, r = draw(pstate, t)
            acc, pol = advance(pstate, r, acc, pol, t)
            return (pstate, acc, pol), None

        (_, acc, pol), _ = lax.scan(one_step, (pstate0, acc0, pol0), steps, unroll=backend.scan_unroll())
    valid = jnp.arange(block_size) < (block_size if n_valid is None else n_valid)
    return dict(saver.finish(acc, valid), extras=policy.outputs(pol))


class _Bound(NamedTuple):
    """``fn`` with keyword arguments bound, hashable by value (a static argument of jit that
    does not recompile when rebuilt with equal arguments)."""

    fn: Callable
    kwargs: tuple

    def __call__(self, *args):
        return self.fn(*args, **dict(self.kwargs))


def bind(fn: Callable, **kwargs) -> _Bound:
    """A block function for ``run_blocks``: ``fn(key, block, n_valid, *operands, **kwargs)``."""
    return _Bound(fn, tuple(sorted(kwargs.items())))


def _engine_block(key, block, n_valid, process, policy, saver, **kwargs):
    return simulate_block(key, block, process, policy, saver, n_valid=n_valid, **kwargs)


@functools.partial(jax.jit, static_argnames=("block_fn", "mesh", "vectorize", "group", "first_only"))
def _run_chunk(key, blocks, n_valid, count, operands, *, block_fn, mesh, vectorize, group, first_only):
    """Run ``block_fn`` on the chunk's ``blocks``, sharded over ``mesh``: each device loops over
    its own ``count`` blocks, ``group`` at a time under ``vmap`` (``backend.blocks_per_step``;
    ``count`` is a multiple of it), or (``vectorize``) steps them all at once. Outputs named in
    ``first_only`` are kept for each device's first block only.

    The loop compiles the step for one block, the same code whatever the chunk size: XLA's CPU
    code generation contracts multiply-adds into FMAs differently for different batch shapes,
    which made results depend on the chunk size in their last bits. ``count`` is an argument,
    not a constant, so that XLA cannot unroll or inline a loop of one block either.
    """

    def split(out):
        return {k: v for k, v in out.items() if k not in first_only}, {k: out[k] for k in first_only}

    def local(key, blocks, n_valid, count, operands):
        def one(block, nv):  # the device's own (manual) key and operands, not the outer tracers
            return block_fn(key, block, nv, *operands)

        if vectorize:
            every, first = split(jax.vmap(one)(blocks, n_valid))
            return dict(every, **jax.tree.map(lambda a: a[:1], first))
        one_traced, shapes = backend.trace_once(one, blocks[0], n_valid[0])  # the block's Python runs once
        shapes = split(shapes)
        g = backend.blocks_in_groups(one_traced, group)  # 1 where that is not exact or not faster
        if g == 1:  # one block a step, the step compiled for one block
            def some(bs, nvs):
                return jax.tree.map(lambda o: o[None], one_traced(bs[0], nvs[0]))
        else:
            some = jax.vmap(one_traced)
        grouped, n_grouped = blocks.reshape(-1, g), n_valid.reshape(-1, g)
        acc = (jax.tree.map(lambda s: jnp.zeros((blocks.shape[0], *s.shape), s.dtype), shapes[0]),
               jax.tree.map(lambda s: jnp.zeros((1, *s.shape), s.dtype), shapes[1]))

        def body(i, acc):
            every, first = split(some(grouped[i], n_grouped[i]))
            every = jax.tree.map(lambda a, o: lax.dynamic_update_slice_in_dim(a, o, i * g, 0), acc[0], every)
            first = jax.tree.map(lambda a, o: jnp.where(i == 0, o[:1], a), acc[1], first)
            return every, first

        every, first = lax.fori_loop(0, count // g, body, acc)
        return dict(every, **first)

    spec, rep = PartitionSpec("blocks"), PartitionSpec()
    return jax.shard_map(local, mesh=mesh, in_specs=(rep, spec, spec, rep, rep), out_specs=spec, check_vma=False)(
        key, blocks, n_valid, count, operands)


class _Plan(NamedTuple):
    n_blocks: int
    chunk_blocks: int
    n_chunks: int
    mine: list  # this process's chunks
    group: int = 1  # blocks a device steps together


def _plan(n_paths: int, block_size: int, chunk_paths, n_dev: int, n_proc: int, pid: int, group: int = 1) -> _Plan:
    """Chunks of whole blocks, a multiple of the device count; each device steps ``group`` of
    its blocks together: the largest divisor of its block count up to ``backend.blocks_per_step``,
    so the grouping adds no padded blocks (a chunk of 5 blocks on one device steps them singly,
    one of 6 in threes)."""
    n_blocks = -(-n_paths // block_size)
    want = chunk_paths if chunk_paths is not None else max(backend.target_chunk_paths(), block_size)
    chunk_blocks = min(max(1, -(-want // block_size)), n_blocks)
    per_device = -(-chunk_blocks // n_dev)
    group = max(d for d in range(1, min(group, per_device) + 1) if per_device % d == 0)  # no padding for it
    chunk_blocks = per_device * n_dev
    n_chunks = -(-n_blocks // chunk_blocks)
    return _Plan(n_blocks, chunk_blocks, n_chunks, list(range(pid, n_chunks, n_proc)), group)


def _devices(devices):
    n_proc, pid = jax.process_count(), jax.process_index()
    if devices is None:
        devices = jax.local_devices() if n_proc > 1 else jax.devices()
    devices = list(devices)
    if any(d.process_index != pid for d in devices):
        raise ParameterError("devices must be this process's own (jax.local_devices()); with several processes "
                             "each simulates its share of the chunks (sim.parallel)")
    backend.note_cpu_devices(devices)
    return devices


def run_blocks(block_fn: _Bound, operands, *, seed: int, n_paths: int, block_size: int, chunk_paths=None,
               devices=None, progress: Callable[[dict], None] | None = None, first_only: tuple = (),
               summed: tuple = (), n_steps: int | None = None) -> tuple[dict, float]:
    """Run ``block_fn(key, block, n_valid, *operands)`` (see ``bind``) over the blocks of
    ``n_paths`` paths; the host driver every simulation in ``sim/`` goes through.

    Chunks of blocks (``chunk_paths`` paths, rounded up to whole blocks and to a multiple of
    the device count) are sharded over ``devices``; the next chunk is dispatched before the
    current one is copied back. In a multi-process run each process runs every
    ``process_count``-th chunk and the outputs are gathered to all (``sim.parallel``).

    Returns ``(outputs, wall_seconds)``: the block function's outputs on the host (numpy),
    each ``[n_blocks, ...]`` in block order, except those named in ``first_only`` (block 0's,
    ``[1, ...]``) and in ``summed`` (integer counts summed over blocks: exact in any order).
    ``progress`` is called after each chunk with a dict (chunk, n_chunks, paths_done,
    n_paths, elapsed_s, eta_s, process); by default progress is logged when there are several
    chunks (with the path-steps/s when ``n_steps`` is given).
    """
    check_stop()
    n_proc, pid = jax.process_count(), jax.process_index()
    devices = _devices(devices)
    platform = devices[0].platform
    vectorize = backend.vectorize_blocks(platform)
    plan = _plan(n_paths, block_size, chunk_paths, len(devices), n_proc, pid,
                 1 if vectorize else backend.blocks_per_step(platform, len(devices)))
    mesh = Mesh(np.array(devices), ("blocks",))
    block_sharding = NamedSharding(mesh, PartitionSpec("blocks"))
    replicated = NamedSharding(mesh, PartitionSpec())
    key = jax.device_put(jax.random.key(seed), replicated)
    operands = jax.device_put(tuple(operands), replicated)
    count = jax.device_put(jnp.int32(plan.chunk_blocks // len(devices)), replicated)
    static = dict(block_fn=block_fn, mesh=mesh, vectorize=vectorize, group=plan.group, first_only=tuple(first_only))

    def allocate(shapes):  # host buffers, from the first chunk's outputs (or traced shapes: no chunk here)
        for k in summed:
            if not all(jnp.issubdtype(s.dtype, jnp.integer) for s in jax.tree.leaves(shapes[k])):
                raise TypeError(f"run_blocks: summed output {k!r} must be integer counts (exact in any order)")
        host = {k: jax.tree.map(lambda s: np.zeros((1 if k in first_only else plan.n_blocks, *s.shape), s.dtype), v)
                for k, v in shapes.items() if k not in summed}
        return host, {k: jax.tree.map(lambda s: np.zeros(s.shape, np.int64), shapes[k]) for k in summed}

    def launch(c):
        blocks = np.arange(c * plan.chunk_blocks, (c + 1) * plan.chunk_blocks, dtype=np.int64)
        n_valid = np.clip(n_paths - blocks * block_size, 0, block_size).astype(np.int32)
        return _run_chunk(key, jax.device_put(blocks.astype(np.uint32), block_sharding),
                          jax.device_put(n_valid, block_sharding), count, operands, **static)

    t0 = time.perf_counter()
    owned = np.zeros(plan.n_blocks, bool)
    pending = launch(plan.mine[0]) if plan.mine else None
    if pending is None:  # a process with no chunk still gathers: buffers of the right kinds
        host, totals = allocate(jax.eval_shape(lambda *a: block_fn(*a), key, jnp.uint32(0), jnp.int32(0), *operands))
    else:
        host, totals = allocate(jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), pending))
    for i, c in enumerate(plan.mine):
        out = pending
        if i + 1 < len(plan.mine):
            pending = launch(plan.mine[i + 1])  # dispatch the next chunk before copying this one back
        lo = c * plan.chunk_blocks
        hi = min(lo + plan.chunk_blocks, plan.n_blocks)
        for k, v in out.items():
            if k in summed:
                totals[k] = jax.tree.map(lambda t, a: t + np.asarray(a)[: hi - lo].sum(axis=0, dtype=np.int64),
                                         totals[k], v)
            elif k in first_only:
                if c == 0:
                    jax.tree.map(lambda d, a: d.__setitem__(slice(0, 1), np.asarray(a)[:1]), host[k], v)
            else:
                jax.tree.map(lambda d, a: d.__setitem__(slice(lo, hi), np.asarray(a)[: hi - lo]), host[k], v)
        owned[lo:hi] = True
        _report(progress, i, plan, owned, n_paths, block_size, t0, pid, n_proc, n_steps)
    if n_proc > 1:
        host, totals = _gather(host, totals, owned, first_only, pid)
    return dict(host, **totals), time.perf_counter() - t0


def _report(progress, i, plan, owned, n_paths, block_size, t0, pid, n_proc, n_steps):
    check_stop()  # a Ctrl-C whose KeyboardInterrupt was swallowed (sim.outputs.check_stop)
    elapsed = time.perf_counter() - t0
    done = int(np.minimum(n_paths - np.flatnonzero(owned) * block_size, block_size).sum())
    info = dict(chunk=i + 1, n_chunks=len(plan.mine), paths_done=done, n_paths=n_paths, elapsed_s=elapsed,
                eta_s=elapsed / (i + 1) * (len(plan.mine) - i - 1), process=pid)
    progress_bar(i + 1, len(plan.mine), elapsed, "chunks")
    if progress is not None:
        progress(info)
    elif plan.n_chunks > 1:
        rate = f", {done * n_steps / elapsed:.3g} path-steps/s" if n_steps else ""
        log.info("%schunk %d/%d: %d paths done, %.1fs elapsed, ETA %.1fs%s",
                 f"process {pid} of {n_proc}: " if n_proc > 1 else "", i + 1, len(plan.mine), done, elapsed,
                 info["eta_s"], rate)


def _gather(host, totals, owned, first_only, pid):
    from sim import parallel

    host = {k: jax.tree.map(lambda a: parallel.gather_paths(a, np.full(1, pid == 0) if k in first_only else owned),
                            v) for k, v in host.items()}
    totals = {k: jax.tree.map(lambda a: parallel.allgather_exact(a).sum(axis=0), v) for k, v in totals.items()}
    return host, totals


@dataclasses.dataclass
class SimResult:
    """What a simulation returns, on the host (numpy).

    stats: ``PathStats`` of every path, each ``[n_paths]``.
    snapshot_steps: int[K], the steps after which ``snapshots`` were taken.
    snapshots: float32[K, n_paths] log-wealth at those steps (K = 0 unless requested).
    recorded: float32[n_steps + 1, record_paths] log-wealth of the first paths, from step 0.
    extras: the policy's per-path outputs (``policy.outputs``), each ``[n_paths]``.
    """

    stats: stats_lib.PathStats
    n_steps: int
    steps_per_year: float
    snapshot_steps: np.ndarray
    snapshots: np.ndarray
    recorded: np.ndarray
    wall_seconds: float
    extras: dict = dataclasses.field(default_factory=dict)

    @property
    def years(self) -> float:
        return self.n_steps / self.steps_per_year

    def summary(self) -> dict:
        return stats_lib.summarize(self.stats, years=self.years, steps_per_year=self.steps_per_year)


def _validate(process, policy, n_paths, n_steps, steps_per_year, block_size, chunk_paths, snapshot_every, record_paths):
    check_range("steps_per_year", steps_per_year, 0.0, lo_closed=False)
    n_paths = check_int("n_paths", n_paths, 1, 2**40)
    n_steps = check_int("n_steps", n_steps, 1, 2**31 - 2)
    block_size = check_int("block_size", block_size, 1, 2**30)
    if chunk_paths is not None:
        check_int("chunk_paths", chunk_paths, 1)
    check_int("snapshot_every", snapshot_every, 0, n_steps)
    check_int("record_paths", record_paths, 0, block_size)
    protocols.check_run(process, policy, dt=1.0 / steps_per_year, n_steps=n_steps)


def simulate(
    process,
    *,
    seed: int = 0,
    n_paths: int,
    n_steps: int,
    steps_per_year: float = 252.0,
    policy=ConstantMix(),
    block_size: int = DEFAULT_BLOCK_SIZE,
    chunk_paths: int | None = None,
    snapshot_every: int = 0,
    record_paths: int = 0,
    devices: list | None = None,
    progress: Callable[[dict], None] | None = None,
) -> SimResult:
    """Simulate ``n_paths`` wealth paths of ``process`` under ``policy``.

    Args:
      process: a model from ``sim.processes`` (validated here, before any compilation).
      seed: the only source of randomness.
      n_paths, n_steps: sizes; ``steps_per_year`` sets ``dt = 1 / steps_per_year``.
      policy: ``ConstantMix`` (fraction, risk-free rate, ruin floor) or any policy of the
        ``sim.protocols.Policy`` interface (``sim.hedge.HedgeOverlay``).
      block_size: lanes per block; part of the random stream's definition (changing it
        changes the draws), unlike ``chunk_paths``.
      chunk_paths: paths per compiled call (rounded up to whole blocks and to a multiple of
        the device count); bounds device memory; results do not depend on it.
      snapshot_every: keep every path's log-wealth every this many steps (0: never).
      record_paths: keep the full log-wealth path of the first this many paths.
      devices: devices to shard blocks over (default ``jax.devices()``; in a multi-process run,
        ``jax.local_devices()``: each process simulates every ``process_count``-th chunk and
        the per-path results are gathered to all processes, see ``sim.parallel``). On a CPU
        with one JAX device and several cores, ``sim.parallel.use_cpu_cores()`` before JAX's
        first operation is faster (said once in the log).
      progress: called after each chunk with a dict (chunk, n_chunks, paths_done, n_paths,
        elapsed_s, eta_s); by default progress is logged when there are several chunks.

    Returns:
      ``SimResult`` with per-path statistics on the host.
    """
    _validate(process, policy, n_paths, n_steps, steps_per_year, block_size, chunk_paths, snapshot_every, record_paths)
    saver, n_snap = _saver(policy.floor, n_steps, snapshot_every, record_paths)
    fn = bind(_engine_block, block_size=block_size, n_steps=n_steps, dt=1.0 / float(steps_per_year))
    out, wall = run_blocks(fn, (process, policy, saver), seed=seed, n_paths=n_paths, block_size=block_size,
                           chunk_paths=chunk_paths, devices=devices, progress=progress,
                           first_only=("recorded",) if record_paths else (), n_steps=n_steps)
    return _result(out, out["extras"], wall, n_paths=n_paths, n_steps=n_steps, steps_per_year=steps_per_year,
                   snapshot_every=snapshot_every, n_snap=n_snap, record_paths=record_paths)


def _saver(floor, n_steps, snapshot_every, record_paths):
    """The saver a run's options ask for, and its number of snapshots."""
    n_snap = n_steps // snapshot_every if snapshot_every else 0
    if n_snap or record_paths:
        return PathRecorder(floor, snapshot_every or 1, n_snap, record_paths, n_steps), n_snap
    return PathStatsSaver(floor), n_snap


def _result(out, extras, wall, *, n_paths, n_steps, steps_per_year, snapshot_every, n_snap, record_paths):
    """A ``SimResult`` from one run's host outputs (``stats``, and ``snapshots`` / ``recorded``)."""
    recorded = np.zeros((n_steps + 1, record_paths), np.float32)
    if record_paths:
        recorded[1:, : min(record_paths, n_paths)] = out["recorded"][0][:, : min(record_paths, n_paths)]
    snapshots = (np.moveaxis(out["snapshots"], 1, 0).reshape(n_snap, -1)[:, :n_paths] if n_snap
                 else np.empty((0, n_paths), np.float32))
    return SimResult(
        stats=stats_lib.PathStats(*(a.reshape(-1)[:n_paths] for a in out["stats"])),
        n_steps=n_steps,
        steps_per_year=float(steps_per_year),
        snapshot_steps=np.arange(1, n_snap + 1) * snapshot_every,
        snapshots=np.ascontiguousarray(snapshots),
        recorded=recorded,
        wall_seconds=wall,
        extras={k: a.reshape(-1)[:n_paths] for k, a in extras.items()},
    )


def _validate_named(process, policies: dict, *args, prefix: str = "") -> None:
    """``_validate`` each of ``policies = {name: policy}`` (``*args``: ``_validate``'s after the
    policy), the error prefixed by ``prefix`` and the policy's name."""
    for name, policy in policies.items():
        try:
            _validate(process, policy, *args)
        except ParameterError as e:
            raise ParameterError(f"{prefix}{name}: {e}") from None


class _Paired(NamedTuple):
    """Several policies stepped on the same draws, in one scan (``simulate_policies``): each
    member gets the step's returns, the process state and the policy key its own run gets."""

    members: tuple

    def init(self, n, dt, process=None, process_state=None):
        return tuple(p.init(n, dt, process, process_state) for p in self.members)

    def step(self, key, state, r, process, process_state, t, dt):
        pairs = [p.step(key, s, r, process, process_state, t, dt) for p, s in zip(self.members, state)]
        return tuple(s for s, _ in pairs), tuple(x for _, x in pairs)

    def outputs(self, state) -> dict:
        return {str(i): p.outputs(s) for i, (p, s) in enumerate(zip(self.members, state))}


class _PairedSaver(NamedTuple):
    """One saver per member of ``_Paired``; outputs ``"i/name"`` for member ``i``'s ``name``."""

    members: tuple

    def init(self, n):
        return tuple(s.init(n) for s in self.members)

    def update(self, acc, x, t):
        return tuple(s.update(a, xi, t) for s, a, xi in zip(self.members, acc, x))

    def finish(self, acc, valid) -> dict:
        return {f"{i}/{k}": v for i, (s, a) in enumerate(zip(self.members, acc)) for k, v in s.finish(a, valid).items()}


def simulate_policies(process, policies: dict, *, seed: int = 0, n_paths: int, n_steps: int,
                      steps_per_year: float = 252.0, block_size: int = DEFAULT_BLOCK_SIZE, chunk_paths: int | None = None,
                      snapshot_every: int = 0, record_paths: int = 0, devices: list | None = None,
                      progress: Callable[[dict], None] | None = None) -> dict:
    """``{name: simulate(process, policy=policy, ...)}`` for ``policies = {name: policy}``, in one
    pass over the same draws: the process is simulated once per block and every policy is
    stepped on its returns inside the one scan (a paired comparison of policies, as the hedge
    and crash-protocol studies make). Each member sees what its own ``simulate`` call would:
    the same returns, process state and policy keys; the numbers equal that call's up to the
    last float32 bits where XLA fuses the larger program's arithmetic differently. One program
    is compiled for all the policies, not one per policy. ``wall_seconds`` is the pass's."""
    if not policies:
        return {}
    _validate_named(process, policies, n_paths, n_steps, steps_per_year, block_size, chunk_paths, snapshot_every,
                    record_paths)
    names = list(policies)
    made = [_saver(policies[k].floor, n_steps, snapshot_every, record_paths) for k in names]
    n_snap = made[0][1]
    fn = bind(_engine_block, block_size=block_size, n_steps=n_steps, dt=1.0 / float(steps_per_year))
    operands = (process, _Paired(tuple(policies[k] for k in names)), _PairedSaver(tuple(s for s, _ in made)))
    out, wall = run_blocks(fn, operands, seed=seed, n_paths=n_paths, block_size=block_size, chunk_paths=chunk_paths,
                           devices=devices, progress=progress, n_steps=n_steps,
                           first_only=tuple(f"{i}/recorded" for i in range(len(names))) if record_paths else ())
    res = {}
    for i, name in enumerate(names):
        own = {k.split("/", 1)[1]: v for k, v in out.items() if k.startswith(f"{i}/")}
        res[name] = _result(own, out["extras"][str(i)], wall, n_paths=n_paths, n_steps=n_steps,
                            steps_per_year=steps_per_year, snapshot_every=snapshot_every, n_snap=n_snap,
                            record_paths=record_paths)
    return res


def simulate_each(runs: dict, *, threads: int | None = None, done: Callable | None = None, **kwargs) -> dict:
    """``{name: simulate(process, policy=policy, **kwargs)}`` for ``runs = {name: (process,
    policy)}``: each result is exactly what its own ``simulate`` call gives (the runs share
    nothing: the same seed gives the same draws to each, bit for bit, whatever ran beside it).
    A run's policy may be a dict ``{policy_name: policy}``: that run is ``simulate_policies``
    (the policies on the same draws, in one pass) and its result a dict of ``SimResult``.
    Every run is validated before any starts; they then run through ``parallel.concurrently``
    (``threads`` at once; by default two on a one-process CPU run, so that XLA compiling one
    run's program overlaps another's blocks). ``done(name, result)`` in the order of ``runs``."""
    from sim import parallel

    signature = inspect.signature(simulate)
    for name, (process, policy) in runs.items():
        call = signature.bind(process, **kwargs)  # simulate's own defaults; unknown keys fail here
        call.apply_defaults()
        a = call.arguments
        named, prefix = (policy, f"{name} / ") if isinstance(policy, dict) else ({name: policy}, "")
        _validate_named(process, named, a["n_paths"], a["n_steps"], a["steps_per_year"], a["block_size"],
                        a["chunk_paths"], a["snapshot_every"], a["record_paths"], prefix=prefix)
    calls = {name: (functools.partial(simulate_policies, process, policy, **kwargs) if isinstance(policy, dict)
                    else functools.partial(simulate, process, policy=policy, **kwargs))
             for name, (process, policy) in runs.items()}
    return parallel.concurrently(calls, threads=threads, platform=_devices(kwargs.get("devices"))[0].platform,
                                 done=done)


def _fractions_block(key, block, n_valid, process, policies, saver, **kwargs):
    """``simulate_block`` for a batch of constant-mix policies on the same draws: ``vmap`` over
    the policies only, so the process (its draws and state, which no policy feeds back into)
    is computed once per block and only the wealth arithmetic is batched: outputs ``[K, ...]``."""
    return jax.vmap(lambda pol: simulate_block(key, block, process, pol, saver, n_valid=n_valid, **kwargs))(policies)


def simulate_fractions(process, fractions, *, seed: int = 0, n_paths: int, n_steps: int, steps_per_year: float = 252.0,
                       risk_free: float = 0.0, floor: float = 0.0, block_size: int = DEFAULT_BLOCK_SIZE,
                       chunk_paths: int | None = None, devices: list | None = None,
                       progress: Callable[[dict], None] | None = None) -> list[SimResult]:
    """``simulate(process, policy=ConstantMix(f, risk_free, floor))`` for every ``f`` of
    ``fractions`` (each a scalar, or a ``[d]`` vector for a model of ``d`` assets) in one pass
    over the same draws: one ``SimResult`` per fraction, as ``simulate`` with the same seed
    gives (the same draws; the wealth arithmetic batched over the fractions, which may move
    a result in its last float32 bit against a run of one fraction, as XLA may contract its
    multiply-adds differently). The process is simulated once, not once per fraction."""
    fractions = [np.asarray(f, np.float32) for f in fractions]
    if not fractions:
        return []
    for f in fractions:
        _validate(process, ConstantMix(f, risk_free, floor), n_paths, n_steps, steps_per_year, block_size,
                  chunk_paths, 0, 0)
    k = len(fractions)
    policies = ConstantMix(np.stack(fractions), np.full(k, risk_free, np.float32), np.full(k, floor, np.float32))
    fn = bind(_fractions_block, block_size=block_size, n_steps=n_steps, dt=1.0 / float(steps_per_year))
    out, wall = run_blocks(fn, (process, policies, PathStatsSaver(floor)), seed=seed, n_paths=n_paths,
                           block_size=block_size, chunk_paths=chunk_paths, devices=devices, progress=progress,
                           n_steps=n_steps)
    return [_result({"stats": stats_lib.PathStats(*(a[:, i] for a in out["stats"]))}, {}, wall, n_paths=n_paths,
                    n_steps=n_steps, steps_per_year=steps_per_year, snapshot_every=0, n_snap=0, record_paths=0)
            for i in range(k)]


# --------------------------------------------------------------------------- traced runs


def block_outputs(seed, process, policy, saver=None, *, n_blocks: int, block_size: int, n_steps: int, dt: float,
                  policy_axes=None, sequential: bool = False) -> dict:
    """``simulate_block`` over blocks ``0 .. n_blocks - 1`` inside one traced function (for an
    objective that is jitted and differentiated as a whole): outputs ``[n_blocks, ...]``.

    ``vmap`` over blocks (``policy_axes`` maps policy fields that differ per block), or one
    block at a time (``sequential``: ``lax.map``, a block's memory only). ``seed`` may be traced.
    """
    fn = functools.partial(simulate_block, block_size=block_size, n_steps=n_steps, dt=dt)
    key = jax.random.key(seed)
    blocks = jnp.arange(n_blocks, dtype=jnp.uint32)
    if sequential:
        return lax.map(lambda b: fn(key, b, process, policy, saver), blocks)
    return jax.vmap(fn, in_axes=(None, 0, None, policy_axes, None))(key, blocks, process, policy, saver)


def counted(x: jax.Array, n_paths: int) -> jax.Array:
    """Per-block ``[n_blocks, block_size, ...]`` to the first ``n_paths`` paths ``[n_paths, ...]``."""
    return x.reshape((-1,) + x.shape[2:])[:n_paths]


def path_growth(seed, process, policy, *, n_paths: int, block_size: int, n_steps: int, dt: float,
                sequential: bool = False) -> jax.Array:
    """Time-average growth per year, ``log(W_T) / T``, of the first ``n_paths`` paths ``[n_paths]``
    (traced: jit and differentiate it)."""
    out = block_outputs(seed, process, policy, n_blocks=-(-n_paths // block_size), block_size=block_size,
                        n_steps=n_steps, dt=dt, sequential=sequential)
    return counted(out["stats"].log_wealth, n_paths) / (n_steps * dt)


def mean_growth(seed, process, policy, *, n_paths: int, block_size: int, n_steps: int, dt: float):
    """``(mean, standard error)`` over paths of the time-average growth per year (traced)."""
    g = path_growth(seed, process, policy, n_paths=n_paths, block_size=block_size, n_steps=n_steps, dt=dt)
    return jnp.mean(g), jnp.std(g) / jnp.sqrt(g.size)


# --------------------------------------------------------------------------- given series


def path_stats_from_returns(returns, *, floor: float = 0.0) -> stats_lib.PathStats:
    """``PathStats`` of a user's ``(paths, steps)`` matrix of portfolio simple returns.

    The default saver's own update, over the columns, so that a return matrix and a
    simulation are summarized by the same code (``sim.stats.summarize`` applies to either).
    """
    x = jnp.asarray(returns, jnp.float32)
    if x.ndim != 2:
        raise ValueError(f"returns must be a (paths, steps) matrix, got shape {x.shape}")
    saver = PathStatsSaver(jnp.float32(floor))

    def body(acc, inputs):
        t, column = inputs
        return saver.update(acc, column, t), None

    steps = jnp.arange(1, x.shape[1] + 1, dtype=jnp.int32)
    acc, _ = lax.scan(body, saver.init(x.shape[0]), (steps, x.T))
    return jax.tree.map(np.asarray, acc)


def sample_returns(process, *, seed: int, n_paths: int, n_steps: int, steps_per_year: float = 252.0,
                   block_size: int = DEFAULT_BLOCK_SIZE, observe: Callable | None = None):
    """The process's per-step simple returns as a ``(n_paths, n_steps)`` matrix
    (``(n_paths, n_steps, d)`` for a model of ``d`` assets).

    The very draws ``simulate`` uses for the same ``(seed, block_size)``: for tests and for
    small diagnostics only, since it materializes paths x steps. ``observe(state_before,
    state_after, r)``, if given, picks what to record of each step instead of ``r`` (any
    pytree of ``[block_size, ...]`` arrays; each leaf comes back as ``(n_paths, n_steps, ...)``).
    """
    _validate(process, ConstantMix(), n_paths, n_steps, steps_per_year, block_size, None, 0, 0)
    dt = 1.0 / float(steps_per_year)
    key = jax.random.key(seed)
    observe = (lambda before, after, r: r) if observe is None else observe

    @jax.jit
    def block_returns(block):
        k_init, k_steps = block_keys(key, block)

        def one_step(pstate, t):
            new, r = process.step(jax.random.fold_in(k_steps, t), pstate, block_size, dt)
            return new, observe(pstate, new, r)

        _, seen = lax.scan(one_step, process.init(k_init, block_size, dt), jnp.arange(n_steps, dtype=jnp.int32))
        return jax.tree.map(lambda a: jnp.moveaxis(a, 0, 1), seen)

    n_blocks = -(-n_paths // block_size)
    parts = [jax.tree.map(np.asarray, block_returns(np.uint32(b))) for b in range(n_blocks)]
    return jax.tree.map(lambda *a: np.concatenate(a, axis=0)[:n_paths], *parts)
