"""The ``softening`` command line: run the workflow, evaluate datasets.

Errors are handled in one place (:class:`_App`): a :class:`SofteningError` prints one line and exits
with status 1; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from softening.errors import InputError, SofteningError

# Piped output (CI logs, `| less`) gets 120 columns instead of rich's 80 so that tables stay readable.
console = Console(stderr=True, width=None if sys.stderr.isatty() else 120)
out_console = Console(width=None if sys.stdout.isatty() else 120)


class _App(typer.Typer):
    def __call__(self, *args, **kwargs):
        try:
            return super().__call__(*args, **kwargs)
        except SofteningError as exc:
            console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            sys.exit(1)


app = _App(
    name="softening",
    help="Measure and correct the softening of universal ML interatomic potentials against DFT.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# ---- shared options (defined once) ---------------------------------------------------------------
StoreOpt = Annotated[
    str | None,
    typer.Option(
        "--store", help="Result store folder (embedded MontyDB). [default: ./softening-db]"
    ),
]
ModelOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--model", "-m", help="uMLIP name or weights path; repeat for several. [default: chgnet]"
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of MD, frame choice and bootstrap.")]


class _FailureCollector(logging.Handler):
    """Collects the last line of each job failure that jobflow's local manager logs."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.failures: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if "failed with exception" in msg:
            name = msg.split(" failed with exception")[0]
            last = [ln for ln in msg.strip().splitlines() if ln.strip()][-1]
            self.failures.append(f"{name}: {last}")


def _setup_logging(quiet: bool) -> _FailureCollector:
    from rich.logging import RichHandler

    collector = _FailureCollector()
    jf = logging.getLogger("jobflow.managers.local")
    jf.addHandler(collector)
    jf.setLevel(logging.INFO)
    jf.propagate = False
    logging.getLogger("jobflow").setLevel(logging.WARNING)
    pkg = logging.getLogger("softening")
    pkg.setLevel(logging.WARNING if quiet else logging.INFO)
    if not pkg.handlers:
        pkg.addHandler(RichHandler(console=console, show_path=False, show_time=True, markup=False))
    pkg.propagate = False
    import warnings

    warnings.filterwarnings("ignore")
    return collector


def _run_flow(flow, store) -> tuple[dict, list[str]]:
    from jobflow import run_locally

    collector = next(
        (
            h
            for h in logging.getLogger("jobflow.managers.local").handlers
            if isinstance(h, _FailureCollector)
        ),
        None,
    )
    responses = run_locally(flow, store=store, log=False, ensure_success=False)
    return responses, (collector.failures if collector else [])


def _outputs(flow_outputs: list, responses: dict) -> list:
    docs = []
    for ref in flow_outputs:
        r = responses.get(ref.uuid)
        if r:
            docs.append(r[max(r)].output)
    return docs


def _models(models: list[str] | None) -> list[str]:
    from softening.settings import get_settings

    return list(models) if models else list(get_settings().models)


def _check_models(models: list[str], elements: set[str]) -> list[Any]:
    from softening.models import load_model

    loaded = []
    for spec in models:
        m = load_model(spec)
        m.check_elements(elements)
        loaded.append(m)
    return loaded


def _scale_table(docs, title: str) -> Table:
    table = Table(title=title)
    for col in (
        "material",
        "model",
        "scale",
        "95% CI",
        "MAE eV/Å",
        "cMAE eV/Å",
        "frames",
        "missing",
    ):
        table.add_column(col, justify="right" if col not in ("material", "model") else "left")
    for d in docs:
        table.add_row(
            d.material_id,
            d.model.name,
            f"{d.scale:.3f}",
            f"{d.scale_ci[0]:.3f}-{d.scale_ci[1]:.3f}",
            f"{d.mae:.3f}",
            f"{d.cmae:.3f}",
            str(d.n_frames),
            ", ".join(d.missing_frames) or "-",
        )
    return table


def _material_summary(d) -> dict[str, Any]:
    return {
        "material_id": d.material_id,
        "formula": d.formula,
        "scale": d.scale,
        "scale_ci": list(d.scale_ci),
        "mae": d.mae,
        "cmae": d.cmae,
        "n_frames": d.n_frames,
        "energy_mae_per_atom": d.energy_mae_per_atom,
        "missing_frames": d.missing_frames,
        "flags": d.flags,
    }


