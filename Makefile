# keras-dkd: the README's two commands.
#   make demo   the main job on EmoDB: build, train teacher + DKD student, evaluate, export
#   make test   the test suite, once per Keras backend (tensorflow, torch, jax)
# Both create and fill the virtual environment first (idempotent: reruns reuse it).

VENV        ?= .venv
PYTHON      ?= python3
BACKENDS    ?= tensorflow torch jax
CONSTRAINTS ?= .ci/constraints.txt
PYTEST_ARGS ?=
PY          := $(VENV)/bin/python
STAMP       := $(VENV)/.keras-dkd-installed

.PHONY: venv demo test lint clean-venv

venv: $(STAMP)

$(STAMP): pyproject.toml $(CONSTRAINTS)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --constraint $(CONSTRAINTS) --editable ".[dev,torch,jax,onnx,ray]"
	@touch $@

demo: venv
	@bash scripts/demo.sh

test: venv
	@bash scripts/test.sh $(BACKENDS)

lint: venv
	$(VENV)/bin/ruff check .

clean-venv:
	rm -rf $(VENV)
