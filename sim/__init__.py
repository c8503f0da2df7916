"""A Monte Carlo laboratory for capital management under fat tails, on JAX."""

from sim.processes import (
    PROCESSES,
    Binary,
    BlockBootstrap,
    GarchT,
    Gaussian,
    Merton,
    RegimeSwitching,
    StudentT,
)
from sim.validation import ParameterError

__all__ = [
    "PROCESSES",
    "Binary",
    "BlockBootstrap",
    "GarchT",
    "Gaussian",
    "Merton",
    "ParameterError",
    "RegimeSwitching",
    "StudentT",
]
