"""Batched MD of many materials (softening.models.batched_md, BatchedMDMaker): ASE's physics, one
blow-up rule, per-material results and failures as the per-material MD gives them, resume."""

from __future__ import annotations

import numpy as np
import pytest
from ase.calculators.emt import EMT
from conftest import run_cli
from jobflow import Flow
from pymatgen.core import Lattice, Structure

from softening.errors import CalculationError
from softening.execution.local import run_flow
from softening.makers import (
    FrameSelectionMaker,
    MDSamplingMaker,
    ReferenceStaticMaker,
    UMLIPStaticMaker,
)
from softening.makers.md import run_md
from softening.models import load_model
from softening.models.backends import Backend, LoadedModel
from softening.models.batched_md import run_batched_md
from softening.workflows import SofteningFlowMaker


def _fcc(el: str, a: float) -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), [el], [[0, 0, 0]]) * (2, 1, 1)


def _si8() -> Structure:
    return Structure.from_spacegroup("Fd-3m", Lattice.cubic(5.43), ["Si"], [[0, 0, 0]])


def _overlapping() -> Structure:
    """Cu8 with two atoms 0.3 Å apart: an MD that blows up at once (min_distance 0.5)."""
    s = _fcc("Cu", 3.61)
    s.replace(1, "Cu", s[0].coords + [0.3, 0.0, 0.0], coords_are_cartesian=True)
    return s


class _EmtBackend(Backend):
    """A model family without batched parts: driven by its ASE calculator (EMT)."""

    family = "emt-test"

    def claims(self, spec, path):
        return False

    def load(self, spec, path, device, dtype, trust=False):
        raise NotImplementedError

    def calculator(self, model):
        return EMT()


def _emt_model() -> LoadedModel:
    return LoadedModel(
        name="EMT", family="emt-test", model=None, elements=frozenset({"Cu", "Al", "Ni"}),
        device="cpu", dtype="float64", backend=_EmtBackend(),
    )  # fmt: skip


def test_langevin_step_is_ases_bit_for_bit():
    """With the same forces (a calculator model), the batched loop is ASE's Langevin exactly:
    same start, same noise, same frames; a memory budget that runs one material at a time
    (the others queued) changes nothing."""
    structures = [_fcc("Cu", 3.61), _fcc("Al", 4.05), _fcc("Ni", 3.52)]
    settings = MDSamplingMaker(steps=40, stride=4, temperature=800, seed=3)
    expected = [run_md(s, EMT(), settings) for s in structures]
    for memory_gb in (None, 0.1):  # 0.1 GB: 8 atoms at the default memory per atom
        got = run_batched_md(structures, _emt_model(), settings, memory_gb=memory_gb)
        for e, g in zip(expected, got, strict=True):
            assert g.model_dump() == e.model_dump()


@pytest.fixture(scope="module")
def chgnet():
    return load_model("chgnet")


def test_batched_chgnet_samples_as_per_material_md(chgnet):
    """CHGNet through the batched forward against ASE with CHGNet's calculator: the same frames
    and, since only float32 rounding differs, trajectories within 1e-3 Å after 100 steps."""
    structures = [_fcc("Cu", 3.61), _si8()]
    settings = MDSamplingMaker(steps=100, stride=5, seed=1)
    expected = [run_md(s, chgnet.calculator(), settings) for s in structures]
    got = run_batched_md(structures, chgnet, settings)
    for e, g in zip(expected, got, strict=True):
        assert g.steps == e.steps and len(g.steps) == settings.kept_frames
        assert np.mean(g.temperatures) == pytest.approx(np.mean(e.temperatures), rel=0.03)
        assert np.allclose(g.positions, e.positions, atol=1e-3)
        assert np.allclose(g.energies, e.energies, atol=1e-2)


def test_blowup_stops_only_that_material_with_the_per_material_message(chgnet):
    settings = MDSamplingMaker(steps=10, stride=2, min_distance=0.5)
    with pytest.raises(CalculationError) as per_material:
        run_md(_overlapping(), chgnet.calculator(), settings)
    good, bad = run_batched_md([_fcc("Cu", 3.61), _overlapping()], chgnet, settings)
    assert isinstance(bad, CalculationError)
    assert str(bad) == str(per_material.value)
    assert "0.30 Å apart" in str(bad)
    assert good.steps == [4, 6, 8, 10]


def test_same_seed_same_frames(chgnet):
    structures = [_fcc("Cu", 3.61), _si8()]
    settings = MDSamplingMaker(steps=12, stride=3, seed=7)
    first = run_batched_md(structures, chgnet, settings)
    again = run_batched_md(structures, chgnet, settings)
    assert [t.model_dump() for t in first] == [t.model_dump() for t in again]
    other = run_batched_md(structures, chgnet, settings, seeds=[7, 8])
    assert other[0].model_dump() == first[0].model_dump()
    assert other[1].positions != first[1].positions


