"""Readers that turn existing DFT-labelled data into :class:`~softening.datasets.frames.Frame` lists.

One entry point, :func:`read_frames`, detects the format from the file name and content:

- extended XYZ (``*.extxyz``, ``*.xyz``, optionally gzipped): labels from ``REF_energy`` /
  ``REF_forces`` / ``REF_stress``, or from plain ``energy`` / ``forces`` / ``stress``;
- the WBM high-energy-states JSON layout (``{material_id: {frame_id: {"structure", "vasp_e",
  "vasp_f", "vasp_s", "meta"}}}``);
- the mlearn JSON layout (a list of ``{"structure", "outputs", "group", "description"}``);
- ``vasprun.xml`` (optionally gzipped, or a directory holding one): one frame per ionic step;
- any structure file pymatgen or ASE understands (CIF, POSCAR, ...): one unlabelled frame.

Conventions of every returned frame: energy in eV (total), forces ``(n, 3)`` float64 in eV/Å, stress
``(3, 3)`` in eV/Å^3 with the ASE sign (positive = tensile). Sources in VASP's convention (kbar,
positive = compressive) are converted with :func:`vasp_stress_to_ase`.

Any file that cannot be read raises :class:`~softening.errors.InputError` with a one-line message
naming the file; the underlying exception is kept as ``__cause__``.
"""

from __future__ import annotations

import copy
import gzip
import json
import math
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from ase.units import GPa
from pymatgen.core import Lattice, Structure

from softening.datasets import checks as _checks
from softening.datasets.frames import Frame
from softening.errors import InputError

__all__ = [
    "ASE_VOIGT_ORDER",
    "FORMATS",
    "KBAR_TO_EV_PER_A3",
    "MIN_INTERATOMIC_DISTANCE",
    "VASP_VOIGT_ORDER",
    "check_structure",
    "detect_format",
    "is_mlff_run",
    "read_extxyz",
    "read_frames",
    "read_mlearn_json",
    "read_structure",
    "read_vasprun",
    "read_wbm_json",
    "vasp_run_info",
    "vasp_step_metadata",
    "vasp_stress_to_ase",
]

#: eV/Å^3 per kbar (1 kbar = 0.1 GPa), about 6.2415e-4.
KBAR_TO_EV_PER_A3: float = 0.1 * GPa

#: Formats accepted by ``read_frames(fmt=...)``; ``"json"`` picks the WBM or mlearn layout by content.
FORMATS: tuple[str, ...] = ("extxyz", "wbm", "mlearn", "vasprun", "structure", "json")

#: Order of the 6 Voigt components written by ASE (``atoms.get_stress()``).
ASE_VOIGT_ORDER: str = "xx yy zz yz xz xy"

#: Order of the 6 components of VASP's OUTCAR "in kB" line and of mlearn's ``virial_stress``.
VASP_VOIGT_ORDER: str = "xx yy zz xy yz zx"

#: Closest allowed approach of two atoms in a starting structure, in Å.
MIN_INTERATOMIC_DISTANCE: float = _checks.MIN_INTERATOMIC_DISTANCE

# Aliases users are likely to type for ``fmt``.
_FMT_ALIASES = {
    "xyz": "extxyz",
    "wbm_json": "wbm",
    "mlearn_json": "mlearn",
    "vasp": "vasprun",
    "xml": "vasprun",
    "cif": "structure",
    "poscar": "structure",
}

# The INCAR tags the guard rails (softening.datasets.guards) need: functional, +U, precision, spin,
# MLFF. ENMAX is the cutoff VASP used when the INCAR has no ENCUT (the POTCARs' largest ENMAX, or a
# fraction of it with PREC=Low).
_VASP_PARAMETER_KEYS = (
    "GGA",
    "METAGGA",
    "LHFCALC",
    "IVDW",
    "LUSE_VDW",
    "LDAU",
    "LDAUTYPE",
    "LDAUU",
    "LDAUL",
    "LDAUJ",
    "PREC",
    "ENCUT",
    "ENMAX",
    "ISPIN",
    "IBRION",
    "ML_LMLFF",
    "ML_MODE",
    "ML_ISTART",
    "EDIFF",
    "NELM",
    "ISMEAR",
    "SIGMA",
    "PSTRESS",
)

# Longest excerpt of an underlying error message quoted in an InputError.
_MAX_DETAIL = 200


# ----------------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------------


