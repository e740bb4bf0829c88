"""How the cost of paper-scale work grows, side by side with the tools a user would otherwise pick.

Sections (each runs in fresh subprocesses, so that process start, imports and memory are their own):

``evaluate``
    ``softening evaluate`` on WBM-layout files of ``--sizes`` frames (default 100, 1000, 10000)
    built from the shared 21-frame subset: rattled copies (0.01 Å) under new material ids, so no
    two frames are equal. Reported: wall time from process start to results in the store, time
    per frame, and peak memory above the baseline after the model is loaded (RSS sampled every
    20 ms in a process that loads the model, then evaluates).
``peers``
    The same ``--peer-frames`` (default 1050) frames and the same CHGNet 0.3.0 through matcalc's
    ``SofteningBenchmark`` (given a ``pathlib.Path``: a string name would make it download) and
    through a plain loop over CHGNet's ASE calculator; per-material scales compared with
    ``softening``'s.
``run``
    ``softening run --reference emt`` (8-atom fcc cells of Cu, Al, Ni, Ag, Au, Pd, Pt at several
    lattice constants, a 40-step MD, 4 frames) on ``--materials`` (default 10 and 100) materials:
    time per material.
``references``
    The demo's reference stage: GPAW at the demo's settings (500 eV, k-spacing 0.5/Å) on 10
    rattled frames each of examples/Si.cif and examples/MgO.cif, with 1 worker and with 2.

Usage::

    .venv/bin/python benchmarks/bench_scale.py evaluate peers run references [--json out.json]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUBSET = ROOT.parent / "shared" / "data" / "wbm_high_energy_subset" / "wbm_subset_21frames.json.gz"
PY = sys.executable
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def make_wbm(n_frames: int, path: Path, seed: int = 0, subset: Path = SUBSET) -> int:
    """A WBM-layout file of about ``n_frames`` frames: rattled copies of the subset's materials."""
    import numpy as np

    data = json.loads(gzip.open(subset).read())
    rng = np.random.default_rng(seed)
    out: dict = {}
    n = copy = 0
    while n < n_frames:
        for mid, frames in data.items():
            if n >= n_frames:
                break
            new_id = f"{mid}-copy{copy}"
            out[new_id] = {}
            for fid, rec in frames.items():
                rec = json.loads(json.dumps(rec))
                inv = np.linalg.inv(np.asarray(rec["structure"]["lattice"]["matrix"]))
                for site in rec["structure"]["sites"]:
                    xyz = np.asarray(site["xyz"]) + rng.normal(0, 0.01, 3)
                    site["xyz"] = xyz.tolist()
                    site["abc"] = (xyz @ inv).tolist()
                out[new_id][f"{fid}-copy{copy}"] = rec
                n += 1
        copy += 1
    with gzip.open(path, "wt") as fh:
        json.dump(out, fh)
    return n


_MEMORY = r"""
import json, sys, threading, time
from pathlib import Path
def rss():
    for line in open('/proc/self/status'):
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) / 1024
from softening.models import load_model
from softening.makers.evaluate import evaluate_datasets
from softening.stores import get_job_store
load_model('chgnet')
base = rss(); peak = [base]; stop = False
def sample():
    while not stop:
        peak[0] = max(peak[0], rss()); time.sleep(0.02)
t = threading.Thread(target=sample, daemon=True); t.start()
t0 = time.perf_counter()
evaluate_datasets([sys.argv[1]], ['chgnet'], store=get_job_store(sys.argv[2]))
wall = time.perf_counter() - t0
stop = True; t.join()
print(json.dumps({'baseline_mb': base, 'peak_above_baseline_mb': peak[0] - base, 'inner_s': wall}))
"""


