"""Pair reference and uMLIP results by frame and fit the softening scale."""

from __future__ import annotations

import logging

import numpy as np
from jobflow import JobConfig, job
from jobflow.core.reference import OnMissing

from softening.analysis.metrics import is_uncorrelated, softening_metrics
from softening.errors import InputError
from softening.stores.documents import CodeInfo, FrameResult, SofteningDoc, UMLIPResults

logger = logging.getLogger(__name__)

# Flag of a result whose scale CI reaches 0 (softening.analysis.metrics.is_uncorrelated).
UNCORRELATED = "uncorrelated: scale CI includes 0, cMAE not meaningful"


def compare_results(
    references: list[FrameResult | dict | None],
    umlip: UMLIPResults,
    material_id: str | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    expected_frames: list[str] | None = None,
) -> SofteningDoc:
    """Pair frames by (material, frame id), fit, and return the :class:`SofteningDoc`.

    ``references`` may hold ``None`` for reference jobs that failed (jobflow ``OnMissing.NONE``);
    those frames are named in ``missing_frames`` so that a rerun of the failed jobs completes it.
    """
    from softening import __version__

    refs = [FrameResult.model_validate(r) for r in references if r is not None]
    ml_by_id = {(f.material_id, f.frame_id): f for f in umlip.frames}
    if material_id is not None:
        ml_by_id = {k: v for k, v in ml_by_id.items() if k[0] == material_id}
        refs = [r for r in refs if r.material_id == material_id]
    ref_by_id = {(r.material_id, r.frame_id): r for r in refs if r.forces is not None}
    expected = set(ml_by_id)
    if expected_frames is not None and material_id is not None:
        expected |= {(material_id, fid) for fid in expected_frames}
    paired = sorted(set(ref_by_id) & set(ml_by_id), key=lambda k: (k[0], _natural(k[1])))
    missing = sorted(expected - set(paired), key=lambda k: (k[0], _natural(k[1])))
    if not paired:
        raise InputError(
            f"no frame of {material_id or 'the dataset'} has both a reference and a uMLIP result"
        )
    f_ml = [np.asarray(ml_by_id[k].forces, dtype=float) for k in paired]
    f_ref = [np.asarray(ref_by_id[k].forces, dtype=float) for k in paired]
    species = [[s.specie.symbol for s in ref_by_id[k].structure] for k in paired]
    e_ml = [ml_by_id[k].energy for k in paired]
    e_ref = [ref_by_id[k].energy for k in paired]
    # Energies are compared only as differences between frames of one material (offsets removed),
    # so they say something only when some material has two frames or more.
    n_materials = len({k[0] for k in paired})
    has_energy = all(e is not None for e in e_ml + e_ref) and len(paired) > n_materials
    m = softening_metrics(
        f_ml,
        f_ref,
        species_frames=species,
        e_ml=e_ml if has_energy else None,
        e_dft=e_ref if has_energy else None,
        groups=[k[0] for k in paired],
        n_resamples=n_bootstrap,
        seed=seed,
    )
    elements = sorted({el for sp in species for el in sp})
    materials = sorted({k[0] for k in paired})
    first = ref_by_id[paired[0]]
    pooled = len(materials) > 1
    flags = sorted({fl for k in paired for fl in ref_by_id[k].flags})
    if missing:
        flags.append(f"{len(missing)} frame(s) missing")
    if any(not ref_by_id[k].converged for k in paired):
        flags.append("unconverged reference")
    if is_uncorrelated(m.scale_ci):
        flags.append(UNCORRELATED)
    return SofteningDoc(
        material_id="pooled" if pooled else materials[0],
        formula="" if pooled else first.formula,
        chemsys="-".join(elements),
        elements=elements,
        model=umlip.model,
        reference=_reference_code([ref_by_id[k] for k in paired]),
        n_frames=len(paired),
        n_atoms=int(sum(len(f) for f in f_ref)),
        scale=m.scale,
        scale_ci=m.scale_ci,
        scale_with_intercept=m.scale_with_intercept,
        intercept=m.intercept,
        mae=m.mae,
        cmae=m.cmae,
        energy_mae_per_atom=m.energy_mae_per_atom,
        per_element_scales=m.per_element_scales,
        frame_ids=[k[1] if not pooled else f"{k[0]}/{k[1]}" for k in paired],
        missing_frames=[k[1] if not pooled else f"{k[0]}/{k[1]}" for k in missing],
        flags=flags,
        forces_ml=np.concatenate(f_ml).tolist(),
        forces_ref=np.concatenate(f_ref).tolist(),
        package_version=__version__,
    )


def _natural(s: str):
    return (0, int(s), "") if s.isdigit() else (1, 0, s)


def _reference_code(refs: list[FrameResult]) -> CodeInfo:
    codes = {(r.code.name, r.code.version) for r in refs}
    if len(codes) == 1:
        return refs[0].code
    return CodeInfo(name="+".join(sorted({c[0] for c in codes})), version=None, settings={})


@job(data=["forces_ml", "forces_ref"], config=JobConfig(on_missing_references=OnMissing.NONE))
def compare_job(
    references: list[FrameResult | None],
    umlip: UMLIPResults,
    material_id: str | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    expected_frames: list[str] | None = None,
) -> SofteningDoc:
    """jobflow job around :func:`compare_results`; tolerates failed reference jobs."""
    doc = compare_results(references, umlip, material_id, n_bootstrap, seed, expected_frames)
    if doc.missing_frames:
        logger.warning(
            "%s / %s: reference missing for frame(s) %s; rerun to complete",
            doc.material_id,
            doc.model.name,
            ", ".join(doc.missing_frames),
        )
    return doc
