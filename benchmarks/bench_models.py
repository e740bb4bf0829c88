"""Throughput and peak memory of uMLIP single points: three ways side by side, one run.

1. ``batched``: the package's path (``softening.models.evaluate.evaluate_structures``): the model
   loaded once, graphs built once per frame in worker processes on the spare cores (here
   ``--graph-workers``, default 1) while the model evaluates, memory-bounded batches.
   ``batched-serial`` is the same with the graphs built in the main process (one core in all).
2. ``ase-loop``: the model's own ASE calculator (``CHGNetCalculator``, matgl's ``PESCalculator``,
   ``MACECalculator``), loaded once, called once per frame.
3. ``atomate2``: atomate2's ``ForceFieldStaticMaker``, one jobflow job per frame (run_locally).

Each (model, way) runs in its own subprocess so that peak RSS (``ru_maxrss``) is its own. Same frames,
device, dtype (float32) and thread count everywhere. Reported: frames/s, speed-up over the ASE loop,
peak RSS, the share of the batched time spent in the model's forward + backward pass, and the largest
force difference against the ASE loop.

MACE-MP-0 weights cannot be downloaded here, so MACE is measured on a randomly initialised model with
MACE-MP-0 *medium*'s architecture (128x0e+128x1o, 2 interactions, r_max 6 Å, correlation 3, 89
elements): the cost is the architecture's, the forces are meaningless (they are compared only between
ways).

Usage: ``python benchmarks/bench_models.py [--frames 16] [--models chgnet m3gnet mace] [--json out]``
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
M3GNET = ROOT.parent / "shared" / "models" / "M3GNet-MP-2021.2.8-PES"


def frames(n: int) -> list:
    """n rattled frames each of Si8, Si64, Mg4O4 and Mg32O32 (seeded)."""
    import numpy as np
    from pymatgen.core import Lattice, Structure

    si = Structure.from_spacegroup("Fd-3m", Lattice.cubic(5.43), ["Si"], [[0, 0, 0]])
    mgo = Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(4.21), ["Mg", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]]
    )
    rng = np.random.default_rng(0)
    out = []
    for base in (si, si * 2, mgo, mgo * 2):
        for _ in range(n):
            s = base.copy()
            for i, d in enumerate(rng.normal(0, 0.08, (len(s), 3))):
                s.translate_sites([i], d, frac_coords=False)
            out.append(s)
    return out


def mace_proxy(path: Path) -> Path:
    """Save a random-weight model with MACE-MP-0 medium's architecture as a whole pickled module."""
    if path.exists():
        return path
    import numpy as np
    import torch
    from mace import modules  # first: mace lets e3nn's own pickled constants load (torch >= 2.6)

    o3 = importlib.import_module("e3nn.o3")

    torch.manual_seed(0)
    z = list(range(1, 90))
    model = modules.ScaleShiftMACE(
        r_max=6.0,
        num_bessel=10,
        num_polynomial_cutoff=5,
        max_ell=3,
        interaction_cls=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
        interaction_cls_first=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
        num_interactions=2,
        num_elements=len(z),
        hidden_irreps=o3.Irreps("128x0e+128x1o"),
        MLP_irreps=o3.Irreps("16x0e"),
        atomic_energies=np.zeros(len(z)),
        avg_num_neighbors=61.0,
        atomic_numbers=z,
        correlation=3,
        gate=torch.nn.functional.silu,
        radial_MLP=[64, 64, 64],
        radial_type="bessel",
        atomic_inter_scale=1.0,
        atomic_inter_shift=0.0,
    )
    torch.save(model, path)
    return path


def spec_of(name: str, workdir: Path) -> str:
    return {
        "chgnet": "chgnet",
        "m3gnet": str(M3GNET),
        "mace": str(workdir / "mace_mp0_proxy.model"),
    }[name]


