"""Invariance tier: chunking, devices; and the engine against an independent numpy loop."""

import json
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from sim.engine import ConstantMix, sample_returns, simulate
from sim.processes import Binary, GarchT, RegimeSwitching, StudentT
from sim.stats import NEVER

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def assert_same(a, b):
    for x, y in zip(a.stats, b.stats):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(a.snapshots, b.snapshots)
    np.testing.assert_array_equal(a.recorded, b.recorded)


@pytest.mark.parametrize("process", [StudentT(0.05, 0.3, 3.0), GarchT(), RegimeSwitching()])
def test_bit_identical_across_chunk_sizes(process):
    kw = dict(seed=3, n_paths=5000, n_steps=64, block_size=1024, snapshot_every=16, record_paths=4,
              policy=ConstantMix(fraction=1.5, risk_free=0.02))
    a = simulate(process, chunk_paths=1024, **kw)
    b = simulate(process, chunk_paths=3000, **kw)
    assert_same(a, b)


def test_bit_identical_on_one_and_two_devices():
    script = textwrap.dedent("""
        import json, jax, numpy as np
        from sim.engine import simulate, ConstantMix
        from sim.processes import StudentT
        assert jax.device_count() == 2, jax.devices()
        kw = dict(seed=9, n_paths=9000, n_steps=50, block_size=1024, snapshot_every=10,
                  policy=ConstantMix(fraction=2.0))
        one = simulate(StudentT(0.05, 0.3, 3.0), devices=jax.devices()[:1], **kw)
        two = simulate(StudentT(0.05, 0.3, 3.0), devices=jax.devices(), **kw)
        same = all(np.array_equal(a, b) for a, b in zip(one.stats, two.stats))
        same &= np.array_equal(one.snapshots, two.snapshots)
        print(json.dumps({"same": bool(same), "mean": float(one.stats.log_wealth.mean())}))
    """)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["same"]
    # And the single-device run of this process agrees with the 2-device one.
    here = simulate(StudentT(0.05, 0.3, 3.0), seed=9, n_paths=9000, n_steps=50, block_size=1024,
                    snapshot_every=10, policy=ConstantMix(fraction=2.0))
    assert float(here.stats.log_wealth.mean()) == result["mean"]


def numpy_path_stats(r, f, rf_annual, floor, steps_per_year):
    """Independent numpy reference: wealth by cumulative product, absorbing ruin."""
    x = f * r.astype(np.float64) + (1 - f) * rf_annual / steps_per_year
    n, steps = x.shape
    gross = 1 + x
    wiped = gross <= 0
    logw = np.cumsum(np.log(np.where(wiped, 1.0, gross)), axis=1)
    below = (logw < math.log(floor)) if floor > 0 else np.zeros_like(wiped)
    ruined = wiped | below
    first = np.where(ruined.any(axis=1), ruined.argmax(axis=1) + 1, NEVER)
    final = logw[:, -1].copy()
    alive_idx = first == NEVER
    frozen = ~alive_idx
    final[frozen] = logw[frozen, first[frozen] - 1]
    final[frozen & wiped[np.arange(n), np.maximum(first - 1, 0)]] = -np.inf
    path = np.concatenate([np.zeros((n, 1)), logw], axis=1)
    mask = np.arange(steps + 1)[None, :] >= np.where(alive_idx, steps + 1, first)[:, None]
    path = np.where(mask, final[:, None], path)
    peak = np.maximum.accumulate(path, axis=1)
    mdd = np.max(peak - path, axis=1)
    return final, first, mdd


