"""A run's outputs, written safely, and its provenance.

``OutputWriter`` writes tables (CSV), the JSON summary and PNG figures into one directory
atomically: each file is written to a temporary name beside its final one and renamed, so a
crash never leaves half a file under the final name. ``run_info`` records the Python and
package versions, the JAX backend and device and process counts; ``to_jsonable`` turns
results into plain JSON (non-finite floats as the strings 'inf', '-inf', 'nan').
``request_stop`` / ``check_stop``: a stop asked for by a signal (Ctrl-C, SIGTERM) that holds
even where its ``KeyboardInterrupt`` was swallowed (see ``check_stop``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import pathlib
import platform
import tempfile
import threading
import time
from importlib import metadata

import numpy as np

__all__ = ["OutputWriter", "atomic_write", "check_stop", "request_stop", "run_info", "to_jsonable"]

log = logging.getLogger(__name__)

_STOP = threading.Event()


def request_stop() -> None:
    """Record that the run was asked to stop (a signal handler calls it before it raises
    ``KeyboardInterrupt``); from then on every ``check_stop`` raises ``KeyboardInterrupt``.
    For the life of the process: a process asked to stop exits."""
    _STOP.set()


def check_stop() -> None:
    """Raise ``KeyboardInterrupt`` if a stop was requested (``request_stop``).

    A signal handler's ``KeyboardInterrupt`` is raised wherever the main thread happens to be,
    and JAX's tracing code has bare ``except:`` clauses (``lax.broadcast_shapes``,
    ``core.is_constant_dim``, ``jnp.where``'s shape check) that swallow it when it lands there:
    the run would go on and exit 0 after a Ctrl-C (``tests/test_sweeps.py`` shows the
    swallowing). So the host driver calls this after each
    chunk and before it starts, every output write calls it, and the harness calls it before
    a run's completion record: a stop that was swallowed takes effect at the next of these."""
    if _STOP.is_set():
        raise KeyboardInterrupt


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


def _jax():
    import jax

    return jax


def run_info() -> dict:
    versions = {}
    for pkg in ("jax", "jaxlib", "numpy", "pandas", "optax", "hydra-core", "matplotlib", "hydra-joblib-launcher",
                "hydra-submitit-launcher"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {
        "python": platform.python_version(),
        "versions": versions,
        "backend": _jax().default_backend(),
        "device_count": _jax().device_count(),
        "process_count": _jax().process_count(),
    }


def atomic_write(final: pathlib.Path, write) -> pathlib.Path:
    """``write(tmp_path)`` into a temporary file beside ``final``, then rename it to ``final``:
    a crash never leaves half a file under the final name."""
    fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, final)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return final


class OutputWriter:
    """Atomic writes into one run directory."""

    def __init__(self, directory, *, plots: bool = True):
        if not isinstance(plots, bool):
            from sim.validation import ParameterError

            raise ParameterError(f"plots = {plots!r}; allowed: true or false")
        self.dir = pathlib.Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.written: list[str] = []
        self.plots = plots

    def _atomic(self, name: str, write) -> pathlib.Path:
        check_stop()
        final = atomic_write(self.dir / name, write)
        self.written.append(name)
        return final

    def table(self, name: str, frame) -> pathlib.Path:
        return self._atomic(name, lambda p: frame.to_csv(p, index=False, float_format="%.10g"))

    def json(self, name: str, payload: dict) -> pathlib.Path:
        text = json.dumps(to_jsonable(payload), indent=2, sort_keys=False)
        return self._atomic(name, lambda p: pathlib.Path(p).write_text(text + "\n"))

    def finish(self, summary: dict, t_start: float) -> dict:
        """Add the run's ``run`` block (versions, backend, devices, wall time since
        ``t_start``, a ``time.perf_counter()``) to ``summary``, write it as ``summary.json``
        last, log what was written; return ``summary``."""
        summary["run"] = {**run_info(), "wall_seconds": time.perf_counter() - t_start}
        self.json("summary.json", summary)
        log.info("wrote %s into %s in %.1fs", ", ".join(self.written), self.dir, summary["run"]["wall_seconds"])
        return summary

    def figure(self, name: str, fig) -> pathlib.Path | None:
        """Save ``fig`` (a figure, or a function that draws it) as PNG ``name``; with
        ``plots=False`` nothing is drawn or written (None): tables and the summary only."""
        if not self.plots:
            if not callable(fig):
                import matplotlib.pyplot as plt

                plt.close(fig)
            return None
        import matplotlib.pyplot as plt

        fig = fig() if callable(fig) else fig
        path = self._atomic(name, lambda p: fig.savefig(p, dpi=110, bbox_inches="tight", format="png"))
        plt.close(fig)
        return path


def progress_bar(done: int, total: int, elapsed: float, unit: str, width: int = 30) -> None:
    """A one-line progress bar on the terminal (``done``/``total`` ``unit``, elapsed, ETA),
    redrawn in place; nothing when stderr is not a terminal (logs and pipes keep the log
    lines only), and nothing from a thread other than the main one (runs side by side,
    ``sim.parallel.concurrently``, would redraw one line in turn). The line ends when
    ``done == total``."""
    import sys
    import threading

    stream = sys.stderr
    if total <= 1 or not getattr(stream, "isatty", lambda: False)() or threading.current_thread() is not threading.main_thread():
        return
    frac = min(max(done / total, 0.0), 1.0)
    eta = elapsed / done * (total - done) if done else float("nan")
    fill = int(round(width * frac))
    stream.write(f"\r[{'#' * fill}{'.' * (width - fill)}] {done}/{total} {unit}, {elapsed:.0f}s, ETA {eta:.0f}s  ")
    if done >= total:
        stream.write("\n")
    stream.flush()
