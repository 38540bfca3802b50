# crossling: two commands on a fresh machine.
#   make demo   set up .venv, build data/demo.duckdb if absent, open the explorer on it
#   make test   set up .venv, run the whole test suite
#   make lint   ruff check and ruff format --check (settings in pyproject.toml); CI runs it before the tests
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_STORE := data/demo.duckdb

.PHONY: setup demo demo-store test test-fast lint format browser-deps clean

setup: $(STAMP)

# torch==2.13.0 first: it installs from local disk (CPU build) instead of a multi-GB CUDA download.
$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "torch==2.13.0" || $(BIN)/pip install --quiet "torch>=2.2,<2.14"
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(STAMP)

demo-store: $(STAMP)
	@if [ -f $(DEMO_STORE) ]; then echo "$(DEMO_STORE) exists; rm it to rebuild"; \
	else $(BIN)/precompute demo --out $(DEMO_STORE); fi

demo: demo-store
	$(BIN)/explorer $(DEMO_STORE)

# Debian's chromium for the one real-browser test (no browser download).
browser-deps:
	@command -v chromium >/dev/null 2>&1 || ( \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo "chromium could not be installed; the browser test will be skipped" )

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Rewrites the files in place: what `make lint` then accepts.
format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: $(STAMP) browser-deps
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow and not browser"

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache tests/artifacts
