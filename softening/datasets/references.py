"""Labelled dataset frames as reference results: what ``softening finetune`` corrects on.

Dataset frames already carry DFT labels; as :class:`~softening.schemas.FrameResult` documents they
are the references the correction makers take, exactly as the reference jobs of a flow give them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from softening.datasets.frames import Frame
from softening.errors import InputError
from softening.schemas import CodeInfo, FrameResult, FrameSpec

if TYPE_CHECKING:
    from softening.datasets.guards import GuardReport

__all__ = ["check_unique_frames", "frames_to_references", "labelled_frames"]


def labelled_frames(
    datasets: Sequence[str | Path], strict: bool = False, select: Sequence[str] | None = None
) -> tuple[list[Frame], list[GuardReport]]:
    """The labelled frames of dataset files after the VASP guard rails, optionally selected.

    Parameters
    ----------
    datasets
        Dataset files (extended XYZ, WBM/mlearn JSON, vasprun.xml files or folders).
    strict
        Refuse VASP runs whose settings differ from the models' training data (else flagged).
    select
        Keep only frames in whose material id, formula, group or description every one of these
        texts occurs.

    Returns
    -------
    (list[Frame], list[GuardReport])
        Frames with reference forces, and the guard-rail report of every VASP run read.

    Raises
    ------
    InputError
        An unreadable file, a refused VASP run, or no labelled frame left.
    """
    from softening.datasets.checks import FrameRegistry
    from softening.datasets.guards import apply_guard_rails
    from softening.datasets.readers import read_frames

    frames: list[Frame] = []
    reports: list[GuardReport] = []
    registry = FrameRegistry()  # a frame given twice, in one file or across files, is refused
    for path in datasets:
        # VASP outputs: unconverged and MLFF steps dropped, settings flagged (refused if strict).
        kept, found = apply_guard_rails(read_frames(path, registry=registry), strict=strict)
        reports.extend(found)
        frames.extend(f for f in kept if f.is_labelled)
    for text in select or []:
        frames = [
            f
            for f in frames
            if any(text in (x or "") for x in (f.material_key, f.formula, f.group, f.description))
        ]
    if not frames:
        raise InputError(
            "no labelled frames (with reference forces) in the given datasets"
            + (f" matching {' and '.join(select)}" if select else "")
        )
    return frames, reports


def frames_to_references(frames: Iterable[Frame]) -> tuple[list[FrameSpec], list[FrameResult]]:
    """Frame specs and reference results of labelled dataset frames (ids checked unique).

    Parameters
    ----------
    frames
        Labelled frames (energy eV, forces eV/Å, stress eV/Å^3 when present).

    Returns
    -------
    (list[FrameSpec], list[FrameResult])
        One of each per frame, in order; the material id is the frame's material key, the code
        the dataset's (``metadata["code"]``, else ``"dataset"``) with the source file.

    Raises
    ------
    InputError
        When a frame of a material appears twice.
    """
    specs, refs = [], []
    for f in frames:
        mid = f.material_key
        specs.append(
            FrameSpec(
                frame_id=f.frame_id, material_id=mid, formula=f.formula, structure=f.structure
            )
        )
        refs.append(
            FrameResult(
                frame_id=f.frame_id,
                material_id=mid,
                formula=f.formula,
                structure=f.structure,
                energy=f.energy,
                forces=f.forces.tolist(),
                stress=f.stress.tolist() if f.stress is not None else None,
                code=CodeInfo(
                    name=str(f.metadata.get("code", "dataset")), settings={"source": f.source}
                ),
                flags=list(f.flags),
                region=f.region,
            )
        )
    check_unique_frames(specs)
    return specs, refs


def check_unique_frames(specs: Iterable[FrameSpec]) -> None:
    """Refuse a frame that appears twice (same material and frame id).

    Raises
    ------
    InputError
        Naming the frame and its material.
    """
    seen = set()
    for s in specs:
        key = (s.material_id, s.frame_id)
        if key in seen:
            raise InputError(
                f"frame {s.frame_id} of {s.material_id} appears twice; give each dataset once"
            )
        seen.add(key)
