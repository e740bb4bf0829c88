"""Multikey index rows: the values of the indexed dotted fields of a document, as MongoDB sees them.

The side table ``_index(cid, field, value, doc)`` holds one row per value (one per array element,
as MongoDB's multikey indexes); :mod:`.query` turns conditions on those values into SQL.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Iterator, Sequence
from datetime import date, datetime
from typing import Any

from softening.stores.sqlite.codec import _default

INT64 = (-(2**63), 2**63 - 1)

_SKIP = object()
_PLAIN = (dict, list, tuple, str, bytes, int, float, type(None), datetime, date)


def _index_key(value: Any) -> Any:
    """The value an index row holds, or ``_SKIP`` for values the index leaves out.

    Strings and numbers only: booleans (SQLite would equal them to 0 and 1), ``None`` (MongoDB's
    ``None`` also matches a missing field), NaN (SQLite stores it as NULL), datetimes and documents
    are not indexed, and a query on such a value does not use the index.
    """
    if isinstance(value, bool):
        return _SKIP
    if isinstance(value, str):
        return str(value)
    if isinstance(value, numbers.Integral):
        v = int(value)
        return v if INT64[0] <= v <= INT64[1] else _SKIP
    if isinstance(value, numbers.Real):
        v = float(value)
        return _SKIP if math.isnan(v) else v
    return _SKIP


def _plain(value: Any) -> Any:
    # What the encoder turns a foreign object into, so that index rows match the stored body.
    if isinstance(value, _PLAIN) or isinstance(value, numbers.Number):
        return value
    try:
        return _default(value)
    except TypeError:
        return value


def _path_values(obj: Any, parts: Sequence[str]) -> Iterator[Any]:
    """The values at a dotted path, MongoDB-style: arrays of documents are traversed."""
    obj = _plain(obj)
    if not parts:
        yield obj
        return
    head, rest = parts[0], parts[1:]
    if isinstance(obj, dict):
        if head in obj:
            yield from _path_values(obj[head], rest)
    elif isinstance(obj, list | tuple):
        if head.isdigit() and int(head) < len(obj):
            yield from _path_values(obj[int(head)], rest)
        for item in obj:
            item = _plain(item)
            if isinstance(item, dict):
                yield from _path_values(item, parts)


def _index_rows(doc: dict, fields: Iterable[str]) -> set[tuple[str, Any]]:
    rows = set()
    for field in fields:
        for value in _path_values(doc, field.split(".")):
            items = value if isinstance(value, list | tuple) else [value]
            for item in items:
                key = _index_key(_plain(item))
                if key is not _SKIP:
                    rows.add((field, key))
    return rows
