"""The WBM high-energy-states JSON layout: read whole, or streamed material by material."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from itertools import chain
from pathlib import Path
from typing import Any

from pymatgen.core import Structure

from softening.datasets.formats.building import make_frame, vasp_stress_to_ase
from softening.datasets.formats.files import (
    detail,
    existing_path,
    file_error,
    load_json,
    open_bytes,
    wrap_errors,
)
from softening.datasets.frames import Frame

__all__ = ["is_wbm", "iter_wbm_json", "read_wbm_json", "wbm_frames"]


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
    path = existing_path(path)
    data = load_json(path)
    if not is_wbm(data):
        raise file_error(
            path,
            "not the WBM layout {material_id: {frame_id: {structure, vasp_e, vasp_f, vasp_s}}}",
        )
    return wbm_frames(data, path)


def iter_wbm_json(path: Path, otherwise: Callable[[], Iterable[Frame]]) -> Iterator[Frame]:
    """The frames of a JSON object file, the WBM layout streamed material by material (``ijson``).

    A JSON object of another layout (a pymatgen structure...) is small: its frames are
    ``otherwise()``, which reads it whole.
    """
    import ijson

    with open_bytes(path) as fh:
        try:
            pairs = ijson.kvitems(fh, "", use_float=True)
            head = next(pairs, None)
            if head is None or not is_wbm(dict([head])):
                # A pymatgen structure or another layout: small, read whole.
                fh.close()
                yield from otherwise()
                return
            index = 0
            for material_id, records in chain([head], pairs):
                frames = wbm_frames({material_id: records}, path, start=index)
                index += len(frames)
                yield from frames
        except (ijson.JSONError, ijson.IncompleteJSONError, OSError, EOFError) as exc:
            raise file_error(path, f"not valid JSON ({detail(exc)})") from exc


def is_wbm(data: Any) -> bool:
    """Top level a dict of dicts of frame records with ``vasp_f``."""
    if not isinstance(data, dict) or not data:
        return False
    first = next(iter(data.values()))
    if not isinstance(first, dict) or not first:
        return False
    record = next(iter(first.values()))
    return isinstance(record, dict) and "vasp_f" in record


def wbm_frames(data: dict[str, Any], path: Path, start: int = 0) -> list[Frame]:
    """The frames of parsed WBM-layout ``data``; ``start``: the index of its first in the file."""
    frames = []
    index = start  # position in the file, also when a stream hands materials over one by one
    for material_id, records in data.items():
        if not isinstance(records, dict):
            raise file_error(path, f"material {material_id!r}: expected a dict of frames")
        for frame_id, record in records.items():
            where = f"entry {material_id}/{frame_id}"
            with wrap_errors(path, where):
                structure = Structure.from_dict(record["structure"])
                vasp_s = record.get("vasp_s")
                frame = make_frame(
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
