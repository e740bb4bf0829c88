# Two entry points, both idempotent on a fresh Debian/Ubuntu machine:
#   make demo   set up (.venv, system packages as root) and run the workflow on the embedded defaults
#   make test   set up and run the test suite
.PHONY: setup demo test lint clean

export OMP_NUM_THREADS ?= 1
export HF_HUB_OFFLINE ?= 1
VENV := .venv
BIN := $(VENV)/bin

setup:
	@bash scripts/setup.sh

# The demo: Si and MgO 8-atom cells, a short 1000 K CHGNet MD, 10 frames each, GPAW references.
# k-spacing 0.5/Å keeps it to minutes on 2 cores; production uses the default 0.25/Å.
demo: setup
	$(BIN)/softening run examples/Si.cif examples/MgO.cif --steps 1000 --stride 5 --frames 10 \
		--kspacing 0.5 --store demo-db --out demo-results

test: setup
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check softening tests benchmarks
	$(BIN)/ruff format --check softening tests benchmarks

clean:
	rm -rf demo-db demo-results softening-db softening-results
