"""Crash phase-transition detection and the three-step monetization protocol (seed 000 §3-4).

Everything here is causal (step ``t`` uses only data up to ``t``), vectorized over paths,
and runs as a step function, so the same code runs inside the engine's scan on every
simulated path (``CrashProtocol``, a monetization policy for ``sim.hedge.HedgeOverlay``)
and over a real history (``run_detector``).

Signals (``Detector``), each an exponentially weighted mean (EWM) with pandas' default
``ewm(span).mean()`` weights (``adjust=True``), reproduced operation for operation so that
the seed's labels come out identical on real data:

1. kinematics: velocity = EWM of the first difference of the series (the seed uses the
   price; simulations use log price), acceleration = EWM of velocity's difference, jerk
   likewise (span ``span``);
2. vol-of-vol: the implied-vol level (VIX / 100 on real data; the hedge's implied-vol model
   in simulation), its slope (EWM of differences), a VVIX proxy = the annualized EWM
   realized vol of the implied vol's log changes (span ``vvix_span``), and its slope;
3. liquidity: the log bid-ask spread (``sim.market.Market`` in simulation; a Corwin-Schultz
   high-low proxy on real data), smoothed (span ``span``) against its slow EWM (span
   ``liquidity_span``): ``liquidity_z`` > ``broken`` is a fracture, a negative slope a refill;
4. correlation: the average pairwise correlation of the constituents from EWM second
   moments (span ``corr_span``), ``(E[(sum_i r_i)^2] - E[sum_i r_i^2]) / ((N - 1)
   E[sum_i r_i^2])`` (seed 003's implied-correlation formula with equal weights and equal
   vols: it needs only the two cross-sectional sums, so it costs O(1) per path whatever N),
   its slope, and the cross-sectional dispersion (std across constituents) of the step.

A missing input (NaN: no spread data, no constituents) leaves its signal NaN, and the
protocol treats a NaN signal as neutral: it neither blocks a sale nor holds one back.

The seed's reference labels (§4): HODL if velocity < 0 and acceleration < 0; else MONETIZE
if velocity < 0, acceleration > 0 and the VVIX slope < 0; else none (``seed_labels``).

The protocol (``Protocol``), a state machine per path (§3.2)::

    ARMED   -> CRASH     drawdown from the peak >= crash_drawdown and a HODL signal
    CRASH   -> PARTIAL   the phase transition: no HODL signal, acceleration converging
                         (velocity < 0 < acceleration), VIX and VVIX falling, spread falling,
                         correlation falling: sell partial_fraction of every live tranche
                         and roll the rest down (sell it, reinvest ``reinvest`` of its value
                         in puts struck at ``roll_moneyness`` x spot, same expiry)
    PARTIAL -> EXIT      the vol crush: spread back to normal, a V reversal (velocity > 0,
                         price ``rebound`` above the trough), realized vol >= rv_over_iv x
                         implied: sell everything
    CRASH, PARTIAL, EXIT -> ARMED (re-arm) when the drawdown from the pre-crash peak is back
                         under ``rearm_drawdown``; EXIT also re-arms after ``rearm_days``
                         steps, with the peak reset to the price then (a second leg down is
                         a new crash: 2008 after the 2007-08 one)

HODL = acceleration < 0 with velocity < 0, or VVIX rising with VIX, or a liquidity fracture
(any one). ``signals`` selects which of the four signal families the protocol uses.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sim import protocols
from sim.pytree import pytree_dataclass
from sim.validation import ParameterError, check_int, check_range

__all__ = [
    "signal_lead_lag", "protocol_events", "stage_table", "calm_table", "STAGE_EVENTS",
    "Ewm", "ewm_init", "ewm_update", "Detector", "DetectorState", "Signals", "Protocol", "ProtocolState",
    "CrashProtocol", "seed_labels", "run_detector", "corwin_schultz_spread", "ARMED", "CRASH", "PARTIAL", "EXIT",
    "STATE_NAMES", "LABEL_NAMES", "SIGNAL_FAMILIES",
]

ARMED, CRASH, PARTIAL, EXIT = 0, 1, 2, 3
STATE_NAMES = ("ARMED", "CRASH (HODL)", "PARTIAL MONETIZE", "FULL EXIT")
LABEL_NAMES = ("NO_SIGNAL", "REGIME_ACCELERATION (HODL)", "PHASE_TRANSITION (MONETIZE)")
SIGNAL_FAMILIES = ("kinematics", "vol_of_vol", "liquidity", "correlation")


# --------------------------------------------------------------------------- pandas-exact EWM


class Ewm(NamedTuple):
    mean: jax.Array  # the EWM so far (NaN before the first observation)
    weight: jax.Array  # pandas' ``old_wt`` as the next step will use it (decayed once started)
    product: jax.Array  # ``weight * mean``, rounded (see ``ewm_update``)


def ewm_init(shape, dtype=jnp.float32) -> Ewm:
    nan = jnp.full(shape, jnp.nan, dtype)
    return Ewm(nan, jnp.ones(shape, dtype), nan)


def span_alpha(span, dtype=jnp.float32):
    """pandas' ``alpha`` for ``span``: ``1 / (1 + com)``, ``com = (span - 1) / 2``."""
    return 1.0 / (1.0 + (jnp.asarray(span, dtype) - 1.0) / 2.0)


