"""``python -m experiments``: the experiments, one line each, and how to run them."""

import importlib
import sys

EXPERIMENTS = ("ruin_surface", "time_vs_ensemble", "kelly", "posterior_kelly", "hedge_overlay", "crash_protocol", "dispersion")
TOOLS = {"report": "python -m experiments.report RUN_OR_SWEEP_DIR   an offline report.html of a run or a sweep",
         "reproduce": "python -m experiments.reproduce RUN_DIR        rerun a saved run and compare every number"}


def main() -> int:
    print("Experiments (each writes its tables, plots and summary.json under outputs/):\n")
    for name in EXPERIMENTS:
        doc = (importlib.import_module(f"experiments.{name}").__doc__ or "").strip().splitlines()[0]
        print(f"  {name:<17} {doc}")
    print("\nRun one:      python -m experiments.NAME [key=value ...]     (e.g. surface.n_paths=100000)")
    print("Sweep:        python -m experiments.NAME -m name=my_sweep process=student_t,garch_t surface.years=1,10")
    print("See a config: python -m experiments.NAME --cfg job\n")
    print("Tools:")
    for line in TOOLS.values():
        print(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