def read_frames(
    path: str | Path, fmt: str | None = None, registry: _checks.FrameRegistry | None = None
) -> list[Frame]:
    """Read all frames of a dataset or structure file.

    Parameters
    ----------
    path
        File (or a directory holding ``vasprun.xml[.gz]``).
    fmt
        One of :data:`FORMATS` (or an alias such as ``"xyz"``, ``"cif"``); detected from the name and
        content when ``None`` (see :func:`detect_format`).
    registry
        The frames read before (by other files of the same command): a frame repeated inside the
        file or given before is refused. ``None``: a fresh one (repeats inside the file only).

    Returns
    -------
    list of Frame
        At least one frame. Energies in eV, forces in eV/Å, stresses in eV/Å^3 (ASE sign).

    Raises
    ------
    InputError
        Missing, unreadable or malformed file, unknown ``fmt``, a file without frames, or a frame
        given twice (:class:`~softening.datasets.checks.FrameRegistry`).
    """
    path = _existing(path)
    kind = _normalise_fmt(fmt) if fmt is not None else detect_format(path)
    if kind == "extxyz":
        frames = read_extxyz(path)
    elif kind == "vasprun":
        frames = read_vasprun(path)
    elif kind == "wbm":
        frames = read_wbm_json(path)
    elif kind == "mlearn":
        frames = read_mlearn_json(path)
    elif kind == "json":
        frames = _json_frames(_load_json(path), path)
    else:
        frames = [_structure_frame(_read_structure_file(path), path)]
    if not frames:
        raise _error(path, "contains no frames")
    registry = registry if registry is not None else _checks.FrameRegistry()
    for frame in frames:
        registry.add(frame)
    return frames


def detect_format(path: str | Path) -> str:
    """Guess the format of ``path`` from its name (and, for directories, its content).

    Parameters
    ----------
    path
        File or directory.

    Returns
    -------
    str
        ``"extxyz"``, ``"vasprun"``, ``"json"`` (WBM or mlearn, decided when the content is read) or
        ``"structure"`` (anything else: handed to pymatgen, then ASE).

    Raises
    ------
    InputError
        Missing path, or a directory without ``vasprun.xml[.gz]``.
    """
    path = _existing(path)
    if path.is_dir():
        _find_vasprun(path)  # raises when the directory holds none
        return "vasprun"
    name = path.name.lower()
    base = name.removesuffix(".gz")
    if base.endswith((".extxyz", ".xyz")):
        return "extxyz"
    # atomate2 writes e.g. vasprun.xml.relax1.gz, so a "vasprun" prefix counts as much as ".xml".
    if base.endswith(".xml") or name.startswith("vasprun"):
        return "vasprun"
    if base.endswith(".json"):
        return "json"
    return "structure"


def read_structure(path: str | Path, fmt: str | None = None) -> Structure:
    """Read a starting structure (e.g. for MD) and check that it is usable.

    Parameters
    ----------
    path
        CIF, POSCAR, extended XYZ (first frame), pymatgen JSON, a dataset file (first frame), or
        anything else pymatgen's ``Structure.from_file`` or ``ase.io.read`` understands.
    fmt
        As in :func:`read_frames`; detected when ``None``.

    Returns
    -------
    Structure
        The structure (Cartesian coordinates in Å).

    Raises
    ------
    InputError
        Unreadable file, or a structure that fails :func:`check_structure` (no lattice / zero
        volume, partial occupancies, atoms closer than :data:`MIN_INTERATOMIC_DISTANCE`).
    """
    path = _existing(path)
    kind = _normalise_fmt(fmt) if fmt is not None else detect_format(path)
    if kind == "structure":
        structure = _read_structure_file(path)
    elif kind == "extxyz":
        # Only the first frame is needed: don't parse a whole trajectory.
        structure = _extxyz_frames(path, index=0)[0].structure
    else:
        structure = read_frames(path, kind)[0].structure
    check_structure(structure, name=str(path))
    # Results must not depend on the periodic image an atom was given in (float32 models).
    return _checks.wrap_structure(structure)


def check_structure(structure: Structure, name: str = "structure") -> None:
    """Reject structures that no MD or single point should start from.

    Parameters
    ----------
    structure
        The structure to check.
    name
        How to name it in the error message (usually the file path).

    Raises
    ------
    InputError
        No atoms, zero or non-finite cell volume, partial occupancies, or two atoms (or an atom
        and its periodic image) closer than :data:`MIN_INTERATOMIC_DISTANCE` (0.5 Å).
    """
    _checks.check_structure(structure, name)


def vasp_stress_to_ase(stress_kbar: Any) -> np.ndarray:
    """Convert a VASP stress tensor (kbar, positive = compressive) to eV/Å^3 with the ASE sign.

    Parameters
    ----------
    stress_kbar
        3x3 (or 9 components, row-major) stress in kbar as VASP prints it.

    Returns
    -------
    numpy.ndarray
        ``(3, 3)`` float64 stress in eV/Å^3, positive = tensile: ``-0.1 * GPa * stress_kbar``.
    """
    return -KBAR_TO_EV_PER_A3 * _as_3x3(stress_kbar, VASP_VOIGT_ORDER)


