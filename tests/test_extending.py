"""Extending the lab as the README's "Extending" section shows: a new return model and a new
monetization policy, each one class (in the user's own module) and one YAML (in the user's own
config directory, on Hydra's search path), run end to end through an experiment. Nothing in
sim/ or experiments/ is edited: no registry, no name check."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd

from tests.conftest import ROOT

USER_MODULE = textwrap.dedent('''
    import math

    import jax.numpy as jnp

    from sim import samplers
    from sim.pytree import pytree_dataclass
    from sim.validation import check_range


    @pytree_dataclass
    class Laplace:
        """I.i.d. Laplace (double-exponential) returns: annual mean mu and vol sigma."""

        mu: float = 0.08
        sigma: float = 0.2

        def validate(self, dt):
            check_range("Laplace.sigma", self.sigma, 0.0, 5.0, lo_closed=False)

        def init(self, key, n, dt):
            return ()

        def step(self, key, state, n, dt):
            u1, u2 = samplers.uniform_pair(key, n)  # on (0, 1]
            z = (jnp.log(u2) - jnp.log(u1)) / math.sqrt(2.0)  # E1 - E2: Laplace of unit variance
            return state, self.mu * dt + self.sigma * math.sqrt(dt) * z

        def annual_moments(self):
            return self.mu, self.sigma**2


    @pytree_dataclass
    class SellAtMultiple:
        """Sell a whole tranche once its mark reaches ``multiple`` x the price paid."""

        multiple: float = 3.0

        def init(self, n, n_tranches, process=None):
            return ()

        def decide(self, state, obs):
            return state, jnp.where(obs.marks >= self.multiple * obs.paid, 1.0, 0.0)
''')


def run_single(module, overrides, run_dir, files, env):
    """``python -m module overrides`` into ``run_dir`` (Hydra takes a search path override
    in a single run; in a multirun, put ``hydra.searchpath`` in a config file instead)."""
    cmd = [sys.executable, "-m", module, *overrides, f"hydra.run.dir={run_dir}"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, **env})
    assert out.returncode == 0, out.stderr[-3000:]
    for f in files:
        assert (run_dir / f).stat().st_size > 0, f
    return json.loads((run_dir / "summary.json").read_text())


def _user_setup(tmp_path):
    (tmp_path / "user_models.py").write_text(USER_MODULE)
    conf = tmp_path / "conf"
    (conf / "process").mkdir(parents=True)
    (conf / "monetize").mkdir()
    (conf / "process" / "laplace.yaml").write_text("_target_: user_models.Laplace\nmu: 0.08\nsigma: 0.2\n")
    (conf / "monetize" / "sell_at_3x.yaml").write_text("_target_: user_models.SellAtMultiple\nmultiple: 3.0\n")
    return [f"hydra.searchpath=[file://{conf}]"], {"PYTHONPATH": str(tmp_path)}


def test_a_new_return_model_runs_through_the_ruin_surface(tmp_path):
    search, env = _user_setup(tmp_path)
    tiny = ["process=laplace", "surface.axis=sigma", "surface.values=[0.15,0.3]", "surface.n_paths=2048",
            "surface.years=1", "engine.block_size=1024", "surface.multiples.num=4", "surface.multiples.stop=1.0",
            "plots=false"]
    summary = run_single("experiments.ruin_surface", [*search, *tiny], tmp_path / "run",
                         ["surface.csv", "growth_optimal.csv", "summary.json"], env)
    assert summary["process"] == "Laplace"
    table = pd.read_csv(tmp_path / "run" / "surface.csv")
    assert sorted(table.sigma.unique()) == [0.15, 0.3]
    # Against the second-order growth rate f mu - f^2 sigma^2 / 2 of a constant mix (one year,
    # 2048 paths: the per-path growth has sd about f sigma, so 5 standard errors of the mean).
    for _, row in table.iterrows():
        f, s = row.fraction, row.sigma
        approx = f * 0.08 - 0.5 * (f * s) ** 2
        assert abs(row.mean_growth - approx) < 5 * f * s / np.sqrt(2048) + 0.01 * f, row


def test_a_new_monetization_policy_runs_through_the_hedge_overlay(tmp_path):
    search, env = _user_setup(tmp_path)
    tiny = ["~process@models.merton", "~process@models.garch_t", "~monetize@monetize.profit_take",
            "~monetize@monetize.price_level", "~monetize@monetize.regime_oracle", "+monetize@monetize.sell_at_3x=sell_at_3x",
            "simulation.n_paths=256", "simulation.years=2", "simulation.block_size=256", "optimize.enabled=false",
            "plots=false"]
    run_single("experiments.hedge_overlay", [*search, *tiny], tmp_path / "run", ["models.csv", "real.csv", "summary.json"],
               env)
    models = pd.read_csv(tmp_path / "run" / "models.csv")
    assert set(models.strategy) == {"unhedged", "hedged_hold", "hedged_sell_at_3x"}
    real = pd.read_csv(tmp_path / "run" / "real.csv").set_index("strategy")
    # On the real S&P 500 1990-2022 the puts reach 3x what was paid (2008, 2020): the policy sells,
    # where holding to expiry never does.
    assert real.loc["hedged_sell_at_3x", "sales"] > 0 and real.loc["hedged_hold", "sales"] == 0
