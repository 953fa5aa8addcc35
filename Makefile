# The two commands of the README: `make demo` (the main job) and `make test` (the suite).
# Each builds .venv from scratch on a fresh machine (Python 3.11, g++, make, perl).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.offload-installed

.PHONY: demo test lint typecheck bench notebooks venv clean check-system

check-system:
	@for t in g++ make perl; do command -v $$t >/dev/null || { echo "offload: '$$t' is missing: apt-get install g++ make perl" >&2; exit 1; }; done
	@# Icarus Verilog runs the second cocotb simulator (Debian's iverilog 11 works with cocotb 2.1).
	@command -v iverilog >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iverilog >/dev/null; \
	  else echo "offload: iverilog is missing (apt-get install iverilog): the Icarus benches will be skipped" >&2; fi; }
	@# Debian's libxxhash-dev: xxHash's own C header, the baseline of the bench's XXH64/XXH32 kernel rows.
	@test -f /usr/include/xxhash.h || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libxxhash-dev >/dev/null; \
	  else echo "offload: xxhash.h is missing (apt-get install libxxhash-dev): the bench's xxHash C baselines will be missing" >&2; fi; }
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "offload: Python >= 3.11 is required, found " + sys.version.split()[0])'

$(STAMP): pyproject.toml | check-system
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP) | check-system
	$(VENV)/bin/offload demo

test: $(STAMP) | check-system
	@# Build (or find in the cache) the Verilator model of each engine flavour once, before the
	@# parallel test workers (lut: the synthesised design; behavioural: the sim backend's).
	$(PY) -c "from offload.sim.verilator import FLAVOURS, build_engine; [print(f'verilator model ({f}):', build_engine(flavour=f)) for f in FLAVOURS]"
	@# Compile the numba kernels into their on-disk cache once, so test processes only load them.
	$(PY) -c "from offload.host.cpu import CpuBackend; CpuBackend().warmup(); print('cpu kernels: cached')"
	$(PY) -m pytest -n 2 --dist loadgroup tests notebooks --nbmake --timeout 900 -q --durations=15

# Execute every notebook in place, keeping its outputs (the figures a reader of the repository
# sees) and stamping its code hash; tests/test_notebooks.py fails when a notebook is not current.
notebooks: $(STAMP) | check-system
	$(PY) -m offload.notebooks notebooks/*.ipynb

# ruff, configured in pyproject.toml: lint and format (CI runs both before the tests).
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# mypy on the whole package, with pyproject.toml's [tool.mypy] (see .ci/typecheck.py for why a script).
typecheck: $(STAMP)
	$(PY) .ci/typecheck.py

bench: $(STAMP)
	$(VENV)/bin/offload bench --json bench.json

clean:
	rm -rf $(VENV) build .offload-cache
