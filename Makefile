# Ratchet — the common paths. Everything installs into .venv/; no root, no Docker needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test test-unit test-integration test-e2e bench chaos up down lint clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)  ## create .venv and install Ratchet with the `ratchet` command

run: install  ## the whole system locally: embedded Redis + Postgres, sim feed, paper broker
	exec $(BIN)/ratchet run

test: install  ## every test: unit, integration (real Redis + Postgres), end to end
	$(BIN)/python -m pytest tests -p no:cacheprovider

test-unit: install
	$(BIN)/python -m pytest tests/unit -p no:cacheprovider

bench: install  ## performance figures, one `name: value unit` line each
	$(BIN)/python -m bench

chaos: install  ## long fault-injection run
	$(BIN)/python -m pytest tests/e2e -p no:cacheprovider -m e2e --chaos-long

up:  ## the same system in containers (needs a Docker engine)
	docker compose up -d --build

down:
	docker compose down

clean:
	rm -rf $(VENV) .ratchet
