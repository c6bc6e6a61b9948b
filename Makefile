# Each target bootstraps .venv when it is missing or pyproject.toml changed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

run: $(VENV)/.installed
	$(BIN)/tollgate serve

test: $(VENV)/.installed
	$(BIN)/python -m pytest

# Needs wrk (apt-get install wrk); see docs/performance.md.
bench: $(VENV)/.installed
	$(BIN)/python bench/overhead.py

clean:
	rm -rf $(VENV) data
