"""Checks at the boundary: parameters and data are validated once, where they enter.

Every failure raises ``ParameterError`` (a ``ValueError``) whose message names the field,
the value received and the allowed range, before any compilation or long work starts.
Kernels trust their inputs and stay branch free.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["ParameterError", "check_range", "check_int", "check_vector", "check_same_length", "check_correlation"]


class ParameterError(ValueError):
    """A parameter or input is outside its allowed range."""


def _interval(lo: float, hi: float, lo_closed: bool, hi_closed: bool) -> str:
    left = "[" if lo_closed and math.isfinite(lo) else "("
    right = "]" if hi_closed and math.isfinite(hi) else ")"
    return f"{left}{lo:g}, {hi:g}{right}"


def check_range(
    name: str,
    value,
    lo: float = -math.inf,
    hi: float = math.inf,
    *,
    lo_closed: bool = True,
    hi_closed: bool = True,
) -> None:
    """Raise ``ParameterError`` unless every element of ``value`` is finite and in range.

    ``value`` may be a scalar or an array (a parameter grid); every element is checked.
    """
    arr = np.asarray(value, dtype=np.float64)
    interval = _interval(lo, hi, lo_closed, hi_closed)
    if arr.size == 0:
        raise ParameterError(f"{name} is empty; allowed: finite values in {interval}")
    bad = ~np.isfinite(arr)
    bad |= (arr < lo) if lo_closed else (arr <= lo)
    bad |= (arr > hi) if hi_closed else (arr >= hi)
    if bad.any():
        first = float(arr.ravel()[np.argmax(bad.ravel())])
        raise ParameterError(f"{name} = {first!r} is out of range; allowed: finite values in {interval}")


def check_int(name: str, value, lo: int, hi: int | None = None) -> int:
    """Return ``value`` as an int, or raise unless it is an integer in ``[lo, hi]``."""
    allowed = f"an integer >= {lo}" if hi is None else f"an integer in [{lo}, {hi}]"
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise ParameterError(f"{name} = {value!r} is not an integer; allowed: {allowed}")
    if value < lo or (hi is not None and value > hi):
        raise ParameterError(f"{name} = {value!r} is out of range; allowed: {allowed}")
    return int(value)


def check_vector(name: str, x) -> np.ndarray:
    """``x`` as a finite 1-D float64 array of at least one entry, or ``ParameterError``."""
    a = np.asarray(x, np.float64)
    if a.ndim != 1 or a.size < 1:
        raise ParameterError(f"{name} must be a 1-D array, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ParameterError(f"{name} has a NaN or infinite entry at {int(np.argmax(~np.isfinite(a)))}")
    return a


def check_same_length(**arrays) -> None:
    """``ParameterError`` unless the named arrays have the same number of entries."""
    sizes = {k: v.size for k, v in arrays.items()}
    if len(set(sizes.values())) > 1:
        raise ParameterError(f"mismatched lengths: {sizes}; allowed: one entry per constituent")


def check_correlation(corr, n: int | None = None) -> np.ndarray:
    """A correlation matrix: square, symmetric, unit diagonal, entries in [-1, 1], positive
    semi-definite (smallest eigenvalue >= -1e-10)."""
    c = np.asarray(corr, np.float64)
    if c.ndim != 2 or c.shape[0] != c.shape[1]:
        raise ParameterError(f"correlation must be a square matrix, got shape {c.shape}")
    if n is not None and c.shape[0] != n:
        raise ParameterError(f"mismatched lengths: correlation is {c.shape[0]}x{c.shape[0]}, {n} constituents")
    if not np.all(np.isfinite(c)):
        raise ParameterError("correlation has a NaN or infinite entry")
    if not np.allclose(c, c.T, atol=1e-12):
        raise ParameterError("correlation must be symmetric")
    if not np.allclose(np.diag(c), 1.0, atol=1e-12) or np.any(np.abs(c) > 1 + 1e-12):
        raise ParameterError("correlation must have a unit diagonal and entries in [-1, 1]")
    low = float(np.linalg.eigvalsh(c).min())
    if low < -1e-10:
        raise ParameterError(f"correlation is not positive semi-definite (smallest eigenvalue {low:.3g}); allowed: "
                             "a PSD matrix")
    return c
