# The two commands of the README: `make run` and `make test`. Both install what they need.
PYTHON ?= python3
VENV ?= .venv
MOTO_PORT ?= 5000
DAGSTER_PORT ?= 3000
BIN := $(VENV)/bin

.PHONY: install run stop test validate bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

## Start the sandbox fleet in a moto server and the Dagster UI on it (http://localhost:$(DAGSTER_PORT)).
run: install
	$(BIN)/python -m sandbox run --moto-port $(MOTO_PORT) --dagster-port $(DAGSTER_PORT)

## Stop everything `make run` started: the Dagster UI (even when started in the background) and the moto server.
stop: install
	$(BIN)/python -m sandbox stop

## Install and run the whole test suite (pytest exits non-zero when it collects no tests).
test: install
	$(BIN)/python -m pytest

## Load the code location the way Dagster does and report errors.
validate: install
	DAGSTER_HOME=$(CURDIR)/.dagster_home $(BIN)/dagster definitions validate -w workspace.yaml

## Every piece at full size under AWS's latency and rate limits (bench/README.md), after the moto patches' self-test.
bench: install
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/bench
	nice -n 10 $(BIN)/python bench/full_size.py
	nice -n 10 $(BIN)/python bench/fleets.py

clean:
	rm -rf $(VENV) .sandbox .pytest_cache