def ewm_update(e: Ewm, x, alpha) -> Ewm:
    """One step of ``Series.ewm(alpha=alpha, adjust=True, ignore_na=False).mean()``.

    pandas' kernel: once started, ``old_wt *= 1 - alpha`` each step; an observation ``x``
    gives ``mean = (old_wt * mean + x) / (old_wt + 1)`` (skipped when ``mean == x``) and
    ``old_wt += 1``; a NaN observation only decays ``old_wt``; the first observation starts
    the mean. The decayed weight and the product ``old_wt * mean`` are computed at the end of
    the previous step and carried: XLA's CPU backend would otherwise contract a multiply and
    the add after it into one FMA (1 ulp off pandas). Carried, they are rounded as pandas
    rounds them, so float64 results are pandas' bit for bit.
    """
    x = jnp.asarray(x, e.mean.dtype)
    obs = x == x
    started = e.mean == e.mean
    upd = (e.product + x) / (e.weight + 1.0)
    mean = jnp.where(started, jnp.where(obs & (e.mean != x), upd, e.mean), jnp.where(obs, x, e.mean))
    weight = jnp.where(started & obs, e.weight + 1.0, e.weight)
    weight = jnp.where(mean == mean, weight * (1.0 - alpha), weight)
    return Ewm(mean, weight, weight * mean)


# --------------------------------------------------------------------------- the detector


class Signals(NamedTuple):
    velocity: jax.Array
    acceleration: jax.Array
    jerk: jax.Array
    vix: jax.Array
    vix_slope: jax.Array
    vvix: jax.Array
    vvix_slope: jax.Array
    liquidity_z: jax.Array
    liquidity_slope: jax.Array
    correlation: jax.Array
    correlation_slope: jax.Array
    dispersion: jax.Array
    realized_vol: jax.Array


class DetectorState(NamedTuple):
    prev_x: jax.Array
    vel: Ewm
    prev_vel: jax.Array
    acc: Ewm
    prev_acc: jax.Array
    jerk: Ewm
    prev_vix: jax.Array
    vix_slope: Ewm
    vix_var: Ewm  # of squared log changes of the implied vol (the VVIX proxy)
    prev_vvix: jax.Array
    vvix_slope: Ewm
    liq: Ewm
    liq_slow: Ewm
    prev_liq: jax.Array
    liq_slope: Ewm
    sum_sq: Ewm  # of (sum_i r_i)^2
    sq_sum: Ewm  # of sum_i r_i^2
    prev_corr: jax.Array
    corr_slope: Ewm
    realized_var: Ewm


