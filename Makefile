# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: help run test test-fast bench gpu-check data clean

## List the make targets (this text).
help:
	@awk '/^## /{doc=doc (doc == "" ? "" : " ") substr($$0, 4); next} /^[a-z-]+:/{split($$0, t, ":"); if (doc != "") printf "  make %-10s %s\n", t[1], doc; doc=""}' $(MAKEFILE_LIST)
	@echo "  (ARGS='key=value ...' passes overrides to make run; python -m experiments lists the experiments)"

# The install goes through uv (PyPI's uv, put into the venv by pip): about 10 s against pip's 77 s (pip's cache warm)
# for the same packages (measured on the 2-core machine); plain pip where uv cannot be had. --compile-bytecode
# writes the packages' .pyc at install, as pip does: uv does not by default, and where PYTHONDONTWRITEBYTECODE is
# set (as on the CI machines) every process then compiled jax, pandas, mlflow ... from source again: importing
# sim and an experiment took 10.0 s against 3.8 s (2026-12-02, 2-core AMD EPYC), for ~30 s once at install.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	( $(PY) -m pip install --quiet uv && $(PY) -m uv pip install --quiet --compile-bytecode --python $(PY) -e '.[test,track,bayes]' ) \
	  || ( $(PY) -m pip install --quiet --upgrade pip && $(PY) -m pip install --quiet -e '.[test,track,bayes]' )
	touch $(STAMP)

## Run the main experiment (small default size, about a minute on a laptop CPU).
run: $(STAMP)
	$(PY) -m experiments.ruin_surface $(ARGS)

## Run the test suite (one pytest worker per core: XLA compiles on one thread, so two test
## processes keep both cores busy; the workers share one JAX compilation cache, tests/conftest.py).
test: $(STAMP)
	$(PY) -m pytest -q -n auto --durations=10 $(ARGS)

## The suite without the tests marked slow (soaks, multi-process and launcher runs, the largest comparisons).
test-fast: $(STAMP)
	$(PY) -m pytest -q -n auto -m "not slow" --durations=10 $(ARGS)

## Benchmarks (each prints one JSON line): the engine, the ruin-surface grid, the hedge overlay, the crash protocol.
bench: $(STAMP)
	$(PY) bench/engine.py $(ARGS)
	$(PY) bench/ruin_surface.py $(ARGS)
	$(PY) bench/hedge.py $(ARGS)
	$(PY) bench/crash_protocol.py $(ARGS)
	$(PY) bench/kelly.py

## One-command device check (bench/gpu_check.py): engine, surface and hedge throughput, memory, CPU agreement, one JSON line.
gpu-check: $(STAMP)
	$(PY) bench/gpu_check.py $(ARGS)

## Re-extract the shipped data files from the skfolio and arch wheels (needs PyPI).
data: $(STAMP)
	$(PY) scripts/extract_data.py

clean:
	rm -rf $(VENV) outputs/* multirun
