# The two front doors: `make demo` and `make test` (see README.md). Both create the virtual
# environment in .venv and install into it exactly what the lock files name (tools/install_locked.sh);
# they install nothing more while the lock and pyproject.toml are unchanged.

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
INTEROP := .interop/sat
INSTALL := PYTHON=$(PYTHON) tools/install_locked.sh $(VENV)
# `make lock` resolves for the machines the project runs on: Linux x86_64 with Python 3.11.
UV_COMPILE := uv pip compile pyproject.toml -c constraints.txt --python-version 3.11 \
	--python-platform x86_64-manylinux_2_28 --quiet --no-header --annotation-style line

.PHONY: demo test test-fast test-interop interop bench gpu-check install install-dev lock clean

demo: $(VENV)/.installed
	$(BIN)/sa-train demo

# The whole suite, as CI runs it (unit, slow, integration and interop tests on a local Ray).
test: $(VENV)/.installed-dev $(INTEROP)/.installed
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest tests -q

# Unit tests only (no local Ray cluster, no end-to-end runs): a few minutes.
test-fast: $(VENV)/.installed-dev
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest tests -q -m "not integration and not slow"

# stable-audio-tools as a test oracle for the `interop` tests, in a side folder of its own (never imported by
# sa_train itself): it declares an older Python, so no dependency resolution, only the pinned wheels.
interop: $(INTEROP)/.installed

$(INTEROP)/.installed: requirements-interop.txt $(VENV)/.installed-dev
	rm -rf $(INTEROP)
	$(BIN)/python -m pip --disable-pip-version-check -q install --no-deps --ignore-requires-python \
		--only-binary :all: --target $(INTEROP) -r requirements-interop.txt
	# descript-audio-codec ships a top-level `tests` package; on sys.path it would shadow this
	# project's tests/ in the processes that tests spawn.
	rm -rf $(INTEROP)/tests
	touch $@

# Only the equivalence tests against stable-audio-tools.
test-interop: $(VENV)/.installed-dev $(INTEROP)/.installed
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest tests/interop -q -m interop

bench: $(VENV)/.installed-dev
	$(BIN)/python -m benchmarks.run_all

# On a lent H100/H200 (with the GPU stack: DS_BUILD_ENV= tools/install_locked.sh .venv requirements-gpu.lock):
# attention backends against math, the paper U-Net's bf16 step (TFLOP/s, MFU), one rank's peak memory per
# ZeRO stage, 95 s of audio in 100 steps with CFG; one table, under 8 minutes, a line in RESULTS.md.
# Without a GPU it says so and exits 0.
gpu-check: $(VENV)/.installed-dev
	PYTHONPATH=. $(BIN)/python -m benchmarks.gpu_check

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

$(VENV)/.installed: requirements.lock pyproject.toml
	$(INSTALL) requirements.lock
	touch $@

$(VENV)/.installed-dev: requirements-dev.lock pyproject.toml
	$(INSTALL) requirements-dev.lock
	touch $(VENV)/.installed $@

# Re-resolve the locks after changing a dependency in pyproject.toml or constraints.txt, or to take
# newer releases on purpose; then run `make test` and commit the three files together.
lock:
	$(PYTHON) -m pip install -q "uv==0.13.9"
	$(UV_COMPILE) -o requirements.lock
	$(UV_COMPILE) --extra dev -c requirements.lock -o requirements-dev.lock
	$(UV_COMPILE) --extra gpu -c requirements-dev.lock -o requirements-gpu.lock
	$(UV_COMPILE) --extra cluster -c requirements.lock -o requirements-cluster.lock

clean:
	rm -rf $(VENV) .interop runs mlflow.db mlartifacts .pytest_cache