@pytree_dataclass
class Detector:
    """The four signal families of seed 000 §3.1 (see the module docstring).

    Args:
      span: EWM span of the kinematics and of every slope (the seed's ``window``), >= 1.
      vvix_span: span of the VVIX proxy (realized vol of the implied vol), >= 1.
      liquidity_span: span of the slow "normal" spread level, >= span.
      corr_span: span of the correlation estimate, >= 1.
      rv_span: span of the realized vol compared with implied in the exit rule, >= 1.
    """

    span: float = 5.0
    vvix_span: float = 20.0
    liquidity_span: float = 250.0
    corr_span: float = 20.0
    rv_span: float = 10.0

    def validate(self) -> None:
        check_range("detector.span", self.span, 1.0, 1e5)
        check_range("detector.vvix_span", self.vvix_span, 1.0, 1e5)
        check_range("detector.liquidity_span", self.liquidity_span, self.span, 1e6)
        check_range("detector.corr_span", self.corr_span, 1.0, 1e5)
        check_range("detector.rv_span", self.rv_span, 1.0, 1e5)

    def init(self, n: int, dtype=jnp.float32) -> DetectorState:
        e = lambda *shape: ewm_init(shape or (n,), dtype)  # noqa: E731
        nan = jnp.full((n,), jnp.nan, dtype)
        return DetectorState(
            prev_x=nan, vel=e(), prev_vel=nan, acc=e(), prev_acc=nan, jerk=e(), prev_vix=nan, vix_slope=e(),
            vix_var=e(), prev_vvix=nan, vvix_slope=e(), liq=e(), liq_slow=e(), prev_liq=nan, liq_slope=e(),
            sum_sq=e(), sq_sum=e(), prev_corr=nan, corr_slope=e(), realized_var=e(),
        )

    def update(self, s: DetectorState, *, x, vix, r, dt: float, vvix=None, log_spread=None, stock_sum=None,
               stock_sumsq=None, n_stocks=None):
        """One step. ``x`` the series for the kinematics ([n]), ``vix`` the implied vol level,
        ``r`` the step's simple return; optional ``vvix`` (an observed vol-of-vol, else the
        proxy), ``log_spread`` ([n], NaN where unknown), and the constituents' step returns
        as ``stock_sum`` = sum_i r_i, ``stock_sumsq`` = sum_i r_i^2 over ``n_stocks`` names."""
        dtype = s.prev_x.dtype
        a = span_alpha(self.span, dtype)
        x = jnp.asarray(x, dtype)
        vel = ewm_update(s.vel, x - s.prev_x, a)
        acc = ewm_update(s.acc, vel.mean - s.prev_vel, a)
        jerk = ewm_update(s.jerk, acc.mean - s.prev_acc, a)

        vix = jnp.asarray(vix, dtype)
        vix_slope = ewm_update(s.vix_slope, vix - s.prev_vix, a)
        dlog = jnp.log(vix / s.prev_vix)
        vix_var = ewm_update(s.vix_var, dlog * dlog, span_alpha(self.vvix_span, dtype))
        vvix_now = jnp.sqrt(vix_var.mean / dt) if vvix is None else jnp.asarray(vvix, dtype)
        vvix_slope = ewm_update(s.vvix_slope, vvix_now - s.prev_vvix, a)

        if log_spread is None:
            log_spread = jnp.full_like(x, jnp.nan)
        liq = ewm_update(s.liq, log_spread, a)
        liq_slow = ewm_update(s.liq_slow, log_spread, span_alpha(self.liquidity_span, dtype))
        liq_now = jnp.where(jnp.isfinite(log_spread), liq.mean, jnp.nan)
        liq_slope = ewm_update(s.liq_slope, liq_now - s.prev_liq, a)

        ac = span_alpha(self.corr_span, dtype)
        if stock_sum is None:
            stock_sum = stock_sumsq = jnp.full_like(x, jnp.nan)
            n_stocks = 2
        m1, m2 = jnp.asarray(stock_sum, dtype), jnp.asarray(stock_sumsq, dtype)
        n_st = jnp.asarray(n_stocks, dtype)
        sum_sq = ewm_update(s.sum_sq, m1 * m1, ac)
        sq_sum = ewm_update(s.sq_sum, m2, ac)
        # E[(sum r)^2] = sum var_i + sum_{i != j} cov_ij: the average correlation with the
        # vols taken equal (seed 003's implied-correlation formula, equal weights and vols).
        corr = (sum_sq.mean - sq_sum.mean) / ((n_st - 1.0) * jnp.where(sq_sum.mean > 0, sq_sum.mean, jnp.nan))
        corr_slope = ewm_update(s.corr_slope, corr - s.prev_corr, a)
        mean_r = m1 / n_st
        dispersion = jnp.sqrt(jnp.maximum(m2 / n_st - mean_r * mean_r, 0.0))

        r = jnp.asarray(r, dtype)
        realized_var = ewm_update(s.realized_var, r * r / dt, span_alpha(self.rv_span, dtype))

        state = DetectorState(
            prev_x=x, vel=vel, prev_vel=vel.mean, acc=acc, prev_acc=acc.mean, jerk=jerk, prev_vix=vix,
            vix_slope=vix_slope, vix_var=vix_var, prev_vvix=vvix_now, vvix_slope=vvix_slope, liq=liq,
            liq_slow=liq_slow, prev_liq=liq_now, liq_slope=liq_slope, sum_sq=sum_sq, sq_sum=sq_sum,
            prev_corr=corr, corr_slope=corr_slope, realized_var=realized_var)
        signals = Signals(
            velocity=vel.mean, acceleration=acc.mean, jerk=jerk.mean, vix=vix, vix_slope=vix_slope.mean,
            vvix=vvix_now, vvix_slope=vvix_slope.mean, liquidity_z=liq_now - liq_slow.mean,
            liquidity_slope=liq_slope.mean, correlation=corr, correlation_slope=corr_slope.mean,
            dispersion=dispersion, realized_vol=jnp.sqrt(realized_var.mean))
        return state, signals


def seed_labels(sig: Signals):
    """The seed's ``CrashPhysicsDetector.detect_regime`` labels as ints (``LABEL_NAMES``)."""
    accelerating = (sig.velocity < 0) & (sig.acceleration < 0)
    decelerating = (sig.velocity < 0) & (sig.acceleration > 0)
    fear_receding = sig.vvix_slope < 0
    return jnp.where(accelerating, 1, jnp.where(decelerating & fear_receding, 2, 0)).astype(jnp.int32)


# --------------------------------------------------------------------------- the protocol


