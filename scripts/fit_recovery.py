"""Parameter recovery of every likelihood in sim.fit: for each return model at its default
parameters, fit ``--series`` simulated series of ``--years`` of daily returns and print, per
parameter, the mean estimate against the truth (in standard errors over the series) and the
coverage of the 95% intervals: Wald (``coverage``) and profile likelihood (``coverage_lr``,
one more fit per series and parameter; ``--no-lr`` skips it). Writes the table as CSV when
``--out`` is given.

    python scripts/fit_recovery.py                      # 50 series x 10 years, every model
    python scripts/fit_recovery.py --models merton --series 20
    python scripts/fit_recovery.py --models merton --set lam=20 jump_mean=-0.02 jump_std=0.03
    python scripts/fit_recovery.py --models merton --no-lr --bootstrap 100 --bootstrap-parameters jump_std

``--bootstrap B`` adds ``coverage_lr_boot``: the profile-likelihood interval against each
series' own parametric-bootstrap threshold (``sim.fit.bootstrap_threshold``, B replicates of
two fits each: with ``--bootstrap-starts world``, 50 series x 100 replicates took 17 min for
Merton on one core; with the default ``all`` about 18 times that).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
    import pandas as pd

    from sim import fit, processes

    defaults = {"gaussian": processes.Gaussian(), "student_t": processes.StudentT(), "garch_t": processes.GarchT(),
                "merton": processes.Merton(), "regime_switching": processes.RegimeSwitching()}
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", default=list(defaults), choices=list(defaults))
    ap.add_argument("--series", type=int, default=50)
    ap.add_argument("--years", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    ap.add_argument("--no-lr", action="store_true", help="Wald intervals only (no profile-likelihood fits)")
    ap.add_argument("--bootstrap", type=int, default=0, help="replicates of the bootstrap-calibrated LR interval")
    ap.add_argument("--bootstrap-parameters", nargs="*", default=None, help="the parameters to calibrate (default: all)")
    ap.add_argument("--bootstrap-at", default="truth", choices=["truth", "estimate"],
                    help="draw the bootstrap from the fit held at the truth (a test of it) or from the free fit")
    ap.add_argument("--bootstrap-sequential", action="store_true",
                    help="only whether each series is covered (sim.fit.bootstrap_covers: stops early), no thresholds")
    ap.add_argument("--bootstrap-starts", default="all", choices=["all", "world"],
                    help="the bootstrap fits' starts (sim.fit.bootstrap_threshold): all, or the world's point only")
    ap.add_argument("--set", nargs="*", default=[], help="parameter=value of the simulated truth (one model)")
    args = ap.parse_args()
    if args.set:
        import dataclasses

        given = {k: float(v) for k, v in (kv.split("=") for kv in args.set)}
        defaults = {m: dataclasses.replace(p, **given) for m, p in defaults.items() if m in args.models}
    tables = []
    for m in args.models:
        t0 = time.perf_counter()
        table = fit.recovery(defaults[m], n_series=args.series, years=args.years, seed=args.seed,
                             likelihood_ratio=not args.no_lr, bootstrap=args.bootstrap,
                             bootstrap_parameters=args.bootstrap_parameters,
                             bootstrap_at=args.bootstrap_at, bootstrap_starts=args.bootstrap_starts,
                             bootstrap_sequential=args.bootstrap_sequential,
                             progress=lambda i, n: print(f"  bootstrap: series {i}/{n} "
                                                         f"({time.perf_counter() - t0:.0f} s)", flush=True))
        table["seconds"] = time.perf_counter() - t0
        tables.append(table)
        print(f"{m}: {defaults[m]}")
        print(table.drop(columns=["model", "n_series", "years"]).to_string(index=False, float_format="%.4g"),
              f"\n[{m}: {time.perf_counter() - t0:.1f} s]\n", flush=True)
    if args.out:
        pd.concat(tables).to_csv(args.out, index=False)


if __name__ == "__main__":
    main()
