import json
import os
import pathlib
import subprocess
import sys
import tempfile

import numpy as np
import pytest
from scipy import stats as sps


_CREATED: list[str] = []


def _session_compilation_cache() -> None:
    """One JAX persistent compilation cache for the test session, shared by the xdist workers and
    every experiment they start in a subprocess, kept between sessions in the user's cache
    directory (``$XDG_CACHE_HOME/fat-tails-lab/jax-tests``, least recently used entries evicted
    beyond 2 GiB): a second session on the same machine, from any clone, loads the kernels the
    first one compiled. JAX keys an entry by the compiled program, its options and the JAX
    version, so a changed kernel is compiled again and a result never depends on the cache.
    ``FTL_TEST_JAX_CACHE=fresh`` uses a new directory removed at the end (a cold session, to
    measure compilation), ``FTL_TEST_JAX_CACHE=off`` none, ``FTL_TEST_JAX_CACHE_DIR`` another
    directory. The first process of the session (pytest's controller, or a run without workers)
    chooses and puts it in the environment, which the workers inherit. Set before JAX is imported."""
    mode = os.environ.get("FTL_TEST_JAX_CACHE", "")
    if mode == "off":
        os.environ["FTL_JAX_CACHE"] = "off"
        return
    where = os.environ.get("FTL_TEST_JAX_CACHE_DIR")
    if not where and mode == "fresh":
        where = tempfile.mkdtemp(prefix="ftl-test-jax-cache-")
        _CREATED.append(where)
    elif not where:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        where = os.path.join(base, "fat-tails-lab", "jax-tests")
        try:
            os.makedirs(where, exist_ok=True)
        except OSError:  # no writable cache directory: a session's own
            where = tempfile.mkdtemp(prefix="ftl-test-jax-cache-")
            _CREATED.append(where)
    os.environ["FTL_TEST_JAX_CACHE_DIR"] = where
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", where)
    try:  # JAX evicts under a file lock (filelock, in the test extra); without it, unbounded
        import filelock  # noqa: F401

        os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(2 << 30))
    except ImportError:
        pass
    # every compile is cached, however quick: a warm session then compiles nothing (measured on
    # test_options, test_kelly, test_hedge, test_regime warm: 75 s at 0 against 99 s at 0.2 s)
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("FTL_JAX_CACHE", where)  # the experiments' own setting (lab.harness)


def pytest_unconfigure(config):
    import shutil

    for where in _CREATED:  # only the process that made it (the workers inherit it)
        shutil.rmtree(where, ignore_errors=True)


_session_compilation_cache()


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


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def job_dirs(sweep_dir) -> list[pathlib.Path]:
    """A sweep's point directories (named by their overrides), in the order of Hydra's job numbers."""
    import yaml

    found = []
    for p in pathlib.Path(sweep_dir).iterdir():
        meta = p / ".hydra" / "hydra.yaml"
        if meta.exists():
            found.append((int(yaml.safe_load(meta.read_text())["hydra"]["job"]["num"]), p))
    return [p for _, p in sorted(found)]


def job_dir(sweep_dir, num: int) -> pathlib.Path:
    return job_dirs(sweep_dir)[num]


def run_multirun(module: str, overrides: list[str], sweep_dir, files: list[str], env=None) -> list[dict]:
    """Run ``python -m module -m overrides`` for real into ``sweep_dir``; check that every job
    directory holds ``files`` (non-empty) and Hydra's saved config; return each job's summary."""
    cmd = [sys.executable, "-m", module, "-m", *overrides, f"hydra.sweep.dir={sweep_dir}"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                         env=None if env is None else {**os.environ, **env})
    assert out.returncode == 0, out.stderr[-3000:]
    jobs = job_dirs(sweep_dir)
    summaries = []
    for job in jobs:
        for f in files:
            assert (job / f).stat().st_size > 0, (job.name, f)
        assert (job / ".hydra" / "config.yaml").exists()
        summaries.append(json.loads((job / "summary.json").read_text()))
    return summaries


def pytest_collection_modifyitems(config, items):
    """The slow tests first, so that the xdist workers do not end on one long test while the
    other waits (a stable sort: the order within each tier is kept)."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
