"""The simulation engine: one ``lax.scan`` over time with running statistics as the carry.

Paths are simulated in blocks of ``block_size`` lanes. Block ``b`` draws from
``fold_in(key, b)`` and, inside it, step ``t`` from ``fold_in(k_steps, t)``, where
``k_init, k_steps = split(fold_in(key, b))``; every sampler is counter based over lanes. So
path ``i``'s numbers are a pure function of ``(seed, block_size, i)``: results are
bit-identical whatever the chunk size (blocks per compiled call) or the number of devices the
blocks of a chunk are sharded over, and a larger ``n_paths`` extends the sample. For the
bits to match too, each device loops over its blocks and the step is compiled for one block,
the same code whatever the chunk (``_run_chunk``).

Memory grows with the number of paths, never with paths x steps: the carry holds
``sim.stats.PathStats`` and the process state per path. On request it also keeps
``record_paths`` full log-wealth paths and, every ``snapshot_every`` steps, every path's
log-wealth (paths x a handful of grid times, for cross-sectional quantiles and annual
returns), by scanning over segments of ``snapshot_every`` steps.

The wealth update, with ``f`` the fraction in the risky asset (``f > 1`` is leverage) and
``r_f`` the per-step risk-free rate on the rest::

    W <- W (1 + f r + (1 - f) r_f)

For a model of several assets (``r`` of shape ``[n, d]``) ``f`` is a vector and the update is
``W <- W (1 + f . r + (1 - sum f) r_f)`` (``portfolio_return``).

The policy is the one place where a step's asset return becomes the portfolio's return. Any
pytree with the four methods below can be passed as ``policy`` (``Policy`` is the constant
mix; ``sim.hedge.HedgeOverlay`` carries a put program)::

    policy.validate(dt, n_steps)                  # host-side checks, before compilation
    state = policy.init(n, dt, process, process_state)     # per-path state (a pytree)
    state, x = policy.step(state, r, process, process_state, t, dt)  # x: float32[n] return
    policy.outputs(state)                         # dict of [n] per-path results (may be empty)

XLA's CPU backend recomputes a cheap-enough producer inside every fusion that reads it, so a
policy that computes something expensive and reads it several times (``sim.hedge``: the puts'
marks) should materialize it once: ``sim.hedge`` passes such values through a conditional
whose predicate is always true (its operands and outputs are buffers).

``init`` sees the model's initial state; ``step`` sees the step's return ``r``, the process
state after drawing it (for a regime model, the regime in force now) and the 1-based step
index ``t``; it runs inside the scan, so its
state is part of the carry and nothing grows with the number of steps. Every policy also
has the fields ``risk_free`` and ``floor`` (the engine's ruin floor).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from sim import stats as stats_lib
from sim.units import per_step_mean
from sim.validation import ParameterError, check_int, check_range

__all__ = [
    "Policy",
    "SimResult",
    "simulate",
    "simulate_block",
    "sample_returns",
    "portfolio_return",
    "DEFAULT_BLOCK_SIZE",
]

log = logging.getLogger(__name__)

DEFAULT_BLOCK_SIZE = 1 << 14
_TARGET_CHUNK_PATHS = 1 << 18  # measured as fast as 2^20 on 2 cores, a quarter of the memory


class Policy(NamedTuple):
    """A constant-mix policy (a pytree: vmappable over a grid, differentiable in ``fraction``).

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

    def step(self, state, r, process, process_state, t, dt: float):
        f = jnp.asarray(self.fraction, jnp.float32)
        rf = per_step_mean(jnp.asarray(self.risk_free, jnp.float32), dt)
        return state, portfolio_return(f, r, rf)

    def outputs(self, state) -> dict:
        return {}


class BlockOutput(NamedTuple):
    stats: stats_lib.PathStats  # each [block_size]
    snapshots: jax.Array  # float32[K, block_size], log-wealth after steps every, 2 every, ...
    recorded: jax.Array  # float32[n_steps, record_paths], log-wealth after each step
    extras: dict  # the policy's per-path outputs, each [block_size]


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


