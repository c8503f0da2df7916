"""What every experiment needs around the library: config -> objects, and safe output writing.

* ``build_process`` turns a ``conf/process/*.yaml`` node into a model, rejecting unknown keys
  with the list of allowed ones (Hydra's struct mode already rejects unknown overrides
  elsewhere in the config), and validates its parameters before any work starts.
* ``OutputWriter`` writes tables (CSV), the JSON summary and PNG figures into the run's
  directory atomically: each file is written to a temporary name and renamed, so a crash
  never leaves half a file behind.
* ``run_info`` records the package versions, JAX backend and device count.
"""

from __future__ import annotations

import importlib
import inspect
import json
import math
import os
import pathlib
import platform
import tempfile
from importlib import metadata

import jax
import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from sim.validation import ParameterError

__all__ = ["build_process", "OutputWriter", "run_info", "to_jsonable"]


def _import(target: str):
    module, _, name = target.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as err:
        raise ParameterError(f"process._target_ = {target!r} cannot be imported: {err}") from None


def build_process(node: DictConfig, *, steps_per_year: float):
    """Instantiate the process described by a config node and validate its parameters."""
    spec = OmegaConf.to_container(node, resolve=True)
    if "_target_" not in spec:
        raise ParameterError("process: missing _target_ (e.g. sim.processes.Gaussian)")
    target = spec.pop("_target_")
    factory = _import(target)
    allowed = [p for p in inspect.signature(factory).parameters]
    unknown = sorted(set(spec) - set(allowed))
    if unknown:
        raise ParameterError(f"process ({target}): unknown key(s) {unknown}; allowed: {allowed}")
    process = factory(**spec)
    process.validate(1.0 / steps_per_year)
    return process


def to_jsonable(obj):
    """Plain JSON types; non-finite floats become the strings 'inf', '-inf', 'nan'."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        x = float(obj)
        return x if math.isfinite(x) else repr(x)
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    return obj


def run_info() -> dict:
    versions = {}
    for pkg in ("jax", "jaxlib", "numpy", "pandas", "optax", "hydra-core", "matplotlib"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {
        "python": platform.python_version(),
        "versions": versions,
        "backend": jax.default_backend(),
        "device_count": jax.device_count(),
    }


class OutputWriter:
    """Atomic writes into one run directory."""

    def __init__(self, directory):
        self.dir = pathlib.Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.written: list[str] = []

    def _atomic(self, name: str, write) -> pathlib.Path:
        final = self.dir / name
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=f".{name}.", suffix=".tmp")
        os.close(fd)
        try:
            write(tmp)
            os.replace(tmp, final)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        self.written.append(name)
        return final

    def table(self, name: str, frame: pd.DataFrame) -> pathlib.Path:
        return self._atomic(name, lambda p: frame.to_csv(p, index=False, float_format="%.10g"))

    def json(self, name: str, payload: dict) -> pathlib.Path:
        text = json.dumps(to_jsonable(payload), indent=2, sort_keys=False)
        return self._atomic(name, lambda p: pathlib.Path(p).write_text(text + "\n"))

    def figure(self, name: str, fig) -> pathlib.Path:
        import matplotlib.pyplot as plt

        path = self._atomic(name, lambda p: fig.savefig(p, dpi=110, bbox_inches="tight", format="png"))
        plt.close(fig)
        return path
