"""Reference single points with VASP, through atomate2's static maker and custodian.

One frame -> one :class:`VaspReferenceMaker` job. The job looks its result up by content key (so a
rerun of the flow reuses it) and otherwise replaces itself with two jobs:

1. atomate2's :class:`~atomate2.vasp.jobs.core.StaticMaker` job: writes the inputs of the chosen
   input set, runs VASP through custodian with atomate2's default VASP handlers
   (:func:`atomate2.vasp.run.run_vasp`), and parses the folder into an emmet ``TaskDoc``;
2. :func:`vasp_frame_result`: turns the task document into the same per-frame
   :class:`~softening.schemas.FrameResult` the embedded reference produces, after the
   guard rails of :mod:`softening.datasets.guards` (the rules imported vasprun files obey too).

The output of the replaced job is that ``FrameResult``, so the comparison job takes VASP and
embedded references alike; a frame whose VASP run fails leaves a missing reference (the comparison
tolerates it) and the next run of the same flow computes only that frame.

Settings (``input_set="mp"``, the paper's protocol): pymatgen's ``MPRelaxSet`` (PBE, or PBE+U with
MP's U values for oxides and fluorides, MP's POTCARs and initial magnetic moments, ENCUT 520 eV,
PREC=Accurate, k-points of reciprocal density 64) made a single point: NSW=0, IBRION=-1,
EDIFF=1e-5 eV, Gaussian smearing ISMEAR=0 with SIGMA=0.05 eV, LREAL=False, no WAVECAR/CHGCAR.
``input_set="matpes"`` uses pymatgen's ``MatPESStaticSet`` (PBE, 680 eV, KSPACING 0.22, no +U).
``user_incar_settings`` override INCAR keys of either (``None`` removes a key).

Why not MPRelaxSet's tetrahedron smearing (ISMEAR=-5): the frames are hot MD snapshots whose
metallicity is not known, tetrahedron forces are not variationally consistent for metals, and it
needs at least 4 k-points; Gaussian smearing of 0.05 eV is right for both metals and insulators
(MatPES uses it for every structure).

Every VASP job needs a folder of its own: run flows with ``run_locally(flow, create_folders=True)``
(as for any atomate2 flow); FireWorks and jobflow-remote do this anyway.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from jobflow import Maker
from pymatgen.core import Structure

from softening.datasets.formats.building import vasp_stress_to_ase
from softening.datasets.guards import judge_vasp_run
from softening.datasets.vasp_metadata import vasp_run_info, vasp_step_metadata
from softening.errors import CalculationError, InputError, SofteningError, one_line
from softening.makers.job import softening_job
from softening.makers.reuse import stored_frame_result
from softening.schemas import CodeInfo, Flag, FrameResult, FrameSpec, content_key

logger = logging.getLogger(__name__)

__all__ = ["INPUT_SETS", "MP_STATIC_INCAR", "VaspReferenceMaker", "vasp_frame_result"]

#: Input sets :class:`VaspReferenceMaker` knows.
INPUT_SETS: tuple[str, ...] = ("mp", "matpes")

#: What turns MPRelaxSet into the reference single point (see the module docstring).
MP_STATIC_INCAR: dict[str, Any] = {
    "NSW": 0,
    "IBRION": -1,
    "ISIF": 2,
    "EDIFF": 1e-5,
    "ISMEAR": 0,
    "SIGMA": 0.05,
    "LREAL": False,
    "LWAVE": False,
    "LCHARG": False,
}

# INCAR keys recorded in the result's CodeInfo (the whole INCAR is in the content key).
_KEY_INCAR = (
    "GGA",
    "METAGGA",
    "ENCUT",
    "PREC",
    "EDIFF",
    "NELM",
    "ALGO",
    "ISMEAR",
    "SIGMA",
    "ISPIN",
    "LDAU",
    "LASPH",
    "LREAL",
    "KSPACING",
)

# Files whose presence in a job's folder means another VASP job ran there.
_VASP_FILES = ("INCAR", "vasprun.xml", "vasprun.xml.gz", "OUTCAR", "OUTCAR.gz")


@dataclass
class VaspReferenceMaker(Maker):
    """A VASP reference single point of one frame, via atomate2's ``StaticMaker`` and custodian.

    Attributes
    ----------
    name
        Job name (the atomate2 job is named ``"<name> static <material> <frame>"``).
    input_set
        ``mp`` (MPRelaxSet made static; the paper's protocol) or ``matpes`` (MatPESStaticSet).
    user_incar_settings
        INCAR overrides (``{"ENCUT": 600}``; ``None`` as value removes a key; ``LDAUU`` may be
        given per element, ``{"LDAUU": {"Fe": 5.3}}``, as pymatgen allows).
    user_kpoints_settings
        k-point overrides, e.g. ``{"reciprocal_density": 100}``.
    user_potcar_settings
        POTCAR overrides, e.g. ``{"Li": "Li"}`` (flagged by the guard rails when not MP's).
    vasp_cmd
        Command that runs VASP (e.g. ``"srun vasp_std"``); default ``atomate2.SETTINGS.VASP_CMD``
        (``ATOMATE2_VASP_CMD`` or ``VASP_CMD`` in ``~/.atomate2.yaml``), read when the job runs.
    vasp_gamma_cmd
        Command of the Gamma-only build, used by custodian for 1x1x1 Gamma meshes; default
        ``atomate2.SETTINGS.VASP_GAMMA_CMD``.
    run_vasp_kwargs
        Passed to :func:`atomate2.vasp.run.run_vasp` (custodian handlers, ``max_errors``,
        ``custodian_kwargs``, ...).
    potcar_spec
        Write ``POTCAR.spec`` (symbols only) instead of ``POTCAR``: for input checks without
        POTCARs; VASP itself cannot run so.
    strict
        Refuse (fail) a frame whose run is flagged by the guard rails instead of flagging it.
    """

    name: str = "vasp reference"
    input_set: str = "mp"
    user_incar_settings: dict[str, Any] = field(default_factory=dict)
    user_kpoints_settings: dict[str, Any] = field(default_factory=dict)
    user_potcar_settings: dict[str, str] = field(default_factory=dict)
    vasp_cmd: str | None = None
    vasp_gamma_cmd: str | None = None
    run_vasp_kwargs: dict[str, Any] = field(default_factory=dict)
    potcar_spec: bool = False
    strict: bool = False

    def __post_init__(self) -> None:
        if self.input_set not in INPUT_SETS:
            raise InputError(
                f"unknown VASP input set {self.input_set!r}; use one of {', '.join(INPUT_SETS)}"
            )

    # ---- inputs ---------------------------------------------------------------------------------

    def input_set_generator(self):
        """A fresh pymatgen input set (atomate2 accepts it as ``input_set_generator``)."""
        from pymatgen.io.vasp.sets import MatPESStaticSet, MPRelaxSet

        kwargs = {
            "user_kpoints_settings": dict(self.user_kpoints_settings),
            "user_potcar_settings": dict(self.user_potcar_settings),
        }
        if self.input_set == "mp":
            incar = {**MP_STATIC_INCAR, **self.user_incar_settings}
            return MPRelaxSet(user_incar_settings=incar, **kwargs)
        return MatPESStaticSet(user_incar_settings=dict(self.user_incar_settings), **kwargs)

    def get_input_set(self, structure: Structure, potcar_spec: bool = True):
        """The ``VaspInput`` (INCAR, KPOINTS, POSCAR, POTCAR or POTCAR.spec) for ``structure``.

        atomate2's global ``VASP_INCAR_UPDATES`` are applied, as atomate2 does when writing.
        """
        from atomate2 import SETTINGS

        vis = self.input_set_generator().get_input_set(structure, potcar_spec=potcar_spec)
        vis["INCAR"].update(SETTINGS.VASP_INCAR_UPDATES)
        return vis

    def code_settings(self, structure: Structure) -> dict[str, Any]:
        """Everything that determines the result: the content key's settings.

        The INCAR, KPOINTS and POTCAR symbols as they would be written for ``structure``, so a
        change in pymatgen's MP settings or in the overrides gives a new key.
        """
        vis = self.get_input_set(structure, potcar_spec=True)
        kpoints = vis.get("KPOINTS")
        return {
            "input_set": self.input_set,
            "incar": {k: vis["INCAR"][k] for k in sorted(vis["INCAR"])},
            "kpoints": str(kpoints) if kpoints is not None else None,
            "potcar": str(vis["POTCAR.spec"]).split(),
            "potcar_functional": self.input_set_generator().potcar_functional,
        }

    def write_inputs(self, structure: Structure, directory: str | Path = ".") -> Path:
        """Write the VASP inputs of ``structure`` into ``directory`` (nothing is run).

        Written by atomate2's :func:`~atomate2.vasp.files.write_vasp_input_set`, as the job does;
        ``POTCAR.spec`` instead of ``POTCAR`` when :attr:`potcar_spec`.
        """
        from contextlib import chdir

        from atomate2.vasp.files import write_vasp_input_set

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with chdir(directory):
            try:
                write_vasp_input_set(
                    structure, self.input_set_generator(), potcar_spec=self.potcar_spec
                )
            except (OSError, ValueError) as exc:  # pymatgen's missing-POTCAR errors
                first = one_line(exc, "first")
                raise SofteningError(
                    f"cannot write the POTCAR: {first}; set PMG_VASP_PSP_DIR, or use potcar_spec"
                ) from exc
        return directory

    def static_maker(self):
        """atomate2's ``StaticMaker`` with this maker's input set and VASP command."""
        from atomate2 import SETTINGS
        from atomate2.vasp.jobs.core import StaticMaker

        run_kwargs = {
            "vasp_cmd": self.vasp_cmd or SETTINGS.VASP_CMD,
            "vasp_gamma_cmd": self.vasp_gamma_cmd or SETTINGS.VASP_GAMMA_CMD,
            **self.run_vasp_kwargs,
        }
        return StaticMaker(
            name=f"{self.name} static",
            input_set_generator=self.input_set_generator(),
            write_input_set_kwargs={"potcar_spec": self.potcar_spec},
            run_vasp_kwargs=run_kwargs,
        )

    # ---- environment ---------------------------------------------------------------------------

    def check_environment(self, structures: Iterable[Structure] = ()) -> None:
        """Fail early, with one line, when VASP or the POTCARs ``structures`` need are missing.

        Call it where the jobs will run (the CLI does before running anything); the job calls it
        again before starting VASP.

        Raises
        ------
        SofteningError
            The VASP command's executable is not found, ``PMG_VASP_PSP_DIR`` is unset or not a
            folder, or it lacks a POTCAR of the input set.
        """
        from atomate2 import SETTINGS

        cmd = os.path.expandvars(self.vasp_cmd or SETTINGS.VASP_CMD)
        try:
            argv = shlex.split(cmd)
        except ValueError as exc:
            raise SofteningError(f"cannot parse the VASP command {cmd!r}: {exc}") from exc
        # The launcher (srun, mpirun, ...) and the VASP binary itself must both exist.
        exes = argv[:1] + [a for a in argv[1:] if "vasp" in Path(a).name.lower()]
        missing = [e for e in exes if shutil.which(e) is None]
        if not argv or missing:
            raise SofteningError(
                f"VASP not found: {missing[0] if missing else cmd!r} of the VASP command {cmd!r} "
                "is not an executable; set ATOMATE2_VASP_CMD (or VASP_CMD in ~/.atomate2.yaml) "
                "to how VASP runs here, e.g. 'srun vasp_std'"
            )
        if self.potcar_spec:
            return
        from pymatgen.core import SETTINGS as PMG_SETTINGS
        from pymatgen.io.vasp.inputs import PotcarSingle

        psp = PMG_SETTINGS.get("PMG_VASP_PSP_DIR")
        if not psp or not Path(psp).expanduser().is_dir():
            raise SofteningError(
                "POTCARs not found: PMG_VASP_PSP_DIR is "
                + (f"{psp!r}, not a folder" if psp else "not set")
                + "; point it (environment, or ~/.config/.pmgrc.yaml) at the folder holding "
                "POT_GGA_PAW_PBE/ (see `pmg config`)"
            )
        functional = self.input_set_generator().potcar_functional
        for structure in structures:
            symbols = str(self.get_input_set(structure, potcar_spec=True)["POTCAR.spec"]).split()
            for symbol in symbols:
                try:
                    PotcarSingle.from_symbol_and_functional(symbol, functional)
                except Exception as exc:
                    raise SofteningError(
                        f"POTCAR {symbol} ({functional}) not found under PMG_VASP_PSP_DIR={psp}"
                    ) from exc

    # ---- the job --------------------------------------------------------------------------------

    @softening_job(FrameResult, store=True, replaces=True)
    def make(self, frame: FrameSpec):
        """Label ``frame`` with VASP (or reuse a stored result with the same content key).

        Returns the stored :class:`FrameResult`, or a ``Response`` that replaces this job with the
        atomate2 static job and :func:`vasp_frame_result`, whose ``FrameResult`` becomes this
        job's output.
        """
        from jobflow import Flow, Response

        structure = frame.structure
        settings = self.code_settings(structure)
        key = content_key(structure, "vasp", settings)
        cached = stored_frame_result(key, frame)
        if cached is not None:
            if self.strict and cached.get("flags"):
                # strict is not part of the key: a flagged result stored earlier is refused now.
                raise CalculationError(
                    f"VASP reference of frame {frame.material_id}/{frame.frame_id} refused "
                    "(--strict): " + "; ".join(str(Flag.model_validate(f)) for f in cached["flags"])
                )
            return FrameResult.model_validate(cached)
        _check_own_folder(Path.cwd())
        self.check_environment([structure])
        static = self.static_maker().make(structure)
        static.name = f"{self.name} static {frame.material_id} {frame.frame_id}"
        result = vasp_frame_result(static.output, frame, key, self.input_set, self.strict)
        result.name = f"{self.name} result {frame.material_id} {frame.frame_id}"
        return Response(replace=Flow([static, result], output=result.output))


def _check_own_folder(cwd: Path) -> None:
    """atomate2 writes VASP files into the current folder: it must not hold another job's."""
    found = [name for name in _VASP_FILES if (cwd / name).exists()]
    if found:
        raise SofteningError(
            f"the job folder {str(cwd)!r} already holds VASP files ({', '.join(found)}): each VASP "
            "job needs its own folder; use run_locally(flow, create_folders=True)"
        )


# ------------------------------------------------------------------------------------------------
# Task document -> FrameResult
# ------------------------------------------------------------------------------------------------


def _get(obj: Any, key: str, default: Any = None) -> Any:
    """Attribute or item ``key`` of a pydantic model or its dict form."""
    if obj is None:
        return default
    if isinstance(obj, dict):
        return obj.get(key, default)
    return getattr(obj, key, default)


def _as_dict(obj: Any) -> dict[str, Any]:
    if isinstance(obj, dict):
        return obj
    if hasattr(obj, "model_dump"):
        return obj.model_dump()
    return dict(obj)


def _structure(obj: Any) -> Structure:
    return obj if isinstance(obj, Structure) else Structure.from_dict(obj)


def frame_order(
    frame_structure: Structure, vasp_structure: Structure, tol: float = 1e-3
) -> list[int]:
    """Index in ``vasp_structure`` of each site of ``frame_structure``.

    The input sets sort sites by electronegativity before writing the POSCAR, so VASP's forces
    come in another order than the frame's; sites are matched by species and periodic distance
    (Å, at most ``tol``).
    """
    if len(frame_structure) != len(vasp_structure):
        raise CalculationError(
            f"VASP structure has {len(vasp_structure)} sites, the frame {len(frame_structure)}"
        )
    distances = frame_structure.lattice.get_all_distances(
        frame_structure.frac_coords, vasp_structure.frac_coords
    )
    species_a = [s.species_string for s in frame_structure]
    species_b = np.array([s.species_string for s in vasp_structure])
    order = []
    for i, sp in enumerate(species_a):
        row = np.where(species_b == sp, distances[i], np.inf)
        j = int(np.argmin(row))
        if row[j] > tol:
            raise CalculationError(
                f"site {i} ({sp}) of the frame has no VASP site within {tol} Å "
                f"(closest {row[j]:.3g} Å): the input set changed the structure"
            )
        order.append(j)
    if len(set(order)) != len(order):
        raise CalculationError("frame sites match VASP sites ambiguously (overlapping atoms?)")
    return order


def _functional(run_info: dict[str, Any]) -> str:
    params = run_info["parameters"]
    gga = str(params.get("GGA") or "--").strip().upper()
    name = {"--": "PBE", "PE": "PBE", "PS": "PBEsol"}.get(gga, f"GGA={gga}")
    if params.get("METAGGA") not in (None, "--", "None"):
        name = str(params["METAGGA"])
    if params.get("LDAU") and any(abs(float(u)) > 1e-8 for u in params.get("LDAUU") or []):
        name += "+U"
    return name


@softening_job(FrameResult)
def vasp_frame_result(
    task_doc: Any, frame: FrameSpec, key: str, input_set: str = "mp", strict: bool = False
) -> FrameResult:
    """The :class:`FrameResult` of a VASP static, from atomate2's task document.

    Energy: the free energy TOTEN (``e_fr_energy``, eV), the one the forces are derivatives of;
    forces in eV/Å in the frame's site order; stress converted from VASP's kbar (positive =
    compressive) to eV/Å^3 with the ASE sign. The guard rails judge the run as they judge imported
    vasprun files: an unconverged SCF fails the frame; flagged settings are recorded in
    ``flags`` (or fail the frame when ``strict``).

    Parameters
    ----------
    task_doc
        emmet ``TaskDoc`` (or its dict) of the static.
    frame
        The frame that was computed.
    key
        Content key computed before the run (structure + input settings).
    input_set
        Name of the input set (recorded).
    strict
        Refuse flagged settings.

    Returns
    -------
    FrameResult
        With ``code = CodeInfo(name="vasp", version=VASP version, settings={...})``.

    Raises
    ------
    CalculationError
        No converged SCF, settings refused with ``strict``, or sites that cannot be matched.
    """
    calcs = _get(task_doc, "calcs_reversed") or []
    if not calcs:
        raise CalculationError("the VASP task document has no calculation")
    calc = calcs[0]
    inp, out = _get(calc, "input"), _get(calc, "output")
    dir_name = str(_get(task_doc, "dir_name") or _get(calc, "dir_name") or "")
    spec = _get(inp, "potcar_spec") or []
    titels = [str(_get(p, "titel")) for p in spec if _get(p, "titel")]
    potcar_symbols = titels or [str(s) for s in (_get(inp, "potcar") or [])]
    steps = list(_get(out, "ionic_steps") or [])
    run_info = vasp_run_info(
        incar=dict(_get(inp, "incar") or {}),
        parameters=dict(_get(inp, "parameters") or {}),
        potcar_symbols=potcar_symbols,
        vasp_version=_get(calc, "vasp_version"),
        run_type=str(_get(task_doc, "calc_type") or "") or None,
        n_ionic_steps=len(steps),
    )
    metas = [
        vasp_step_metadata([_as_dict(e) for e in (_get(s, "electronic_steps") or [])], run_info)
        for s in steps
    ]
    elements = {el.symbol for el in frame.structure.composition}
    where = f"VASP reference of frame {frame.material_id}/{frame.frame_id} ({dir_name})"
    keep, report = judge_vasp_run(run_info, metas, elements, dir_name, strict=strict)
    if report.refused or not keep or not keep[-1]:
        raise CalculationError(f"{where} refused: {report.refused or 'last step not converged'}")
    step = steps[-1]
    order = frame_order(frame.structure, _structure(_get(step, "structure")))
    forces = np.asarray(_get(step, "forces"), dtype=float)[order]
    raw_stress = _get(step, "stress")
    stress = vasp_stress_to_ase(raw_stress) if raw_stress is not None else None
    energy = float(_get(step, "e_fr_energy"))
    if not (np.isfinite(energy) and np.all(np.isfinite(forces))):
        raise CalculationError(f"{where} gave non-finite results")
    incar = run_info["incar"]
    corrections = []
    for doc in _get(task_doc, "custodian") or []:
        for corr in _get(doc, "corrections") or []:
            corrections.append(
                {
                    "handler": _handler_name(corr.get("handler")),
                    "errors": corr.get("errors"),
                    "actions": corr.get("actions"),
                }
            )
    settings = {
        "input_set": input_set,
        "functional": _functional(run_info),
        "incar": {k: incar[k] for k in _KEY_INCAR if k in incar},
        "hubbard_u": _applied_u(run_info),
        "potcar_symbols": [p.split()[1] if len(p.split()) > 1 else p for p in potcar_symbols],
        "kpoints": _kpoint_mesh(_get(inp, "kpoints")),
        "calc_type": run_info["run_type"],
        "scf_steps": metas[-1]["electronic_steps"],
        "custodian_corrections": corrections,
        "dir_name": dir_name,
    }
    return FrameResult(
        frame_id=frame.frame_id,
        material_id=frame.material_id,
        formula=frame.formula,
        structure=frame.structure,
        energy=energy,
        forces=forces.tolist(),
        stress=stress.tolist() if stress is not None else None,
        code=CodeInfo(name="vasp", version=run_info["vasp_version"], settings=settings),
        converged=True,
        flags=list(report.flags),
        content_key=key,
        wall_time=_run_time(task_doc),
    )


def _applied_u(run_info: dict[str, Any]) -> dict[str, float]:
    """U per element actually applied (eV)."""
    params = run_info["parameters"]
    if not params.get("LDAU"):
        return {}
    out: dict[str, float] = {}
    for symbol, u in zip(run_info["potcar_symbols"], params.get("LDAUU") or [], strict=False):
        name = symbol.split()[1] if len(symbol.split()) > 1 else symbol
        if abs(float(u)) > 1e-8:
            out[name.split("_")[0]] = float(u)
    return out


def _handler_name(handler: Any) -> str | None:
    """Class name of a custodian handler given as an object, its MSON dict, or its repr."""
    if handler is None:
        return None
    if isinstance(handler, dict):
        return handler.get("@class")
    if not isinstance(handler, str):
        return type(handler).__name__
    match = re.search(r"\.(\w+) object at", handler)
    return match.group(1) if match else handler


def _kpoint_mesh(kpoints: Any) -> list[int] | None:
    """The k-point mesh (subdivisions) of a pymatgen ``Kpoints`` or its dict; ``None`` for lists."""
    kpts = _get(kpoints, "kpts")
    if not kpts or len(kpts) != 1 or len(kpts[0]) != 3:
        return None
    return [int(n) for n in kpts[0]]


def _run_time(task_doc: Any) -> float | None:
    """Elapsed time of the VASP runs (custodian reruns included), s."""
    stats = _get(_get(task_doc, "run_stats") or {}, "overall")
    elapsed = _get(stats, "elapsed_time")
    return float(elapsed) if elapsed is not None else None
