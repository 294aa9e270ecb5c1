# Two entry points, each creating its own virtualenv on a machine with only
# Python 3.11 and pip:   make train   |   make test
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# Offline copies of the MNIST / Fashion-MNIST files (see ../shared/datasets/README.md).
# Where they are absent, tfds downloads the data as usual.
MANUAL_DIR ?= $(wildcard ../shared/datasets)
WORKDIR ?= runs/default

.PHONY: train test venv clean
venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[train,tf,test]"
	touch $@

train: venv
	$(PY) -m experiments.main --config=experiments/configs/default.py --workdir=$(WORKDIR) \
	  $(if $(MANUAL_DIR),--config.data.manual_dir=$(abspath $(MANUAL_DIR)))

test: venv
	$(PY) -m ruff check lars_optax
	$(PY) -m ruff check experiments tests
	$(PY) -m mypy
	$(PY) -m pytest -q tests --doctest-modules lars_optax

clean:
	rm -rf $(VENV) runs
