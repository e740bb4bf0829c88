"""Names derived from identifiers: file names (material ids, model names), bounded and safe, and
the material ids of a run, unique."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

#: Longest file-name part made from one identifier (file systems allow 255 bytes per name).
MAX_NAME = 60


def safe_filename(text: str, max_len: int = MAX_NAME) -> str:
    """A file-name part for ``text``: ``[A-Za-z0-9._-]`` only, at most ``max_len`` characters.

    Names that had to change (other characters, or too long) end in an 8-character hash of the
    original, so that different identifiers never share a file; ``"mp-149"`` stays ``"mp-149"``.

    Parameters
    ----------
    text
        Any identifier (a material id of any length, a model name...).
    max_len
        Upper bound on the length of the result (at least 16).

    Returns
    -------
    str
        A non-empty name without path separators, never ``.`` or ``..``.
    """
    text = str(text)
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_.") or "x"
    if slug == text and len(slug) <= max_len:
        return slug
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    keep = max(max_len, 16) - len(digest) - 1
    return f"{slug[:keep].rstrip('_.-') or 'x'}-{digest}"


def unique_ids(bases: Iterable[str]) -> list[str]:
    """One id per base name, in order: a name taken before gets ``-2``, ``-3``... (the first free).

    The one rule for material ids of a run: every flow names its materials from its own bases
    (formula plus structure hash, formula, or file stem) through this function, so two inputs never
    share an id and the same inputs always get the same ids.

    Parameters
    ----------
    bases
        The preferred id of each input (e.g. ``"Si-3f9a2c"``, ``"Si"``, a file's stem).

    Returns
    -------
    list[str]
        ``["Si", "Si-2", "Cu"]`` for ``["Si", "Si", "Cu"]``; never two equal ids, even when a base
        already ends in ``-2``.
    """
    ids: list[str] = []
    taken: set[str] = set()
    for base in bases:
        mid, k = base, 2
        while mid in taken:
            mid, k = f"{base}-{k}", k + 1
        ids.append(mid)
        taken.add(mid)
    return ids