def bench_evaluate(sizes: list[int], work: Path) -> list[dict]:
    rows = []
    for n in sizes:
        path = work / f"wbm_{n}.json.gz"
        n = make_wbm(n, path)
        store = work / f"db_eval_{n}"
        t0 = time.perf_counter()
        subprocess.run(
            [PY, "-m", "softening.cli", "evaluate", str(path), "--model", "chgnet", "--json",
             "--store", str(store)],
            env=ENV, check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        wall = time.perf_counter() - t0
        mem = json.loads(
            subprocess.run(
                [PY, "-c", _MEMORY, str(path), str(work / f"db_mem_{n}")],
                env=ENV, check=True, capture_output=True, text=True,
            ).stdout.strip().splitlines()[-1]
        )  # fmt: skip
        row = {"frames": n, "wall_s": wall, "s_per_frame": wall / n, **mem}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


_MATCALC = r"""
import json, sys, time, types
t0 = time.perf_counter()
from pathlib import Path
# matcalc 0.7's benchmark module imports matminer at the top for its other benchmarks (not for
# SofteningBenchmark); matminer would downgrade pandas in this environment, so stand-ins are
# registered when it is absent.
try:
    import matminer  # noqa: F401
except ImportError:
    for name in ('matminer', 'matminer.featurizers', 'matminer.featurizers.site',
                 'matminer.featurizers.structure'):
        sys.modules[name] = types.ModuleType(name)
    sys.modules['matminer.featurizers.site'].CrystalNNFingerprint = object
    sys.modules['matminer.featurizers.structure'].SiteStatsFingerprint = object
from chgnet.model import CHGNet
from chgnet.model.dynamics import CHGNetCalculator
from matcalc.benchmark import SofteningBenchmark
import torch; torch.set_num_threads(1)
calc = CHGNetCalculator(model=CHGNet.load(model_name='0.3.0', verbose=False), use_device='cpu')
bench = SofteningBenchmark(Path(sys.argv[1]))
df = bench.run(calc, 'chgnet')
scales = dict(zip(df['material_id'], df['softening_scale_chgnet']))
import matcalc
print(json.dumps({'scales': scales, 'version': matcalc.__version__}))
"""

_ASE_LOOP = r"""
import gzip, json, sys
import numpy as np, torch
torch.set_num_threads(1)
from chgnet.model import CHGNet
from chgnet.model.dynamics import CHGNetCalculator
from pymatgen.core import Structure
from pymatgen.io.ase import AseAtomsAdaptor
calc = CHGNetCalculator(model=CHGNet.load(model_name='0.3.0', verbose=False), use_device='cpu')
data = json.loads(gzip.open(sys.argv[1]).read())
scales = {}
for mid, frames in data.items():
    ml, ref = [], []
    for rec in frames.values():
        atoms = AseAtomsAdaptor.get_atoms(Structure.from_dict(rec['structure']))
        atoms.calc = calc
        ml.append(atoms.get_forces()); ref.append(np.asarray(rec['vasp_f']))
    ml, ref = np.concatenate(ml).ravel(), np.concatenate(ref).ravel()
    scales[mid] = float(ml @ ref / (ref @ ref))
print(json.dumps({'scales': scales}))
"""


def _timed(cmd: list[str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, env=ENV, check=True, capture_output=True, text=True).stdout
    return time.perf_counter() - t0, out


def bench_peers(n_frames: int, work: Path) -> dict:
    path = work / f"wbm_peers_{n_frames}.json.gz"
    n = make_wbm(n_frames, path)
    store = work / "db_peers"
    t_soft, out = _timed(
        [PY, "-m", "softening.cli", "evaluate", str(path), "--model", "chgnet", "--json",
         "--store", str(store)]
    )  # fmt: skip
    soft = {
        m["material_id"]: m["scale"] for m in json.loads(out)["models"]["CHGNet-0.3.0"]["materials"]
    }
    t_matcalc, out = _timed([PY, "-c", _MATCALC, str(path)])
    matcalc = json.loads(out.strip().splitlines()[-1])
    t_loop, out = _timed([PY, "-c", _ASE_LOOP, str(path)])
    loop = json.loads(out.strip().splitlines()[-1])["scales"]
    diff_matcalc = max(abs(soft[k] - v) for k, v in matcalc["scales"].items())
    diff_loop = max(abs(soft[k] - v) for k, v in loop.items())
    row = {
        "frames": n,
        "materials": len(soft),
        "softening_s": t_soft,
        "matcalc_s": t_matcalc,
        "matcalc_version": matcalc["version"],
        "ase_loop_s": t_loop,
        "speedup_vs_matcalc": t_matcalc / t_soft,
        "speedup_vs_ase_loop": t_loop / t_soft,
        "max_scale_diff_matcalc": diff_matcalc,
        "max_scale_diff_ase_loop": diff_loop,
    }
    print(json.dumps(row), flush=True)
    return row


def _emt_structures(n: int, folder: Path) -> list[Path]:
    from pymatgen.core import Lattice, Structure

    a0 = {"Cu": 3.61, "Al": 4.05, "Ni": 3.52, "Ag": 4.09, "Au": 4.08, "Pd": 3.89, "Pt": 3.92}
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        el = list(a0)[i % len(a0)]
        a = a0[el] * (1 + 0.004 * (i // len(a0)))  # another lattice constant: another material
        s = Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), [el], [[0, 0, 0]]) * (2, 1, 1)
        p = folder / f"{el}_{i}.cif"
        s.to(filename=str(p))
        paths.append(p)
    return paths


def bench_run(sizes: list[int], work: Path, workers: int) -> list[dict]:
    rows = []
    for n in sizes:
        paths = _emt_structures(n, work / f"emt_{n}")
        store = work / f"db_run_{n}"
        t, _ = _timed(
            [PY, "-m", "softening.cli", "run", *map(str, paths), "--reference", "emt",
             "--steps", "40", "--stride", "4", "--frames", "4", "--strained", "1",
             "--store", str(store), "--out", str(work / f"out_run_{n}"), "--json",
             "--workers", str(workers)]
        )  # fmt: skip
        row = {"materials": n, "wall_s": t, "s_per_material": t / n, "workers": workers}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


_REFERENCES = r"""
import json, sys, time
import numpy as np
from jobflow import Flow
from pymatgen.core import Structure
from softening.execution.local import run_flow
from softening.makers import ReferenceStaticMaker
from softening.stores import get_job_store
from softening.schemas import FrameSpec
rng = np.random.default_rng(0)
jobs = []
maker = ReferenceStaticMaker(kspacing=0.5)
for name in ('Si', 'MgO'):
    base = Structure.from_file(f'examples/{name}.cif')
    for i in range(10):
        s = base.copy()
        s.perturb(0.1)
        jobs.append(maker.make(FrameSpec(frame_id=str(i), material_id=name,
                                         formula=base.composition.reduced_formula, structure=s)))
t0 = time.perf_counter()
res = run_flow(Flow(jobs), get_job_store(sys.argv[1]), workers=int(sys.argv[2]))
print(json.dumps({'workers': int(sys.argv[2]), 'wall_s': time.perf_counter() - t0, 'ok': res.ok}))
"""


def bench_references(work: Path) -> dict:
    rows = {}
    for workers in (1, 2):
        _, out = _timed([PY, "-c", _REFERENCES, str(work / f"db_ref_{workers}"), str(workers)])
        rows[workers] = json.loads(out.strip().splitlines()[-1])
        print(json.dumps(rows[workers]), flush=True)
    row = {
        "one_worker_s": rows[1]["wall_s"],
        "two_workers_s": rows[2]["wall_s"],
        "speedup": rows[1]["wall_s"] / rows[2]["wall_s"],
    }
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("sections", nargs="+", choices=["evaluate", "peers", "run", "references"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--peer-frames", type=int, default=1050)
    parser.add_argument("--materials", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("/tmp/softening-bench-scale"))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    os.chdir(ROOT)
    results: dict = {}
    if "evaluate" in args.sections:
        results["evaluate"] = bench_evaluate(args.sizes, args.work)
    if "peers" in args.sections:
        results["peers"] = bench_peers(args.peer_frames, args.work)
    if "run" in args.sections:
        results["run"] = bench_run(args.materials, args.work, args.workers)
    if "references" in args.sections:
        results["references"] = bench_references(args.work)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
