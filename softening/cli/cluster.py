"""Cluster commands: ``submit``, ``status`` and ``rerun`` (FireWorks + SLURM, :mod:`softening.hpc`).

``submit`` builds the flow of ``run`` (:class:`~softening.workflows.study.StudyOptions`) or of
``properties`` and adds it to the LaunchPad, or ships it serialised to one SLURM job
(``--single-job``, :func:`softening.hpc.submit_single_job`).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer

from softening import defaults
from softening.cli.display import console, out_console, print_json, setup_logging
from softening.cli.options import (
    EcutOpt,
    FlowOpt,
    FrameSelectionOpt,
    FramesOpt,
    IonOpt,
    JsonOpt,
    KspacingOpt,
    LaunchDirOpt,
    LaunchOpt,
    LaunchpadOpt,
    MaxCellsOpt,
    MdModelOpt,
    ModelOpt,
    MuOpt,
    QadapterOpt,
    ReferenceOpt,
    SeedOpt,
    StepsOpt,
    StoreOpt,
    StrainedOpt,
    StrictOpt,
    StrideOpt,
    SubstituteOpt,
    TemperatureOpt,
    TimestepOpt,
    TrainFramesOpt,
)
from softening.errors import InputError


def _launch(lp, qadapter: Path | None, launch_dir: Path | None) -> list:
    from softening.hpc import launch_ready, load_qadapters
    from softening.hpc.submit import launch_dir_default

    where = launch_dir.resolve() if launch_dir else launch_dir_default()
    return launch_ready(lp, load_qadapters(qadapter, lp.softening_path, where), where)


def _queued_rows(queued) -> list[dict[str, Any]]:
    return [{"slurm_job_id": q.slurm_job_id, "group": q.group, "fw_ids": q.fw_ids} for q in queued]


def _print_queued(queued) -> None:
    if not queued:
        console.print("nothing READY to queue")
    for q in queued:
        ids = f" (job {', '.join(map(str, q.fw_ids))})" if q.fw_ids else ""
        console.print(f"queued SLURM job {q.slurm_job_id} [{q.group}]{ids}", highlight=False)


def submit(
    structures: Annotated[
        list[Path] | None,
        typer.Argument(help="Structure files; none with --launch: queue what is READY."),
    ] = None,
    md_model: MdModelOpt = defaults.MD_MODEL,
    model: ModelOpt = None,
    reference: ReferenceOpt = defaults.REFERENCE,
    temperature: TemperatureOpt = defaults.TEMPERATURE,
    steps: StepsOpt = defaults.STEPS,
    timestep: TimestepOpt = defaults.TIMESTEP,
    stride: StrideOpt = defaults.STRIDE,
    frames: FramesOpt = defaults.FRAMES,
    strained: StrainedOpt = defaults.STRAINED,
    frame_selection: FrameSelectionOpt = defaults.FRAME_SELECTION,
    ecut: EcutOpt = defaults.ECUT,
    kspacing: KspacingOpt = defaults.KSPACING,
    seed: SeedOpt = defaults.SEED,
    store: StoreOpt = None,
    strict: StrictOpt = False,
    finetune: Annotated[
        str | None,
        typer.Option(help="Also correct each model (scale, head or full); see `run`."),
    ] = None,
    train_frames: TrainFramesOpt = defaults.TRAIN_FRAMES,
    launchpad: LaunchpadOpt = None,
    qadapter: QadapterOpt = None,
    launch: LaunchOpt = False,
    single_job: Annotated[
        bool,
        typer.Option(
            "--single-job",
            help="No MongoDB: sbatch one script that runs the whole flow (saved as flow.json) in "
            "its allocation, results in the store (an embedded folder on the shared filesystem).",
        ),
    ] = False,
    launch_dir: LaunchDirOpt = None,
    as_json: JsonOpt = False,
    prop: Annotated[
        list[str] | None,
        typer.Option(
            "--property",
            "-p",
            help="Submit the flow of `softening properties` instead (phonon, surface, vacancy, "
            "barrier, mixing, or any registered one) with --model, --reference, --ecut, "
            "--kspacing, --substitute and --max-cells.",
        ),
    ] = None,
    substitute: SubstituteOpt = None,
    max_cells: MaxCellsOpt = defaults.MAX_CELLS,
    ion: IonOpt = None,
    mu: MuOpt = None,
    batch_md: Annotated[
        bool,
        typer.Option(
            "--batch-md/--no-batch-md",
            help="Run the MDs of all materials in one batched job (default: one MD job per "
            "material, each its own SLURM task).",
        ),
    ] = False,
) -> None:
    """Submit the workflow of `run` to a cluster: FireWorks LaunchPad + SLURM, or one SLURM job.

    uMLIP jobs get the FireWorks category `umlip`, reference jobs `dft` (a partition for each).
    """
    from softening.hpc import load_launchpad, submit_flow
    from softening.hpc.firetask import worker_store_spec
    from softening.hpc.submit import launch_dir_default
    from softening.workflows.inputs import default_models
    from softening.workflows.study import StudyOptions

    setup_logging(quiet=True)
    if not structures and (single_job or not launch):
        raise InputError("give STRUCTURE files to submit (or only --launch to queue READY jobs)")
    options = StudyOptions.from_options(locals(), prop=None)
    spec = worker_store_spec(store) if structures else None
    where = launch_dir.resolve() if launch_dir else launch_dir_default()
    if single_job and prop:
        raise InputError(
            "--single-job runs the study of `softening run`; submit --property without it"
        )
    if single_job:
        _submit_single_job(structures, options, spec, qadapter, where, as_json)
        return
    result = None
    if structures:
        # Validated here (files, elements, models); GPAW and VASP need only exist on the workers.
        if prop:
            from softening.workflows.properties import properties_flow

            flow, _, _ = properties_flow(
                structures, prop, default_models(model), reference=reference, ecut=ecut,
                kspacing=kspacing, local_checks=False, substitute=substitute, max_cells=max_cells,
                ion=ion, mu=mu,
            )  # fmt: skip
        else:
            flow = options.build(structures, store=spec, local_checks=False).flow
        lp = load_launchpad(launchpad)
        result = submit_flow(lp, flow, store=spec)
    else:
        lp = load_launchpad(launchpad)
    queued = _launch(lp, qadapter, where) if launch else []
    if as_json:
        payload: dict[str, Any] = {"queued": _queued_rows(queued)}
        if result is not None:
            keys = ("flow_id", "flow_uuid", "name", "fw_ids", "categories", "store")
            payload.update({k: getattr(result, k) for k in keys})
        print_json(payload)
        return
    if result is not None:
        from softening.stores import describe_store

        cats = ", ".join(f"{n} {c}" for c, n in result.categories.items() if n)
        console.print(
            f"flow {result.flow_id} ({result.name}): {len(result.fw_ids)} jobs ({cats}), "
            f"results into {describe_store(result.store)}",
            highlight=False,
        )
    if launch:
        _print_queued(queued)
    elif result is not None:
        console.print("queue it with `softening submit --launch`; watch it with `softening status`")


def _submit_single_job(structures, options, spec: str, qadapter, where: Path, as_json: bool):
    from softening.hpc import load_qadapters, resolve_qadapter_path, submit_single_job
    from softening.stores.factory import store_kind

    if store_kind(spec) != "embedded":
        console.print(
            "[yellow]note:[/] --single-job with a database store: the compute nodes must reach it",
            highlight=False,
        )
    # The same checks as `run` before anything is queued (files, elements, models); the flow
    # itself is what the job runs.
    study = options.build(structures, store=spec, local_checks=False)
    path = resolve_qadapter_path(qadapter, required=False)
    group = load_qadapters(path, None, where, base_only=True)[0] if path else None
    job = submit_single_job(study.flow, spec, group, where, study=asdict(options))
    if as_json:
        print_json(
            {
                "script": str(job.script),
                "slurm_job_id": job.slurm_job_id,
                "store": job.store,
                "out": str(job.out),
            }
        )
        return
    console.print(f"script: {job.script}", highlight=False)
    console.print(f"SLURM job {job.slurm_job_id}; results into {job.store}", highlight=False)


def status(
    launchpad: LaunchpadOpt = None,
    state: Annotated[
        str | None,
        typer.Option(help="Only jobs in this state: FIZZLED, RUNNING, RESERVED, READY, WAITING..."),
    ] = None,
    flow: FlowOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Flows submitted to the LaunchPad and their jobs, with their states."""
    from softening.cli.tables import flow_table
    from softening.hpc import flow_status, load_launchpad

    flows = flow_status(load_launchpad(launchpad), state=state, flow=flow)
    if as_json:
        print_json({"flows": flows})
        return
    if not flows:
        console.print("no flows" + (f" with jobs in state {state.upper()}" if state else ""))
    for f in flows:
        out_console.print(flow_table(f))


