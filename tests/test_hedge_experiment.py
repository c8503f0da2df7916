"""The hedge_overlay experiment end to end, small: one model, hold only, a short optimization."""

import pandas as pd

from tests.conftest import job_dir, run_multirun

TINY = ["~process@models.merton", "~process@models.garch_t", "~monetize@monetize.profit_take",
        "~monetize@monetize.price_level",
        "simulation.n_paths=256", "simulation.years=2", "simulation.block_size=256",
        "optimize.n_paths=256", "optimize.years=1", "optimize.max_iter=3"]


def test_hedge_overlay_runs_end_to_end(tmp_path):
    summary = run_multirun("experiments.hedge_overlay", TINY, tmp_path,
                           ["models.csv", "real.csv", "real_paths.csv", "growth_optimal.csv", "summary.json",
                            "real_equity.png", "real_zoom_2008.png", "real_zoom_2020.png", "max_drawdown.png"])[0]
    out = job_dir(tmp_path, 0)
    real = pd.read_csv(out / "real.csv").set_index("strategy")
    assert set(real.index) == {"unhedged", "hedged_hold"}  # the oracle needs a regime model
    assert real.loc["unhedged", "max_drawdown"] > 0.5  # the S&P 500 price index lost 57% in 2007-2009
    assert 0.015 < real.loc["hedged_hold", "premium_per_year"] < 0.025
    models = pd.read_csv(out / "models.csv")
    assert set(models.strategy) == {"unhedged", "hedged_hold", "hedged_regime_oracle"}
    hedged = models[models.strategy != "unhedged"]
    assert {"paths_saved_by_hedge", "paths_lost_by_hedge", "growth_vs_unhedged"} <= set(hedged.columns)
    assert (hedged.paths_saved_by_hedge >= 0).all() and (hedged.paths_lost_by_hedge >= 0).all()
    ev = summary["event"]
    assert abs(ev["unhedged_day_return"] + 0.3) < 1e-6
    assert ev["hedge_gain_fraction_of_nav"] > 0
    assert summary["real"]["days_priced_from_vix"] > 1000
