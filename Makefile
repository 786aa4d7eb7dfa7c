# A newcomer needs python3, pip and make; everything else is installed into .venv from the package index.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo test lint format up down status clean lock compose-check

# The dependencies come from requirements-dev.lock, pinned with their hashes (runtime, embedded stack, tests);
# the project itself is then installed on top without resolving anything again. After changing pyproject.toml's
# dependencies: `make lock` (pip-tools), and commit both lock files.
$(STAMP): pyproject.toml requirements-dev.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check --require-hashes -r requirements-dev.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

## make demo: embedded stack + worker, import the sample list, every household through all six stages
## make demo PROVINCE=lang-son: the same on a generated province (Lạng Sơn 2025, 6,508 households)
demo: install
	$(PY) starter.py demo $(if $(PROVINCE),--province $(PROVINCE))

# The browser tests drive Debian's Chromium; Playwright never downloads a browser of its own.
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	@echo "Installing Debian's Chromium for the browser tests (apt-get)"
	@if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  $$SUDO apt-get -o Acquire::Retries=3 update -qq && \
	  $$SUDO apt-get -o Acquire::Retries=3 install -y -qq --no-install-recommends chromium >/dev/null

# tests/test_compose.py checks docker-compose.yml with `docker-compose config` (Debian's package: no engine needed).
COMPOSE_BIN := /usr/bin/docker-compose
$(COMPOSE_BIN):
	@echo "Installing Debian's docker-compose for the compose check (apt-get)"
	@if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  $$SUDO apt-get -o Acquire::Retries=3 update -qq && \
	  $$SUDO apt-get -o Acquire::Retries=3 install -y -qq --no-install-recommends docker-compose >/dev/null

compose-check: $(COMPOSE_BIN)
	$(COMPOSE_BIN) -f docker-compose.yml config -q

## make test: lint, then the whole suite against real PostgreSQL and Temporal test servers, in TEST_JOBS
## processes (pytest-xdist; each starts its own servers, a test file stays in one process)
TEST_JOBS ?= 2
test: install $(CHROMIUM) $(COMPOSE_BIN)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -n $(TEST_JOBS) --dist loadfile

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

up: install
	$(PY) starter.py stack up

down:
	@if [ -x $(PY) ]; then $(PY) starter.py stack down; fi

status: install
	$(PY) starter.py stack status

clean: down
	rm -rf .state

## make lock: pin every dependency with its hashes: requirements.lock (the image) and requirements-dev.lock
LOCK := --quiet --generate-hashes --no-emit-find-links --no-emit-index-url --strip-extras --allow-unsafe
lock: install
	$(PY) -m pip install --quiet pip-tools
	$(VENV)/bin/pip-compile $(LOCK) -o requirements.lock pyproject.toml
	$(VENV)/bin/pip-compile $(LOCK) --extra embedded --extra test -o requirements-dev.lock pyproject.toml
