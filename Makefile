# feedrec: `make demo` and `make test` work on a fresh clone with nothing installed by hand.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
export PYTHONHASHSEED := 0

.PHONY: install system-deps demo test bench bench-serve lint serve clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# Debian packages the tests and benchmarks talk to for real (redis-server, ...).
system-deps:
	bash scripts/ensure_system_deps.sh

demo: install
	$(PY) -m data_gen --preset small --seed 7 --out data/small --overwrite

test: install system-deps
	$(PY) -m pytest -q

bench: install system-deps
	$(PY) -m benchmarks

bench-serve: install system-deps
	$(PY) -m benchmarks.bench_serve

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) build .pytest_cache
