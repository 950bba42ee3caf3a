# The two commands of the README: `make run` and `make test`. Both install what they need
# into .venv first, so a fresh clone needs nothing installed by hand.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run demo test lint typecheck install clean

$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) is needed (Python 3.11)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# The official SignalR JavaScript client, for the conformance test only.
JS_STAMP := tests/js/node_modules/.installed
$(JS_STAMP): tests/js/package.json tests/js/package-lock.json
	@if command -v npm >/dev/null; then \
		cd tests/js && npm ci --no-audit --no-fund --loglevel=error && touch node_modules/.installed; \
	else echo "npm not found: the JavaScript conformance test will skip (and fail under CI)"; fi

# Debian's Chromium for the real-browser test (Playwright drives it; it downloads no browser).
# Installed when missing and this machine can (root with apt-get); otherwise the test skips
# with the reason, and fails under CI=true.
CHROMIUM_STAMP := $(VENV)/.chromium
$(CHROMIUM_STAMP): $(STAMP)
	@if [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Debian's chromium for the browser test"; \
		(apt-get install -y -qq chromium >/dev/null 2>&1 || \
		 (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium >/dev/null 2>&1)) \
		|| echo "could not install chromium: the browser test will skip (and fail under CI)"; \
	else echo "chromium missing and not installable here: the browser test will skip"; fi
	@touch $(CHROMIUM_STAMP)

# promtool (Debian's `prometheus` package), for the alert-rule tests only. Installed when it is
# missing and this runs as root with apt-get; the package's own server is not wanted here, so
# it is stopped and disabled again. Otherwise those tests skip (and fail under CI=true).
promtool:
	@command -v promtool >/dev/null || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update -qq >/dev/null && \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
				prometheus >/dev/null 2>&1 && \
			{ systemctl disable --now prometheus >/dev/null 2>&1 || true; }; \
		fi; \
		command -v promtool >/dev/null || echo "promtool not found and not installable (needs root and apt-get): the alert-rule tests will skip (and fail under CI)"; \
	}

install: $(STAMP)

run: $(STAMP)
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py serve --host 127.0.0.1 --port 8000 --price-walk

# make run (prices walking by themselves), plus a small bot that trades.
demo: $(STAMP)
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py serve --host 127.0.0.1 --port 8000 --price-walk --demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The types (mypy, configured in pyproject.toml: strict for projectx and every services and
# selectors module) and the layer contracts (import-linter): both read the code without running
# it, so they fail in seconds on what the tests would find late or never.
typecheck: $(STAMP)
	$(BIN)/mypy
	$(BIN)/lint-imports

# lint, then typecheck, then the tests: the cheap checks fail first.
test: $(STAMP) $(JS_STAMP) $(CHROMIUM_STAMP) promtool lint typecheck
	$(BIN)/pytest

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache .hypothesis