def read_extxyz(path: str | Path) -> list[Frame]:
    """Read an extended XYZ file (optionally gzipped).

    Labels are taken from ``REF_energy`` (eV, ``info``), ``REF_forces`` (eV/Å, ``arrays``) and
    ``REF_stress`` (eV/Å^3, ASE sign; 9 components, 3x3, or 6 in ASE Voigt order
    ``xx yy zz yz xz xy``); where a ``REF_`` key is absent, the plain ``energy`` / ``forces`` /
    ``stress`` (which ASE puts on a ``SinglePointCalculator``) are used instead.

    Parameters
    ----------
    path
        The file.

    Returns
    -------
    list of Frame
        ``frame_id`` from the ``frame_id`` info key or the index in the file; ``material_id`` from
        the ``material_id`` or ``mp_id`` info key, else ``None``; other info keys go to ``metadata``.

    Raises
    ------
    InputError
        Unreadable file, frames without a 3D cell, or labels of the wrong shape.
    """
    path = _existing(path)
    frames = _extxyz_frames(path, index=":")
    _check_unique(frames, path)
    return frames


def read_wbm_json(path: str | Path) -> list[Frame]:
    """Read the layout of the WBM high-energy-states JSON file (optionally gzipped).

    ``{material_id: {frame_id: {"structure": pymatgen dict, "vasp_e": eV (total), "vasp_f":
    [[eV/Å]*3]*n, "vasp_s": 3x3 kbar in VASP sign (positive = compressive) or null, "meta": {...}}}}``.

    Parameters
    ----------
    path
        The file.

    Returns
    -------
    list of Frame
        In file order; ``meta`` goes to ``Frame.metadata``; stress converted to eV/Å^3, ASE sign.

    Raises
    ------
    InputError
        Unreadable file, another JSON layout, or malformed entries.
    """
    path = _existing(path)
    data = _load_json(path)
    if not _is_wbm(data):
        raise _error(
            path,
            "not the WBM layout {material_id: {frame_id: {structure, vasp_e, vasp_f, vasp_s}}}",
        )
    return _wbm_frames(data, path)


def read_mlearn_json(path: str | Path, voigt_order: str = VASP_VOIGT_ORDER) -> list[Frame]:
    """Read the mlearn JSON layout (Zuo et al. 2020), optionally gzipped.

    A list of ``{"structure": pymatgen dict, "outputs": {"energy": eV total, "forces": eV/Å,
    "virial_stress": 6 components in kbar}, "group": ..., "description": ...}``.

    ``virial_stress`` has VASP's sign (positive = compressive): the strained "Elastic" frames of
    Si and Cu show positive diagonal stress under compression and negative under tension, the
    shear components have the opposite sign to the shear strain, and ASE's EMT on the Cu frames
    agrees component by component after the sign flip. So it is converted with
    :func:`vasp_stress_to_ase` (``-0.1 * GPa * s``).

    Parameters
    ----------
    path
        The file.
    voigt_order
        Order of the 6 ``virial_stress`` components; the documented (and, for ``Si``, verified)
        order is VASP's ``"xx yy zz xy yz zx"``. The shear frames of the published ``Cu/test.json``
        instead match ``"xx yy zz xy zx yz"`` (the last two swapped); pass that to read it right.

    Returns
    -------
    list of Frame
        ``frame_id`` = index in the file, ``material_id`` ``None`` (the reduced formula is used),
        ``group`` / ``description`` from the entry, other entry keys (``tag``, ...) in ``metadata``.

    Raises
    ------
    InputError
        Unreadable file, another JSON layout, or malformed entries.
    """
    path = _existing(path)
    pairs = _voigt_pairs(voigt_order)  # validate before reading a large file
    data = _load_json(path)
    if not _is_mlearn(data):
        raise _error(path, 'not the mlearn layout [{"structure": ..., "outputs": ...}, ...]')
    return _mlearn_frames(data, path, pairs)


