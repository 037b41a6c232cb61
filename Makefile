# feedrec: `make demo` and `make test` work on a fresh clone with nothing installed by hand.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
export PYTHONHASHSEED := 0

.PHONY: install system-deps demo test fuzz bench bench-serve lint serve clean loop-demo

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	$(PY) -m recsys.topk build
	touch $(STAMP)

install: $(STAMP)

# Debian packages the tests and benchmarks talk to for real (redis-server, ...).
system-deps:
	bash scripts/ensure_system_deps.sh

demo: install
	PY=$(PY) bash scripts/demo.sh

# The retraining loop closing on simulated traffic with a cold-user surge (docs/monitoring.md):
# drift alarm -> retrain from the logs -> simulated A/B -> promotion; plot in docs/img/loop_demo.png.
loop-demo: install
	test -d data/small || $(PY) -m data_gen --preset small --seed 7 --out data/small
	$(PY) -m retrain demo --data data/small --out runs/loop-demo

# Keep the service running on :8000 with the bundles, events and experiment (feed-vs-gnn) of the last `make demo`.
serve: install
	FEEDREC_MODELS="feed=ranker@champion,gnn=gnn@champion,mf=mf@champion" FEEDREC_DEFAULT_MODEL=gnn \
	FEEDREC_EXPERIMENTS_DIR=events/experiments FEEDREC_EVENTS_DIR=events/demo FEEDREC_DATA_DIR=data/small \
	$(PY) -m serving --port 8000

test: install system-deps
	$(PY) -m pytest -q

# Bounded, deterministic schemathesis run against a real server: fails on any 5xx or any response the
# OpenAPI document does not describe. Also part of `make test` (tests/serving/test_fuzz.py).
fuzz: install system-deps
	$(PY) -m pytest -q -s tests/serving/test_fuzz.py

bench: install system-deps
	$(PY) -m benchmarks

bench-serve: install system-deps
	$(PY) -m benchmarks.bench_serve

# ruff, the layer contracts of pyproject.toml ([tool.importlinter]) and no machine-specific paths.
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(PY) scripts/check_abs_paths.py

clean:
	rm -rf $(VENV) build .pytest_cache
