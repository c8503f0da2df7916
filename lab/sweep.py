"""Sweeps as a whole: every point validated before the first runs, and one table of all points.

* ``expand(overrides)``: the points of a basic sweep (Hydra's override grammar), each a list
  of overrides, in the order the basic launcher runs them.
* ``validate_points(config)``: composes every point and runs the experiment's ``check(cfg)``
  (every parameter it will build, no simulation) and the unknown-key check on it; the first
  bad point stops the sweep with one line naming the point and the parameter, before any
  point runs.
* ``write_table(sweep_dir)``: ``sweep.parquet`` and ``sweep.csv`` at the sweep's root, one
  row per point and row of the experiment's natural table (``NATURAL``: the surface's
  ``nu x c``, the Kelly policies, ...), with the point's override values as columns, its
  summary's scalars (``summary.*``) and its status: done, skipped (done by an earlier run of
  the same sweep), failed (with the error), running, incomplete (killed), pending. Written
  atomically after every point, so an interrupted sweep's table shows what is done.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import math
import pathlib
import re
import time

import pandas as pd

__all__ = ["flatten", "progress_line", "expand", "validate_points", "point_dirname", "varying_keys", "write_table", "build_table", "NATURAL", "STATE"]

STATE = ".sweep.json"  # the sweep's points and start time, written when it starts
FAILED = ".failed.json"  # a point's error, written by lab.harness.hydra_main
SKIPPED = ".skipped.json"  # written when a point was found done and skipped

#: the table each experiment's sweep rows come from (None: one row per point, from the summary)
NATURAL = {"ruin_surface": "surface.csv", "kelly": "policies.csv", "posterior_kelly": "policies.csv", "hedge_overlay": "models.csv",
           "crash_protocol": "mc_policies.csv", "dispersion": "trades.csv", "time_vs_ensemble": None}


def progress_line(sweep_dir, message: str) -> None:
    """One timestamped line of the sweep's ``progress.log`` (and the log): starts, points,
    failures, interruptions, the end."""
    logging.getLogger("sweep").info(message)
    with open(pathlib.Path(sweep_dir) / "progress.log", "a") as f:
        f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")


def expand(overrides) -> list[list[str]]:
    """Every point of a basic sweep over ``overrides`` (``a=1,2 b=x,y``: 4 points), each as
    the list of overrides Hydra's basic sweeper gives that job (and saves in its
    ``.hydra/overrides.yaml``)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(overrides))
    return [list(p) for batch in BasicSweeper.split_arguments(parsed, None) for p in batch]


def _key(override: str) -> str:
    return override.partition("=")[0].lstrip("+~")


def varying_keys(points) -> list[str]:
    """The override keys whose value differs between the points of a sweep."""
    values: dict = {}
    for point in points:
        for o in point:
            values.setdefault(_key(o), set()).add(o)
    return sorted(k for k, v in values.items() if len(v) > 1)


def point_dirname(overrides, num=0, sweep_dir=None) -> str:
    """A point's directory name: its overrides of the keys that vary in the sweep (all of them
    when the sweep's ``.sweep.json`` is not there), sorted, joined by commas, ``name`` left
    out; characters other than letters, digits and ``._=,+~@-[]`` become ``_``; a name longer
    than 120 characters is cut and a hash of the whole added; a point without overrides is
    named by its number."""
    overrides = [str(o) for o in overrides if _key(str(o)) != "name"]
    keep = None
    if sweep_dir is not None:
        try:
            keep = set(json.loads((pathlib.Path(str(sweep_dir)) / STATE).read_text())["varying"])
        except (OSError, ValueError, KeyError):
            keep = None
    chosen = sorted(o for o in overrides if keep is None or _key(o) in keep)
    name = re.sub(r"[^A-Za-z0-9._=,+~@\-\[\]]", "_", ",".join(chosen))
    if not name:
        return f"point_{num}"
    if len(name) > 120:
        name = f"{name[:100]}-{hashlib.sha1(name.encode()).hexdigest()[:12]}"
    return name


def validate_points(config, points) -> None:
    """Compose every point and check it as its run would, before any runs. Raises
    ``ParameterError`` naming the point."""
    from hydra import compose

    from lab.harness import check_known_keys
    from sim.validation import ParameterError

    hc = config.hydra
    module = importlib.import_module(f"experiments.{hc.job.name}")
    check = getattr(module, "check", None)
    search = [o for o in hc.overrides.hydra if o.startswith("hydra.searchpath")]
    for i, point in enumerate(points):
        label = f"sweep point {i + 1}/{len(points)} ({' '.join(point) or 'no overrides'})"
        try:
            cfg = compose(config_name=hc.job.config_name, overrides=search + point)
            check_known_keys(cfg, hc.job.config_name, point, search)
            if check is not None:
                check(cfg)
        except ParameterError as err:
            raise ParameterError(f"{label}: {err}; nothing was run") from None
        except Exception as err:  # a composition error (a bad group choice, a bad value)
            raise ParameterError(f"{label}: {type(err).__name__}: {str(err).splitlines()[0]}; nothing was run") \
                from None


def _value(text: str):
    try:
        x = float(text)
    except ValueError:
        return text
    return int(x) if x.is_integer() and re.fullmatch(r"[+-]?\d+", text.strip()) else x


def _overrides_of(point: list[str]) -> dict:
    out = {}
    for o in point:
        key, sep, value = o.partition("=")
        if sep and not key.startswith("~") and not key.startswith("hydra."):
            out[key.lstrip("+")] = _value(value)
    return out


