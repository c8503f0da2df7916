import numpy as np
import pytest
from scipy import stats as sps


def chi2_uniform_2d(a, b, bins=16):
    """p-value of a chi-square test that (a, b), each uniform on (0, 1), are independent."""
    counts, _, _ = np.histogram2d(a, b, bins=bins, range=[[0, 1], [0, 1]])
    expected = len(a) / bins**2
    stat = ((counts - expected) ** 2 / expected).sum()
    return sps.chi2.sf(stat, bins * bins - 1)


def tail_count_ok(x, q, p, upper):
    """Count of draws beyond the true p-quantile q is Binomial(n, p): within 4 sd of n p."""
    n = len(x)
    count = (x > q).sum() if upper else (x < q).sum()
    sd = np.sqrt(n * p * (1 - p))
    return abs(count - n * p) <= 4 * sd, count, n * p, sd


@pytest.fixture(scope="session")
def rng():
    return np.random.default_rng(12345)
