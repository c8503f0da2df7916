"""Bad input gets a clear error naming the parameter and its range, before any work."""

import numpy as np
import pandas as pd
import pytest

from sim import data
from sim.engine import ConstantMix, simulate
from sim.processes import Binary, BlockBootstrap, GarchT, Gaussian, Merton, RegimeSwitching, StudentT
from sim.validation import ParameterError


@pytest.mark.parametrize(
    "process, match",
    [
        (StudentT(nu=2.0), r"StudentT\.nu = 2\.0 .*\(2, inf\)"),
        (StudentT(nu=1.5), r"StudentT\.nu"),
        (Gaussian(sigma=-0.1), r"Gaussian\.sigma = -0\.1 .*\[0, inf\)"),
        (Gaussian(mu=float("nan")), r"Gaussian\.mu = nan"),
        (Gaussian(mu=float("inf")), r"Gaussian\.mu = inf"),
        (Binary(p=1.5), r"Binary\.p = 1\.5 .*\[0, 1\]"),
        (Binary(p=-0.1), r"Binary\.p"),
        (RegimeSwitching(rate_to_crash=-1.0), r"RegimeSwitching\.rate_to_crash"),
        (GarchT(alpha=0.2, beta=0.85), r"GarchT\.alpha \+ GarchT\.beta"),
        (Merton(lam=1000.0), r"Merton\.lam = 1000\.0 .*\[0, 252\]"),
        (BlockBootstrap(returns=np.array([0.01, np.nan, 0.02])), r"BlockBootstrap\.returns = nan"),
        (StudentT(nu=np.array([3.0, 2.0])), r"StudentT\.nu = 2\.0"),
    ],
)
def test_bad_process_parameters(process, match):
    with pytest.raises(ParameterError, match=match):
        simulate(process, n_paths=10, n_steps=10)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(n_paths=0), r"n_paths = 0 is out of range; allowed: an integer in \[1, "),
        (dict(n_steps=0), r"n_steps = 0"),
        (dict(n_paths=2.5), r"n_paths = 2\.5 is not an integer"),
        (dict(policy=ConstantMix(floor=1.0)), r"floor = 1\.0 .*\[0, 1\)"),
        (dict(policy=ConstantMix(fraction=float("nan"))), r"fraction = nan"),
        (dict(steps_per_year=0), r"steps_per_year = 0"),
    ],
)
def test_bad_engine_arguments(kwargs, match):
    args = dict(n_paths=10, n_steps=10) | kwargs
    with pytest.raises(ParameterError, match=match):
        simulate(StudentT(), **args)


def test_price_file_with_nan_or_non_positive_prices(tmp_path):
    dates = pd.date_range("2020-01-01", periods=4, freq="D").strftime("%Y-%m-%d")
    pd.DataFrame({"Date": dates, "A": [1.0, 2.0, np.nan, 3.0]}).to_csv(tmp_path / "nan.csv", index=False)
    with pytest.raises(ParameterError, match=r"nan\.csv: column 'A' has a missing .* 2020-01-03"):
        data.load_prices(tmp_path / "nan.csv")
    pd.DataFrame({"Date": dates, "A": [1.0, 2.0, 0.0, 3.0]}).to_csv(tmp_path / "zero.csv", index=False)
    with pytest.raises(ParameterError, match=r"non-positive price on 2020-01-03; allowed: prices > 0"):
        data.load_prices(tmp_path / "zero.csv")
    pd.DataFrame({"Date": dates[::-1], "A": [1.0, 2.0, 2.5, 3.0]}).to_csv(tmp_path / "rev.csv", index=False)
    with pytest.raises(ParameterError, match=r"not sorted"):
        data.load_prices(tmp_path / "rev.csv")
    with pytest.raises(ParameterError, match=r"does not exist"):
        data.load_prices(tmp_path / "missing.csv")


def test_price_file_empty_bad_date_or_unsorted_says_which_file_and_where(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ParameterError, match=r"empty\.csv' is empty"):
        data.load_prices(tmp_path / "empty.csv")
    (tmp_path / "baddate.csv").write_text("Date,A\n2020-01-01,1.0\n2020-13-45,2.0\n2020-01-03,3.0\n")
    with pytest.raises(ParameterError, match=r"baddate\.csv: row 2: Date = '2020-13-45' is not a date"):
        data.load_prices(tmp_path / "baddate.csv")
    (tmp_path / "unsorted.csv").write_text("Date,A\n2020-01-01,1.0\n2020-01-03,2.0\n2020-01-02,3.0\n2020-01-04,3.0\n")
    with pytest.raises(ParameterError, match=r"unsorted\.csv: dates are not sorted: row 3 \(2020-01-02\) comes after "
                                             r"2020-01-03"):
        data.load_prices(tmp_path / "unsorted.csv")
