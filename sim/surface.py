"""Ruin-probability surfaces: a grid of (model parameter) x (fraction) in one compiled kernel.

For every model point ``p`` (a value of one parameter, e.g. the tail index ``nu``) and every
fraction ``f[p, c]`` held at a constant mix, over a horizon of ``n_steps`` steps:

* ``ruin_probability``: P(wealth falls below ``floor`` x initial at some step, or a wipe-out);
* ``p_drawdown``: P(max drawdown > ``drawdown_level``);
* ``median_growth`` (and 5% / 95% quantiles): of the time-average growth ``log(W_T) / T``,
  with ruin absorbing (a ruined path keeps the wealth it was ruined at);
* ``mean_growth``: ``E[log W_T] / T`` without the floor (the growth rate Kelly maximizes;
  ``-inf`` as soon as one path is wiped out), and ``wipeout_probability``.

The kernel is the engine's block (``sim.engine.simulate_block``, the one loop over time) under
a ``FractionGrid`` policy (the ``C`` fractions of a model point, sharing its draws) and a
``SurfaceSaver`` (per (fraction, lane) running statistics, finished into counts and a
histogram); the model points are mapped over sequentially inside the same compiled call
(``lax.map``), and the engine's driver runs the blocks (``sim.engine.run_blocks``), so memory
is ``C x block_size`` lanes, never paths x steps or the whole grid x paths. The draws do not
depend on the fraction, which is why a grid costs less per point-path-step than a single
simulation. Path ``i`` of model point ``p`` sees the very draws ``sim.engine.simulate`` gives
it for the same ``(seed, block_size)``: a surface point equals a plain simulation bit for bit.

Quantiles of the growth come from a fixed histogram accumulated over blocks (exact counts,
``n_bins`` bins over ``growth_range`` per year, linear interpolation within a bin), so
their resolution is the bin width; the probabilities are exact counts.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from sim import engine
from sim.kelly import reference_kelly, refine_grid_maximum
from sim.pytree import pytree_dataclass, static_field
from sim import stats as stats_lib
from sim.units import per_step_mean
from sim.validation import ParameterError, check_int, check_range

__all__ = ["SurfaceResult", "ruin_surface", "batch_process", "kelly_multiples", "reference_fractions", "optimum_note",
           "OPTIMUM_INTERIOR"]

log = logging.getLogger(__name__)


def batch_process(process, name: str, values, *, dt: float):
    """``process`` with parameter ``name`` replaced by the array ``values`` (the model axis)
    and every other field broadcast to the same leading axis, ready for ``lax.map``. Every
    model point is validated first (for steps of ``dt`` years)."""
    fields = [f.name for f in dataclasses.fields(process)]
    if name not in fields:
        raise ParameterError(f"surface axis {name!r} is not a parameter of {type(process).__name__}; allowed: {fields}")
    values = np.asarray(values, np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ParameterError(f"surface values of {name} must be a non-empty list, got shape {values.shape}")
    for v in values:  # every model point must be valid on its own
        dataclasses.replace(process, **{name: float(v)}).validate(dt)
    kwargs = {}
    for f in fields:
        if f == name:
            kwargs[f] = jnp.asarray(values, jnp.float32)
        else:
            kwargs[f] = jnp.broadcast_to(jnp.asarray(getattr(process, f), jnp.float32), (len(values),))
    return dataclasses.replace(process, **kwargs)


@dataclasses.dataclass
class SurfaceResult:
    """Per (model point, fraction) statistics, each ``[P, C]`` (numpy, float64)."""

    axis: str
    values: np.ndarray  # [P]
    fractions: np.ndarray  # [P, C]
    ruin_probability: np.ndarray
    p_drawdown: np.ndarray
    median_growth: np.ndarray
    growth_q05: np.ndarray
    growth_q95: np.ndarray
    mean_growth: np.ndarray
    wipeout_probability: np.ndarray
    n_paths: int
    years: float
    bin_width: float
    wall_seconds: float
    block_paths: np.ndarray  # [B] paths counted in each block
    block_free_sum: np.ndarray  # [B, P, C] sum of log W_T (no floor) over each block's paths finite in it
    block_wiped: np.ndarray  # [B, P, C] wiped-out paths per block

    def mean_growth_on(self, blocks) -> np.ndarray:
        """``E[log W_T] / T`` (no floor) on the paths of ``blocks`` only (``-inf`` where one is
        wiped out): the surface's ``mean_growth`` on a sub-sample of the same draws."""
        blocks = list(blocks)
        return _mean_growth(self.block_free_sum[blocks], self.block_wiped[blocks], self.block_paths[blocks],
                            self.years)

    def growth_optimal(self) -> np.ndarray:
        """Per model point, the fraction maximizing ``mean_growth`` on the grid, refined by
        the vertex of the parabola through the best point and its neighbours (NaN where
        every fraction has a wipe-out). Where the next larger fraction already has a
        wipe-out (``at_wipeout_edge``), the true optimum lies between the two grid points:
        the growth rate is -inf beyond the first fraction that can lose everything; on
        these draws that is just below ``1 / |worst simple return|``, which moves with the
        number of paths (compare ``growth_optimal_half_sample``). Where the best grid point
        is the first or last fraction (``at_grid_edge``), the optimum may lie beyond the grid."""
        return self.optimum_flags()["fraction"]

    def at_wipeout_edge(self) -> np.ndarray:
        return self.optimum_flags()["at_wipeout_edge"]

    def at_grid_edge(self) -> np.ndarray:
        return self.optimum_flags()["at_grid_edge"]

    def growth_optimal_half_sample(self) -> np.ndarray:
        """``growth_optimal`` on the first half of the blocks (NaN with a single block): how
        much the sample optimum depends on the sample size."""
        n_blocks = len(self.block_paths)
        if n_blocks < 2:
            return np.full(len(self.values), np.nan)
        return self.optimum_flags(self.mean_growth_on(range(n_blocks // 2)))["fraction"]

    def optimum_flags(self, mean_growth=None) -> dict:
        """``fraction``, ``at_wipeout_edge``, ``at_grid_edge`` per model point (see
        ``growth_optimal``), on ``mean_growth`` (default: the surface's own)."""
        mean_growth = self.mean_growth if mean_growth is None else mean_growth
        P = len(self.values)
        out = dict(fraction=np.full(P, np.nan), at_wipeout_edge=np.zeros(P, bool), at_grid_edge=np.zeros(P, bool))
        for p, (f, g) in enumerate(zip(self.fractions, mean_growth)):
            finite = np.isfinite(g)
            if not finite.any():
                continue
            out["fraction"][p], j = refine_grid_maximum(f, g)
            out["at_wipeout_edge"][p] = j + 1 < len(f) and not finite[j + 1]
            out["at_grid_edge"][p] = j == len(f) - 1 or j == 0
        return out

    def table(self):
        """A long table, one row per (model point, fraction)."""
        import pandas as pd

        P, C = self.fractions.shape
        return pd.DataFrame({
            self.axis: np.repeat(self.values, C),
            "fraction": self.fractions.ravel(),
            "ruin_probability": self.ruin_probability.ravel(),
            "p_drawdown": self.p_drawdown.ravel(),
            "median_growth": self.median_growth.ravel(),
            "growth_q05": self.growth_q05.ravel(),
            "growth_q95": self.growth_q95.ravel(),
            "mean_growth": self.mean_growth.ravel(),
            "wipeout_probability": self.wipeout_probability.ravel(),
        })

    def optimum_table(self, reference, multiples):
        """The growth-optimal fraction per model point with its flags, its value on half of the
        paths, whether it moves by more than a grid step between the two (sample-size
        dependence) and one plain sentence (``optimum_note``); ``reference`` is each point's
        Gaussian Kelly fraction, ``multiples`` the grid of Kelly multiples ``c``."""
        import pandas as pd

        flags = self.optimum_flags()
        optimal_f, half_f = flags["fraction"], self.growth_optimal_half_sample()
        grid_step = float(np.diff(multiples).max())
        moves = np.abs(optimal_f - half_f) / reference > grid_step
        notes = [optimum_note(w, e, m) for w, e, m in zip(flags["at_wipeout_edge"], flags["at_grid_edge"], moves)]
        return pd.DataFrame({
            self.axis: self.values,
            "gaussian_kelly_fraction": reference,
            "growth_optimal_fraction": optimal_f,
            "growth_optimal_multiple": optimal_f / reference,
            "growth_optimal_multiple_half_sample": half_f / reference,
            "at_wipeout_edge": flags["at_wipeout_edge"],
            "at_grid_edge": flags["at_grid_edge"],
            "moves_with_sample_size": moves,
            "grid_step_in_c": grid_step,
            "n_paths": self.n_paths,
            "note": notes,
        })

    def at_multiple(self, multiples, c: float = 1.0) -> dict:
        """Ruin probability, P(drawdown) and median growth per model point at the grid's
        multiple nearest ``c``."""
        i = int(np.argmin(np.abs(np.asarray(multiples) - c)))
        keys = list(map(str, self.values))
        return {"multiple": multiples[i], "ruin_probability": dict(zip(keys, self.ruin_probability[:, i])),
                "p_drawdown": dict(zip(keys, self.p_drawdown[:, i])),
                "median_growth": dict(zip(keys, self.median_growth[:, i]))}


OPTIMUM_INTERIOR = "interior optimum"


def optimum_note(at_wipeout_edge: bool, at_grid_edge: bool, moves: bool) -> str:
    """One plain sentence on what a model point's growth-optimal fraction is."""
    parts = []
    if at_wipeout_edge:
        parts.append("pinned just below the first fraction with a wipe-out on these draws (not a "
                     "smooth optimum; it moves with the number of paths)")
    if at_grid_edge:
        parts.append("best at the edge of the grid of c (the optimum may lie beyond it)")
    if moves and not at_wipeout_edge:
        parts.append("differs by more than a grid step on half of the paths (sample-size dependent)")
    return "; ".join(parts) if parts else OPTIMUM_INTERIOR


def kelly_multiples(spec) -> np.ndarray:
    """The grid of Kelly multiples ``c``: a list of values, or a mapping ``start``, ``stop``,
    ``num`` (2..4096 points); every ``c`` in (0, 50]."""
    if hasattr(spec, "keys"):
        num = check_int("surface.multiples.num", spec["num"], 2, 4096)
        c = np.linspace(float(spec["start"]), float(spec["stop"]), num)
    else:
        c = np.asarray(list(spec), float)
    check_range("surface.multiples (Kelly multiple c)", c, 0.0, 50.0, lo_closed=False)
    return c


def reference_fractions(base, axis: str, values, risk_free: float) -> np.ndarray:
    """Each model point's Gaussian Kelly fraction ``(mu - r) / variance`` (``sim.kelly.
    reference_kelly``); an error unless every one is positive (the multiple axis needs it)."""
    reference = np.array([float(reference_kelly(dataclasses.replace(base, **{axis: v}), risk_free)) for v in values])
    if not np.all(reference > 0):
        raise ParameterError(
            f"the Kelly multiple axis needs a positive reference fraction (mu > risk_free); got {reference}"
        )
    return reference


def _mean_growth(free_sums, wiped, paths, years) -> np.ndarray:
    """``E[log W_T] / T`` from per-block sums ``[B, P, C]`` (folded in block order, so the
    result does not depend on devices or processes), ``-inf`` where a path is wiped out."""
    total = free_sums[0]
    for part in free_sums[1:]:
        total = total + part
    with np.errstate(invalid="ignore"):
        return np.where(np.sum(wiped, axis=0) > 0, -np.inf, total / np.sum(paths) / years)


class FractionGrid(NamedTuple):
    """A policy holding each of ``C`` constant mixes ``fraction`` ``[C]`` on the same draws: the
    step's portfolio return is ``[C, n]`` (one row per fraction, single-asset models)."""

    fraction: Any  # float32[C]
    risk_free: Any = 0.0
    floor: Any = 0.0

    def validate(self, dt=None, n_steps=None) -> None:
        check_range("fractions", self.fraction, -100.0, 100.0)

    def init(self, n, dt, process=None, process_state=None):
        return ()

    def step(self, key, state, r, process, process_state, t, dt: float):
        f = self.fraction
        rf = per_step_mean(jnp.asarray(self.risk_free, jnp.float32), dt)
        return state, f[:, None] * r[None, :] + (1.0 - f[:, None]) * rf  # [C, n]

    def outputs(self, state) -> dict:
        return {}


@pytree_dataclass
class SurfaceSaver:
    """The surface's saver: per (fraction, lane) ``PathStats`` and the no-floor log-wealth,
    finished into counts of the valid lanes and a histogram of the time-average growth
    (``n_bins`` bins of ``width`` from ``lo`` per year, plus one below and one above)."""

    log_floor: float = static_field()  # all static: part of the compiled kernel, as constants
    dd_level_log: float = static_field()
    years: float = static_field()
    lo: float = static_field()
    width: float = static_field()
    n_fractions: int = static_field(1)
    n_bins: int = static_field(6000)

    def init(self, n: int):
        st = jax.vmap(lambda _: stats_lib.init_path_stats(n))(jnp.arange(self.n_fractions))
        return st, jnp.zeros((self.n_fractions, n), jnp.float32)

    def update(self, acc, x, t):
        st, free = acc
        st = jax.vmap(stats_lib.update, in_axes=(0, 0, None, None))(st, x, t, self.log_floor)
        solvent = x > -1.0
        free = free + jnp.where(solvent, jnp.log1p(jnp.where(solvent, x, 0.0)), -jnp.inf)
        return st, free

    def finish(self, acc, valid) -> dict:
        st, free = acc
        n_bins = self.n_bins
        growth = st.log_wealth / self.years
        idx = jnp.clip(jnp.floor((growth - self.lo) / self.width), -1, n_bins).astype(jnp.int32) + 1  # 0: below
        idx = jnp.where(valid[None, :], idx, n_bins + 2)  # uncounted lanes into a bin that is dropped
        hist = jax.vmap(lambda i: jnp.bincount(i, length=n_bins + 3))(idx)[:, : n_bins + 2]
        count = lambda b: jnp.sum(b & valid[None, :], axis=1)  # noqa: E731
        return dict(
            ruined=count(st.ruin_step != stats_lib.NEVER),
            drawdown=count(st.max_drawdown_log > self.dd_level_log),
            wiped=count(~jnp.isfinite(free)),
            free_sum=jnp.sum(jnp.where(jnp.isfinite(free) & valid[None, :], free, 0.0), axis=1),
            hist=hist,
        )


def _check_arguments(fractions, values, floor, drawdown_level, risk_free, steps_per_year, growth_range) -> None:
    if fractions.ndim != 2 or fractions.shape[0] != values.shape[0]:
        raise ParameterError(f"fractions must be [P, C] with P = {values.shape[0]} model points, got {fractions.shape}")
    check_range("fractions", fractions, -100.0, 100.0)
    check_range("floor", floor, 0.0, 1.0, lo_closed=False, hi_closed=False)
    check_range("drawdown_level", drawdown_level, 0.0, 1.0, lo_closed=False, hi_closed=False)
    check_range("risk_free", risk_free, -1.0, 10.0, lo_closed=False)
    check_range("steps_per_year", steps_per_year, 0.0, lo_closed=False)
    lo, hi = (float(x) for x in growth_range)
    if not hi > lo:
        raise ParameterError(f"growth_range must be (lo, hi) with hi > lo, got {growth_range}")


def _histogram_quantile(hist, n: int, lo: float, width: float, n_bins: int, q: float) -> np.ndarray:
    """Per point: the first bin of ``hist`` ``[..., n_bins + 2]`` (below range, bins, above
    range) whose cumulative count reaches ``q n``, interpolated linearly inside it; -inf / inf
    when it falls below / above the histogram's range."""
    cum = np.cumsum(hist, axis=-1)
    edges = lo + width * np.arange(n_bins + 1)
    target = q * n
    k = np.argmax(cum >= target, axis=-1)  # cum[..., -1] = n >= target, so k exists
    before = np.take_along_axis(cum, np.maximum(k - 1, 0)[..., None], axis=-1)[..., 0]
    inside = np.take_along_axis(hist, k[..., None], axis=-1)[..., 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        value = edges[np.clip(k - 1, 0, n_bins)] + width * (target - before) / inside
    return np.where(k == 0, -np.inf, np.where(k > n_bins, np.inf, value))


def _surface_block(key, block, n_valid, processes, fractions, saver, *, block_size, n_steps, dt, risk_free):
    """One block's counts for every (model point, fraction): the engine's block under a
    ``FractionGrid``, mapped over the model points (a map over the grid, not over time)."""

    def one_point(args):
        process, f = args  # f: [C]
        out = engine.simulate_block(key, block, process, FractionGrid(f, risk_free), saver, block_size=block_size,
                                    n_steps=n_steps, dt=dt, n_valid=n_valid)
        out.pop("extras")
        return out

    return lax.map(one_point, (processes, fractions))


def ruin_surface(
    processes,
    fractions,
    *,
    axis: str,
    values,
    seed: int = 0,
    n_paths: int,
    n_steps: int,
    steps_per_year: float = 252.0,
    risk_free: float = 0.0,
    floor: float = 0.1,
    drawdown_level: float = 0.5,
    growth_range: tuple[float, float] = (-3.0, 3.0),
    n_bins: int = 6000,
    block_size: int = engine.DEFAULT_BLOCK_SIZE,
    devices: list | None = None,
    progress: Callable[[dict], None] | None = None,
) -> SurfaceResult:
    """Compute the surface over ``processes`` (a model batched along ``axis`` by
    ``batch_process``, ``P`` points) x ``fractions`` (``[P, C]``).

    Exactly ``n_paths`` paths are counted: paths ``0 .. n_paths - 1`` of the random stream of
    ``block_size``-lane blocks (as in ``sim.engine``; the last block's other lanes are
    simulated and not counted). ``floor`` in (0, 1) is the ruin level as a fraction of
    initial wealth; ``drawdown_level`` in (0, 1). ``devices``: this process's devices to
    spread the blocks over (default ``jax.local_devices()``); in a multi-process run
    (``sim.parallel.init_distributed``) the blocks are split between processes too. The result
    does not depend on either.
    """
    fractions, values = np.asarray(fractions, np.float64), np.asarray(values, np.float64)
    _check_arguments(fractions, values, floor, drawdown_level, risk_free, steps_per_year, growth_range)
    n_paths = check_int("n_paths", n_paths, 2)  # a standard error needs two paths
    n_steps = check_int("n_steps", n_steps, 1, 2**31 - 2)
    n_bins = check_int("n_bins", n_bins, 10)
    block_size = check_int("block_size", block_size, 1)
    lo, hi = (float(x) for x in growth_range)
    dt = 1.0 / float(steps_per_year)
    n_blocks = -(-n_paths // block_size)
    years = n_steps * dt
    saver = SurfaceSaver(math.log(floor), -math.log1p(-drawdown_level), years, lo, (hi - lo) / n_bins,
                         n_fractions=fractions.shape[1], n_bins=n_bins)
    fn = engine.bind(_surface_block, block_size=block_size, n_steps=n_steps, dt=dt, risk_free=float(risk_free))
    # One block per device per chunk (a block's histogram is P x C x n_bins). The counts are
    # integers, summed exactly in any order; the float sums of the growth are kept per block
    # and folded on the host in block order, so the result does not depend on devices or processes.
    out, wall = engine.run_blocks(fn, (processes, jnp.asarray(fractions, jnp.float32), saver), seed=seed,
                                  n_paths=n_paths, block_size=block_size, chunk_paths=block_size, devices=devices,
                                  progress=progress, summed=("ruined", "drawdown", "hist"))
    n = n_paths
    block_paths = np.array([min(block_size, n_paths - b * block_size) for b in range(n_blocks)])
    block_free_sum = out["free_sum"].astype(np.float64)
    block_wiped = out["wiped"].astype(np.float64)
    totals = dict(ruined=out["ruined"].astype(np.float64), drawdown=out["drawdown"].astype(np.float64),
                  wiped=block_wiped.sum(axis=0), hist=out["hist"])
    hist = totals["hist"]  # [P, C, n_bins + 2]: below range, bins, above range
    width = (hi - lo) / n_bins
    quantile = functools.partial(_histogram_quantile, hist, n, lo, width, n_bins)
    wiped = totals["wiped"]
    mean_growth = _mean_growth(block_free_sum, block_wiped, block_paths, years)
    return SurfaceResult(
        axis=axis,
        values=values,
        fractions=fractions,
        ruin_probability=totals["ruined"] / n,
        p_drawdown=totals["drawdown"] / n,
        median_growth=quantile(0.5),
        growth_q05=quantile(0.05),
        growth_q95=quantile(0.95),
        mean_growth=mean_growth,
        wipeout_probability=wiped / n,
        n_paths=n,
        block_paths=block_paths,
        block_free_sum=block_free_sum,
        block_wiped=block_wiped,
        years=years,
        bin_width=width,
        wall_seconds=wall,
    )
