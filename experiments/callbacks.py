"""Hydra callbacks: progress of a sweep (points done, elapsed, ETA), on the terminal and in
``<sweep dir>/progress.log``, whatever the launcher (basic, joblib, submitit).

Registered in every experiment's config (``hydra.callbacks.progress``). The number of points
is the product of the sizes of the sweep overrides (``a=1,2,3 b=x,y``: 6), written to
``<sweep dir>/.sweep.json`` when the multirun starts; a point counts as done when its
directory holds the completion record of ``experiments.harness`` (also when it was skipped
because an earlier, interrupted run of the same sweep had finished it).
"""

from __future__ import annotations

import json
import logging
import pathlib
import time

from hydra.experimental.callback import Callback

from experiments.harness import DONE

log = logging.getLogger("sweep")

_STATE = ".sweep.json"


def sweep_size(overrides) -> int:
    """Number of jobs of a basic sweep over ``overrides`` (Hydra's override grammar)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    n = 1
    for o in OverridesParser.create().parse_overrides(list(overrides)):
        if o.is_sweep_override():
            n *= len(list(o.sweep_string_iterator()))
    return n


def _line(sweep_dir: pathlib.Path, message: str) -> None:
    log.info(message)
    with open(sweep_dir / "progress.log", "a") as f:
        f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")


class SweepProgress(Callback):
    def on_multirun_start(self, config, **kwargs) -> None:
        sweep_dir = pathlib.Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        try:
            total = sweep_size(config.hydra.overrides.task)
        except Exception:  # a sweeper with its own grammar: count unknown
            total = None
        done = sum(1 for p in sweep_dir.glob(f"*/{DONE}"))
        (sweep_dir / _STATE).write_text(json.dumps({"total": total, "start": time.time(), "done_at_start": done}))
        _line(sweep_dir, f"sweep started: {total if total is not None else '?'} points, {done} already done "
                         f"(finished points of the same config are skipped)")

    def on_job_end(self, config, job_return, **kwargs) -> None:
        if str(config.hydra.mode) != "RunMode.MULTIRUN":
            return
        sweep_dir = pathlib.Path(config.hydra.sweep.dir)
        try:
            state = json.loads((sweep_dir / _STATE).read_text())
        except (OSError, ValueError):
            state = {"total": None, "start": time.time(), "done_at_start": 0}
        done = sum(1 for p in sweep_dir.glob(f"*/{DONE}"))
        elapsed = time.time() - state["start"]
        total = state["total"]
        fresh = done - state["done_at_start"]
        eta = ""
        if total is not None and fresh > 0:
            eta = f", ETA {elapsed / fresh * max(total - done, 0):.0f}s"
        status = getattr(job_return.status, "name", str(job_return.status)).lower()
        _line(sweep_dir, f"point {config.hydra.job.num} {status}: {done}/{total if total is not None else '?'} "
                         f"points done, {elapsed:.0f}s elapsed{eta}")

    def on_multirun_end(self, config, **kwargs) -> None:
        sweep_dir = pathlib.Path(config.hydra.sweep.dir)
        done = sum(1 for p in sweep_dir.glob(f"*/{DONE}"))
        _line(sweep_dir, f"sweep finished: {done} points done")


__all__ = ["SweepProgress", "sweep_size"]
