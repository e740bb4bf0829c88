"""``softening evaluate`` in one process against frame workers on every allocated core.

Frames: a WBM-layout file of ``--frames`` (default 2,100) frames, rattled copies (0.01 Å) of the
shared 21-frame WBM subset under new material ids (:func:`bench_scale.make_wbm`), as in the
published WBM high-energy-states file (3-12 atoms a frame). Model: ``--model`` (default the
seed paper's M3GNet, ``../shared/models/M3GNet-MP-2021.2.8-PES``), on the CPU, float32.

Each way runs in a fresh process that imports, loads the model, then times
``evaluate_datasets`` (read, evaluate, fit, bootstrap, write every result into a new store: what
``softening evaluate`` does after start-up); ``one_process_s`` with ``workers=1``, ``all_cores_s``
with the automatic choice (one worker per allocated core). ``*_wall_s`` adds process start-up,
imports and model loading, the same for both; ``*_cpu_s`` the CPU seconds of the process and its
workers (on a shared machine, other users' load slows the wall times much more than these). Prints one JSON
object:
``{"frames", "one_process_s", "all_cores_s", "ratio", ...}``; ``ratio`` is one_process_s /
all_cores_s.

Usage: ``python benchmarks/bench_evaluate_workers.py [--frames 2100] [--model M] [--json out]``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench_scale import make_wbm

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
PY = sys.executable
# This checkout's package first (a worktree beside an editable install of another).
PYTHONPATH = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": PYTHONPATH}

_EVALUATE = r"""
import json, sys, time
from softening.makers.evaluate import evaluate_datasets
from softening.models import load_model
from softening.models.evaluate import resolve_frame_workers
from softening.processes import allocated_cores
from softening.stores import get_job_store
path, model, store, workers = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
workers = None if workers == 'auto' else int(workers)
used = resolve_frame_workers(workers, [load_model(model)])
def cpu():
    import resource
    return sum(r.ru_utime + r.ru_stime for r in map(resource.getrusage, (resource.RUSAGE_SELF,
               resource.RUSAGE_CHILDREN)))
t0, c0 = time.perf_counter(), cpu()
ev = evaluate_datasets([path], [model], store=get_job_store(store), workers=workers)
inner, cpu_s = time.perf_counter() - t0, cpu() - c0
(result,) = ev.models.values()
print(json.dumps({'inner_s': inner, 'cpu_s': cpu_s, 'workers': used, 'cores': allocated_cores(),
                  'n_frames': result.n_frames,
                  'scales': {d.material_id: d.scale for d in result.materials}}))
"""


def run(path: Path, model: str, work: Path, workers: str) -> dict:
    """One way, in a fresh process: its timings and per-material scales."""
    store = work / f"db_{workers}"
    shutil.rmtree(store, ignore_errors=True)
    t0 = time.perf_counter()
    out = subprocess.run(
        [PY, "-c", _EVALUATE, str(path), model, str(store), workers],
        env=ENV, check=True, capture_output=True, text=True, cwd=ROOT,
    ).stdout  # fmt: skip
    row = json.loads(out.strip().splitlines()[-1])
    row["wall_s"] = time.perf_counter() - t0
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=2100)
    parser.add_argument("--model", default=str(SHARED / "models" / "M3GNet-MP-2021.2.8-PES"))
    parser.add_argument("--data", type=Path, default=SHARED / "data", help="The shared data.")
    parser.add_argument("--work", type=Path, default=Path("/tmp/softening-bench-workers"))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    subset = args.data / "wbm_high_energy_subset" / "wbm_subset_21frames.json.gz"
    path = args.work / f"wbm_{args.frames}.json.gz"
    n = make_wbm(args.frames, path, subset=subset)
    one = run(path, args.model, args.work, "1")
    every = run(path, args.model, args.work, "auto")
    result = {
        "frames": n,
        "one_process_s": one["inner_s"],
        "all_cores_s": every["inner_s"],
        "ratio": one["inner_s"] / every["inner_s"],
        "workers": every["workers"],
        "cores": every["cores"],
        # CPU seconds (this process and its workers): what the work costs whatever else runs;
        # on a shared machine, one_process_cpu_s / (all_cores_cpu_s / workers) is the ratio that
        # the cores alone would give.
        "one_process_cpu_s": one["cpu_s"],
        "all_cores_cpu_s": every["cpu_s"],
        # Cores each way actually got (CPU / wall): about 1 and the worker count on an idle machine.
        "one_process_cores_used": one["cpu_s"] / one["inner_s"],
        "all_cores_cores_used": every["cpu_s"] / every["inner_s"],
        "one_process_wall_s": one["wall_s"],
        "all_cores_wall_s": every["wall_s"],
        "max_scale_diff": max(abs(one["scales"][k] - v) for k, v in every["scales"].items()),
        "load_average_1min_at_end": os.getloadavg()[0],
        "model": Path(args.model).name,
    }
    print(json.dumps(result), flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
