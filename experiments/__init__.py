"""Hydra entry points. Importing the package registers the ``pid`` resolver that the configs'
run and sweep directories use (``.../${now:...}_${pid:}``), so two runs started in the same
second never share a directory."""

import os

from omegaconf import OmegaConf

OmegaConf.register_new_resolver("pid", lambda: str(os.getpid()), replace=True, use_cache=True)
