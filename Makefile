# Lab for developers. Needs only python3 (3.11 or newer) and make; everything else is
# installed into $(VENV).
#
#   make serve              run Lab on http://127.0.0.1:8000 with a demo product and its keys
#   make serve-production   run Lab behind nginx on BIND (installs nginx when missing)
#   make test               run the test suite
#
# Both use DATABASE_URL and REDIS_URL when they are set; otherwise a SQLite file in the
# project folder and an in-process cache (no server to start).

PYTHON ?= python3
VENV ?= .venv
BIND ?= 127.0.0.1:8000
# Fewer workers than production for the development server: each one costs memory, and
# two answer a developer's curls without delay.
SERVE_WORKERS ?= 2
PYTEST_ARGS ?=

BIN := $(VENV)/bin
# -q twice: pip's index notices are noise here; errors still show.
PIP_INSTALL := $(BIN)/python -m pip install --quiet --quiet --disable-pip-version-check

.DEFAULT_GOAL := help
.PHONY: help serve serve-production nginx test dev lint ha-up ha-down ha-status ha-drill

help:
	@echo "make serve   run Lab on http://$(BIND) with a demo product (prints its keys)"
	@echo "make serve-production BIND=HOST:PORT   Lab behind nginx (docs/operations.md)"
	@echo "make test    run the tests (PostgreSQL/Redis tests skip unless DATABASE_URL/REDIS_URL are set)"
	@echo "make lint    ruff check and ruff format --check"
	@echo "make ha-up   a Patroni cluster (primary + synchronous standby) for Lab; prints its DATABASE_URL"
	@echo "make ha-down stops it; make ha-drill runs the failover drill (docs/operations.md)"

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
		|| { echo "Lab needs Python 3.11 or newer; $(PYTHON) is older (try PYTHON=python3.11)" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)

# The stamps make repeated runs fast: pip runs again only when pyproject.toml is newer.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	@echo "Installing Lab into $(VENV) (the first time takes a minute)..."
	$(PIP_INSTALL) -e .
	@touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	@echo "Installing Lab and its test tools into $(VENV) (the first time takes a minute)..."
	$(PIP_INSTALL) -e '.[dev]'
	@touch $@ $(VENV)/.installed

dev: $(VENV)/.installed-dev

# deploy/serve.py checks the port and the database first, applies migrations, starts
# gunicorn and prints the demo's keys and curls only once the server answers them.
serve: $(VENV)/.installed
	@exec $(BIN)/python deploy/serve.py --bind $(BIND) --workers $(SERVE_WORKERS) --demo

# nginx in front of gunicorn (on a unix socket), listening on BIND; Ctrl-C stops both.
serve-production: $(VENV)/.installed nginx
	@exec $(BIN)/python deploy/serve.py --bind $(BIND) --front nginx

# Debian's nginx, installed only when missing (as .ci/run installs its tools).
nginx:
	@command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || { \
		echo "Installing nginx (apt-get)..."; \
		sudo=""; [ "$$(id -u)" -eq 0 ] || sudo=sudo; \
		$$sudo apt-get update -qq \
			&& $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null; \
	}

test: $(VENV)/.installed-dev
	@$(BIN)/python -m pytest $(PYTEST_ARGS); status=$$?; \
		if [ $$status -eq 5 ]; then echo "make test: pytest ran no test" >&2; fi; \
		exit $$status

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# A PostgreSQL primary with a synchronous standby under Patroni, and one etcd, on loopback
# (installs patroni and etcd-server with apt-get when missing). `ha-up` prints the
# DATABASE_URL to start Lab with; `ha-drill` runs the failover drill on a cluster of its own.
ha-up: $(VENV)/.installed
	@$(BIN)/python -m deploy.ha up

ha-down: $(VENV)/.installed
	@$(BIN)/python -m deploy.ha down

ha-status: $(VENV)/.installed
	@$(BIN)/python -m deploy.ha status

ha-drill: $(VENV)/.installed nginx
	@$(BIN)/python -m deploy.ha drill