def flatten(node, prefix: str = "", depth: int | None = None) -> dict:
    """Nested mappings as one level, keys joined by dots (``prefix`` first); a list of scalars
    is one value, a list holding mappings or lists is left out, and so is a mapping nested more
    than ``depth`` levels down. The summaries' flattener for the sweep table and for MLflow."""
    out = {}
    for k, v in node.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            if depth is None or depth > 1:
                out.update(flatten(v, key + ".", None if depth is None else depth - 1))
        elif isinstance(v, list):
            if not any(isinstance(x, (dict, list)) for x in v):
                out[key] = v
        else:
            out[key] = v
    return out


def _scalars(summary: dict) -> dict:
    """The summary's numbers, booleans and short strings, three levels down at most (lists and
    long texts left out); ``to_jsonable``'s 'inf' / '-inf' / 'nan' become floats again."""
    out = {}
    for key, v in flatten({k: v for k, v in summary.items() if k != "run"}, "summary.", depth=3).items():
        if isinstance(v, (bool, int, float)):
            out[key] = v
        elif isinstance(v, str) and len(v) <= 40:
            out[key] = float(v) if v in ("inf", "-inf", "nan") else v
    if isinstance(summary.get("run"), dict):
        out["wall_seconds"] = summary["run"].get("wall_seconds")
    return out


def point_status(point_dir, started: float) -> str:
    """A point directory's status in the sweep table (``done``, ``skipped``, ``failed``,
    ``running``, ``incomplete``) for a sweep started at ``started`` (epoch seconds)."""
    return _status(pathlib.Path(point_dir), float(started))[0]


def _status(d: pathlib.Path, started: float) -> tuple[str, str]:
    from lab.harness import DONE

    if (d / DONE).exists():
        skipped = d / SKIPPED
        if skipped.exists() and skipped.stat().st_mtime >= started:
            return "skipped", "already done by an earlier run of this sweep"
        return "done", ""
    if (d / FAILED).exists():
        try:
            return "failed", json.loads((d / FAILED).read_text()).get("error", "")
        except (OSError, ValueError):
            return "failed", ""
    if (d / ".running.json").exists():
        return "running", ""
    return "incomplete", "started but not finished (interrupted or killed)"


_ROWS: dict = {}  # (point dir, its summary's mtime) -> its rows: a finished point is read once per process


def _point_rows(d: pathlib.Path, status: str, experiment):
    """A finished point's summary scalars joined with its natural table's rows (``row.*``),
    and the experiment's name; nothing for a point that has not finished."""
    summary_file = d / "summary.json"
    if status not in ("done", "skipped") or not summary_file.exists():
        return [], experiment
    key = (str(d), summary_file.stat().st_mtime_ns)
    if key not in _ROWS:
        summary = json.loads(summary_file.read_text())
        name = experiment or summary.get("experiment")
        scalars = _scalars(summary)
        natural = NATURAL.get(name)
        if natural and (d / natural).exists():
            table = pd.read_csv(d / natural)
            found = [{**scalars, **{f"row.{k}": v for k, v in r.items()}} for r in table.to_dict(orient="records")]
        else:
            found = [scalars]
        _ROWS[key] = (found, name)
    found, name = _ROWS[key]
    return found, experiment or name


def build_table(sweep_dir) -> pd.DataFrame:
    """The sweep table of ``sweep_dir`` from what its point directories hold."""
    import yaml

    sweep_dir = pathlib.Path(sweep_dir)
    try:
        state = json.loads((sweep_dir / STATE).read_text())
    except (OSError, ValueError):
        state = {}
    experiment, started = state.get("experiment"), float(state.get("start", 0.0))
    seen, rows = set(), []
    for d in sorted(p for p in sweep_dir.iterdir() if (p / ".hydra" / "overrides.yaml").exists()):
        point = [str(o) for o in yaml.safe_load((d / ".hydra" / "overrides.yaml").read_text()) or []]
        seen.add(tuple(sorted(point)))
        status, error = _status(d, started)
        base = {"point": d.name, **_overrides_of(point), "status": status, "error": error}
        found, experiment = _point_rows(d, status, experiment)
        rows += [{**base, **r} for r in found] or [base]
    for point in state.get("points", []):
        if tuple(sorted(point)) not in seen:
            rows.append({"point": None, **_overrides_of(point), "status": "pending", "error": ""})
    frame = pd.DataFrame(rows)
    for col in frame.columns:  # one type per column (parquet): numbers stay numbers, the rest text
        if frame[col].dtype == object:
            kinds = {type(v) for v in frame[col] if v is not None and not (isinstance(v, float) and math.isnan(v))}
            if not kinds <= {int, float, bool} or bool in kinds:
                frame[col] = frame[col].map(lambda v: None if v is None or (isinstance(v, float) and math.isnan(v))
                                            else str(v))
    return frame


def write_table(sweep_dir) -> pd.DataFrame:
    """``build_table``, written atomically as ``sweep.csv`` and ``sweep.parquet``."""
    from sim.outputs import atomic_write

    sweep_dir = pathlib.Path(sweep_dir)
    frame = build_table(sweep_dir)
    atomic_write(sweep_dir / "sweep.csv", lambda p: frame.to_csv(p, index=False, float_format="%.10g"))
    atomic_write(sweep_dir / "sweep.parquet", lambda p: frame.to_parquet(p, index=False))
    return frame