def read_vasprun(path: str | Path) -> list[Frame]:
    """Read every ionic step of a ``vasprun.xml`` (optionally gzipped) as a frame.

    The energy is the free energy TOTEN (``e_fr_energy``, eV), the energy the forces are the
    derivative of; any ``PSTRESS`` * volume term VASP adds to it in vasprun.xml is removed.
    ``e_0_energy`` (sigma -> 0) is not used: it is not force-consistent, and VASP 5 writes a wrong
    value in the ionic step's block (see ``vasprun.lifepo4.xml.gz``: -0.001 eV).
    Stress (kbar, VASP sign) is converted to eV/Å^3, ASE sign; steps without stress get ``None``.

    Nothing is rejected here besides unreadable files: unconverged SCF, MLFF steps, or other
    settings are recorded in ``metadata`` and judged by :func:`softening.datasets.guards.apply_guard_rails`:

    - ``code``: ``"vasp"``;
    - ``electronic_steps``: number of SCF steps of this ionic step;
    - ``nelm``, ``ediff``: the run's NELM (default 60) and EDIFF (eV, default 1e-4);
    - ``scf_last_de``: ``|ΔE|`` (eV) between the last two SCF steps, ``None`` with fewer than two;
    - ``scf_converged``: ``True`` when fewer than NELM SCF steps were needed (VASP stops at NELM
      otherwise), or when at NELM the last energy change is below EDIFF; ``None`` when the step has
      no SCF steps (e.g. predicted by VASP's machine-learned force field);
    - ``mlff``: ``True`` for a step of a machine-learned force-field run (``ML_LMLFF``) without SCF
      steps, i.e. with energy and forces from the force field, not DFT;
    - ``md_step``: in an MLFF run, the index of this step among all MD steps (DFT and MLFF);
    - ``vasp``: run-level :func:`vasp_run_info` (INCAR, key parameters, POTCAR symbols, VASP
      version, run type, ``n_ionic_steps``; in MLFF runs also ``n_md_steps``), JSON-serialisable.

    In an on-the-fly MLFF run, VASP 6 writes the steps it computed with the force field outside
    ``<calculation>`` blocks (structure, forces and energy at the top level, no SCF steps); only the
    steps it computed with DFT are ``<calculation>`` blocks. pymatgen's ``ionic_steps`` holds those,
    so they are the frames here, and ``n_md_steps - n_ionic_steps`` counts the MLFF steps left out.

    Parameters
    ----------
    path
        ``vasprun.xml[.gz]`` or a directory holding one.

    Returns
    -------
    list of Frame
        ``frame_id`` = step index, ``material_id`` ``None``, ``source`` = ``"path@step"``.

    Raises
    ------
    InputError
        Missing, truncated or otherwise unparsable file.
    """
    path = _existing(path)
    if path.is_dir():
        path = _find_vasprun(path)
    from pymatgen.io.vasp import Vasprun
    from pymatgen.io.vasp.outputs import UnconvergedVASPWarning

    try:
        with warnings.catch_warnings():
            # Convergence is recorded per step in metadata and judged by later checks, which
            # report it in this package's terms; pymatgen's multi-line warning would be noise.
            warnings.simplefilter("ignore", UnconvergedVASPWarning)
            run = Vasprun(str(path), parse_dos=False, parse_eigen=False, parse_potcar_file=False)
    except Exception as exc:
        raise _error(path, f"not a readable vasprun.xml ({_detail(exc)})") from exc

    with _wrap(path, "unexpected vasprun content"):
        try:
            run_type = str(run.run_type)
        except Exception:  # run_type raises for unusual functionals; it is informative only
            run_type = None
        md_data = list(getattr(run, "md_data", None) or [])
        run_info = vasp_run_info(
            incar=dict(run.incar),
            parameters=run.parameters or {},
            potcar_symbols=list(run.potcar_symbols or []),
            vasp_version=run.vasp_version,
            run_type=run_type,
            n_ionic_steps=len(run.ionic_steps),
            n_md_steps=len(md_data) if md_data else None,
        )
        pstress = float(run_info["parameters"]["PSTRESS"] or 0.0)
        md_steps = _md_step_indices(run.ionic_steps, md_data)

    frames = []
    for step_index, step in enumerate(run.ionic_steps):
        with _wrap(path, f"ionic step {step_index}"):
            structure = step["structure"]
            energy = step.get("e_fr_energy")
            if energy is not None and pstress:
                # vasprun's e_fr_energy is an enthalpy when PSTRESS is set: remove p*V.
                energy = float(energy) - pstress * KBAR_TO_EV_PER_A3 * structure.volume
            stress = step.get("stress")
            metadata = vasp_step_metadata(step.get("electronic_steps") or [], run_info)
            if md_steps is not None:
                metadata["md_step"] = md_steps[step_index]
            frame = _make_frame(
                path,
                f"ionic step {step_index}",
                structure=structure,
                frame_id=str(step_index),
                energy=energy,
                forces=step.get("forces"),
                stress=vasp_stress_to_ase(stress) if stress is not None else None,
                source=f"{path}@{step_index}",
                metadata={"code": "vasp", **metadata, "vasp": copy.deepcopy(run_info)},
            )
        frames.append(frame)
    return frames


