# Two entry points: `make demo` (main job on bundled data) and `make test`.
# Both create .venv on first use and install pinned dependencies; a fresh clone
# with Python 3.11 needs nothing else.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.atomssl-installed
# torch is pinned exactly: an open range would pull a multi-GB CUDA build.
WHEELS := $(wildcard /opt/wheels)
FIND_LINKS := $(if $(WHEELS),--find-links $(WHEELS),)
PYTEST_ARGS ?=

.PHONY: venv lint test test-fast demo bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(FIND_LINKS) torch==2.13.0
	$(BIN)/pip install -q $(FIND_LINKS) -e '.[test,sim,lint]'
	# Offline data ships inside these wheels; their own dependency trees are not needed.
	$(BIN)/pip install -q --no-deps crystal-toolkit==2026.7.20 matbench==0.6 pyxtal==1.1.5 robocrys==0.2.13 qm9pack==1.0.3
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts
	$(BIN)/mypy

# One pytest worker per core (pytest-xdist), each test module on one worker (its module-scoped
# fixtures are built once), one BLAS/OpenMP thread per worker. PYTEST_WORKERS=0 runs serially.
PYTEST_WORKERS ?= auto
XDIST = $(if $(filter 0,$(PYTEST_WORKERS)),-p no:xdist,-n $(PYTEST_WORKERS) --dist loadscope)

test: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q $(XDIST) $(PYTEST_ARGS)

test-fast: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q $(XDIST) -m "not slow" $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/atomssl demo

bench: $(STAMP)
	$(BIN)/python benchmarks/neighbors.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
