"""The shipped data loads, validated, with the documented spans."""

import numpy as np
import pandas as pd

from sim import data


def test_shipped_series():
    idx = data.load_sp500_index()
    assert len(idx) == 8313 and idx.index[0] == pd.Timestamp("1990-01-02") and idx.index[-1] == pd.Timestamp("2022-12-28")
    cons = data.load_sp500_constituents()
    assert cons.shape == (8313, 20) and cons.index.equals(idx.index)
    ohlcv = data.load_sp500_ohlcv()
    assert list(ohlcv.columns) == ["Open", "High", "Low", "Close", "Adj Close", "Volume"]
    assert (ohlcv["High"] >= ohlcv["Low"]).all()
    vix = data.load_vix()
    assert vix.index[0] == pd.Timestamp("2014-01-03") and len(vix) == 1259
    for frame in (idx, cons, ohlcv, vix):
        assert frame.index.is_monotonic_increasing and not frame.index.has_duplicates
    # Cross-check the two sources on their common dates: same S&P 500 closes.
    common = idx.index.intersection(ohlcv.index)
    np.testing.assert_allclose(idx[common], ohlcv.loc[common, "Close"], rtol=1e-3)
    for name in ("LICENSE-skfolio.txt", "LICENSE-arch.md"):
        assert (data.DATA_DIR / name).stat().st_size > 500


def test_user_csv_round_trip(tmp_path):
    idx = data.load_sp500_index().iloc[:100]
    idx.rename("SPX").reset_index().to_csv(tmp_path / "mine.csv", index=False)
    back = data.load_prices(tmp_path / "mine.csv")
    np.testing.assert_allclose(back["SPX"].to_numpy(), idx.to_numpy())


def test_bootstrap_of_real_returns():
    p = data.sp500_bootstrap(mean_block=5.0)
    r = data.simple_returns(data.load_sp500_index())
    assert p.returns.shape == (len(r),) and np.allclose(p.returns, r.to_numpy(), rtol=1e-6)
