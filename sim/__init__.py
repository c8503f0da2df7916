"""A Monte Carlo laboratory for capital management under fat tails, on JAX."""

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
