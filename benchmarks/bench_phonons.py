"""Time of the phonon comparison per material: this package's path against plain phonopy + ASE.

1. ``package``: :func:`softening.datasets.phonopy.read_phonopy_folder`, the undisplaced and displaced
   supercells evaluated in one batched call (:func:`softening.models.evaluate.evaluate_structures`),
   then :func:`softening.makers.phonons.compare_phonon_results` (both sides' force constants, mesh,
   band path, thermal properties) - what ``softening phonons`` runs per material, without jobflow
   and the store.
2. ``phonopy+ase``: ``phonopy.load`` of the same files, the model's own ASE calculator called once
   per supercell (the undisplaced one subtracted), force constants, the same mesh (no band path, no
   thermal properties: less work).

Both totals and the seconds spent in the model (batched call; ASE loop) are shown.

The model is loaded once before timing (both ways share it). Reported per material: seconds of each
way, the omega_max ratio of each (they must agree within the mesh difference: Gamma-centred here,
phonopy's default there), and the number of supercells.

Usage: ``python benchmarks/bench_phonons.py [FOLDER ...] [--model chgnet] [--repeat 3] [--json out]``
(default folders: ``../shared/data/phonopy_examples/*``).
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
ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT.parent / "shared" / "data" / "phonopy_examples"


def package_way(folder: Path, model, mesh) -> tuple[float, int, float]:
    """omega_max ratio, number of supercells and seconds in the model, the package's way."""
    from softening.datasets.phonopy import read_phonopy_folder
    from softening.makers.phonon_setup import phonon_frames, reference_frames, setup_from_data
    from softening.makers.phonons import compare_phonon_results
    from softening.models.evaluate import evaluate_structures
    from softening.schemas import CodeInfo, FrameResult, UMLIPResults

    data = read_phonopy_folder(folder)
    setup = setup_from_data(data)
    frames = phonon_frames(setup, data.material)
    t0 = time.perf_counter()
    preds = evaluate_structures(model, [f.structure for f in frames])
    t_model = time.perf_counter() - t0
    results = [
        FrameResult(
            frame_id=f.frame_id,
            material_id=data.material,
            formula=data.formula,
            structure=f.structure,
            energy=p.energy,
            forces=p.forces.tolist(),
            code=CodeInfo(name=model.name),
        )  # fmt: skip
        for f, p in zip(frames, preds, strict=True)
    ]
    doc = compare_phonon_results(
        setup, reference_frames(data), UMLIPResults(model=model.info, frames=results),
        data.material, mesh=mesh,
    )  # fmt: skip
    return doc.values.omega_max_ratio, len(frames), t_model


def plain_way(folder: Path, calc, mesh) -> tuple[float, float]:
    """omega_max ratio and seconds in the model, plain phonopy and the model's ASE calculator."""
    import numpy as np
    import phonopy
    from ase import Atoms

    def forces(cell):
        atoms = Atoms(
            cell.symbols, cell=cell.cell, scaled_positions=cell.scaled_positions, pbc=True
        )
        atoms.calc = calc
        return atoms.get_forces()

    disp = folder / "phonopy_disp.yaml"
    sets = folder / "FORCE_SETS"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if sets.is_file():
            dft = phonopy.load(disp, force_sets_filename=sets, is_nac=False, log_level=0)
        else:  # Si: the vasprun.xml of its one displacement
            from pymatgen.io.vasp import Vasprun

            dft = phonopy.load(disp, is_nac=False, produce_fc=False, log_level=0)
            runs = sorted(folder.glob("vasprun*.xml*"))
            dft.forces = [np.asarray(Vasprun(str(r)).ionic_steps[-1]["forces"]) for r in runs]
            dft.produce_force_constants()
        dft.run_mesh(list(mesh))
        ml = phonopy.load(disp, is_nac=False, produce_fc=False, log_level=0)
        t0 = time.perf_counter()
        residual = forces(ml.supercell)
        ml.forces = [forces(c) - residual for c in ml.supercells_with_displacements]
        t_model = time.perf_counter() - t0
        ml.produce_force_constants()
        ml.symmetrize_force_constants()
        ml.run_mesh(list(mesh))
    return float(ml.mesh.frequencies.max() / dft.mesh.frequencies.max()), t_model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folders", nargs="*", type=Path)
    parser.add_argument("--model", default="chgnet")
    parser.add_argument("--repeat", type=int, default=3, help="runs per way; the best is kept")
    parser.add_argument("--mesh", type=int, nargs=3, default=[16, 16, 16])
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    sys.path.insert(0, str(ROOT))
    from softening.models import load_model

    folders = args.folders or sorted(p for p in EXAMPLES.iterdir() if p.is_dir())
    model = load_model(args.model)
    calc = model.calculator()
    rows = []
    header = (f"{'material':<10}{'cells':>6}{'package s':>11}{'(model s)':>11}"
              f"{'phonopy+ase s':>15}{'(model s)':>11}{'ratio pkg':>11}{'ratio plain':>13}")  # fmt: skip
    print(f"{model.name}, mesh {args.mesh}, best of {args.repeat}\n{header}")
    for folder in folders:
        runs_pkg, runs_plain = [], []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            r_pkg, n, m_pkg = package_way(folder, model, args.mesh)
            runs_pkg.append((time.perf_counter() - t0, m_pkg))
            t0 = time.perf_counter()
            r_plain, m_plain = plain_way(folder, calc, args.mesh)
            runs_plain.append((time.perf_counter() - t0, m_plain))
        (t_pkg, m_pkg), (t_plain, m_plain) = min(runs_pkg), min(runs_plain)
        row = {
            "material": folder.name, "supercells": n, "package_s": t_pkg, "package_model_s": m_pkg,
            "plain_s": t_plain, "plain_model_s": m_plain, "ratio_package": r_pkg,
            "ratio_plain": r_plain,
        }  # fmt: skip
        rows.append(row)
        print(f"{folder.name:<10}{n:>6}{t_pkg:>11.2f}{m_pkg:>11.2f}{t_plain:>15.2f}{m_plain:>11.2f}"
              f"{r_pkg:>11.3f}{r_plain:>13.3f}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"model": model.name, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
