"""The VASP run metadata the guard rails judge: run-level settings (INCAR, key parameters, POTCAR
symbols, version) and each ionic step's SCF convergence.

One home for both the vasprun reader (:func:`~softening.datasets.formats.vasprun.read_vasprun`)
and the VASP reference maker (which builds them from atomate2's task document), so that both are
judged by the same rules (:mod:`softening.datasets.guards`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from softening.datasets.formats.files import jsonable

__all__ = ["is_mlff_run", "vasp_run_info", "vasp_step_metadata"]

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

    Shared by :func:`~softening.datasets.formats.vasprun.read_vasprun` and the VASP reference
    maker (which builds it from atomate2's task document), so that both are judged by the same
    rules.

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
    return jsonable(info)


def vasp_step_metadata(scf: Sequence[dict[str, Any]], run_info: dict[str, Any]) -> dict[str, Any]:
    """Per-ionic-step convergence record (see
    :func:`~softening.datasets.formats.vasprun.read_vasprun` for the keys).

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


def _scf_last_de(scf: Sequence[dict[str, Any]]) -> float | None:
    """|ΔE| (eV) between the last two SCF steps, from their free energies."""
    energies = [s.get("e_fr_energy") for s in scf[-2:]]
    if len(energies) < 2 or any(e is None for e in energies):
        return None
    return abs(float(energies[1]) - float(energies[0]))
