"""NUTS on the shipped S&P 500 daily returns (1990-2022, 8,312 days): Student-t and GARCH(1,1)-t,
4 chains, NumPyro, on the 2-core CPU.

    python bench/posterior.py
    python bench/posterior.py --models student_t --warmup 500 --samples 500

Prints one JSON line: per model the wall seconds (MLE start and compilation included: the
user's wait), the sampler's own seconds, the largest rank-normalized split R-hat, the smallest
bulk ESS, divergences, and the largest |posterior mean - MLE| in posterior SDs. The goal: R-hat
< 1.01 and bulk ESS > 400 for every parameter, each model under 120 s.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", default=["student_t", "garch_t"])
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--samples", type=int, default=300)
    args = ap.parse_args()
    from sim import posterior
    from sim.data import load_sp500_index, simple_returns

    r = simple_returns(load_sp500_index()).to_numpy()
    out = {"n_obs": int(r.size)}
    for m in args.models:
        t0 = time.perf_counter()
        post = posterior.nuts(r, m, num_warmup=args.warmup, num_samples=args.samples)
        wall = time.perf_counter() - t0
        gap = max(abs(x.mean() - post.mle.params[k]) / x.std() for k, x in post.draws.items())
        out[m] = dict(wall_s=round(wall, 1), sampler_s=round(post.seconds, 1), max_r_hat=round(max(post.r_hat.values()), 4),
                      min_ess_bulk=round(min(post.ess_bulk.values())), divergences=post.divergences,
                      max_mean_minus_mle_in_sd=round(gap, 3), status=post.status,
                      goal_met=bool(post.converged and wall < 120))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
