"""Cost of the surface, vacancy and barrier comparisons, per property.

1. ``surfaces``: mlearn slabs + the ground-state bulk frame (``../shared/data/mlearn/Si``) with each
   model, two ways:
   - ``package``: :func:`softening.datasets.surfaces.read_surface_data`, one batched call
     (:func:`softening.models.evaluate.evaluate_structures`) over the bulk frame and every slab, then
     :func:`softening.makers.surfaces.compare_surface_results` - what ``softening surfaces`` runs,
     without jobflow and the store;
   - ``ase``: ``json`` + the model's own ASE calculator called once per frame, the same formula.
   Both must give the same surface energies (printed: the largest difference, J/m^2).
2. ``vacancy``: :class:`softening.makers.vacancy.VacancyMaker` on fcc Cu (EMT reference, 3x3x3
   primitive supercell, unrelaxed and relaxed) through ``run_locally`` into an in-memory store.
3. ``barrier``: :class:`softening.makers.barrier.BarrierMaker` on fcc Cu (the model's climbing-image
   NEB, 3 images, fmax 0.1 eV/Å, then EMT single points on its images).

The models are loaded once before timing. Usage:
``python benchmarks/bench_properties.py [--model chgnet --model PATH] [--repeat 3] [--json out]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
SI = ROOT.parent / "shared" / "data" / "mlearn" / "Si"
EV_A2_TO_J_M2 = 16.02176634


def surfaces_package(paths: list[Path], model) -> tuple[dict[str, float], float]:
    """Surface energies (J/m^2 by frame source) the package's way, and seconds in the model."""
    from softening.datasets.surfaces import read_surface_data
    from softening.makers.surfaces import (
        compare_surface_results,
        reference_results,
        surface_frames,
        surface_inputs,
        umlip_results,
    )

    (data,) = read_surface_data(paths)
    inputs = surface_inputs(data)
    frames = surface_frames(data, inputs)
    t0 = time.perf_counter()
    ml = umlip_results(frames, model)
    t_model = time.perf_counter() - t0
    doc = compare_surface_results(inputs, reference_results(data, inputs), ml)
    return {r.source: r.gamma for r in doc.values.rows}, t_model


def surfaces_ase(paths: list[Path], model) -> tuple[dict[str, float], float]:
    """The same with json and the model's ASE calculator, one frame at a time."""
    import numpy as np
    from pymatgen.core import Structure

    calc = model.calculator()
    records = [(p, i, r) for p in paths for i, r in enumerate(json.loads(p.read_text()))]
    t_model = 0.0

    def energy(rec) -> float:
        nonlocal t_model
        atoms = Structure.from_dict(rec["structure"]).to_ase_atoms()
        atoms.calc = calc
        t0 = time.perf_counter()
        e = float(atoms.get_potential_energy())
        t_model += time.perf_counter() - t0
        return e

    (ground,) = [r for _, _, r in records if r["description"] == "Ground state crystal"]
    e_bulk = energy(ground) / len(ground["structure"]["sites"])
    out = {}
    for p, i, r in records:
        if r["group"] != "Surface":
            continue
        m = np.array(r["structure"]["lattice"]["matrix"])
        area = np.linalg.norm(np.cross(m[0], m[1]))  # mlearn slabs: vacuum along c
        n = len(r["structure"]["sites"])
        out[f"{p}@{i}"] = (energy(r) - n * e_bulk) / (2 * area) * EV_A2_TO_J_M2
    return out, t_model


def timed(fn, repeat: int):
    best, result = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def flow_cost(maker, structure) -> tuple[float, object]:
    """Seconds of one flow run into a fresh in-memory store, and its first document."""
    from jobflow import JobStore, run_locally
    from maggma.stores import MemoryStore

    store = JobStore(MemoryStore(), additional_stores={"data": MemoryStore()})
    flow = maker.make(structure, "Cu")
    t0 = time.perf_counter()
    out = run_locally(flow, store=store, ensure_success=True, log=False)
    wall = time.perf_counter() - t0
    ref = flow.output[0]
    return wall, out[ref.uuid][max(out[ref.uuid])].output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", help="model spec (repeat); default chgnet")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    from ase.build import bulk
    from pymatgen.io.ase import AseAtomsAdaptor

    from softening.makers import ReferenceStaticMaker
    from softening.makers.barrier import BarrierMaker
    from softening.makers.vacancy import VacancyMaker
    from softening.models import load_model

    paths = [SI / "training.json", SI / "test.json"]
    rows = []
    for spec in args.model or ["chgnet"]:
        model = load_model(spec)
        surfaces_package(paths, model)  # warm-up (graph code paths, caches)
        t_pkg, (g_pkg, m_pkg) = timed(lambda m=model: surfaces_package(paths, m), args.repeat)
        t_ase, (g_ase, m_ase) = timed(lambda m=model: surfaces_ase(paths, m), args.repeat)
        diff = max(abs(g_pkg[k] - g_ase[k]) for k in g_pkg)
        below = sum(g_pkg[k] < 0 for k in g_pkg)  # sanity: no negative surface energy
        rows.append(
            {
                "property": "surface",
                "model": model.name,
                "frames": len(g_pkg) + 1,
                "package_s": t_pkg,
                "package_model_s": m_pkg,
                "ase_s": t_ase,
                "ase_model_s": m_ase,
                "max_gamma_difference_J_m2": diff,
                "negative": below,
            }
        )
    cu = AseAtomsAdaptor.get_structure(bulk("Cu", "fcc", a=3.6))
    emt = ReferenceStaticMaker(calculator="emt")
    for spec in args.model or ["chgnet"]:
        name = load_model(spec).name
        wall, doc = flow_cost(
            VacancyMaker(reference_maker=emt, models=[spec], min_image_distance=7.0, relax=True),
            cu,
        )
        r = doc.values.rows[0]
        rows.append({"property": "vacancy", "model": name, "flow_s": wall, "frames": 2,
                     "e_vac_ref": r.e_vac_ref, "e_vac": r.e_vac})  # fmt: skip
        wall, doc = flow_cost(
            BarrierMaker(reference_maker=emt, models=[spec], min_image_distance=7.0, n_images=3,
                         fmax=0.1, steps=150),
            cu,
        )  # fmt: skip
        v = doc.values
        rows.append({"property": "barrier", "model": name, "flow_s": wall, "frames": v.n_images,
                     "neb_steps": v.neb_steps, "barrier_ref": v.barrier_ref,
                     "barrier": v.barrier})  # fmt: skip
    for r in rows:
        print(json.dumps(r))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
