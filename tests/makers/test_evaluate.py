"""Streaming reads and the streamed evaluation behind `softening evaluate`."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
from conftest import DATA, WBM_XYZ, needs

from softening.datasets import read_frames
from softening.datasets.readers import count_frames, iter_frames
from softening.errors import InputError

WBM_JSON = DATA / "wbm_high_energy_subset" / "wbm_subset_21frames.json.gz"
MLEARN = DATA / "mlearn" / "Si" / "training.json"
VASPRUN = DATA / "vasp_outputs" / "vasprun.md.xml.gz"


@needs(WBM_JSON)
@pytest.mark.parametrize("path", [WBM_XYZ, WBM_JSON, MLEARN, VASPRUN], ids=lambda p: p.name)
def test_stream_gives_the_frames_read_frames_gives(path):
    streamed = list(iter_frames(path))
    whole = read_frames(path)
    assert len(streamed) == len(whole) == count_frames(path)
    for a, b in zip(streamed, whole, strict=True):
        assert (a.material_key, a.frame_id, a.source) == (b.material_key, b.frame_id, b.source)
        assert np.array_equal(a.forces, b.forces) and a.energy == b.energy
        assert a.structure == b.structure


def _wbm_records(n_materials: int) -> dict:
    data = json.loads(gzip.open(WBM_JSON).read())
    mid, frames = next(iter(data.items()))
    # Copies (json round trip): every material gets records of its own, its energies shifted (the
    # same frame twice would be refused as a repeat).
    out = {
        f"m{i}": {f"m{i}-{k}": json.loads(json.dumps(rec)) for k, rec in enumerate(frames.values())}
        for i in range(n_materials)
    }
    for i, records in enumerate(out.values()):
        for rec in records.values():
            rec["vasp_e"] += i
    return out


@needs(WBM_JSON)
def test_wbm_stream_is_lazy(tmp_path):
    """Frames before a damaged entry come out; the error comes only when the stream reaches it."""
    data = _wbm_records(4)
    first = next(iter(data["m2"]))
    data["m2"][first]["vasp_f"] = "not forces"
    path = tmp_path / "big.json.gz"
    with gzip.open(path, "wt") as fh:
        json.dump(data, fh)
    frames = iter_frames(path)
    got = [next(frames) for _ in range(2 * len(data["m0"]))]
    assert {f.material_id for f in got} == {"m0", "m1"}
    with pytest.raises(InputError, match="m2"):
        next(frames)


def _frame(material, frame_id, structure, forces, energy=-1.0):
    from softening.datasets.frames import Frame

    return Frame(
        structure=structure,
        frame_id=frame_id,
        material_id=material,
        energy=energy,
        forces=np.asarray(forces, dtype=float),
    )


def _si(shift: float = 0.0):
    from pymatgen.core import Lattice, Structure

    s = Structure.from_spacegroup("Fd-3m", Lattice.cubic(5.43), ["Si"], [[0, 0, 0]])
    s.translate_sites([0], [0.05 + shift, 0.02, -0.03], frac_coords=False)
    return s


def _ge():
    from pymatgen.core import Lattice, Structure

    s = Structure.from_spacegroup("Fd-3m", Lattice.cubic(5.66), ["Ge"], [[0, 0, 0]])
    s.translate_sites([1], [0.05, 0.02, -0.03], frac_coords=False)
    return s


def test_materials_split_across_the_stream_are_one_result(tmp_path):
    """A, B, A: A's result has all its frames, stored once (the earlier partial one replaced)."""
    from softening.makers.evaluate import evaluate_frames
    from softening.stores import get_job_store

    rng = np.random.default_rng(0)
    frames = [
        _frame("A", "0", _si(), rng.normal(size=(8, 3)), -40.0),
        _frame("B", "0", _ge(), rng.normal(size=(8, 3)), -30.0),
        _frame("A", "1", _si(0.05), rng.normal(size=(8, 3)), -40.5),
    ]
    store = get_job_store(tmp_path / "db")
    store.connect()
    (ev,) = evaluate_frames(
        ["chgnet"], frames, store=store, n_bootstrap=50, chunk_frames=2
    ).values()
    by_id = {d.material_id: d for d in ev.materials}
    assert by_id["A"].n_frames == 2 and by_id["B"].n_frames == 1
    stored = list(store.query({"output.@class": "SofteningDoc"}, properties=["output"]))
    ids = sorted(d["output"]["material_id"] for d in stored)
    assert ids == ["A", "B", "pooled"]
    # Independent check of A's scale from the stored arrays.
    doc = store.query_one({"output.material_id": "A"}, load=True)["output"]
    f_ml, f_ref = np.asarray(doc["forces_ml"]), np.asarray(doc["forces_ref"])
    assert by_id["A"].scale == pytest.approx(np.sum(f_ml * f_ref) / np.sum(f_ref**2))
    assert np.allclose(f_ref, np.concatenate([frames[0].forces, frames[2].forces]))
    assert ev.pooled.n_frames == 3


def test_mixed_compositions_under_one_id_are_split_and_flagged():
    from softening.makers.evaluate import MIXED_COMPOSITION, evaluate_frames

    rng = np.random.default_rng(1)
    frames = [
        _frame("X", "0", _si(), rng.normal(size=(8, 3))),
        _frame("X", "1", _si(0.02), rng.normal(size=(8, 3))),
        _frame("X", "2", _ge(), rng.normal(size=(8, 3))),
    ]
    (ev,) = evaluate_frames(["chgnet"], frames, n_bootstrap=20).values()
    by_id = {d.material_id: d for d in ev.materials}
    assert set(by_id) == {"X", "X:Ge"}
    assert by_id["X"].formula == "Si" and by_id["X"].n_frames == 2
    assert by_id["X:Ge"].formula == "Ge" and MIXED_COMPOSITION in by_id["X:Ge"].flags
    assert ev.pooled.material_id == "pooled" and ev.pooled.n_frames == 3


def test_a_frame_given_twice_is_refused():
    from softening.makers.evaluate import evaluate_frames

    f = _frame("A", "0", _si(), np.ones((8, 3)))
    with pytest.raises(InputError, match="appears twice"):
        evaluate_frames(["chgnet"], [f, f], n_bootstrap=10)


@needs(WBM_JSON)
def test_evaluate_datasets_summary_is_the_cli_contract(tmp_path):
    from softening.makers.evaluate import evaluate_datasets
    from softening.stores import get_job_store

    progress = []
    ev = evaluate_datasets(
        [WBM_JSON], ["chgnet"], store=get_job_store(tmp_path / "db"),
        progress=lambda n, total: progress.append((n, total)),
    )  # fmt: skip
    summary = ev.summary()
    model = summary["models"]["CHGNet-0.3.0"]
    assert sum(n for n, _ in progress) == 21 and {t for _, t in progress} == {21}
    assert model["pooled"]["n_frames"] == 21 and model["pooled"]["n_materials"] == 14
    scales = [m["scale"] for m in model["materials"]]
    assert model["pooled"]["fraction_softened"] == pytest.approx(np.mean(np.array(scales) < 1))
    assert [m["material_id"] for m in model["materials"]] == sorted(
        m["material_id"] for m in model["materials"]
    )
