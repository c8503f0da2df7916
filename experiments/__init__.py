"""Hydra entry points (``python -m experiments`` lists them). Importing the package registers
the resolvers of the configs' run and sweep directories: ``pid`` (``.../${now:...}_${pid:}``,
so two runs started in the same second never share a directory), ``ftl_point`` (a sweep
point's directory: its overrides, made filesystem-safe) and ``ftl_or`` (the first argument
that is not null: a sweep's ``name``, else its start time)."""

import os

from omegaconf import OmegaConf

OmegaConf.register_new_resolver("pid", lambda: str(os.getpid()), replace=True, use_cache=True)


def _point(overrides, num, sweep_dir):
    from lab.sweep import point_dirname

    return point_dirname(list(overrides), num, sweep_dir)


OmegaConf.register_new_resolver("ftl_point", _point, replace=True)
OmegaConf.register_new_resolver("ftl_or", lambda a, b: b if a is None or a == "" else a, replace=True)
