"""The doctor's one list of contributing layers: every layer's checks, in the report's order, and a
layer that cannot be imported as one failed line instead of a crash."""

from __future__ import annotations

import importlib

from softening.cli import doctor
from softening.health import DoctorRequest, PlannedCheck


def test_every_listed_layer_contributes_its_checks_in_order():
    request = DoctorRequest(models=("chgnet",))
    contributed = {
        module: [c.name for c in importlib.import_module(module).plan_checks(request)]
        for module in doctor.CHECKS
    }
    assert contributed == {
        "softening.health": ["packages"],
        "softening.models.health": ["torch", "gpu", "model chgnet", "model m3gnet"],
        "softening.makers.health": ["gpaw", "vasp command", "potcars"],
        "softening.stores.health": ["store", "store integrity"],
        "softening.hpc.health": ["launchpad", "slurm", "queue adapter"],
    }
    plan = doctor.plan_checks(request)
    assert all(isinstance(c, PlannedCheck) for c in plan)
    assert [c.name for c in plan] == [n for names in contributed.values() for n in names]


def test_a_layer_that_cannot_be_imported_is_one_failed_line(monkeypatch):
    monkeypatch.setattr(doctor, "CHECKS", ("softening.health", "softening.no_such_layer.health"))
    report = doctor.run_checks(models=[])
    assert [c.name for c in report.checks] == ["packages", "softening.no_such_layer.health checks"]
    broken = report.by_name("softening.no_such_layer.health checks")
    assert broken.status == "fail" and "softening.no_such_layer" in broken.detail
    assert "pip install" in broken.fix and not report.ok
