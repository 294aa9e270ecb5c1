# Two entry points, each creating its own virtualenv on a machine with only
# Python 3.11 and pip:   make train   |   make test
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# Offline copies of the MNIST / Fashion-MNIST files (see ../shared/datasets/README.md).
# Where they are absent, tfds downloads the data as usual.
MANUAL_DIR ?= $(wildcard ../shared/datasets)
WORKDIR ?= runs/default

.PHONY: train test test-floors docs mutants venv clean
venv: $(VENV)/.library

# The dependencies, then the library itself as a regular (not editable)
# install, renewed when its files change: commands run from the checkout
# import it from there, notebooks and tools elsewhere from the venv.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q ".[train,tf,test]"
	touch $@

$(VENV)/.library: $(VENV)/.installed $(wildcard lars_optax/*)
	$(PY) -m pip install -q --no-deps --force-reinstall .
	touch $@

train: venv
	$(PY) -m experiments.main --config=experiments/configs/default.py --workdir=$(WORKDIR) \
	  $(if $(MANUAL_DIR),--config.data.manual_dir=$(abspath $(MANUAL_DIR)))

test: venv
	$(PY) -m ruff check lars_optax
	$(PY) -m ruff check experiments tests
	$(PY) -m mypy
	$(PY) -m pytest -q -n auto --dist worksteal tests --doctest-modules lars_optax

# The docs (docs/: Sphinx, MyST, myst-nb) as HTML in docs/_build/html, warnings
# as errors; notebooks 01 and 03 run on their small settings, with the data of
# MANUAL_DIR (and LARS_OPTAX_DATA_DIR, when set, as the tfds data_dir).
DOCS_INSTALLED := $(VENV)/.docs-installed
$(DOCS_INSTALLED): $(VENV)/.installed pyproject.toml
	$(PY) -m pip install -q ".[docs]"
	touch $@

docs: $(VENV)/.library $(DOCS_INSTALLED)
	LARS_OPTAX_NOTEBOOK_SMALL=1 \
	  $(if $(MANUAL_DIR),LARS_OPTAX_SHARED_DATASETS=$(abspath $(MANUAL_DIR))) \
	  $(PY) -m sphinx -W --keep-going -b html docs docs/_build/html

# The library's tests at its declared floors (pyproject.toml), in a separate
# environment without flax or tfds (CI runs it after `make test`).
FLOOR_VENV := .venv-floors
LIBRARY_TESTS := tests/test_lars.py tests/test_lamb.py tests/test_numerics.py \
  tests/test_masks.py tests/test_schedules.py tests/test_diagnostics.py \
  tests/test_sharding.py
test-floors:
	$(PYTHON) -m venv $(FLOOR_VENV)
	$(FLOOR_VENV)/bin/python -m pip install -q "jax==0.4.25" "jaxlib==0.4.25" \
	  "optax==0.1.8" "numpy==1.24.1" "chex==0.1.86" "pytest>=7" pytest-timeout \
	  "hypothesis>=6.10.1"
	$(FLOOR_VENV)/bin/python -m pytest -q -p no:cacheprovider $(LIBRARY_TESTS) \
	  --doctest-modules lars_optax

# Mutation testing of the library: mutmut mutates lars_optax/ and runs the
# library's quick tests against each mutant ([tool.mutmut] in pyproject.toml).
# About an hour or two on 2 cores, so neither `make test` nor CI runs it; run it
# again whenever lars_optax/ changes. It rewrites tests/MUTANTS.md: the kill
# rate and each surviving mutant with why it changes nothing observable.
mutants: venv
	$(PY) -m pip install -q "mutmut>=3.8"  # process_isolation = "forkserver"
	rm -rf mutants
	JAX_PLATFORMS=cpu JAX_COMPILATION_CACHE_DIR=$(CURDIR)/mutants/.jax_cache \
	  $(VENV)/bin/mutmut run --max-children $(shell nproc)
	$(PY) tests/mutants_report.py > tests/MUTANTS.md

clean:
	rm -rf $(VENV) $(FLOOR_VENV) runs
