"""The run machinery every experiment shares, kept out of the entry points so that each of them
reads: build from config -> run -> write tables -> plot.

* ``harness``: the Hydra entry (config and unknown-key checks, one-line errors with the
  traceback in the log, run-directory claims, resumable runs, the compilation cache, one JAX
  device per core, ``jax.distributed``) and the builders from config groups;
* ``sweep``: a sweep's points validated before any runs, its one table of all points;
* ``report``: the offline report.html of a run or a sweep;
* ``callbacks``: Hydra callbacks (sweep progress, MLflow tracking);
* ``reproduce``: rerun a saved run and compare every number.

``sim/`` stays pure JAX (no Hydra, no run directories); ``experiments/`` holds one entry point
per experiment and the two tools' commands (``python -m experiments.report``,
``python -m experiments.reproduce``)."""
