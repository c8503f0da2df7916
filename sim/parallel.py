"""Several processes (hosts) in one simulation: ``jax.distributed`` set-up and gathering.

``engine.simulate`` needs nothing from the caller beyond ``init_distributed`` in every process:
when ``jax.process_count() > 1`` each process simulates the chunks of blocks ``c`` with ``c %
process_count == process_index`` on its own devices (sharded over them by the engine's mesh),
and the per-path results are gathered to every process (``gather_paths``). Block ``b``'s draws
depend only on ``(seed, block_size, b)``, so the results equal a single-process run's, bit for
bit, whatever the number of processes or devices.

``concurrently`` runs independent calls (simulations, a sample's whole study) two at a time in
threads on a one-process CPU run, so that XLA compiling one overlaps another's computing.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
from typing import Callable

import jax
import numpy as np

from sim.validation import ParameterError, check_int

__all__ = ["init_distributed", "gather_paths", "allgather_exact", "use_cpu_cores", "default_cpu_devices", "concurrently"]

log = logging.getLogger(__name__)


def use_cpu_cores(n: int | None = None, *, quiet: bool = False) -> int:
    """Give JAX ``n`` CPU devices (default: one per core this process may run on), so that the
    engine steps one block per core, its state in that core's cache: on the 2-core VM the
    engine's kernels ran 1.4-2.5x faster than on JAX's single CPU device (docs/DESIGN.md,
    "Chunks"). Results do not change (tested bit for bit).

    Must run before JAX's first operation (``jax_num_cpu_devices``); later it changes nothing,
    logs why, and returns the CPU device count JAX already has. Where the default backend is a
    GPU it only shapes the CPU backend, which the engine then does not use.
    """
    from sim import backend

    n = backend.cpu_cores() if n is None else check_int("cpu_devices", n, 1, 4096)
    try:
        jax.config.update("jax_num_cpu_devices", n)
    except RuntimeError:
        have = len(jax.devices("cpu"))
        if have != n and not quiet:
            log.info("JAX was already initialized with %d CPU device(s); keeping them (asked for %d)", have, n)
        return have
    return n


def concurrently(calls: dict, *, threads: int | None = None, platform: str | None = None,
                 done: Callable | None = None) -> dict:
    """``{name: call()}`` for ``calls = {name: call}`` (independent, argument-free callables),
    ``threads`` at once (default ``backend.concurrent_runs``: two on a one-process CPU run,
    one elsewhere; ``platform`` defaults to that of ``jax.devices()``), one after another in
    this thread when one. Each result is its call's own; ``done(name, result)`` is called in
    the order of ``calls``. The first error is raised once the calls started beside it have
    ended; later calls are not started."""
    from sim import backend

    if threads is None:
        threads = backend.concurrent_runs(platform or jax.devices()[0].platform, jax.process_count())
    threads = check_int("threads", threads, 1)
    pool = concurrent.futures.ThreadPoolExecutor(threads) if threads > 1 else None
    out = {}
    try:
        futures = {name: pool.submit(call) for name, call in calls.items()} if pool else {}
        for name, call in calls.items():
            out[name] = futures[name].result() if pool else call()
            if done is not None:
                done(name, out[name])
    finally:
        if pool:
            pool.shutdown(wait=True, cancel_futures=True)
    return out


def default_cpu_devices() -> int | None:
    """What ``import sim`` does: one JAX CPU device per core (``use_cpu_cores``), so that a plain
    ``sim.simulate`` from a notebook gets the engine's fast configuration, unless the user chose
    otherwise or JAX has already started (then ``sim.backend`` says once, at the first
    simulation, how to get it). ``FTL_CPU_DEVICES=N`` asks for ``N``, ``FTL_CPU_DEVICES=off``
    leaves JAX alone; ``JAX_NUM_CPU_DEVICES`` or a device count in ``XLA_FLAGS`` is the user's
    choice and kept. Results do not depend on it (tested bit for bit), only the speed."""
    choice = os.environ.get("FTL_CPU_DEVICES", "auto")
    if choice == "off" or "JAX_NUM_CPU_DEVICES" in os.environ or \
            "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
        return None
    return use_cpu_cores(None if choice == "auto" else int(choice), quiet=True)


def init_distributed(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None,
                     *, bind: str | None = None) -> None:
    """Join a multi-process JAX run (call once per process, before any other JAX work).

    With no arguments, JAX detects the cluster (SLURM, Open MPI, Kubernetes...). Otherwise
    ``coordinator`` is ``host:port`` of process 0's coordinator service, which binds to
    ``bind`` (default: the coordinator address itself, so ``127.0.0.1:port`` listens on
    loopback only; JAX's own default would be every interface).
    """
    if coordinator is None:
        jax.distributed.initialize()
        return
    host, _, port = str(coordinator).rpartition(":")
    if not host or not port.isdigit():
        raise ParameterError(f"distributed.coordinator = {coordinator!r}; allowed: 'host:port'")
    n = check_int("distributed.num_processes", num_processes, 1)
    check_int("distributed.process_id", process_id, 0, n - 1)
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=n, process_id=process_id,
                               coordinator_bind_address=bind or coordinator)


def allgather_exact(x) -> np.ndarray:
    """``[process_count, *x.shape]``: every process's ``x``, bit for bit. Arrays travel as 32-bit
    words (``process_allgather`` alone would turn float64 into float32 when x64 is off)."""
    from jax.experimental import multihost_utils

    x = np.ascontiguousarray(x)
    if x.dtype == bool:
        return np.asarray(multihost_utils.process_allgather(x.astype(np.int32))).astype(bool)
    if x.dtype.itemsize % 4:
        raise TypeError(f"allgather_exact: dtype {x.dtype} is not a whole number of 32-bit words")
    words = np.asarray(multihost_utils.process_allgather(x.view(np.uint32)))
    return np.ascontiguousarray(words).view(x.dtype).reshape((words.shape[0],) + x.shape)


def gather_paths(local: np.ndarray, owned: np.ndarray, axis: int = 0) -> np.ndarray:
    """Combine per-process arrays along the paths ``axis``: entry ``i`` from the process with
    ``owned[i]`` True (``owned``: this process's boolean mask over the paths)."""
    if jax.process_count() == 1:
        return local
    arrays = allgather_exact(np.asarray(local))  # [P, ...]
    masks = allgather_exact(np.asarray(owned, bool))  # [P, n]
    if not np.all(masks.sum(axis=0) == 1):
        raise RuntimeError("gather_paths: every path must be owned by exactly one process")
    return _select(arrays, np.argmax(masks, axis=0), axis)


def _select(arrays: np.ndarray, owner: np.ndarray, axis: int) -> np.ndarray:
    moved = np.moveaxis(arrays, axis + 1, 1)  # [P, n, ...]
    out = moved[owner, np.arange(owner.size)]  # [n, ...]
    return np.moveaxis(out, 0, axis)
