"""What every experiment needs around the library: config -> objects, and the Hydra run.

* ``instantiate`` (``sim.config``) turns any config node with a ``_target_`` (the option files
  of the config groups that mirror ``sim/``) into its object, rejecting unknown keys with the
  list of allowed ones; ``build`` and ``build_process`` also validate it before any work.
* ``OutputWriter`` (``sim.outputs``) writes tables, the JSON summary and figures atomically.
* ``hydra_main`` is every experiment's entry point: it makes a run resumable (a job whose
  directory already holds a completion record for the same config is skipped, so an
  interrupted multirun restarted into the same sweep directory recomputes only the missing
  points), joins a multi-process JAX run when the config asks for one (``distributed``), and
  lets only process 0 write. On a CPU it first gives JAX one device per core (``+cpu_devices=N``
  to choose), which only changes the speed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pathlib
import sys
import tempfile
import time

import jax
from omegaconf import DictConfig, OmegaConf

from sim.config import check_fields, instantiate
from sim.outputs import OutputWriter, atomic_write, check_stop, request_stop, run_info, to_jsonable
from sim.validation import ParameterError

__all__ = ["instantiate", "build", "build_process", "build_portfolio", "build_program", "build_vol_model", "build_monetizers", "check_fields", "OutputWriter", "run_info", "to_jsonable", "hydra_main", "run_resumable",
           "config_digest", "DONE"]

log = logging.getLogger(__name__)

DONE = ".done.json"  # written last and atomically: the run's completion record


def build(node, where: str, *validate_args, **given):
    """``instantiate(node, where, **given)``, then its ``validate(*validate_args)``."""
    obj = instantiate(node, where, **given)
    obj.validate(*validate_args)
    return obj


FITS: dict = {}  # where -> sim.fit.FitResult of the processes fitted for this run (written as fit.csv)


def build_process(node: DictConfig, *, steps_per_year: float, where: str = "process"):
    """Instantiate the process described by a config node and validate its parameters. A
    fitted process (``conf/process/fitted.yaml``: a ``sim.fit.FitResult``) is recorded for the
    run's ``fit.csv`` and its process returned; an unconverged fit says so in the log."""
    from sim.fit import FitResult

    process = instantiate(node, where)
    if isinstance(process, FitResult):
        if where not in FITS:
            log.log(logging.INFO if process.status == "converged" else logging.WARNING, "%s: %s fit %s: %s (%s)",
                    where, process.model, process.status, {k: round(v, 5) for k, v in process.params.items()},
                    "fit.csv")
        FITS[where] = process
        process = process.process
    process.validate(1.0 / steps_per_year)
    return process


def _write_fits(directory: pathlib.Path) -> None:
    if FITS:
        import pandas as pd

        table = pd.concat([f.table().assign(node=w) for w, f in FITS.items()], ignore_index=True)
        atomic_write(directory / "fit.csv", lambda p: table.to_csv(p, index=False, float_format="%.10g"))


def build_portfolio(cfg):
    """``portfolio`` (conf/portfolio): the unhedged constant mix, validated."""
    p = instantiate(cfg.portfolio, "portfolio")
    p.validate()
    return p


def build_program(cfg):
    """``hedge`` (conf/hedge): the put program (validated as it is built)."""
    return instantiate(cfg.hedge, "hedge")


def build_vol_model(cfg, long_run_vol: float, **override):
    """``vol_model`` (conf/vol_model), its ``long_run_vol`` the model's own where the config
    leaves it null; ``override`` replaces fields (the real-data runs price from VIX)."""
    import dataclasses

    vm = dataclasses.replace(instantiate(cfg.vol_model, "vol_model", long_run_vol=long_run_vol), **override)
    vm.validate()
    return vm


def build_monetizers(node, process, **given) -> dict:
    """Every policy under ``monetize`` (conf/monetize; ``+monetize@monetize.NAME=OPTION`` adds one,
    ``~monetize@monetize.NAME`` drops one), validated, in config order. One that needs a
    capability ``process`` lacks (``requires``, sim.protocols: the regime oracle on a model
    without a regime) is skipped and the log says so; ``process=None`` only validates."""
    from sim import protocols

    out = {}
    for name in node:
        policy = instantiate(node[name], f"monetize.{name}", **given)
        if hasattr(policy, "validate"):
            policy.validate()
        needs = getattr(policy, "requires", lambda p: ())(process) if process is not None else ()
        missing = [c.__name__ for c in needs if not protocols.supports(process, c)]
        if missing:
            log.info("monetize.%s skipped on %s: needs %s", name, type(process).__name__, ", ".join(missing))
            continue
        out[name] = policy
    return out


# --------------------------------------------------------------------------- resumable runs


