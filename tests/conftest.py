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
    if "FTL_TEST_JAX_CACHE_DIR" not in os.environ:  # the session's first process
        prune_compilation_cache(where)
    os.environ["FTL_TEST_JAX_CACHE_DIR"] = where
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", where)
    # No JAX_COMPILATION_CACHE_MAX_SIZE: with a size bound JAX scans the whole directory (a stat
    # and a read of every entry's access-time file) at each write, under one lock for all the
    # workers, so a cold session's ~2,500 writes cost O(n^2): 352-388 s against 330 s without
    # (whole suite, empty cache, 2-core Intel, 2026-12-03; system time 50-56 s against 31 s).
    # The bound is kept by prune_compilation_cache, once, at the session's start instead.
    # every compile is cached, however quick: a warm session then compiles nothing (measured on
    # test_options, test_kelly, test_hedge, test_regime warm: 75 s at 0 against 99 s at 0.2 s)
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("FTL_JAX_CACHE", where)  # the experiments' own setting (lab.harness)


def prune_compilation_cache(where=None, max_bytes: int = 2 << 30) -> int:
    """Keep a JAX compilation cache directory within ``max_bytes``: remove its oldest entries
    (by modification time) beyond the bound, and leftovers of JAX's size-bounded mode that a
    killed writer can leave (an ``-atime`` file without its entry; where the user turned that
    mode on, ``JAX_COMPILATION_CACHE_MAX_SIZE``, an entry without its ``-atime`` file gets one,
    since JAX's eviction fails on such an entry and the cache then silently stops taking new
    ones). Returns how many files were removed or repaired. A whole cache holds ~40 MB after a
    cold session, so the bound is for years of kernels, not one session."""
    where = pathlib.Path(where or os.environ.get("FTL_TEST_JAX_CACHE_DIR", ""))
    if not where.is_dir():
        return 0
    bounded = os.environ.get("JAX_COMPILATION_CACHE_MAX_SIZE", "-1").strip() not in ("", "-1")
    changed = 0
    entries = []
    names = {p.name for p in where.iterdir()}
    for name in names:
        if name.endswith("-atime") and name.removesuffix("-atime") + "-cache" not in names:
            (where / name).unlink(missing_ok=True)
            changed += 1
        elif name.endswith("-cache"):
            try:
                st = (where / name).stat()
            except FileNotFoundError:  # another session's pruning
                continue
            entries.append((st.st_mtime_ns, st.st_size, name))
            atime = where / (name.removesuffix("-cache") + "-atime")
            if bounded and not atime.exists():
                atime.write_bytes(st.st_mtime_ns.to_bytes(8, "little"))
                changed += 1
    total = sum(size for _, size, _ in entries)
    for _, size, name in sorted(entries):  # oldest first
        if total <= max_bytes:
            break
        (where / name).unlink(missing_ok=True)
        (where / (name.removesuffix("-cache") + "-atime")).unlink(missing_ok=True)
        total -= size
        changed += 1
    return changed


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


def run_module(module: str, args: list[str], *, timeout: float = 600, env: dict | None = None):
    """``python -m module args`` as a ``subprocess.CompletedProcess`` (returncode, stdout,
    stderr). Run in this process (no interpreter, JAX or Hydra start-up; kernels this test
    worker has traced already are reused) unless ``env`` adds to the environment, which only a
    child process can take. The command line, Hydra's parse of it, its logging and its exit
    code are the command's own; what a run changes in the process (the root logger, Hydra's
    global state, the SIGTERM and SIGINT handlers the harness installs) is put back afterwards. The tests
    of the process boundary itself (kills, launchers, concurrent runs, several processes)
    start real ones. ``timeout`` bounds a child process only (pytest's own limits hold in process)."""
    if env:
        return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True,
                              timeout=timeout, env={**os.environ, **env})
    import contextlib
    import io
    import logging
    import runpy
    import signal
    import warnings

    from hydra.core.global_hydra import GlobalHydra

    class Stream(io.StringIO):
        def close(self):  # logging.config closes old handlers' streams (absl's): keep the text
            pass

    class Unclosable:
        def __init__(self, stream):
            self._stream = stream

        def __getattr__(self, name):
            return getattr(self._stream, name)

        def close(self):
            pass

    root = logging.getLogger()
    saved = (sys.argv, os.getcwd(), signal.getsignal(signal.SIGTERM), root.handlers[:], root.level,
             signal.getsignal(signal.SIGINT))
    out, err, code = Stream(), Stream(), 0
    # handlers made earlier on this process's stdout/stderr write to the command's, as in a child
    moved = [(h, h.stream) for h in (r() for r in logging._handlerList[:]) if h is not None
             and vars(h).get("stream") is not None and not isinstance(h, logging.FileHandler)]
    for h, stream in moved:
        # the others keep their stream but cannot close it: the run's logging.config closes old
        # handlers, and absl's closes its stream unless it is the current sys.stderr, which
        # closed pytest's own capture file where a test captured with capsys (absl's handler
        # was made on the capture file) and ended the session in "I/O operation on closed file"
        h.stream = out if stream is sys.stdout else err if stream is sys.stderr else Unclosable(stream)
    sys.argv = [module, *args]  # runpy sets argv[0] to the module's file, as python -m does
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*found in sys.modules after import of package",
                                    category=RuntimeWarning)  # runpy: the test imported the module already
            try:
                runpy.run_module(module, run_name="__main__", alter_sys=True)
            except SystemExit as stop:
                code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    finally:
        for h in root.handlers[:]:
            if h not in saved[3]:
                root.removeHandler(h)
                h.close()
        for h in saved[3]:
            if h not in root.handlers:
                root.addHandler(h)
        root.setLevel(saved[4])
        for h, stream in moved:
            h.stream = stream
        sys.argv = saved[0]
        os.chdir(saved[1])
        signal.signal(signal.SIGTERM, saved[2])
        signal.signal(signal.SIGINT, saved[5])
        GlobalHydra.instance().clear()
    return subprocess.CompletedProcess([module, *args], code, out.getvalue(), err.getvalue())


def run_multirun(module: str, overrides: list[str], sweep_dir, files: list[str], env=None) -> list[dict]:
    """Run ``python -m module -m overrides`` into ``sweep_dir`` (``run_module``); check that every
    job directory holds ``files`` (non-empty) and Hydra's saved config; return each job's summary."""
    out = run_module(module, ["-m", *overrides, f"hydra.sweep.dir={sweep_dir}"], env=env)
    assert out.returncode == 0, (out.stderr + out.stdout)[-3000:]
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