def rerun(
    failed: Annotated[
        bool, typer.Option("--failed", help="Rerun FIZZLED jobs and lost runs.")
    ] = False,
    flow: Annotated[
        str | None, typer.Option(help="Only this flow (flow id, any of its job ids, or uuid).")
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="Only jobs whose name matches (glob, or a substring).")
    ] = None,
    fw_id: Annotated[
        list[int] | None, typer.Option("--fw-id", help="Only this job id; repeat for several.")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be rerun; change nothing.")
    ] = False,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Do not ask before rerunning without a filter.")
    ] = False,
    launchpad: LaunchpadOpt = None,
    launch: LaunchOpt = False,
    qadapter: QadapterOpt = None,
    launch_dir: LaunchDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Rerun FIZZLED jobs and lost runs (SLURM job ended, or no heartbeat); COMPLETED ones stay.

    Lost: RESERVED/RUNNING in the LaunchPad, but its SLURM job has ended or its heartbeat stopped.
    """
    from softening.cli.tables import plan_table
    from softening.hpc import apply_rerun, load_launchpad, plan_rerun

    if not failed:
        raise InputError("say what to rerun: --failed (FIZZLED jobs and lost runs)")
    lp = load_launchpad(launchpad)
    plan = plan_rerun(lp, flow=flow, name=name, fw_ids=fw_id)
    ids = plan.fw_ids
    if not as_json:
        if not ids:
            console.print("nothing to rerun: no FIZZLED job and no lost run")
        else:
            out_console.print(plan_table(plan))
        for u in plan.unchecked:
            console.print(
                f"[yellow]not checked:[/] job {u['fw_id']} {u['name']} (SLURM job "
                f"{u['slurm_job_id']}): {u['reason']}",
                highlight=False,
            )
    reset: list[int] = []
    if ids and not dry_run:
        if flow is None and name is None and not fw_id and not yes:
            typer.confirm(f"rerun {len(ids)} job(s) across all flows?", abort=True, err=True)
        reset = apply_rerun(lp, plan)
    queued = _launch(lp, qadapter, launch_dir) if launch and not dry_run else []
    if as_json:
        print_json({**plan.as_dict(), "dry_run": dry_run, "reset": reset,
                    "queued": _queued_rows(queued)})  # fmt: skip
        return
    if dry_run:
        console.print(f"dry run: {len(ids)} job(s) would be rerun")
    elif ids:
        console.print(f"rerun {len(reset)} job(s); the jobs depending on them run after them")
    if launch and not dry_run:
        _print_queued(queued)
