# The two front doors: `make demo` and `make test` (see README.md). Both create or refresh the
# virtual environment in .venv, and do nothing more when pyproject.toml has not changed.

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# DeepSpeed builds its CPU communication op at install time instead of JIT-compiling it (about a
# minute) in every fresh process; torch must be installed first, so it is built without isolation.
DS_ENV := DS_ACCELERATOR=cpu DS_BUILD_SHM_COMM=1
REQ = $(shell $(BIN)/python -c 'import tomllib; d = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]; print(next(x for x in d if x.startswith("$(1)")))')

.PHONY: demo test bench install install-dev clean

demo: $(VENV)/.installed
	$(BIN)/sa-train demo

test: $(VENV)/.installed-dev
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest tests -q

bench: $(VENV)/.installed-dev
	$(BIN)/python -m benchmarks.run_all

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q "$(call REQ,torch==)" ninja packaging
	$(DS_ENV) $(BIN)/pip install -q --no-build-isolation "$(call REQ,deepspeed)"
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

clean:
	rm -rf $(VENV) runs mlflow.db mlartifacts .pytest_cache
