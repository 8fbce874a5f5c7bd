# suanli — two commands: `make demo` starts a working center, `make test` runs the whole suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install demo test test-fast bench services clean

# Install into .venv (again whenever pyproject.toml changes).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# The whole center on this machine: SQLite, local Ray, API, scheduler, simulated agents.
demo: $(STAMP)
	$(BIN)/suanli up

# Everything: unit, API on SQLite and PostgreSQL, end to end on a local Ray cluster, CLI,
# `suanli up` itself, the Helm chart, alert rules and dashboards against a real Prometheus.
# Starts PostgreSQL if it is not running and installs Prometheus if it is missing.
test: $(STAMP) services
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

# Quick loop while developing: no Ray, no PostgreSQL.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not ray and not postgres and not slow"

bench: $(STAMP)
	$(BIN)/suanli bench scheduler --json
	$(BIN)/suanli bench simulate --jobs 100000 --servers 1000 --json
	$(BIN)/suanli bench ledger --json
	$(BIN)/suanli bench api --json
	$(BIN)/suanli bench launch --json

# PostgreSQL for the API suites; Prometheus (promtool) for the alert-rule and dashboard tests.
services:
	@scripts/ensure-postgres.sh
	@scripts/ensure-prometheus.sh

clean:
	rm -rf $(VENV) .suanli .pytest_cache .hypothesis