class ProtocolState(NamedTuple):
    state: jax.Array  # int32[n], ARMED / CRASH / PARTIAL / EXIT
    peak: jax.Array  # [n], the series' running peak while ARMED (frozen in a crash)
    trough: jax.Array  # [n], the running low since the crash was detected
    action: jax.Array  # int32[n], this step: 0 none, 1 partial monetize (+ roll down), 2 full exit
    age: jax.Array  # int32[n], steps spent in the current state


@pytree_dataclass
class Protocol:
    """The three-step protocol's thresholds (see the module docstring).

    Args:
      crash_drawdown: drawdown from the peak that, with a HODL signal, enters CRASH, in (0, 1).
      rearm_drawdown: drawdown under which the protocol re-arms, in [0, crash_drawdown).
      rearm_days: steps after a full exit after which the protocol re-arms anyway, >= 1.
      broken: log spread above normal that marks a liquidity fracture, > 0.
      normal: log spread above normal still counted as "depth normal", in [0, broken].
      rebound: rise from the trough that confirms a V reversal, >= 0.
      rv_over_iv: realized / implied vol ratio required for the full exit, >= 0.
      partial_fraction: share of the hedge sold at the phase transition, in (0, 1].
      reinvest: share of the rest's value reinvested in rolled-down puts, in [0, 1]
        (0: no roll down, the rest is held).
      roll_moneyness: strike / spot of the rolled-down puts, in (0, 1.5].
      signals: the signal families used (static), a subset of ``SIGNAL_FAMILIES``.
    """

    crash_drawdown: float = 0.10
    rearm_drawdown: float = 0.05
    rearm_days: int = 21
    broken: float = 0.5
    normal: float = 0.2
    rebound: float = 0.05
    rv_over_iv: float = 1.0
    partial_fraction: float = 0.4
    reinvest: float = 0.25
    roll_moneyness: float = 0.9
    signals: tuple = dataclasses.field(default=SIGNAL_FAMILIES, metadata=dict(static=True))

    def validate(self) -> None:
        check_range("protocol.crash_drawdown", self.crash_drawdown, 0.0, 1.0, lo_closed=False, hi_closed=False)
        check_range("protocol.rearm_drawdown", self.rearm_drawdown, 0.0, self.crash_drawdown, hi_closed=False)
        check_range("protocol.rearm_days", self.rearm_days, 1.0, 1e6)
        check_range("protocol.broken", self.broken, 0.0, 10.0, lo_closed=False)
        check_range("protocol.normal", self.normal, 0.0, self.broken)
        check_range("protocol.rebound", self.rebound, 0.0, 10.0)
        check_range("protocol.rv_over_iv", self.rv_over_iv, 0.0, 100.0)
        check_range("protocol.partial_fraction", self.partial_fraction, 0.0, 1.0, lo_closed=False)
        check_range("protocol.reinvest", self.reinvest, 0.0, 1.0)
        check_range("protocol.roll_moneyness", self.roll_moneyness, 0.0, 1.5, lo_closed=False)
        bad = [s for s in self.signals if s not in SIGNAL_FAMILIES]
        if bad or not self.signals:
            raise ParameterError(f"protocol.signals = {list(self.signals)}; allowed: a non-empty subset of "
                                 f"{list(SIGNAL_FAMILIES)}")

    def init(self, x) -> ProtocolState:
        n = jnp.shape(x)[0]
        zero = jnp.zeros((n,), jnp.int32)
        return ProtocolState(zero, jnp.asarray(x), jnp.asarray(x), zero, zero)

    def conditions(self, sig: Signals):
        """(hodl, monetize, exit_ready) booleans from the signals (NaN signals are neutral)."""
        use = set(self.signals)
        false = jnp.zeros(jnp.shape(sig.velocity), bool)
        true = ~false
        hodl = false
        monetize = true
        exit_ready = true
        if "kinematics" in use:
            hodl |= (sig.velocity < 0) & (sig.acceleration < 0)
            monetize &= (sig.velocity < 0) & (sig.acceleration > 0)
            exit_ready &= sig.velocity > 0
        if "vol_of_vol" in use:
            hodl |= (sig.vvix_slope > 0) & (sig.vix_slope > 0)
            monetize &= ~(sig.vvix_slope >= 0) & ~(sig.vix_slope >= 0)
            exit_ready &= ~(sig.realized_vol < self.rv_over_iv * sig.vix)
        if "liquidity" in use:
            hodl |= sig.liquidity_z > self.broken
            monetize &= ~(sig.liquidity_slope >= 0)
            exit_ready &= ~(sig.liquidity_z > self.normal)
        if "correlation" in use:
            monetize &= ~(sig.correlation_slope >= 0)
        return hodl, monetize & ~hodl, exit_ready

    def update(self, p: ProtocolState, sig: Signals, x) -> ProtocolState:
        """One transition per step; ``x`` is the kinematics series (log price)."""
        hodl, monetize, exit_ready = self.conditions(sig)
        x = jnp.asarray(x, p.peak.dtype)
        armed = p.state == ARMED
        peak = jnp.where(armed, jnp.maximum(p.peak, x), p.peak)
        drawdown = -jnp.expm1(x - peak)
        enter = armed & (drawdown >= self.crash_drawdown) & hodl
        trough = jnp.where(enter, x, jnp.minimum(p.trough, x))
        cooled = (p.state == EXIT) & (p.age + 1 >= self.rearm_days)
        rearm = ~armed & ((drawdown < self.rearm_drawdown) | cooled)
        partial = (p.state == CRASH) & monetize
        reversal = x >= trough + jnp.log1p(jnp.asarray(self.rebound, x.dtype))
        full = (p.state == PARTIAL) & exit_ready & reversal
        state = jnp.where(enter, CRASH, p.state)
        state = jnp.where(partial, PARTIAL, state)
        state = jnp.where(full, EXIT, state)
        state = jnp.where(rearm & ~partial & ~full, ARMED, state)
        peak = jnp.where(state == ARMED, jnp.where(cooled, x, jnp.maximum(peak, x)), peak)
        action = jnp.where(partial, 1, jnp.where(full, 2, 0)).astype(jnp.int32)
        age = jnp.where(state == p.state, p.age + 1, 0).astype(jnp.int32)
        return ProtocolState(state.astype(jnp.int32), peak, trough, action, age)


