"""The one way to define a parameter pytree in this project: ``@pytree_dataclass``.

Every return model, policy and detector here is a frozen dataclass whose fields are its
parameters, registered as a JAX pytree so that ``jit``, ``vmap`` and ``grad`` see its
numeric fields as leaves. Define your own process or policy the same way::

    from sim.pytree import pytree_dataclass, static_field

    @pytree_dataclass
    class MyModel:
        mu: float = 0.05                        # a leaf: traced, vmappable, differentiable
        sigma: float = 0.2
        mode: str = static_field("fast")        # static: part of the compiled code's key

Why not ``jax.tree_util.register_dataclass``: with jax/jaxlib 0.10.2, two *different*
classes registered that way, with the same number of data fields and equal static fields,
give treedefs that compare equal while their hashes differ. jit's C++ cache compares an
entry whenever a short hash tag matches (about 1 in 128 pairs), so a call with one class
can run the executable compiled for the other: deterministically wrong from then on in that
process (measured: 39 wrong of 2,000 in the reproduction of docs/DESIGN.md, "Pytrees").
This helper registers a custom node (``register_pytree_with_keys``) whose auxiliary data
holds the class itself, its static field values, and the values of the class attributes
named in ``__trace_attrs__`` (class-level switches that change the traced code), so
treedefs of different classes, or of one class with different switches, never compare
equal (0 wrong of 2,000, tested).
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

__all__ = ["pytree_dataclass", "static_field", "choice_field", "choice_index", "REGISTERED"]

#: Every class registered by ``pytree_dataclass`` (for the tests that check them pairwise).
REGISTERED: list[type] = []


def static_field(default=dataclasses.MISSING, **kwargs):
    """A dataclass field that is static metadata (hashable; part of the treedef), not a leaf."""
    metadata = dict(kwargs.pop("metadata", {}), static=True)
    return dataclasses.field(default=default, metadata=metadata, **kwargs)


def choice_field(default: str, choices: tuple[str, ...]):
    """A field holding one of ``choices`` (strings) that is *traced*, not static: it travels
    through jit as the int32 index of the choice, so one compiled kernel serves every choice
    (no recompilation per option). On the host it reads as the string; in a kernel as the
    traced index: branch on it with ``choice_index`` and ``jnp.where``/``lax.switch``."""
    return dataclasses.field(default=default, metadata=dict(choices=tuple(choices)))


def choice_index(value, choices: tuple[str, ...]):
    """The index of ``value`` in ``choices``: a Python int for a string (on the host), the
    traced int32 itself inside a kernel."""
    if isinstance(value, str):
        if value not in choices:
            from sim.validation import ParameterError

            raise ParameterError(f"{value!r} is not one of the allowed choices {list(choices)}")
        return choices.index(value)
    return value


def pytree_dataclass(cls):
    """Freeze ``cls`` as a dataclass and register it as a pytree node whose treedef carries
    the class (see the module docstring). Fields with ``metadata=dict(static=True)`` (or
    ``static_field``) are static; the others are leaves. Class attributes listed in
    ``__trace_attrs__`` (inherited, e.g. ``("at_trade",)``) are part of the treedef too."""
    cls = dataclasses.dataclass(frozen=True)(cls)
    fields = dataclasses.fields(cls)
    data = tuple(f.name for f in fields if not f.metadata.get("static"))
    meta = tuple(f.name for f in fields if f.metadata.get("static"))
    keys = tuple(jax.tree_util.GetAttrKey(name) for name in data)
    trace_attrs = tuple(getattr(cls, "__trace_attrs__", ()))

    def aux(obj):
        return (cls, tuple(getattr(obj, n) for n in meta), tuple(getattr(cls, n, None) for n in trace_attrs))

    choices = {f.name: f.metadata["choices"] for f in fields if "choices" in f.metadata}

    def leaf(obj, name):
        value = getattr(obj, name)
        if name in choices and isinstance(value, str):
            return np.int32(choice_index(value, choices[name]))
        return value

    def flatten(obj):
        return [leaf(obj, n) for n in data], aux(obj)

    def flatten_with_keys(obj):
        return [(k, leaf(obj, n)) for k, n in zip(keys, data)], aux(obj)

    def unflatten(aux_data, children):
        # Bypass __init__ (and any validation in it): JAX rebuilds nodes with placeholder
        # leaves (object(), tracers, None) as well as with arrays.
        obj = object.__new__(cls)
        for name, value in zip(data, children):
            object.__setattr__(obj, name, value)
        for name, value in zip(meta, aux_data[1]):
            object.__setattr__(obj, name, value)
        return obj

    jax.tree_util.register_pytree_with_keys(cls, flatten_with_keys, unflatten, flatten)
    REGISTERED.append(cls)
    return cls
