#!/usr/bin/env bash
# One idempotent set-up for a fresh Debian/Ubuntu machine: system packages (as root), the virtual
# environment at .venv, torch (the CPU wheel of the lock) before anything that depends on it, GPAW
# built against Debian's libxc/OpenBLAS/FFTW, then the package itself with every extra. Versions come
# from requirements/ci-constraints.txt (`make lock` refreshes it); SOFTENING_CONSTRAINTS=none
# installs the newest compatible releases instead.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV=${SOFTENING_VENV:-$ROOT/.venv}  # another folder: e.g. to check the lock
STAMP="$VENV/.softening-installed"
PYTHON=${PYTHON:-python3.11}
CONSTRAINTS=${SOFTENING_CONSTRAINTS:-$ROOT/requirements/ci-constraints.txt}
APT_PKGS="libxc-dev libopenblas-dev libfftw3-dev pkg-config"
# SLURM and munge: tests/hpc/test_slurm.py starts a private single-node cluster from them (~20 s install;
# nothing is started or enabled here).
SLURM_PKGS="slurmctld slurmd slurm-client munge"
# Headless Chromium and its driver: tests/workflows/test_html_report.py opens `report --html`'s page
# in a real browser (Debian's packages; on Ubuntu `chromium` is a snap stub).
BROWSER_PKGS="chromium chromium-driver"

missing=()
for p in $APT_PKGS $SLURM_PKGS $BROWSER_PKGS; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "[setup] apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "[setup] please install the Debian packages GPAW (and the SLURM and browser tests) need:" \
      "sudo apt-get install ${missing[*]}" >&2
  fi
fi

# The stamp holds a hash of what the install depends on, so editing pyproject.toml or the lock
# reinstalls.
hashed=(pyproject.toml scripts/setup.sh scripts/gpaw_siteconfig.py)
[ "$CONSTRAINTS" = none ] || hashed+=("$CONSTRAINTS")
want=$( (cat "${hashed[@]}"; echo "$CONSTRAINTS") | sha256sum | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  exit 0
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
$PIP install -q --upgrade pip wheel setuptools
lock=()
if [ "$CONSTRAINTS" != none ]; then
  # The lock is made on Python 3.11; another Python resolves its own versions.
  if "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    lock=(-c "$CONSTRAINTS")
  else
    echo "[setup] $("$VENV/bin/python" -V): not using the Python 3.11 lock $CONSTRAINTS" >&2
  fi
fi
# torch first, the CPU build: a later dependency asking for plain "torch" would otherwise pull a
# multi-GB CUDA build. The lock names the local CPU wheel (torch==2.13.0+cpu); without it, 2.13.0 is
# the CPU wheel pip finds on this machine for Python 3.11.
if [ ${#lock[@]} -gt 0 ]; then torch_req=torch; else torch_req=${SOFTENING_TORCH:-torch==2.13.0}; fi
$PIP install -q "${lock[@]}" "$torch_req"
export GPAW_CONFIG="$ROOT/scripts/gpaw_siteconfig.py"
$PIP install -q "${lock[@]}" -e ".[dev]"
echo "$want" > "$STAMP"
echo "[setup] done: $VENV"
