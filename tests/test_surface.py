"""Ruin surfaces: every grid point equals a plain engine simulation on the same draws; the
growth-optimal fraction agrees with the Kelly optimizer; bad input; the experiment and a
real Hydra multirun over two return models."""

import os

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from experiments.ruin_surface import run
from sim import engine, kelly, surface
from sim.processes import Binary, Gaussian, StudentT
from sim.validation import ParameterError
from tests.conftest import job_dir, run_multirun

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONF = os.path.join(ROOT, "conf")
TINY = ["surface.n_paths=512", "surface.years=1", "engine.block_size=256", "surface.values=[3.0,6.0]",
        "surface.multiples.num=5"]
FILES = ["surface.csv", "growth_optimal.csv", "summary.json", "ruin_probability.png", "p_drawdown.png",
         "median_growth.png"]


def test_surface_points_equal_engine_simulations():
    nus, cs = np.array([3.0, 5.0]), np.array([0.5, 1.0, 2.0])
    base = StudentT(0.08, 0.2, 3.0)
    fractions = np.outer(np.ones(2), cs * kelly.reference_kelly(base))
    res = surface.ruin_surface(surface.batch_process(base, "nu", nus, dt=1 / 252), fractions, axis="nu", values=nus,
                               seed=3, n_paths=2048, n_steps=504, block_size=1024, floor=0.5)
    for i, nu in enumerate(nus):
        for j in range(len(cs)):
            sim = engine.simulate(StudentT(0.08, 0.2, nu), seed=3, n_paths=2048, n_steps=504, block_size=1024,
                                  policy=engine.ConstantMix(fractions[i, j], 0.0, 0.5))
            s = sim.summary()
            assert res.ruin_probability[i, j] == s["ruin_probability"]
            assert res.p_drawdown[i, j] == s["p_max_drawdown_gt_50"]
            assert abs(res.median_growth[i, j] - s["time_avg_growth_median"]) <= res.bin_width
            q05 = np.quantile(sim.stats.log_wealth / sim.years, 0.05)
            assert abs(res.growth_q05[i, j] - q05) <= 2 * res.bin_width


def test_surface_growth_optimum_agrees_with_kelly_optimizer():
    sigmas = np.array([0.2, 0.3])
    base = Gaussian(0.06, 0.2)
    cs = np.linspace(0.6, 1.4, 17)
    fractions = np.outer([kelly.gaussian_kelly(0.06, s) for s in sigmas], cs)
    res = surface.ruin_surface(surface.batch_process(base, "sigma", sigmas, dt=1 / 252), fractions, axis="sigma",
                               values=sigmas, seed=1, n_paths=4096, n_steps=252, block_size=4096, floor=0.5)
    for i, s in enumerate(sigmas):
        opt = kelly.optimize(kelly.GrowthObjective(Gaussian(0.06, s), seed=1, n_paths=4096, n_steps=252,
                                                   block_size=4096))
        step = fractions[i, 1] - fractions[i, 0]
        # The parabola through three grid points of a near-quadratic g: well within a grid step.
        assert abs(res.growth_optimal()[i] - opt.full_fraction) < 0.05 * step, (res.growth_optimal()[i], opt.full_fraction)


def test_bad_surface_input():
    base = StudentT()
    procs = surface.batch_process(base, "nu", [3.0, 4.0], dt=1 / 252)
    with pytest.raises(ParameterError, match="floor"):
        surface.ruin_surface(procs, np.ones((2, 3)), axis="nu", values=[3.0, 4.0], n_paths=8, n_steps=2, floor=1.5)
    with pytest.raises(ParameterError, match="floor"):
        surface.ruin_surface(procs, np.ones((2, 3)), axis="nu", values=[3.0, 4.0], n_paths=8, n_steps=2, floor=0.0)
    with pytest.raises(ParameterError, match="StudentT.nu = 1.5"):
        surface.batch_process(base, "nu", [3.0, 1.5], dt=1 / 252)
    with pytest.raises(ParameterError, match="not a parameter of StudentT"):
        surface.batch_process(base, "lam", [3.0], dt=1 / 252)


def _cfg(overrides):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose("ruin_surface", overrides=overrides)


def test_experiment_rejects_bad_config_before_work(tmp_path):
    for bad, msg in (("surface.multiples.start=0.0", "Kelly multiple c"), ("surface.floor=1.0", "surface.floor"),
                     ("surface.values=[3.0,2.0]", "StudentT.nu = 2")):
        with pytest.raises(ParameterError, match=msg):
            run(_cfg([*TINY, bad]), tmp_path / "bad")
        assert not (tmp_path / "bad").exists()