def _flow_maker(batch_md: bool) -> SofteningFlowMaker:
    return SofteningFlowMaker(
        md_maker=MDSamplingMaker(steps=20, stride=2, temperature=1000),
        select_maker=FrameSelectionMaker(n_frames=2, n_strained_plus=0, n_strained_minus=0),
        reference_maker=ReferenceStaticMaker(calculator="emt"),
        umlip_maker=UMLIPStaticMaker(),
        n_bootstrap=20,
        batch_md=batch_md,
    )


def _md_docs(store, flow) -> dict[str, dict]:
    """The MD result of each material's MD job in ``flow``, by material id."""
    uuids = [job.uuid for sub in flow.jobs if isinstance(sub, Flow) for job in sub.jobs[:1]]
    docs = store.query({"output.@class": "MDResult", "uuid": {"$in": uuids}}, load=True)
    return {d["output"]["material_id"]: d["output"] for d in docs}


def test_study_flow_batched_resumes_and_fails_as_per_material(store):
    """Per-material first (Cu, and a material that blows up), then the study again batched with
    one more material: the stored Cu MD is reused (not run again), Al is run in the batch, and
    the failing material fails with the same lines as before while the others finish."""
    ids = ["Cu", "Al", "bad"]
    structures = {"Cu": _fcc("Cu", 3.61), "Al": _fcc("Al", 4.05), "bad": _overlapping()}
    per_material = _flow_maker(batch_md=False).make([structures["Cu"], structures["bad"]],
                                                    ["Cu", "bad"])  # fmt: skip
    assert not any("batched" in job.name for job, _ in per_material.iterflow())
    first = run_flow(per_material, store, workers=1)
    first_md = _md_docs(store, per_material)

    batched_maker = _flow_maker(batch_md=True)
    batched = batched_maker.make([structures[m] for m in ids], ids)
    batch_job = batched.jobs[0]
    assert batch_job.name == "md sampling batched (3 materials)"
    second = run_flow(batched, store, workers=1)
    out = store.query_one({"uuid": batch_job.uuid}, sort={"index": -1})["output"]
    assert out["Cu"] == {"computed": False, "error": None}  # stored: not run again
    assert out["Al"] == {"computed": True, "error": None}
    assert "0.30 Å apart" in out["bad"]["error"]
    # One MD run in the batch (Al); Cu's MD job hands the stored result over.
    docs = store.query({"output.@class": "MDResult"}, properties=["name", "output.material_id"])
    runs = [
        d["output"]["material_id"] for d in docs if d["name"].startswith("md sampling batched ")
    ]
    assert runs == ["Al"]
    md = _md_docs(store, batched)
    assert md["Cu"]["reused"] is True and md["Al"]["reused"] is False
    assert md["Cu"]["content_key"] == first_md["Cu"]["content_key"]
    assert md["Cu"]["trajectory"] == first_md["Cu"]["trajectory"]
    assert len(md["Al"]["trajectory"]["steps"]) == batched_maker.md_maker.kept_frames == 8
    # The failing material's jobs fail as they did per material; nothing else fails.
    assert sorted(first.failed) == sorted(second.failed)
    assert any(line.startswith("md sampling bad: MD blew up at step 0") for line in second.failed)
    docs = store.query({"output.@class": "SofteningDoc", "hosts": batched.uuid})
    assert sorted(d["output"]["material_id"] for d in docs) == ["Al", "Cu"]


def test_run_batches_md_unless_no_batch_md(tmp_path):
    from softening.workflows.study import StudyOptions

    files = []
    for el, a in (("Cu", 3.61), ("Al", 4.05)):
        path = tmp_path / f"{el}.cif"
        _fcc(el, a).to(filename=str(path))
        files.append(path)
    opts = {"reference": "emt", "steps": 40, "stride": 2, "frames": 4, "strained": 1}

    def md_jobs(flow) -> list[str]:
        return [job.name for job, _ in flow.iterflow() if job.name.startswith("md sampling")]

    batched = StudyOptions(**opts).build(files).flow
    assert [n for n in md_jobs(batched) if "batched" in n] == ["md sampling batched (2 materials)"]
    assert len(md_jobs(batched)) == 3  # the batch and each material's MD job
    per_material = StudyOptions(**opts, batch_md=False).build(files).flow
    assert len(md_jobs(per_material)) == 2 and not any(
        "batched" in n for n in md_jobs(per_material)
    )
    assert "--no-batch-md" in run_cli("run", "--help").stdout
    assert "--batch-md" in run_cli("submit", "--help").stdout
