"""Black-Scholes-Merton: prices against an independent scipy closed form and put-call parity,
autodiff greeks against closed-form greeks, the implied-vol round trip, degenerate cases."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from sim import options

S = 100.0
STRIKES = np.linspace(50.0, 150.0, 21)  # moneyness 0.5 .. 1.5
TENORS = np.array([1 / 365, 1 / 52, 0.25, 1.0, 2.0])[:, None]  # 1 day .. 2 years
R, Q = 0.03, 0.01


def scipy_price(spot, strike, tau, vol, r, q, call):
    d1 = (np.log(spot / strike) + (r - q + 0.5 * vol**2) * tau) / (vol * np.sqrt(tau))
    d2 = d1 - vol * np.sqrt(tau)
    c = spot * np.exp(-q * tau) * stats.norm.cdf(d1) - strike * np.exp(-r * tau) * stats.norm.cdf(d2)
    p = strike * np.exp(-r * tau) * stats.norm.cdf(-d2) - spot * np.exp(-q * tau) * stats.norm.cdf(-d1)
    return np.where(call, c, p)


@pytest.mark.parametrize("vol", [0.05, 0.2, 0.8])
def test_prices_match_scipy_and_parity(vol):
    with jax.enable_x64(True):
        for call in (True, False):
            ours = np.asarray(options.black_scholes(spot=S, strike=STRIKES, expiry=TENORS, vol=vol, rate=R, dividend=Q,
                                                    call=call))
            ref = scipy_price(S, STRIKES, TENORS, vol, R, Q, call)
            np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-10)
        c = options.black_scholes(spot=S, strike=STRIKES, expiry=TENORS, vol=vol, rate=R, dividend=Q, call=True)
        p = options.black_scholes(spot=S, strike=STRIKES, expiry=TENORS, vol=vol, rate=R, dividend=Q, call=False)
        parity = S * np.exp(-Q * TENORS) - STRIKES * np.exp(-R * TENORS)
        np.testing.assert_allclose(np.asarray(c - p), parity, rtol=0, atol=1e-10)


def test_autodiff_greeks_match_closed_form():
    with jax.enable_x64(True):
        def price(s, v, tau, k, call):
            return options.black_scholes(spot=s, strike=k, expiry=tau, vol=v, rate=R, dividend=Q, call=call)

        grid = [(s, v, tau, k, c) for s in (80.0, 100.0, 125.0) for v in (0.1, 0.3, 0.9) for tau in (0.02, 0.5, 2.0)
                for k in (70.0, 100.0, 140.0) for c in (True, False)]
        s, v, tau, k, call = (jnp.asarray(x) for x in zip(*grid))
        closed = options.greeks(spot=s, strike=k, expiry=tau, vol=v, rate=R, dividend=Q, call=call)
        auto = {
            "delta": jax.vmap(jax.grad(price, 0))(s, v, tau, k, call),
            "gamma": jax.vmap(jax.grad(jax.grad(price, 0), 0))(s, v, tau, k, call),
            "vega": jax.vmap(jax.grad(price, 1))(s, v, tau, k, call),
            "theta": -jax.vmap(jax.grad(price, 2))(s, v, tau, k, call),
        }
        for name, a in auto.items():
            np.testing.assert_allclose(np.asarray(a), np.asarray(closed[name]), rtol=0, atol=1e-8, err_msg=name)
        np.testing.assert_allclose(np.asarray(closed["price"]), np.asarray(price(s, v, tau, k, call)), atol=1e-12)


@pytest.mark.parametrize("vol", [0.05, 0.2, 1.0])
def test_implied_vol_round_trip(vol):
    """Quoted on the out-of-the-money side (the usual market convention), across moneyness
    0.5-1.5 and tenors 1 day-2 years: the vol comes back to 1e-10 wherever the price is
    representable in float64 (> 1e-300); where it underflows to 0 the solver returns 0, which
    reproduces the price exactly."""
    with jax.enable_x64(True):
        forward = S * np.exp((R - Q) * TENORS)
        otm_call = STRIKES >= forward
        price = options.black_scholes(spot=S, strike=STRIKES, expiry=TENORS, vol=vol, rate=R, dividend=Q, call=otm_call)
        iv = np.asarray(options.implied_vol(price=price, spot=S, strike=STRIKES, expiry=TENORS, rate=R, dividend=Q,
                                            call=otm_call))
        price = np.asarray(price)
        ok = price > 1e-300
        assert ok.mean() > 0.7
        assert np.abs(iv[ok] - vol).max() < 1e-10
        assert np.all(iv[~ok] == 0.0)
        # In-the-money quotes go through parity; their vol is recoverable to the precision of
        # the time value (price x 1e-16 / time value): checked where the time value is large.
        itm_price = np.asarray(options.black_scholes(spot=S, strike=STRIKES, expiry=TENORS, vol=vol, rate=R,
                                                     dividend=Q, call=~otm_call))
        iv_itm = np.asarray(options.implied_vol(price=itm_price, spot=S, strike=STRIKES, expiry=TENORS, rate=R,
                                                dividend=Q, call=~otm_call))
        big = price > 1e-6 * itm_price
        assert np.abs(iv_itm[big] - vol).max() < 1e-8


def test_degenerate_cases_have_no_nan():
    with jax.enable_x64(True):
        k = jnp.array([50.0, 99.0, 100.0, 101.0, 200.0])
        # compiled, as inside a simulation: one program for every case (eagerly, each case's
        # Jacobian compiled its own primitives, ~10 s of a cold suite)
        greeks = jax.jit(options.greeks)
        jac_of = jax.jit(jax.jacfwd(lambda s, v, tau, call: options.black_scholes(
            spot=s, strike=k, expiry=tau, vol=v, rate=R, dividend=Q, call=call), argnums=(0, 1)))
        for tau, vol in ((0.0, 0.2), (1.0, 0.0), (0.0, 0.0), (1e-12, 0.2), (30.0, 5.0)):
            for call in (True, False):
                g = greeks(spot=S, strike=k, expiry=tau, vol=vol, rate=R, dividend=Q, call=call)
                assert all(np.isfinite(np.asarray(v)).all() for v in g.values()), (tau, vol, call, g)
                jac = jac_of(S, vol, tau, call)
                assert all(np.isfinite(np.asarray(j)).all() for j in jac)
        # Zero expiry: intrinsic value; zero vol: discounted intrinsic of the forward.
        price = jax.jit(options.black_scholes)
        np.testing.assert_allclose(price(spot=S, strike=k, expiry=0.0, vol=0.2, call=False), np.maximum(k - S, 0.0))
        np.testing.assert_allclose(
            price(spot=S, strike=k, expiry=1.0, vol=0.0, rate=R, dividend=Q, call=True),
            np.maximum(S * math.exp(-Q) - k * math.exp(-R), 0.0), atol=1e-12)
        # Deep in / out of the money: the limits, smoothly.
        deep = greeks(spot=S, strike=jnp.array([1e-3, 1e6]), expiry=0.5, vol=0.2, call=True)
        np.testing.assert_allclose(deep["delta"], [1.0, 0.0], atol=1e-12)
    # float32 (inside simulations): no NaN either.
    g32 = greeks(spot=jnp.float32(S), strike=jnp.asarray(k, jnp.float32), expiry=jnp.float32(0.0),
                 vol=jnp.float32(0.2), call=False)
    assert all(np.isfinite(np.asarray(v)).all() for v in g32.values())


def test_implied_vol_out_of_bounds():
    with jax.enable_x64(True):
        # Above the no-arbitrage bound (a put worth more than K e^{-r tau}), negative: NaN.
        iv = options.implied_vol(price=jnp.array([200.0, -1.0]), spot=S, strike=100.0, expiry=1.0, call=False)
        assert np.isnan(np.asarray(iv)).all()
        # At intrinsic: 0.
        assert float(options.implied_vol(price=20.0, spot=120.0, strike=100.0, expiry=0.0, call=True)) == 0.0


def test_straddle_is_call_plus_put():
    with jax.enable_x64(True):
        args = dict(spot=S, strike=STRIKES, expiry=np.vstack([TENORS, [[0.0]]]), vol=0.3, rate=R, dividend=Q)
        st = options.straddle(**args)
        c, p = options.greeks(**args, call=True), options.greeks(**args, call=False)
        for k in ("price", "delta", "gamma", "vega", "theta"):
            np.testing.assert_allclose(np.asarray(st[k]), np.asarray(c[k] + p[k]), rtol=0, atol=1e-10, err_msg=k)
        assert np.all(np.isfinite(np.asarray(st["theta"])))
