# The same targets run locally and in CI (.ci/run calls `make test`).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUN_STAMP := $(VENV)/.installed-run

.PHONY: run test check lint typecheck bench migration clean

# The development install (tests, linters, provider SDKs, the browser driver) …
$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP) $(RUN_STAMP)

# … and what serving needs, nothing more (make run on a fresh machine does not install mypy or playwright).
$(RUN_STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $(RUN_STAMP)

## make run: install, initialise ./optline.db and serve on http://127.0.0.1:8000 with the SMS simulator
run: $(RUN_STAMP)
	$(BIN)/optline init
	$(BIN)/optline serve

# Test processes (pytest-xdist workers). The suite waits on subprocesses, servers and PostgreSQL more than
# it computes, so 4 workers on 2 cores (DEVELOPERS.md, Tests: the measurements); TEST_WORKERS=0 runs serially.
TEST_WORKERS ?= 4

## make test: install with dev extras and run the whole suite (SQLite, and PostgreSQL when configured)
test: $(STAMP)
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

## make check: ruff and mypy
check: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

## make bench: every benchmark, each printing its figures beside its baseline
bench: $(STAMP)
	$(BIN)/python -m bench

## make migration: regenerate the initial schema migration from the table metadata (pre-release only)
migration: $(STAMP)
	$(BIN)/python -m optline.adapters.db.regen_migration

clean:
	rm -rf $(VENV) optline.db optline.db-wal optline.db-shm test-artifacts build dist
