# Two commands on a fresh machine (Python 3.11+, root or sudo for Debian packages):
#   make demo   set up, then train two LeNets, stitch them and print the results table
#   make test   set up, then run the test suite
# Set-up = a virtualenv in .venv with requirements.txt and this package (pip install -e .),
# plus the Debian packages the demo and tests need (dataset-fashion-mnist, shellcheck) where missing.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-requirements
DEV    := $(VENV)/.installed-dev-requirements

.PHONY: setup system-packages demo test bench clean

setup: $(STAMP) system-packages

# requirements.txt first, then this package in editable mode (pyproject.toml) so that `import src`
# works from any folder, notebooks included; --no-deps: it never replaces the torch just installed.
$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements.txt
	$(PY) -m pip install --disable-pip-version-check -q --no-deps -e .
	touch $(STAMP)

$(DEV): $(STAMP) requirements-dev.txt
	$(PY) -m pip install --disable-pip-version-check -q -r requirements-dev.txt
	touch $(DEV)

system-packages:
	@bash scripts/ensure_system_packages.sh

demo: setup
	$(PY) demo.py

test: setup $(DEV)
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n 2 tests

# Speed measurements (each prints ratios against a baseline run in the same process).
bench: setup
	$(PY) -m pip install --disable-pip-version-check -q -r benchmarks/requirements.txt
	$(PY) benchmarks/bench_loader.py
	$(PY) benchmarks/bench_stitch.py
	$(PY) benchmarks/bench_cka_matrix.py

clean:
	rm -rf $(VENV) .pytest_cache
