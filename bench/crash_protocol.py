"""Crash-protocol benchmark: the Monte Carlo evaluation at 1e5 paths x 10 years daily.

    python bench/crash_protocol.py           # 100,000 paths x 2520 steps, timed end to end
    python bench/crash_protocol.py --quick   # 16,384 paths x 504 steps (a smoke test)

Runs what ``experiments/crash_protocol.py`` runs per policy: the regime-switching model in
``sim.market.Market`` (10 constituents, spread), the hedge overlay (three put tranches), and
the three-step protocol (``sim.regime.CrashProtocol``: the four-signal detector, the state
machine, the lead/lag and false-alarm diagnostics) on every path. Also, on the same sizes,
the plain engine (constant mix on the same model) and the overlay with hold-to-expiry, for
ratios in the same run. Prints one JSON line: ``protocol_seconds`` (wall time of the full
run, compilation included: the acceptance figure, < 120 s on the 2-core CPU),
``protocol_seconds_compiled`` (a second run with the same shapes), path-steps/s of each
variant, and the ratios; ``ratio_separate_vs_paired``: hold and the protocol run one after the
other against both in one pass on the same draws (``engine.simulate_policies``, the experiment's form). Like the experiments, it gives JAX one CPU device per core
(``sim.parallel.use_cpu_cores``; ``--devices 1`` for JAX's default single device).
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
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--chunk-paths", type=int, default=None, help="paths per compiled call (default: the engine's)")
    ap.add_argument("--devices", type=int, default=None,
                    help="XLA CPU devices (default: one per core, as the experiments use; ignored on a GPU)")
    args = ap.parse_args()

    import jax

    from sim.parallel import use_cpu_cores

    use_cpu_cores(args.devices)

    from sim import engine, hedge, processes, regime
    from sim.market import Market

    n_paths, n_steps = (16_384, 504) if args.quick else (100_000, 2520)
    block = 16_384
    base = processes.RegimeSwitching()
    market = Market(base=base, n_stocks=10)
    program = hedge.HedgeProgram.from_years(budget=0.02, strike=0.85, tenor_years=0.25, roll_years=1 / 12)
    protocol = hedge.HedgeOverlay(program=program, monetize=regime.CrashProtocol(diagnostics=True))
    kw = dict(n_paths=n_paths, n_steps=n_steps, block_size=block, chunk_paths=args.chunk_paths, progress=lambda info: None)

    def timed(process, policy, seed):
        t0 = time.perf_counter()
        res = engine.simulate(process, policy=policy, seed=seed, **kw)
        return time.perf_counter() - t0, res

    out = {"n_paths": n_paths, "n_steps": n_steps, "n_stocks": market.n_stocks, "tranches": program.n_tranches}
    first, res = timed(market, protocol, 0)  # compile + run: what a user waits for
    again, _ = timed(market, protocol, 1)
    out["protocol_seconds"] = first
    out["protocol_seconds_compiled"] = again
    out["episodes_followed"] = float(res.extras["episodes"].sum())
    rates = {"protocol": n_paths * n_steps / again}
    for name, (process, policy) in {"plain": (base, engine.ConstantMix(1.0)),
                                    "hold": (market, hedge.HedgeOverlay(program=program))}.items():
        timed(process, policy, 0)
        rates[name] = n_paths * n_steps / timed(process, policy, 1)[0]
    # The experiment's form: hold and the protocol on the same draws in one pass (simulate_policies,
    # the market simulated once) against the two runs one after the other (both compiled).
    pair = {"hold": hedge.HedgeOverlay(program=program), "protocol": protocol}
    engine.simulate_policies(market, pair, seed=0, **kw)
    t0 = time.perf_counter()
    engine.simulate_policies(market, pair, seed=1, **kw)
    paired = time.perf_counter() - t0
    out["paired_hold_and_protocol_seconds_compiled"] = paired
    out["ratio_separate_vs_paired"] = n_paths * n_steps * (1 / rates["hold"] + 1 / rates["protocol"]) / paired
    out["path_steps_per_s"] = rates
    out["ratio_protocol_vs_plain"] = rates["protocol"] / rates["plain"]
    out["ratio_protocol_vs_hold"] = rates["protocol"] / rates["hold"]
    out.update(backend=jax.default_backend(), devices=jax.device_count())
    print(json.dumps(out))


if __name__ == "__main__":
    main()
