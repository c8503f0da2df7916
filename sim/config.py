"""Config nodes -> library objects: one ``instantiate`` for every option file of conf/.

A node is a mapping (a plain ``dict`` or an OmegaConf node, e.g. ``OmegaConf.load(
"conf/process/student_t.yaml")``) whose ``_target_`` names a class or factory; the other keys
are its arguments. Unknown keys are rejected with the list of allowed ones, nested nodes with
a ``_target_`` are built first, and lists become tuples (hashable static fields). The objects
validate themselves (``validate``), once, at the boundary of a run.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect

from sim.validation import ParameterError

__all__ = ["instantiate", "check_fields"]


def _import(target: str, where: str):
    module, _, name = target.rpartition(".")
    try:
        obj = importlib.import_module(module)
    except ImportError:  # a classmethod factory: module.Class.method
        module, _, cls = module.rpartition(".")
        try:
            obj = getattr(importlib.import_module(module), cls)
        except (ImportError, AttributeError) as err:
            raise ParameterError(f"{where}._target_ = {target!r} cannot be imported: {err}") from None
    try:
        return getattr(obj, name)
    except AttributeError as err:
        raise ParameterError(f"{where}._target_ = {target!r} cannot be imported: {err}") from None


def instantiate(node, where: str, **given):
    """The object a config node describes: ``_target_`` names its class (or factory), the
    other keys are its arguments; nested nodes with a ``_target_`` are built first. Unknown
    keys are rejected with the allowed ones (``where`` names the node in the message);
    ``given`` adds arguments the config does not hold (a config value wins over none only).
    Validation is the caller's, once, on the whole run (``sim.protocols.check_run``)."""
    spec = _container(node)
    if "_target_" not in spec:
        raise ParameterError(f"{where}: missing _target_ (the class to build, e.g. sim.processes.Gaussian)")
    target = spec.pop("_target_")
    factory = _import(target, where)
    params = inspect.signature(factory).parameters
    allowed = [p for p in params if p != "self"]
    unknown = sorted(set(spec) - set(allowed))
    if unknown:
        raise ParameterError(f"{where} ({target}): unknown key(s) {unknown}; allowed: {allowed}")
    for key, value in spec.items():
        if isinstance(value, dict) and "_target_" in value:
            spec[key] = instantiate(value, f"{where}.{key}")
        elif isinstance(value, list):  # hashable (a static field) and a pytree alike
            spec[key] = tuple(tuple(v) if isinstance(v, list) else v for v in value)
    for key, value in given.items():
        if key in allowed and spec.get(key) is None:
            spec[key] = value
    try:
        return factory(**spec)
    except TypeError as err:
        raise ParameterError(f"{where} ({target}): {err}") from None


def _container(node) -> dict:
    try:
        from omegaconf import OmegaConf
    except ImportError:  # pragma: no cover - omegaconf comes with hydra-core
        return dict(node)
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node)


def check_fields(cls, spec: dict, name: str, exclude=()) -> dict:
    """``spec`` unchanged if every key is a field of the dataclass ``cls`` (bar ``exclude``);
    else a ``ParameterError`` naming the unknown keys and the allowed ones."""
    allowed = [f.name for f in dataclasses.fields(cls) if f.name not in exclude]
    unknown = sorted(set(spec) - set(allowed))
    if unknown:
        raise ParameterError(f"{name}: unknown key(s) {unknown}; allowed: {allowed}")
    return spec
