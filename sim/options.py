"""Black-Scholes-Merton pricing, closed-form greeks and implied volatility, in JAX.

Every function takes keyword-only arguments that broadcast against each other (scalars,
arrays, a grid), is pure and differentiable, and works in float32 (inside a simulation) or
float64 (under ``jax.enable_x64(True)``, for checks). Conventions:

* ``spot`` S, ``strike`` K > 0; ``expiry`` tau in years; ``vol`` sigma annualized; ``rate``
  r and ``dividend`` q continuously compounded per year; ``call`` True for a call, False
  for a put (a boolean array selects per element).
* forward ``F = S exp((r - q) tau)``, ``d1 = (log(F / K) + sigma^2 tau / 2) / (sigma sqrt tau)``,
  ``d2 = d1 - sigma sqrt tau``.
* greeks: ``delta = dV/dS``, ``gamma = d2V/dS2``, ``vega = dV/dsigma`` (per unit of vol, not
  per vol point), ``theta = dV/dt = -dV/dtau`` (per year, calendar time passing).

Degenerate cases have their limits, without NaN, also in the gradients: zero expiry or zero
vol give the discounted intrinsic value ``max(S e^{-q tau} - K e^{-r tau}, 0)`` (call) with
``delta`` a step, ``gamma = vega = 0``; deep in or out of the money the normal CDF saturates
smoothly (``jax.scipy.special.ndtr``).

``implied_vol`` inverts the price of the out-of-the-money side (an in-the-money price is
mapped through put-call parity first: its time value is what carries the information) by a
safeguarded Newton iteration on the log of the price, bracketed in ``[vol_lo, vol_hi]``: well
conditioned even for deep out-of-the-money short-dated options whose price is 1e-40. A price
at or below intrinsic value returns vol 0 (it is reproduced by any vol small enough); a price
above the no-arbitrage bound (or negative, or not finite) returns NaN.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax
from jax.scipy.special import ndtr

__all__ = ["black_scholes", "greeks", "straddle", "implied_vol", "intrinsic"]

_SQRT_2PI = 2.5066282746310002


def _pdf(x):
    return jnp.exp(-0.5 * x * x) / _SQRT_2PI


def _parts(spot, strike, expiry, vol, rate, dividend):
    spot, strike, expiry, vol, rate, dividend = jnp.broadcast_arrays(
        *(jnp.asarray(x, dtype=jnp.result_type(float)) for x in (spot, strike, expiry, vol, rate, dividend)))
    tau = jnp.maximum(expiry, 0.0)
    disc_q = jnp.exp(-dividend * tau)
    disc_r = jnp.exp(-rate * tau)
    sd = vol * jnp.sqrt(tau)
    live = sd > 0
    sd_safe = jnp.where(live, sd, 1.0)
    log_fk = jnp.log(spot / strike) + (rate - dividend) * tau
    d1_live = log_fk / sd_safe + 0.5 * sd_safe
    # sd = 0: the limits of d1, d2 are +-inf by the sign of log(F / K) (0 at the money).
    d_limit = jnp.where(log_fk > 0, jnp.inf, jnp.where(log_fk < 0, -jnp.inf, 0.0))
    d1 = jnp.where(live, d1_live, d_limit)
    d2 = jnp.where(live, d1_live - sd_safe, d_limit)
    return dict(spot=spot, strike=strike, tau=tau, vol=vol, rate=rate, dividend=dividend, disc_q=disc_q,
                disc_r=disc_r, sd=sd, sd_safe=sd_safe, live=live, d1=d1, d2=d2)


def black_scholes(*, spot, strike, expiry, vol, rate=0.0, dividend=0.0, call=False):
    """Black-Scholes-Merton price of a European call (``call=True``) or put."""
    p = _parts(spot, strike, expiry, vol, rate, dividend)
    s, k = p["spot"] * p["disc_q"], p["strike"] * p["disc_r"]
    call_price = s * ndtr(p["d1"]) - k * ndtr(p["d2"])
    put_price = k * ndtr(-p["d2"]) - s * ndtr(-p["d1"])
    return jnp.where(jnp.asarray(call), call_price, put_price)


def intrinsic(*, spot, strike, expiry, rate=0.0, dividend=0.0, call=False):
    """The zero-vol value: ``max(+-(S e^{-q tau} - K e^{-r tau}), 0)``."""
    return black_scholes(spot=spot, strike=strike, expiry=expiry, vol=0.0, rate=rate, dividend=dividend, call=call)


def greeks(*, spot, strike, expiry, vol, rate=0.0, dividend=0.0, call=False) -> dict:
    """Closed-form ``price, delta, gamma, vega, theta`` (see the module docstring)."""
    p = _parts(spot, strike, expiry, vol, rate, dividend)
    call = jnp.asarray(call)
    s, k = p["spot"] * p["disc_q"], p["strike"] * p["disc_r"]
    nd1, nd2 = ndtr(p["d1"]), ndtr(p["d2"])
    mnd1, mnd2 = ndtr(-p["d1"]), ndtr(-p["d2"])  # not 1 - N(d): exact deep in the tails
    pdf1 = jnp.where(p["live"], _pdf(jnp.where(p["live"], p["d1"], 0.0)), 0.0)
    price = jnp.where(call, s * nd1 - k * nd2, k * mnd2 - s * mnd1)
    delta = p["disc_q"] * jnp.where(call, nd1, -mnd1)
    gamma = p["disc_q"] * pdf1 / (p["spot"] * p["sd_safe"])
    sqrt_tau = jnp.sqrt(p["tau"])
    vega = s * pdf1 * sqrt_tau
    decay = -s * pdf1 * p["vol"] / (2.0 * jnp.where(sqrt_tau > 0, sqrt_tau, 1.0))
    theta_call = decay - p["rate"] * k * nd2 + p["dividend"] * s * nd1
    theta_put = decay + p["rate"] * k * mnd2 - p["dividend"] * s * mnd1
    theta = jnp.where(call, theta_call, theta_put)
    return dict(price=price, delta=delta, gamma=gamma, vega=vega, theta=theta)


def straddle(*, spot, strike, expiry, vol, rate=0.0, dividend=0.0) -> dict:
    """``price, delta, gamma, vega, theta`` of a call plus a put at the same strike (one pass
    through the normal CDF; equal to the sum of ``greeks`` for both)."""
    p = _parts(spot, strike, expiry, vol, rate, dividend)
    s, k = p["spot"] * p["disc_q"], p["strike"] * p["disc_r"]
    nd1, nd2 = ndtr(p["d1"]), ndtr(p["d2"])
    mnd1, mnd2 = ndtr(-p["d1"]), ndtr(-p["d2"])
    pdf1 = jnp.where(p["live"], _pdf(jnp.where(p["live"], p["d1"], 0.0)), 0.0)
    sqrt_tau = jnp.sqrt(p["tau"])
    decay = -s * pdf1 * p["vol"] / jnp.where(sqrt_tau > 0, sqrt_tau, 1.0)
    return dict(price=s * (nd1 - mnd1) - k * (nd2 - mnd2), delta=p["disc_q"] * (nd1 - mnd1),
                gamma=2.0 * p["disc_q"] * pdf1 / (p["spot"] * p["sd_safe"]), vega=2.0 * s * pdf1 * sqrt_tau,
                theta=decay + p["rate"] * k * (mnd2 - nd2) + p["dividend"] * s * (nd1 - mnd1))


def implied_vol(*, price, spot, strike, expiry, rate=0.0, dividend=0.0, call=False, vol_lo=1e-8, vol_hi=20.0,
                iterations=100):
    """The vol that reproduces ``price`` (vectorized; see the module docstring).

    Returns 0 where the price is at or below intrinsic value (or the expiry is 0), and NaN
    where it is above the no-arbitrage bound (``S e^{-q tau}`` for a call, ``K e^{-r tau}``
    for a put) or not finite.
    """
    dt = jnp.result_type(float)
    price, spot, strike, expiry, rate, dividend, call = jnp.broadcast_arrays(
        *(jnp.asarray(x, dt) for x in (price, spot, strike, expiry, rate, dividend)), jnp.asarray(call))
    tau = jnp.maximum(expiry, 0.0)
    s = spot * jnp.exp(-dividend * tau)
    k = strike * jnp.exp(-rate * tau)
    # Out-of-the-money side: a call if K e^{-r tau} >= S e^{-q tau}, else a put. Parity:
    # C - P = S e^{-q tau} - K e^{-r tau}.
    otm_call = k >= s
    otm_price = jnp.where(call == otm_call, price, jnp.where(call, price - (s - k), price + (s - k)))
    upper = jnp.where(call, s, k)
    bad = ~jnp.isfinite(price) | (price > upper) | (price < 0)
    zero = (otm_price <= 0) | (tau <= 0)
    target = jnp.log(jnp.where(zero | bad, 1.0, otm_price))

    def f_and_slope(v):
        g = greeks(spot=spot, strike=strike, expiry=jnp.where(tau > 0, tau, 1.0), vol=v, rate=rate,
                   dividend=dividend, call=otm_call)
        pr = jnp.maximum(g["price"], jnp.finfo(dt).tiny)
        return jnp.log(pr) - target, g["vega"] / pr

    def body(_, state):
        lo, hi, v = state
        fv, slope = f_and_slope(v)
        lo = jnp.where(fv < 0, v, lo)
        hi = jnp.where(fv >= 0, v, hi)
        newton = v - fv / jnp.where(slope > 0, slope, 1.0)
        ok = (slope > 0) & (newton > lo) & (newton < hi) & jnp.isfinite(newton)
        v = jnp.where(ok, newton, jnp.sqrt(lo * hi))  # geometric bisection otherwise
        return lo, hi, v

    lo = jnp.full_like(price, vol_lo)
    hi = jnp.full_like(price, vol_hi)
    v0 = jnp.full_like(price, 0.2)
    _, _, v = lax.fori_loop(0, iterations, body, (lo, hi, v0))
    return jnp.where(bad, jnp.nan, jnp.where(zero, 0.0, v))

