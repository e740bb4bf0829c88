#!/usr/bin/env bash
# Not part of CI: build the wheel and sdist, install the wheel into a fresh Python 3.12 venv with the
# newest compatible releases (no lock, no constraints), then run the fast tests there.
#
#   bash scripts/check_py312.sh [LOG]     (about 10-30 min: pip fetches torch, a multi-GB CUDA build)
#
# The tests run from the unpacked sdist (its tests, examples and templates; its softening/ folder
# removed, so that the installed wheel is what they import).
#
# Environment: PY312 (the interpreter; default /root/.pyenv/versions/3.12.1/bin/python),
# WORK (scratch folder; default /tmp/softening-py312), EXTRAS (default "gpaw,mace,test"; GPAW
# compiles from source with scripts/gpaw_siteconfig.py: leave it out where libxc/OpenBLAS/FFTW are
# missing, its tests then skip or fail), PYTEST_ARGS (default: -m "not slow").
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY312=${PY312:-/root/.pyenv/versions/3.12.1/bin/python}
WORK=${WORK:-/tmp/softening-py312}
EXTRAS=${EXTRAS:-gpaw,mace,test}
PYTEST_ARGS=${PYTEST_ARGS:-'-m "not slow"'}
log() { echo "[py312 $(date -u +%H:%M:%S)] $*"; }

# PY312=/root/.pyenv/versions/3.13.0/bin/python checks 3.13 the same way.
"$PY312" -c 'import sys; assert sys.version_info[:2] >= (3, 12), sys.version' || {
  echo "PY312=$PY312 is not Python 3.12 or newer" >&2
  exit 2
}
rm -rf "$WORK"
mkdir -p "$WORK/dist"

# 1. wheel + sdist, with `build` from a throwaway venv when the current Python lacks it.
BUILD_PY=python3
if ! "$BUILD_PY" -c 'import build' 2>/dev/null; then
  "$PY312" -m venv "$WORK/build-venv"
  "$WORK/build-venv/bin/python" -m pip install -q build
  BUILD_PY="$WORK/build-venv/bin/python"
fi
log "python -m build"
"$BUILD_PY" -m build --outdir "$WORK/dist" "$ROOT" >"$WORK/build.log" 2>&1 || {
  tail -20 "$WORK/build.log"
  exit 1
}
ls -l "$WORK/dist"
wheel=$(ls "$WORK"/dist/softening-*.whl)
ls "$WORK"/dist/softening-*.tar.gz >/dev/null

# 2. a fresh 3.12 venv, without requirements/ci-constraints.txt (that lock is for 3.11).
"$PY312" -m venv "$WORK/venv"
PY="$WORK/venv/bin/python"
"$PY" -m pip install -q --upgrade pip
export GPAW_CONFIG="$ROOT/scripts/gpaw_siteconfig.py"
log "pip install ${wheel##*/}[$EXTRAS] (newest compatible releases)"
"$PY" -m pip install "$wheel[$EXTRAS]" 2>&1 | grep -v "^WARNING: Location" |
  tail -5
"$PY" - <<'EOF'
from importlib.metadata import version, PackageNotFoundError
for d in ("softening", "torch", "atomate2", "jobflow", "pymatgen", "chgnet", "matgl", "maggma",
          "fireworks", "mace-torch", "gpaw", "numpy", "ase"):
    try:
        print(f"  {d} {version(d)}")
    except PackageNotFoundError:
        print(f"  {d} (not installed)")
EOF

# 3. the package as installed (not the source tree): --help, --version, doctor, fast tests.
mkdir -p "$WORK/src"
tar xzf "$WORK"/dist/softening-*.tar.gz -C "$WORK/src"
SRC=$(ls -d "$WORK"/src/softening-*/)
rm -rf "$SRC/softening"
# tests/conftest.py reads ../shared beside the project folder.
ln -sfn "$(cd "$ROOT/.." && pwd)/shared" "$WORK/src/shared"
cd "$SRC"
"$WORK/venv/bin/softening" --version
"$WORK/venv/bin/softening" --help >/dev/null && log "softening --help ok"
"$WORK/venv/bin/softening" doctor --store "$WORK/doctor-db" || log "doctor: exit $? (see table)"
log "pytest $PYTEST_ARGS"
set +e
eval "OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 \"$PY\" -m pytest -q -p no:cacheprovider $PYTEST_ARGS tests"
rc=$?
set -e
log "pytest exit $rc"
exit $rc
