"""Fake POTCAR files: headers that pymatgen, emmet and the emulator parse, no pseudopotential data.

Real POTCARs are licensed and absent here. pymatgen writes a ``POTCAR`` by concatenating
``$PMG_VASP_PSP_DIR/<functional dir>/POTCAR.<symbol>`` files; with these fakes in that folder the
input sets, custodian and emmet run exactly as in production. pymatgen warns that it does not know
their hashes (``UnknownPotcarWarning``), which is expected.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from pymatgen.core import Element

__all__ = ["fake_potcar", "write_fake_potcars"]

# The functional sub-folders pymatgen looks in: MPRelaxSet uses PBE, MatPESStaticSet PBE_64.
_FUNCTIONAL_DIRS = ("PBE", "PBE_54", "PBE_64")

# Date stamps are part of real TITELs; any fixed string does.
_DATE = "01Jan2000"


def _valence(symbol: str) -> float:
    """A plausible ZVAL: electrons outside the noble-gas core, plus semicore shells by suffix."""
    base = symbol.split("_")[0]
    el = Element(base)
    structure = el.electronic_structure
    # "[Ar].3d10.4s1" -> occupations after the core bracket.
    outer = structure.split("]", 1)[1] if "]" in structure else "." + structure
    n = sum(int(m) for m in re.findall(r"\d[spdf](\d+)", outer))
    suffix = symbol[len(base) :]
    if "_sv" in suffix:
        n += 8
    elif "_pv" in suffix:
        n += 6
    elif "_d" in suffix and el.is_post_transition_metal:
        n += 10
    return float(max(n, 1))


def fake_potcar(symbol: str, functional: str = "PBE") -> str:
    """The text of one fake POTCAR for ``symbol`` (e.g. ``"Fe_pv"``).

    Parameters
    ----------
    symbol
        POTCAR symbol, e.g. ``"Cu_pv"``.
    functional
        pymatgen functional name; only decides the ``PAW_PBE`` label.

    Returns
    -------
    str
        A POTCAR with the header keywords (TITEL, ZVAL in electrons, POMASS in amu, ENMAX in eV)
        and no data.
    """
    el = Element(symbol.split("_")[0])
    label = "PAW_PBE" if functional.startswith("PBE") else "PAW"
    titel = f"{label} {symbol} {_DATE}"
    zval = _valence(symbol)
    return (
        f"  {titel}\n"
        f" {zval:.10f}\n"
        " parameters from PSCTR are:\n"
        f"   VRHFIN ={el.symbol}: fake (softening tests)\n"
        "   LEXCH  = PE\n"
        "   EATOM  =   100.0000 eV\n"
        f"   TITEL  = {titel}\n"
        "   LULTRA =        F\n"
        "   LPAW   =        T\n"
        f"   POMASS =  {float(el.atomic_mass):8.3f}; ZVAL   =  {zval:8.3f}\n"
        "   ENMAX  =  400.000; ENMIN  =  300.000 eV\n"
        " END of PSCTR-controll parameters\n"
        # pymatgen's validity check takes statistics of the numbers after the header: some are needed.
        " local part\n"
        "   0.0000000000000   1.0000000000000\n"
        " End of Dataset\n"
    )


def write_fake_potcars(root: str | Path, symbols: Iterable[str] | None = None) -> Path:
    """Write fake POTCARs for ``symbols`` (default: every symbol of MP's and MatPES's sets).

    Parameters
    ----------
    root
        Folder to use as ``PMG_VASP_PSP_DIR``.
    symbols
        POTCAR symbols; ``None`` for all those ``MPRelaxSet`` and ``MatPESStaticSet`` choose.

    Returns
    -------
    Path
        ``root``, holding ``POT_GGA_PAW_PBE/POTCAR.<symbol>`` and the other PBE sub-folders.
    """
    from pymatgen.io.vasp.inputs import PotcarSingle
    from pymatgen.io.vasp.sets import MatPESStaticSet, MPRelaxSet

    if symbols is None:
        symbols = set(MPRelaxSet.CONFIG["POTCAR"].values()) | set(
            MatPESStaticSet.CONFIG["POTCAR"].values()
        )
    root = Path(root)
    for functional in _FUNCTIONAL_DIRS:
        folder = root / PotcarSingle.functional_dir[functional]
        folder.mkdir(parents=True, exist_ok=True)
        for symbol in symbols:
            (folder / f"POTCAR.{symbol}").write_text(fake_potcar(symbol, functional))
    return root
