"""Hydra callbacks: a sweep as a whole (every point validated first; progress, points done,
elapsed, ETA, failures and interruptions, on the terminal and in ``<sweep dir>/progress.log``;
the sweep table and report, ``lab.sweep`` and ``lab.report``), whatever the
launcher (basic, joblib, submitit).

Registered in every experiment's config (``hydra.callbacks.progress``). The number of points
is the product of the sizes of the sweep overrides (``a=1,2,3 b=x,y``: 6), written to
``<sweep dir>/.sweep.json`` when the multirun starts; a point counts as done when its
directory holds the completion record of ``lab.harness`` (also when it was skipped
because an earlier, interrupted run of the same sweep had finished it).
"""

from __future__ import annotations

import json
import logging
import pathlib
import time

from hydra.experimental.callback import Callback

from lab.harness import DONE
from lab.sweep import progress_line as _line

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


class SweepProgress(Callback):
    """Validates every point before the first runs, keeps ``progress.log``, the sweep table
    (``sweep.parquet`` / ``sweep.csv``, after every point) and, when every point has run,
    ``report.html``; an interruption is logged too."""

    def on_multirun_start(self, config, **kwargs) -> None:
        import atexit
        import sys

        from lab import sweep
        from sim.validation import ParameterError

        sweep_dir = pathlib.Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        try:
            points = sweep.expand(config.hydra.overrides.task)
        except Exception:  # a sweeper with its own grammar: points unknown, nothing checked ahead
            points = None
        if points is not None:
            try:
                sweep.validate_points(config, points)
            except ParameterError as err:
                _line(sweep_dir, f"sweep refused: {err}")
                print(f"error: {err}", file=sys.stderr, flush=True)
                raise SystemExit(2) from None
        total = None if points is None else len(points)
        done = sum(1 for p in sweep_dir.glob(f"*/{DONE}"))
        (sweep_dir / _STATE).write_text(json.dumps({"experiment": config.hydra.job.name, "total": total,
                                                    "start": time.time(), "done_at_start": done,
                                                    "points": points or [],
                                                    "varying": sweep.varying_keys(points) if points else []}))
        _line(sweep_dir, f"sweep started: {total if total is not None else '?'} points, {done} already done "
                         f"(finished points of the same config are skipped)")
        sweep.write_table(sweep_dir)
        self._finished = False
        atexit.register(self._interrupted, sweep_dir)

    def _interrupted(self, sweep_dir: pathlib.Path) -> None:
        if not getattr(self, "_finished", True):
            done = sum(1 for p in sweep_dir.glob(f"*/{DONE}"))
            _line(sweep_dir, f"sweep interrupted or failed: {done} points done; run the same command again "
                             "(with the same name) to resume")
            try:
                from lab import sweep

                sweep.write_table(sweep_dir)
            except Exception:  # the table is a convenience here; never mask the interruption
                pass

    def on_job_end(self, config, job_return, **kwargs) -> None:
        if str(config.hydra.mode) != "RunMode.MULTIRUN":
            return
        from lab import sweep

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
        error = ""
        if status == "failed":
            err = getattr(job_return, "_return_value", None)
            error = f" ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
        _line(sweep_dir, f"point {config.hydra.job.num} ({pathlib.Path(config.hydra.runtime.output_dir).name}) "
                         f"{status}{error}: {done}/{total if total is not None else '?'} points done, "
                         f"{elapsed:.0f}s elapsed{eta}")
        if total is not None:
            from sim.outputs import progress_bar

            progress_bar(done, total, elapsed, "points")
        table = sweep.write_table(sweep_dir)
        complete = total is not None and not table["status"].isin(["pending", "running"]).any()
        # the report once the last point has run; a point found done (skipped) adds nothing to
        # it, so a resumed sweep's report comes at its end (on_multirun_end), not once per point,
        # unless a point failed (the sweep then raises before on_multirun_end)
        skipped = sweep.point_status(config.hydra.runtime.output_dir, state["start"]) == "skipped"
        if complete and (not skipped or (table["status"] == "failed").any()):
            self._report(sweep_dir, table)

    def _report(self, sweep_dir: pathlib.Path, table) -> None:
        from lab.report import write_report

        self._reported = table.to_csv(index=False)  # what the last report of this process showed
        try:
            _line(sweep_dir, f"report: {write_report(sweep_dir)}")
        except Exception as err:  # a report is never worth a failed sweep
            _line(sweep_dir, f"report not written: {type(err).__name__}: {err}")

    def on_multirun_end(self, config, **kwargs) -> None:
        from lab import sweep

        sweep_dir = pathlib.Path(config.hydra.sweep.dir)
        done = sum(1 for p in sweep_dir.glob(f"*/{DONE}"))
        self._finished = True
        table = sweep.write_table(sweep_dir)
        # the final report, unless this process's last one already shows this table (the basic
        # launcher's last point); a parallel launcher's points report in their own processes
        if getattr(self, "_reported", None) != table.to_csv(index=False) \
                and not table["status"].isin(["pending", "running"]).any():
            self._report(sweep_dir, table)
        _line(sweep_dir, f"sweep finished: {done} points done; table sweep.parquet / sweep.csv, report report.html")


