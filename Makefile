# Quick start: `make demo` runs the main job on the embedded default; `make test` runs the tests.
# Each target does its own set-up on a fresh machine (a .venv made with Python 3.12).
# the first python3.12 that actually runs (a pyenv shim may exist without a 3.12 selected)
PY ?= $(shell for c in python3.12 $$HOME/.pyenv/versions/3.12*/bin/python3.12 /usr/local/bin/python3.12 /usr/bin/python3.12; do \
	"$$c" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' >/dev/null 2>&1 && { echo "$$c"; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
PLUGINS := $(sort $(dir $(wildcard plugins/*/pyproject.toml)))

.PHONY: setup demo test lint bench package clean browser

$(BIN)/.installed: pyproject.toml $(wildcard plugins/*/pyproject.toml)
	@test -n "$(PY)" || { echo "Python 3.12 not found: install it or run 'make PY=/path/to/python3.12'"; exit 1; }
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]' $(foreach p,$(PLUGINS),-e $(p))
	@touch $@

setup: $(BIN)/.installed

demo: setup
	$(BIN)/omnicast demo

test: setup
	@$(MAKE) --no-print-directory browser || echo "Chromium could not be installed (not root?): tests/browser will skip and say why"
	$(BIN)/python -m pytest -q

# headless Chromium + its chromedriver from Debian for tests/browser (root, Debian mirror reachable);
# the test skips without them, and fails when CI is set
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
		DEBIAN_FRONTEND=noninteractive apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; }
	@chromium --headless --no-sandbox --version 2>/dev/null || true

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: setup
	$(BIN)/python -m bench

STAGE ?= dev
package: setup
	$(BIN)/python -m infra.build --stage $(STAGE) --out build/$(STAGE)

clean:
	rm -rf $(VENV) .omnicast build vendor .chalice/deployments
