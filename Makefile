# Lab for developers. Needs only python3 (3.11 or newer) and make; everything else is
# installed into $(VENV).
#
#   make serve   run Lab on http://127.0.0.1:8000 with a demo product and its keys
#   make test    run the test suite
#
# Both use DATABASE_URL and REDIS_URL when they are set; otherwise a SQLite file in the
# project folder and an in-process cache (no server to start).

PYTHON ?= python3
VENV ?= .venv
BIND ?= 127.0.0.1:8000
PYTEST_ARGS ?=

BIN := $(VENV)/bin
# -q twice: pip's index notices are noise here; errors still show.
PIP_INSTALL := $(BIN)/python -m pip install --quiet --quiet --disable-pip-version-check

.DEFAULT_GOAL := help
.PHONY: help serve test dev lint

help:
	@echo "make serve   run Lab on http://$(BIND) with a demo product (prints its keys)"
	@echo "make test    run the tests (PostgreSQL/Redis tests skip unless DATABASE_URL/REDIS_URL are set)"
	@echo "make lint    ruff check and ruff format --check"

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

serve: $(VENV)/.installed
	$(BIN)/python manage.py migrate --no-input
	@echo
	@$(BIN)/python manage.py demo --base-url http://$(BIND)
	@token="$$($(BIN)/python manage.py create_api_token demo 2>/dev/null | tail -n 1)" \
		&& echo "Admin API token: $$token" \
		&& echo "List the demo user's products:" \
		&& echo "curl -s http://$(BIND)/api/admin/v1/products -H 'Authorization: Bearer $$token'"
	@echo
	exec $(BIN)/gunicorn -c gunicorn.conf.py --bind $(BIND) lab.wsgi:application

test: $(VENV)/.installed-dev
	@$(BIN)/python -m pytest $(PYTEST_ARGS); status=$$?; \
		if [ $$status -eq 5 ]; then echo "make test: pytest ran no test" >&2; fi; \
		exit $$status

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
