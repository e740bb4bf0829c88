"""A VASP emulator for tests: the ``vasp_std`` executable, fake POTCARs, and how to plug them in.

VASP cannot run here, so the VASP reference path (atomate2 -> custodian -> TaskDoc -> FrameResult)
is exercised with :mod:`vasp_emulator.emulator`: an executable that reads the inputs atomate2 writes
and writes the outputs pymatgen, custodian and emmet parse, with energies and forces from an embedded
calculator (EMT by default, GPAW with ``VASP_EMULATOR_CALC=gpaw``).

- :data:`VASP_STD` is the executable; :func:`vasp_command` the command line to give atomate2
  (``atomate2.SETTINGS.VASP_CMD`` / ``ATOMATE2_VASP_CMD``), run by this interpreter so that it works
  whatever ``python`` is first on ``PATH``.
- :func:`write_fake_potcars` writes a ``PMG_VASP_PSP_DIR`` of fake POTCARs (headers pymatgen parses,
  no pseudopotential data) so that the input sets write a ``POTCAR`` as in production.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from vasp_emulator.potcars import fake_potcar, write_fake_potcars

__all__ = ["VASP_STD", "fake_potcar", "vasp_command", "write_fake_potcars"]

#: The emulator executable (a Python script).
VASP_STD: Path = Path(__file__).resolve().parent / "vasp_std"


def vasp_command() -> str:
    """The command that runs the emulator with this interpreter (for ``VASP_CMD``)."""
    return f"{shlex.quote(sys.executable)} {shlex.quote(str(VASP_STD))}"
