"""Reproduce a saved run from its saved config and check that every number matches.

    python -m experiments.reproduce RUN_DIR [--rtol R] [--atol A] [--keep DIR]

``RUN_DIR`` is one run's output directory (``outputs/<experiment>/<date>/``, or one job of a
multirun, ``outputs/multirun/<experiment>/<date>/<n>/``). The experiment is read from Hydra's
saved ``.hydra/hydra.yaml`` (``hydra.job.name``), its config from ``.hydra/config.yaml``; the
experiment's ``run`` is called on that config into a fresh directory, and every table
(``*.csv``) and every number of ``summary.json`` is compared with the saved one.

Tolerance: on the same JAX backend every random number is a pure function of the config, so
the default is exact equality (``rtol = atol = 0``). Across backends (a run saved on a GPU,
checked on a CPU) float32 kernels round differently; the default is then ``rtol = atol =
1e-3`` (a path crossing a ruin floor on one backend and not the other moves a probability by
``1 / n_paths``). Columns and keys that measure time (``*seconds*``, ``*per_second*``,
``wall*``) and the ``run`` block (versions, backend, devices) are not compared.

Exit status 0 if everything matches, 1 with a list of the mismatches otherwise.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import math
import pathlib
import sys
import tempfile

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

log = logging.getLogger("reproduce")

_TIMING = ("seconds", "per_second", "wall")


def _timing(name: str) -> bool:
    return any(t in name for t in _TIMING)


def load_run(run_dir) -> tuple[str, object, dict]:
    """(experiment name, saved config, saved summary) of a run directory."""
    d = pathlib.Path(run_dir)
    cfg_path, hydra_path = d / ".hydra" / "config.yaml", d / ".hydra" / "hydra.yaml"
    if not cfg_path.exists():
        raise FileNotFoundError(f"{d}: no saved config (.hydra/config.yaml): not a run directory")
    cfg = OmegaConf.load(cfg_path)
    name = None
    if hydra_path.exists():
        name = OmegaConf.load(hydra_path).hydra.job.name
    if name is None and (d / ".done.json").exists():
        name = json.loads((d / ".done.json").read_text())["experiment"]
    if name is None:
        raise FileNotFoundError(f"{d}: cannot tell which experiment wrote it (no .hydra/hydra.yaml)")
    summary = json.loads((d / "summary.json").read_text()) if (d / "summary.json").exists() else {}
    OmegaConf.set_struct(cfg, True)
    return name, cfg, summary


def _close(a, b, rtol, atol) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    if rtol or atol:
        with np.errstate(invalid="ignore"):
            same |= np.abs(a - b) <= atol + rtol * np.abs(b)
    return same


def compare_tables(saved: pd.DataFrame, new: pd.DataFrame, name: str, rtol: float, atol: float) -> list[str]:
    if list(saved.columns) != list(new.columns):
        return [f"{name}: columns differ: saved {list(saved.columns)}, new {list(new.columns)}"]
    if len(saved) != len(new):
        return [f"{name}: {len(saved)} rows saved, {len(new)} now"]
    out = []
    for col in saved.columns:
        if _timing(col):
            continue
        a, b = saved[col], new[col]
        if pd.api.types.is_numeric_dtype(a) and pd.api.types.is_numeric_dtype(b):
            bad = np.flatnonzero(~_close(b, a, rtol, atol))
        else:
            bad = np.flatnonzero(a.astype(str).to_numpy() != b.astype(str).to_numpy())
        for i in bad[:5]:
            out.append(f"{name}: row {i}, column {col!r}: saved {a.iloc[i]!r}, reproduced {b.iloc[i]!r}")
        if len(bad) > 5:
            out.append(f"{name}: column {col!r}: {len(bad) - 5} more rows differ")
    return out


def _leaves(obj, path=""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            if path == "" and k == "run":
                continue
            yield from _leaves(v, f"{path}.{k}" if path else str(k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _leaves(v, f"{path}[{i}]")
    else:
        yield path, obj


def compare_summaries(saved: dict, new: dict, rtol: float, atol: float) -> list[str]:
    a, b = dict(_leaves(saved)), dict(_leaves(new))
    out = [f"summary.json: key {k} only in the {'saved' if k in a else 'reproduced'} run"
           for k in sorted(set(a) ^ set(b)) if not _timing(k)]
    for k in sorted(set(a) & set(b)):
        if _timing(k):
            continue
        x, y = a[k], b[k]
        if isinstance(x, (int, float)) and isinstance(y, (int, float)) and not isinstance(x, bool):
            if not _close(y, x, rtol, atol):
                out.append(f"summary.json: {k}: saved {x!r}, reproduced {y!r}")
        elif x != y and not (isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y)):
            out.append(f"summary.json: {k}: saved {x!r}, reproduced {y!r}")
    return out


def reproduce(run_dir, *, rtol: float | None = None, atol: float | None = None, keep=None) -> dict:
    """Re-run ``run_dir``'s experiment from its saved config; return ``{"ok", "mismatches",
    "compared", "experiment", "rtol", "atol", "same_backend", "new_dir"}``."""
    import jax

    run_dir = pathlib.Path(run_dir)
    name, cfg, saved_summary = load_run(run_dir)
    saved_backend = saved_summary.get("run", {}).get("backend")
    same_backend = saved_backend in (None, jax.default_backend())
    default = 0.0 if same_backend else 1e-3
    rtol = default if rtol is None else rtol
    atol = default if atol is None else atol
    new_dir = pathlib.Path(keep) if keep else pathlib.Path(tempfile.mkdtemp(prefix=f"reproduce-{name}-"))
    log.info("reproducing %s (%s) into %s; tolerance rtol=%g atol=%g (saved on %s, now %s)", run_dir, name, new_dir,
             rtol, atol, saved_backend, jax.default_backend())
    module = importlib.import_module(f"experiments.{name}")
    module.run(cfg, new_dir)
    mismatches, compared = [], []
    for saved_csv in sorted(run_dir.glob("*.csv")):
        new_csv = new_dir / saved_csv.name
        if not new_csv.exists():
            mismatches.append(f"{saved_csv.name}: not written by the reproduction")
            continue
        mismatches += compare_tables(pd.read_csv(saved_csv), pd.read_csv(new_csv), saved_csv.name, rtol, atol)
        compared.append(saved_csv.name)
    if saved_summary:
        mismatches += compare_summaries(saved_summary, json.loads((new_dir / "summary.json").read_text()), rtol, atol)
        compared.append("summary.json")
    return {"ok": not mismatches and bool(compared), "mismatches": mismatches, "compared": compared,
            "experiment": name, "rtol": rtol, "atol": atol, "same_backend": same_backend, "new_dir": str(new_dir)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("--rtol", type=float, default=None, help="relative tolerance (default: 0 on the same backend)")
    parser.add_argument("--atol", type=float, default=None, help="absolute tolerance (default: 0 on the same backend)")
    parser.add_argument("--keep", default=None, help="write the reproduction here (default: a temporary directory)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    result = reproduce(args.run_dir, rtol=args.rtol, atol=args.atol, keep=args.keep)
    if result["ok"]:
        print(f"REPRODUCED: {', '.join(result['compared'])} match (rtol={result['rtol']:g}, atol={result['atol']:g})")
        return 0
    print(f"MISMATCH: {len(result['mismatches'])} difference(s) against {args.run_dir}:")
    for line in result["mismatches"][:50]:
        print("  " + line)
    if not result["compared"]:
        print("  nothing was compared (no tables or summary in the run directory)")
    return 1


if __name__ == "__main__":
    sys.exit(main())
