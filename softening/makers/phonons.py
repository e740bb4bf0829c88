"""Phonons by finite displacements: a reference and uMLIPs on the same displaced supercells.

The pieces, as the softening flow has them for MD frames:

- :func:`~softening.makers.phonon_setup.phonon_setup` fixes the supercell and phonopy's symmetry-reduced displacements of a structure
  (:class:`~softening.schemas.PhononSetup`); :func:`~softening.makers.phonon_setup.phonon_frames` turns it into frames (the
  undisplaced supercell ``perfect`` and ``disp-001``...), which the reference makers
  (:class:`~softening.makers.reference.ReferenceStaticMaker`,
  :class:`~softening.makers.vasp.VaspReferenceMaker`: one job per frame, reused by content key) and
  :class:`~softening.makers.umlip.UMLIPStaticMaker` (one batched job per model) label;
- :func:`phonon_compare_job` builds both sides' force constants and compares them
  (:class:`~softening.schemas.PhononDoc`, arrays in the data store);
- :class:`PhononMaker` wires them for one structure.

Existing DFT data (a phonopy folder) enters as reference :class:`FrameResult` s of the displaced
supercells (:func:`~softening.makers.phonon_setup.reference_frames`); its undisplaced supercell has no DFT forces, so the residual
is subtracted on the model side only.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
from jobflow import Flow, Maker, job
from pymatgen.core import Structure

from softening.analysis.phonons import (
    DEFAULT_IMAGINARY_TOL,
    DEFAULT_MESH,
    band_path,
    compare_phonons,
    force_consistency,
    harmonic_phonons,
)
from softening.errors import CalculationError, InputError
from softening.makers.job import softening_job
from softening.makers.phonon_setup import (
    PERFECT,
    displacement_id,
    phonon_frames,
    phonon_setup,
    phonopy_from_setup,
    supercell_matrix_for,
)
from softening.makers.properties import PropertySpec, register_property
from softening.makers.reference import ReferenceStaticMaker
from softening.makers.umlip import UMLIPStaticMaker
from softening.makers.vasp import VaspReferenceMaker
from softening.schemas import (
    FrameResult,
    FrameSpec,
    PhononArrays,
    PhononDoc,
    PhononSetup,
    PhononValues,
    UMLIPResults,
)

if TYPE_CHECKING:
    pass

logger = logging.getLogger(__name__)


def compare_phonon_results(
    setup: PhononSetup,
    references: Sequence[FrameResult | dict | None],
    umlip: UMLIPResults | dict,
    material_id: str,
    mesh: Sequence[int] = DEFAULT_MESH,
    temperature: float = 300.0,
    imaginary_tol: float = DEFAULT_IMAGINARY_TOL,
    sources: Sequence[str] = (),
    parent_uuids: Sequence[str] = (),
    setup_ml: PhononSetup | dict | None = None,
) -> PhononDoc:
    """Phonons of the reference and of the model on the same displacements, compared.

    ``references`` holds the reference results of ``disp-NNN`` frames (and of ``perfect`` when it
    was computed: its forces are then subtracted on the reference side too); ``None`` for failed
    jobs. The model's results of ``perfect`` and ``disp-NNN`` are taken from ``umlip``.
    ``setup_ml``: the model's own setup when it relaxed the structure itself (same supercell
    matrix, same displaced atoms and directions; the lattice and positions its own).
    ``sources``: the files the reference forces were read from (existing DFT data, e.g. a phonopy
    folder); those forces are also checked against the structure
    (:func:`~softening.analysis.phonons.force_consistency`: restoring forces on the displaced atoms,
    correlation and scale against the model's), and forces that cannot belong to it (another
    material's ``FORCE_SETS``, shuffled atoms) are flagged ``implausible_forces``. References
    computed here on the structure itself are not.

    Raises
    ------
    CalculationError
        A displacement without a reference or model result (a rerun computes it).
    InputError
        Forces that do not fit the setup, or phonopy errors.
    """
    from softening.analysis.metrics import force_mae, scale_through_origin

    umlip = UMLIPResults.model_validate(umlip)
    setup = PhononSetup.model_validate(setup)
    own = PhononSetup.model_validate(setup_ml) if setup_ml is not None else setup
    if [a for a, _ in own.displacements] != [a for a, _ in setup.displacements]:
        raise CalculationError(
            f"{material_id}: the {umlip.model.name}-relaxed structure has other symmetry-distinct "
            "displacements than the reference's; compare without relaxation"
        )
    refs = {
        r.frame_id: r
        for r in (FrameResult.model_validate(x) for x in references if x is not None)
        if r.material_id == material_id and r.forces is not None
    }
    mls = {f.frame_id: f for f in umlip.frames if f.material_id == material_id}
    ids = [displacement_id(i) for i in range(len(setup.displacements))]
    missing = [i for i in ids if i not in refs]
    if missing:
        raise CalculationError(
            f"{material_id}: reference missing for {', '.join(missing)}; rerun to compute them"
        )
    missing = [i for i in [PERFECT, *ids] if i not in mls]
    if missing:
        raise CalculationError(
            f"{material_id}: {umlip.model.name} result missing for {', '.join(missing)}"
        )
    f_ref = np.asarray([refs[i].forces for i in ids], dtype=float)
    f_ml = np.asarray([mls[i].forces for i in ids], dtype=float)
    res_ml = np.asarray(mls[PERFECT].forces, dtype=float)
    res_ref = np.asarray(refs[PERFECT].forces, dtype=float) if PERFECT in refs else None
    phonon = phonopy_from_setup(setup)
    phonon_ml = phonon if own is setup else phonopy_from_setup(own)
    prim = phonon.primitive
    path = band_path(prim.cell, prim.scaled_positions, prim.numbers)
    segments, labels = path if path is not None else (None, None)
    try:
        ref = harmonic_phonons(phonon, f_ref, res_ref, mesh, temperature, segments)
        ml = harmonic_phonons(phonon_ml, f_ml, res_ml, mesh, temperature, segments)
        cmp = compare_phonons(ref.frequencies, ml.frequencies, ref.weights, imaginary_tol)
        d_ref = f_ref - (res_ref[None] if res_ref is not None else 0.0)
        d_ml = f_ml - res_ml[None]
        scale = scale_through_origin(d_ml.reshape(-1, 3), d_ref.reshape(-1, 3))
        mae = force_mae(d_ml.reshape(-1, 3), d_ref.reshape(-1, 3))
        consistency = force_consistency(setup.displacements, d_ref, d_ml)
    except ValueError as exc:
        raise InputError(f"{material_id}: {exc}") from exc
    first = refs[ids[0]]
    flags = sorted({fl for r in refs.values() for fl in r.flags})
    if own is not setup:
        a_ref, a_ml = setup.unitcell.volume, own.unitcell.volume
        flags.append(
            f"relaxed: each method on its own relaxed structure (volume {a_ml:.2f} Å^3 against the "
            f"reference's {a_ref:.2f} Å^3 per unit cell); forces compared displacement by displacement"
        )
    problems = consistency.problems() if sources else []
    if problems:
        flags.append(
            "implausible_forces: " + "; ".join(problems) + ": the reference forces may not belong "
            "to this structure (another material's forces? atoms in another order?)"
        )
    if cmp.imaginary_fraction > 0 and cmp.imaginary_fraction_ref == 0:
        flags.append(
            f"imaginary: {100 * cmp.imaginary_fraction:.1f} % of the model's mesh modes are "
            f"imaginary (below -{imaginary_tol:g} THz), none of the reference's"
        )
    ticks = _band_ticks(ref.band_distances, labels, len(ref.band_distances))
    values = PhononValues(
        omega_max_ref=cmp.omega_max_ref,
        omega_max=cmp.omega_max,
        omega_max_ratio=cmp.omega_max_ratio,
        freq_mae=cmp.freq_mae,
        freq_max_abs_error=cmp.freq_max_abs_error,
        imaginary_fraction_ref=cmp.imaginary_fraction_ref,
        imaginary_fraction=cmp.imaginary_fraction,
        imaginary_tol=cmp.imaginary_tol,
        scale=scale,
        mae=mae,
        n_displacements=len(ids),
        n_supercell_atoms=len(phonon.supercell),
        mesh=[int(m) for m in mesh],
        residual_force_max=float(np.abs(res_ml).max()),
        residual_force_max_ref=None if res_ref is None else float(np.abs(res_ref).max()),
        temperature=float(temperature),
        free_energy_ref=ref.free_energy,
        free_energy=ml.free_energy,
        entropy_ref=ref.entropy,
        entropy=ml.entropy,
        heat_capacity_ref=ref.heat_capacity,
        heat_capacity=ml.heat_capacity,
    )
    arrays = PhononArrays(
        qpoints=ref.qpoints.tolist(),
        weights=ref.weights.tolist(),
        frequencies_ref=ref.frequencies.tolist(),
        frequencies=ml.frequencies.tolist(),
        band_distances=ref.band_distances.tolist(),
        band_ticks=ticks,
        band_frequencies_ref=ref.band_frequencies.tolist(),
        band_frequencies=ml.band_frequencies.tolist(),
        forces_ref=d_ref.tolist(),
        forces=d_ml.tolist(),
    )
    return PhononDoc.create(
        material_id=material_id,
        composition=setup.unitcell,
        model=umlip.model,
        reference=first.code,
        ratio=cmp.omega_max_ratio,
        flags=flags,
        sources=list(sources),
        parent_uuids=list(parent_uuids),
        values=values,
        setup=setup,
        arrays=arrays,
    )


def _band_ticks(
    distances: np.ndarray, labels: list[list[str]] | None, n: int
) -> list[tuple[float, str]]:
    """(distance, label) of the high-symmetry points; 'K|U' where one segment ends and the next
    starts (phonopy continues the distance across a jump)."""
    if labels is None or n == 0:
        return []
    per = n // sum(len(seg) - 1 for seg in labels)  # points per straight piece (equal)
    ticks: list[tuple[float, str]] = []
    piece = 0
    for seg in labels:
        for j, lab in enumerate(seg):
            # Start of each piece; the last label at the end of the segment's last piece.
            index = (piece + j) * per if j < len(seg) - 1 else (piece + j) * per - 1
            d = float(distances[index])
            if ticks and abs(ticks[-1][0] - d) < 1e-9:
                if ticks[-1][1] != lab:
                    ticks[-1] = (d, f"{ticks[-1][1]}|{lab}")
            else:
                ticks.append((d, lab))
        piece += len(seg) - 1
    return ticks


@softening_job(PhononDoc, tolerant=True, name="phonon compare")
def phonon_compare_job(
    setup: PhononSetup,
    references: list[FrameResult | None],
    umlip: UMLIPResults,
    material_id: str,
    mesh: Sequence[int] = DEFAULT_MESH,
    temperature: float = 300.0,
    imaginary_tol: float = DEFAULT_IMAGINARY_TOL,
    sources: Sequence[str] = (),
    parent_uuids: Sequence[str] = (),
    setup_ml: PhononSetup | None = None,
) -> PhononDoc:
    """jobflow job around :func:`compare_phonon_results`; runs when reference jobs failed, and then
    fails naming the missing displacements."""
    doc = compare_phonon_results(
        setup, references, umlip, material_id, mesh, temperature, imaginary_tol, sources,
        parent_uuids, setup_ml,
    )  # fmt: skip
    logger.info(
        "%s / %s: omega_max ratio %.3f, force scale %.3f",
        material_id,
        doc.model.name,
        doc.values.omega_max_ratio,
        doc.values.scale,
    )
    return doc


# ---- the maker -------------------------------------------------------------------------------------


@dataclass
class PhononMaker(Maker):
    """Phonons of one structure with a reference and uMLIPs, on the same finite displacements.

    Jobs: one reference job per supercell (the undisplaced one and each displaced one; the reference
    maker reuses a stored result with the same content key, so a rerun computes only what failed),
    one batched uMLIP job per model over all supercells, one comparison job per model
    (:class:`~softening.schemas.PhononDoc`).

    Attributes
    ----------
    name
        Flow name.
    reference_maker
        :class:`ReferenceStaticMaker` (GPAW; EMT for tests) or :class:`VaspReferenceMaker`.
    umlip_maker
        Template of the uMLIP jobs; each model gets a copy with its ``model`` set.
    models
        uMLIP specs.
    supercell_matrix
        3x3 (or 3 diagonal entries); ``None``: atomate2's choice for ``min_length``.
    min_length
        Shortest supercell length when choosing the supercell, Å (atomate2's default).
    prefer_90_degrees
        Prefer near-cubic supercells when choosing (atomate2's default).
    displacement
        Displacement amplitude, Å.
    symprec
        Symmetry tolerance of phonopy, Å (atomate2's PHONON_SYMPREC).
    primitive_matrix
        ``auto`` (phonopy finds the primitive cell) or a 3x3 matrix.
    mesh
        q-point mesh of the comparison and the thermal properties.
    temperature
        Temperature of the thermal properties, K.
    imaginary_tol
        Frequencies below minus this count as imaginary, THz.
    relax
        Relax the structure (positions and cell) with each method before its phonons: the reference
        (embedded calculators only) and each model on its own, each then on its own displaced
        supercells (same supercell matrix and displacement pattern); the documents are flagged
        ``relaxed``. Off by default: every method on the given structure, so that only the forces
        differ (each method's residual forces on it are subtracted).
    relax_fmax
        Force threshold of that relaxation, eV/Å.
    """

    name: str = "phonon"
    reference_maker: ReferenceStaticMaker | VaspReferenceMaker = field(
        default_factory=ReferenceStaticMaker
    )
    umlip_maker: UMLIPStaticMaker = field(default_factory=UMLIPStaticMaker)
    models: list[str] = field(default_factory=lambda: ["chgnet"])
    supercell_matrix: list[list[int]] | list[int] | None = None
    min_length: float = 20.0
    prefer_90_degrees: bool = True
    displacement: float = 0.01
    symprec: float = 1e-3
    primitive_matrix: str | list[list[float]] = "auto"
    mesh: tuple[int, int, int] = DEFAULT_MESH
    temperature: float = 300.0
    imaginary_tol: float = DEFAULT_IMAGINARY_TOL
    relax: bool = False
    relax_fmax: float = 0.01

    def make(self, structure: Structure, material_id: str | None = None) -> Flow:
        """The flow for ``structure``; its output is the list of :class:`PhononDoc` (one per model)."""
        mid = material_id or structure.composition.reduced_formula
        matrix = self.supercell_matrix
        if matrix is None:  # from the input structure, so that every method uses the same one
            matrix = supercell_matrix_for(structure, self.min_length, self.prefer_90_degrees)
        maker = replace(self, supercell_matrix=matrix)
        if not self.relax:
            return maker.make_unrelaxed(structure, mid)
        if not isinstance(self.reference_maker, ReferenceStaticMaker) or (
            self.reference_maker.calculator == "vasp"
        ):
            raise InputError("relax: only embedded references (gpaw, emt) relax here")
        relax = relax_job(structure, self.reference_maker, None, self.relax_fmax)
        relax.name = f"relax {self.reference_maker.calculator} {mid}"
        ref = reference_phonons_job(relax.output, maker, mid)
        ref.name = f"{self.name} references {mid}"
        jobs, outputs = [relax, ref], []
        for spec in self.models:
            ml = umlip_phonons_job(structure, maker, spec, mid)
            ml.name = f"{self.umlip_maker.name} {spec} {mid} relaxed phonon"
            cmp = phonon_compare_job(
                ref.output["setup"], ref.output["references"], ml.output["umlip"], mid,
                list(self.mesh), self.temperature, self.imaginary_tol,
                parent_uuids=[relax.uuid, ref.uuid, ml.uuid], setup_ml=ml.output["setup"],
            )  # fmt: skip
            cmp.append_name(f" {mid} {spec}")
            jobs += [ml, cmp]
            outputs.append(cmp.output)
        return Flow(jobs, output=outputs, name=f"{self.name} {mid}")

    def make_unrelaxed(self, structure: Structure, material_id: str) -> Flow:
        """The flow on ``structure`` as given."""
        setup, frames = self.setup_and_frames(structure, material_id)
        jobs, refs = self.reference_jobs(frames, material_id)
        outputs = []
        for spec in self.models:
            ml = replace(self.umlip_maker, model=spec).make(frames)
            ml.append_name(f" {spec} {material_id} phonon")
            cmp = phonon_compare_job(
                setup, refs, ml.output, material_id, list(self.mesh), self.temperature,
                self.imaginary_tol, parent_uuids=[*(j.uuid for j in jobs), ml.uuid],
            )  # fmt: skip
            cmp.append_name(f" {material_id} {spec}")
            jobs += [ml, cmp]
            outputs.append(cmp.output)
        return Flow(jobs, output=outputs, name=f"{self.name} {material_id}")

    def setup_and_frames(
        self, structure: Structure, material_id: str
    ) -> tuple[PhononSetup, list[FrameSpec]]:
        """The phonon setup of ``structure`` and the frames to label."""
        matrix = self.supercell_matrix
        if matrix is None:
            matrix = supercell_matrix_for(structure, self.min_length, self.prefer_90_degrees)
        setup = phonon_setup(
            structure, matrix, self.displacement, self.symprec, self.primitive_matrix
        )
        return setup, phonon_frames(setup, material_id)

    def reference_jobs(self, frames: list[FrameSpec], material_id: str) -> tuple[list, list]:
        """One reference job per frame, and their outputs."""
        jobs = []
        for frame in frames:
            j = self.reference_maker.make(frame)
            j.append_name(f" {material_id} {frame.frame_id}")
            jobs.append(j)
        return jobs, [j.output for j in jobs]


@job
def relax_job(
    structure: Structure,
    reference_maker: ReferenceStaticMaker | None = None,
    model: str | None = None,
    fmax: float = 0.01,
    steps: int = 500,
) -> Structure:
    """Relax positions and cell (BFGS on ASE's FrechetCellFilter) with the reference's embedded
    calculator, or with ``model`` (a uMLIP spec)."""
    if model is not None:
        from softening.models import load_model

        calc = load_model(model).calculator()
    else:
        calc, _ = reference_maker.get_calculator(structure)
    return relax_structure(structure, calc, fmax, steps)


def relax_structure(structure: Structure, calc, fmax: float = 0.01, steps: int = 500) -> Structure:
    """``structure`` relaxed in positions and cell with the ASE calculator ``calc``."""
    from ase.filters import FrechetCellFilter
    from ase.optimize import BFGS
    from pymatgen.io.ase import AseAtomsAdaptor

    atoms = AseAtomsAdaptor.get_atoms(structure)
    atoms.calc = calc
    BFGS(FrechetCellFilter(atoms), logfile=None).run(fmax=fmax, steps=steps)
    relaxed = AseAtomsAdaptor.get_structure(atoms)
    for key, values in structure.site_properties.items():
        relaxed.add_site_property(key, values)
    return relaxed


@job
def reference_phonons_job(structure: Structure, maker: PhononMaker, material_id: str):
    """Replaced by the reference jobs on the (relaxed) structure; output ``{"setup",
    "references"}``."""
    from jobflow import Response

    setup, frames = maker.setup_and_frames(structure, material_id)
    jobs, refs = maker.reference_jobs(frames, material_id)
    return Response(replace=Flow(jobs, output={"setup": setup, "references": refs}))


@job(data=["forces"])
def umlip_phonons_job(structure: Structure, maker: PhononMaker, model: str, material_id: str):
    """Relax with ``model``, then evaluate its own displaced supercells (batched); output
    ``{"setup", "umlip"}``."""
    from softening.makers.umlip import predict_frames
    from softening.models import load_model

    relaxed = relax_structure(structure, load_model(model).calculator(), maker.relax_fmax)
    setup, frames = maker.setup_and_frames(relaxed, material_id)
    umlip = predict_frames(frames, replace(maker.umlip_maker, model=model))
    return {"setup": setup, "umlip": umlip}


# ---- the registry entry ------------------------------------------------------------------------


def phonon_summary(doc: PhononDoc) -> dict[str, Any]:
    """The per-material JSON record of a :class:`PhononDoc`: every value of
    :class:`~softening.schemas.PhononValues` (frequencies THz, forces eV/Å, thermal properties)."""
    return {
        "material": doc.material_id,
        "formula": doc.formula,
        # Every field of the schema, read by name (documents may come as plain objects).
        **{k: getattr(doc.values, k) for k in PhononValues.model_fields},
        "reference": doc.reference.name,
        "flags": [str(f) for f in doc.flags],
    }


def _phonon_cells(doc: PhononDoc) -> list[list[str]]:
    v = doc.values
    return [
        [
            doc.material_id,
            doc.model.name,
            f"{v.omega_max_ref:.2f}/{v.omega_max:.2f}",
            f"{v.omega_max_ratio:.3f}",
            f"{v.freq_mae:.2f}/{v.freq_max_abs_error:.2f}",
            f"{v.scale:.3f}",
            f"{v.mae:.4f}",
            f"{100 * v.imaginary_fraction_ref:.1f}/{100 * v.imaginary_fraction:.1f} %",
        ]
    ]


def phonon_plots(docs: Sequence[PhononDoc], out: Any) -> dict[str, dict[str, str]]:
    """Per material: band structure + DOS of the reference and every model, and frequency parity.

    Returns
    -------
    dict
        ``{material: {"bands": PNG, "parity": PNG}}``.
    """
    from pathlib import Path

    from softening.analysis.property_plots import frequency_parity_plot, phonon_bands_plot
    from softening.naming import safe_filename

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    by_material: dict[str, list] = {}
    for d in docs:
        by_material.setdefault(d.material_id, []).append(d)
    files: dict[str, dict[str, str]] = {}
    for material, group in by_material.items():
        a0 = group[0].arrays
        if a0 is None:
            continue
        ref_label = f"DFT ({group[0].reference.name})"
        bands = {ref_label: a0.band_frequencies_ref} if a0.band_frequencies_ref else {}
        mesh = {ref_label: (a0.frequencies_ref, a0.weights)}
        for d in group:
            if d.arrays.band_frequencies:
                bands[d.model.name] = d.arrays.band_frequencies
            mesh[d.model.name] = (d.arrays.frequencies, d.arrays.weights)
        title = material if group[0].formula == material else f"{material} ({group[0].formula})"
        name = safe_filename(material)
        files[material] = {
            "bands": str(
                phonon_bands_plot(
                    bands,
                    out / f"phonons_{name}.png",
                    distances=a0.band_distances,
                    ticks=a0.band_ticks,
                    mesh=mesh,
                    title=title,
                    reference=ref_label,
                )  # fmt: skip
            ),
            "parity": str(
                frequency_parity_plot(
                    {d.model.name: (d.arrays.frequencies_ref, d.arrays.frequencies) for d in group},
                    out / f"phonon_parity_{name}.png",
                    title=f"{title}: mesh frequencies",
                    ratios={d.model.name: d.values.omega_max_ratio for d in group},
                )
            ),
        }
    return files


def _phonon_maker(reference_maker: Any, models: list[str], options: Any) -> PhononMaker:
    settings = {
        k: options[k]
        for k in ("supercell_matrix", "min_length", "displacement", "temperature")
        if options.get(k) is not None
    }
    if options.get("mesh") is not None:
        settings["mesh"] = tuple(options["mesh"])
    return PhononMaker(
        reference_maker=reference_maker,
        models=list(models),
        relax=bool(options.get("relax")),
        **settings,
    )


SPEC = register_property(
    PropertySpec(
        name="phonon",
        doc_class=PhononDoc,
        make_maker=_phonon_maker,
        pairs=lambda doc: [(doc.values.omega_max_ref, doc.values.omega_max)],
        axis="highest phonon frequency (THz)",
        record=phonon_summary,
        summarize=False,
        table_title="Phonons: uMLIP against reference",
        table_columns=(
            "material",
            "model",
            "ω_max ref/model THz",
            "ratio",
            "freq MAE/max THz",
            "force scale",
            "force MAE eV/Å",
            "imag. ref/model",
            "flags",
        ),  # fmt: skip
        table_cells=_phonon_cells,
        table_caption="ratio = ω_max(model) / ω_max(reference); < 1: softened",
        figures=phonon_plots,
        parity_figure=False,
        description="phonons by finite displacements (highest frequency, bands, thermal)",
    )
)
