"""Sweeps as a whole and the first hour, for real: a 4-point multirun (two processes x two
horizons) writes its table, named point directories and a report that headless Chromium
renders; rerunning it with its name recomputes nothing; a bad combination stops it before any
point runs; bad input and interruptions end in one line and leave no partial file."""

import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from tests.conftest import ROOT, run_module

SURFACE = ["surface.n_paths=256", "engine.block_size=128", "surface.values=[3.0,6.0]", "surface.multiples.num=5"]
POINTS = ["process=student_t,garch_t", "surface.years=0.5,1"]


def _run(module, *args):
    return run_module(module, list(args))


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def test_a_named_sweep_writes_one_table_and_a_report_and_resumes(tmp_path):
    sweep = tmp_path / "tails"
    args = ["experiments.ruin_surface", "-m", "name=tails", f"hydra.sweep.dir={sweep}", *POINTS, *SURFACE]
    first = _run(*args)
    assert first.returncode == 0, first.stderr[-3000:]
    names = sorted(p.name for p in sweep.iterdir() if (p / ".hydra").is_dir())
    assert names == ["process=garch_t,surface.years=0.5", "process=garch_t,surface.years=1",
                     "process=student_t,surface.years=0.5", "process=student_t,surface.years=1"]
    table = pd.read_parquet(sweep / "sweep.parquet")
    assert len(table) == 4 * 2 * 5  # points x nu x c
    assert set(table["status"]) == {"done"} and set(table["process"]) == {"student_t", "garch_t"}
    assert sorted(table["surface.years"].unique()) == [0.5, 1.0]
    one = table[(table.process == "garch_t") & (table["surface.years"] == 1.0)]
    saved = pd.read_csv(sweep / "process=garch_t,surface.years=1" / "surface.csv")
    assert one["row.ruin_probability"].tolist() == saved["ruin_probability"].tolist()
    assert pd.read_csv(sweep / "sweep.csv").shape == table.shape
    assert (sweep / "report.html").stat().st_size > 10_000
    log = (sweep / "progress.log").read_text()
    assert "4/4 points done" in log and "sweep finished" in log
    assert log.count("report: ") == 1, log  # once, when the last point has run
    records = {p: (sweep / p / ".done.json").stat().st_mtime_ns for p in names}

    again = _run(*args)  # the same command: every point is found done
    assert again.returncode == 0, again.stderr[-3000:]
    assert (again.stdout + again.stderr).count("already done for this config") == 4, again.stdout[-3000:]
    assert {p: (sweep / p / ".done.json").stat().st_mtime_ns for p in names} == records
    assert set(pd.read_parquet(sweep / "sweep.parquet")["status"]) == {"skipped"}
    assert (sweep / "progress.log").read_text().count("report: ") == 2  # the resumed sweep's, once, at its end

    page = (sweep / "report.html").read_text()
    n_img = len(re.findall(r'<img [^>]*src="data:image/png;base64,', page))
    assert n_img == 2 + 4 * 3  # two cross-point figures, three heatmaps per point
    assert "http://" not in page and "https://" not in page  # offline: nothing to fetch
    browser = _chromium()
    if browser is None:
        if os.environ.get("FTL_REQUIRE_BROWSER"):
            pytest.fail("headless Chromium is required here (FTL_REQUIRE_BROWSER) and not installed")
        pytest.skip("no Chromium on this machine (apt-get install chromium): the rendering is not checked")
    dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000",
                          "--dump-dom", (sweep / "report.html").as_uri()], capture_output=True, text=True,
                         timeout=120)
    rendered = re.search(r'data-figures-rendered="(\d+)"', dom.stdout)
    tables = re.search(r'data-tables="(\d+)"', dom.stdout)
    assert rendered and int(rendered.group(1)) == n_img, (rendered, dom.stderr[-2000:])
    assert tables and int(tables.group(1)) == 1 + 4 * 2  # the points table, two CSVs per point


