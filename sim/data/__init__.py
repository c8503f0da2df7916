"""Real market data shipped with the package, and validated loading of a user's own prices.

Shipped files (``sim/data/files``, re-extracted byte for byte by ``scripts/extract_data.py``;
nothing is downloaded at run time):

* ``sp500_index.csv.gz``, ``sp500_constituents.csv.gz``: S&P 500 index and 20 large
  constituents, daily closes 1990-01-02 .. 2022-12-28 (adjusted), from skfolio 1.12.2,
  BSD-3-Clause (``LICENSE-skfolio.txt``).
* ``sp500_ohlcv.csv.gz``: S&P 500 daily open/high/low/close/adjusted close/volume
  1999-01-04 .. 2018-12-31, and ``vix.csv.gz``: VIX close 2014-01-03 .. 2019-01-03 (holiday rows marked '.' dropped), from
  arch 8.0.0, NCSA licence (``LICENSE-arch.md``).

Every loader returns pandas objects indexed by a sorted, unique ``DatetimeIndex`` and runs
``validate_prices``: no NaN, finite, strictly positive prices.
"""

from __future__ import annotations

import pathlib

import numpy as np
import pandas as pd

from sim.validation import ParameterError

__all__ = [
    "DATA_DIR",
    "load_sp500_index",
    "load_sp500_constituents",
    "load_sp500_ohlcv",
    "load_vix",
    "load_prices",
    "validate_prices",
    "simple_returns",
    "sp500_bootstrap",
    "detector_inputs",
    "load_returns",
]

DATA_DIR = pathlib.Path(__file__).resolve().parent / "files"


def validate_prices(prices: pd.DataFrame | pd.Series, *, name: str = "prices", positive=None):
    """Check a price table: sorted unique dates, no NaN, finite and strictly positive values.

    Args:
      prices: a Series or DataFrame indexed by dates.
      name: what to call it in error messages (a file name, say).
      positive: columns that must be > 0 (default: all; volume columns may be 0).
    Returns:
      ``prices`` unchanged.
    Raises:
      ParameterError naming the column, the first offending date and the rule broken.
    """
    if not isinstance(prices.index, pd.DatetimeIndex):
        raise ParameterError(f"{name}: index must be dates (a DatetimeIndex), got {type(prices.index).__name__}")
    if len(prices) < 2:
        raise ParameterError(f"{name}: needs at least 2 rows, got {len(prices)}")
    if prices.index.has_duplicates:
        dup = prices.index[prices.index.duplicated()][0]
        raise ParameterError(f"{name}: duplicate date {dup.date()}; allowed: unique dates")
    if not prices.index.is_monotonic_increasing:
        steps = np.flatnonzero(np.diff(prices.index.asi8) < 0)
        i = int(steps[0]) + 1
        raise ParameterError(f"{name}: dates are not sorted: row {i + 1} ({prices.index[i].date()}) comes after "
                             f"{prices.index[i - 1].date()}; allowed: strictly increasing dates")
    frame = prices.to_frame() if isinstance(prices, pd.Series) else prices
    for col in frame.columns:
        values = pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(values)
        if bad.any():
            raise ParameterError(
                f"{name}: column {col!r} has a missing or non-numeric value on {frame.index[bad.argmax()].date()}; "
                "allowed: finite numbers (drop or fill the row first)"
            )
        if positive is None or col in positive:
            if (values <= 0).any():
                when = frame.index[(values <= 0).argmax()].date()
                raise ParameterError(f"{name}: column {col!r} has a non-positive price on {when}; allowed: prices > 0")
    return prices


def _read(file: str, *, date_format: str | None = None) -> pd.DataFrame:
    frame = pd.read_csv(DATA_DIR / file)
    frame["Date"] = pd.to_datetime(frame["Date"], format=date_format)
    return frame.set_index("Date").sort_index()


def load_sp500_index() -> pd.Series:
    """S&P 500 index daily close, 1990-01-02 .. 2022-12-28 (8,313 days)."""
    s = _read("sp500_index.csv.gz", date_format="%Y-%m-%d")["SP500"].rename("SP500")
    return validate_prices(s, name="sp500_index.csv.gz")