# --------------------------------------------------------------------------- in the hedge overlay


class Diagnostics(NamedTuple):
    """Per-path accumulators for lead/lag and false alarms against the true regime."""

    regime: jax.Array  # int32[n], the regime of the next step (the process state after the draw)
    last: jax.Array  # int32[n], the regime of the step before the current one
    in_episode: jax.Array  # bool[n], a crash episode is being followed (onset .. end + max_lag)
    onset: jax.Array  # int32[n]
    end: jax.Array  # int32[n] (large while the crash lasts)
    first: jax.Array  # int32[S, n], step of each signal's first firing in the episode (-1: none)
    episodes: jax.Array  # float32[n], completed episodes
    detected: jax.Array  # float32[S, n]
    lag_onset: jax.Array  # float32[S, n], sum of first firing - onset
    lag_end: jax.Array  # float32[S, n], sum of first firing - end
    lag_end_sq: jax.Array  # float32[S, n]
    lag_onset_sq: jax.Array  # float32[S, n]
    calm_steps: jax.Array  # float32[n], calm steps outside any episode
    false_alarms: jax.Array  # float32[S, n], firings on those steps


DIAGNOSED = ("kinematics_hodl", "vol_of_vol_spike", "liquidity_broken", "correlation_high",
             "kinematics_converging", "vol_of_vol_receding", "liquidity_refilling", "correlation_breakdown",
             "reference_hodl", "reference_monetize", "protocol_crash", "protocol_partial", "protocol_exit")
_BIG = 2**30


class CrashState(NamedTuple):
    detector: DetectorState
    protocol: ProtocolState
    diagnostics: Any


