"""What every format reader does with its file: open it (gzipped or not), parse JSON, and report a
problem as one :class:`~softening.errors.InputError` line that names the file (the underlying
exception kept as ``__cause__``)."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np

from softening.datasets.frames import Frame
from softening.errors import InputError

__all__ = [
    "check_new",
    "check_unique",
    "detail",
    "existing_path",
    "file_error",
    "is_gzip",
    "jsonable",
    "load_json",
    "open_bytes",
    "wrap_errors",
]

# Longest excerpt of an underlying error message quoted in an InputError.
_MAX_DETAIL = 200


def file_error(path: str | Path, what: str) -> InputError:
    """Build the one-line error for an unreadable file."""
    return InputError(f"cannot read {str(path)!r}: {what}")


def detail(exc: BaseException) -> str:
    """One-line, bounded description of an underlying exception."""
    text = " ".join(str(exc).split()) or "no message"
    if len(text) > _MAX_DETAIL:
        text = text[: _MAX_DETAIL - 3] + "..."
    return f"{type(exc).__name__}: {text}"


@contextmanager
def wrap_errors(path: str | Path, what: str) -> Iterator[None]:
    """Turn any unexpected exception raised while interpreting a file into an InputError."""
    try:
        yield
    except InputError:
        raise
    except Exception as exc:
        raise file_error(path, f"{what}: {detail(exc)}") from exc


def existing_path(path: str | Path) -> Path:
    """Return ``path`` as a Path, or raise InputError when it does not exist."""
    p = Path(path).expanduser()
    if not p.exists():
        raise InputError(f"no such file: {str(path)!r}")
    return p


def is_gzip(path: Path) -> bool:
    """Whether ``path`` is gzipped, by its first bytes (not its name)."""
    with open(path, "rb") as handle:
        return handle.read(2) == b"\x1f\x8b"


def open_bytes(path: Path) -> IO[bytes]:
    """``path`` opened for reading bytes, decompressed when it is gzipped."""
    return gzip.open(path, "rb") if is_gzip(path) else open(path, "rb")


def load_json(path: Path) -> Any:
    """Parse a (possibly gzipped) JSON file; gzip is recognised by content, not name."""
    try:
        if is_gzip(path):
            with gzip.open(path, "rt", encoding="utf-8") as handle:
                return json.load(handle)
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except Exception as exc:
        raise file_error(path, f"not valid (gzipped) JSON ({detail(exc)})") from exc


def jsonable(obj: Any) -> Any:
    """Recursively convert numpy and other values into plain JSON types."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | np.ndarray):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    return str(obj)


def check_unique(frames: Sequence[Frame], path: Path) -> None:
    """frame_id must be unique within a material (later steps pair frames by these keys)."""
    seen: set[tuple[str, str]] = set()
    for frame in frames:
        check_new(frame, seen, path)


def check_new(frame: Frame, seen: set[tuple[str, str]], path: Path) -> None:
    """Refuse ``frame`` when its (material, frame id) is in ``seen``; else add it (streams too)."""
    key = (frame.material_key, frame.frame_id)
    if key in seen:
        raise file_error(path, f"frame id {frame.frame_id!r} occurs twice for {key[0]!r}")
    seen.add(key)