def test_second_config_jump_intensity(tmp_path):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("ruin_surface_jumps", overrides=[*TINY[:3], "surface.values=[0.0,2.0]", "surface.multiples.num=4"])
    summary = run(cfg, tmp_path)
    assert summary["process"] == "Merton" and summary["axis"] == "lam"
    for f in FILES:
        assert (tmp_path / f).stat().st_size > 0


def test_real_multirun_over_two_return_models(tmp_path):
    tables = [f for f in FILES if not f.endswith(".png")]  # the figures: test_second_config_jump_intensity
    summaries = run_multirun("experiments.ruin_surface", ["process=student_t,garch_t", *TINY, "plots=false"], tmp_path,
                             tables)
    assert [s["process"] for s in summaries] == ["StudentT", "GarchT"]
    for job, summary in enumerate(summaries):
        assert summary["n_paths_per_point"] == 512
        rows = (job_dir(tmp_path, job) / "surface.csv").read_text().strip().splitlines()
        assert len(rows) == 1 + 2 * 5


def test_surface_counts_exactly_the_paths_asked_for():
    """1,500 paths in blocks of 1,024: the surface counts 1,500 (not 2,048), the same paths
    ``engine.simulate`` runs for ``n_paths=1500``."""
    base = StudentT(0.08, 0.2, 3.0)
    fractions = np.array([[0.5, 1.5, 3.0]])
    res = surface.ruin_surface(surface.batch_process(base, "nu", [3.0], dt=1 / 252), fractions, axis="nu",
                               values=[3.0], seed=4, n_paths=1500, n_steps=252, block_size=1024, floor=0.5)
    assert res.n_paths == 1500 and list(res.block_paths) == [1024, 476]
    for j, f in enumerate(fractions[0]):
        sim = engine.simulate(base, seed=4, n_paths=1500, n_steps=252, block_size=1024,
                              policy=engine.ConstantMix(f, 0.0, 0.5))
        s = sim.summary()
        assert res.ruin_probability[0, j] == s["ruin_probability"]
        assert res.ruin_probability[0, j] * 1500 == round(res.ruin_probability[0, j] * 1500)
    with pytest.raises(ParameterError, match="n_paths"):
        surface.ruin_surface(surface.batch_process(base, "nu", [3.0], dt=1 / 252), fractions, axis="nu",
                             values=[3.0], n_paths=1, n_steps=2)


def test_growth_optimum_flags_the_grid_edge_and_the_wipeout_edge():
    base = Gaussian(0.06, 0.2)
    fr = np.array([[0.2, 0.4, 0.6, 0.8]])  # all below the Kelly fraction 1.5: best at the last point
    res = surface.ruin_surface(surface.batch_process(base, "sigma", [0.2], dt=1 / 252), fr, axis="sigma",
                               values=[0.2], seed=1, n_paths=2048, n_steps=252, block_size=1024)
    flags = res.optimum_flags()
    assert flags["at_grid_edge"][0] and not flags["at_wipeout_edge"][0] and flags["fraction"][0] == 0.8
    # a bet that loses half the stake 2% of the time: f = 2 is wiped out at the first loss, and
    # the Kelly fraction 0.98 / 0.5 - 0.02 / 0.02 = 0.96 lies between the grid points 1.0 and 2.0
    bet = Binary(p=0.98, up=0.02, down=-0.5)
    fr = np.array([[0.5, 1.0, 2.0, 2.5]])
    res = surface.ruin_surface(surface.batch_process(bet, "p", [0.98], dt=1 / 252), fr, axis="p", values=[0.98],
                               seed=0, n_paths=2048, n_steps=252, block_size=1024)
    assert np.isinf(res.mean_growth[0, 2]) and np.isfinite(res.mean_growth[0, 1])
    assert res.at_wipeout_edge()[0] and not res.at_grid_edge()[0] and res.growth_optimal()[0] == 1.0
    # the half-sample optimum is the same computation on the first block's paths
    half = res.mean_growth_on([0])
    np.testing.assert_array_equal(half, np.where(res.block_wiped[0] > 0, -np.inf,
                                                 res.block_free_sum[0] / 1024 / res.years))
    assert res.growth_optimal_half_sample()[0] == 1.0


def test_experiment_draws_the_grid_optimum_of_its_own_table(tmp_path):
    summary = run(_cfg(TINY), tmp_path)
    table = pd.read_csv(tmp_path / "surface.csv")
    opt = pd.read_csv(tmp_path / "growth_optimal.csv")
    for _, row in opt.iterrows():
        part = table[table["nu"] == row["nu"]]
        best, _ = kelly.refine_grid_maximum(part["fraction"], part["mean_growth"])
        assert row["growth_optimal_fraction"] == pytest.approx(best, rel=1e-9)
        assert isinstance(row["note"], str) and row["note"]
    assert summary["n_paths_per_point"] == 512 and "warnings" in summary
