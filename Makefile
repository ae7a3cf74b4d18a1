# Two commands do everything on a fresh machine with Python 3.11: `make demo` and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: demo test bench bench-gpu zoo install clean-demo

$(PY):
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found (set PYTHON=/path/to/python3.11)"; exit 1; }
	$(PYTHON) -m venv $(VENV)

# torch first (the pinned CPU/CUDA build), then the rest without build isolation so that DeepSpeed's
# source build compiles against that torch instead of downloading another one.
$(STAMP): $(PY) requirements.txt requirements-dev.txt setup.py
	$(PIP) install --quiet --upgrade pip setuptools wheel
	$(PIP) install --quiet torch==2.13.0
	DS_BUILD_OPS=0 $(PIP) install --quiet --no-build-isolation -r requirements.txt -r requirements-dev.txt
	$(PIP) install --quiet --no-build-isolation --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m avatar_gen.demo --out outputs/demo

# Lint rules (ruff.toml) and the import layering (.importlinter) first: seconds, and they name the file to fix.
test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q tests

bench: $(STAMP)
	$(PY) -m bench

# Every GPU figure in one run (about 6 min on one H100/H200). No install step: a GPU machine's own python with torch,
# transformers and peft, plus the wheels docs/inference.md lists, is enough (BENCH_PYTHON=... to choose it).
BENCH_PYTHON ?= $(if $(wildcard $(PY)),$(PY),python3)
bench-gpu:
	$(BENCH_PYTHON) -m bench.gpu

zoo: $(STAMP)
	$(PY) -m avatar_gen.tiny --out models/tiny

clean-demo:
	rm -rf outputs/demo
