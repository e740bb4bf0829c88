"""A property registered from this test module alone gets the command line, the ``--json``
object, a stored document, the report's parity plot and a table, without any package file
knowing it (softening.makers.properties)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import BaseModel, Field

from softening.makers.job import softening_job
from softening.makers.properties import PropertyFlowMaker, PropertySpec, register_property
from softening.schemas import FrameResult, FrameSpec, PropertyDoc, UMLIPResults

STRAIN = 0.03


class StrainEnergyValues(BaseModel):
    """Energy of a uniform strain, reference and model."""

    e_strain_ref: float = Field(description="Reference strain energy, eV/atom.")
    e_strain: float = Field(description="Model strain energy, eV/atom.")


class StrainEnergyDoc(PropertyDoc):
    """Strain energy of one material with one uMLIP against a reference."""

    property: str = Field("strain_energy", description="Property name.")
    values: StrainEnergyValues = Field(description="Both strain energies.")


def _energies(results: Any) -> dict[str, float]:
    if isinstance(results, UMLIPResults | dict) and "frames" in dict(results):
        results = UMLIPResults.model_validate(results).frames
    frames = [FrameResult.model_validate(r) for r in results]
    return {f.frame_id: f.energy / len(f.structure) for f in frames}


@softening_job(StrainEnergyDoc, name="strain energy compare")
def strain_compare_job(material_id: str, references: list, umlip: UMLIPResults) -> StrainEnergyDoc:
    umlip = UMLIPResults.model_validate(umlip)
    ref, ml = _energies(references), _energies(umlip)
    first = FrameResult.model_validate(references[0])
    values = StrainEnergyValues(
        e_strain_ref=ref["strained"] - ref["bulk"], e_strain=ml["strained"] - ml["bulk"]
    )
    return StrainEnergyDoc.create(
        material_id=material_id,
        composition=first.structure,
        model=umlip.model,
        reference=first.code,
        ratio=values.e_strain / values.e_strain_ref,
        values=values,
    )


@dataclass
class StrainEnergyMaker(PropertyFlowMaker):
    name: str = "strain_energy"

    def inputs(self, structure, material_id):
        strained = structure.copy()
        strained.apply_strain(STRAIN)
        formula = structure.composition.reduced_formula
        frames = [
            FrameSpec(frame_id=fid, material_id=material_id, formula=formula, structure=s)
            for fid, s in (("bulk", structure), ("strained", strained))
        ]
        return material_id, frames

    def compare(self, inputs, references, umlip, relaxed_references, relaxed_umlip, parents):
        return strain_compare_job(inputs, references, umlip)


SPEC = PropertySpec(
    name="strain_energy",
    doc_class=StrainEnergyDoc,
    make_maker=lambda reference_maker, models, options: StrainEnergyMaker(
        reference_maker=reference_maker, models=models
    ),
    pairs=lambda doc: [(doc.values.e_strain_ref, doc.values.e_strain)],
    axis="strain energy (eV/atom)",
    json_key="strain_energies",
    rows=lambda doc: [{"material": doc.material_id, **doc.values.model_dump()}],
    items=lambda doc: [("+3 %", doc.values.e_strain_ref, doc.values.e_strain, "eV/atom")],
    table_title="Strain energies: uMLIP against reference",
    relaxable=False,
)


@pytest.fixture
def registered():
    from softening.makers.properties import unregister_property

    register_property(SPEC, replace_existing=True)
    yield SPEC
    unregister_property(SPEC.name)


def test_made_up_property_end_to_end(registered, tmp_path):
    from ase.build import bulk
    from pymatgen.io.ase import AseAtomsAdaptor
    from typer.testing import CliRunner

    from softening.cli import app
    from softening.makers.properties import property_names
    from softening.workflows.properties import property_report, query_property_docs

    assert "strain_energy" in property_names()
    cif = tmp_path / "Cu.cif"
    AseAtomsAdaptor.get_structure(bulk("Cu", "fcc", a=3.6)).to(filename=str(cif))
    db = str(tmp_path / "db")
    args = ["properties", str(cif), "--property", "strain_energy", "--reference", "emt",
            "--store", db]  # fmt: skip
    runner = CliRunner()
    res = runner.invoke(app, [*args, "--json", "--out", str(tmp_path / "fig")])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    entry = out["models"]["CHGNet-0.3.0"]
    (row,) = entry["strain_energies"]
    assert row["material"] == "Cu" and row["e_strain_ref"] > 0 and row["e_strain"] > 0
    (record,) = entry["materials"]
    assert record["property"] == "strain_energy" and record["reference"] == "emt"
    assert record["ratio"] == pytest.approx(row["e_strain"] / row["e_strain_ref"])
    assert entry["summary"]["strain_energy"]["n"] == 1
    assert (tmp_path / "fig" / "strain_energy_parity.png").stat().st_size > 1000

    # The table, from the entry's title and items (the jobs are reused by content key).
    table = runner.invoke(app, args)
    assert table.exit_code == 0, table.output
    assert "Strain energies: uMLIP against reference" in table.output and "+3 %" in table.output

    # A stored document, found like any property's, and drawn by the report.
    docs = query_property_docs(db, property="strain_energy")
    assert docs and docs[0]["values"]["e_strain_ref"] == pytest.approx(row["e_strain_ref"])
    files = property_report(db, tmp_path / "report")
    assert "strain_energy" in files["property_plots"]


def test_unknown_property_lists_registered_ones(registered):
    from softening.errors import InputError
    from softening.makers.properties import get_property

    with pytest.raises(InputError, match="migration, strain_energy"):
        get_property("elastic")


def test_result_key_tells_a_hosts_hops_apart():
    """The newest document per result: a host's hops are several results, slabs are one."""
    from softening.makers.properties import result_key

    def doc(prop, path):
        return {"property": prop, "material_id": "LiFePO4", "model": {"name": "M"},
                "values": {"path": path}}  # fmt: skip

    assert result_key(doc("migration", "Li hop 0")) != result_key(doc("migration", "Li hop 1"))
    assert result_key(doc("surface", "a")) == result_key(doc("surface", "b"))