def test_an_invalid_combination_fails_before_any_point_runs(tmp_path):
    sweep = tmp_path / "bad"
    out = _run("experiments.ruin_surface", "-m", f"hydra.sweep.dir={sweep}", "process=student_t,merton", *SURFACE)
    assert out.returncode == 2
    lines = [x for x in out.stderr.splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and "sweep point 2/2" in lines[0] and "process=merton" in lines[0], out.stderr[-2000:]
    assert "'nu' is not a parameter of Merton" in lines[0] and "nothing was run" in lines[0]
    assert not [p for p in sweep.iterdir() if p.is_dir()]  # no point started
    assert "sweep refused" in (sweep / "progress.log").read_text()


def test_sweep_table_records_failed_and_pending_points(tmp_path):
    from lab import sweep

    points = [["a=1"], ["a=2"], ["a=3"]]
    (tmp_path / sweep.STATE).write_text(json.dumps({"experiment": "time_vs_ensemble", "start": 0.0,
                                                    "points": points, "varying": ["a"]}))
    for i, status in ((1, "done"), (2, "failed")):
        d = tmp_path / f"a={i}"
        (d / ".hydra").mkdir(parents=True)
        (d / ".hydra" / "overrides.yaml").write_text(f"- a={i}\n")
        if status == "done":
            (d / ".done.json").write_text("{}")
            (d / "summary.json").write_text(json.dumps({"experiment": "time_vs_ensemble", "coin": {"x": 1.5}}))
        else:
            (d / sweep.FAILED).write_text(json.dumps({"error": "ParameterError: a = 2 is out of range"}))
    t = sweep.write_table(tmp_path)
    assert t["status"].tolist() == ["done", "failed", "pending"]
    assert t["a"].tolist() == [1, 2, 3] and t.loc[0, "summary.coin.x"] == 1.5
    assert t.loc[1, "error"] == "ParameterError: a = 2 is out of range"
    assert pd.read_parquet(tmp_path / "sweep.parquet")["status"].tolist() == ["done", "failed", "pending"]
    assert sweep.point_dirname(["a=1", "b=x/y", "name=s"], 0, tmp_path) == "a=1"
    assert sweep.point_dirname(["b=x/y"], 3) == "b=x_y" and sweep.point_dirname([], 3) == "point_3"
    long = sweep.point_dirname([f"k{i}=" + "v" * 30 for i in range(8)], 0)
    assert len(long) == 113 and long != sweep.point_dirname([f"k{i}=" + "w" * 30 for i in range(8)], 0)
    assert sweep.expand(["a=1,2", "b=x,y", "c=3"]) == [["a=1", "b=x", "c=3"], ["a=1", "b=y", "c=3"],
                                                       ["a=2", "b=x", "c=3"], ["a=2", "b=y", "c=3"]]
    assert sweep.varying_keys(sweep.expand(["a=1,2", "c=3"])) == ["a"]


def test_a_run_report_holds_every_figure_and_table(tmp_path):
    from lab.report import main

    out = _run("experiments.time_vs_ensemble", f"hydra.run.dir={tmp_path}", "coin.n_players=200", "coin.n_rounds=5",
               "market.n_paths=256", "market.years=0.1", "engine.block_size=128", "engine.n_snapshots=2")
    assert out.returncode == 0, out.stderr[-2000:]
    assert main([str(tmp_path)]) == 0
    page = (tmp_path / "report.html").read_text()
    for f in ("coin_fan.png", "market_fan.png", "growth_histogram.png"):
        assert f'alt="{f}"' in page
    for f in ("coin_fan.csv", "market_fan.csv", "growth_histogram.csv"):
        assert f"<h3>{f}</h3>" in page
    assert "Provenance" in page and "jaxlib" in page and "No warnings were raised" in page
    assert main([str(tmp_path / "nowhere")]) == 2


def test_text_where_a_number_belongs_names_the_parameter(tmp_path):
    out = _run("experiments.time_vs_ensemble", f"hydra.run.dir={tmp_path}", "market.fraction=abc")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == ["error: market.fraction = 'abc' is not a number (its default is 1.0)"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "ctrl_c"])
