"""Determinism soak: the kernels that carry the project's results, run repeatedly in one process
in varied order, and in fresh processes; every run of a kernel must hash identically.

A fast version runs in the test suite (tests/test_determinism.py); the long version is this
script: ``python tests/soak.py --rounds 20 --processes 3`` prints each kernel's hash and exits 1
on any difference. Written for the defect of docs/DESIGN.md, "Pytrees" (jit running another
class's executable), which made results depend on what else ran before in the process.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import subprocess
import sys

import numpy as np


def _digest(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(np.asarray(a))
        h.update(str(a.dtype).encode() + str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def _sim_digest(res) -> str:
    return _digest(*res.stats, *(res.extras[k] for k in sorted(res.extras)))


def kernels() -> dict:
    """name -> zero-argument function returning a hash of that kernel's outputs (small sizes)."""
    from sim import dispersion, engine, hedge, kelly, processes, regime, surface
    from sim.market import Basket, Market

    kw = dict(seed=7, n_paths=1024, n_steps=120, block_size=512)
    out = {}
    for proc in (processes.StudentT(0.08, 0.2, 3.0), processes.Merton(), processes.GarchT(),
                 processes.RegimeSwitching(), processes.Gaussian(0.05, 0.2)):
        out[f"engine/{type(proc).__name__}"] = (
            lambda p=proc: _sim_digest(engine.simulate(p, policy=engine.ConstantMix(1.5, 0.0, 0.1), **kw)))

    def surf():
        nus = np.array([3.0, 5.0])
        base = processes.StudentT(0.08, 0.2, 3.0)
        fr = np.outer(np.ones(2), np.array([0.5, 1.0, 2.0]) * kelly.reference_kelly(base))
        res = surface.ruin_surface(surface.batch_process(base, "nu", nus, dt=1 / 252), fr, axis="nu", values=nus,
                                   n_bins=64, **kw)
        return _digest(*(np.asarray(v) for v in res.table().to_numpy().T))

    out["surface/StudentT"] = surf
    for proc in (processes.Merton(), processes.GarchT()):
        out[f"kelly_grid/{type(proc).__name__}"] = (lambda p=proc: _digest(
            kelly.GrowthObjective(p, seed=3, n_paths=1024, n_steps=120, block_size=512).values([0.0, 0.5, 1.0, 2.0])))
    policies = {"hold": hedge.Hold(), "profit_take": hedge.ProfitTake(1.5, 0.5), "price_level": hedge.PriceLevel(0.05, 0.5),
                "regime_oracle": hedge.RegimeOracle()}
    for name, mon in policies.items():
        for proc in (processes.GarchT(), processes.RegimeSwitching()):
            ov = hedge.HedgeOverlay(program=hedge.HedgeProgram.from_years(budget=0.03, strike=0.9), monetize=mon)
            if name == "regime_oracle" and not isinstance(proc, processes.RegimeSwitching):
                continue
            out[f"hedge/{name}/{type(proc).__name__}"] = (
                lambda p=proc, o=ov: _sim_digest(engine.simulate(p, policy=o, **kw)))

    def crash():
        m = Market(base=processes.RegimeSwitching(), n_stocks=4)
        ov = hedge.HedgeOverlay(program=hedge.HedgeProgram.from_years(budget=0.03, strike=0.9),
                                monetize=regime.CrashProtocol(protocol=regime.Protocol(crash_drawdown=0.06)))
        return _sim_digest(engine.simulate(m, policy=ov, **kw))

    out["crash_protocol/Market"] = crash

    def disp():
        basket = Basket(vols=(0.2, 0.3, 0.25, 0.4), shares=(3.0, 1.0, 2.0, 5.0), prices0=(50.0, 120.0, 80.0, 20.0),
                        rho=0.3, nu=5.0)
        trade = dispersion.DispersionTrade(rho_implied=0.45, tenor=0.25)
        return _sim_digest(engine.simulate(basket, policy=trade, seed=5, n_paths=512, n_steps=63, block_size=256))

    out["dispersion/Basket"] = disp
    return out


def run_rounds(rounds: int, order_seed: int = 0, names=None) -> dict[str, set]:
    """Run every kernel ``rounds`` times in one process, shuffled per round; name -> set of hashes."""
    ks = kernels()
    names = sorted(ks) if names is None else list(names)
    seen = {n: set() for n in names}
    rng = random.Random(order_seed)
    for _ in range(rounds):
        order = names[:]
        rng.shuffle(order)
        for n in order:
            seen[n].add(ks[n]())
    return seen


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5, help="rounds in each process (each in a shuffled order)")
    ap.add_argument("--processes", type=int, default=2, help="fresh processes, each with another order")
    ap.add_argument("--order-seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print {name: [hashes]} and exit (one process)")
    ap.add_argument("--only", nargs="*", default=None, help="kernel names (default: all)")
    a = ap.parse_args(argv)
    if a.json:
        print(json.dumps({k: sorted(v) for k, v in run_rounds(a.rounds, a.order_seed, a.only).items()}))
        return 0
    runs = []
    for i in range(a.processes):
        cmd = [sys.executable, __file__, "--json", "--rounds", str(a.rounds), "--order-seed", str(a.order_seed + i)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    bad = 0
    for name in sorted(runs[0]):
        hashes = set().union(*(r[name] for r in runs))
        status = "ok" if len(hashes) == 1 else "DIFFERS"
        bad += len(hashes) != 1
        print(f"{name:36s} {status:8s} {' '.join(sorted(hashes))}")
    print(f"{len(runs[0])} kernels x {a.rounds} rounds x {a.processes} processes: "
          f"{'all hashes equal' if not bad else f'{bad} kernels differ'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