def load_sp500_constituents() -> pd.DataFrame:
    """Daily adjusted closes of 20 large S&P 500 stocks, 1990-01-02 .. 2022-12-28."""
    return validate_prices(_read("sp500_constituents.csv.gz", date_format="%Y-%m-%d"), name="sp500_constituents.csv.gz")


def load_sp500_ohlcv() -> pd.DataFrame:
    """S&P 500 daily Open, High, Low, Close, Adj Close, Volume, 1999-01-04 .. 2018-12-31."""
    frame = _read("sp500_ohlcv.csv.gz", date_format="%m/%d/%Y")
    return validate_prices(frame, name="sp500_ohlcv.csv.gz", positive=["Open", "High", "Low", "Close", "Adj Close"])


def load_vix() -> pd.Series:
    """CBOE VIX daily close, 2014-01-03 .. 2019-01-03 (1,259 days).

    The file (FRED's series) marks US market holidays with ``.``; those rows (46) carry no
    observation and are dropped here, the one documented exception to "no missing values".
    """
    raw = pd.read_csv(DATA_DIR / "vix.csv.gz", na_values=["."])
    raw["Date"] = pd.to_datetime(raw["Date"], format="%m/%d/%Y")
    s = raw.set_index("Date").sort_index()["vix"].dropna().rename("VIX")
    return validate_prices(s, name="vix.csv.gz")


def _read_dated(path, what: str, date_column: str, columns) -> pd.DataFrame:
    """A CSV (optionally gzipped) or parquet file with a date column, as a frame indexed by
    date; the file, a missing column or the first bad date is named in the error."""
    path = pathlib.Path(path)
    if not path.exists():
        raise ParameterError(f"{what} file {str(path)!r} does not exist")
    try:
        frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise ParameterError(f"{what} file {str(path)!r} is empty; allowed: a header with a date column and "
                             f"{what} columns, and at least 2 rows") from None
    except (ValueError, OSError, pd.errors.ParserError) as err:
        raise ParameterError(f"{what} file {str(path)!r} cannot be read: {err}") from None
    if date_column not in frame.columns:
        raise ParameterError(f"{path.name}: no date column {date_column!r}; columns are {list(frame.columns)}")
    dates = pd.to_datetime(frame[date_column], errors="coerce")
    if dates.isna().any():
        i = int(np.flatnonzero(dates.isna().to_numpy())[0])
        raise ParameterError(f"{path.name}: row {i + 1}: {date_column} = {frame[date_column].iloc[i]!r} is not a date; "
                             "allowed: dates such as 2020-01-31")
    frame = frame.assign(**{date_column: dates}).set_index(date_column)
    if columns is not None:
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise ParameterError(f"{path.name}: columns {missing} not found; columns are {list(frame.columns)}")
        frame = frame[columns]
    return frame


def load_prices(path, *, date_column: str = "Date", columns: list[str] | None = None) -> pd.DataFrame:
    """A user's own prices from CSV (optionally gzipped) or parquet, through the same checks.

    Args:
      path: file with a date column and one column of prices per asset.
      date_column: name of the date column.
      columns: price columns to keep (default: all others).
    """
    return validate_prices(_read_dated(path, "price", date_column, columns), name=pathlib.Path(path).name)


