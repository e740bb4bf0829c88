"""Mongo-style queries over the store: the SQL candidates of a filter, then projection and sort.

A query takes its top-level equality, ``$in``, ``$all`` and numeric range conditions on indexed
fields (and ``$or`` / ``$and`` of such) to SQL sub-queries over the ``_index`` side table
(:func:`_plan_parts`); :func:`_candidate_ids` runs the most selective one (by a capped count) and
probes the others for its ids only. The store decodes those candidates and applies the full filter
with mongomock's filter engine (:func:`_matches`); sort, skip, limit and projection follow in
Python.
"""

from __future__ import annotations

import json
import math
import numbers
import sqlite3
from collections.abc import Iterable
from typing import Any

from maggma.core import Sort

from softening.stores.sqlite.index import _SKIP, _index_key

INLINE_PARAMS = 200  # larger $in lists go to SQL as one JSON array
ESTIMATE_CAP = 200  # rows counted, at most, to rank the conditions of a query by selectivity
PROBE_IDS = 500  # candidate ids checked against a further condition by index lookups

#: One SQL sub-query selecting ``doc`` ids, with its parameters.
_Part = tuple[str, list[Any]]


class _Plan:
    """The SQL candidates of a filter: sub-queries to intersect (none: every document), and
    whether their intersection is exactly the set of matches (then no document needs checking)."""

    def __init__(self, parts: list[_Part], exact: bool):
        self.parts, self.exact = parts, exact


def _keys(values: Iterable[Any]) -> list[Any] | None:
    out = []
    for v in values:
        k = _index_key(v)
        if k is _SKIP:
            return None
        out.append(k)
    return out


def _values_sql(cid: int, field: str, keys: list[Any]) -> _Part:
    head = "SELECT doc FROM _index WHERE cid = ? AND field = ? AND value"
    if len(keys) == 1:
        return f"{head} = ?", [cid, field, keys[0]]
    if len(keys) <= INLINE_PARAMS or any(isinstance(k, float) and math.isinf(k) for k in keys):
        return f"{head} IN ({','.join('?' * len(keys))})", [cid, field, *keys]
    # One parameter however long the list (SQLite limits the number of parameters).
    return f"{head} IN (SELECT value FROM json_each(?))", [cid, field, json.dumps(keys)]


def _intersect(parts: list[_Part]) -> _Part:
    sql = " INTERSECT ".join(f"SELECT doc FROM ({p})" for p, _ in parts)
    return sql, [x for _, params in parts for x in params]


def _plan_parts(criteria: dict, cid: int, fields: set[str]) -> tuple[list[_Part], bool]:
    """SQL sub-queries whose intersection holds every match, and whether it is exactly the matches."""
    parts: list[_Part] = []
    exact = True
    for key, cond in criteria.items():
        if key == "$and" and isinstance(cond, list):
            for sub in cond:
                if isinstance(sub, dict):
                    p, e = _plan_parts(sub, cid, fields)
                    parts += p
                    exact = exact and e
                else:
                    exact = False
            continue
        if key == "$or" and isinstance(cond, list) and cond:
            branches: list[_Part] = []
            all_exact = True
            for sub in cond:
                p, e = _plan_parts(sub, cid, fields) if isinstance(sub, dict) else ([], False)
                if not p:  # a branch without a usable condition: the $or restricts nothing
                    branches = []
                    break
                branches.append(_intersect(p))
                all_exact = all_exact and e
            if branches:
                sql = " UNION ".join(f"SELECT doc FROM ({b})" for b, _ in branches)
                parts.append((sql, [x for _, params in branches for x in params]))
                exact = exact and all_exact
            else:
                exact = False
            continue
        if key.startswith("$") or key not in fields:
            exact = False
            continue
        # A numeric path part ("a.0") reads an array position or a key: candidates, not exact.
        key_exact = not any(p.isdigit() for p in key.split("."))
        if isinstance(cond, dict) and cond and all(str(op).startswith("$") for op in cond):
            for op, arg in cond.items():
                keys = None
                if op == "$eq":
                    keys = _keys([arg])
                elif op in ("$in", "$all") and isinstance(arg, list | tuple) and arg:
                    keys = _keys(arg)
                if keys and op in ("$eq", "$in"):
                    parts.append(_values_sql(cid, key, keys))
                    exact = exact and key_exact
                elif keys and op == "$all":
                    parts += [_values_sql(cid, key, [k]) for k in dict.fromkeys(keys)]
                    exact = exact and key_exact
                elif op in ("$gt", "$gte", "$lt", "$lte") and _is_number(arg):
                    sql_op = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}[op]
                    # Numbers sort before text in SQLite: a lower bound alone must stop there.
                    upper = " AND value < ''" if op in ("$gt", "$gte") else ""
                    sql = f"SELECT doc FROM _index WHERE cid = ? AND field = ? AND value {sql_op} ?"
                    parts.append((sql + upper, [cid, key, float(arg)]))
                    exact = False  # the filter engine decides type brackets and arrays
                else:
                    exact = False
        elif (keys := _keys([cond])) is not None:
            parts.append(_values_sql(cid, key, keys))
            exact = exact and key_exact
        else:
            exact = False
    return parts, exact


