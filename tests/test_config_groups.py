"""Every option of every config group that mirrors sim/ composes into an experiment that uses
the group and builds its object (``lab.harness.instantiate``), which then validates;
an unknown key in a group node is rejected with the allowed ones. Composition only (no
simulation): the end-to-end runs are in each experiment's own test."""

import os

import pytest
from hydra import compose, initialize_config_dir

from lab.harness import instantiate
from sim import dispersion, engine, hedge, market, processes, protocols, regime
from sim.validation import ParameterError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONF = os.path.join(ROOT, "conf")
# group -> (an experiment that composes it, where the option lands, the protocol or class it builds)
GROUPS = {
    "process": ("time_vs_ensemble", "process", protocols.Process),
    "hedge": ("hedge_overlay", "hedge", hedge.HedgeProgram),
    "vol_model": ("hedge_overlay", "vol_model", hedge.ImpliedVolModel),
    "portfolio": ("hedge_overlay", "portfolio", engine.ConstantMix),
    "monetize": ("crash_protocol", "monetize.extra", None),  # a monetization policy: init / decide
    "detector": ("crash_protocol", "detector", regime.Detector),
    "protocol": ("crash_protocol", "protocol", regime.Protocol),
    "market": ("crash_protocol", "market", market.Market),
    "basket": ("dispersion", "basket", market.Basket),
    "trade": ("dispersion", "trade", dispersion.DispersionTrade),
}


def _options(group):
    return sorted(f.removesuffix(".yaml") for f in os.listdir(os.path.join(CONF, group)) if f.endswith(".yaml"))


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_every_option_of_every_group_composes_and_builds(group):
    experiment, where, kind = GROUPS[group]
    for option in _options(group):
        choice = f"+monetize@{where}={option}" if group == "monetize" else f"{group}={option}"
        with initialize_config_dir(config_dir=CONF, version_base="1.3"):
            cfg = compose(experiment, overrides=[choice])
        given = {"market": {"base": processes.Gaussian()}, "vol_model": {"long_run_vol": 0.2}}.get(group, {})
        obj = instantiate(_select(cfg, where), where, **given)
        if group == "process" and option == "fitted":  # a fit, whose process is the model it fitted
            from sim.fit import FitResult

            assert isinstance(obj, FitResult) and obj.converged, obj.status
            obj = obj.process
        if kind is None:
            assert callable(getattr(obj, "init", None)) and callable(getattr(obj, "decide", None)), (group, option)
        else:
            assert isinstance(obj, kind), (group, option, type(obj))
        if group in ("process", "market", "basket"):
            obj.validate(1 / 252)
        elif group == "trade":
            obj.validate(1 / 252, 63)
        elif group == "portfolio":
            obj.validate()
        elif group == "vol_model":
            obj.validate()
        elif hasattr(obj, "validate"):
            obj.validate()


def _select(cfg, where):
    from omegaconf import OmegaConf

    return OmegaConf.select(cfg, where)


def test_every_config_group_directory_is_covered():
    groups = {d for d in os.listdir(CONF) if os.path.isdir(os.path.join(CONF, d))} - {"hydra"}
    assert groups == set(GROUPS), groups


def test_an_unknown_key_in_a_group_node_names_the_allowed_ones():
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("hedge_overlay", overrides=["+vol_model.bogus=1"])
    with pytest.raises(ParameterError, match=r"vol_model \(sim.hedge.ImpliedVolModel\): unknown key\(s\) \['bogus'\]; "
                                             r"allowed: \['source', 'vrp'"):
        instantiate(cfg.vol_model, "vol_model")
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("hedge_overlay", overrides=["hedge._target_=sim.hedge.NoSuchProgram"])
    with pytest.raises(ParameterError, match="hedge._target_ = 'sim.hedge.NoSuchProgram' cannot be imported"):
        instantiate(cfg.hedge, "hedge")
