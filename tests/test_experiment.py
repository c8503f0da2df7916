"""End-to-end tier: the experiment composes, runs with tiny sizes and writes its files."""

import os

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException

from experiments.time_vs_ensemble import run
from sim.validation import ParameterError
from tests.conftest import run_multirun

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONF = os.path.join(ROOT, "conf")
TINY = ["coin.n_players=2000", "coin.n_rounds=20", "market.n_paths=2000", "market.years=1", "engine.block_size=1024"]
FILES = ["summary.json", "coin_fan.csv", "market_fan.csv", "growth_histogram.csv", "coin_fan.png", "market_fan.png",
         "growth_histogram.png"]


def test_every_process_config_composes_and_runs(tmp_path):
    """Every process option through the experiment; the first also draws its figures (the rest
    write tables and the summary only: the figures' code does not depend on the model)."""
    for i, name in enumerate(sorted(os.listdir(os.path.join(CONF, "process")))):
        name = name.removesuffix(".yaml")
        with initialize_config_dir(config_dir=CONF, version_base="1.3"):
            cfg = compose("time_vs_ensemble", overrides=[*TINY, f"process={name}", f"plots={str(i == 0).lower()}"])
        summary = run(cfg, tmp_path / name)
        for f in FILES if i == 0 else [f for f in FILES if not f.endswith(".png")]:
            assert (tmp_path / name / f).stat().st_size > 0, (name, f)
        assert summary["market"]["n_paths"] == 2000


def test_unknown_keys_are_rejected(tmp_path):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        with pytest.raises(ConfigCompositionException):
            compose("time_vs_ensemble", overrides=["market.n_pathz=10"])
        cfg = compose("time_vs_ensemble", overrides=[*TINY, "+process.kappa=1.0"])
    with pytest.raises(ParameterError, match=r"unknown key\(s\) \['kappa'\]; allowed: \['mu', 'sigma'\]"):
        run(cfg, tmp_path)
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("time_vs_ensemble", overrides=[*TINY, "process=student_t", "process.nu=2"])
    with pytest.raises(ParameterError, match=r"StudentT\.nu = 2"):
        run(cfg, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()  # failed before any output


def test_real_multirun_over_two_processes(tmp_path):
    tables = [f for f in FILES if not f.endswith(".png")]  # the figures: test_every_process_config_composes_and_runs
    summaries = run_multirun("experiments.time_vs_ensemble", ["process=gaussian,student_t", *TINY, "plots=false"],
                             tmp_path, tables)
    assert [s["market"]["process"] for s in summaries] == ["Gaussian", "StudentT"]