@pytest.mark.parametrize("f,floor", [(1.0, 0.0), (3.0, 0.0), (2.0, 0.6)])
def test_engine_matches_numpy_on_the_same_draws(f, floor):
    p = StudentT(mu=0.1, sigma=0.5, nu=2.5)
    kw = dict(seed=11, n_paths=3000, n_steps=100, steps_per_year=52, block_size=1024)
    r = sample_returns(p, **kw)
    res = simulate(p, policy=ConstantMix(fraction=f, risk_free=0.03, floor=floor), **kw)
    final, first, mdd = numpy_path_stats(r, f, 0.03, floor, 52)
    np.testing.assert_array_equal(res.stats.ruin_step, first)
    fin = np.isfinite(final)
    np.testing.assert_array_equal(np.isfinite(res.stats.log_wealth), fin)
    np.testing.assert_allclose(res.stats.log_wealth[fin], final[fin], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(-np.expm1(-res.stats.max_drawdown_log), -np.expm1(-mdd), rtol=1e-4, atol=1e-5)
    if f == 3.0:
        assert (first != NEVER).sum() > 0  # the case exercises wipe-outs


def test_wipe_out_is_absorbing_and_survival_is_exact():
    # Win +100% or lose everything: survival to n rounds is p^n exactly.
    p, n = 0.8, 10
    res = simulate(Binary(p=p, up=1.0, down=-1.0), seed=4, n_paths=200000, n_steps=n, steps_per_year=1)
    alive = res.stats.ruin_step == NEVER
    assert abs(alive.mean() - p**n) < 3 * math.sqrt(p**n * (1 - p**n) / alive.size)
    assert np.all(np.isneginf(res.stats.log_wealth[~alive]))
    np.testing.assert_allclose(res.stats.log_wealth[alive], n * math.log(2.0), rtol=1e-6)
    # The ruin step is geometric: P(ruin at step k) = p^(k-1) (1 - p).
    k = res.stats.ruin_step[~alive]
    assert abs((k == 1).mean() - (1 - p) / (1 - p**n)) < 0.01


def test_recorded_paths_and_snapshots_agree_with_final_stats():
    res = simulate(StudentT(), seed=2, n_paths=3000, n_steps=60, snapshot_every=20, record_paths=5, block_size=1024)
    np.testing.assert_array_equal(res.snapshots[-1], res.stats.log_wealth)
    np.testing.assert_array_equal(res.recorded[-1], res.stats.log_wealth[:5])
    np.testing.assert_array_equal(res.recorded[20], res.snapshots[0][:5])
    assert np.all(res.recorded[0] == 0)


def test_simulate_fractions_equals_one_run_per_fraction():
    """Several constant mixes in one pass over the same draws give, bit for bit, what one run
    per fraction gives (the process is simulated once; only the wealth arithmetic is batched)."""
    from sim.engine import simulate_fractions

    for process in (StudentT(mu=0.08, sigma=0.2, nu=3.5), GarchT(mu=0.08, sigma=0.18, alpha=0.08, beta=0.9, nu=5.0)):
        fractions = [0.3, 1.0, 2.5, -0.5, 0.0]
        many = simulate_fractions(process, fractions, seed=3, n_paths=1500, n_steps=200, risk_free=0.02, floor=0.1,
                                  block_size=512)
        assert len(many) == len(fractions)
        for f, res in zip(fractions, many):
            one = simulate(process, seed=3, n_paths=1500, n_steps=200, block_size=512,
                           policy=ConstantMix(f, 0.02, 0.1))
            for name, a, b in zip(one.stats._fields, res.stats, one.stats):
                assert a.shape == (1500,) and np.array_equal(a, b, equal_nan=True), (type(process).__name__, f, name)
        ruined = many[2].stats.ruin_step != -1  # 2.5x levered with a 10% floor: some paths ruined (NEVER = -1)
        assert ruined.any() and not ruined.all()


def test_simulate_each_gives_each_run_its_own_simulate_result_in_threads_or_not():
    """Runs at once in threads (the default on a one-process CPU run) or one after another:
    each result equals its own ``simulate`` call bit for bit; ``done`` comes in the order of the
    runs; a bad run is named before any run starts; a failing run's error is raised."""
    from sim.engine import simulate_each
    from sim.validation import ParameterError

    runs = {"t": (StudentT(0.05, 0.3, 3.0), ConstantMix(1.5, 0.02)), "g": (GarchT(), ConstantMix(0.5)),
            "r": (RegimeSwitching(), ConstantMix(1.0, floor=0.5))}
    kw = dict(seed=4, n_paths=700, n_steps=40, block_size=256, snapshot_every=10, record_paths=2)
    alone = {k: simulate(p, policy=pol, **kw) for k, (p, pol) in runs.items()}
    pair = {"a": ConstantMix(2.0), "b": ConstantMix(0.5, floor=0.2)}  # a run of several policies on the same draws
    alone["pair"] = {k: simulate(GarchT(), policy=pol, **kw) for k, pol in pair.items()}
    runs["pair"] = (GarchT(), pair)
    for threads in (None, 1, 3):
        order = []
        got = simulate_each(runs, threads=threads, done=lambda k, r: order.append(k), **kw)
        assert order == list(runs) and list(got) == list(runs)
        for k in runs:
            for name in pair if k == "pair" else [None]:
                assert_same(got[k][name] if name else got[k], alone[k][name] if name else alone[k])
    bad = dict(runs, x=(StudentT(0.05, 0.3, 3.0), ConstantMix(float("nan"))))
    with pytest.raises(ParameterError, match=r"^x: .*fraction"):
        simulate_each(bad, done=lambda k, r: pytest.fail("a run started before the check"), **kw)
    bad = dict(runs, pair=(GarchT(), dict(pair, c=ConstantMix(float("nan")))))
    with pytest.raises(ParameterError, match=r"^pair / c: .*fraction"):
        simulate_each(bad, done=lambda k, r: pytest.fail("a run started before the check"), **kw)
    with pytest.raises(ParameterError, match="threads"):
        simulate_each(runs, threads=0, **kw)


def test_concurrently_raises_the_first_error_and_starts_nothing_after_it():
    """Run 1 fails at once; runs 2 and up hold a thread until a timer releases them, long after
    the error is seen: the error is raised and the runs still queued then (4-7) never start."""
    import threading

    from sim.parallel import concurrently

    for threads in (1, 2):
        started, lock, release = [], threading.Lock(), threading.Event()

        def call(i):
            def run():
                with lock:
                    started.append(i)
                if i == 1:
                    raise RuntimeError("run 1 failed")
                if i >= 2:
                    release.wait(10)
                return i * i
            return run

        timer = threading.Timer(2.0, release.set)
        timer.start()
        with pytest.raises(RuntimeError, match="run 1 failed"):
            concurrently({i: call(i) for i in range(8)}, threads=threads)
        timer.cancel()
        release.set()
        # one thread: nothing after run 1; two: runs 2 and 3 may have been picked up before the error was seen
        assert (set(started) == {0, 1}) if threads == 1 else ({0, 1} <= set(started) <= {0, 1, 2, 3}), started
    assert concurrently({i: (lambda i=i: i * i) for i in (0, 2, 3)}, threads=2) == {0: 0, 2: 4, 3: 9}


def test_blocks_in_groups_only_where_exact_and_small():
    """One block a step where the block's program holds a conditional or a matrix product (their
    last bits moved under vmap), or where its largest array is already large; a divisor of the
    planned group otherwise."""
    import jax.numpy as jnp
    from jax import lax

    from sim import backend

    def traced(fn, *shape):
        return backend.trace_once(fn, jnp.zeros(shape, jnp.float32))[0]

    plain = traced(lambda x: jnp.exp(x) * 2.0 + 1.0, 1 << 14)
    assert backend.blocks_in_groups(plain, 4) == 4 and backend.blocks_in_groups(plain, 1) == 1
    assert backend.blocks_in_groups(traced(lambda x: jnp.exp(x), 1 << 15), 4) == 2
    assert backend.blocks_in_groups(traced(lambda x: jnp.exp(x), 21846), 4) == 2  # 3 would fit, 2 divides 4
    assert backend.blocks_in_groups(traced(lambda x: x * 2.0, 1 << 14, 16), 4) == 1
    assert backend.blocks_in_groups(traced(lambda x: lax.cond(x[0] > 0, jnp.sin, jnp.cos, x), 256), 4) == 1
    scan_cond = traced(lambda x: lax.scan(lambda c, _: (lax.cond(c[0] > 0, jnp.sin, jnp.cos, c), None), x, None,
                                          length=3)[0], 256)
    assert backend.blocks_in_groups(scan_cond, 4) == 1  # found inside the scan's body too
    assert backend.blocks_in_groups(traced(lambda x: x @ jnp.ones((4, 4)), 256, 4), 4) == 1


def test_cpu_cores_without_an_affinity_mask(monkeypatch):
    """macOS and Windows have no os.sched_getaffinity: import sim and the core count still work."""
    import os

    from sim import backend

    assert backend.cpu_cores() == len(os.sched_getaffinity(0))
    monkeypatch.delattr(os, "sched_getaffinity")
    assert backend.cpu_cores() == (os.cpu_count() or 1)
    assert backend.blocks_per_step("cpu", 1) == (1 if backend.cpu_cores() == 1 else min(16, 2 * backend.cpu_cores()))


def test_the_plan_groups_blocks_without_padding():
    """Each device steps the largest divisor of its block count up to the group asked, so a chunk
    never gains padded blocks from grouping (the chunk is what it was without it)."""
    from sim.engine import _plan

    for n_blocks, n_dev, asked, group, chunk in [(5, 1, 4, 1, 5), (6, 1, 4, 3, 6), (16, 1, 4, 4, 16),
                                                  (2, 1, 4, 2, 2), (6, 2, 4, 3, 6), (3, 2, 1, 1, 4)]:
        plan = _plan(n_blocks * 256, 256, None, n_dev, 1, 0, asked)
        assert (plan.group, plan.chunk_blocks) == (group, chunk), (n_blocks, n_dev, asked, plan)
        assert plan.chunk_blocks == _plan(n_blocks * 256, 256, None, n_dev, 1, 0, 1).chunk_blocks
