"""Frames of a dataset one at a time, so that memory does not grow with the size of the file.

:func:`iter_frames` yields the same frames as :func:`~softening.datasets.readers.read_frames`, in the
same order, but reads extended XYZ image by image (ASE's ``iread``), the WBM layout material by
material and the mlearn layout record by record (``ijson``, a streaming JSON parser), so that a
paper-sized file (the WBM high-energy set: 9,308 frames) never sits in memory as a whole. vasprun
files are read whole (pymatgen parses them at once; one run is one calculation's size).

:func:`count_frames` gives a cheap estimate of the number of frames (for a progress bar's ETA).
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Iterable, Iterator
from itertools import chain
from pathlib import Path
from typing import IO, Any

from softening.datasets import readers
from softening.datasets.checks import FrameRegistry
from softening.datasets.frames import Frame

__all__ = ["count_frames", "iter_frames", "iter_labelled_frames"]

# Bytes read per step while counting frames.
_CHUNK = 1 << 20


def _open(path: Path) -> IO[bytes]:
    return gzip.open(path, "rb") if readers._is_gzip(path) else open(path, "rb")


def _first_char(path: Path) -> bytes:
    with _open(path) as fh:
        while True:
            c = fh.read(1)
            if not c or not c.isspace():
                return c


def iter_frames(
    path: str | Path, fmt: str | None = None, registry: FrameRegistry | None = None
) -> Iterator[Frame]:
    """Frames of ``path`` in file order, read lazily (see the module docstring).

    Parameters
    ----------
    path
        A dataset file (or a folder holding a ``vasprun.xml``).
    fmt, registry
        As :func:`~softening.datasets.readers.read_frames`.

    Raises
    ------
    InputError
        As :func:`~softening.datasets.readers.read_frames`, when the bad part is reached.
    """
    path = readers._existing(path)
    kind = readers._normalise_fmt(fmt) if fmt is not None else readers.detect_format(path)
    registry = registry if registry is not None else FrameRegistry()
    if kind == "extxyz":
        frames = _iter_extxyz(path)
    elif kind in ("json", "wbm", "mlearn"):
        frames = _iter_json(path, kind)
    else:
        yield from readers.read_frames(path, fmt, registry=registry)
        return
    for frame in frames:
        registry.add(frame)
        yield frame


def _iter_extxyz(path: Path) -> Iterator[Frame]:
    import ase.io

    seen: set[tuple[str, str]] = set()
    try:
        images = ase.io.iread(str(path), index=":", format="extxyz")
        for i, atoms in enumerate(images):
            frame = readers._extxyz_frame(atoms, i, path)
            readers._check_new(frame, seen, path)
            yield frame
    except readers.InputError:
        raise
    except Exception as exc:
        raise readers._error(
            path, f"not a valid extended XYZ file ({readers._detail(exc)})"
        ) from exc
    if not seen:
        raise readers._error(path, "contains no frames")


def _iter_json(path: Path, kind: str) -> Iterator[Frame]:
    import ijson

    first = _first_char(path)
    if first == b"[":
        yield from _iter_mlearn(path)
        return
    if first != b"{":
        yield from readers.read_frames(path, kind)
        return
    with _open(path) as fh:
        try:
            pairs = ijson.kvitems(fh, "", use_float=True)
            head = next(pairs, None)
            if head is None or not readers._is_wbm(dict([head])):
                # A pymatgen structure or another layout: small, read whole.
                fh.close()
                yield from readers.read_frames(path, kind)
                return
            index = 0
            for material_id, records in chain([head], pairs):
                frames = readers._wbm_frames({material_id: records}, path, start=index)
                index += len(frames)
                yield from frames
        except (ijson.JSONError, ijson.IncompleteJSONError, OSError, EOFError) as exc:
            raise readers._error(path, f"not valid JSON ({readers._detail(exc)})") from exc


def _iter_mlearn(path: Path) -> Iterator[Frame]:
    import ijson

    pairs = readers._voigt_pairs(readers.VASP_VOIGT_ORDER)
    n = 0
    with _open(path) as fh:
        try:
            for index, record in enumerate(ijson.items(fh, "item", use_float=True)):
                if index == 0 and not readers._is_mlearn([record]):
                    raise readers._error(
                        path, "unknown JSON layout (a list, but not of {structure, outputs})"
                    )
                yield from readers._mlearn_frames([record], path, pairs, start=index)
                n += 1
        except (ijson.JSONError, ijson.IncompleteJSONError, OSError, EOFError) as exc:
            raise readers._error(path, f"not valid JSON ({readers._detail(exc)})") from exc
    if n == 0:
        raise readers._error(path, "contains no frames (empty JSON document)")


def count_frames(path: str | Path) -> int | None:
    """About how many frames ``path`` holds, without parsing it (for a progress bar's ETA).

    Counts the marker every frame of the format carries (``vasp_f`` in the WBM layout,
    ``"outputs"`` in mlearn's, ``<calculation>`` in a vasprun, the ``Lattice=`` comment line of an
    extended XYZ image). ``None`` when the format has no such marker.
    """
    path = Path(path)
    try:
        kind = readers.detect_format(path)
    except readers.InputError:
        return None
    if path.is_dir():
        path = readers._find_vasprun(path)
    markers = {
        "extxyz": [b"Lattice="],
        "vasprun": [b"<calculation>"],
        "json": [b'"vasp_f"', b'"outputs"'],
    }.get(kind)
    if markers is None:
        return 1
    counts = dict.fromkeys(markers, 0)
    tail = b""
    with _open(path) as fh:
        reader = io.BufferedReader(fh) if not isinstance(fh, io.BufferedReader) else fh
        while True:
            block = reader.read(_CHUNK)
            if not block:
                break
            text = tail + block
            for m in markers:
                counts[m] += text.count(m)
            # Keep a marker cut in two by the block boundary (counted once: only the tail).
            keep = max(len(m) for m in markers) - 1
            tail = text[-keep:]
            for m in markers:
                counts[m] -= tail.count(m)
    return max(counts.values()) or None


def iter_labelled_frames(
    paths: Iterable[str | Path],
    strict: bool = False,
    reports: list[Any] | None = None,
) -> Iterator[Frame]:
    """Labelled frames of several datasets, after the VASP guard rails, one at a time.

    Parameters
    ----------
    paths
        Dataset files.
    strict
        Refuse VASP runs whose settings differ from the models' training data.
    reports
        When given, the guard-rail report of every VASP run read is appended to it.
    """
    from softening.datasets.guards import apply_guard_rails

    registry = FrameRegistry()  # a frame given twice, in one file or across files, is refused
    for path in paths:
        kind = readers.detect_format(path)
        if kind == "vasprun":
            # Guard rails judge a run as a whole (SCF and MLFF steps, settings): read it whole.
            kept, found = apply_guard_rails(
                readers.read_frames(path, registry=registry), strict=strict
            )
            if reports is not None:
                reports.extend(found)
            yield from (f for f in kept if f.is_labelled)
            continue
        for frame in iter_frames(path, registry=registry):
            if "vasp" in frame.metadata:  # pragma: no cover - only vasprun frames carry it
                kept, found = apply_guard_rails([frame], strict=strict)
                if reports is not None:
                    reports.extend(found)
                frame = kept[0] if kept else None
            if frame is not None and frame.is_labelled:
                yield frame