def config_digest(cfg) -> str:
    """SHA-256 of the resolved config (without Hydra's own node): what decides the results."""
    text = OmegaConf.to_yaml(cfg, resolve=True, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _outputs(directory: pathlib.Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.is_file() and not p.name.startswith(".")
                  and not p.name.endswith(".log"))


def run_resumable(run_fn, cfg, out_dir, *, experiment: str):
    """``run_fn(cfg, out_dir)`` unless ``out_dir`` already holds a completion record for the same
    config with every file it lists (then the run is skipped and its summary returned).

    Every output is written atomically by ``OutputWriter``; the record (``DONE``) is written
    last, so a run killed at any point has no record and is recomputed in full.
    """
    directory = pathlib.Path(out_dir)
    digest = config_digest(cfg)
    record = directory / DONE
    if record.exists():
        try:
            done = json.loads(record.read_text())
        except (OSError, ValueError):
            done = {}
        if done.get("config_sha256") == digest and all((directory / f).exists() for f in done.get("files", [])):
            log.info("%s: already done for this config (%s...), skipping", directory, digest[:12])
            (directory / ".skipped.json").write_text(json.dumps({"time": time.time()}) + "\n")
            summary = directory / "summary.json"
            return json.loads(summary.read_text()) if summary.exists() else None
        log.warning("%s: a completion record for another config or with missing files: recomputing", directory)
        record.unlink()
    _remove_partial_files(directory)
    (directory / ".failed.json").unlink(missing_ok=True)
    FITS.clear()
    summary = run_fn(cfg, out_dir)
    check_stop()  # no completion record for a run asked to stop (sim.outputs.check_stop)
    if jax.process_index() == 0:
        _write_fits(directory)
        text = json.dumps({"experiment": experiment, "config_sha256": digest, "files": _outputs(directory)}, indent=2)
        atomic_write(record, lambda p: pathlib.Path(p).write_text(text + "\n"))
    return summary


def _join_distributed(cfg) -> None:
    """``distributed`` in the config (``+distributed.coordinator=host:port
    +distributed.num_processes=N +distributed.process_id=i``, or ``+distributed.auto=true`` under
    SLURM and other clusters JAX detects) makes this process one of a multi-process JAX run;
    ``engine.simulate`` then splits the paths between processes."""
    spec = cfg.get("distributed") if hasattr(cfg, "get") else None
    if not spec or jax.distributed.is_initialized():
        return
    spec = OmegaConf.to_container(spec, resolve=True)
    allowed = {"auto", "coordinator", "num_processes", "process_id", "bind"}
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise ParameterError(f"distributed: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
    from sim.parallel import init_distributed

    if spec.get("auto"):
        init_distributed()
    else:
        init_distributed(spec.get("coordinator"), spec.get("num_processes"), spec.get("process_id"),
                         bind=spec.get("bind"))


def use_compilation_cache() -> str | None:
    """JAX's persistent compilation cache in the user's cache directory
    (``$XDG_CACHE_HOME/fat-tails-lab/jax``, or ``$FTL_JAX_CACHE``; ``FTL_JAX_CACHE=off`` turns it
    off): a second run of a config, or another experiment with the same kernels, loads the
    compiled code instead of compiling it again. Compiled code is the same either way, so the
    numbers are too. Returns the directory (None when off)."""
    where = os.environ.get("FTL_JAX_CACHE")
    if where == "off":
        return None
    if not where:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        where = os.path.join(base, "fat-tails-lab", "jax")
    try:
        os.makedirs(where, exist_ok=True)
    except OSError as err:
        log.warning("no compilation cache (%s): %s", where, err)
        return None
    jax.config.update("jax_compilation_cache_dir", where)
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:  # JAX's own setting wins (the suite sets 0)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return where


def _use_cpu_cores(cfg) -> None:
    """One JAX CPU device per core (``sim.parallel.use_cpu_cores``), or ``+cpu_devices=N``;
    set before JAX's first operation. The numbers do not depend on it, only the speed."""
    from sim.parallel import use_cpu_cores

    n = cfg.get("cpu_devices") if hasattr(cfg, "get") else None
    use_cpu_cores(None if n is None else n)


# Root keys any experiment accepts on top of its own config (added with ``+``).
EXTRA_ROOT_KEYS = ("cpu_devices", "distributed")


def _group_overrides(overrides) -> list[str]:
    """The overrides among ``overrides`` that select a config group option (``process=merton``,
    ``+process@models.x=merton``), not those that set or add a value."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    loader = GlobalHydra.instance().config_loader()
    keep = []
    for text, o in zip(overrides, OverridesParser.create().parse_overrides(list(overrides))):
        if not o.is_delete() and loader.get_group_options(o.key_or_group):
            keep.append(text)
    return keep


def unknown_keys(cfg, reference, prefix: str = "") -> list[str]:
    """Dotted paths of the keys of ``cfg`` that ``reference`` (the experiment's own config,
    composed with the same group choices and no added values) does not have. Nodes with a
    ``_target_`` (models) are checked against their class by their builder instead."""
    out = []
    for key in cfg:
        path = f"{prefix}{key}"
        if not prefix and key in EXTRA_ROOT_KEYS + ("hydra",):
            continue
        if reference is None or not OmegaConf.is_dict(reference) or key not in reference:
            out.append(path)
            continue
        node = cfg._get_node(key)
        if OmegaConf.is_dict(node) and "_target_" not in node:
            out += unknown_keys(node, reference._get_node(key), path + ".")
    return out


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def wrong_types(cfg, reference, prefix: str = "") -> list[str]:
    """Messages for the values of ``cfg`` that are text where ``reference`` (the experiment's
    YAML) holds a number (``surface.floor=abc``), or not true/false where it holds a boolean
    (``plots=sometimes``), including inside option nodes."""
    out = []
    if not (OmegaConf.is_dict(cfg) and OmegaConf.is_dict(reference)):
        return out
    for key in cfg:
        if key not in reference or (not prefix and key == "hydra"):
            continue
        path = f"{prefix}{key}"
        node, ref = cfg._get_node(key), reference._get_node(key)
        if OmegaConf.is_dict(node):
            out += wrong_types(node, ref, path + ".")
            continue
        try:  # resolved values: an interpolation is judged by what it gives
            value, default = cfg[key], reference[key]
        except Exception:  # noqa: BLE001 - a value that cannot be resolved is the run's own error to raise
            continue
        if _is_number(default) and isinstance(value, str):
            try:
                float(value)
            except ValueError:
                out.append(f"{path} = {value!r} is not a number (its default is {default!r})")
        elif isinstance(default, bool) and not isinstance(value, bool):
            out.append(f"{path} = {value!r}; allowed: true or false")
    return out


_REFERENCES: dict = {"loader": None, "configs": {}}


def _reference(config_name: str, overrides: tuple):
    """The experiment's config under these group choices, composed once per Hydra app: a sweep
    checks each point before the first runs and again in its job (0.3-0.4 s a composition).
    Keyed by the app's config loader, so a new app (another run in this process, other config
    directories) composes again. Read only."""
    from hydra import compose
    from hydra.core.global_hydra import GlobalHydra

    loader = GlobalHydra.instance().config_loader()
    if _REFERENCES["loader"] is not loader:
        _REFERENCES.update(loader=loader, configs={})
    key = (config_name, overrides)
    if key not in _REFERENCES["configs"]:
        _REFERENCES["configs"][key] = compose(config_name=config_name, overrides=list(overrides))
    return _REFERENCES["configs"][key]


def check_known_keys(cfg, config_name: str, overrides, search=()) -> None:
    """Reject a key that the experiment's config does not define, however it was added
    (``+surface.bogus=1``, ``++coin.bogus=1``, a sweep over a new key): the schema is the
    experiment's YAML under the same group choices. ``+cpu_devices`` and ``+distributed.*`` are
    the two root keys every experiment accepts."""
    # search: the user's config directories (hydra.searchpath overrides)
    reference = _reference(config_name, tuple(search) + tuple(_group_overrides(list(overrides))))
    typed = wrong_types(cfg, reference)
    if typed:
        raise ParameterError("; ".join(typed))
    bad = unknown_keys(cfg, reference)
    if bad:
        def allowed_at(path):
            parent = path.rpartition(".")[0]
            node = OmegaConf.select(reference, parent) if parent else reference
            keys = [k for k in node if k != "hydra"] if OmegaConf.is_dict(node) else []
            return f"{path!r} (allowed under {parent or 'the root'}: {keys})"
        raise ParameterError(f"{config_name}: unknown config key(s) " + "; ".join(allowed_at(p) for p in bad)
                             + (f"; root keys also allowed: {list(EXTRA_ROOT_KEYS)}" if any("." not in p for p in bad)
                                else ""))


class RunDirInUse(RuntimeError):
    pass


_CLAIM = ".running.json"


def claim_run_dir(out_dir) -> pathlib.Path:
    """Claim the run directory for this process (``.running.json``, created exclusively): a
    second run that resolves to the same directory while the first is alive refuses to start.
    A claim left by a dead process of this host (a kill) is taken over."""
    import socket

    directory = pathlib.Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    claim = directory / _CLAIM
    me = {"host": socket.gethostname(), "pid": os.getpid(), "start": time.time()}
    for _ in range(2):
        try:
            fd = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                other = json.loads(claim.read_text())
            except (OSError, ValueError):
                other = {}
            alive = other.get("host") == me["host"] and _pid_alive(other.get("pid"))
            if alive or other.get("host") not in (None, me["host"]):
                raise RunDirInUse(f"{directory} is in use by process {other.get('pid')} on {other.get('host')} "
                                  f"(claim {claim}); give this run its own directory (hydra.run.dir=...)") from None
            log.warning("%s: taking over the claim of a process that is gone (%s)", directory, other)
            claim.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(me) + "\n")
        return claim
    raise RunDirInUse(f"{directory}: cannot claim the run directory")


def _pid_alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fail_in_one_line(err: Exception, code: int = 2):
    """Bad input: the traceback into the run's log file, one line on stderr, exit ``code``."""
    import sys
    import traceback

    text = "".join(traceback.format_exception(err))
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.stream.write(text)
            handler.flush()
    print(f"error: {err}", file=sys.stderr, flush=True)
    raise SystemExit(code)


def hydra_main(run_fn, cfg) -> None:
    """The body of every experiment's ``@hydra.main``: reject unknown keys and bad parameters
    in one line (the traceback goes to the log file), join a distributed run if configured,
    skip a finished run of the same config, let only process 0 keep its outputs."""
    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.get()
    out_dir = pathlib.Path(hc.runtime.output_dir)
    multirun = str(hc.mode) == "RunMode.MULTIRUN"
    _stop_on_signals()
    try:
        check_known_keys(cfg, hc.job.config_name, hc.overrides.task,
                         [o for o in hc.overrides.hydra if o.startswith("hydra.searchpath")])
        _use_cpu_cores(cfg)
        use_compilation_cache()
        _join_distributed(cfg)
        if jax.process_index() == 0:
            claim = claim_run_dir(out_dir)
            try:
                run_resumable(run_fn, cfg, out_dir, experiment=hc.job.name)
            finally:
                claim.unlink(missing_ok=True)
            return
        # Every process computes (the simulations gather across processes); only process 0 writes.
        scratch = tempfile.mkdtemp(prefix=f"{hc.job.name}-process{jax.process_index()}-")
        try:
            run_fn(cfg, scratch)
        finally:
            import shutil

            shutil.rmtree(scratch, ignore_errors=True)
    except KeyboardInterrupt:
        _remove_partial_files(out_dir)
        if multirun:
            _note_interrupted_sweep(pathlib.Path(hc.sweep.dir))
        print(f"interrupted: {out_dir} keeps the files finished so far (no partial file); run the same command "
              "again to redo it", file=sys.stderr, flush=True)
        # Out at once: computations JAX still has in flight on its threads must not meet the
        # interpreter's finalization (a segfault); every finally block above has already run.
        logging.shutdown()
        sys.stdout.flush()
        os._exit(130)
    except (ParameterError, RunDirInUse) as err:
        if multirun:  # the sweep table records the point as failed, and the sweep goes on
            _record_failure(out_dir, err)
            raise
        _fail_in_one_line(err)
    except Exception as err:
        if multirun:
            _record_failure(out_dir, err)
        raise


def _stop_on_signals() -> None:
    """SIGTERM (a scheduler's kill, ``timeout``) stops a run like Ctrl-C (SIGINT): through the
    ``finally`` blocks, so no temporary file or claim is left behind. Both also record the stop
    (``sim.outputs.request_stop``), so that one whose ``KeyboardInterrupt`` JAX's tracing
    swallowed still stops the run at the next chunk or write (``sim.outputs.check_stop``)."""
    import signal
    import threading

    def stop(signum, frame):
        request_stop()
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop)
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not where Ctrl-C is ignored
            signal.signal(signal.SIGINT, stop)


def _note_interrupted_sweep(sweep_dir: pathlib.Path) -> None:
    """The interruption in the sweep's ``progress.log`` and table (what is done stays done)."""
    try:
        from lab import sweep

        done = sum(1 for _ in sweep_dir.glob(f"*/{DONE}"))
        sweep.progress_line(sweep_dir, f"sweep interrupted: {done} points done; run the same command again (with "
                                       "the same name) to resume")
        sweep.write_table(sweep_dir)
    except Exception as err:  # never mask the interruption itself
        log.warning("sweep table not updated after the interruption: %s", err)


def _remove_partial_files(directory: pathlib.Path) -> None:
    for tmp in directory.glob(".*.tmp"):  # an atomic write that was cut short (also by an earlier kill)
        tmp.unlink(missing_ok=True)


def _record_failure(directory: pathlib.Path, err: Exception) -> None:
    """``.failed.json`` in a sweep point's directory: its error in one line (``lab.sweep``)."""
    from lab.sweep import FAILED

    directory.mkdir(parents=True, exist_ok=True)
    line = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    (directory / FAILED).write_text(json.dumps({"error": line, "time": time.time()}) + "\n")
    log.error("point failed: %s", line)
