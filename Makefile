# RLHF Studio. `make run` starts the demo, `make test` runs every check. Both install first.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
RLHF := $(BIN)/rlhf
HOST ?= 127.0.0.1
PORT ?= 8000
# Databases the migration check runs on: a scratch SQLite file, plus Postgres when CI sets it.
TEST_SQLITE_URL := sqlite:///$(CURDIR)/var/test-migrations.db
MIGRATION_ENV := RLHF_SECRET_KEY=migration-check-only-not-a-secret RLHF_DEMO_MODE=0

.PHONY: help install run test test-fast lint fmt typecheck migrations-check bench clean

help:
	@echo "make run    install, migrate, seed the demo, start web + worker on http://$(HOST):$(PORT)"
	@echo "make test   install, then lint, type-check, migration check and the whole test suite"
	@echo "make bench  benchmarks (figures printed)"
	@echo "make fmt    format the code"

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "RLHF Studio needs Python 3.11 or newer (found " + sys.version.split()[0] + ")")'
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev]"
	@touch $@

# Front-end packages come from the npm registry (package-lock.json) and are served locally.
static/vendor/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	mkdir -p static/vendor/swagger-ui
	cp node_modules/htmx.org/dist/htmx.min.js static/vendor/htmx.min.js
	cp node_modules/swagger-ui-dist/swagger-ui-bundle.js node_modules/swagger-ui-dist/swagger-ui.css static/vendor/swagger-ui/
	@touch $@

install: $(VENV)/.installed static/vendor/.installed

.env:
	@printf 'RLHF_DEMO_MODE=1\nRLHF_SECRET_KEY=%s\n' "$$($(PYTHON) -c 'import secrets; print(secrets.token_urlsafe(48))')" > .env
	@echo "wrote .env (demo mode, a random secret key)"

run: install .env
	$(RLHF) db upgrade
	$(RLHF) demo
	$(RLHF) serve --with-worker --host $(HOST) --port $(PORT)

lint: install
	$(BIN)/ruff check app workers tests bench scripts migrations
	$(BIN)/ruff format --check app workers tests bench scripts

typecheck: install
	$(BIN)/mypy

fmt: install
	$(BIN)/ruff check --fix app workers tests bench scripts
	$(BIN)/ruff format app workers tests bench scripts

migrations-check: install
	@mkdir -p var && rm -f var/test-migrations.db
	@for url in "$(TEST_SQLITE_URL)" $${RLHF_TEST_DATABASE_URL:+"$$RLHF_TEST_DATABASE_URL"}; do \
	  echo "== alembic upgrade head + check on $${url%%://*} (from an empty database)"; \
	  case "$$url" in postgresql*) $(BIN)/python -c 'import sys; from tests.conftest import reset_postgres; reset_postgres(sys.argv[1])' "$$url" || exit 1;; esac; \
	  $(MIGRATION_ENV) RLHF_DATABASE_URL="$$url" $(BIN)/alembic upgrade head >/dev/null || exit 1; \
	  $(MIGRATION_ENV) RLHF_DATABASE_URL="$$url" $(BIN)/alembic check || exit 1; \
	done

# pytest exits 5 when it collected no test; that is a failure here, never a pass.
# The suite runs on every core (pytest-xdist, a test file to a worker: see tests/conftest.py);
# TEST_WORKERS=0 runs it in this one process.
TEST_WORKERS ?= auto
XDIST = $(if $(filter 0,$(TEST_WORKERS)),-p no:xdist,-n $(TEST_WORKERS) --dist loadfile)

test: lint typecheck migrations-check
	$(BIN)/pytest $(XDIST) $(PYTEST_ARGS)

test-fast: install
	$(BIN)/pytest $(XDIST) -m "not slow" $(PYTEST_ARGS)

bench: install
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) node_modules static/vendor var .pytest_cache .ruff_cache .mypy_cache