def test_sigterm_stops_a_run_in_one_line_and_leaves_no_partial_file(tmp_path, sig):
    # The run as a terminal's foreground job gets it: Ctrl-C at its default. Where the suite itself
    # was started in the background of a non-interactive shell, SIGINT is ignored in it and in every
    # child (POSIX), Python keeps it ignored, and the run rightly went on to exit 0.
    start = ("import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
             "sys.argv[0] = 'experiments.time_vs_ensemble'; "
             "runpy.run_module('experiments.time_vs_ensemble', run_name='__main__', alter_sys=True)")
    proc = subprocess.Popen([sys.executable, "-c", start, f"hydra.run.dir={tmp_path}",
                             "market.n_paths=4000000", "market.years=2"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ, JAX_PLATFORMS="cpu"))
    deadline = time.time() + 120
    while not (tmp_path / ".running.json").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert (tmp_path / ".running.json").exists(), proc.communicate()[1][-2000:]
    (tmp_path / ".coin_fan.csv.stale.tmp").write_text("")  # as an earlier kill would leave it
    time.sleep(0.5)
    status = pathlib.Path(f"/proc/{proc.pid}/status")
    masks = {k: int(v, 16) for k, v in (line.split(":\t") for line in status.read_text().splitlines()
                                         if line.startswith(("SigIgn", "SigBlk", "SigCgt")))} if status.exists() else {}
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    bit = 1 << (int(sig) - 1)
    assert proc.returncode == 130, (err[-2000:], {k: bool(v & bit) for k, v in masks.items()},
                                    signal.getsignal(sig), signal.pthread_sigmask(signal.SIG_BLOCK, []))
    assert err.strip().splitlines()[-1].startswith("interrupted: ")
    assert not list(tmp_path.glob(".*.tmp")) and not (tmp_path / ".running.json").exists()
    assert not (tmp_path / ".done.json").exists()


def test_a_stop_that_jax_swallowed_still_stops_the_run(tmp_path, monkeypatch):
    """A Ctrl-C whose KeyboardInterrupt lands inside one of JAX's bare ``except:`` clauses is
    lost there (here: ``lax.broadcast_shapes``, called by every binary operation it traces); the
    stop the handler recorded still stops the host driver and every output write."""
    import jax
    from jax._src.lax import lax as jax_lax

    import sim
    from sim import outputs

    real, fired = jax_lax._broadcast_shapes_cached, []

    def interrupted(*shapes):  # as the harness's handler does when the signal lands here
        if not fired:
            fired.append(True)
            outputs.request_stop()
            raise KeyboardInterrupt
        return real(*shapes)

    monkeypatch.setattr(jax_lax, "_broadcast_shapes_cached", interrupted)
    try:
        assert jax.lax.broadcast_shapes((3,), (3,)) == (3,) and fired  # swallowed: no exception
        with pytest.raises(KeyboardInterrupt):
            sim.simulate(sim.Gaussian(mu=0.05, sigma=0.2), seed=0, n_paths=64, n_steps=4)
        with pytest.raises(KeyboardInterrupt):
            outputs.OutputWriter(tmp_path).json("summary.json", {"x": 1})
        assert not list(tmp_path.iterdir())
    finally:
        outputs._STOP.clear()  # the stop is for the life of a process; this one goes on testing


def test_python_m_experiments_lists_them():
    out = _run("experiments")
    assert out.returncode == 0
    for name in ("ruin_surface", "time_vs_ensemble", "kelly", "hedge_overlay", "crash_protocol", "dispersion",
                 "experiments.report"):
        assert name in out.stdout
    assert pathlib.Path(ROOT, "Makefile").read_text().count("## ") >= 6


def test_runs_are_tracked_on_mlflow_and_read_back_through_its_client(tmp_path):
    mlflow = pytest.importorskip("mlflow", reason="the [track] extra (make test installs it)")
    db = tmp_path / "store" / "mlflow.db"
    out = _run("experiments.time_vs_ensemble", "-m", f"hydra.sweep.dir={tmp_path / 'sweep'}", "hydra/callbacks=mlflow",
               f"hydra.callbacks.mlflow.tracking_uri=sqlite:///{db}", "coin.n_players=200,300", "coin.n_rounds=5",
               "market.n_paths=256", "market.years=0.1", "engine.block_size=128", "engine.n_snapshots=2")
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / "sweep" / "sweep.csv").exists()  # the sweep callback still runs beside the tracker
    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{db}")
    exp = client.get_experiment_by_name("time_vs_ensemble")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 2
    by_players = {r.data.params["coin.n_players"]: r for r in runs}
    assert set(by_players) == {"200", "300"}
    for n, r in by_players.items():
        assert r.data.params["market.n_paths"] == "256" and r.data.tags["status"] == "completed"
        summary = json.loads((pathlib.Path(r.data.tags["run_dir"]) / "summary.json").read_text())
        assert r.data.metrics["coin.simulated.median_wealth"] == pytest.approx(summary["coin"]["simulated"]["median_wealth"])
        assert r.data.metrics["market.time_avg_growth"] == pytest.approx(summary["market"]["time_avg_growth"])
        files = {a.path for a in client.list_artifacts(r.info.run_id)}
        assert {"summary.json", "coin_fan.csv", "market_fan.png"} <= files, files
