"""The mlearn JSON layout (Zuo et al. 2020): read whole, or streamed record by record."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from pymatgen.core import Structure

from softening.datasets.formats.building import (
    VASP_VOIGT_ORDER,
    as_3x3,
    make_frame,
    vasp_stress_to_ase,
    voigt_pairs,
)
from softening.datasets.formats.files import (
    detail,
    existing_path,
    file_error,
    jsonable,
    load_json,
    open_bytes,
    wrap_errors,
)
from softening.datasets.frames import Frame

__all__ = ["is_mlearn", "iter_mlearn_json", "mlearn_frames", "read_mlearn_json"]


def read_mlearn_json(path: str | Path, voigt_order: str = VASP_VOIGT_ORDER) -> list[Frame]:
    """Read the mlearn JSON layout (Zuo et al. 2020), optionally gzipped.

    A list of ``{"structure": pymatgen dict, "outputs": {"energy": eV total, "forces": eV/Å,
    "virial_stress": 6 components in kbar}, "group": ..., "description": ...}``.

    ``virial_stress`` has VASP's sign (positive = compressive): the strained "Elastic" frames of
    Si and Cu show positive diagonal stress under compression and negative under tension, the
    shear components have the opposite sign to the shear strain, and ASE's EMT on the Cu frames
    agrees component by component after the sign flip. So it is converted with
    :func:`~softening.datasets.formats.building.vasp_stress_to_ase` (``-0.1 * GPa * s``).

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
    path = existing_path(path)
    pairs = voigt_pairs(voigt_order)  # validate before reading a large file
    data = load_json(path)
    if not is_mlearn(data):
        raise file_error(path, 'not the mlearn layout [{"structure": ..., "outputs": ...}, ...]')
    return mlearn_frames(data, path, pairs)


def iter_mlearn_json(path: Path) -> Iterator[Frame]:
    """The frames of a JSON array file of the mlearn layout, record by record (``ijson``), with
    the documented Voigt order."""
    import ijson

    pairs = voigt_pairs(VASP_VOIGT_ORDER)
    n = 0
    with open_bytes(path) as fh:
        try:
            for index, record in enumerate(ijson.items(fh, "item", use_float=True)):
                if index == 0 and not is_mlearn([record]):
                    raise file_error(
                        path, "unknown JSON layout (a list, but not of {structure, outputs})"
                    )
                yield from mlearn_frames([record], path, pairs, start=index)
                n += 1
        except (ijson.JSONError, ijson.IncompleteJSONError, OSError, EOFError) as exc:
            raise file_error(path, f"not valid JSON ({detail(exc)})") from exc
    if n == 0:
        raise file_error(path, "contains no frames (empty JSON document)")


def is_mlearn(data: Any) -> bool:
    """A list of ``{"structure", "outputs"}`` records."""
    return (
        isinstance(data, list)
        and bool(data)
        and isinstance(data[0], dict)
        and "structure" in data[0]
        and "outputs" in data[0]
    )


def mlearn_frames(
    data: list[Any], path: Path, pairs: Sequence[tuple[int, int]], start: int = 0
) -> list[Frame]:
    """The frames of parsed mlearn-layout ``data`` (``virial_stress`` in the Voigt order
    ``pairs``); ``start``: the index of its first record in the file."""
    frames = []
    for index, record in enumerate(data, start=start):
        where = f"entry {index}"
        with wrap_errors(path, where):
            structure = Structure.from_dict(record["structure"])
            outputs = record["outputs"]
            virial = outputs.get("virial_stress")
            stress = None
            if virial is not None:
                stress = vasp_stress_to_ase(as_3x3(virial, pairs))
            group, description = record.get("group"), record.get("description")
            frame = make_frame(
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
                    k: jsonable(v)
                    for k, v in record.items()
                    if k not in ("structure", "outputs", "group", "description")
                },
            )
        frames.append(frame)
    return frames
