"""Tail-hedge overlays: a budgeted put program simulated path by path inside the engine's scan.

``HedgeOverlay`` is an engine policy (see ``sim.engine``): pass it as ``policy=`` to
``sim.engine.simulate`` and every path carries, besides its wealth statistics, a ladder of
put tranches, their marks and the monetization policy's state. Nothing grows with the
number of steps.

The portfolio (per unit of NAV ``W`` at the start of a step):

* equity ``f W``, rebalanced to the fraction ``f`` every step (the engine's constant mix);
* ``L = ceil(tenor / roll)`` put tranches: tranche ``j`` holds notional ``a_j`` (contracts
  x spot / NAV) of puts with moneyness ``m_j = K_j / S`` and ``left_j`` steps to expiry,
  marked at ``v_j = a_j p(m_j, tau_j, sigma)`` per unit of NAV;
* cash ``1 - f - sum_j v_j``, earning the risk-free rate (negative cash is borrowing).

One step with asset return ``r`` and risk-free ``r_f`` per step::

    x = f r + (1 - f) r_f + sum_j (v_j' - v_j (1 + r_f)) - costs

where ``v_j' = a_j (1 + r) p(m_j / (1 + r), tau_j - dt, sigma')`` is the tranche re-marked
after the move, at the implied vol of the new state. Then, in this order: expired tranches
pay their intrinsic value into cash; the monetization policy sells a fraction of each live
tranche at its mark; on a roll date (every ``roll`` steps) the tranche slot that comes round
buys new puts for ``budget * roll_years`` of the NAV. Trades pay ``option_cost`` (a
proportional half-spread) on the premium, which is the only way a trade changes NAV. So the
premium drag, the crash payoff and the rebalancing (put proceeds are bought back into
equity at the fraction ``f``) compound exactly.

Puts are priced by Black-Scholes (``sim.options``) at the implied vol of ``ImpliedVolModel``:
an ATM level (the path's own realized vol, the model's conditional vol, or a given implied
series such as VIX), a term structure reverting to a long-run vol, a volatility risk premium
and a put skew in moneyness.

Monetization policies are pytrees with two pure methods (the hook the regime protocol
plugs into)::

    state = policy.init(n, L)
    state, sell = policy.decide(state, obs)    # sell: float32[L, n] in [0, 1]

where ``obs`` is a ``HedgeObs``. A policy whose state is ``()`` and whose decision is a
cheap function of ``obs`` may say so with a class attribute ``at_trade = True``: the overlay
then decides inside the step's trades instead of beforehand, in a materialization fence of
its own (one ``[L, n]`` array less written and read; same results, bit for bit). Provided:
``Hold`` (hold to expiry and roll), ``ProfitTake`` (sell when the mark reaches a multiple of
the premium paid), ``PriceLevel``
(sell when the underlying has fallen a fixed % since purchase: the price rule seed 000 §3
warns against) and ``RegimeOracle`` (sell when the model's true regime turns from crash to
calm: the benchmark no detector can beat).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
import numpy as np
from jax.scipy.special import ndtri

from sim import backend, engine, protocols
from sim.pytree import pytree_dataclass
from sim.units import per_step_mean
from sim.validation import ParameterError, check_int, check_range

__all__ = [
    "ImpliedVolModel",
    "HedgeProgram",
    "HedgeOverlay",
    "HedgeObs",
    "HedgeState",
    "Hold",
    "ProfitTake",
    "PriceLevel",
    "RegimeOracle",
    "put_price",
    "with_parameters",
    "optimize_hedge",
    "HedgeOptimum",
    "paired_growth_difference",
    "compare_optima",
    "replay_nav",
    "crash_day",
    "policy_comparison",
    "protocol_verdicts",
]

_F32 = jnp.float32
_INV_SQRT2 = 0.7071067811865476
_VOL_SOURCES = ("realized", "model", "constant")
_STRIKE_MODES = ("moneyness", "delta")


def _f(x):
    return jnp.asarray(x, _F32)


# --------------------------------------------------------------------------- implied vol


@pytree_dataclass
class ImpliedVolModel:
    """Implied volatility of a put of moneyness ``k = K / S`` and expiry ``tau`` years.

    ``sigma(k, tau) = clip(sigma_atm(tau) + skew * (-log k) / sqrt(max(tau, 1/252)),
    vol_floor, vol_cap)`` with the ATM term structure ``sigma_atm(tau)^2 = theta + (v - theta)
    (1 - exp(-kappa tau)) / (kappa tau)`` (the expected average variance of a process whose
    variance reverts at rate ``kappa`` to ``theta = long_run_vol^2``) and the level ``v`` the
    square of:

    * ``source="realized"``: the path's exponentially weighted realized vol (half-life
      ``halflife_days`` steps, started at ``long_run_vol``) plus ``vrp``;
    * ``source="model"``: the process's ``conditional_vol`` (regime sigma, GARCH variance)
      plus ``vrp``; for ``sim.processes.Replay`` with an ``implied`` series the observed
      implied vol as it is (it already holds the premium), the realized vol + ``vrp`` where
      none is given;
    * ``source="constant"``: ``long_run_vol + vrp`` always (``vrp = skew = 0``: a flat
      surface, for checks).

    Args: vrp (vol points added, annualized), skew (vol per unit of ``-log k / sqrt tau``,
      >= 0), mean_reversion ``kappa`` >= 0 per year (0: flat term structure),
      long_run_vol > 0, halflife_days > 0, 0 < vol_floor <= vol_cap.
    """

    source: str = dataclasses.field(default="realized", metadata=dict(static=True))
    vrp: float = 0.03
    skew: float = 0.2
    mean_reversion: float = 2.0
    long_run_vol: float = 0.18
    halflife_days: float = 10.0
    vol_floor: float = 0.05
    vol_cap: float = 3.0

    def validate(self) -> None:
        if self.source not in _VOL_SOURCES:
            raise ParameterError(f"vol_model.source = {self.source!r}; allowed: {list(_VOL_SOURCES)}")
        check_range("vol_model.vrp", self.vrp, -1.0, 2.0)
        check_range("vol_model.skew", self.skew, 0.0, 10.0)
        check_range("vol_model.mean_reversion", self.mean_reversion, 0.0, 1000.0)
        check_range("vol_model.long_run_vol", self.long_run_vol, 0.0, 5.0, lo_closed=False)
        check_range("vol_model.halflife_days", self.halflife_days, 0.0, 1e6, lo_closed=False)
        check_range("vol_model.vol_floor", self.vol_floor, 0.0, 5.0, lo_closed=False)
        check_range("vol_model.vol_cap", self.vol_cap, self.vol_floor, 20.0)

    def ewma_weight(self) -> jax.Array:
        """Weight of the newest squared return in the realized-variance EWMA."""
        return -jnp.expm1(-math.log(2.0) / _f(self.halflife_days))

    def atm_level(self, realized_var, process, process_state, dt: float):
        """The ATM vol level ``[n]`` for the next step, before the term structure."""
        realized = jnp.sqrt(realized_var) + _f(self.vrp)
        if self.source == "constant":
            return jnp.broadcast_to(_f(self.long_run_vol) + _f(self.vrp), jnp.shape(realized_var))
        if self.source == "realized":
            return realized
        if protocols.supports(process, protocols.ImpliedVolQuote):  # an observed implied vol, where given
            observed = jnp.broadcast_to(process.implied_vol(process_state, dt), jnp.shape(realized_var))
            return jnp.where(jnp.isfinite(observed), observed, realized)
        observed = jnp.broadcast_to(process.conditional_vol(process_state, dt), jnp.shape(realized_var))
        return observed + _f(self.vrp)

    def vol(self, moneyness, tau, level, log_moneyness=None):
        """``sigma(k, tau)`` for a level ``[n]`` (broadcast against ``k``, ``tau``);
        ``log_moneyness``, if given, is ``log k`` (shared with ``put_price``)."""
        theta = _f(self.long_run_vol) ** 2
        kt = _f(self.mean_reversion) * tau
        small = kt < 1e-6
        weight = jnp.where(small, 1.0 - 0.5 * kt, -jnp.expm1(-kt) / jnp.where(small, 1.0, kt))
        atm_var = theta + (level * level - theta) * weight
        atm = jnp.sqrt(jnp.maximum(atm_var, 0.0))
        log_k = jnp.log(moneyness) if log_moneyness is None else log_moneyness
        smile = _f(self.skew) * (-log_k) * lax.rsqrt(jnp.maximum(tau, 1.0 / 252.0))  # tau: per tranche, not per path
        return jnp.clip(atm + smile, _f(self.vol_floor), _f(self.vol_cap))


def _positive(x):
    """``x`` where positive, else 1: the divisor of per-NAV accounting once a path is wiped out."""
    return jnp.where(x > 0, x, 1.0)


# erfcx(x) = exp(x^2) erfc(x) = t Q(t), t = 1 / (1 + x / 2), x >= 0: a degree-10 fit of Q on
# t in (0, 1] (Chebyshev least squares in relative error against scipy's erfcx; 4e-8 relative
# in float64, 2e-7 in float32, i.e. float32 rounding), so that both CDFs of a put share one exp.
_ERFCX_Q = (0.2820948023, 0.2820930576, 0.2469027706, 0.1751070046, 0.09474902442, -0.06389218597,
            0.1427162307, -0.4698097499, 0.5063968634, -0.2407798181, 0.04442201632)


def _tq(t):
    acc = _ERFCX_Q[-1]
    for a in _ERFCX_Q[-2::-1]:
        acc = acc * t + a
    return t * acc


def put_price(moneyness, tau, vol, rate, log_moneyness=None):
    """Black-Scholes put price per unit of spot (``S = 1``, ``K = moneyness``), broadcast.

    The formula of ``sim.options.black_scholes`` (tested equal to it to float32 accuracy),
    written for the simulation's inner loop: with ``K' = K e^{-r tau}``, ``N(-d) = erfc(d /
    sqrt 2) / 2`` and ``erfc(x) = t Q(t) e^{-x^2}`` (``t = 1 / (1 + |x| / 2)``, ``Q`` the
    polynomial above: accurate in relative terms in the lower tail, where deep
    out-of-the-money puts live), and one exp for both terms, since ``K' e^{-d2^2 / 2} =
    e^{-d1^2 / 2}``. ``log_moneyness``, if given, is ``log(moneyness)``.
    """
    live = (tau > 0) & (vol > 0)
    sd = jnp.where(live, vol * jnp.sqrt(jnp.maximum(tau, 0.0)), 1.0)  # sqrt of tau's shape (per tranche)
    disc_k = moneyness * jnp.exp(-rate * tau)
    log_disc_k = jnp.log(disc_k) if log_moneyness is None else log_moneyness - rate * tau
    d1 = -log_disc_k / sd + 0.5 * sd
    d2 = d1 - sd
    a1 = 1.0 + jnp.abs(d1) * (0.5 * _INV_SQRT2)
    a2 = 1.0 + jnp.abs(d2) * (0.5 * _INV_SQRT2)
    inv = 1.0 / (a1 * a2)  # one division for both t = 1 / a
    half_e1 = 0.5 * jnp.exp(-0.5 * d1 * d1)
    tail1 = _tq(a2 * inv) * half_e1  # N(-|d1|)
    tail2 = _tq(a1 * inv) * half_e1  # K' N(-|d2|)
    n1 = jnp.where(d1 >= 0, tail1, 1.0 - tail1)  # N(-d1)
    k_n2 = jnp.where(d2 >= 0, tail2, disc_k - tail2)  # K' N(-d2)
    price = k_n2 - n1
    return jnp.where(live, jnp.maximum(price, 0.0), jnp.maximum(disc_k - 1.0, 0.0))


# --------------------------------------------------------------------------- program


@pytree_dataclass
class HedgeProgram:
    """A budgeted put program: what to buy, how often, for how much.

    Args:
      budget: premium spent per year, as a fraction of NAV (0.02: 2%/yr); spent in equal
        parts on each roll date (``budget * roll_steps / steps_per_year`` of the NAV then).
      strike: ``K / S`` at purchase (``strike_mode="moneyness"``, e.g. 0.85), or the
        absolute put delta at purchase (``strike_mode="delta"``, e.g. 0.1), in (0, 1).
      tenor_steps, roll_steps: expiry of a new put and the interval between purchases, in
        steps (static); ``ceil(tenor / roll)`` tranches are alive at once.
      option_cost: proportional cost (half-spread) on the premium of every trade, in [0, 1).
    Build from years with ``HedgeProgram.from_years``.
    """

    budget: float = 0.02
    strike: float = 0.85
    tenor_steps: int = dataclasses.field(default=63, metadata=dict(static=True))
    roll_steps: int = dataclasses.field(default=21, metadata=dict(static=True))
    strike_mode: str = dataclasses.field(default="moneyness", metadata=dict(static=True))
    option_cost: float = 0.0

    @classmethod
    def from_years(cls, *, budget=0.02, strike=0.85, tenor_years=0.25, roll_years=1 / 12,
                   steps_per_year=252.0, strike_mode="moneyness", option_cost=0.0) -> "HedgeProgram":
        """Tenor and roll interval in years, rounded to whole steps (at least one)."""
        check_range("hedge.tenor_years", tenor_years, 0.0, 100.0, lo_closed=False)
        check_range("hedge.roll_years", roll_years, 0.0, 100.0, lo_closed=False)
        program = cls(budget=budget, strike=strike, tenor_steps=max(1, round(tenor_years * steps_per_year)),
                      roll_steps=max(1, round(roll_years * steps_per_year)), strike_mode=strike_mode,
                      option_cost=option_cost)
        program.validate()
        return program

    @property
    def n_tranches(self) -> int:
        return -(-self.tenor_steps // self.roll_steps)

    def validate(self, n_steps: int | None = None) -> None:
        check_range("hedge.budget", self.budget, 0.0, 1.0)
        if self.strike_mode not in _STRIKE_MODES:
            raise ParameterError(f"hedge.strike_mode = {self.strike_mode!r}; allowed: {list(_STRIKE_MODES)}")
        if self.strike_mode == "moneyness":
            check_range("hedge.strike (moneyness K/S)", self.strike, 0.0, 10.0, lo_closed=False)
        else:
            check_range("hedge.strike (absolute put delta)", self.strike, 0.0, 1.0, lo_closed=False, hi_closed=False)
        check_int("hedge.tenor_steps", self.tenor_steps, 1)
        check_int("hedge.roll_steps", self.roll_steps, 1)
        check_range("hedge.option_cost", self.option_cost, 0.0, 1.0, hi_closed=False)
        if n_steps is not None and self.roll_steps > n_steps:
            raise ParameterError(
                f"hedge.roll_steps = {self.roll_steps} is longer than the horizon of {n_steps} steps; "
                f"allowed: a roll interval <= the horizon")

    def new_strike(self, tau, level, vol_model: ImpliedVolModel, rate):
        """Moneyness ``K / S`` of a new put ``[n]``; for a delta target, solved with the skew
        by fixed-point iteration on ``log k = (r + sigma^2/2) tau + N^-1(delta) sigma sqrt tau``."""
        if self.strike_mode == "moneyness":
            return jnp.broadcast_to(_f(self.strike), jnp.shape(level))
        z = ndtri(_f(self.strike))
        sd = jnp.sqrt(tau)
        k = jnp.ones_like(level)
        for _ in range(16):  # a contraction (factor |N^-1(delta)| * skew, 0.4 at 0.3 skew)
            sig = vol_model.vol(k, tau, level)
            k = jnp.exp((rate + 0.5 * sig * sig) * tau + z * sig * sd)
        return k


# --------------------------------------------------------------------------- monetization


class HedgeObs(NamedTuple):
    """What a monetization policy sees at the end of a step (after the move, before trades).
    Prices are per put in units of the initial spot ``S_0``."""

    r: jax.Array  # float32[n], the step's asset return
    spot: jax.Array  # float32[n], S_t / S_0
    marks: jax.Array  # float32[L, n], put value now
    paid: jax.Array  # float32[L, n], price paid per put
    bought_at: jax.Array  # float32[L, n], spot at purchase
    live: jax.Array  # bool[L, n], the tranche holds unexpired puts
    tau: jax.Array  # float32[L, 1], years to expiry
    vol_level: jax.Array  # float32[n], the ATM implied vol level now
    process_state: Any  # the return model's state (the true regime, for an oracle)
    step: jax.Array  # int32, 1-based step index
    dt: float  # step length in years (static)


@pytree_dataclass
class Hold:
    """Hold every put to expiry (and roll on schedule)."""

    at_trade = True  # stateless and cheap: decided inside the step's trades (module docstring)
    __trace_attrs__ = ("at_trade",)  # a class-level switch of the traced code: part of the treedef

    def validate(self) -> None:
        pass

    def init(self, n: int, n_tranches: int, process=None):
        return ()

    def decide(self, state, obs: HedgeObs):
        return state, jnp.zeros_like(obs.marks)


@pytree_dataclass
class ProfitTake:
    """Sell ``fraction`` of a tranche when its mark reaches ``multiple`` x the price paid."""

    at_trade = True  # stateless and cheap: decided inside the step's trades (module docstring)
    __trace_attrs__ = ("at_trade",)  # a class-level switch of the traced code: part of the treedef

    multiple: float = 5.0
    fraction: float = 1.0

    def validate(self) -> None:
        check_range("monetize.multiple", self.multiple, 1.0, lo_closed=False)
        check_range("monetize.fraction", self.fraction, 0.0, 1.0, lo_closed=False)

    def init(self, n: int, n_tranches: int, process=None):
        return ()

    def decide(self, state, obs: HedgeObs):
        hit = obs.marks >= _f(self.multiple) * obs.paid
        return state, jnp.where(hit, _f(self.fraction), 0.0)


@pytree_dataclass
class PriceLevel:
    """Sell ``fraction`` of a tranche when the underlying is ``drop`` below its level at purchase."""

    at_trade = True  # stateless and cheap: decided inside the step's trades (module docstring)
    __trace_attrs__ = ("at_trade",)  # a class-level switch of the traced code: part of the treedef

    drop: float = 0.2
    fraction: float = 1.0

    def validate(self) -> None:
        check_range("monetize.drop", self.drop, 0.0, 1.0, lo_closed=False, hi_closed=False)
        check_range("monetize.fraction", self.fraction, 0.0, 1.0, lo_closed=False)

    def init(self, n: int, n_tranches: int, process=None):
        return ()

    def decide(self, state, obs: HedgeObs):
        hit = obs.spot <= (1.0 - _f(self.drop)) * obs.bought_at
        return state, jnp.where(hit, _f(self.fraction), 0.0)


class _RegimeMemory(NamedTuple):
    crash: jax.Array  # bool[n], the regime was crash after the previous step


@pytree_dataclass
class RegimeOracle:
    """Sell ``fraction`` of every tranche when the model's true regime turns crash -> calm.

    Needs a process whose state has ``regime`` (``sim.processes.RegimeSwitching``): the
    benchmark a crash detector (seed 000 §3) is measured against.
    """

    fraction: float = 1.0

    def validate(self) -> None:
        check_range("monetize.fraction", self.fraction, 0.0, 1.0, lo_closed=False)

    def init(self, n: int, n_tranches: int, process=None):
        return _RegimeMemory(jnp.zeros((n,), bool))

    def requires(self, process) -> tuple:
        return (protocols.TrueRegime,)

    def decide(self, state: _RegimeMemory, obs: HedgeObs):
        crash = obs.process_state.regime == 1
        ended = state.crash & ~crash
        return _RegimeMemory(crash), jnp.where(ended, _f(self.fraction), 0.0) * jnp.ones_like(obs.marks)




# --------------------------------------------------------------------------- the overlay


class HedgeState(NamedTuple):
    """Per-path state. Tranche arrays are ``[L, n]`` and change only when puts are traded;
    amounts are in units of the initial NAV ``W_0`` and prices of the initial spot ``S_0``.
    Which slot holds puts of what expiry follows from the roll schedule alone."""

    contracts: jax.Array  # float32[L, n], puts held x S_0 / W_0
    strike: jax.Array  # float32[L, n], K / S_0
    log_strike: jax.Array  # float32[L, n], log(K / S_0) (so that pricing takes one log per path, not per put)
    paid: jax.Array  # float32[L, n], premium per put / S_0
    bought_at: jax.Array  # float32[L, n], spot at purchase / S_0
    remaining: jax.Array  # int32[L, 1], steps to expiry of each slot's puts (<= 0: none held)
    spot: jax.Array  # float32[n], S_t / S_0
    nav: jax.Array  # float32[n], W_t / W_0
    hedge_value: jax.Array  # float32[n], the puts' mark / W_0 (at the start: their price and its cost)
    realized_var: jax.Array  # float32[n], EWMA of annualized squared returns
    premium: jax.Array  # float32[n], sum over purchases of premium / NAV at the time
    proceeds: jax.Array  # float32[n], sum over sales and expiries of proceeds / NAV
    costs: jax.Array  # float32[n], sum of trading costs / NAV
    sales: jax.Array  # int32[n], number of monetization sales (tranche-steps)
    monetize: Any  # the monetization policy's state


class _Mark(NamedTuple):
    """A step's market move and the puts re-marked (``HedgeOverlay._mark``)."""

    r: jax.Array  # float32[n], the asset return
    spot: jax.Array  # float32[n], S_t / S_0 after the move
    remaining: jax.Array  # int32[L, 1], steps to expiry after this step
    realized_var: jax.Array  # float32[n], the EWMA realized variance
    level: jax.Array  # float32[n], the ATM implied vol level
    tau: jax.Array  # float32[L, 1], years to expiry
    marks: jax.Array  # float32[L, n], put value now, per S_0
    held: jax.Array  # bool[L, 1], the slot's puts were alive before this step
    process_state: Any
    t: jax.Array
    dt: float

    def alive(self, contracts):
        """``[L, n]``: the tranche still holds puts after this step."""
        return self.held & (self.remaining > 0) & (contracts > 0)


