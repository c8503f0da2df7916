"""The kelly experiment runs end to end with tiny sizes and writes its files."""

import json
import os

from hydra import compose, initialize_config_dir

from experiments.kelly import run

CONF = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "conf")


def test_kelly_experiment_tiny(tmp_path):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("kelly", overrides=["optimizer.n_paths=1024", "evaluation.n_paths=1024", "evaluation.years=2",
                                          "synthetic.n_datasets=20", "shrinkage.sample_years=[2,20]"])
    summary = run(cfg, tmp_path)
    for f in ("policies.csv", "growth_curve.csv", "shrinkage.csv", "datasets.csv", "summary.json",
              "growth_curve.png", "terminal_wealth.png", "shrinkage.png"):
        assert (tmp_path / f).stat().st_size > 0, f
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert {r["policy"] for r in saved["policies"]} == {"plug_in", "fractional", "uncertainty", "drawdown"}
    fr = summary["synthetic"]["fractions"]
    assert abs(fr["fractional"] - 0.5 * fr["plug_in"]) < 1e-9
    assert fr["drawdown"] <= fr["plug_in"] + 1e-6
