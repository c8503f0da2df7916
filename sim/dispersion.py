"""Correlation analytics and the P&L attribution of index and constituent options (seed 003).

Index ``I = sum_i w_i S_i`` (``w_i`` share counts), market-cap weights ``p_i = w_i S_i / I``,
so ``dI / I = sum_i p_i dS_i / S_i`` exactly over a step with ``p`` taken at its start.

* ``index_variance``: ``sigma_I^2 = sum_ij p_i p_j sigma_i sigma_j rho_ij``.
* ``implied_correlation_pairs`` / ``implied_correlation_sums``: the seed's two formulas for
  the average correlation implied by an index vol, ``(sigma_I^2 - sum p_i^2 sigma_i^2)`` over
  ``sum_{i != j} p_i p_j sigma_i sigma_j`` (a double sum) or over ``(sum p_i sigma_i)^2 - sum
  p_i^2 sigma_i^2``. They are equal in exact arithmetic; the first is the definition, the
  second the O(N) form.
* ``realized_correlation``: the same average from realized vols and the realized index vol
  (and the plain mean of pairwise correlations).

Attribution over one step ``dt`` of a delta-hedged Black-Scholes option (``r = q = 0`` as in
the seed), ``n = dS / (S sigma sqrt dt)`` the move in standard deviations:

    dV = Delta dS + Theta dt (1 - n^2) + residual                       (seed 003 eq. 16)

(``Theta = -Gamma S^2 sigma^2 / 2``, so ``Theta dt (1 - n^2) = Theta dt + Gamma dS^2 / 2``:
theta plus gamma; the residual is the Taylor remainder, O(dt^{3/2}) at a fixed ``n``). For an
index option priced at ``sigma_I``, with ``n_i`` each constituent's move,
``n_I = sum_i p_i sigma_i n_i / sigma_I`` exactly, and with ``sigma_I^2 = sum p_i^2 sigma_i^2
+ rho sum_{i != j} p_i p_j sigma_i sigma_j`` (``rho`` the implied average correlation)

    Theta_I dt (1 - n_I^2) = (Theta_I dt / sigma_I^2) [ sum_i p_i^2 sigma_i^2 (1 - n_i^2)
                             + sum_{i != j} p_i p_j sigma_i sigma_j (rho - n_i n_j) ]

per-constituent gamma/theta terms plus the correlation term: implied minus realized
correlation. The seed's eq. 19 writes ``rho`` alone in the correlation term, dropping the
realized cross term ``- sum_{i != j} p_i p_j sigma_i sigma_j n_i n_j`` (see
``../shared/seeds/README.md``); ``index_option_attribution`` reports both, and the gap.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sim import backend, options, stats
from sim.market import Basket, cap_weights
from sim.pytree import choice_field, choice_index, pytree_dataclass
from sim.validation import ParameterError, check_correlation, check_range, check_same_length, check_vector

__all__ = [
    "check_correlation", "index_variance", "implied_correlation_pairs",
    "implied_correlation_sums", "realized_correlation", "rolling_correlation", "option_attribution",
    "index_option_attribution", "DispersionTrade", "simulate_prices", "attribution_table", "trade_summary",
    "ATTRIBUTION_TERMS", "attribution_path", "attribution_totals", "spread_points", "correlation_peaks",
]


def index_variance(p, vols, corr) -> float:
    p, v = check_vector("weights", p), check_vector("vols", vols)
    check_same_length(weights=p, vols=v)
    c = check_correlation(corr, p.size)
    x = p * v
    return float(x @ c @ x)


def _own_and_cross(p, vols):
    p, v = check_vector("weights", p), check_vector("vols", vols)
    check_same_length(weights=p, vols=v)
    x = p * v
    return x, float(x @ x)


def implied_correlation_pairs(index_vol, p, vols) -> float:
    """``(sigma_I^2 - sum p_i^2 sigma_i^2) / sum_{i != j} p_i p_j sigma_i sigma_j`` (double sum)."""
    x, own = _own_and_cross(p, vols)
    off = np.outer(x, x)
    np.fill_diagonal(off, 0.0)
    return (float(index_vol) ** 2 - own) / off.sum()


def implied_correlation_sums(index_vol, p, vols) -> float:
    """``(sigma_I^2 - sum p_i^2 sigma_i^2) / ((sum p_i sigma_i)^2 - sum p_i^2 sigma_i^2)``."""
    x, own = _own_and_cross(p, vols)
    return (float(index_vol) ** 2 - own) / (x.sum() ** 2 - own)


def realized_correlation(returns, weights=None) -> dict:
    """Average correlation of a ``[T, N]`` block of returns: ``implied_style`` from realized
    vols and the realized vol of ``sum_i p_i r_i`` (weights default equal), and ``pairwise``,
    the plain mean of the N (N - 1) / 2 sample correlations."""
    r = np.asarray(returns, np.float64)
    if r.ndim != 2 or r.shape[1] < 2 or r.shape[0] < 3:
        raise ParameterError(f"returns must be [T >= 3, N >= 2], got shape {r.shape}")
    if not np.all(np.isfinite(r)):
        raise ParameterError("returns have NaN or infinite entries; drop or fill them first")
    p = np.full(r.shape[1], 1.0 / r.shape[1]) if weights is None else check_vector("weights", weights)
    check_same_length(weights=p, returns_columns=np.empty(r.shape[1]))
    vols = r.std(axis=0, ddof=1)
    index_vol = (r @ p).std(ddof=1)
    c = np.corrcoef(r, rowvar=False)
    iu = np.triu_indices(r.shape[1], 1)
    return {"implied_style": implied_correlation_sums(index_vol, p, vols), "pairwise": float(c[iu].mean())}


# --------------------------------------------------------------------------- attribution


def _bs(spot, strike, expiry, vol, call):
    g = options.greeks(spot=spot, strike=strike, expiry=expiry, vol=vol, call=call)
    return {k: float(v) for k, v in g.items()}


def option_attribution(*, spot, spot_next, strike, expiry, vol, dt, call=False) -> dict:
    """One step of a delta-hedged option (``r = q = 0``): ``full`` revaluation P&L,
    ``delta`` = Delta dS, ``theta_gamma`` = Theta dt (1 - n^2), ``residual`` = the rest.
    Call inside ``jax.enable_x64(True)`` for float64."""
    g = _bs(spot, strike, expiry, vol, call)
    after = _bs(spot_next, strike, expiry - dt, vol, call)["price"]
    ds = spot_next - spot
    n = ds / (spot * vol * np.sqrt(dt))
    full = after - g["price"]
    delta = g["delta"] * ds
    theta_gamma = g["theta"] * dt * (1.0 - n * n)
    return {"full": full, "delta": delta, "theta_gamma": theta_gamma, "residual": full - delta - theta_gamma, "n": n}


def index_option_attribution(*, shares, prices, prices_next, vols, rho, strike, expiry, dt, call=False) -> dict:
    """One step of a delta-hedged index option priced at the index vol implied by the
    constituents' ``vols`` and the average correlation ``rho``: ``full`` revaluation P&L,
    ``delta``, ``constituents`` (``[N]``: ``(Theta_I dt / sigma_I^2) p_i^2 sigma_i^2 (1 -
    n_i^2)``), ``correlation`` (``(Theta_I dt / sigma_I^2) sum_{i != j} p_i p_j sigma_i
    sigma_j (rho - n_i n_j)``), ``residual``; and the seed's uncorrected correlation term
    (``rho`` alone), its residual and ``uncorrected_gap`` (= the dropped realized cross term).

    Written in the definition's form (double sums over pairs, O(N^2)): it is the reference
    for the O(N) form the dispersion kernel uses (``_step_terms``; a test checks one against
    the other)."""
    s0, s1, v = check_vector("prices", prices), check_vector("prices_next", prices_next), check_vector("vols", vols)
    p = cap_weights(shares, s0)
    check_same_length(prices=s0, prices_next=s1, vols=v)
    w = check_vector("shares", shares)
    i0, i1 = float(w @ s0), float(w @ s1)
    x = p * v
    own = x * x
    cross = np.outer(x, x)
    np.fill_diagonal(cross, 0.0)
    var_i = float(own.sum() + rho * cross.sum())
    if not var_i > 0:
        raise ParameterError(f"rho = {rho} gives a non-positive index variance {var_i:g}")
    vol_i = np.sqrt(var_i)
    g = _bs(i0, strike, expiry, vol_i, call)
    after = _bs(i1, strike, expiry - dt, vol_i, call)["price"]
    n = (s1 - s0) / (s0 * v * np.sqrt(dt))
    scale = g["theta"] * dt / var_i
    full = after - g["price"]
    delta = g["delta"] * (i1 - i0)
    constituents = scale * own * (1.0 - n * n)
    nn = np.outer(n, n)
    correlation = scale * float((cross * (rho - nn)).sum())
    seed_correlation = scale * rho * float(cross.sum())
    residual = full - delta - constituents.sum() - correlation
    seed_residual = full - delta - constituents.sum() - seed_correlation
    return {"full": full, "delta": delta, "constituents": constituents, "correlation": correlation,
            "residual": residual, "uncorrected_correlation": seed_correlation, "uncorrected_residual": seed_residual,
            "uncorrected_gap": seed_residual - residual, "dropped_term": -scale * float((cross * nn).sum()),
            "index_vol": vol_i, "n_index": (i1 - i0) / (i0 * vol_i * np.sqrt(dt)), "n": n, "weights": p}


def rolling_correlation(prices, *, window: int = 63, shares=None):
    """Average correlation of a basket over a trailing window, day by day.

    ``prices``: a DataFrame of N constituents' prices (validated: no NaN, > 0). ``shares``:
    share counts ``w_i`` (default: a cap-weight proxy when none are known, as for the shipped
    stocks, which come without shares outstanding: ``w_i = 1 / S_i(first day)``, an index that
    starts equal-weighted and then lets each weight drift with its price, as market-cap
    weights do). Weights ``p_i = w_i S_i / I`` are taken at the start of each window.

    Returns a DataFrame indexed by the window's last day with ``implied_style`` (the seed's
    formula applied to realized vols and the realized vol of the weighted index return),
    ``pairwise`` (the mean of the N (N - 1) / 2 sample correlations), ``index_vol`` and
    ``dispersion`` (mean cross-sectional std of daily returns), annualized with 252 days.
    """
    import pandas as pd

    from sim.data import validate_prices

    validate_prices(prices, name="prices")
    s = prices.to_numpy(np.float64)
    n_days, n = s.shape
    if n < 2:
        raise ParameterError(f"prices must have >= 2 constituents, got {n}")
    if not 3 <= window < n_days:
        raise ParameterError(f"window = {window}; allowed: 3 <= window < number of days ({n_days})")
    w = 1.0 / s[0] if shares is None else check_vector("shares", shares)
    check_same_length(shares=w, constituents=np.empty(n))
    r = s[1:] / s[:-1] - 1.0
    # Window sums from cumulative sums (no loop over days): the sample covariance C of each
    # window, then vols = sqrt(diag C) and the weighted index's variance p' C p.
    def window_sums(x):
        c = np.concatenate([np.zeros((1,) + x.shape[1:]), np.cumsum(x, axis=0)])
        return c[window:] - c[:-window]

    m1 = window_sums(r)  # [W, N]
    m2 = window_sums(r[:, :, None] * r[:, None, :])  # [W, N, N]
    cov = (m2 - m1[:, :, None] * m1[:, None, :] / window) / (window - 1)
    vols = np.sqrt(np.maximum(np.diagonal(cov, axis1=1, axis2=2), 0.0))
    p = w * s[: r.shape[0] - window + 1]
    if np.any(p.sum(axis=1) <= 0):
        raise ParameterError("the index sum_i w_i S_i must stay > 0 on every day; allowed: share counts giving a "
                             "positive index")
    p = p / p.sum(axis=1, keepdims=True)  # weights at each window's start
    index_var = np.einsum("wi,wij,wj->w", p, cov, p)
    x = p * vols
    own = (x * x).sum(axis=1)
    implied_style = (index_var - own) / (x.sum(axis=1) ** 2 - own)
    with np.errstate(invalid="ignore", divide="ignore"):  # a name with a flat price in the window
        corr = cov / (vols[:, :, None] * vols[:, None, :])
    iu = np.triu_indices(n, 1)
    pairwise = np.nanmean(corr[:, iu[0], iu[1]], axis=1)
    dispersion = window_sums(r.std(axis=1)[:, None])[:, 0] / window
    out = pd.DataFrame({"implied_style": implied_style, "pairwise": pairwise,
                        "index_vol": np.sqrt(index_var * 252.0), "dispersion": dispersion * np.sqrt(252.0)},
                       index=prices.index[window:])
    return out


# --------------------------------------------------------------------------- the trade

ATTRIBUTION_TERMS = ("index_own", "correlation", "legs_theta_gamma", "residual")  # they sum to the P&L
_SIZINGS = ("vega", "theta", "gamma")
_DIRECTIONS = ("short_index", "long_index")


def _entry(basket, trade, prices0):
    """Entry of the trade at ``prices0`` ``[N]``: implied vols, the index vol implied by
    ``rho_implied`` at the entry weights, at-the-money strikes, straddle counts."""
    dtype = prices0.dtype
    par = basket.params(jnp, dtype)
    vols = par["vols"] * jnp.asarray(trade.vol_scale, dtype)
    w = par["shares"]
    level = jnp.sum(w * prices0)
    x = w * prices0 / level * vols
    own = jnp.sum(x * x)
    index_vol = jnp.sqrt(own + jnp.asarray(trade.rho_implied, dtype) * (jnp.sum(x) ** 2 - own))
    tenor = jnp.asarray(trade.tenor, dtype)
    gi = options.straddle(spot=level, strike=level, expiry=tenor, vol=index_vol)
    gs = options.straddle(spot=prices0, strike=prices0, expiry=tenor, vol=vols)
    kappas = (gi["vega"] / jnp.sum(w * gs["vega"]), gi["theta"] / jnp.sum(w * gs["theta"]),
              gi["gamma"] * level**2 / jnp.sum(w * gs["gamma"] * prices0**2))  # vega, theta, dollar gamma
    i = choice_index(trade.sizing, _SIZINGS)
    kappa = kappas[i] if isinstance(i, int) else jnp.select([i == 0, i == 1], kappas[:2], kappas[2])
    return dict(vols=vols, shares=w, index_vol=index_vol, index_strike=level, strikes=prices0, alpha=kappa * w,
                kappa=kappa, level=level)


def _step_terms(e, s0, s1, tau0, dt, sign):
    """One step of the delta-hedged book from prices ``s0`` to ``s1`` (``[..., N]``) with
    ``tau0`` to expiry at the start; every P&L per unit of the entry index level. ``sign``
    +1 for short index / long constituents."""
    w, vols, vol_i = e["shares"], e["vols"], e["index_vol"]
    i0, i1 = jnp.sum(w * s0, axis=-1), jnp.sum(w * s1, axis=-1)
    tau1 = jnp.maximum(tau0 - dt, 0.0)
    vol_n, strike_n = backend.per_lane(i0.shape, vol_i, e["index_strike"])  # the same bits on any device count
    gi = options.straddle(spot=i0, strike=strike_n, expiry=tau0, vol=vol_n)
    vi1 = options.straddle(spot=i1, strike=strike_n, expiry=tau1, vol=vol_n)["price"]
    index_full = vi1 - gi["price"] - gi["delta"] * (i1 - i0)
    gs = options.straddle(spot=s0, strike=e["strikes"], expiry=tau0[..., None], vol=vols)
    vs1 = options.straddle(spot=s1, strike=e["strikes"], expiry=tau1[..., None], vol=vols)["price"]
    legs_full = e["alpha"] * (vs1 - gs["price"] - gs["delta"] * (s1 - s0))  # [..., N]
    n = (s1 - s0) / (s0 * vols * jnp.sqrt(dt))
    x = w * s0 / i0[..., None] * vols
    xx = jnp.sum(x * x, axis=-1)
    cross = jnp.sum(x, axis=-1) ** 2 - xx  # sum_{i != j} p_i p_j sigma_i sigma_j
    cross_nn = jnp.sum(x * n, axis=-1) ** 2 - jnp.sum(x * x * n * n, axis=-1)
    rho_bar = (vol_i * vol_i - xx) / cross  # implied average correlation at today's weights
    scale = gi["theta"] * dt / (vol_i * vol_i)
    legs_tg = e["alpha"] * gs["theta"] * dt * (1.0 - n * n)
    u = sign / e["level"]
    return dict(
        pnl=u * (jnp.sum(legs_full, axis=-1) - index_full),
        index_pnl=-u * index_full, legs_pnl=u * jnp.sum(legs_full, axis=-1),
        index_own=-u * scale[..., None] * x * x * (1.0 - n * n),  # [..., N]
        correlation=-u * scale * (rho_bar * cross - cross_nn),
        uncorrected_correlation=-u * scale * rho_bar * cross,
        legs_theta_gamma=u * legs_tg,  # [..., N]
        multiplier=-u * scale * cross, rho_implied=rho_bar, cross_nn_over_cross=cross_nn / cross,
        index=i1)


class TradeState(NamedTuple):
    prices: jax.Array  # float32[n, N] at the start of the next step
    entry: dict  # see _entry (shared by every path)
    sums: dict  # running per-path sums, each float32[n]


_SUMS = ("pnl", "index_pnl", "legs_pnl", "index_own", "correlation", "legs_theta_gamma", "multiplier",
         "rho_implied_num", "rho_realized_num")


@pytree_dataclass
class DispersionTrade:
    """A dispersion trade on a ``sim.market.Basket``, as an engine policy: at step 0 sell one
    at-the-money index straddle (``direction="short_index"``; ``"long_index"`` is the reverse
    trade) and buy ``alpha_i = kappa w_i`` at-the-money straddles on each constituent, all of
    tenor ``tenor``, and delta-hedge every option each step to expiry.

    Marks: constituents at implied vols ``vol_scale x`` the basket's calm vols; the index at
    the vol implied by ``rho_implied`` and the entry weights, held fixed (as the weights drift,
    the implied average correlation at today's weights, ``rho_bar_t``, moves with them).
    ``kappa`` makes the book vega-, theta- or dollar-gamma-neutral at entry (``sizing``).

    Every P&L is per unit of the entry index level. The engine's wealth is the account's
    equity over its capital: ``W_t = 1 + PnL_t / capital`` (so the engine's max drawdown,
    ruin and growth statistics are the trade's).

    ``outputs``: per path ``pnl`` = ``index_own + correlation + legs_theta_gamma +
    residual`` (the attribution of the module docstring summed over steps), ``index_pnl``,
    ``legs_pnl``, ``multiplier`` M = sum_t (-Theta_I dt / sigma_I^2) sum_{i != j} p_i p_j
    sigma_i sigma_j (signed by direction), and the M-weighted ``rho_implied`` and
    ``rho_realized`` (``sum_{i != j} p_i p_j sigma_i sigma_j n_i n_j / sum_{i != j} ...``), so
    that ``correlation = M (rho_implied - rho_realized)`` on every path.
    """

    rho_implied: float = 0.5
    tenor: float = 0.25
    vol_scale: float = 1.0
    capital: float = 0.1
    sizing: str = choice_field("vega", _SIZINGS)  # traced: one compiled kernel for every sizing
    direction: str = choice_field("short_index", _DIRECTIONS)
    risk_free: float = 0.0
    floor: float = 0.0

    @property
    def sign(self):
        """+1 for short index / long constituents, -1 for the reverse (traced in a kernel)."""
        i = choice_index(self.direction, _DIRECTIONS)
        return (1.0 if i == 0 else -1.0) if isinstance(i, int) else jnp.where(i == 0, 1.0, -1.0)

    def validate(self, dt: float, n_steps: int) -> None:
        if self.sizing not in _SIZINGS:
            raise ParameterError(f"DispersionTrade.sizing = {self.sizing!r}; allowed: {list(_SIZINGS)}")
        if self.direction not in _DIRECTIONS:
            raise ParameterError(f"DispersionTrade.direction = {self.direction!r}; allowed: {list(_DIRECTIONS)}")
        check_range("DispersionTrade.rho_implied", self.rho_implied, -1.0, 1.0)
        check_range("DispersionTrade.tenor", self.tenor, 0.0, 30.0, lo_closed=False)
        check_range("DispersionTrade.vol_scale", self.vol_scale, 0.0, 100.0, lo_closed=False)
        check_range("DispersionTrade.capital", self.capital, 0.0, lo_closed=False)
        check_range("DispersionTrade.risk_free", self.risk_free, 0.0, 0.0)
        check_range("DispersionTrade.floor", self.floor, 0.0, 1.0, hi_closed=False)
        if n_steps * dt > float(self.tenor) * (1 + 1e-9):
            raise ParameterError(f"the horizon ({n_steps} steps = {n_steps * dt:.4g} years) is longer than the "
                                 f"straddles' tenor = {self.tenor}; allowed: n_steps <= tenor x steps_per_year "
                                 "(the trade is not rolled)")

    def check_process(self, process) -> None:
        if not isinstance(process, Basket):
            raise ParameterError(f"DispersionTrade needs a sim.market.Basket (constituent paths), got "
                                 f"{type(process).__name__}")
        par = process.params()
        w, s0 = par["shares"], par["prices0"]
        x = w * s0 / (w @ s0) * np.asarray(process.vols, np.float64) * float(self.vol_scale)
        own = float(x @ x)
        var = own + float(self.rho_implied) * (x.sum() ** 2 - own)
        if not var > 0:
            low = -own / (x.sum() ** 2 - own)
            raise ParameterError(f"DispersionTrade.rho_implied = {self.rho_implied} gives a non-positive index "
                                 f"variance; allowed: rho_implied in ({low:.4g}, 1]")

    def init(self, n: int, dt: float, process, process_state) -> TradeState:
        prices = process_state.prices
        entry = _entry(process, self, prices[0])
        z = jnp.zeros((n,), jnp.float32)
        return TradeState(prices, entry, {k: z for k in _SUMS})

    def step(self, key, state: TradeState, r, process, process_state, t, dt: float):
        e = state.entry
        s1 = process_state.prices
        tau0 = jnp.asarray(self.tenor, jnp.float32) - (t - 1).astype(jnp.float32) * dt
        tau0 = jnp.broadcast_to(tau0, s1.shape[:1])
        terms = _step_terms(e, state.prices, s1, tau0, dt, self.sign)
        add = dict(pnl=terms["pnl"], index_pnl=terms["index_pnl"], legs_pnl=terms["legs_pnl"],
                   index_own=jnp.sum(terms["index_own"], axis=-1), correlation=terms["correlation"],
                   legs_theta_gamma=jnp.sum(terms["legs_theta_gamma"], axis=-1), multiplier=terms["multiplier"],
                   rho_implied_num=terms["multiplier"] * terms["rho_implied"],
                   rho_realized_num=terms["multiplier"] * terms["cross_nn_over_cross"])
        sums = {k: state.sums[k] + add[k] for k in _SUMS}
        equity = jnp.asarray(self.capital, jnp.float32) + state.sums["pnl"]
        x = jnp.where(equity > 0, terms["pnl"] / jnp.where(equity > 0, equity, 1.0), -1.0)
        return TradeState(s1, e, sums), x

    def outputs(self, state: TradeState) -> dict:
        s = state.sums
        out = {k: s[k] for k in ("pnl", "index_pnl", "legs_pnl", "index_own", "correlation", "legs_theta_gamma",
                                 "multiplier")}
        out["residual"] = s["pnl"] - s["index_own"] - s["correlation"] - s["legs_theta_gamma"]
        m = jnp.where(s["multiplier"] != 0, s["multiplier"], 1.0)
        out["rho_implied"] = s["rho_implied_num"] / m
        out["rho_realized"] = s["rho_realized_num"] / m
        return out


def simulate_prices(basket, *, seed: int, n_paths: int, n_steps: int, steps_per_year: float = 252.0,
                    block_size: int | None = None) -> dict:
    """The constituents' price paths of the first ``n_paths`` lanes, ``prices`` ``[n_paths,
    n_steps + 1, N]`` (row 0 the initial prices) and ``regime`` ``[n_paths, n_steps]`` (the
    regime each step was drawn in): the very draws ``engine.simulate`` uses for the same
    ``(seed, block_size)``. Materializes paths x steps x N: for diagnostics of a few paths."""
    from sim import engine

    block_size = engine.DEFAULT_BLOCK_SIZE if block_size is None else block_size
    prices, regime = engine.sample_returns(
        basket, seed=seed, n_paths=n_paths, n_steps=n_steps, steps_per_year=steps_per_year, block_size=block_size,
        observe=lambda before, after, r: (after.prices, before.regime))
    p0 = np.broadcast_to(basket.params(np, np.float32)["prices0"], (n_paths, 1, basket.n_stocks))
    return {"prices": np.concatenate([p0, prices], axis=1), "regime": regime}


@jax.jit
def _path_terms(basket, trade, p, tau0, dt):
    """``_step_terms`` of every step of one price path ``p`` ``[T + 1, N]``, entered at ``p[0]``:
    one compiled program per path length (eagerly, each operation compiled on its own)."""
    return _step_terms(_entry(basket, trade, p[0]), p[:-1], p[1:], tau0, dt, trade.sign)


def attribution_table(basket, trade, prices, *, steps_per_year: float = 252.0, names=None):
    """Per-step attribution of ``trade`` on one path of constituent ``prices`` ``[T + 1, N]``,
    in float64: a DataFrame with one row per step and, per unit of the entry index level,

    ``pnl`` (the book's revaluation P&L, delta-hedged) = ``index_own`` (the index option's
    per-constituent gamma/theta terms, summed) + ``correlation`` (its correlation term,
    implied minus realized) + ``legs_theta_gamma`` (the constituent straddles' eq. 16 terms)
    + ``residual``; ``index_pnl``, ``legs_pnl``; ``uncorrected_correlation`` and ``uncorrected_residual``
    (the seed's eq. 19 with ``rho`` alone, uncorrected); ``rho_implied`` (``rho_bar_t`` at
    today's weights), ``rho_realized`` (the step's ``sum_{i != j} x_i x_j n_i n_j / sum_{i
    != j} x_i x_j``), ``multiplier``; and per constituent ``net_<name>``: its index term plus
    its own straddles' term, the combined book of the seed's last equation (corrected):
    ``pnl = sum_i net_i + correlation + residual``.
    """
    import pandas as pd

    prices = np.asarray(prices, np.float64)
    if prices.ndim != 2 or prices.shape[1] != basket.n_stocks or prices.shape[0] < 2:
        raise ParameterError(f"prices must be [T + 1 >= 2, N = {basket.n_stocks}], got shape {prices.shape}")
    if not np.all(np.isfinite(prices)) or np.any(prices <= 0):
        raise ParameterError("prices must be finite and > 0")
    n_steps = prices.shape[0] - 1
    dt = 1.0 / float(steps_per_year)
    trade.validate(dt, n_steps)
    trade.check_process(basket)
    names = [f"s{i}" for i in range(basket.n_stocks)] if names is None else list(names)
    with jax.enable_x64(True):
        tau0 = float(trade.tenor) - np.arange(n_steps) * dt
        t = {k: np.asarray(v, np.float64) for k, v in _path_terms(basket, trade, jnp.asarray(prices), jnp.asarray(tau0),
                                                                  jnp.float64(dt)).items()}
    out = pd.DataFrame({"step": np.arange(1, n_steps + 1), "index": t["index"], "pnl": t["pnl"],
                        "index_pnl": t["index_pnl"], "legs_pnl": t["legs_pnl"],
                        "index_own": t["index_own"].sum(axis=1), "correlation": t["correlation"],
                        "legs_theta_gamma": t["legs_theta_gamma"].sum(axis=1)})
    out["residual"] = out["pnl"] - out["index_own"] - out["correlation"] - out["legs_theta_gamma"]
    out["uncorrected_correlation"] = t["uncorrected_correlation"]
    out["uncorrected_residual"] = out["pnl"] - out["index_own"] - out["uncorrected_correlation"] - out["legs_theta_gamma"]
    out["rho_implied"] = t["rho_implied"]
    out["rho_realized"] = t["cross_nn_over_cross"]
    out["multiplier"] = t["multiplier"]
    net = t["index_own"] + t["legs_theta_gamma"]
    for i, name in enumerate(names):
        out[f"net_{name}"] = net[:, i]
    return out.set_index("step")


def trade_summary(outputs: dict, path_stats, rho_real=None) -> dict:
    """One row of a trade's results over paths, from ``DispersionTrade``'s per-path ``outputs``
    and the engine's ``PathStats`` (numpy): mean P&L (SE), std, 5th/95th percentiles, ES95 of
    the loss, P(loss), the attribution's mean terms, the implied and realized correlations, the
    account's median and 95th-percentile max drawdown and its ruin probability (equity <= 0).
    With the configured realized correlation ``rho_real``, also the theory ``(rho_implied -
    rho_real) M`` and the gap to it (mean, SE, z)."""
    ex = {k: np.asarray(v, np.float64) for k, v in outputs.items()}
    pnl = ex["pnl"]
    n = pnl.size
    se = lambda x: float(x.std(ddof=1) / np.sqrt(n))  # noqa: E731
    row = {"pnl_mean": pnl.mean(), "pnl_se": se(pnl), "pnl_std": pnl.std(ddof=1),
           "pnl_p5": np.percentile(pnl, 5), "pnl_p95": np.percentile(pnl, 95),
           "loss_es95": stats.expected_shortfall(pnl, 0.95), "p_loss": float((pnl < 0).mean()),
           **{f"{k}_mean": ex[k].mean() for k in ("index_pnl", "legs_pnl", *ATTRIBUTION_TERMS, "multiplier")},
           "rho_implied_mean": ex["rho_implied"].mean(), "rho_realized_mean": ex["rho_realized"].mean()}
    dd = -np.expm1(-np.asarray(path_stats.max_drawdown_log, np.float64))
    row.update(max_drawdown_median=float(np.median(dd)), max_drawdown_p95=float(np.percentile(dd, 95)),
               ruin_probability=float((np.asarray(path_stats.ruin_step) != stats.NEVER).mean()))
    if rho_real is not None:
        theory = (ex["rho_implied"] - rho_real) * ex["multiplier"]
        d = pnl - theory
        row.update(theory_mean=theory.mean(), gap=d.mean(), gap_se=se(d), gap_z=d.mean() / se(d))
    return row


def attribution_path(basket, trade, *, seed: int, n_steps: int, steps_per_year: float, block_size: int,
                     lanes: int = 256, crash_mid_trade: bool = False):
    """The per-step attribution (``attribution_table``) on one of the engine's own constituent
    paths: the first lane, or with ``crash_mid_trade`` the first of ``lanes`` whose crash
    regime starts between 20% and 60% of the way to expiry (None when there is none).
    Columns ``lane`` and ``crash_regime`` come first."""
    sim = simulate_prices(basket, seed=seed, n_paths=lanes, n_steps=n_steps, steps_per_year=steps_per_year,
                          block_size=block_size)
    lane = 0
    if crash_mid_trade:
        first = np.where(sim["regime"].any(axis=1), sim["regime"].argmax(axis=1), n_steps)
        ok = np.flatnonzero((first > 0.2 * n_steps) & (first < 0.6 * n_steps))
        if ok.size == 0:
            return None
        lane = int(ok[0])
    table = attribution_table(basket, trade, sim["prices"][lane], steps_per_year=steps_per_year)
    table.insert(0, "crash_regime", sim["regime"][lane])
    table.insert(0, "lane", lane)
    return table


def attribution_totals(table) -> dict:
    """An ``attribution_path`` table summed over the trade: P&L and every term (with the seed's
    uncorrected correlation term and residual), and ``closes_to``, the largest per-step gap
    between the P&L and its terms (0 up to rounding when the attribution closes)."""
    terms = ["pnl", *ATTRIBUTION_TERMS, "uncorrected_correlation", "uncorrected_residual"]
    return {"lane": int(table["lane"].iloc[0]), **{k: float(table[k].sum()) for k in terms},
            "closes_to": float((table["pnl"] - table.filter(like="net_").sum(axis=1)
                                - table["correlation"] - table["residual"]).abs().max())}


def spread_points(outputs: dict, rho_real: float):
    """Per path of a trade's outputs: P&L against the implied - realized correlation spread,
    the multiplier and the correlation term (``rho_real_config``: the configured correlation)."""
    import pandas as pd

    return pd.DataFrame({"rho_real_config": float(rho_real), "spread": outputs["rho_implied"] - outputs["rho_realized"],
                         "pnl": outputs["pnl"], "multiplier": outputs["multiplier"],
                         "correlation_term": outputs["correlation"]})


def correlation_peaks(rc, windows: dict) -> dict:
    """The highest ``implied_style`` average correlation of ``rolling_correlation``'s table in
    each window (name -> (first, last) date), and its date."""
    return {name: {"max": float(rc.loc[a:b, "implied_style"].max()),
                   "date": str(rc.loc[a:b, "implied_style"].idxmax().date())} for name, (a, b) in windows.items()}