def simulate_block(
    key: jax.Array,
    block: jax.Array,
    process,
    policy,
    *,
    block_size: int,
    n_steps: int,
    dt: float,
    snapshot_every: int = 0,
    record_paths: int = 0,
) -> BlockOutput:
    """Simulate one block of ``block_size`` paths over ``n_steps`` steps of ``dt`` years.

    Pure and branch free: ``vmap`` it over blocks, or over a grid of process or policy
    parameters; differentiate it with respect to the policy's parameters.
    """
    k_init, k_steps = block_keys(key, block)
    floor = jnp.asarray(policy.floor, jnp.float32)
    log_floor = jnp.where(floor > 0, jnp.log(jnp.where(floor > 0, floor, 1.0)), -jnp.inf)

    def draw(pstate, t):
        return process.step(jax.random.fold_in(k_steps, t), pstate, block_size, dt)

    # The draws of step t + 1 are made in step t and carried (prefetched): a loop-carried
    # value is materialized once, whereas XLA's CPU backend, which emits single-output
    # fusions, would otherwise recompute the whole sampler (hash included) inside each of
    # the statistics' updates and the policy's fusions that read r. Costs one unused draw per
    # path at the end.
    def one_step(carry, t):
        pstate, r, st, pol = carry
        pol, x = policy.step(pol, r, process, pstate, t + 1, dt)
        st = stats_lib.update(st, x, t + 1, log_floor)
        pstate, r_next = draw(pstate, t + 1)
        return (pstate, r_next, st, pol), st.log_wealth[:record_paths]

    def run(carry, start, length):
        return lax.scan(one_step, carry, start + jnp.arange(length, dtype=jnp.int32))

    pstate0 = process.init(k_init, block_size, dt)
    pstate1, r0 = draw(pstate0, 0)
    carry = (pstate1, r0, stats_lib.init_path_stats(block_size), policy.init(block_size, dt, process, pstate0))
    recorded = []
    n_seg = n_steps // snapshot_every if snapshot_every else 0
    if n_seg:

        def segment(carry, start):
            carry, rec = run(carry, start, snapshot_every)
            return carry, (carry[2].log_wealth, rec)

        starts = jnp.arange(n_seg, dtype=jnp.int32) * snapshot_every
        carry, (snapshots, rec) = lax.scan(segment, carry, starts)
        recorded.append(rec.reshape(n_seg * snapshot_every, record_paths))
    else:
        snapshots = jnp.zeros((0, block_size), jnp.float32)
    rest = n_steps - n_seg * snapshot_every
    if rest:
        carry, rec = run(carry, jnp.int32(n_seg * snapshot_every), rest)
        recorded.append(rec)
    return BlockOutput(carry[2], snapshots, jnp.concatenate(recorded, axis=0), policy.outputs(carry[3]))


@functools.partial(
    jax.jit, static_argnames=("mesh", "block_size", "n_steps", "dt", "snapshot_every", "record_paths", "vectorize")
)
def _run_chunk(key, blocks, count, process, policy, *, mesh, block_size, n_steps, dt, snapshot_every, record_paths,
               vectorize):
    """Simulate the chunk's ``blocks``, sharded over ``mesh``: each device loops over its own
    ``count`` blocks, one at a time, or (``vectorize``) steps them all at once under ``vmap``.

    The loop compiles the step for one block, the same code whatever the chunk size: XLA's CPU
    code generation contracts multiply-adds into FMAs differently for different batch shapes,
    which made results depend on the chunk size in their last bits. ``count`` is an argument,
    not a constant, so that XLA cannot unroll or inline a loop of one block either.
    """
    fn = functools.partial(
        simulate_block,
        block_size=block_size,
        n_steps=n_steps,
        dt=dt,
        snapshot_every=snapshot_every,
        record_paths=record_paths,
    )

    def local(key, blocks, count, process, policy):
        if vectorize:
            out = jax.vmap(fn, in_axes=(None, 0, None, None))(key, blocks, process, policy)
            return out._replace(recorded=out.recorded[:1])
        shapes = jax.eval_shape(fn, key, blocks[0], process, policy)
        acc = jax.tree.map(lambda s: jnp.zeros((blocks.shape[0], *s.shape), s.dtype), shapes._replace(recorded=()))
        acc = acc._replace(recorded=jnp.zeros((1, *shapes.recorded.shape), shapes.recorded.dtype))

        def body(i, acc):
            out = fn(key, blocks[i], process, policy)
            rec = jnp.where(i == 0, out.recorded[None], acc.recorded)  # only the first block's
            out = jax.tree.map(lambda a, o: lax.dynamic_update_index_in_dim(a, o, i, 0),
                               acc._replace(recorded=()), out._replace(recorded=()))
            return out._replace(recorded=rec)

        return lax.fori_loop(0, count, body, acc)

    spec, rep = PartitionSpec("blocks"), PartitionSpec()
    out = jax.shard_map(local, mesh=mesh, in_specs=(rep, spec, rep, rep, rep), out_specs=spec, check_vma=False)(
        key, blocks, count, process, policy)
    return out._replace(recorded=out.recorded[0])  # the first device's first block's recorded paths


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
    if not hasattr(process, "step") or not hasattr(process, "validate"):
        raise ParameterError(f"process must be a model from sim.processes, got {type(process).__name__}")
    process.validate(1.0 / steps_per_year)
    max_steps = getattr(process, "max_steps", None)
    if max_steps is not None and n_steps > max_steps:
        raise ParameterError(f"n_steps = {n_steps} is longer than the series {type(process).__name__} replays; "
                             f"allowed: n_steps <= {max_steps}")
    if not all(hasattr(policy, m) for m in ("validate", "init", "step", "outputs")):
        raise ParameterError(f"policy must have validate/init/step/outputs (see sim.engine), got {type(policy).__name__}")
    policy.validate(1.0 / steps_per_year, n_steps)
    if hasattr(policy, "check_process"):
        policy.check_process(process)


