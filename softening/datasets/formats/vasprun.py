"""``vasprun.xml`` (optionally gzipped, or a calculation directory holding one): one frame per
ionic step, with the run's metadata for the guard rails. Read whole (pymatgen parses a run at once;
one run is one calculation's size), so streaming it is reading it."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from softening.datasets.formats.building import KBAR_TO_EV_PER_A3, make_frame, vasp_stress_to_ase
from softening.datasets.formats.files import detail, existing_path, file_error, wrap_errors
from softening.datasets.frames import Frame
from softening.datasets.vasp_metadata import vasp_run_info, vasp_step_metadata
from softening.errors import InputError

__all__ = ["find_vasprun", "read_vasprun"]


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
    - ``vasp``: run-level :func:`~softening.datasets.vasp_metadata.vasp_run_info` (INCAR, key
      parameters, POTCAR symbols, VASP version, run type, ``n_ionic_steps``; in MLFF runs also
      ``n_md_steps``), JSON-serialisable.

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
    path = existing_path(path)
    if path.is_dir():
        path = find_vasprun(path)
    from pymatgen.io.vasp import Vasprun
    from pymatgen.io.vasp.outputs import UnconvergedVASPWarning

    try:
        with warnings.catch_warnings():
            # Convergence is recorded per step in metadata and judged by later checks, which
            # report it in this package's terms; pymatgen's multi-line warning would be noise.
            warnings.simplefilter("ignore", UnconvergedVASPWarning)
            run = Vasprun(str(path), parse_dos=False, parse_eigen=False, parse_potcar_file=False)
    except Exception as exc:
        raise file_error(path, f"not a readable vasprun.xml ({detail(exc)})") from exc

    with wrap_errors(path, "unexpected vasprun content"):
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
        with wrap_errors(path, f"ionic step {step_index}"):
            structure = step["structure"]
            energy = step.get("e_fr_energy")
            if energy is not None and pstress:
                # vasprun's e_fr_energy is an enthalpy when PSTRESS is set: remove p*V.
                energy = float(energy) - pstress * KBAR_TO_EV_PER_A3 * structure.volume
            stress = step.get("stress")
            metadata = vasp_step_metadata(step.get("electronic_steps") or [], run_info)
            if md_steps is not None:
                metadata["md_step"] = md_steps[step_index]
            frame = make_frame(
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


def find_vasprun(directory: Path) -> Path:
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