def vasp_run_info(
    incar: dict[str, Any],
    parameters: dict[str, Any],
    potcar_symbols: Sequence[str],
    vasp_version: str | None,
    run_type: str | None,
    n_ionic_steps: int,
    n_md_steps: int | None = None,
) -> dict[str, Any]:
    """Run-level VASP settings, as recorded in ``Frame.metadata["vasp"]`` and checked by the guard rails.

    Shared by :func:`read_vasprun` and the VASP reference maker (which builds it from atomate2's
    task document), so that both are judged by the same rules.

    Parameters
    ----------
    incar
        The INCAR as run (what the user set).
    parameters
        vasprun.xml's ``<parameters>`` (VASP's values, defaults included).
    potcar_symbols
        POTCAR TITELs (e.g. ``"PAW_PBE Fe_pv 06Sep2000"``) or bare symbols, in POSCAR species order.
    vasp_version
        VASP version string.
    run_type
        pymatgen/emmet run type (e.g. ``"GGA+U"``), informative only.
    n_ionic_steps
        Ionic steps with DFT results (``<calculation>`` blocks).
    n_md_steps
        In an MLFF MD run, all MD steps (DFT and MLFF); ``None`` otherwise.

    Returns
    -------
    dict
        ``{"incar", "parameters" (the keys of _VASP_PARAMETER_KEYS; NELM, EDIFF and PSTRESS
        with VASP's defaults 60, 1e-4 eV and 0 kbar), "potcar_symbols", "vasp_version",
        "run_type", "n_ionic_steps"[, "n_md_steps"]}``, JSON-serialisable.
    """
    defaults = {"NELM": 60, "EDIFF": 1e-4, "PSTRESS": 0.0}

    def setting(key: str) -> Any:
        # The INCAR has what the user set; vasprun's <parameters> has VASP's defaults (but
        # truncates some strings, e.g. PREC "Accura"), so the INCAR wins.
        if key in incar:
            return incar[key]
        value = parameters.get(key)
        return defaults.get(key) if value is None else value

    info: dict[str, Any] = {
        "incar": dict(incar),
        "parameters": {key: setting(key) for key in _VASP_PARAMETER_KEYS},
        "potcar_symbols": list(potcar_symbols),
        "vasp_version": vasp_version,
        "run_type": run_type,
        "n_ionic_steps": int(n_ionic_steps),
    }
    if n_md_steps is not None:
        info["n_md_steps"] = int(n_md_steps)
    return _jsonable(info)


def vasp_step_metadata(scf: Sequence[dict[str, Any]], run_info: dict[str, Any]) -> dict[str, Any]:
    """Per-ionic-step convergence record (see :func:`read_vasprun` for the keys).

    Parameters
    ----------
    scf
        The step's electronic (SCF) steps, each a dict with ``e_fr_energy`` (eV).
    run_info
        The run's :func:`vasp_run_info`.

    Returns
    -------
    dict
        ``electronic_steps``, ``nelm``, ``ediff`` (eV), ``scf_last_de`` (eV), ``scf_converged``,
        ``mlff``.
    """
    params = run_info["parameters"]
    nelm = int(params["NELM"])
    ediff = float(params["EDIFF"])
    last_de = _scf_last_de(scf)
    if not scf:
        converged = None
    else:
        # pymatgen's converged_electronic looks only at the last ionic step; VASP stops the SCF
        # at NELM whether or not EDIFF was reached, so fewer steps than NELM means converged.
        converged = len(scf) < nelm or (last_de is not None and last_de < ediff)
    return {
        "electronic_steps": len(scf),
        "nelm": nelm,
        "ediff": ediff,
        "scf_last_de": last_de,
        "scf_converged": converged,
        "mlff": bool(is_mlff_run(run_info) and not scf),
    }


def is_mlff_run(run_info: dict[str, Any]) -> bool:
    """Whether VASP's machine-learned force field was on (``ML_LMLFF``, or ``ML_MODE`` set)."""
    params = run_info.get("parameters", {})
    mode = str(params.get("ML_MODE") or "").strip().lower()
    return bool(params.get("ML_LMLFF")) or mode not in ("", "none")


def _md_step_indices(ionic_steps: Sequence[dict], md_data: Sequence[dict]) -> list[int] | None:
    """For an MLFF run, the MD step index of each ionic (DFT) step; ``None`` otherwise.

    pymatgen's ``md_data`` lists every MD step in file order, DFT steps included with the same
    forces; match them in order by forces.
    """
    if not md_data:
        return None
    indices, j = [], 0
    for step in ionic_steps:
        forces = np.asarray(step.get("forces"), dtype=float)
        while j < len(md_data) and not (
            np.shape(md_data[j].get("forces")) == forces.shape
            and np.allclose(md_data[j].get("forces"), forces, atol=1e-8)
        ):
            j += 1
        if j == len(md_data):
            return None  # not the layout described above; leave md_step out
        indices.append(j)
        j += 1
    return indices


# ----------------------------------------------------------------------------------------------------
# Errors and small helpers
# ----------------------------------------------------------------------------------------------------


def _error(path: str | Path, what: str) -> InputError:
    """Build the one-line error for an unreadable file."""
    return InputError(f"cannot read {str(path)!r}: {what}")


def _detail(exc: BaseException) -> str:
    """One-line, bounded description of an underlying exception."""
    text = " ".join(str(exc).split()) or "no message"
    if len(text) > _MAX_DETAIL:
        text = text[: _MAX_DETAIL - 3] + "..."
    return f"{type(exc).__name__}: {text}"


