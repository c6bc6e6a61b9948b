# Each target bootstraps .venv when it is missing or pyproject.toml changed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test bench lint clean

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

run: $(VENV)/.installed
	$(BIN)/tollgate serve

# Pyflakes errors (undefined names, unused imports) and broken import contracts (the
# [tool.importlinter] section of pyproject.toml) fail the suite before it runs.
test: $(VENV)/.installed
	$(BIN)/ruff check --select F,E9 api tests bench migrations workers
	$(BIN)/lint-imports
	$(BIN)/python -m pytest

lint: $(VENV)/.installed
	$(BIN)/ruff check --select F,E,W,B,UP --ignore E501,B008 api tests bench migrations workers

# Needs wrk (apt-get install wrk); see docs/performance.md.
bench: $(VENV)/.installed
	$(BIN)/python bench/overhead.py

clean:
	rm -rf $(VENV) data