def _estimate(conn: sqlite3.Connection, part: _Part) -> int:
    """Rows of a sub-query, counted up to a cap (cheap): to start from the most selective one."""
    sql, params = part
    return conn.execute(
        f"SELECT count(*) FROM (SELECT 1 FROM ({sql}) LIMIT {ESTIMATE_CAP})", params
    ).fetchone()[0]


def _candidate_ids(conn: sqlite3.Connection, plan: _Plan) -> list[int]:
    """The ids of the intersection of the plan's sub-queries, ascending.

    The most selective sub-query runs first; the others are then only probed for its ids (an
    index lookup each), so that e.g. ``{"uuid": u, "index": 1}`` costs the same in a store of
    ten or of a million documents.
    """
    parts = plan.parts
    if len(parts) > 1:
        parts = sorted(parts, key=lambda p: _estimate(conn, p))
    sql, params = parts[0]
    ids = sorted({r[0] for r in conn.execute(f"SELECT doc FROM ({sql})", params)})
    for sql, params in parts[1:]:
        if not ids:
            break
        if len(ids) > PROBE_IDS:
            found = {r[0] for r in conn.execute(f"SELECT doc FROM ({sql})", params)}
        else:
            marks = ",".join("?" * len(ids))
            found = {
                r[0]
                for r in conn.execute(
                    f"SELECT doc FROM ({sql}) WHERE doc IN ({marks})", [*params, *ids]
                )
            }
        ids = [i for i in ids if i in found]
    return ids


def _is_number(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and not math.isnan(float(x))


# ---- projection and sorting ----------------------------------------------------------------------


def _projection(properties: dict | list | None) -> tuple[bool, list[str]] | None:
    """``(include, paths)`` or ``None`` for whole documents."""
    if properties is None:
        return None
    if isinstance(properties, dict):
        include = [k for k, v in properties.items() if v and k != "_id"]
        if include:
            return True, include
        exclude = [k for k, v in properties.items() if not v]
        return (False, exclude) if exclude else None
    return (True, list(properties)) if properties else None


def _tree(paths: Iterable[str]) -> dict:
    tree: dict = {}
    for path in paths:
        node = tree
        parts = path.split(".")
        for i, part in enumerate(parts):
            if node.get(part) is True:
                break  # a parent is included whole
            if i == len(parts) - 1:
                node[part] = True
            else:
                node = node.setdefault(part, {})
    return tree


def _include(obj: Any, tree: dict) -> Any:
    if isinstance(obj, list):
        return [_include(x, tree) for x in obj if isinstance(x, dict | list)]
    out = {}
    for key, sub in tree.items():
        if key not in obj:
            continue
        value = obj[key]
        if sub is True:
            out[key] = value
        elif isinstance(value, dict | list):
            out[key] = _include(value, sub)
    return out


def _exclude(obj: Any, parts: list[str]) -> None:
    if isinstance(obj, list):
        for x in obj:
            _exclude(x, parts)
    elif isinstance(obj, dict) and parts[0] in obj:
        if len(parts) == 1:
            del obj[parts[0]]
        else:
            _exclude(obj[parts[0]], parts[1:])


def _project(doc: dict, spec: tuple[bool, list[str]] | None) -> dict:
    if spec is None:
        return doc
    include, paths = spec
    if include:
        out = _include(doc, _tree(paths))
        if "_id" in doc:
            out = {"_id": doc["_id"], **out}
        return out
    for p in paths:
        _exclude(doc, p.split("."))
    return doc


def _sorted(docs: list[dict], sort: dict) -> list[dict]:
    from mongomock.filtering import resolve_sort_key

    for key, direction in reversed(list(sort.items())):
        d = direction.value if isinstance(direction, Sort) else int(direction)
        docs.sort(key=lambda x, k=key: resolve_sort_key(k, x), reverse=d < 0)
    return docs


def _matches(criteria: dict, doc: dict) -> bool:
    from mongomock.filtering import filter_applies

    return filter_applies(criteria, doc)
