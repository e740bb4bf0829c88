"""The doctor's checks of what the makers layer runs: GPAW, atomate2's VASP command, the POTCARs
MP's input set needs (see :mod:`softening.health`)."""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from softening.errors import SofteningError
from softening.health import DoctorRequest, PlannedCheck, Problem
from softening.settings import get_settings


def check_gpaw() -> str:
    """GPAW imports and finds its PAW setups."""
    try:
        import gpaw
    except ImportError:
        raise Problem(
            "GPAW is not installed",
            'pip install "softening[gpaw]" (needs libxc, OpenBLAS, FFTW), or use --reference emt',
        ) from None
    paths = [p for p in getattr(gpaw, "setup_paths", []) if Path(p).is_dir()]
    try:
        import gpaw_data

        paths.append(str(gpaw_data.get_datapath()))
    except (ImportError, AttributeError):
        pass
    if not paths:
        raise Problem(
            f"GPAW {gpaw.__version__}: no PAW setups found",
            'pip install gpaw-data (part of "softening[gpaw]"), or set GPAW_SETUP_PATH',
        )
    return f"GPAW {gpaw.__version__}, setups in {paths[0]}"


def _vasp_maker():
    from softening.makers.vasp import VaspReferenceMaker

    return VaspReferenceMaker()


def check_vasp_command() -> str:
    """atomate2's VASP command: its launcher and VASP binary must be executables on PATH."""
    from dataclasses import replace

    from atomate2 import SETTINGS

    maker = replace(_vasp_maker(), potcar_spec=True)  # the command only
    try:
        maker.check_environment()
    except SofteningError as exc:
        raise Problem(
            str(exc).split("; set ATOMATE2_VASP_CMD")[0],
            "set ATOMATE2_VASP_CMD (or VASP_CMD in ~/.atomate2.yaml) to how VASP runs here, "
            "e.g. 'srun vasp_std'; load VASP's module on a compute node",
        ) from None
    cmd = os.path.expandvars(SETTINGS.VASP_CMD)
    exe = shutil.which(cmd.split()[0]) if cmd.split() else None
    return f"{cmd!r} ({exe})"


def check_potcars(structures: Sequence[Any] = ()) -> Callable[[], str]:
    """A check of pymatgen's POTCAR folder and, per structure, every POTCAR MP's input set needs."""

    def run() -> str:
        from pymatgen.core import SETTINGS as PMG_SETTINGS

        psp = PMG_SETTINGS.get("PMG_VASP_PSP_DIR")
        if not psp or not Path(psp).expanduser().is_dir():
            raise Problem(
                "PMG_VASP_PSP_DIR is " + (f"{psp!r}, not a folder" if psp else "not set"),
                "point PMG_VASP_PSP_DIR (environment, or ~/.config/.pmgrc.yaml) at the folder "
                "holding POT_GGA_PAW_PBE/ (see `pmg config`)",
            )
        if not structures:
            subdirs = sorted(p.name for p in Path(psp).expanduser().iterdir() if p.is_dir())
            return f"PMG_VASP_PSP_DIR={psp} ({', '.join(subdirs) or 'no subfolders'})"
        from pymatgen.io.vasp.inputs import PotcarSingle

        maker = _vasp_maker()
        functional = maker.input_set_generator().potcar_functional
        needed: list[str] = []
        for structure in structures:
            spec = maker.get_input_set(structure, potcar_spec=True)["POTCAR.spec"]
            needed += [s for s in str(spec).split() if s not in needed]
        missing = []
        for symbol in needed:
            try:
                with warnings.catch_warnings():  # a POTCAR pymatgen does not know the hash of
                    warnings.simplefilter("ignore")
                    PotcarSingle.from_symbol_and_functional(symbol, functional)
            except Exception:  # noqa: BLE001 - any failure means VASP could not run
                missing.append(symbol)
        if missing:
            raise Problem(
                f"missing under {psp} ({functional}): {', '.join(missing)}",
                f"add the {functional} POTCARs {', '.join(missing)} (MP's choice) to "
                "PMG_VASP_PSP_DIR",
            )
        return f"{', '.join(needed)} ({functional}) under {psp}"

    return run


def _read_structures(structures: Iterable[Any]) -> list[Any]:
    from pymatgen.core import Structure

    from softening.datasets.readers import read_structure

    return [s if isinstance(s, Structure) else read_structure(s) for s in structures]


def plan_checks(request: DoctorRequest) -> list[PlannedCheck]:
    """GPAW (needed when it is the reference), VASP and the POTCARs (needed when the reference is
    ``vasp``, VASP is asked for, or structures are given).

    Raises
    ------
    SofteningError
        When a structure file cannot be read.
    """
    structs = _read_structures(request.structures)
    reference = get_settings().reference.lower()
    need_vasp = request.vasp or bool(structs) or reference == "vasp"
    timeout = request.timeout
    return [
        PlannedCheck("gpaw", check_gpaw, reference == "gpaw", timeout),
        PlannedCheck("vasp command", check_vasp_command, need_vasp, timeout),
        PlannedCheck("potcars", check_potcars(structs), need_vasp, timeout),
    ]
