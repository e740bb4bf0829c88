"""Cost of the point-defect and migration comparisons against the plain loop a user would write.

1. ``defect``: ordered B2 NiAl, EMT reference, every vacancy, antisite and two interstitials per
   species, at two supercell sizes (minimum image distance 5 and 8 Å):
   - ``package``: :class:`softening.makers.point_defects.DefectMaker` through ``run_locally`` into
     an in-memory store (one batched model call for all supercells);
   - ``plain``: pymatgen-analysis-defects' generators, ``get_supercell_structure`` and the model's
     own ASE calculator on one supercell at a time, EMT likewise, formation energies with numpy.
   Both must give the same formation energies (printed: the largest difference, eV).
2. ``migration``: an interstitial H hop in fcc Pd (rocksalt PdH's octahedral sites), the model's
   climbing-image NEB (3 images, fmax 0.1 eV/Å) then EMT on its images:
   - ``package``: :class:`softening.makers.migration.MigrationMaker` through ``run_locally``;
   - ``plain``: pymatgen-analysis-diffusion's ``MigrationGraph`` and hop supercells, ASE's NEB
     with the model's calculator, EMT on the images.

The model is loaded once before timing. Usage: ``python benchmarks/bench_defects.py [--model
chgnet] [--repeat 1] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore")
MU = {"Ni": -0.5, "Al": -0.3}


def nial():
    from pymatgen.core import Lattice, Structure

    return Structure.from_spacegroup(
        "Pm-3m", Lattice.cubic(2.88), ["Ni", "Al"], [[0, 0, 0], [0.5, 0.5, 0.5]]
    )


def pdh():
    from pymatgen.core import Lattice, Structure

    return Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(3.89), ["Pd", "H"], [[0, 0, 0], [0.5, 0.5, 0.5]]
    )


def defect_package(model: str, min_distance: float) -> tuple[dict[str, float], float, int]:
    from jobflow import JobStore, run_locally
    from maggma.stores import MemoryStore

    from softening.makers import ReferenceStaticMaker
    from softening.makers.point_defects import DefectMaker

    t0 = time.perf_counter()
    maker = DefectMaker(reference_maker=ReferenceStaticMaker(calculator="emt"), models=[model],
                        min_image_distance=min_distance, mu=MU)  # fmt: skip
    flow = maker.make(nial(), "NiAl")
    responses = run_locally(
        flow,
        store=JobStore(MemoryStore(), additional_stores={"data": MemoryStore()}),
        log=False,
        ensure_success=True,
    )
    doc = responses[flow.output[0].uuid][1].output
    rows = {r.defect: r.e for r in doc.values.rows if r.kind not in ("schottky", "frenkel")}
    return rows, time.perf_counter() - t0, doc.values.n_bulk


def defect_plain(model, min_distance: float) -> tuple[dict[str, float], float]:
    import numpy as np
    from pymatgen.analysis.defects.generators import (
        AntiSiteGenerator,
        VacancyGenerator,
        VoronoiInterstitialGenerator,
    )
    from pymatgen.io.ase import AseAtomsAdaptor

    from softening.analysis.defects import supercell_for_min_distance

    t0 = time.perf_counter()
    s = nial()
    sc = supercell_for_min_distance(s.lattice.matrix, min_distance)
    calc = model.calculator()

    def energy(struct) -> float:
        atoms = AseAtomsAdaptor.get_atoms(struct)
        atoms.calc = calc
        return float(atoms.get_potential_energy())

    e_bulk = energy(s * sc)
    defects = [*VacancyGenerator().generate(s), *AntiSiteGenerator().generate(s)]
    for el in ("Al", "Ni"):
        defects += list(VoronoiInterstitialGenerator().generate(s, insert_species=[el]))[:2]
    out, seen = {}, set()
    for d in defects:
        name, k = d.name, 2
        while name in seen:
            name, k = f"{d.name}-{k}", k + 1
        seen.add(name)
        struct = d.get_supercell_structure(sc_mat=np.diag(sc))
        struct.remove_oxidation_states()
        changes = {el.symbol: n for el, n in d.element_changes.items()}
        out[name] = energy(struct) - e_bulk - sum(n * MU[el] for el, n in changes.items())
    return out, time.perf_counter() - t0


def migration_package(model: str) -> tuple[float, float]:
    from jobflow import JobStore, run_locally
    from maggma.stores import MemoryStore

    from softening.makers import ReferenceStaticMaker
    from softening.makers.migration import MigrationMaker

    t0 = time.perf_counter()
    maker = MigrationMaker(reference_maker=ReferenceStaticMaker(calculator="emt"), models=[model],
                           ion="H", mode="interstitial", max_distance=3.0, min_length=4.0,
                           max_hops=1, n_images=3, fmax=0.1)  # fmt: skip
    flow = maker.make(pdh(), "PdH")
    responses = run_locally(
        flow,
        store=JobStore(MemoryStore(), additional_stores={"data": MemoryStore()}),
        log=False,
        ensure_success=True,
    )
    return responses[flow.output[0].uuid][1].output.values.barrier, time.perf_counter() - t0


def migration_plain(model) -> tuple[float, float]:
    import numpy as np
    from ase.calculators.emt import EMT
    from ase.mep import NEB
    from ase.optimize import BFGS, FIRE
    from pymatgen.analysis.diffusion.neb.full_path_mapper import MigrationGraph
    from pymatgen.io.ase import AseAtomsAdaptor

    t0 = time.perf_counter()
    graph = MigrationGraph.with_distance(pdh(), "H", 3.0)
    hop = min((h["hop"] for h in graph.unique_hops.values()), key=lambda h: h.length)
    start, end, _ = hop.get_sc_structures(vac_mode=False, min_length=4.0, min_atoms=1)
    ends = []
    for s in (start, end):
        atoms = AseAtomsAdaptor.get_atoms(s)
        atoms.calc = model.calculator()
        BFGS(atoms, logfile=None).run(fmax=0.1, steps=200)
        ends.append(atoms)
    images = [ends[0], *(ends[0].copy() for _ in range(3)), ends[1]]
    for img in images[1:-1]:
        img.calc = model.calculator()
    neb = NEB(images, climb=True)
    neb.interpolate(method="idpp", mic=True)
    FIRE(neb, logfile=None).run(fmax=0.1, steps=200)
    energies = np.array([img.get_potential_energy() for img in images])
    for img in images:  # EMT on the model's images, as the package's reference does
        img.calc = EMT()
        img.get_potential_energy()
    return float(energies.max() - energies.min()), time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="chgnet")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    from softening.models import load_model

    model = load_model(args.model)
    results = {"model": model.name, "defect": [], "migration": {}}
    for distance in (5.0, 8.0):
        best_p = best_q = float("inf")
        for _ in range(args.repeat):
            rows, t_pkg, n_bulk = defect_package(args.model, distance)
            plain, t_plain = defect_plain(model, distance)
            best_p, best_q = min(best_p, t_pkg), min(best_q, t_plain)
        diff = max(abs(rows[k] - plain[k]) for k in plain)
        results["defect"].append({"n_bulk": n_bulk, "defects": len(plain), "package_s": best_p,
                                  "plain_s": best_q, "max_diff_ev": diff})  # fmt: skip
        print(f"defect, {n_bulk}-atom supercell, {len(plain)} defects: package {best_p:.1f} s "
              f"(EMT + {model.name}), plain loop {best_q:.1f} s ({model.name} only), "
              f"max |diff| {diff:.1e} eV", flush=True)  # fmt: skip
    barrier, t_pkg = migration_package(args.model)
    barrier_plain, t_plain = migration_plain(model)
    results["migration"] = {"package_s": t_pkg, "plain_s": t_plain, "barrier": barrier,
                            "barrier_plain": barrier_plain}  # fmt: skip
    print(f"migration, H in Pd: package {t_pkg:.1f} s, plain NEB {t_plain:.1f} s; barrier "
          f"{barrier:.3f} / {barrier_plain:.3f} eV", flush=True)  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
