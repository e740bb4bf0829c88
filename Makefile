# Two entry points, both idempotent on a fresh Debian/Ubuntu machine:
#   make demo   set up (.venv, system packages as root) and run the workflow on the embedded defaults
#   make test   set up and run the test suite
.PHONY: setup demo test lint lock clean

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
	$(BIN)/python -m pytest -q -n auto --dist loadgroup $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check softening tests benchmarks
	$(BIN)/ruff format --check softening tests benchmarks

# Refresh the CI lock from .venv: upgrade there first (e.g. .venv/bin/pip install -U matgl), run the
# tests, then `make lock` and commit requirements/ci-constraints.txt. Python 3.11 only.
LOCK := requirements/ci-constraints.txt
lock:
	@test -x $(BIN)/python || { echo "no $(VENV): run make setup first" >&2; exit 1; }
	@mkdir -p $(dir $(LOCK))
	@{ printf '%s\n' "# The exact versions CI installs (scripts/setup.sh: pip install -c this file), for" \
		"# Python 3.11 on Linux x86_64. Made by \`make lock\` (pip freeze of .venv, without softening" \
		"# itself); not a requirement of the package: pyproject.toml holds the compatible ranges."; \
		$(BIN)/python -m pip freeze --exclude-editable --exclude softening; } > $(LOCK).new
	@mv $(LOCK).new $(LOCK)
	@echo "[lock] $(LOCK): $$(grep -vc '^#' $(LOCK)) packages"

clean:
	rm -rf demo-db demo-results softening-db softening-results