def _parity(docs, path: Path) -> Path | None:
    import numpy as np

    from softening.analysis.plots import parity_plot

    series = {
        f"{d.material_id} {d.model.name}": (np.asarray(d.forces_ref), np.asarray(d.forces_ml))
        for d in docs
        if d.forces_ref is not None
    }
    if not series:
        return None
    scales = {f"{d.material_id} {d.model.name}": d.scale for d in docs}
    return parity_plot(series, path=path, scale=scales, title="uMLIP vs reference forces")


# ---- commands ------------------------------------------------------------------------------------


@app.command()
def run(
    structures: Annotated[list[Path], typer.Argument(help="Structure files (CIF, POSCAR, ...).")],
    md_model: Annotated[str, typer.Option(help="uMLIP that drives the MD.")] = "chgnet",
    model: ModelOpt = None,
    reference: Annotated[
        str, typer.Option(help="Reference: gpaw, emt, or module:Class of an ASE calculator.")
    ] = "gpaw",
    temperature: Annotated[float, typer.Option(help="MD temperature, K.")] = 1000.0,
    steps: Annotated[int, typer.Option(help="MD steps (the paper: 10000 = 20 ps).")] = 10_000,
    timestep: Annotated[float, typer.Option(help="MD time step, fs.")] = 2.0,
    stride: Annotated[int, typer.Option(help="Steps between stored MD frames.")] = 10,
    frames: Annotated[int, typer.Option(help="Frames labelled per material.")] = 10,
    strained: Annotated[int, typer.Option(help="Frames strained by +3 % and as many by -3 %.")] = 2,
    ecut: Annotated[float, typer.Option(help="GPAW plane-wave cutoff, eV.")] = 500.0,
    kspacing: Annotated[
        float, typer.Option(help="GPAW k-point spacing, 1/Å (2π included).")
    ] = 0.25,
    seed: SeedOpt = 0,
    store: StoreOpt = None,
    out: Annotated[Path, typer.Option(help="Folder for the JSON summary and plots.")] = Path(
        "softening-results"
    ),
    as_json: JsonOpt = False,
) -> None:
    """Sample frames by uMLIP MD, label them with the reference, and fit the softening scale."""
    import importlib.util

    from softening.datasets.readers import read_structure
    from softening.makers import (
        FrameSelectionMaker,
        MDSamplingMaker,
        ReferenceStaticMaker,
        UMLIPStaticMaker,
    )
    from softening.stores import get_job_store
    from softening.workflows import SofteningFlowMaker

    _setup_logging(quiet=as_json)
    models = _models(model)
    if reference == "gpaw" and importlib.util.find_spec("gpaw") is None:
        raise SofteningError("GPAW is not installed: run `make setup`, or use --reference emt")
    if frames < 2 * strained:
        raise InputError(f"--frames {frames} is fewer than the {2 * strained} strained frames")
    structs = [read_structure(p) for p in structures]
    elements = {el.symbol for s in structs for el in s.composition}
    _check_models([md_model, *models], elements)
    fm = SofteningFlowMaker(
        md_maker=MDSamplingMaker(
            model=md_model,
            temperature=temperature,
            steps=steps,
            timestep=timestep,
            stride=stride,
            seed=seed,
        ),
        select_maker=FrameSelectionMaker(
            n_frames=frames, n_strained_plus=strained, n_strained_minus=strained, seed=seed
        ),
        reference_maker=ReferenceStaticMaker(calculator=reference, ecut=ecut, kspacing=kspacing),
        umlip_maker=UMLIPStaticMaker(),
        models=models,
        seed=seed,
    )
    if reference == "emt":
        fm.reference_maker.get_calculator(structs[0])  # refuses non-EMT elements up front
    flow = fm.make(structs)
    job_store = get_job_store(store)
    responses, failures = _run_flow(flow, job_store)
    docs = _outputs(flow.output, responses)
    out.mkdir(parents=True, exist_ok=True)
    summary = {
        "store": str(Path(job_store.docs_store.database_path)),
        "materials": [{**_material_summary(d), "model": d.model.name} for d in docs],
        "failed_jobs": failures,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    parity = _parity(docs, out / "parity.png")
    if as_json:
        print(json.dumps(summary))
    else:
        out_console.print(_scale_table(docs, "Softening scale (s < 1: softened)"))
        console.print(
            f"summary: {out / 'summary.json'}" + (f", parity plot: {parity}" if parity else "")
        )
    if failures:
        for f in failures:
            console.print(f"[yellow]failed:[/] {f}", highlight=False)
        console.print("run the same command again to compute only what failed or is missing")
    if not docs:
        raise SofteningError("no result: every material failed (see the messages above)")


@app.command()
def evaluate(
    datasets: Annotated[
        list[Path], typer.Argument(help="Labelled frames: extxyz, WBM/mlearn JSON, vasprun.")
    ],
    model: ModelOpt = None,
    store: StoreOpt = None,
    seed: SeedOpt = 0,
    out: Annotated[
        Path | None, typer.Option(help="Folder for the scale-distribution plot.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Softening of uMLIPs on existing DFT-labelled frames (no MD, no new DFT)."""
    from softening.datasets.readers import read_frames
    from softening.stores import CodeInfo, FrameResult, FrameSpec, get_job_store
    from softening.workflows import EvaluateFlowMaker

    _setup_logging(quiet=True)
    frames = []
    for path in datasets:
        frames.extend(f for f in read_frames(path) if f.is_labelled)
    if not frames:
        raise InputError("no labelled frames (with reference forces) in the given datasets")
    models = _models(model)
    elements = {el.symbol for f in frames for el in f.structure.composition}
    loaded = _check_models(models, elements)
    specs, refs = [], []
    for f in frames:
        mid = f.material_key
        spec = FrameSpec(
            frame_id=f.frame_id, material_id=mid, formula=f.formula, structure=f.structure
        )
        specs.append(spec)
        refs.append(
            FrameResult(
                frame_id=f.frame_id,
                material_id=mid,
                formula=f.formula,
                structure=f.structure,
                energy=f.energy,
                forces=f.forces.tolist(),
                stress=f.stress.tolist() if f.stress is not None else None,
                code=CodeInfo(
                    name=str(f.metadata.get("code", "dataset")), settings={"source": f.source}
                ),
                flags=list(f.flags),
            )
        )
    _check_unique_ids(specs)
    fm = EvaluateFlowMaker(models=models, seed=seed)
    flow = fm.make(specs, refs)
    responses, failures = _run_flow(flow, get_job_store(store))
    if failures:
        raise SofteningError("evaluation failed: " + "; ".join(failures))
    docs = _outputs(flow.output, responses)
    result: dict[str, Any] = {"models": {}}
    for m in loaded:
        mine = [d for d in docs if d.model.name == m.name]
        mats = [d for d in mine if d.material_id != "pooled"]
        pooled = next(
            (d for d in mine if d.material_id == "pooled"), mats[0] if len(mats) == 1 else None
        )
        result["models"][m.name] = {
            "pooled": {
                "scale": pooled.scale,
                "scale_ci": list(pooled.scale_ci),
                "mae": pooled.mae,
                "cmae": pooled.cmae,
                "energy_mae_per_atom": pooled.energy_mae_per_atom,
                "n_frames": pooled.n_frames,
                "n_materials": len(mats),
                "fraction_softened": sum(d.scale < 1 for d in mats) / len(mats),
            },
            "materials": [_material_summary(d) for d in mats],
        }
    if out is not None:
        from softening.analysis.plots import scale_distribution_plot

        out.mkdir(parents=True, exist_ok=True)
        scales = {
            name: [x["scale"] for x in v["materials"]] for name, v in result["models"].items()
        }
        result["plot"] = str(scale_distribution_plot(scales, out / "scale_distribution.png"))
        _parity([d for d in docs if d.material_id == "pooled"] or docs, out / "parity.png")
    if as_json:
        print(json.dumps(result))
        return
    for name, v in result["models"].items():
        mats = [d for d in docs if d.model.name == name and d.material_id != "pooled"]
        out_console.print(_scale_table(mats, f"{name}"))
        p = v["pooled"]
        out_console.print(
            f"[bold]{name} pooled[/]: scale {p['scale']:.3f} [{p['scale_ci'][0]:.3f}, "
            f"{p['scale_ci'][1]:.3f}], MAE {p['mae']:.3f} eV/Å, cMAE {p['cmae']:.3f} eV/Å, "
            f"{p['n_frames']} frames; softened (scale < 1): {100 * p['fraction_softened']:.1f} % "
            f"of {p['n_materials']} materials"
        )


def _check_unique_ids(specs) -> None:
    seen = set()
    for s in specs:
        key = (s.material_id, s.frame_id)
        if key in seen:
            raise InputError(
                f"frame {s.frame_id} of {s.material_id} appears twice; give each dataset once"
            )
        seen.add(key)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