@pytree_dataclass
class CrashProtocol:
    """The three-step protocol as a ``sim.hedge`` monetization policy.

    Sees the log spot, the hedge's implied-vol level (the simulated VIX), and, with a
    ``sim.market.Market`` process, the spread and the constituents. With ``diagnostics``
    (static; needs a regime model) it also accumulates, per path, each signal's lead/lag
    against the true regime switches and its firing rate on calm steps (``outputs``).
    """

    detector: Detector = Detector()
    protocol: Protocol = Protocol()
    correlation_high: float = 0.5
    max_lag: int = dataclasses.field(default=63, metadata=dict(static=True))
    diagnostics: bool = dataclasses.field(default=False, metadata=dict(static=True))

    def validate(self) -> None:
        self.detector.validate()
        self.protocol.validate()
        check_range("monetize.correlation_high", self.correlation_high, -1.0, 1.0)
        check_int("monetize.max_lag", self.max_lag, 1)

    def requires(self, process) -> tuple:
        return (protocols.TrueRegime,) if self.diagnostics else ()

    def init(self, n: int, n_tranches: int, process=None):
        diag = ()
        if self.diagnostics:
            S = len(DIAGNOSED)
            zi = jnp.zeros((n,), jnp.int32)
            zs = jnp.zeros((S, n), jnp.float32)
            diag = Diagnostics(regime=zi - 1, last=zi - 1, in_episode=jnp.zeros((n,), bool), onset=zi, end=zi + _BIG,
                               first=jnp.full((S, n), -1, jnp.int32), episodes=jnp.zeros((n,), jnp.float32),
                               detected=zs, lag_onset=zs, lag_end=zs, lag_end_sq=zs, lag_onset_sq=zs,
                               calm_steps=jnp.zeros((n,), jnp.float32), false_alarms=zs)
        return CrashState(self.detector.init(n), self.protocol.init(jnp.zeros((n,), jnp.float32)), diag)

    def decide(self, state: CrashState, obs):
        ps = obs.process_state
        x = jnp.log(jnp.maximum(obs.spot, 1e-30))
        dstate, sig = self.detector.update(state.detector, x=x, vix=obs.vol_level, r=obs.r, dt=obs.dt,
                                           log_spread=getattr(ps, "log_spread", None),
                                           stock_sum=getattr(ps, "stock_sum", None),
                                           stock_sumsq=getattr(ps, "stock_sumsq", None),
                                           n_stocks=getattr(ps, "n_stocks", None))
        pstate = self.protocol.update(state.protocol, sig, x)
        diag = state.diagnostics
        if self.diagnostics:
            diag = self._diagnose(diag, sig, pstate, ps, obs.step)
        frac = jnp.where(pstate.action == 1, self.protocol.partial_fraction, jnp.where(pstate.action == 2, 1.0, 0.0))
        return CrashState(dstate, pstate, diag), frac * jnp.ones_like(obs.marks)

    def restrike(self, state: CrashState, obs):
        """Roll down at the phase transition: (share of each tranche's remaining value
        reinvested [L, n], new strike / spot)."""
        reinvest = jnp.where(state.protocol.action == 1, self.protocol.reinvest, 0.0)
        return reinvest * jnp.ones_like(obs.marks), jnp.asarray(self.protocol.roll_moneyness, jnp.float32)

    def fired(self, sig: Signals, p: ProtocolState):
        hodl_k = (sig.velocity < 0) & (sig.acceleration < 0)
        labels = seed_labels(sig)
        return jnp.stack([
            hodl_k,
            (sig.vvix_slope > 0) & (sig.vix_slope > 0),
            sig.liquidity_z > self.protocol.broken,
            sig.correlation > self.correlation_high,
            (sig.velocity < 0) & (sig.acceleration > 0),
            (sig.vvix_slope < 0) & (sig.vix_slope < 0),
            sig.liquidity_slope < 0,
            sig.correlation_slope < 0,
            labels == 1,
            labels == 2,
            p.state == CRASH,
            p.action == 1,
            p.action == 2,
        ])

    def _diagnose(self, d: Diagnostics, sig, p, ps, t):
        fire = self.fired(sig, p)
        regime = jnp.where(d.regime < 0, ps.regime, d.regime)  # this step's regime (step 1: approximated)
        onset = (regime == 1) & (d.last == 0)
        end_now = (regime == 0) & (d.last == 1) & d.in_episode
        finalize = d.in_episode & ((t >= d.end + self.max_lag) | onset)
        seen = finalize[None, :] & (d.first >= 0)
        f32 = lambda b: b.astype(jnp.float32)  # noqa: E731
        lo = f32(d.first - d.onset[None, :])
        le = f32(d.first - d.end[None, :])
        diag = d._replace(
            episodes=d.episodes + f32(finalize & (d.end < _BIG)),
            detected=d.detected + f32(seen),
            lag_onset=d.lag_onset + jnp.where(seen, lo, 0.0),
            lag_onset_sq=d.lag_onset_sq + jnp.where(seen, lo * lo, 0.0),
            lag_end=d.lag_end + jnp.where(seen, le, 0.0),
            lag_end_sq=d.lag_end_sq + jnp.where(seen, le * le, 0.0),
        )
        in_ep = (d.in_episode & ~finalize) | onset
        first = jnp.where(onset[None, :], jnp.where(fire, t, -1),
                          jnp.where(in_ep[None, :] & (d.first < 0) & fire, t, d.first))
        calm = (regime == 0) & ~in_ep
        return diag._replace(
            regime=ps.regime, last=regime, in_episode=in_ep, onset=jnp.where(onset, t, d.onset),
            end=jnp.where(onset, _BIG, jnp.where(end_now, t, d.end)), first=first.astype(jnp.int32),
            calm_steps=d.calm_steps + f32(calm), false_alarms=d.false_alarms + f32(calm[None, :] & fire))

    def outputs(self, state: CrashState) -> dict:
        out = {"protocol_state": state.protocol.state}
        d = state.diagnostics
        if self.diagnostics:
            out.update(episodes=d.episodes, calm_steps=d.calm_steps)
            for i, name in enumerate(DIAGNOSED):
                out.update({f"{name}:detected": d.detected[i], f"{name}:lag_onset": d.lag_onset[i],
                            f"{name}:lag_onset_sq": d.lag_onset_sq[i], f"{name}:lag_end": d.lag_end[i],
                            f"{name}:lag_end_sq": d.lag_end_sq[i], f"{name}:false_alarms": d.false_alarms[i]})
        return out