@contextmanager
def _wrap(path: str | Path, what: str) -> Iterator[None]:
    """Turn any unexpected exception raised while interpreting a file into an InputError."""
    try:
        yield
    except InputError:
        raise
    except Exception as exc:
        raise _error(path, f"{what}: {_detail(exc)}") from exc


def _existing(path: str | Path) -> Path:
    """Return ``path`` as a Path, or raise InputError when it does not exist."""
    p = Path(path).expanduser()
    if not p.exists():
        raise InputError(f"no such file: {str(path)!r}")
    return p


def _normalise_fmt(fmt: str) -> str:
    """Map a user-given format name to one of :data:`FORMATS`."""
    kind = _FMT_ALIASES.get(fmt.strip().lower(), fmt.strip().lower())
    if kind not in FORMATS:
        raise InputError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return kind


def _find_vasprun(directory: Path) -> Path:
    """The vasprun.xml[.gz] inside a calculation directory."""
    for name in ("vasprun.xml", "vasprun.xml.gz"):
        if (directory / name).is_file():
            return directory / name
    candidates = sorted(p for p in directory.glob("vasprun*.xml*") if p.is_file())
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise InputError(f"cannot read {str(directory)!r}: directory has no vasprun.xml(.gz)")
    names = ", ".join(p.name for p in candidates)
    raise InputError(f"cannot read {str(directory)!r}: several vasprun files ({names}); pick one")


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(2) == b"\x1f\x8b"


def _load_json(path: Path) -> Any:
    """Parse a (possibly gzipped) JSON file; gzip is recognised by content, not name."""
    try:
        if _is_gzip(path):
            with gzip.open(path, "rt", encoding="utf-8") as handle:
                return json.load(handle)
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except Exception as exc:
        raise _error(path, f"not valid (gzipped) JSON ({_detail(exc)})") from exc


