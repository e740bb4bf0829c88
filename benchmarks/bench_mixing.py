"""Cost of the solid-solution comparison (``softening mixing``) against a plain per-cell loop.

Data: the Cu-Ag-Au cells of ``../shared/data/solid_solutions/Cu-Ag-Au`` (1,079 fcc cells of 1-6
atoms with VASP energies), the first ``n`` cells in name order plus the three pure elements, for
two sizes ``n`` (default 108 and 1,079: ten times the work should cost about ten times).

- ``package``: :func:`softening.datasets.mixing.read_mixing_data`, one batched call
  (:func:`softening.models.evaluate.evaluate_structures`) over every cell, then
  :func:`softening.makers.mixing.compare_mixing_results` (formation energies, both hulls, the
  summary) - what ``softening mixing`` runs, without jobflow and the store;
- ``ase``: what a user would otherwise write: pymatgen ``Vasprun``-free parsing is not available
  for the stripped files, so ``read_mixing_data`` reads them too, then the model's own ASE
  calculator on one cell at a time and the formation energies with numpy (no hull).

Both must give the same formation energies (printed: the largest difference, eV/atom). The model is
loaded once before timing. Usage: ``python benchmarks/bench_mixing.py [--model chgnet]
[--sizes 108 1079] [--repeat 3] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "solid_solutions" / "Cu-Ag-Au"
PURE = ("1-0-0", "1-0-1", "1-0-2")


def subset(n: int, where: Path) -> Path:
    """A folder holding the pure cells and the first ``n`` others (symbolic links)."""
    names = [p.name for p in sorted(DATA.iterdir()) if p.is_dir() and p.name not in PURE]
    folder = where / f"cells-{n}"
    folder.mkdir()
    for name in (*PURE, *names[: max(0, n - len(PURE))]):
        (folder / name).symlink_to(DATA / name)
    return folder


def package(folder: Path, model) -> tuple[dict[str, float], float, float]:
    """Formation energies by cell the package's way, total seconds and seconds in the model."""
    from softening.datasets.mixing import read_mixing_data
    from softening.makers.mixing import (
        compare_mixing_results,
        data_frames,
        data_inputs,
        data_references,
    )
    from softening.makers.surfaces import umlip_results

    t0 = time.perf_counter()
    data = read_mixing_data(folder)
    inputs = data_inputs(data)
    frames = data_frames(data, inputs["system"])
    t1 = time.perf_counter()
    ml = umlip_results(frames, model)
    t_model = time.perf_counter() - t1
    doc = compare_mixing_results(inputs, data_references(data, inputs["system"]), ml)
    total = time.perf_counter() - t0
    return {c.cell: c.e_form for c in doc.values.cells}, total, t_model


def plain(folder: Path, model) -> tuple[dict[str, float], float, float]:
    """The same formation energies with the model's ASE calculator, one cell at a time."""
    import numpy as np
    from pymatgen.io.ase import AseAtomsAdaptor

    from softening.datasets.mixing import read_mixing_data

    t0 = time.perf_counter()
    cells = read_mixing_data(folder).cells
    calc = model.calculator()
    t_model, energies = 0.0, []
    for c in cells:
        atoms = AseAtomsAdaptor.get_atoms(c.structure)
        atoms.calc = calc
        t1 = time.perf_counter()
        energies.append(float(atoms.get_potential_energy()))
        t_model += time.perf_counter() - t1
    species = [c.structure.composition for c in cells]
    e = np.array(energies)
    n = np.array([comp.num_atoms for comp in species])
    mu = {
        el: min(e[i] / n[i] for i, comp in enumerate(species) if comp.elements == [el])
        for el in {el for comp in species for el in comp.elements}
    }
    form = {
        c.frame_id: (e[i] - sum(mu[el] * amt for el, amt in species[i].items())) / n[i]
        for i, c in enumerate(cells)
    }
    return form, time.perf_counter() - t0, t_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="chgnet")
    parser.add_argument("--sizes", type=int, nargs="+", default=[108, 1079])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    from softening.models import load_model

    model = load_model(args.model)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            folder = subset(n, Path(tmp))
            best: dict[str, tuple[float, float]] = {}
            results = {}
            for _ in range(args.repeat):
                for name, fn in (("package", package), ("ase", plain)):
                    form, total, t_model = fn(folder, model)
                    results[name] = form
                    if name not in best or total < best[name][0]:
                        best[name] = (total, t_model)
            diff = max(abs(results["package"][k] - results["ase"][k]) for k in results["ase"])
            row = {
                "cells": len(results["ase"]),
                "package_s": best["package"][0],
                "package_model_s": best["package"][1],
                "ase_s": best["ase"][0],
                "ase_model_s": best["ase"][1],
                "speedup": best["ase"][0] / best["package"][0],
                "max_diff_ev_per_atom": diff,
            }
            rows.append(row)
            print(
                f"{row['cells']:5d} cells: package {row['package_s']:.2f} s "
                f"(model {row['package_model_s']:.2f} s), ASE loop {row['ase_s']:.2f} s "
                f"(model {row['ase_model_s']:.2f} s), x{row['speedup']:.2f}, "
                f"max |diff| {diff:.1e} eV/atom",
                flush=True,
            )
            shutil.rmtree(folder)
    if len(rows) > 1:
        a, b = rows[0], rows[-1]
        work = b["cells"] / a["cells"]
        print(
            f"{work:.1f}x the cells: package x{b['package_s'] / a['package_s']:.1f}, "
            f"ASE loop x{b['ase_s'] / a['ase_s']:.1f}"
        )
    if args.json:
        args.json.write_text(json.dumps({"model": model.name, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