__all__ = ["SweepProgress", "MlflowTracker", "sweep_size"]


class MlflowTracker(Callback):
    """Logs every finished run (single or sweep point) to MLflow: the resolved config as params
    (dotted keys), the summary's numbers as metrics, status and run directory as tags, and the
    run's files as artifacts. Enabled with ``hydra/callbacks=mlflow`` (optional dependency:
    ``pip install -e '.[track]'``). ``tracking_uri`` null: a SQLite store
    ``outputs/mlflow.db`` (artifacts beside it in ``outputs/mlartifacts``); any MLflow tracking
    URI otherwise (a server, another database). A tracking failure is logged, never fatal."""

    def __init__(self, tracking_uri=None, experiment=None, artifacts=True) -> None:
        self.tracking_uri, self.experiment, self.artifacts = tracking_uri, experiment, bool(artifacts)

    def _store(self):
        import mlflow

        uri = self.tracking_uri or f"sqlite:///{pathlib.Path('outputs', 'mlflow.db').resolve()}"
        if uri.startswith("sqlite:///"):
            pathlib.Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        mlflow.set_tracking_uri(uri)
        return mlflow, uri

    def on_job_end(self, config, job_return, **kwargs) -> None:
        try:
            self._log(config, job_return)
        except Exception as err:  # tracking is a record, never a reason to fail a run
            log.warning("MLflow: run not logged (%s: %s)", type(err).__name__, err)

    def _log(self, config, job_return) -> None:
        from omegaconf import OmegaConf

        from lab.sweep import flatten

        mlflow, uri = self._store()
        name = self.experiment or config.hydra.job.name
        exp = mlflow.get_experiment_by_name(name)
        if exp is None:
            where = None
            if uri.startswith("sqlite:///"):
                where = pathlib.Path(uri.removeprefix("sqlite:///")).parent.joinpath("mlartifacts", name).as_uri()
            mlflow.create_experiment(name, artifact_location=where)
        mlflow.set_experiment(name)
        out = pathlib.Path(config.hydra.runtime.output_dir)
        task = OmegaConf.to_container(config, resolve=True)
        task.pop("hydra", None)
        params = {k: str(v)[:500] for k, v in flatten(task).items()}
        summary = {}
        if (out / "summary.json").exists():
            summary = json.loads((out / "summary.json").read_text())
        metrics = {k: float(v) for k, v in flatten(summary).items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and abs(float(v)) < float("inf")}
        status = getattr(job_return.status, "name", str(job_return.status)).lower()
        with mlflow.start_run(run_name=out.name):
            for i in range(0, len(params), 100):
                mlflow.log_params(dict(list(params.items())[i:i + 100]))
            for i in range(0, len(metrics), 500):
                mlflow.log_metrics(dict(list(metrics.items())[i:i + 500]))
            mlflow.set_tags({"status": status, "run_dir": str(out), "experiment": config.hydra.job.name})
            if self.artifacts:
                for f in sorted(out.iterdir()):
                    if f.is_file() and not f.name.startswith("."):
                        mlflow.log_artifact(str(f))
        log.info("MLflow: logged %s to %s (experiment %s)", out.name, uri, name)