def _jsonable(obj: Any) -> Any:
    """Recursively convert numpy and other values into plain JSON types."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | np.ndarray):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    return str(obj)


def _check_unique(frames: Sequence[Frame], path: Path) -> None:
    """frame_id must be unique within a material (later steps pair frames by these keys)."""
    seen: set[tuple[str, str]] = set()
    for frame in frames:
        _check_new(frame, seen, path)


def _check_new(frame: Frame, seen: set[tuple[str, str]], path: Path) -> None:
    """Refuse ``frame`` when its (material, frame id) is in ``seen``; else add it (streams too)."""
    key = (frame.material_key, frame.frame_id)
    if key in seen:
        raise _error(path, f"frame id {frame.frame_id!r} occurs twice for {key[0]!r}")
    seen.add(key)


# ----------------------------------------------------------------------------------------------------
# Label conversion
# ----------------------------------------------------------------------------------------------------


def _voigt_pairs(order: str) -> list[tuple[int, int]]:
    """Parse an order like ``"xx yy zz xy yz zx"`` into index pairs, checking it is complete."""
    axes = {"x": 0, "y": 1, "z": 2}
    tokens = order.lower().replace(",", " ").split()
    pairs = []
    for token in tokens:
        if len(token) != 2 or any(c not in axes for c in token):
            raise InputError(f"bad Voigt order {order!r}: {token!r} is not a component like 'xy'")
        pairs.append((axes[token[0]], axes[token[1]]))
    if len(pairs) != 6 or len({tuple(sorted(p)) for p in pairs}) != 6:
        raise InputError(f"bad Voigt order {order!r}: need the 6 distinct components")
    return pairs


def _as_3x3(value: Any, voigt_order: str | Sequence[tuple[int, int]]) -> np.ndarray:
    """A stress given as 3x3, 9 components (row-major) or 6 Voigt components, as a 3x3 array."""
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape == (3, 3):
        return arr.copy()
    if arr.size == 9 and arr.ndim == 1:
        return arr.reshape(3, 3)
    if arr.size == 6 and arr.ndim == 1:
        pairs = _voigt_pairs(voigt_order) if isinstance(voigt_order, str) else voigt_order
        out = np.zeros((3, 3))
        for (i, j), v in zip(pairs, arr, strict=True):
            out[i, j] = out[j, i] = v
        return out
    raise ValueError(f"stress has shape {arr.shape}; expected 3x3, 9 or 6 components")


def _make_frame(
    path: Path,
    where: str,
    *,
    structure: Structure,
    frame_id: str,
    energy: Any = None,
    forces: Any = None,
    stress: Any = None,
    stress_voigt_order: str | Sequence[tuple[int, int]] = ASE_VOIGT_ORDER,
    **kwargs: Any,
) -> Frame:
    """Build a Frame, converting and checking the labels' types and shapes.

    ``stress`` must already be in eV/Å^3 with the ASE sign; 6-component stresses are read in
    ``stress_voigt_order``.
    """
    n_atoms = len(structure)
    flags: list[str] = []
    if energy is not None:
        try:
            energy = float(np.asarray(energy, dtype=np.float64).reshape(()))
        except Exception as exc:
            raise _error(path, f"{where}: energy {energy!r} is not a number") from exc
        if not math.isfinite(energy):
            flags.append("non_finite_labels")
    if forces is not None:
        try:
            forces = np.array(forces, dtype=np.float64)
        except Exception as exc:
            raise _error(path, f"{where}: forces are not numeric ({_detail(exc)})") from exc
        if forces.shape != (n_atoms, 3):
            raise _error(
                path, f"{where}: forces have shape {forces.shape}, expected ({n_atoms}, 3)"
            )
        if not np.isfinite(forces).all():
            flags.append("non_finite_labels")
    if stress is not None:
        try:
            stress = _as_3x3(stress, stress_voigt_order)
        except Exception as exc:
            raise _error(path, f"{where}: bad stress ({_detail(exc)})") from exc
        if not np.isfinite(stress).all():
            flags.append("non_finite_labels")
    frame = Frame(
        structure=_checks.wrap_structure(structure),
        frame_id=frame_id,
        energy=energy,
        forces=forces,
        stress=stress,
        flags=sorted(set(flags)),
        **kwargs,
    )
    # Refused here, before any model runs: no atoms, overlapping atoms, non-finite labels.
    _checks.check_frame(frame, f"{path} {where}")
    return frame


# ----------------------------------------------------------------------------------------------------
# Format-specific internals
# ----------------------------------------------------------------------------------------------------


def _atoms_to_structure(atoms: Any, path: Path, where: str) -> Structure:
    """ASE Atoms -> pymatgen Structure, refusing cells that are not 3D."""
    cell = np.asarray(atoms.cell[:], dtype=np.float64)
    if atoms.cell.rank < 3 or abs(float(np.linalg.det(cell))) < 1e-6:
        raise _error(path, f"{where}: no 3D periodic cell (a molecule, or a 'Lattice' is missing)")
    with _wrap(path, where):
        # Built directly rather than with AseAtomsAdaptor, so that labels do not leak into
        # site properties and the structure is the same whatever the ASE/pymatgen versions.
        structure = Structure(
            Lattice(cell),
            atoms.get_chemical_symbols(),
            atoms.get_positions(),
            coords_are_cartesian=True,
        )
    # A molecule or slab declared open (pbc="F F F") is computed as a periodic crystal.
    _checks.check_periodic(atoms.pbc, cell, structure.frac_coords, f"{path} {where}")
    return structure


def _first_present(*values: Any) -> Any:
    """The first value that is not None."""
    return next((v for v in values if v is not None), None)


# info keys consumed into Frame fields, not copied into metadata
_EXTXYZ_USED_INFO = {"REF_energy", "REF_stress", "energy", "stress", "material_id", "mp_id"}


def _extxyz_frames(path: Path, index: int | str) -> list[Frame]:
    import ase.io

    try:
        images = ase.io.read(str(path), index=index, format="extxyz")
    except Exception as exc:
        raise _error(path, f"not a valid extended XYZ file ({_detail(exc)})") from exc
    if not isinstance(images, list):
        images = [images]
    return [_extxyz_frame(atoms, i, path) for i, atoms in enumerate(images)]


def _extxyz_frame(atoms: Any, i: int, path: Path) -> Frame:
    """One extended-XYZ image (the ``i``-th of ``path``) as a Frame."""
    where = f"frame {i}"
    structure = _atoms_to_structure(atoms, path, where)
    info, arrays = atoms.info, atoms.arrays
    # Recent ASE moves the plain energy/forces/stress keys onto a SinglePointCalculator;
    # older files or readers leave them in info/arrays: look in both.
    results = dict(atoms.calc.results) if atoms.calc is not None else {}
    energy = _first_present(info.get("REF_energy"), results.get("energy"), info.get("energy"))
    forces = _first_present(arrays.get("REF_forces"), results.get("forces"), arrays.get("forces"))
    stress = _first_present(info.get("REF_stress"), results.get("stress"), info.get("stress"))
    material_id = _first_present(info.get("material_id"), info.get("mp_id"))
    frame_id = info.get("frame_id", i)
    metadata = {
        k: _jsonable(v) for k, v in info.items() if k not in _EXTXYZ_USED_INFO and k != "frame_id"
    }
    return _make_frame(
        path,
        where,
        structure=structure,
        frame_id=str(frame_id),
        material_id=None if material_id is None else str(material_id),
        energy=energy,
        forces=forces,
        stress=stress,
        stress_voigt_order=ASE_VOIGT_ORDER,
        source=f"{path}@{i}",
        metadata=metadata,
    )


def _is_wbm(data: Any) -> bool:
    """Top level a dict of dicts of frame records with ``vasp_f``."""
    if not isinstance(data, dict) or not data:
        return False
    first = next(iter(data.values()))
    if not isinstance(first, dict) or not first:
        return False
    record = next(iter(first.values()))
    return isinstance(record, dict) and "vasp_f" in record


def _is_mlearn(data: Any) -> bool:
    """A list of ``{"structure", "outputs"}`` records."""
    return (
        isinstance(data, list)
        and bool(data)
        and isinstance(data[0], dict)
        and "structure" in data[0]
        and "outputs" in data[0]
    )


def _is_structure_dict(data: Any) -> bool:
    return isinstance(data, dict) and "lattice" in data and "sites" in data


def _json_frames(data: Any, path: Path) -> list[Frame]:
    """Dispatch a parsed JSON document on its layout."""
    if isinstance(data, list | dict) and not data:
        raise _error(path, "contains no frames (empty JSON document)")
    if _is_wbm(data):
        return _wbm_frames(data, path)
    if _is_mlearn(data):
        return _mlearn_frames(data, path, _voigt_pairs(VASP_VOIGT_ORDER))
    if _is_structure_dict(data):
        with _wrap(path, "not a valid pymatgen structure"):
            structure = Structure.from_dict(data)
        return [_structure_frame(structure, path)]
    raise _error(
        path,
        "unknown JSON layout (expected WBM {material_id: {frame_id: {...vasp_f...}}}, "
        "mlearn [{structure, outputs}], or a pymatgen Structure)",
    )


def _wbm_frames(data: dict[str, Any], path: Path, start: int = 0) -> list[Frame]:
    frames = []
    index = start  # position in the file, also when a stream hands materials over one by one
    for material_id, records in data.items():
        if not isinstance(records, dict):
            raise _error(path, f"material {material_id!r}: expected a dict of frames")
        for frame_id, record in records.items():
            where = f"entry {material_id}/{frame_id}"
            with _wrap(path, where):
                structure = Structure.from_dict(record["structure"])
                vasp_s = record.get("vasp_s")
                frame = _make_frame(
                    path,
                    where,
                    structure=structure,
                    frame_id=str(frame_id),
                    material_id=str(material_id),
                    energy=record.get("vasp_e"),
                    forces=record.get("vasp_f"),
                    stress=vasp_stress_to_ase(vasp_s) if vasp_s is not None else None,
                    source=f"{path}@{index}",
                    metadata=dict(record.get("meta") or {}),
                )
            frames.append(frame)
            index += 1
    return frames


def _mlearn_frames(
    data: list[Any], path: Path, pairs: Sequence[tuple[int, int]], start: int = 0
) -> list[Frame]:
    frames = []
    for index, record in enumerate(data, start=start):
        where = f"entry {index}"
        with _wrap(path, where):
            structure = Structure.from_dict(record["structure"])
            outputs = record["outputs"]
            virial = outputs.get("virial_stress")
            stress = None
            if virial is not None:
                stress = vasp_stress_to_ase(_as_3x3(virial, pairs))
            group, description = record.get("group"), record.get("description")
            frame = _make_frame(
                path,
                where,
                structure=structure,
                frame_id=str(index),
                material_id=None,
                energy=outputs.get("energy"),
                forces=outputs.get("forces"),
                stress=stress,
                group=None if group is None else str(group),
                description=None if description is None else str(description),
                source=f"{path}@{index}",
                metadata={
                    k: _jsonable(v)
                    for k, v in record.items()
                    if k not in ("structure", "outputs", "group", "description")
                },
            )
        frames.append(frame)
    return frames


def _scf_last_de(scf: Sequence[dict[str, Any]]) -> float | None:
    """|ΔE| (eV) between the last two SCF steps, from their free energies."""
    energies = [s.get("e_fr_energy") for s in scf[-2:]]
    if len(energies) < 2 or any(e is None for e in energies):
        return None
    return abs(float(energies[1]) - float(energies[0]))


def _read_structure_file(path: Path) -> Structure:
    """A plain structure file: pymatgen first (CIF, POSCAR, ...), then ASE."""
    if path.is_dir():
        raise _error(path, "is a directory without vasprun.xml")
    if path.suffix.lower() in (".cif", ".mcif"):
        _checks.check_cif_sites(path)  # pymatgen would merge duplicated sites silently
    problems = []
    try:
        return Structure.from_file(str(path))
    except Exception as exc:
        problems.append(f"pymatgen: {_detail(exc)}")
    import ase.io

    try:
        atoms = ase.io.read(str(path), index=0)
    except Exception as exc:
        problems.append(f"ase: {_detail(exc)}")
        raise _error(path, f"not a structure or dataset file ({'; '.join(problems)})") from exc
    return _atoms_to_structure(atoms, path, "structure")


def _structure_frame(structure: Structure, path: Path) -> Frame:
    """One unlabelled frame for a plain structure file."""
    frame = Frame(structure=_checks.wrap_structure(structure), frame_id="0", source=str(path))
    _checks.check_frame(frame, str(path))
    return frame