class _Trades(NamedTuple):
    """Per-path totals ``[n]`` of a step's trades and the tranches after them (``_trade``)."""

    value: jax.Array
    sold: jax.Array
    expired: jax.Array
    n_sales: jax.Array
    rolled_spend: jax.Array
    tranches: tuple


@pytree_dataclass
class HedgeOverlay:
    """Equity at a constant fraction plus a put program: an engine policy (``sim.engine``).

    Args:
      fraction: equity weight ``f`` of NAV, rebalanced every step.
      risk_free: annual rate on cash (also the options' rate).
      floor: the engine's ruin floor as a fraction of initial wealth.
      program: ``HedgeProgram``; vol_model: ``ImpliedVolModel``; monetize: a monetization
        policy (``Hold``, ``ProfitTake``, ``PriceLevel``, ``RegimeOracle`` or your own).

    ``outputs`` gives per path: ``premium`` and ``proceeds`` (sums of premium paid and of
    sale/expiry proceeds, each as a fraction of the NAV at the time), ``costs``, ``sales``
    (number of monetizations) and ``hedge_value`` (the puts' mark / NAV at the end).
    """

    fraction: float = 1.0
    risk_free: float = 0.0
    floor: float = 0.0
    program: HedgeProgram = HedgeProgram()
    vol_model: ImpliedVolModel = ImpliedVolModel()
    monetize: Any = Hold()

    def validate(self, dt: float | None = None, n_steps: int | None = None) -> None:
        check_range("fraction", self.fraction, 0.0, 10.0)
        check_range("risk_free", self.risk_free, -1.0, 10.0, lo_closed=False)
        check_range("floor", self.floor, 0.0, 1.0, hi_closed=False)
        if not isinstance(self.program, HedgeProgram):
            raise ParameterError(f"program must be a sim.hedge.HedgeProgram, got {type(self.program).__name__}")
        self.program.validate(n_steps)
        self.vol_model.validate()
        if not (hasattr(self.monetize, "init") and hasattr(self.monetize, "decide")):
            raise ParameterError(f"monetize must have init/decide (see sim.hedge), got {type(self.monetize).__name__}")
        if hasattr(self.monetize, "validate"):
            self.monetize.validate()
        if self._at_trade and (getattr(self.monetize, "restrike", None) is not None
                               or jax.tree.leaves(self.monetize.init(1, self.program.n_tranches))):
            raise ParameterError(f"monetize = {type(self.monetize).__name__} has at_trade = True, which needs a policy "
                                 "with no state and no restrike (see sim.hedge)")

    def requires(self, process) -> tuple:
        """The capabilities of the process this overlay needs (``sim.protocols``): checked by
        the engine before compilation."""
        if self.vol_model.source == "model" and not protocols.supports(process, protocols.ImpliedVolQuote):
            protocols.require(process, protocols.ConditionalVol, needed_by="vol_model.source = 'model'")
        return tuple(getattr(self.monetize, "requires", lambda p: ())(process))

    # -- the kernel -------------------------------------------------------------------------

    def _buy(self, level, spot, nav, dt: float):
        """A purchase for ``budget * roll_years`` of the NAV: (contracts, strike, price per put,
        spend, cost), per path, amounts per ``W_0``, prices per ``S_0``."""
        prog, vm = self.program, self.vol_model
        tau = _f(prog.tenor_steps * dt)
        rate = _f(self.risk_free)
        k = prog.new_strike(tau, level, vm, rate)
        price = spot * put_price(k, tau, vm.vol(k, tau, level), rate)
        cost = _f(prog.option_cost)
        ok = (price > 0) & (nav > 0)  # nothing to buy on a path whose underlying or NAV is gone
        spend = jnp.where(ok, _f(prog.budget) * _f(prog.roll_steps * dt) * nav, 0.0)
        contracts = spend / ((1.0 + cost) * jnp.where(ok, price, 1.0))
        return contracts, k * spot, price, spend, spend * cost / (1.0 + cost)

    def init(self, n: int, dt: float, process=None, process_state=None) -> HedgeState:
        L = self.program.n_tranches
        var0 = jnp.full((n,), _f(self.vol_model.long_run_vol) ** 2)
        level = (self.vol_model.atm_level(var0, process, process_state, dt) if process is not None
                 else jnp.sqrt(var0) + _f(self.vol_model.vrp))
        one = jnp.ones((n,), _F32)
        contracts, strike, price, spend, cost = self._buy(level, one, one, dt)
        first = (jnp.arange(L) == 0)[:, None]
        col = lambda x, other: jnp.where(first, x, other)  # noqa: E731
        z = jnp.zeros((n,), _F32)
        return HedgeState(
            contracts=col(contracts, 0.0), strike=col(strike, 1.0), log_strike=col(jnp.log(strike), 0.0),
            paid=col(price, 1.0), bought_at=col(one, 1.0),
            remaining=jnp.where(first, self.program.tenor_steps, -1).astype(jnp.int32),
            spot=one, nav=one, hedge_value=spend, realized_var=var0,
            premium=spend, proceeds=z, costs=cost, sales=jnp.zeros((n,), jnp.int32),
            monetize=self.monetize.init(n, L, process),
        )

    @property
    def _at_trade(self) -> bool:
        return backend.decide_at_trade(self.monetize)

    # The step, in four parts: the market moves and the puts are re-marked (``_mark``); the
    # monetization policy decides (``_decide``); expiries pay, sales and roll-downs trade
    # (``_trade``); the slot that comes round buys and the NAV is accounted (``_roll``).

    def step(self, key, s: HedgeState, r, process, process_state, t, dt: float):
        m = self._mark(s, r, process, process_state, t, dt)
        if self._at_trade:  # decided inside the trades, from their operands (sim.backend)
            mstate, sell, roll_down = s.monetize, (), ()
        else:
            mstate, sell, roll_down = backend.materialize(t, functools.partial(self._decide, s, m), s.contracts,
                                                          m.marks)
        tranche = (s.strike, s.log_strike, s.paid, s.bought_at)  # changed here by roll-downs only
        trades = backend.materialize(t, functools.partial(self._trade, s, m), s.contracts, m.marks, sell, roll_down,
                                     *(tranche if roll_down else ()))
        return self._roll(s, m, trades, tranche, mstate, t, dt)

    def _mark(self, s: HedgeState, r, process, process_state, t, dt: float) -> "_Mark":
        vm = self.vol_model
        rate = _f(self.risk_free)
        spot = s.spot * (1.0 + r)
        remaining = s.remaining - 1
        w = vm.ewma_weight()
        var = (1.0 - w) * s.realized_var + w * r * r / dt
        level = vm.atm_level(var, process, process_state, dt)
        tau = jnp.maximum(remaining, 0).astype(_F32) * dt  # [L, 1]
        up = spot > 0
        safe_spot = jnp.where(up, spot, 1.0)
        moneyness = s.strike * (1.0 / safe_spot)
        log_m = s.log_strike - jnp.log(safe_spot)  # for the smile and for d1
        price = put_price(moneyness, tau, vm.vol(moneyness, tau, level, log_m), rate, log_m)
        return _Mark(r=r, spot=spot, remaining=remaining, realized_var=var, level=level, tau=tau,
                     marks=jnp.where(up, spot * price, s.strike), held=s.remaining >= 1,
                     process_state=process_state, t=t, dt=dt)

    def _decide(self, s: HedgeState, m: "_Mark", contracts, marks):
        """The monetization policy's decision (and roll down) on the new marks:
        ``(policy state, sell [L, n], roll_down)``."""
        obs = HedgeObs(r=m.r, spot=m.spot, marks=marks, paid=s.paid, bought_at=s.bought_at,
                       live=m.alive(contracts), tau=m.tau, vol_level=m.level, process_state=m.process_state,
                       step=m.t, dt=m.dt)
        mstate, sell = self.monetize.decide(s.monetize, obs)
        sell = jnp.where(obs.live, jnp.clip(sell, 0.0, 1.0), 0.0)
        restrike = getattr(self.monetize, "restrike", None)
        if restrike is None:
            return mstate, sell, ()
        vm, rate = self.vol_model, _f(self.risk_free)
        reinvest, k_roll = restrike(mstate, obs)
        k_roll = jnp.asarray(k_roll, _F32)
        roll_price = m.spot * put_price(k_roll, m.tau, vm.vol(k_roll, m.tau, m.level), rate)
        reinvest = jnp.where(obs.live & (roll_price > 0), jnp.clip(reinvest, 0.0, 1.0), 0.0)
        return mstate, sell, (reinvest, k_roll, roll_price)

    def _trade(self, s: HedgeState, m: "_Mark", contracts, marks, sell, roll_down, *tranche) -> "_Trades":
        """Expiries pay into cash; the policy sells at the marks; a roll-down sells what is
        left of a tranche and reinvests a share in puts struck at ``k_roll`` x spot, same
        expiry (seed 000 §3.2 step 2). Returns per-path totals ``[n]`` and the new tranches."""
        held, remaining, spot = m.held, m.remaining, m.spot
        opt_cost = _f(self.program.option_cost)
        value = jnp.where(held, contracts * marks, 0.0)  # [L, n], per W_0
        live = m.alive(contracts)
        if self._at_trade:
            sell = self._decide(s, m, contracts, marks)[1]
        sold = sell * value
        expired = backend.tranche_sum(jnp.where(held & (remaining == 0), value, 0.0))
        n_sales = backend.tranche_sum((sell > 0).astype(jnp.int32))
        new_contracts = jnp.where(live, contracts * (1.0 - sell), 0.0)
        rolled_spend = jnp.zeros_like(spot)
        if roll_down:
            strike, log_strike, paid, bought_at = tranche
            reinvest, k_roll, price = roll_down
            rolls = reinvest > 0
            rest = jnp.where(rolls, value - sold, 0.0)
            sold = sold + rest
            spend = reinvest * rest
            new_contracts = jnp.where(rolls, spend / ((1.0 + opt_cost) * jnp.where(rolls, price, 1.0)), new_contracts)
            strike = jnp.where(rolls, k_roll * spot, strike)
            log_strike = jnp.where(rolls, jnp.log(k_roll) + jnp.log(spot), log_strike)  # logs per path
            paid = jnp.where(rolls, price, paid)
            bought_at = jnp.where(rolls, spot, bought_at)
            rolled_spend = backend.tranche_sum(spend)
            tranche = (strike, log_strike, paid, bought_at)
        return _Trades(backend.tranche_sum(value), backend.tranche_sum(sold), expired, n_sales, rolled_spend,
                       (new_contracts, *tranche))

    def _roll(self, s: HedgeState, m: "_Mark", trades: "_Trades", tranche, mstate, t, dt: float):
        """The slot that comes round buys (computed on roll steps only); the NAV, the portfolio
        return ``x`` and the per-NAV running totals."""
        prog = self.program
        f, rf = _f(self.fraction), per_step_mean(_f(self.risk_free), dt)
        opt_cost = _f(prog.option_cost)
        spot = m.spot
        total, total_sold, expired, n_sales, rolled_spend, tranches = trades
        contracts, strike, log_strike, paid, bought_at = tranches if len(tranches) == 5 else (tranches[0], *tranche)
        cash = s.nav * (1.0 - f) - s.hedge_value
        nav_market = s.nav * f * (1.0 + m.r) + cash * (1.0 + rf) + total
        rolled_cost = rolled_spend * opt_cost / (1.0 + opt_cost)
        kept = total - total_sold - expired + rolled_spend - rolled_cost
        sale_cost = opt_cost * total_sold + rolled_cost
        roll = (t % prog.roll_steps) == 0
        slot = ((t // prog.roll_steps) % prog.n_tranches)
        nav_before_buy = nav_market - sale_cost

        def buy(args):
            contracts, strike, log_strike, paid, bought_at, remaining = args
            c, k, price, spend, cost = self._buy(m.level, spot, nav_before_buy, dt)
            mine = (jnp.arange(prog.n_tranches) == slot)[:, None]
            new = (jnp.where(mine, c, contracts), jnp.where(mine, k, strike), jnp.where(mine, jnp.log(k), log_strike),
                   jnp.where(mine, price, paid), jnp.where(mine, spot, bought_at),
                   jnp.where(mine, prog.tenor_steps, remaining))
            return new, c * price, spend, cost

        def no_buy(args):
            z = jnp.zeros_like(spot)
            return args, z, z, z

        (contracts, strike, log_strike, paid, bought_at, remaining), bought_value, spend, buy_cost = lax.cond(
            roll, buy, no_buy, (contracts, strike, log_strike, paid, bought_at, m.remaining))
        nav = nav_before_buy - buy_cost
        x = nav / _positive(s.nav) - 1.0  # a wiped-out path stays at -1 (the engine freezes it)
        inv_nav = 1.0 / _positive(nav_market)
        state = HedgeState(
            contracts=contracts, strike=strike, log_strike=log_strike, paid=paid, bought_at=bought_at,
            remaining=remaining, spot=spot, nav=nav, hedge_value=kept + bought_value, realized_var=m.realized_var,
            premium=s.premium + spend / _positive(nav_before_buy) + rolled_spend * inv_nav,
            proceeds=s.proceeds + (total_sold + expired) * inv_nav,
            costs=s.costs + (sale_cost + buy_cost) * inv_nav,
            sales=s.sales + n_sales, monetize=mstate,
        )
        return state, x

    def outputs(self, s: HedgeState) -> dict:
        hedge_value = s.hedge_value / _positive(s.nav)
        out = dict(premium=s.premium, proceeds=s.proceeds, costs=s.costs, sales=s.sales, hedge_value=hedge_value,
                   net_pnl=s.proceeds + hedge_value - s.premium - s.costs)
        if hasattr(self.monetize, "outputs"):
            out.update(self.monetize.outputs(s.monetize))
        return out


# --------------------------------------------------------------------------- growth-optimal hedge


def with_parameters(overlay: HedgeOverlay, *, fraction=None, budget=None, strike=None) -> HedgeOverlay:
    """A copy of ``overlay`` with the equity fraction, the budget or the strike replaced."""
    program = overlay.program
    program = dataclasses.replace(program, **{k: v for k, v in dict(budget=budget, strike=strike).items()
                                              if v is not None})
    return dataclasses.replace(overlay, program=program,
                               **({} if fraction is None else dict(fraction=fraction)))


_NAMES = ("fraction", "budget", "strike")


def _growth(theta, seed, process, overlay, n_blocks, block_size, n_steps, dt):
    """Mean time-average growth (per year) of the overlay with ``theta = (fraction, budget,
    strike)`` on the engine's draws for ``seed`` (common random numbers across ``theta``)."""
    ov = with_parameters(overlay, **dict(zip(_NAMES, theta)))
    return engine.mean_growth(seed, process, ov, n_paths=n_blocks * block_size, block_size=block_size,
                              n_steps=n_steps, dt=dt)


growth_on_draws = jax.jit(_growth, static_argnums=(4, 5, 6, 7))
growth_on_draws.__doc__ = """Jitted ``(mean growth, its SE)`` of the overlay at ``theta = (fraction, budget,
strike)``: ``growth_on_draws(theta, seed, process, overlay, n_blocks, block_size, n_steps, dt)``."""


@functools.partial(jax.jit, static_argnums=(4, 5, 6, 7))
def _growth_and_grad(theta, seed, process, overlay, n_blocks, block_size, n_steps, dt):
    """Growth, its standard error and its gradient in ``theta`` (forward mode: three
    tangents, memory independent of the number of steps)."""
    def g(th):
        return _growth(th, seed, process, overlay, n_blocks, block_size, n_steps, dt)

    value, se = g(theta)
    grads = jax.vmap(lambda v: jax.jvp(lambda th: g(th)[0], (theta,), (v,))[1])(jnp.eye(3, dtype=_F32))
    return value, se, grads


class HedgeOptimum(NamedTuple):
    fraction: float
    budget: float
    strike: float
    growth: float  # mean time-average growth per year at the optimum, on the optimizer's draws
    growth_se: float
    gradient: tuple  # at the optimum (components at an active bound may be non-zero)
    iterations: int
    converged: bool
    history: list  # (iteration, fraction, budget, strike, growth) per iteration
    grid_check_gain: float = float("nan")  # best gain of a local grid point over the answer (<= 1e-6: none)


_PROBE = 1e-3  # probe step, in units of each parameter's range
_PROBE_GAIN = 1e-6  # per year: smaller gains are below the float32 resolution of the mean growth


def local_grid_check(theta, bounds, args, steps=(-0.1, -0.025, 0.025, 0.1)) -> dict:
    """Growth at ``theta`` against a grid around it (each coordinate moved by ``steps`` x its
    range, inside the bounds) on the same draws (``args`` as for ``growth_on_draws``): ``ok``
    when no grid point beats it by more than float32 resolution; ``best`` the best point."""
    theta = np.asarray(theta, np.float64)
    lo, hi = np.array([b[0] for b in bounds], np.float64), np.array([b[1] for b in bounds], np.float64)
    base = float(growth_on_draws(jnp.asarray(theta, _F32), *args)[0])
    best, best_gain = theta, 0.0
    for i in range(3):
        for k in steps:
            p = theta.copy()
            p[i] = np.clip(p[i] + k * (hi[i] - lo[i]), lo[i], hi[i])
            gain = float(growth_on_draws(jnp.asarray(p, _F32), *args)[0]) - base
            if gain > best_gain:
                best, best_gain = p, gain
    return {"ok": best_gain <= _PROBE_GAIN, "best_gain": best_gain, "best": best}


def optimize_hedge(process, overlay: HedgeOverlay, *, seed: int = 0, n_paths: int = 2048, n_steps: int = 1260,
                   steps_per_year: float = 252.0, block_size: int = 1024,
                   bounds=((0.0, 2.0), (0.0, 0.1), (0.5, 1.0)), x0=None, max_iter: int = 100,
                   gtol: float = 1e-4, progress=None, restarts: int = 5) -> HedgeOptimum:
    """``_optimize_hedge_local`` (the docstring there), then the local grid check
    (``local_grid_check``) on the same draws: where a grid point is better (the growth is not
    concave in theta: kinks from the puts' strikes and counts), the search restarts from it,
    at most ``restarts`` times. ``converged`` means: the local search converged and no grid
    point around the answer is better."""
    bs = min(block_size, n_paths)
    args = (seed, process, overlay, -(-n_paths // bs), bs, n_steps, 1.0 / float(steps_per_year))
    total_it, history = 0, []
    for _ in range(restarts + 1):
        opt = _optimize_hedge_local(process, overlay, seed=seed, n_paths=n_paths, n_steps=n_steps,
                                    steps_per_year=steps_per_year, block_size=block_size, bounds=bounds, x0=x0,
                                    max_iter=max_iter, gtol=gtol, progress=progress)
        total_it += opt.iterations
        history += opt.history
        check = local_grid_check([opt.fraction, opt.budget, opt.strike], bounds, args)
        if not opt.converged or check["ok"]:
            break
        x0 = check["best"]
    return opt._replace(iterations=total_it, history=history, converged=bool(opt.converged and check["ok"]),
                        grid_check_gain=check["best_gain"])


def _check_hedge_search(process, overlay: HedgeOverlay, n_paths, n_steps, max_iter, gtol, bounds, steps_per_year):
    """Every argument of ``optimize_hedge``, checked before any work: ``(lo, hi, n_paths,
    n_steps, max_iter)``."""
    from sim.validation import check_int

    if overlay.program.strike_mode != "moneyness":
        raise ParameterError("optimize_hedge optimizes the strike as moneyness; set hedge.strike_mode='moneyness'")
    n_paths = check_int("n_paths", n_paths, 1)
    n_steps = check_int("n_steps", n_steps, 1)
    max_iter = check_int("max_iter", max_iter, 1)
    check_range("gtol", gtol, 0.0, lo_closed=False)
    lo = np.array([b[0] for b in bounds], np.float64)
    hi = np.array([b[1] for b in bounds], np.float64)
    if lo.shape != (3,) or not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi)) and np.all(hi > lo)):
        raise ParameterError(f"bounds must be three finite (lo, hi) pairs with hi > lo, got {bounds}")
    check_range("bounds on the fraction", lo[0], 0.0)
    check_range("bounds on the budget", lo[1], 0.0)
    check_range("bounds on the strike", lo[2], 0.0, lo_closed=False)
    protocols.check_run(process, overlay, dt=1.0 / steps_per_year, n_steps=n_steps)
    return lo, hi, n_paths, n_steps, max_iter


def _probe(value, u, g):
    """No ascent along the quasi-Newton direction. With a ruin floor, per-path growth has kinks
    in theta (a path that touches the floor freezes), so the optimum can sit on a kink where
    the gradient does not vanish. Probe every free coordinate by +-PROBE of its range on the
    same draws: returns the better point, or None when there is none (a local maximum)."""
    best_u, best_g = u, g
    for i in range(3):
        for sign in (-1.0, 1.0):
            u_p = u.copy()
            u_p[i] = np.clip(u_p[i] + sign * _PROBE, 0.0, 1.0)
            if u_p[i] != u[i]:
                g_p = value(u_p)
                if np.isfinite(g_p) and g_p > best_g + _PROBE_GAIN:
                    best_u, best_g = u_p, g_p
    return None if best_u is u else best_u


def _armijo_box(value, u, g, grad, direction):
    """Backtracking along ``direction`` inside the unit box: the accepted point, or None."""
    t = 1.0
    for _ in range(20):
        u_try = np.clip(u + t * direction, 0.0, 1.0)
        if np.abs(u_try - u).max() < 1e-7:
            return None
        g_try = value(u_try)
        if np.isfinite(g_try) and g_try >= g + 1e-4 * float(grad @ (u_try - u)):
            return u_try
        t *= 0.5
    return None


def _bfgs_update(inv_h, s_, y_):
    if inv_h is not None and float(s_ @ y_) > 1e-12 * float(np.linalg.norm(s_) * np.linalg.norm(y_)):
        rho = 1.0 / float(s_ @ y_)
        eye = np.eye(3)
        inv_h = (eye - rho * np.outer(s_, y_)) @ inv_h @ (eye - rho * np.outer(y_, s_)) + rho * np.outer(s_, s_)
    return inv_h


def _optimize_hedge_local(process, overlay: HedgeOverlay, *, seed: int = 0, n_paths: int = 2048, n_steps: int = 1260,
                          steps_per_year: float = 252.0, block_size: int = 1024,
                          bounds=((0.0, 2.0), (0.0, 0.1), (0.5, 1.0)), x0=None, max_iter: int = 100,
                          gtol: float = 1e-4, progress=None) -> HedgeOptimum:
    """The (equity fraction, yearly budget, strike moneyness) that maximize time-average growth
    of ``overlay`` on ``process`` on common random numbers, by a projected quasi-Newton method
    (BFGS in coordinates scaled to ``bounds``, the box's active bounds held, an Armijo
    backtracking line search on the value, which also steps back out of a wipe-out).

    Converged when the projected gradient (components pushing against an active bound do not
    count) is below ``gtol`` per unit of scaled coordinate (moving across the whole range of
    any free parameter changes the growth by less than ``gtol`` to first order), or, where no
    ascent along the quasi-Newton direction is possible (with a ruin floor the growth has kinks
    in theta, so the gradient need not vanish at the optimum), when no point 0.1% of a range
    away along any coordinate is better on the same draws. Otherwise ``converged=False`` (the
    point is then the best found, not an optimum). A budget of 0 at the optimum means the
    hedge does not pay for itself in growth on this model. ``progress(dict)`` is called after
    every iteration (iteration, theta, growth, gradient norm).
    """
    lo, hi, n_paths, n_steps, max_iter = _check_hedge_search(process, overlay, n_paths, n_steps, max_iter, gtol,
                                                             bounds, steps_per_year)
    start = np.array([overlay.fraction, overlay.program.budget, overlay.program.strike] if x0 is None else x0,
                     np.float64)
    block_size = min(block_size, n_paths)
    scale = hi - lo
    args = (seed, process, overlay, -(-n_paths // block_size), block_size, n_steps, 1.0 / float(steps_per_year))

    def theta_of(u):
        return jnp.asarray(lo + scale * u, _F32)

    def value(u):
        return float(growth_on_draws(theta_of(u), *args)[0])

    def value_grad(u):
        v, _, g = _growth_and_grad(theta_of(u), *args)
        return float(v), np.asarray(g, np.float64) * scale  # d growth / d u

    u = np.clip((start - lo) / scale, 0.0, 1.0)
    g, grad = value_grad(u)
    for _ in range(30):  # a wipe-out at the start: step back toward a smaller fraction
        if np.isfinite(g) and np.all(np.isfinite(grad)):
            break
        u = u * np.array([0.5, 1.0, 1.0])
        g, grad = value_grad(u)
    else:
        raise ParameterError(f"optimize_hedge: the growth is {g} at the start {lo + scale * u}; start from a "
                             "smaller fraction (x0)")
    inv_h = None  # BFGS approximation of the inverse of the negated Hessian, in u
    history, converged, it = [], False, 0
    for it in range(1, max_iter + 1):
        active = ((u <= 0.0) & (grad < 0)) | ((u >= 1.0) & (grad > 0))
        pg = np.where(active, 0.0, grad)
        pg_norm = float(np.abs(pg).max())
        history.append((it, *map(float, lo + scale * u), g))
        if progress is not None:
            progress(dict(iteration=it, theta=lo + scale * u, growth=g, projected_gradient=pg_norm))
        if pg_norm < gtol:
            converged = True
            break
        if inv_h is None:
            inv_h = np.eye(3) * (0.1 / pg_norm)  # a first step of 10% of the range
        direction = np.where(active, 0.0, inv_h @ pg)
        if not float(grad @ direction) > 0:  # not an ascent direction: restart from the gradient
            inv_h = np.eye(3) * (0.1 / pg_norm)
            direction = pg * (0.1 / pg_norm)
        u_try = _armijo_box(value, u, g, grad, direction)
        if u_try is None:
            u_try, inv_h = _probe(value, u, g), None  # the quasi-Newton model restarts from a better point
            if u_try is None:
                converged = True
                break
        g_new, grad_new = value_grad(u_try)
        if not (np.isfinite(g_new) and np.all(np.isfinite(grad_new))):
            break
        inv_h = _bfgs_update(inv_h, u_try - u, -(grad_new - grad))  # for the minimization of -g
        u, g, grad = u_try, g_new, grad_new
    theta = np.asarray(theta_of(u), np.float64)
    value_, se, grad_theta = _growth_and_grad(jnp.asarray(theta, _F32), *args)
    return HedgeOptimum(*map(float, theta), float(value_), float(se), tuple(map(float, grad_theta)), it, converged,
                        history)


# --------------------------------------------------------------------------- studies of a hedge


def paired_growth_difference(process, overlay: HedgeOverlay, theta_a, theta_b, *, seed: int, n_paths: int,
                             block_size: int, n_steps: int, steps_per_year: float) -> dict:
    """``sim.stats.paired_difference`` of per-path growth per year between two parameter
    vectors ``(fraction, budget, strike)`` of ``overlay``, on the same draws."""
    from sim import engine, stats

    def per_path(theta):
        theta = np.asarray(theta, np.float32)
        o = with_parameters(overlay, fraction=theta[0], budget=theta[1], strike=theta[2])
        return np.asarray(engine.path_growth(seed, process, o, n_paths=n_paths, block_size=block_size,
                                             n_steps=n_steps, dt=1.0 / steps_per_year, sequential=True), np.float64)

    return stats.paired_difference(per_path(theta_a), per_path(theta_b))


def compare_optima(best: HedgeOptimum, plain: HedgeOptimum, diff: dict) -> dict:
    """One row: the growth-optimal hedged point against the best unhedged one (``diff``: their
    paired growth difference). ``hedge_raises_growth`` is stated only when both searches
    converged (NaN otherwise: not known); ``status`` says whether the point is an optimum."""
    converged = best.converged and plain.converged  # each includes its local grid check
    return {
        "fraction": best.fraction, "budget": best.budget,
        "strike": best.strike if best.budget > 1e-6 else float("nan"), "growth": best.growth,
        "growth_se": best.growth_se, "converged": converged, "iterations": best.iterations,
        "unhedged_converged": plain.converged, "grid_check_best_gain": best.grid_check_gain,
        "status": "optimum" if converged else "NOT CONVERGED: the best point found, not an optimum",
        "unhedged_fraction": plain.fraction, "unhedged_growth": plain.growth,
        "growth_gain": diff["mean"], "growth_gain_se": diff["mean_se"],
        "paths_saved_by_hedge": diff["saved"], "paths_lost_by_hedge": diff["lost"],
        "hedge_raises_growth": (bool(best.budget > 1e-4 and diff["mean"] > 2 * diff["mean_se"]) if converged
                                else float("nan")),
    }


def replay_nav(process, policy, *, n_steps: int, steps_per_year: float):
    """One path of ``policy`` on a one-path ``process`` (a ``Replay``): its NAV ``[n_steps +
    1]`` from 1, and the ``SimResult`` (extras: the hedge's premium, proceeds, sales). For a
    dict of policies, ``{name: (nav, result)}``: all of them in one pass (``simulate_policies``)."""
    from sim import engine

    kw = dict(n_paths=1, n_steps=n_steps, steps_per_year=steps_per_year, block_size=1, record_paths=1,
              progress=lambda info: None)
    if isinstance(policy, dict):
        done = engine.simulate_policies(process, policy, **kw)
        return {name: (np.exp(res.recorded[:, 0].astype(np.float64)), res) for name, res in done.items()}
    res = engine.simulate(process, policy=policy, **kw)
    return np.exp(res.recorded[:, 0].astype(np.float64)), res


def crash_day(unhedged, hedged: HedgeOverlay, *, drop: float, premium_years: float, vol_before: float,
              vol_after: float, steps_per_year: float) -> dict:
    """The convexity argument as a scenario: a flat market for ``premium_years`` years at ATM
    implied vol ``vol_before`` (the overlay's skew on top), then one day of ``drop`` with the
    vol at ``vol_after``. The hedge's gain on that day (hedged minus unhedged return, a
    fraction of NAV) against the premium budgeted over the flat years."""
    from sim.processes import Replay

    check_range("event.drop", drop, -0.99, 0.0, hi_closed=False)
    check_range("event.vol_before", vol_before, 0.0, 5.0, lo_closed=False)
    check_range("event.vol_after", vol_after, 0.0, 5.0, lo_closed=False)
    n_flat = round(premium_years * steps_per_year)
    r = np.zeros(n_flat + 1)
    r[-1] = drop
    implied = np.full(n_flat + 1, vol_before)
    implied[-1] = vol_after
    process = Replay(r, implied)
    out = {}
    both = replay_nav(process, {"unhedged": unhedged, "hedged": hedged}, n_steps=n_flat + 1,
                      steps_per_year=steps_per_year)
    for name, (nav, res) in both.items():
        out[name] = {"nav_before": nav[-2], "nav_after": nav[-1], "day_return": nav[-1] / nav[-2] - 1.0,
                     "premium_paid": float(res.extras["premium"][0]) if res.extras else 0.0}
    h, u = out["hedged"], out["unhedged"]
    gain = h["day_return"] - u["day_return"]
    premium = hedged.program.budget * premium_years
    return {"drop": drop, "premium_years": premium_years, "premium_budgeted": premium,
            "premium_paid_fraction_of_nav": h["premium_paid"],
            "hedged_day_return": h["day_return"], "unhedged_day_return": u["day_return"],
            "hedge_gain_fraction_of_nav": gain, "payoff_over_premium": gain / premium if premium > 0 else float("nan"),
            "hedged_nav_after_vs_unhedged": h["nav_after"] / u["nav_after"] - 1.0,
            "atm_vol_before": vol_before, "atm_vol_after": vol_after}


def policy_comparison(model: str, results: dict, years: float, rng, n_boot: int) -> list[dict]:
    """Per monetization policy (``results``: name -> ``SimResult`` of the overlay on the same
    draws, ``hold`` among them): hedge value realized (sale and expiry proceeds), net hedge
    P&L, payoff multiple and growth, each described with bootstrap SEs (``sim.stats.
    describe``); the paired net P&L and growth against ``hold``; with a ``protocol`` policy its
    paired gain over each (mean, SE, median, share of paths it wins); sales per year and the
    share wiped out."""
    from sim import stats

    def net(res):  # per path and year: proceeds + final mark - premium - costs
        return res.extras["net_pnl"].astype(np.float64) / years

    def paired(a, b):
        d = stats.paired_difference(a, b)
        return d["mean"], d["mean_se"]

    rows, base = [], results["hold"]
    for name, res in results.items():
        ex = res.extras
        with np.errstate(divide="ignore", invalid="ignore"):
            multiple = ex["proceeds"].astype(np.float64) / ex["premium"]
        growth = res.stats.log_wealth.astype(np.float64) / years
        row = {"model": model, "policy": name, "n_paths": growth.size}
        for label, x in (("realized_per_year", ex["proceeds"].astype(np.float64) / years),
                         ("net_pnl_per_year", net(res)), ("payoff_multiple", multiple), ("growth", growth)):
            row.update({f"{label}_{k}": v for k, v in stats.describe(x, rng=rng, n_boot=n_boot).items()})
        row["net_pnl_vs_hold"], row["net_pnl_vs_hold_se"] = paired(net(res), net(base))
        if "protocol" in results:
            row["protocol_net_pnl_gain"], row["protocol_net_pnl_gain_se"] = paired(net(results["protocol"]), net(res))
            with np.errstate(invalid="ignore"):
                d = net(results["protocol"]) - net(res)
            row["protocol_net_pnl_gain_median"] = float(np.median(d[np.isfinite(d)]))
            row["protocol_wins_share"] = float(np.mean(d[np.isfinite(d)] > 0))
        row["growth_vs_hold"], row["growth_vs_hold_se"] = paired(growth, base.stats.log_wealth / years)
        row["sales_per_year"] = float(np.mean(ex["sales"]) / years)
        row["wiped_out"] = float(np.mean(~np.isfinite(growth)))
        rows.append(row)
    return rows


def protocol_verdicts(policies) -> list[str]:
    """Plain sentences from ``policy_comparison``'s rows: does the protocol beat each simple
    policy, per model? On net hedge P&L, paired on the same paths, at 2 standard errors."""
    out = []
    for model, g in policies.groupby("model", sort=False):
        if "protocol_net_pnl_gain" not in g:
            continue
        for _, row in g[g.policy != "protocol"].iterrows():
            d, se = row["protocol_net_pnl_gain"], row["protocol_net_pnl_gain_se"]
            verdict = "beats" if d > 2 * se else ("loses to" if d < -2 * se else "does not differ from")
            out.append(f"{model}: the protocol {verdict} {row['policy']} on net hedge P&L "
                       f"({100 * d:+.3f}% of NAV per year, SE {100 * se:.3f})")
    return out
