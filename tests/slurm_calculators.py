"""An EMT reference that queue jobs can be told to fail or to hang (for tests/hpc/test_slurm.py).

Reference jobs run in SLURM jobs, where no keyword arguments reach the calculator: it is driven by
files in the folder named by ``SOFTENING_TEST_CONTROL`` (the environment reaches the job through
``sbatch``). A control file is *claimed* by renaming it, so exactly one calculation acts on it:

- ``fail``: the calculation that claims it raises, and so does every later one of the same
  structure in that process (the reference job retries once without the force-consistent energy),
  so the job ends FIZZLED; a new process (the rerun) computes it;
- ``hold``: the calculation that claims it writes ``holding`` (its SLURM job id) and sleeps, until
  the test cancels its SLURM job.

Every finished calculation appends a hash of its positions to ``computed.log``.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

from ase.calculators.emt import EMT


def _claim(path: Path) -> bool:
    try:
        path.rename(path.with_name(path.name + ".claimed"))
        return True
    except FileNotFoundError:
        return False


def _digest(atoms) -> str:
    return hashlib.sha1(atoms.get_positions().round(6).tobytes()).hexdigest()


class ControlledEMT(EMT):
    """EMT that fails or hangs once on request (see the module docstring)."""

    _failing: set[str] = set()

    def calculate(self, atoms=None, properties=("energy",), system_changes=None):
        control = Path(os.environ["SOFTENING_TEST_CONTROL"])
        digest = _digest(atoms if atoms is not None else self.atoms)
        if digest in self._failing or _claim(control / "fail"):
            self._failing.add(digest)
            raise RuntimeError("injected reference failure")
        if _claim(control / "hold"):
            (control / "holding").write_text(os.environ.get("SLURM_JOB_ID", "?"))
            time.sleep(600)
        super().calculate(atoms, properties, system_changes or ["positions"])
        with open(control / "computed.log", "a") as fh:
            fh.write(digest + "\n")
