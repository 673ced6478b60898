# bcdiag: `make run` starts the platform, `make test` runs the whole suite.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STAMP := $(VENV)/.bcdiag-installed
export BCDIAG_DATA_DIR ?= $(abspath ../shared/data)

.PHONY: install run test lint typecheck pytest lock clean

install: $(STAMP) node_modules/.bcdiag-installed  ## venv with every dependency, npm deps, Jupyter kernel

$(STAMP): requirements.lock pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	$(PY) -m ipykernel install --sys-prefix --name bcdiag --display-name "Python (bcdiag)" >/dev/null
	touch $@

node_modules/.bcdiag-installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

run: install  ## start the platform on its embedded defaults
	$(BIN)/bcdiag run

lint: install  ## ruff, and import-linter's layer contracts (pyproject.toml)
	$(BIN)/ruff check bcdiag tests benchmarks hub_config
	$(BIN)/ruff format --check bcdiag tests benchmarks hub_config
	$(BIN)/lint-imports

typecheck: install
	$(BIN)/mypy

pytest: install
	.ci/with-postgres $(BIN)/pytest $(PYTEST_ARGS)

test: lint typecheck pytest  ## the whole suite: ruff, mypy, pytest (incl. nbval)

lock:  ## re-resolve requirements.in in a fresh venv and freeze it into requirements.lock
	rm -rf /tmp/bcdiag-lock && python3 -m venv /tmp/bcdiag-lock
	/tmp/bcdiag-lock/bin/pip install -q -r requirements.in
	{ head -n 1 requirements.lock; /tmp/bcdiag-lock/bin/pip freeze --exclude-editable; } > requirements.lock.new
	mv requirements.lock.new requirements.lock

clean:
	rm -rf $(VENV) node_modules .mypy_cache .ruff_cache .pytest_cache
