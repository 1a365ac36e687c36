# The two commands of the README: `make relay` and `make test`.
VENV ?= .venv
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

# One venv serves both commands; the relay needs only the base install.
relay: deps
	PORT=$(PORT) HOST=$(HOST) $(VENV)/bin/amesh-relay

system-deps:
	@scripts/install-system-deps

lint: deps
	$(VENV)/bin/ruff check src tests bench examples
	$(VENV)/bin/ruff format --check src tests bench examples
	$(VENV)/bin/mypy

test: system-deps deps lint
	scripts/run-pytest $(VENV)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
