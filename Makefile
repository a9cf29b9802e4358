# The same targets run locally and in CI (.ci/run calls `make test`).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test check lint typecheck bench migration clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

## make run: install, initialise ./optline.db and serve on http://127.0.0.1:8000 with the SMS simulator
run: $(STAMP)
	$(BIN)/optline serve

## make test: install with dev extras and run the whole suite (SQLite, and PostgreSQL when configured)
test: $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

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
	rm -rf $(VENV) optline.db optline.db-wal optline.db-shm test-artifacts
