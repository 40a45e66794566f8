# Two commands for a fresh machine with Python 3.11+ and make:
#   make demo   runs the daily-report example DAG end to end on the stand-in server (no key needed)
#   make test   installs what the tests need and runs them (the slow ones: make test-slow)
PYTHON ?= python3
AIRFLOW_VERSION ?= 3.3.2
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-airflow-$(AIRFLOW_VERSION)
# Airflow 2.11 predates universal-pathlib 0.3 (its constraints pin 0.2.6): without the pin,
# ObjectStoragePath (the response cache) fails on every path.
AIRFLOW_PINS := $(if $(filter 2.%,$(AIRFLOW_VERSION)),"universal-pathlib<0.3",)

.PHONY: demo test test-slow install browser-deps screenshots lint smoke-wheel

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv
	$(BIN)/uv pip install --quiet --python $(BIN)/python -e ".[test]" "apache-airflow==$(AIRFLOW_VERSION)" $(AIRFLOW_PINS)
	touch $@

demo: $(STAMP)
	$(BIN)/python scripts/demo.py

# The quick suite (154 s on 2 cores, measured in CI 2026-11-30); the slow tests (subprocesses, real servers, deliberate waits)
# run with `make test-slow`, and CI runs both.
test: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

# Debian's chromium and chromium-driver for tests/browser (root or sudo); without them that test skips.
browser-deps:
	scripts/install_browser.sh

# Re-take docs/connection-form*.png from the browser test.
screenshots: $(STAMP) browser-deps
	AIRFLOW_O3_UPDATE_DOCS_SCREENSHOTS=1 AIRFLOW_O3_REQUIRE_BROWSER=1 $(BIN)/python -m pytest -m browser

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --strict airflow_o3

# Build the wheel, install it in a fresh venv next to apache-airflow, run a smoke DAG on the stand-in.
smoke-wheel: $(STAMP)
	PYTHON=$(PYTHON) AIRFLOW_VERSION=$(AIRFLOW_VERSION) BUILD_PYTHON=$(BIN)/python scripts/smoke_wheel.sh
