"""Synthetic SofteningDocs stored as jobflow stores them: shared by the store, query and CLI tests."""

from __future__ import annotations

import uuid as uuidlib
from datetime import UTC, datetime

from monty.json import jsanitize

from softening.schemas import CodeInfo, ModelInfo, SofteningDoc


def _doc(material_id, model, scale, elements, mae=0.2, formula=None, **extra) -> SofteningDoc:
    return SofteningDoc(
        material_id=material_id,
        formula=formula or material_id,
        chemsys="-".join(sorted(elements)),
        elements=sorted(elements),
        model=ModelInfo(name=model, family=model.split("-")[0].lower()),
        reference=CodeInfo(name="emt"),
        n_frames=2,
        n_atoms=8,
        scale=scale,
        scale_ci=(scale - 0.01, scale + 0.01),
        scale_with_intercept=scale,
        intercept=0.0,
        mae=mae,
        cmae=mae * 0.9,
        per_element_scales={el: scale + 0.01 * k for k, el in enumerate(sorted(elements))},
        package_version="test",
        **extra,
    )


def _insert_docs(store, docs, uuids=None, completed_at=None) -> list[str]:
    """Store SofteningDocs as jobflow would (same sanitising), without running jobs."""
    store.connect()
    uuids = uuids or [str(uuidlib.uuid4()) for _ in docs]
    for u, d in zip(uuids, docs, strict=True):
        out = jsanitize(d, strict=True, allow_bson=True) if not isinstance(d, dict) else d
        store.docs_store.update(
            {
                "uuid": u,
                "index": 1,
                "output": out,
                "completed_at": completed_at or datetime.now(UTC).isoformat(),
                "metadata": {},
                "hosts": [],
                "name": "compare",
            },
            key=["uuid", "index"],
        )
    return uuids
