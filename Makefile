# The two commands of the README: `make relay` and `make test`.
VENV ?= .venv
RELAY_VENV ?= .venv-relay
PY := $(VENV)/bin/python
PORT ?= 3001
HOST ?= 0.0.0.0

.PHONY: relay test lint deps system-deps clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

deps: $(VENV)/.installed

# The relay gets a venv of its own with the base install only (no extras, no dev tools).
$(RELAY_VENV)/.installed: pyproject.toml
	python3 -m venv $(RELAY_VENV)
	$(RELAY_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(RELAY_VENV)/bin/python -m pip install --quiet .
	touch $@

relay: $(RELAY_VENV)/.installed
	PORT=$(PORT) HOST=$(HOST) $(RELAY_VENV)/bin/amesh-relay

system-deps:
	@scripts/install-system-deps

lint: deps
	$(VENV)/bin/ruff check src tests bench examples
	$(VENV)/bin/ruff format --check src tests bench examples
	$(VENV)/bin/mypy

test: system-deps deps lint
	scripts/run-pytest $(VENV)

clean:
	rm -rf $(VENV) $(RELAY_VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
