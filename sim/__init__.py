"""A Monte Carlo laboratory for capital management under fat tails, on JAX.

Importing ``sim`` gives JAX one CPU device per core if JAX has not started yet
(``sim.parallel.default_cpu_devices``; ``FTL_CPU_DEVICES=off`` to leave JAX alone): the
engine then steps one block per core, faster, with the same results.
"""

from sim.parallel import default_cpu_devices as _default_cpu_devices

_default_cpu_devices()

from sim.processes import (
    Binary,
    BlockBootstrap,
    GarchT,
    Gaussian,
    Merton,
    RegimeSwitching,
    StudentT,
)
from sim.engine import ConstantMix, simulate
from sim.validation import ParameterError

__all__ = [
    "Binary",
    "ConstantMix",
    "BlockBootstrap",
    "GarchT",
    "Gaussian",
    "Merton",
    "ParameterError",
    "RegimeSwitching",
    "StudentT",
    "simulate",
]