def signal_lead_lag(outputs: dict, steps_per_year: float) -> list[dict]:
    """Per signal of ``DIAGNOSED``, from ``CrashProtocol(diagnostics=True)``'s per-path
    ``outputs`` (numpy): the crash episodes, the share detected, the mean lag of the first
    firing after the onset and after the end of an episode (days, with standard errors), and
    the false-alarm rate on calm steps (per step and per calm year)."""
    ex = outputs
    episodes = float(np.sum(ex["episodes"]))
    calm = float(np.sum(ex["calm_steps"]))
    rows = []
    for name in DIAGNOSED:
        det = float(np.sum(ex[f"{name}:detected"]))
        row = {"signal": name, "episodes": episodes, "detection_rate": det / episodes if episodes else float("nan")}
        for ref in ("onset", "end"):
            s1, s2 = float(np.sum(ex[f"{name}:lag_{ref}"])), float(np.sum(ex[f"{name}:lag_{ref}_sq"]))
            mean = s1 / det if det else float("nan")
            var = s2 / det - mean**2 if det > 1 else float("nan")
            row[f"lag_vs_{ref}_days"] = mean
            row[f"lag_vs_{ref}_se"] = float(np.sqrt(max(var, 0.0) / det)) if det > 1 else float("nan")
        row["false_alarm_rate"] = float(np.sum(ex[f"{name}:false_alarms"])) / calm if calm else float("nan")
        row["false_alarms_per_calm_year"] = row["false_alarm_rate"] * steps_per_year
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- real data


def run_detector(detector: Detector, protocol: Protocol, *, x, vix, r, dt: float, vvix=None, log_spread=None,
                 stocks=None, dtype=jnp.float64) -> dict:
    """Run the detector and the protocol over one history (arrays over time, leading axis).

    Returns a dict of numpy arrays ``[T]``: every ``Signals`` field, ``label`` (the seed's),
    ``state``, ``action``, ``hodl``, ``monetize``, ``exit_ready``. Use ``dtype=float64``
    (inside ``jax.enable_x64(True)``) to reproduce pandas to the bit.
    """
    T = np.shape(x)[0]
    cols = dict(x=x, vix=vix, r=r, vvix=vvix, log_spread=log_spread)
    if stocks is not None:  # [T, N] returns; a NaN leaves the name out of that day
        st = np.asarray(stocks, np.float64)
        count = np.isfinite(st).sum(axis=1).astype(np.float64)
        cols.update(stock_sum=np.where(count > 1, np.nansum(st, axis=1), np.nan),
                    stock_sumsq=np.where(count > 1, np.nansum(st * st, axis=1), np.nan), n_stocks=count)
    given = {k: jnp.asarray(np.asarray(v, np.float64), dtype) for k, v in cols.items() if v is not None}

    def body(carry, inp):
        dstate, pstate = carry
        one = {k: v[None] for k, v in inp.items()}
        dstate, sig = detector.update(dstate, dt=dt, **one)
        pstate = protocol.update(pstate, sig, one["x"])
        hodl, monetize, exit_ready = protocol.conditions(sig)
        out = dict(sig._asdict(), label=seed_labels(sig), state=pstate.state, action=pstate.action, hodl=hodl,
                   monetize=monetize, exit_ready=exit_ready)
        return (dstate, pstate), {k: v[0] for k, v in out.items()}

    @jax.jit
    def scan(given):
        x0 = given["x"][:1]
        init = (detector.init(1, dtype), protocol.init(x0))
        return jax.lax.scan(body, init, given)[1]  # over a given history's days, not a simulation

    if T == 0:
        raise ParameterError("run_detector: the series is empty")
    return {k: np.asarray(v) for k, v in scan(given).items()}


def corwin_schultz_spread(high, low) -> np.ndarray:
    """Corwin and Schultz (2012) bid-ask spread estimate from two days' high and low.

    For day ``t`` (using days ``t - 1`` and ``t``: causal), ``beta = ln(H_{t-1}/L_{t-1})^2 +
    ln(H_t/L_t)^2``, ``gamma = ln(max(H)/min(L))^2`` over the two days, ``alpha =
    (sqrt(2 beta) - sqrt(beta)) / (3 - 2 sqrt 2) - sqrt(gamma / (3 - 2 sqrt 2))``, spread
    ``2 (e^alpha - 1) / (1 + e^alpha)``, negatives set to 0 (as the authors do). Day 0 is NaN.

    Reference: S. A. Corwin and P. Schultz (2012), "A simple way to estimate bid-ask spreads
    from daily high and low prices", Journal of Finance 67(2), 719-760.
    """
    h = np.asarray(high, np.float64)
    lo = np.asarray(low, np.float64)
    out = np.full(h.shape, np.nan)
    b = np.log(h[1:] / lo[1:]) ** 2 + np.log(h[:-1] / lo[:-1]) ** 2
    g = np.log(np.maximum(h[1:], h[:-1]) / np.minimum(lo[1:], lo[:-1])) ** 2
    k = 3.0 - 2.0 * np.sqrt(2.0)
    alpha = (np.sqrt(2.0 * b) - np.sqrt(b)) / k - np.sqrt(g / k)
    out[1:] = np.maximum(2.0 * np.expm1(alpha) / (1.0 + np.exp(alpha)), 0.0)
    return out


