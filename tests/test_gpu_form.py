"""The GPU's execution form run on the CPU (``FTL_EXECUTION=gpu``: blocks stepped together under
``vmap``, large chunks, no CPU workarounds) against the CPU path: the same random words bit for
bit, the same integer outcomes, floating-point results within a stated bound. So a GPU run is
not the first time that code executes (sim/backend.py)."""

import os
import subprocess
import sys

import numpy as np

from tests.conftest import ROOT

BOUND = 1e-5  # float32 results: |difference| <= BOUND x max(1, |value|) (a sum's order, a contracted multiply-add)


def compute() -> dict:
    import jax

    from sim import engine, hedge, kelly, samplers, surface
    from sim.processes import GarchT, StudentT

    out = {}
    w0, w1 = jax.jit(lambda k: samplers.hash_words(k, 1 << 12))(jax.random.key(11))
    out["words"] = np.stack([np.asarray(w0), np.asarray(w1)])
    res = engine.simulate(StudentT(0.08, 0.2, 3.5), policy=engine.ConstantMix(1.5, 0.0, 0.1), seed=3, n_paths=4096,
                          n_steps=126, block_size=1024)
    out.update(t_log_wealth=res.stats.log_wealth, t_ruin_step=res.stats.ruin_step,
               t_draws=np.asarray(engine.sample_returns(StudentT(0.08, 0.2, 3.5), seed=3, n_paths=64, n_steps=32,
                                                        block_size=64)))
    ov = hedge.HedgeOverlay(program=hedge.HedgeProgram.from_years(budget=0.03, strike=0.9),
                            monetize=hedge.ProfitTake(1.5, 0.5))
    res = engine.simulate(GarchT(), policy=ov, seed=5, n_paths=2048, n_steps=126, block_size=512)
    out.update(h_log_wealth=res.stats.log_wealth, h_sales=res.extras["sales"], h_premium=res.extras["premium"])
    base = StudentT(0.08, 0.2, 3.0)
    nus = np.array([3.0, 6.0])
    fr = np.outer(np.ones(2), np.array([0.5, 1.0, 2.0]) * kelly.reference_kelly(base))
    s = surface.ruin_surface(surface.batch_process(base, "nu", nus, dt=1 / 252), fr, axis="nu", values=nus, seed=2,
                             n_paths=2048, n_steps=126, block_size=512, n_bins=64, progress=lambda i: None)
    out.update(s_ruin=s.ruin_probability, s_drawdown=s.p_drawdown, s_mean_growth=s.mean_growth)
    return out


def test_the_gpu_form_on_the_cpu_agrees_with_the_cpu_path(tmp_path):
    """The GPU form as it runs by default, and with its alternatives (JAX's threefry primitive
    for the words, the time loop unrolled 4 steps per iteration), against the CPU path."""
    from sim import backend

    assert not backend.gpu_form() and not backend.vectorize_blocks("cpu")
    assert backend.word_generator() == "unrolled" and backend.scan_unroll() == 1
    here = compute()
    script = (f"import numpy as np\nfrom sim import backend\nassert backend.gpu_form() and backend.vectorize_blocks('cpu')\n"
              f"assert backend.target_chunk_paths() == 1 << 20\n"
              f"from tests.test_gpu_form import compute\nnp.savez({str(tmp_path / 'gpu.npz')!r}, **compute())\n"
              f"with backend.choices(words='primitive', unroll=4):\n"
              f"    assert backend.word_generator() == 'primitive' and backend.scan_unroll() == 4\n"
              f"    np.savez({str(tmp_path / 'alt.npz')!r}, **compute())\n")
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, FTL_EXECUTION="gpu", JAX_PLATFORMS="cpu"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    for form in ("gpu", "alt"):
        there = dict(np.load(tmp_path / f"{form}.npz"))
        np.testing.assert_array_equal(there["words"], here["words"])  # the random words: the same integers
        for k in ("t_ruin_step", "h_sales", "s_ruin", "s_drawdown"):  # integer outcomes and counts
            np.testing.assert_array_equal(there[k], here[k], err_msg=f"{form}: {k}")
        for k in ("t_draws", "t_log_wealth", "h_log_wealth", "h_premium", "s_mean_growth"):
            a, b = there[k].astype(np.float64), here[k].astype(np.float64)
            with np.errstate(invalid="ignore"):  # inf - inf where both wiped out: masked by the isfinite check
                gap = np.where(np.isfinite(b), np.abs(a - b) / np.maximum(np.abs(b), 1.0), 0.0)
            assert np.all(np.isfinite(a) == np.isfinite(b)) and np.nanmax(gap) <= BOUND, (form, k, float(np.nanmax(gap)))


def test_backend_choices_name_what_is_allowed(monkeypatch):
    import pytest

    from sim import backend

    monkeypatch.setenv("FTL_WORDS", "philox")
    with pytest.raises(ValueError, match="FTL_WORDS='philox': allowed unrolled, primitive"):
        backend.word_generator()
    monkeypatch.setenv("FTL_SCAN_UNROLL", "0")
    with pytest.raises(ValueError, match=r"FTL_SCAN_UNROLL='0': allowed an integer in 1\.\.64"):
        backend.scan_unroll()
    monkeypatch.delenv("FTL_WORDS")
    monkeypatch.delenv("FTL_SCAN_UNROLL")
    with pytest.raises(ValueError, match="FTL_SCAN_UNROLL"):
        with backend.choices(unroll=100):
            pass
    assert backend.scan_unroll() == 1  # the failed choice left nothing behind
