"""Sampling MD of many materials: one ASE MD per material against the batched MD.

Both run the same Langevin NVT (the study's settings: 1000 K, 2 fs, friction 0.01/fs, seed 0) on
the same structures (supercells of simple prototypes, 8-64 atoms, different elements):

- ``ase``: per material, ASE's ``Langevin`` driven by the model's ASE calculator, one material
  after the other (what atomate2's force-field MD maker and ``MDSamplingMaker`` do);
- ``batched``: :func:`softening.models.batched_md.run_batched_md`, all materials advancing
  together with one batched model call per step.

The model is loaded once before timing. The mean temperatures of the kept frames (over all
materials) tell that both sample the same ensemble. Usage::

    python benchmarks/bench_md.py [--materials 16] [--steps 200] [--model chgnet] [--device cpu]
        [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore")

#: (space group, lattice constant Å, species, sites, supercell): conventional cells made 8-64 atoms.
PROTOTYPES = [
    ("Fm-3m", 4.21, ["Mg", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]], (1, 1, 1)),  # 8
    ("Fm-3m", 3.61, ["Cu"], [[0, 0, 0]], (2, 2, 1)),  # 16
    ("Im-3m", 2.87, ["Fe"], [[0, 0, 0]], (2, 2, 2)),  # 16
    ("Fd-3m", 5.43, ["Si"], [[0, 0, 0]], (1, 1, 1)),  # 8
    ("Fm-3m", 4.03, ["Li", "F"], [[0, 0, 0], [0.5, 0.5, 0.5]], (2, 1, 1)),  # 16
    ("Fm-3m", 4.05, ["Al"], [[0, 0, 0]], (2, 2, 2)),  # 32
    ("Im-3m", 3.30, ["Nb"], [[0, 0, 0]], (2, 2, 1)),  # 8
    ("Fm-3m", 5.64, ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]], (2, 2, 1)),  # 32
    ("Fd-3m", 5.66, ["Ge"], [[0, 0, 0]], (2, 1, 1)),  # 16
    ("Fm-3m", 3.52, ["Ni"], [[0, 0, 0]], (2, 2, 2)),  # 32
    ("Im-3m", 3.15, ["Mo"], [[0, 0, 0]], (2, 2, 2)),  # 16
    ("Fm-3m", 4.81, ["Ca", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]], (2, 2, 1)),  # 32
    ("Fm-3m", 4.09, ["Ag"], [[0, 0, 0]], (2, 2, 4)),  # 64
    ("Im-3m", 3.51, ["Li"], [[0, 0, 0]], (2, 2, 2)),  # 16
    ("Fm-3m", 6.29, ["K", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]], (1, 1, 1)),  # 8
    ("Fm-3m", 3.92, ["Pt"], [[0, 0, 0]], (3, 2, 2)),  # 48
]


def structures(n: int) -> list:
    """``n`` structures from :data:`PROTOTYPES` (cycled, each supercell slightly rattled)."""
    import numpy as np
    from pymatgen.core import Lattice, Structure

    out = []
    rng = np.random.default_rng(0)
    for i in range(n):
        sg, a, species, sites, cell = PROTOTYPES[i % len(PROTOTYPES)]
        s = Structure.from_spacegroup(sg, Lattice.cubic(a), species, sites) * cell
        cart = s.cart_coords + rng.normal(0, 0.02, (len(s), 3))
        out.append(Structure(s.lattice, s.species, cart, coords_are_cartesian=True))
    return out


def main(argv: list[str] | None = None) -> dict:
    import numpy as np

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--materials", type=int, default=16)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--model", default="chgnet")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    from softening.makers.md import MDSamplingMaker, run_md
    from softening.models import load_model
    from softening.models.batched_md import run_batched_md

    model = load_model(args.model, device=args.device)
    mats = structures(args.materials)
    settings = MDSamplingMaker(model=args.model, steps=args.steps, stride=5)

    t0 = time.perf_counter()
    ase = [run_md(s, model.calculator(), settings) for s in mats]
    ase_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    batched = run_batched_md(mats, model, settings)
    batched_s = time.perf_counter() - t0
    failed = [str(r) for r in batched if isinstance(r, Exception)]
    if failed:
        print(f"batched MD failures: {failed}", file=sys.stderr)
    out = {
        "materials": args.materials,
        "atoms": [len(s) for s in mats],
        "steps": args.steps,
        "model": model.name,
        "device": model.device,
        "ase_s": round(ase_s, 2),
        "batched_s": round(batched_s, 2),
        "ratio": round(ase_s / batched_s, 2),
        "temperature_mean_ase": round(float(np.mean([t for r in ase for t in r.temperatures])), 1),
        "temperature_mean_batched": round(
            float(
                np.mean(
                    [t for r in batched if not isinstance(r, Exception) for t in r.temperatures]
                )
            ),
            1,
        ),
    }
    if args.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k:26s} {v}")
    return out


if __name__ == "__main__":
    main()
