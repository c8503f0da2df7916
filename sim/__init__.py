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
    MultiAsset,
    ParameterUncertainty,
    RegimeSwitching,
    Replay,
    StudentT,
)
from sim.engine import ConstantMix, SimResult, simulate
from sim.protocols import Policy, Process
from sim.data import (load_prices, load_sp500_constituents, load_sp500_index, load_sp500_ohlcv, load_vix,
                      simple_returns)
from sim.kelly import fit_student_t
from sim.validation import ParameterError

__all__ = [
    "Binary", "BlockBootstrap", "GarchT", "Gaussian", "Merton", "MultiAsset", "ParameterUncertainty",
    "RegimeSwitching", "Replay", "StudentT",
    "ConstantMix", "Policy", "Process", "SimResult", "simulate",
    "load_prices", "load_sp500_constituents", "load_sp500_index", "load_sp500_ohlcv", "load_vix", "simple_returns",
    "fit_student_t", "ParameterError",
]