def worker(name: str, way: str, n: int, workdir: Path, graph_workers: int = 1) -> dict:
    """Run one (model, way) measurement in this process."""
    import numpy as np

    from softening.models import load_model
    from softening.models.evaluate import TIMINGS, evaluate_structures

    structures = frames(n)
    model = load_model(spec_of(name, workdir), dtype="float32", threads=1)
    n_atoms = sum(len(s) for s in structures)
    if way.startswith("batched"):
        workers = 0 if way == "batched-serial" else graph_workers
        evaluate_structures(model, structures[:2])  # warm-up (lazy imports, allocator)
        TIMINGS.update(graphs=0.0, model=0.0)
        t0 = time.perf_counter()
        preds = evaluate_structures(model, structures, graph_workers=workers)
        wall = time.perf_counter() - t0
        forces = [p.forces for p in preds]
        extra = {
            "model_share": TIMINGS["model"] / wall,
            "graph_share": TIMINGS["graphs"] / wall,  # with workers: time spent waiting for them
            "graph_workers": workers,
        }
    elif way == "ase-loop":
        calc = model.calculator()
        a = structures[0].to_ase_atoms()
        a.calc = calc
        a.get_forces()  # warm-up
        t0 = time.perf_counter()
        forces = []
        for s in structures:
            atoms = s.to_ase_atoms()
            atoms.calc = calc
            forces.append(atoms.get_forces())
            atoms.get_stress()
        wall = time.perf_counter() - t0
        extra = {}
    else:  # atomate2: one job per frame, the way a user would chain atomate2's static maker
        from atomate2.forcefields.jobs import ForceFieldStaticMaker
        from jobflow import Flow, run_locally

        ff = {"chgnet": ("CHGNet", {}), "mace": ("MACE", {"model": spec_of(name, workdir)})}
        if name not in ff:
            return {"model": name, "way": way, "error": "atomate2 loads M3GNet only from the hub"}
        ffname, kwargs = ff[name]
        # atomate2 loads MACE files through mace's calculator, which relies on the variable mace
        # sets on import (softening's loader removes it again and passes weights_only itself).
        os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"
        maker = ForceFieldStaticMaker(force_field_name=ffname, calculator_kwargs=kwargs)
        jobs = [maker.make(s) for s in structures]
        os.chdir(workdir)  # atomate2's jobs write files into the working folder
        t0 = time.perf_counter()
        resp = run_locally(Flow(jobs), log=False, ensure_success=True)
        wall = time.perf_counter() - t0
        forces = [np.array(resp[j.uuid][1].output.output.forces) for j in jobs]
        extra = {}
    return {
        "model": model.name,
        "way": way,
        "frames": len(structures),
        "atoms": n_atoms,
        "wall_s": wall,
        "frames_per_s": len(structures) / wall,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "forces": [f.tolist() for f in forces],
        **extra,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=16, help="frames per structure kind (4 kinds)")
    ap.add_argument("--models", nargs="+", default=["chgnet", "m3gnet", "mace"])
    ap.add_argument(
        "--ways", nargs="+", default=["batched", "batched-serial", "ase-loop", "atomate2"]
    )
    ap.add_argument(
        "--graph-workers", type=int, default=1, help="graph-building processes of `batched`"
    )
    ap.add_argument("--json", type=Path, help="write all results here")
    ap.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/softening-bench"))
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.worker:
        result = worker(*args.worker, args.frames, args.workdir, args.graph_workers)
        print(json.dumps(result))
        return
    if "mace" in args.models:
        mace_proxy(args.workdir / "mace_mp0_proxy.model")
    import numpy as np

    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    results = []
    for name in args.models:
        rows = {}
        for way in args.ways:
            cmd = [
                sys.executable,
                __file__,
                "--frames",
                str(args.frames),
                "--workdir",
                str(args.workdir),
                "--graph-workers",
                str(args.graph_workers),
                "--worker",
                name,
                way,
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            try:
                rows[way] = json.loads(proc.stdout.strip().splitlines()[-1])
            except (IndexError, json.JSONDecodeError):
                rows[way] = {"model": name, "way": way, "error": proc.stderr.strip()[-300:]}
        base = rows.get("ase-loop", {})
        for way, r in rows.items():
            if "error" in r:
                print(f"{name:8s} {way:14s} n/a: {r['error'][-200:]}")
                results.append(r)
                continue
            fmax = None
            if "forces" in base and way != "ase-loop":
                fmax = max(
                    float(np.abs(np.array(a) - np.array(b)).max())
                    for a, b in zip(r["forces"], base["forces"], strict=True)
                )
            speedup = r["frames_per_s"] / base["frames_per_s"] if "frames_per_s" in base else None
            r = {k: v for k, v in r.items() if k != "forces"} | {
                "speedup_vs_ase": speedup,
                "max_force_diff_vs_ase": fmax,
            }
            results.append(r)
            share = (
                f" model {100 * r['model_share']:.0f} % graphs {100 * r['graph_share']:.0f} %"
                if "model_share" in r
                else ""
            )
            print(
                f"{r['model']:24s} {way:14s} {r['frames_per_s']:7.1f} frames/s  "
                + (f"x{speedup:4.2f} vs ASE" if speedup else " " * 11)
                + f"  peak RSS {r['peak_rss_mb']:6.0f} MB"
                + (f"  max|dF| {fmax:.1e} eV/Å" if fmax is not None else "")
                + share
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