def load_returns(path, *, date_column: str = "Date", columns: list[str] | None = None) -> pd.DataFrame:
    """A user's own simple returns (one column per asset, a date column) from CSV or parquet,
    checked like prices: the file, a column or a date that is wrong is named, and so is the
    first date whose return is missing, not finite, or not above -1."""
    frame = _read_dated(path, "returns", date_column, columns)
    name = pathlib.Path(path).name
    step = np.diff(frame.index.to_numpy())
    if (step <= np.timedelta64(0)).any():
        i = int(np.flatnonzero(step <= np.timedelta64(0))[0])
        raise ParameterError(f"{name}: row {i + 2}: {date_column} {frame.index[i + 1].date()} does not come after "
                             f"{frame.index[i].date()}; allowed: dates increasing without repeats")
    for col in frame.columns:
        x = pd.to_numeric(frame[col], errors="coerce")
        bad = ~np.isfinite(x.to_numpy(dtype=float)) | (x.to_numpy(dtype=float) <= -1.0)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            value = frame[col].iloc[i]
            shown = "missing" if pd.isna(value) else repr(value.item() if hasattr(value, "item") else value)
            raise ParameterError(f"{name}: column {col!r} on {frame.index[i].date()}: {shown} is "
                                 "not a simple return; allowed: finite numbers > -1")
        frame[col] = x.astype(float)
    return frame


def simple_returns(prices: pd.DataFrame | pd.Series):
    """Daily simple returns ``P_t / P_{t-1} - 1`` (first row dropped)."""
    return (prices / prices.shift(1) - 1.0).iloc[1:]


def sp500_bootstrap(mean_block: float = 20.0):
    """A ``BlockBootstrap`` of the shipped S&P 500 daily simple returns, 1990-2022."""
    from sim.processes import BlockBootstrap

    returns = simple_returns(load_sp500_index()).to_numpy(np.float32)
    return BlockBootstrap(returns=returns, mean_block=mean_block)


def detector_inputs(start, end, *, halflife_days: float, vrp: float, steps_per_year: float = 252.0):
    """The crash detector's daily inputs on the shipped data (``sim.regime.run_detector``),
    and the 20 constituents' simple returns ``[days, 20]`` (the first day NaN).

    Columns: ``price`` (S&P 500), ``x`` (its log), ``r`` (simple return, 0 on the first day),
    ``vix``: VIX / 100 where the shipped VIX has the day, else an implied-vol level from
    realized vol (EWM of squared returns with ``halflife_days``, annualized) plus ``vrp``;
    ``vix_source`` says which. ``log_spread``: log of the trailing 21-day mean Corwin-Schultz
    spread where the shipped OHLCV has the day, else NaN (the detector then skips it). Its
    limits: the S&P 500 is an index, not a traded book, so its high-low range measures
    intraday volatility as much as any spread; the OHLCV's ``volume`` (shares of the index's
    members) rises in crashes, the opposite of depth, so it is kept for inspection but is not
    a signal. At least 300 days between ``start`` and ``end``.
    """
    from sim.regime import corwin_schultz_spread

    start, end = pd.Timestamp(start), pd.Timestamp(end)
    spx = load_sp500_index().loc[start:end]
    if len(spx) < 300:
        raise ParameterError(f"real.start..real.end holds {len(spx)} days of the shipped S&P 500; allowed: >= 300")
    frame = pd.DataFrame({"price": spx})
    frame["x"] = np.log(frame["price"])
    frame["r"] = frame["price"].pct_change().fillna(0.0)
    realized = np.sqrt((frame["r"] ** 2).ewm(halflife=float(halflife_days)).mean() * float(steps_per_year))
    vix = load_vix().reindex(frame.index) / 100.0
    frame["vix_source"] = np.where(vix.notna(), "VIX", "realized+vrp")
    frame["vix"] = vix.fillna(realized + float(vrp))
    ohlcv = load_sp500_ohlcv()
    cs = pd.Series(corwin_schultz_spread(ohlcv["High"], ohlcv["Low"]), index=ohlcv.index)
    # The authors' practice: negative two-day estimates set to 0 (done in the estimator), then
    # averaged; here over the trailing 21 days, so the series stays causal and mostly > 0.
    cs = cs.rolling(21, min_periods=10).mean()
    frame["log_spread"] = np.log(cs.where(cs > 0)).reindex(frame.index)
    frame["volume"] = ohlcv["Volume"].reindex(frame.index)
    stocks = load_sp500_constituents().reindex(frame.index).pct_change().to_numpy(np.float64)
    stocks[0] = np.nan
    return frame, stocks
