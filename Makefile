# Ratchet — the common paths. Everything installs into .venv/; no root, no Docker needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test test-unit test-integration test-e2e bench chaos up down lint clean chromium vendor constraints

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)  ## create .venv and install Ratchet with the `ratchet` command

run: install  ## the whole system locally: embedded Redis + Postgres, sim feed, paper broker
	exec $(BIN)/ratchet run

test: install chromium  ## every test: unit, integration (real Redis + Postgres), end to end
	$(BIN)/python -m pytest tests -p no:cacheprovider

test-unit: install
	$(BIN)/python -m pytest tests/unit -p no:cacheprovider

lint: install  ## ruff (style, imports, bugbear) over everything; mypy over the code (not the tests)
	$(BIN)/ruff check .
	$(BIN)/mypy shared services ratchet backtest bench

bench: install  ## performance figures, one `name: value unit` line each
	$(BIN)/python -m bench

chaos: install  ## long fault-injection run
	RATCHET_CHAOS=long $(BIN)/python -m pytest tests/e2e/test_chaos.py -p no:cacheprovider -s

chromium:  ## Debian's Chromium for the dashboard's browser test: installed when missing (as root)
	@if [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
	  || echo "could not install chromium: the dashboard browser test will be skipped"; \
	else echo "no /usr/bin/chromium and not root: the dashboard browser test will be skipped"; fi

constraints:  ## re-resolve every dependency to its newest allowed version into constraints.txt
	rm -rf $(VENV)-resolve && $(PYTHON) -m venv $(VENV)-resolve
	$(VENV)-resolve/bin/python -m pip install --quiet --upgrade pip
	$(VENV)-resolve/bin/python -m pip install --quiet -e '.[test]'
	{ grep '^#' constraints.txt; $(VENV)-resolve/bin/python -m pip freeze --exclude-editable; } \
	  > constraints.txt.new
	mv constraints.txt.new constraints.txt && rm -rf $(VENV)-resolve

vendor:  ## refresh the vendored browser libraries (charts, Swagger UI) from package-lock.json (npm)
	npm ci --ignore-scripts --no-audit --no-fund
	cp node_modules/lightweight-charts/dist/lightweight-charts.standalone.production.js \
	  services/api/static/vendor/
	cp node_modules/lightweight-charts/LICENSE services/api/static/vendor/lightweight-charts.LICENSE
	cp node_modules/swagger-ui-dist/swagger-ui-bundle.js node_modules/swagger-ui-dist/swagger-ui.css \
	  node_modules/swagger-ui-dist/favicon-32x32.png services/api/static/vendor/
	cp node_modules/swagger-ui-dist/LICENSE services/api/static/vendor/swagger-ui.LICENSE

up:  ## the same system in containers (needs a Docker engine)
	docker compose up -d --build

down:
	docker compose down

clean:
	rm -rf $(VENV) .ratchet
