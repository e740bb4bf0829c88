"""Strict JSON: the one encoder of every JSON text the package writes (``--json``, ``summary.json``,
``report.json``, ``learning-curve.json``, model folders).

Python's ``json`` writes a non-finite float as the bare tokens ``NaN``, ``Infinity`` or
``-Infinity``, which are not JSON: strict parsers (``jq``, JavaScript's ``JSON.parse``, Go, Rust)
refuse the whole document. Here a non-finite number (a cMAE of a zero scale, the ratio of an empty
set...) is written as ``null``, and ``allow_nan=False`` guarantees that nothing else slips through.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

__all__ = ["dumps", "finite", "rounded", "write_json"]


def finite(obj: Any) -> Any:
    """``obj`` with every non-finite float (also numpy's) replaced by ``None``, recursively.

    Dicts, lists and tuples are rebuilt (tuples as lists, as JSON writes them), numpy scalars and
    arrays become Python numbers and lists; anything else is returned as it is (the encoder's
    ``default`` then decides).
    """
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite(v) for v in obj]
    if obj is None or isinstance(obj, bool | int | str):
        return obj
    tolist = getattr(obj, "tolist", None)  # numpy scalars and arrays
    if callable(tolist) and type(obj).__module__ == "numpy":
        return finite(tolist())
    return obj


def rounded(x: Any, digits: int) -> float | None:
    """``x`` as a finite float rounded to ``digits`` significant digits (shorter JSON text);
    ``None`` for a non-finite number or anything that is not a number."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(v):
        return None
    return float(f"{v:.{digits}g}")


def dumps(obj: Any, **kwargs: Any) -> str:
    """Strict JSON text of ``obj`` (non-finite numbers as ``null``); ``kwargs`` as ``json.dumps``
    (``default``, ``indent``...). An object ``default`` turns into something with a non-finite
    number is cleaned too."""
    default = kwargs.pop("default", None)
    if default is not None:
        user_default = default

        def default(o: Any) -> Any:
            return finite(user_default(o))

    kwargs.pop("allow_nan", None)
    return json.dumps(finite(obj), default=default, allow_nan=False, **kwargs)


def write_json(path: str | Path, obj: Any, **kwargs: Any) -> Path:
    """Write ``obj`` as strict JSON (:func:`dumps`) to ``path``; return the path."""
    path = Path(path)
    path.write_text(dumps(obj, **kwargs))
    return path
