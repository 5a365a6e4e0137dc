# Two commands on a fresh machine (Python 3.11+, root or sudo for Debian packages):
#   make demo   set up, then train two LeNets, stitch them and print the results table
#   make test   set up, then run the test suite
# Set-up = a virtualenv in .venv with requirements.txt, plus the Debian packages the
# demo and tests need (dataset-fashion-mnist, shellcheck) where they are missing.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-requirements
DEV    := $(VENV)/.installed-dev-requirements

.PHONY: setup system-packages demo test bench clean

setup: $(STAMP) system-packages

$(STAMP): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements.txt
	touch $(STAMP)

$(DEV): $(STAMP) requirements-dev.txt
	$(PY) -m pip install --disable-pip-version-check -q -r requirements-dev.txt
	touch $(DEV)

system-packages:
	@bash scripts/ensure_system_packages.sh

demo: setup
	$(PY) demo.py

test: setup $(DEV)
	$(PY) -m pytest -q tests

# Speed measurements (each prints ratios against a baseline run in the same process).
bench: setup
	$(PY) -m pip install --disable-pip-version-check -q -r benchmarks/requirements.txt
	$(PY) benchmarks/bench_loader.py
	$(PY) benchmarks/bench_stitch.py
	$(PY) benchmarks/bench_cka_matrix.py

clean:
	rm -rf $(VENV) .pytest_cache
