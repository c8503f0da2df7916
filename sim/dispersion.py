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

import numpy as np

from sim import options
from sim.validation import ParameterError

__all__ = [
    "cap_weights", "check_correlation", "index_variance", "implied_correlation_pairs",
    "implied_correlation_sums", "realized_correlation", "rolling_correlation", "option_attribution",
    "index_option_attribution", "short_index_straddle_pnl",
]


def _vec(name, x) -> np.ndarray:
    a = np.asarray(x, np.float64)
    if a.ndim != 1 or a.size < 1:
        raise ParameterError(f"{name} must be a 1-D array, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ParameterError(f"{name} has a NaN or infinite entry at {int(np.argmax(~np.isfinite(a)))}")
    return a


def _same_length(**arrays):
    sizes = {k: v.size for k, v in arrays.items()}
    if len(set(sizes.values())) > 1:
        raise ParameterError(f"mismatched lengths: {sizes}; allowed: one entry per constituent")


def cap_weights(shares, prices) -> np.ndarray:
    """``p_i = w_i S_i / I`` with ``I = sum w_i S_i``; raises unless ``I > 0`` and prices > 0."""
    w, s = _vec("shares", shares), _vec("prices", prices)
    _same_length(shares=w, prices=s)
    if np.any(s <= 0):
        raise ParameterError("prices must be > 0")
    index = float(w @ s)
    if not index > 0:
        raise ParameterError(f"the index sum_i w_i S_i = {index:g} must be > 0; allowed: share counts giving a "
                             "positive index")
    return w * s / index


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


def index_variance(p, vols, corr) -> float:
    p, v = _vec("weights", p), _vec("vols", vols)
    _same_length(weights=p, vols=v)
    c = check_correlation(corr, p.size)
    x = p * v
    return float(x @ c @ x)


def _own_and_cross(p, vols):
    p, v = _vec("weights", p), _vec("vols", vols)
    _same_length(weights=p, vols=v)
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
    p = np.full(r.shape[1], 1.0 / r.shape[1]) if weights is None else _vec("weights", weights)
    _same_length(weights=p, returns_columns=np.empty(r.shape[1]))
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
    (``rho`` alone), its residual and ``seed_gap`` (= the dropped realized cross term)."""
    s0, s1, v = _vec("prices", prices), _vec("prices_next", prices_next), _vec("vols", vols)
    p = cap_weights(shares, s0)
    _same_length(prices=s0, prices_next=s1, vols=v)
    w = _vec("shares", shares)
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
            "residual": residual, "seed_correlation": seed_correlation, "seed_residual": seed_residual,
            "seed_gap": seed_residual - residual, "dropped_term": -scale * float((cross * nn).sum()),
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
    w = 1.0 / s[0] if shares is None else _vec("shares", shares)
    _same_length(shares=w, constituents=np.empty(n))
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


def short_index_straddle_pnl(*, shares, prices, vols, rho_real: float, rho_implied: float, expiry: float,
                             n_steps: int, n_paths: int, seed: int = 0) -> dict:
    """The correlation leg of a dispersion trade, simulated: short one at-the-money index
    straddle priced at the index vol implied by ``rho_implied``, delta-hedged each step, while
    the constituents follow correlated geometric Brownian motions (vols ``vols``, pairwise
    correlation ``rho_real``, index ``sum_i w_i S_i``). Call inside ``jax.enable_x64(True)``.

    Returns per path ``pnl`` and ``multiplier`` = ``sum_t (-Theta_I dt / sigma_I^2) sum_{i != j}
    p_i p_j sigma_i sigma_j`` along the path (``p`` the weights at each step): the theory of
    the module docstring gives ``E[pnl] = (rho_implied - rho_real) E[multiplier]`` up to the
    discretization error of daily hedging. The implied correlation is held fixed; the implied
    index vol follows the drifting weights, and each step's P&L is the hedged move at that
    step's vol (the re-mark between steps as the weights drift is not counted: a model P&L,
    not a trader's). Constituent straddles at implied = realized vols add noise, not mean,
    so they are left out here.
    """
    import jax

    from sim.market import correlated_normals

    w, s0, v = _vec("shares", shares), _vec("prices", prices), _vec("vols", vols)
    _same_length(shares=w, prices=s0, vols=v)
    n = w.size
    corr = np.full((n, n), float(rho_real))
    np.fill_diagonal(corr, 1.0)
    check_correlation(corr)
    dt = expiry / n_steps
    s = np.tile(s0, (n_paths, 1))
    index = s @ w
    strike = float(s0 @ w)
    pnl = np.zeros(n_paths)
    mult = np.zeros(n_paths)
    key = jax.random.PRNGKey(seed)

    def book(i_level, tau, vol):
        c = options.greeks(spot=i_level, strike=strike, expiry=tau, vol=vol, call=True)
        p = options.greeks(spot=i_level, strike=strike, expiry=tau, vol=vol, call=False)
        return {k: np.asarray(c[k], np.float64) + np.asarray(p[k], np.float64) for k in ("price", "delta", "theta")}

    for t in range(n_steps):
        p = w * s / index[:, None]
        x = p * v
        cross = x.sum(axis=1) ** 2 - (x * x).sum(axis=1)
        var_i = (x * x).sum(axis=1) + rho_implied * cross
        vol_i = np.sqrt(var_i)
        tau = expiry - t * dt
        g = book(index, tau, vol_i)
        z = np.asarray(correlated_normals(jax.random.fold_in(key, t), n_paths, corr), np.float64)
        s = s * np.exp(-0.5 * v * v * dt + v * np.sqrt(dt) * z)
        new_index = s @ w
        after = book(new_index, tau - dt, vol_i)["price"]  # at this step's implied vol
        pnl -= (after - g["price"]) - g["delta"] * (new_index - index)
        mult += -g["theta"] * dt / var_i * cross
        index = new_index
    return {"pnl": pnl, "multiplier": mult}
