"""Wall time of corrections and fine-tunes for each family and mode (the paper's recipe by default).

Data: mlearn Si AIMD at 843 K (18 frames of 64 atoms); ``--train-frames`` per material are trained on
(highest energy first), the rest held out. For each (model, mode) one process runs the fit and the
verification and reports the fit's wall time, seconds per epoch and the held-out MAE before/after.

The paper's recipe is 100 epochs (``--epochs 100``, the default); tests use a few epochs.
MACE is measured on a tiny model trained here (MACE-MP-0 weights cannot be downloaded): its cost is
far below MACE-MP-0's, so its figure is a lower bound.

Usage: ``python benchmarks/bench_finetune.py [--epochs 100] [--train-frames 10]
[--models chgnet m3gnet mace] [--modes scale head full] [--json out.json]``
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "mlearn" / "Si" / "training.json"
SPECS = {
    "chgnet": "chgnet",
    "m3gnet": str(ROOT.parent / "shared" / "models" / "M3GNet-MP-2021.2.8-PES"),
}


def tiny_mace(workdir: Path) -> Path:
    """A tiny MACE model (2 epochs of mace's trainer on 20 mlearn Si frames)."""
    out = workdir / "tiny" / "tiny.model"
    if out.exists():
        return out
    from ase.io import write

    from softening.datasets import read_frames

    out.parent.mkdir(parents=True, exist_ok=True)
    atoms = []
    for f in read_frames(DATA)[:20]:
        a = f.structure.to_ase_atoms()
        a.info["REF_energy"], a.arrays["REF_forces"] = f.energy, f.forces
        atoms.append(a)
    write(out.parent / "train.extxyz", atoms[:16])
    write(out.parent / "valid.extxyz", atoms[16:])
    args = (
        "--name tiny --train_file train.extxyz --valid_file valid.extxyz --energy_key REF_energy "
        "--forces_key REF_forces --model MACE --num_interactions 2 --num_channels 8 --max_L 0 "
        "--r_max 4.0 --max_ell 1 --correlation 2 --num_radial_basis 4 --E0s average "
        "--batch_size 4 --valid_batch_size 4 --max_num_epochs 2 --device cpu "
        "--default_dtype float64 --seed 0"
    ).split()
    subprocess.run(
        [sys.executable, "-m", "mace.cli.run_train", *args],
        cwd=out.parent,
        check=True,
        capture_output=True,
    )
    return out


def worker(spec: str, mode: str, epochs: int, k: int, workdir: Path) -> dict:
    from softening.datasets import read_frames
    from softening.makers.correction import CorrectionMaker, fit_correction, verify_correction
    from softening.models.finetune import FineTuneSettings
    from softening.stores import CodeInfo, FrameResult

    frames = [f for f in read_frames(DATA) if f.group == "AIMD-NVT" and "843 K" in f.description]
    refs = [
        FrameResult(
            frame_id=f.frame_id,
            material_id=f.material_key,
            formula=f.formula,
            structure=f.structure,
            energy=f.energy,
            forces=f.forces.tolist(),
            code=CodeInfo(name="vasp"),
            region=f.region,
        )
        for f in frames
    ]
    maker = CorrectionMaker(
        model=spec,
        mode=mode,
        train_frames=1 if mode == "scale" else k,
        finetune=FineTuneSettings(epochs=epochs),
        models_dir=str(workdir / "models"),
    )
    t0 = time.perf_counter()
    corr = fit_correction(refs, maker)
    wall = time.perf_counter() - t0
    doc = verify_correction(refs, corr)
    return {
        "model": corr.base_model.name,
        "mode": mode,
        "epochs": 0 if mode == "scale" else epochs,
        "train_frames": len(corr.train_frames),
        "fit_wall_s": wall,
        "s_per_epoch": None if mode == "scale" else wall / epochs,
        "mae_before": doc.before["mae"],
        "mae_after": doc.after["mae"],
        "scale_before": doc.before["scale"],
        "scale_after": doc.after["scale"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--train-frames", type=int, default=10)
    ap.add_argument("--models", nargs="+", default=["chgnet", "m3gnet", "mace"])
    ap.add_argument("--modes", nargs="+", default=["scale", "head", "full"])
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/softening-bench-ft"))
    ap.add_argument("--json", type=Path)
    ap.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.worker:
        r = worker(*args.worker, args.epochs, args.train_frames, args.workdir)
        print(json.dumps(r))
        return
    specs = dict(SPECS)
    if "mace" in args.models:
        specs["mace"] = str(tiny_mace(args.workdir))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    rows = []
    for name in args.models:
        for mode in args.modes:
            cmd = [
                sys.executable,
                __file__,
                "--epochs",
                str(args.epochs),
                "--train-frames",
                str(args.train_frames),
                "--workdir",
                str(args.workdir),
                "--worker",
                specs[name],
                mode,
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            try:
                r = json.loads(proc.stdout.strip().splitlines()[-1])
            except (IndexError, json.JSONDecodeError):
                print(f"{name} {mode}: failed: {proc.stderr.strip()[-300:]}")
                continue
            rows.append(r)
            per = f"{r['s_per_epoch']:.1f} s/epoch" if r["s_per_epoch"] else "closed form"
            print(
                f"{r['model']:24s} {mode:5s} {r['train_frames']:2d} frames {r['fit_wall_s']:7.1f} s "
                f"({per})  held-out MAE {r['mae_before']:.3f} -> {r['mae_after']:.3f} eV/Å, "
                f"scale {r['scale_before']:.3f} -> {r['scale_after']:.3f}",
                flush=True,
            )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
