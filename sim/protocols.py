"""The engine's interfaces, declared: ``Process``, ``Policy``, ``Saver``, and the optional
capabilities a policy may need of a process.

``sim.engine`` runs any objects with these methods (structural typing: no base class to
inherit); ``check_run`` checks them once, at the boundary, before anything is compiled, with
an error that names what is missing. Kernels follow rule 1 of the house style: key first.

A process (a return model, ``sim.processes``)::

    process.validate(dt)                               # host-side, raises ParameterError
    state = process.init(key, n, dt)                   # per-path state, a pytree of [n, ...]
    state, r = process.step(key, state, n, dt)         # r: float32[n] (or [n, d]) simple returns

A policy (turns a step's returns into the portfolio's simple return ``x``)::

    policy.validate(dt, n_steps)                       # host-side
    state = policy.init(n, dt, process, process_state) # per-path state
    state, x = policy.step(key, state, r, process, process_state, t, dt)  # x: float32[n]
    policy.outputs(state)                              # dict of per-path results (may be empty)

``step`` sees the step's return ``r``, the process state after drawing it (for a regime
model, the regime in force now) and the 1-based step index ``t``; every policy also has the
fields ``risk_free`` and ``floor`` (the default saver's ruin floor). A policy that needs a
capability of the process lists it in ``requires(process)`` (a tuple of capability protocols);
a check that needs the process itself beyond a capability (``DispersionTrade`` needs a
``Basket`` and a positive index variance at its implied correlation) goes in
``check_process(process)``, which ``check_run`` calls last.

A saver (what a run keeps of ``x``; ``sim.engine.PathStatsSaver`` by default)::

    acc = saver.init(n)
    acc = saver.update(acc, x, t)
    saver.finish(acc, valid) -> dict                   # valid: bool[n], the lanes a run counts

Capabilities (declared here, implemented by the models that have them):

* ``ConditionalVol``: ``conditional_vol(state, dt)``, the model's vol for the next step
  (the regime's sigma, the GARCH variance): ``sim.market.Market`` and the hedge's
  ``vol_model.source = 'model'`` need it.
* ``ImpliedVolQuote``: ``implied_vol(state, dt)``, an observed implied vol of the step just
  taken (NaN where none): a replayed history.
* ``TrueRegime``: ``true_regime(state)``, the regime in force (0 calm, 1 crash): oracle
  policies and regime diagnostics need it.

A model that wraps another (``sim.market.Market``) says which capabilities it passes through
with ``provides(capability) -> bool``.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from sim.validation import ParameterError

__all__ = ["Process", "Policy", "Saver", "ConditionalVol", "ImpliedVolQuote", "TrueRegime", "supports", "require",
           "check_run"]


@runtime_checkable
class Process(Protocol):
    def validate(self, dt: float) -> None: ...

    def init(self, key, n: int, dt: float) -> Any: ...

    def step(self, key, state, n: int, dt: float) -> tuple[Any, Any]: ...


@runtime_checkable
class Policy(Protocol):
    def validate(self, dt: float | None = None, n_steps: int | None = None) -> None: ...

    def init(self, n: int, dt: float, process=None, process_state=None) -> Any: ...

    def step(self, key, state, r, process, process_state, t, dt: float) -> tuple[Any, Any]: ...

    def outputs(self, state) -> dict: ...


@runtime_checkable
class Saver(Protocol):
    def init(self, n: int) -> Any: ...

    def update(self, acc, x, t) -> Any: ...

    def finish(self, acc, valid) -> dict: ...


@runtime_checkable
class ConditionalVol(Protocol):
    """The model's annualized vol for the next step, ``float32[n]``."""

    def conditional_vol(self, state, dt: float) -> Any: ...


@runtime_checkable
class ImpliedVolQuote(Protocol):
    """An observed implied vol of the step just taken, ``float32[n]``, NaN where there is none."""

    def implied_vol(self, state, dt: float) -> Any: ...


@runtime_checkable
class TrueRegime(Protocol):
    """The regime in force, ``int32[n]`` (0 calm, 1 crash)."""

    def true_regime(self, state) -> Any: ...


#: Where each capability is found among the shipped models (for the error message).
SHIPPED = {
    ConditionalVol: "Gaussian, StudentT, Merton, GarchT, RegimeSwitching (sim.processes), sim.market.Market and Basket",
    ImpliedVolQuote: "sim.processes.Replay with an implied series",
    TrueRegime: "sim.processes.RegimeSwitching, and sim.market.Market over it",
}


def supports(process, capability) -> bool:
    """Whether ``process`` has ``capability`` (a protocol above), passed through by a wrapper."""
    provides = getattr(process, "provides", None)
    return isinstance(process, capability) and (provides is None or bool(provides(capability)))


def require(process, capability, *, needed_by: str) -> None:
    """Raise ``ParameterError`` naming the capability when ``process`` lacks it."""
    if not supports(process, capability):
        method = [m for m in capability.__dict__ if not m.startswith("_")][0]
        raise ParameterError(f"{needed_by} needs a process with the capability {capability.__name__} "
                             f"({method}; shipped: {SHIPPED.get(capability, '-')}); {type(process).__name__} has none")


def _missing(obj, protocol) -> list[str]:
    return [m for m in ("validate", "init", "step", "outputs", "update", "finish")
            if m in protocol.__dict__ and not callable(getattr(obj, m, None))]


def check_run(process, policy, *, dt: float, n_steps: int, saver=None) -> None:
    """Check a run's pieces once, before compilation: the interfaces, then each one's own
    ``validate``, the series length of a replayed model and the policy's required capabilities."""
    for name, obj, proto, where in (("process", process, Process, "sim.processes"),
                                    ("policy", policy, Policy, "sim.protocols"),
                                    ("saver", saver, Saver, "sim.protocols")):
        if obj is None and name == "saver":
            continue
        missing = _missing(obj, proto)
        if missing:
            raise ParameterError(f"{name} must have {'/'.join(missing)} (the {proto.__name__} interface, see {where}); "
                                 f"{type(obj).__name__} has not")
    process.validate(dt)
    max_steps = getattr(process, "max_steps", None)
    if max_steps is not None and n_steps > max_steps:
        raise ParameterError(f"n_steps = {n_steps} is longer than the series {type(process).__name__} replays; "
                             f"allowed: n_steps <= {max_steps}")
    policy.validate(dt, n_steps)
    for capability in getattr(policy, "requires", lambda p: ())(process):
        require(process, capability, needed_by=type(policy).__name__)
    if hasattr(policy, "check_process"):
        policy.check_process(process)
