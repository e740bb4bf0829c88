#!/usr/bin/env bash
# One idempotent set-up for a fresh Debian/Ubuntu machine: system packages (as root), the virtual
# environment at .venv, torch 2.13.0 (CPU wheel) before anything that depends on it, GPAW built
# against Debian's libxc/OpenBLAS/FFTW, then the package itself with its test extras.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV="$ROOT/.venv"
STAMP="$VENV/.softening-installed"
PYTHON=${PYTHON:-python3.11}
APT_PKGS="libxc-dev libopenblas-dev libfftw3-dev pkg-config"
# SLURM and munge: tests/test_slurm.py starts a private single-node cluster from them (~20 s install;
# nothing is started or enabled here).
SLURM_PKGS="slurmctld slurmd slurm-client munge"

missing=()
for p in $APT_PKGS $SLURM_PKGS; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "[setup] apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "[setup] please install the Debian packages GPAW (and the SLURM tests) need:" \
      "sudo apt-get install ${missing[*]}" >&2
  fi
fi

# The stamp holds a hash of what the install depends on, so editing pyproject.toml reinstalls.
want=$(cat pyproject.toml scripts/setup.sh scripts/gpaw_siteconfig.py | sha256sum | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  exit 0
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
$PIP install -q --upgrade pip wheel setuptools
# torch first: a later dependency asking for plain "torch" would otherwise pull a multi-GB CUDA build.
$PIP install -q torch==2.13.0
export GPAW_CONFIG="$ROOT/scripts/gpaw_siteconfig.py"
$PIP install -q -e ".[test]"
echo "$want" > "$STAMP"
echo "[setup] done: $VENV"
