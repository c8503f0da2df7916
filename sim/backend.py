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

``note_cpu_devices`` tells a user, once per process, how to get one JAX device per core.

For a paired benchmark, ``FTL_NO_TUNING`` (a comma list of ``fences``, ``sums``, ``prefetch``,
``at_trade``, or ``all``) turns workarounds off on the CPU too, when a kernel is traced.
"""

from __future__ import annotations

import logging
import os

import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["on_cpu", "materialize", "tranche_sum", "prefetch_draws", "decide_at_trade", "note_cpu_devices"]

log = logging.getLogger(__name__)
_NOTED = []


def on_cpu() -> bool:
    """Whether traced code is compiled for the CPU (JAX's default backend)."""
    return jax.default_backend() == "cpu"


def _tuned(name: str) -> bool:
    off = {w.strip() for w in os.environ.get("FTL_NO_TUNING", "").split(",")}
    return on_cpu() and name not in off and "all" not in off


def _zeros_like_result(fn):
    def zeros(*args):
        return jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), jax.eval_shape(fn, *args))
    return zeros


def materialize(t, fn, *operands):
    """``fn(*operands)``, computed once and kept in buffers on the CPU (an always-taken
    conditional on the traced step index ``t >= 0``); a plain call elsewhere."""
    if not _tuned("fences"):
        return fn(*operands)
    return lax.cond(t >= 0, fn, _zeros_like_result(fn), *operands)


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
    cores = len(os.sched_getaffinity(0))
    if cores > 1:
        log.warning("JAX has 1 CPU device on this %d-core machine; sim.parallel.use_cpu_cores() before JAX's first "
                    "operation (the experiments do so) steps one block per core, faster with the "
                    "same results", cores)