# --------------------------------------------------------------------------- tables over a real history

STAGE_EVENTS = {"crash_detected": "entered CRASH (HODL)", "partial": "PARTIAL MONETIZE + roll down",
                "full_exit": "FULL EXIT", "rearmed": "re-armed"}


def protocol_events(frame):
    """Every stage change of the protocol over a history (``frame``: ``run_detector``'s
    ``state`` column on a date index): ``date`` and ``event`` (a key of ``STAGE_EVENTS``)."""
    import pandas as pd

    state = frame["state"].to_numpy()
    prev = np.concatenate([[ARMED], state[:-1]])
    kinds = {CRASH: "crash_detected", PARTIAL: "partial", EXIT: "full_exit", ARMED: "rearmed"}
    rows = [{"date": frame.index[i], "event": kinds[int(state[i])]} for i in np.flatnonzero(state != prev)]
    return pd.DataFrame(rows, columns=["date", "event"])


def stage_table(frame, windows: dict):
    """When each stage fired relative to the trough of each crash window (``windows``: name ->
    (first, last) date): the window's peak (the highest price in the year before, up to the
    trough), trough and peak-to-trough move, and per event its date, trading days from the
    trough, price against peak and trough, and the implied vol then (with its source).
    ``frame``: ``price``, ``vix``, ``vix_source`` and ``run_detector``'s ``state``."""
    import pandas as pd

    events = protocol_events(frame)
    pos = {d: i for i, d in enumerate(frame.index)}
    rows = []
    for name, (a, b) in windows.items():
        w = frame.loc[pd.Timestamp(a):pd.Timestamp(b)]
        if w.empty:
            continue
        trough = w["price"].idxmin()
        peak = frame.loc[pd.Timestamp(a) - pd.Timedelta(days=365):trough, "price"].idxmax()
        sel = events[(events["date"] >= w.index[0]) & (events["date"] <= w.index[-1])]
        base = {"window": name, "peak_date": str(peak.date()), "trough_date": str(trough.date()),
                "peak_to_trough": float(w.loc[trough, "price"] / frame.loc[peak, "price"] - 1.0)}
        if sel.empty:
            rows.append({**base, "event": "none", "date": None, "days_from_trough": None})
            continue
        for _, e in sel.iterrows():
            d = e["date"]
            rows.append({**base, "event": STAGE_EVENTS[e["event"]], "date": str(d.date()),
                         "days_from_trough": pos[d] - pos[trough],
                         "price_vs_peak": float(frame.loc[d, "price"] / frame.loc[peak, "price"] - 1.0),
                         "price_vs_trough": float(frame.loc[d, "price"] / w.loc[trough, "price"] - 1.0),
                         "vix": float(frame.loc[d, "vix"]), "vix_source": frame.loc[d, "vix_source"]})
    return pd.DataFrame(rows)


def calm_table(frame, years, crash: CrashProtocol):
    """Per calm year: trading days, the index's return and max drawdown, the protocol's entries
    into CRASH, and the share of days each diagnosed signal fires (``DIAGNOSED``; ``crash.
    fired``). ``frame``: ``run_detector``'s outputs (signals, ``state``, ``action``) and
    ``price`` on a date index; a year outside it is an error."""
    import pandas as pd

    sig = Signals(**{f: jnp.asarray(frame[f].to_numpy()) for f in Signals._fields})
    z = jnp.zeros(len(frame))
    p = ProtocolState(jnp.asarray(frame["state"].to_numpy()), z, z, jnp.asarray(frame["action"].to_numpy()), z)
    fired = np.asarray(crash.fired(sig, p))
    events = protocol_events(frame)
    rows = []
    for y in years:
        mask = np.asarray(frame.index.year == int(y))
        if not mask.any():
            raise ParameterError(f"real.calm_years: {y} is outside the shipped data")
        price = frame["price"][mask]
        row = {"year": int(y), "days": int(mask.sum()),
               "index_return": float(price.iloc[-1] / price.iloc[0] - 1.0),
               "max_drawdown": float(1 - (price / price.cummax()).min()),
               "crash_entries": int(((events["date"].dt.year == int(y)) & (events["event"] == "crash_detected")).sum())}
        for i, n in enumerate(DIAGNOSED):
            row[n] = float(fired[i][mask].mean())
        rows.append(row)
    return pd.DataFrame(rows)