def simulate(
    process,
    *,
    seed: int = 0,
    n_paths: int,
    n_steps: int,
    steps_per_year: float = 252.0,
    policy=Policy(),
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
      policy: ``Policy`` (fraction, risk-free rate, ruin floor) or any policy with the
        interface in the module docstring (``sim.hedge.HedgeOverlay``).
      block_size: lanes per block; part of the random stream's definition (changing it
        changes the draws), unlike ``chunk_paths``.
      chunk_paths: paths per compiled call (rounded up to whole blocks and to a multiple of
        the device count); bounds device memory; results do not depend on it.
      snapshot_every: keep every path's log-wealth every this many steps (0: never).
      record_paths: keep the full log-wealth path of the first this many paths.
      devices: devices to shard blocks over (default ``jax.devices()``; in a multi-process run,
        ``jax.local_devices()``: each process simulates every ``process_count``-th chunk and
        the per-path results are gathered to all processes, see ``sim.parallel``).
      progress: called after each chunk with a dict (chunk, n_chunks, paths_done, n_paths,
        elapsed_s, eta_s); by default progress is logged when there are several chunks.

    Returns:
      ``SimResult`` with per-path statistics on the host.
    """
    _validate(process, policy, n_paths, n_steps, steps_per_year, block_size, chunk_paths, snapshot_every, record_paths)
    n_proc, pid = jax.process_count(), jax.process_index()
    if devices is None:
        devices = jax.local_devices() if n_proc > 1 else jax.devices()
    devices = list(devices)
    if any(d.process_index != pid for d in devices):
        raise ParameterError("devices must be this process's own (jax.local_devices()); with several processes "
                             "each simulates its share of the chunks (sim.parallel)")
    n_dev = len(devices)
    n_blocks = -(-n_paths // block_size)
    want = chunk_paths if chunk_paths is not None else max(_TARGET_CHUNK_PATHS, block_size)
    chunk_blocks = min(max(1, -(-want // block_size)), n_blocks)
    chunk_blocks = -(-chunk_blocks // n_dev) * n_dev
    n_chunks = -(-n_blocks // chunk_blocks)

    mesh = Mesh(np.array(devices), ("blocks",))
    block_sharding = NamedSharding(mesh, PartitionSpec("blocks"))
    replicated = NamedSharding(mesh, PartitionSpec())
    key = jax.device_put(jax.random.key(seed), replicated)
    process = jax.device_put(process, replicated)
    policy = jax.device_put(policy, replicated)
    static = dict(
        block_size=block_size,
        n_steps=n_steps,
        dt=1.0 / float(steps_per_year),
        snapshot_every=snapshot_every,
        record_paths=record_paths,
        mesh=mesh,
        vectorize=mesh.devices.flat[0].platform != "cpu",
    )
    count = jax.device_put(jnp.int32(chunk_blocks // n_dev), replicated)

    n_snap = n_steps // snapshot_every if snapshot_every else 0
    host_stats = None
    snapshots = np.empty((n_snap, n_paths), np.float32)
    recorded = np.zeros((n_steps + 1, record_paths), np.float32)

    def launch(c):
        blocks = np.arange(c * chunk_blocks, (c + 1) * chunk_blocks, dtype=np.uint32)
        return _run_chunk(key, jax.device_put(blocks, block_sharding), count, process, policy, **static)

    t0 = time.perf_counter()
    mine = list(range(pid, n_chunks, n_proc))  # with several processes, every n_proc-th chunk
    owned = np.zeros(n_paths, bool)
    pending = launch(mine[0]) if mine else None
    for i, c in enumerate(mine):
        out = pending
        if i + 1 < len(mine):
            pending = launch(mine[i + 1])  # dispatch the next chunk before copying this one back
        lo = c * chunk_blocks * block_size
        hi = min(lo + chunk_blocks * block_size, n_paths)
        chunk_stats = jax.tree.map(lambda a: np.asarray(a).reshape(-1)[: hi - lo], out.stats)
        chunk_extras = {k: np.asarray(a).reshape(-1)[: hi - lo] for k, a in out.extras.items()}
        if host_stats is None:
            host_stats = stats_lib.PathStats(*(np.empty(n_paths, a.dtype) for a in chunk_stats))
            extras = {k: np.empty(n_paths, a.dtype) for k, a in chunk_extras.items()}
        owned[lo:hi] = True
        for dst, src in zip(host_stats, chunk_stats):
            dst[lo:hi] = src
        for k, src in chunk_extras.items():
            extras[k][lo:hi] = src
        if n_snap:
            snapshots[:, lo:hi] = np.moveaxis(np.asarray(out.snapshots), 1, 0).reshape(n_snap, -1)[:, : hi - lo]
        if c == 0 and record_paths:
            recorded[1:] = np.asarray(out.recorded)[:, : min(record_paths, n_paths)].reshape(n_steps, -1)
        elapsed = time.perf_counter() - t0
        done = int(owned.sum())
        info = dict(
            chunk=i + 1,
            n_chunks=len(mine),
            paths_done=done,
            n_paths=n_paths,
            elapsed_s=elapsed,
            eta_s=elapsed / (i + 1) * (len(mine) - i - 1),
            process=pid,
        )
        if progress is not None:
            progress(info)
        elif n_chunks > 1:
            log.info(
                "%schunk %d/%d: %d paths done, %.1fs elapsed, ETA %.1fs, %.3g path-steps/s",
                f"process {pid} of {n_proc}: " if n_proc > 1 else "", i + 1, len(mine), done, elapsed,
                info["eta_s"], done * n_steps / elapsed,
            )
    if n_proc > 1:
        from sim import parallel

        if host_stats is None:  # this process had no chunk: empty arrays of the right kinds
            shapes = jax.eval_shape(functools.partial(_run_chunk, **static), key, np.zeros(chunk_blocks, np.uint32),
                                    count, process, policy)
            host_stats = stats_lib.PathStats(*(np.zeros(n_paths, a.dtype) for a in shapes.stats))
            extras = {k: np.zeros(n_paths, a.dtype) for k, a in shapes.extras.items()}
        host_stats = stats_lib.PathStats(*(parallel.gather_paths(a, owned) for a in host_stats))
        extras = {k: parallel.gather_paths(a, owned) for k, a in extras.items()}
        if n_snap:
            snapshots = parallel.gather_paths(snapshots, owned, axis=1)
        if record_paths:  # chunk 0's, i.e. process 0's
            recorded = parallel.gather_paths(recorded, np.full(record_paths, pid == 0), axis=1)
    return SimResult(
        stats=host_stats,
        n_steps=n_steps,
        steps_per_year=float(steps_per_year),
        snapshot_steps=np.arange(1, n_snap + 1) * snapshot_every,
        snapshots=snapshots,
        recorded=recorded,
        wall_seconds=time.perf_counter() - t0,
        extras=extras,
    )


def sample_returns(process, *, seed: int, n_paths: int, n_steps: int, steps_per_year: float = 252.0,
                   block_size: int = DEFAULT_BLOCK_SIZE, observe: Callable | None = None):
    """The process's per-step simple returns as a ``(n_paths, n_steps)`` matrix
    (``(n_paths, n_steps, d)`` for a model of ``d`` assets).

    The very draws ``simulate`` uses for the same ``(seed, block_size)``: for tests and for
    small diagnostics only, since it materializes paths x steps. ``observe(state_before,
    state_after, r)``, if given, picks what to record of each step instead of ``r`` (any
    pytree of ``[block_size, ...]`` arrays; each leaf comes back as ``(n_paths, n_steps, ...)``).
    """
    _validate(process, Policy(), n_paths, n_steps, steps_per_year, block_size, None, 0, 0)
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
