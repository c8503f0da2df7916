"""Constrained Kelly benchmark: long-only, budget 1, on shipped stocks (2018-2022 fitted mean
and covariance), 4,096 paths x 252 steps.

    python bench/kelly.py              # 20 assets
    python bench/kelly.py --assets 5

Prints one JSON line: ``project_seconds`` (``sim.kelly.optimize`` with its weight-space
active-set Newton, compilation included: the user's wall time), ``scipy_seconds`` (SLSQP on the
same draws materialized in float64, sampling included: the baseline), their ratio, the largest
weight difference and the growth difference. The acceptance figure is 20 assets in under 20 s.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--assets", type=int, default=20)
    ap.add_argument("--paths", type=int, default=4096)
    args = ap.parse_args()
    from sim.parallel import use_cpu_cores

    use_cpu_cores()
    from scipy.optimize import minimize

    from sim import data, engine, kelly
    from sim.processes import MultiAsset

    px = data.load_sp500_constituents().loc["2018":"2022"]
    r = data.simple_returns(px).iloc[:, : args.assets].to_numpy()
    mu, cov = r.mean(0) * 252, np.cov(r, rowvar=False) * 252
    sd = np.sqrt(np.diag(cov))
    proc = MultiAsset(mu=mu, sigma=sd, corr=cov / np.outer(sd, sd))
    n, d = args.paths, args.assets
    t0 = time.perf_counter()
    obj = kelly.GrowthObjective(proc, seed=0, n_paths=n, n_steps=252, block_size=min(n, 4096))
    res = kelly.optimize(obj, long_only=True, budget=1.0)
    project = time.perf_counter() - t0

    t0 = time.perf_counter()
    R = np.asarray(engine.sample_returns(proc, seed=0, n_paths=n, n_steps=252, block_size=min(n, 4096)), float)

    def neg(f):
        return -np.log1p(R @ f).sum(axis=1).mean()

    def jac(f):
        return -(R / (1 + R @ f)[..., None]).sum(axis=1).mean(axis=0)

    sp = minimize(neg, np.full(d, 1 / (d + 1)), jac=jac, bounds=[(0, None)] * d, method="SLSQP",
                  constraints=[{"type": "ineq", "fun": lambda f: 1 - f.sum(), "jac": lambda f: -np.ones(d)}],
                  options=dict(ftol=1e-15, maxiter=1000))
    scipy_s = time.perf_counter() - t0
    print(json.dumps({
        "benchmark": "kelly_constrained", "assets": d, "paths": n, "steps": 252,
        "project_seconds": round(project, 2), "project_iterations": res.iterations, "converged": res.converged,
        "scipy_seconds": round(scipy_s, 2), "ratio_project_vs_scipy": round(project / scipy_s, 3),
        "max_weight_difference": float(np.abs(res.full_fraction - sp.x).max()),
        "growth_difference": float(-sp.fun + neg(res.full_fraction)),
        "held": int((res.full_fraction > 0).sum()),
    }))


if __name__ == "__main__":
    main()
