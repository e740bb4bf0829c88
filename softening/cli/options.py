"""The command line's options, defined once: every command that takes one uses these.

Typer reads each ``Annotated[type, typer.Option(...)]`` as the option's flag, help and type; a
command's default is the parameter's default.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from softening.errors import InputError

# ---- checks made while the options are read, before a command starts (one `error:` line each) -----
#: Largest seed every seeded library takes (numpy's RandomState, scikit-learn: 32 bits).
MAX_SEED = 2**32 - 1


def _in_range(flag: str, low: int, high: int | None = None) -> Callable[[int], int]:
    """A callback that refuses a value of ``flag`` below ``low`` or above ``high``."""

    def check(value: int) -> int:
        if value < low or (high is not None and value > high):
            bound = f">= {low}" if high is None else f"between {low} and {high}"
            raise InputError(f"{flag} must be {bound}, got {value}")
        return value

    return check


def out_folder(value: Path | None) -> Path | None:
    """The ``--out`` callback of every command: refuse a path that is, or lies in, a file.

    Checked before anything runs, so that a command does not fail after its work is done when it
    writes its figures or summary.
    """
    if value is None:
        return value
    for path in (value, *value.parents):
        if path.is_dir():
            break
        if path.exists() or path.is_symlink():
            where = "" if path == value else f": {path}"
            raise InputError(f"--out {value}{where} is a file, not a folder")
    return value


# ---- everywhere ------------------------------------------------------------------------------------
def named_store(value: str | None) -> str | None:
    """The ``--store`` callback of every command: the store the user named, whose registry of model
    files softening wrote is trusted (never that of a default ./softening-db found in the working
    directory; see :mod:`softening.models.trust`)."""
    if value is not None:
        from softening.models.trust import name_store

        name_store(value)
    return value


StoreOpt = Annotated[
    str | None,
    typer.Option(
        "--store",
        help="Result store: a folder (embedded SQLite store), a mongodb:// or mongodb+srv:// URI, "
        "'mongodb' (SOFTENING_MONGO_* settings), or a .yaml jobflow store config. "
        "[default: ./softening-db]",
        callback=named_store,
    ),
]
ModelOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--model", "-m", help="uMLIP name or weights path; repeat for several. [default: chgnet]"
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]
SeedOpt = Annotated[
    int,
    typer.Option(
        "--seed",
        help="Seed of MD, frame choice and bootstrap.",
        callback=_in_range("--seed", 0, MAX_SEED),
    ),
]
StrictOpt = Annotated[
    bool,
    typer.Option(
        "--strict",
        help="Refuse VASP references whose settings differ from the models' training data "
        "(MP PBE/PBE+U) instead of flagging them.",
    ),
]
TrustModelOpt = Annotated[
    bool,
    typer.Option(
        "--trust-model-file",
        help="Load whole pickled model files (MACE .model) that are neither known published "
        "weights nor written by softening: loading one runs code from the file.",
    ),
]
DatasetsArg = Annotated[
    list[Path], typer.Argument(help="Labelled frames: extxyz, WBM/mlearn JSON, vasprun.")
]
StructuresArg = Annotated[list[Path], typer.Argument(help="Structure files (CIF, POSCAR, ...).")]

# ---- the workflow of `run` and `submit` -----------------------------------------------------------
MdModelOpt = Annotated[str, typer.Option(help="uMLIP that drives the MD.")]
ReferenceOpt = Annotated[
    str, typer.Option(help="Reference: gpaw, emt, vasp (atomate2 + custodian), or module:Class.")
]
TemperatureOpt = Annotated[float, typer.Option(help="MD temperature, K.")]
StepsOpt = Annotated[int, typer.Option(help="MD steps (the paper: 10000 = 20 ps).")]
TimestepOpt = Annotated[float, typer.Option(help="MD time step, fs.")]
StrideOpt = Annotated[int, typer.Option(help="Steps between stored MD frames.")]
FramesOpt = Annotated[int, typer.Option(help="Frames labelled per material.")]
FrameSelectionOpt = Annotated[
    str,
    typer.Option(
        help="How frames are picked from the MD: stratified-energy (the paper: one per energy "
        "bin) or diverse (DIRECT: one per cluster of the MD model's structure features)."
    ),
]
StrainedOpt = Annotated[
    int,
    typer.Option(
        help="Frames strained by +3 % and as many by -3 %.", callback=_in_range("--strained", 0)
    ),
]
EcutOpt = Annotated[float, typer.Option(help="GPAW plane-wave cutoff, eV.")]
KspacingOpt = Annotated[float, typer.Option(help="GPAW k-point spacing, 1/Å (2π included).")]
TrainFramesOpt = Annotated[int, typer.Option(help="Frames per material to correct on.")]
WorkersOpt = Annotated[
    int | None,
    typer.Option(
        help="Worker processes on this machine: jobs run at once (reference statics of different "
        "frames side by side), or for evaluate, processes that each evaluate a share of the frames "
        "(on a CPU). [default: the allocated cores (CPU affinity, SLURM_CPUS_PER_TASK) / "
        "torch_threads (evaluate: one thread each), capped by memory]"
    ),
]

# ---- results database: the filters of `query` and `report` (softening.stores.queries.ResultFilter)
FormulaOpt = Annotated[
    str | None, typer.Option("--formula", help="Reduced formula, any order (CuO = OCu).")
]
ChemsysOpt = Annotated[
    str | None,
    typer.Option("--chemsys", help="Chemical system: exactly these elements, e.g. Cu-O."),
]
ElementOpt = Annotated[
    list[str] | None,
    typer.Option("--element", "-e", help="Element the material contains; repeat for several."),
]
QueryModelOpt = Annotated[
    str | None,
    typer.Option("--model", "-m", help="Model name (CHGNet-0.3.0) or family (chgnet)."),
]
FlagOpt = Annotated[
    str | None,
    typer.Option("--flag", help="Only results carrying a flag of this kind (e.g. unconverged)."),
]
ScaleMinOpt = Annotated[float | None, typer.Option("--scale-min", help="Lowest scale kept.")]
ScaleMaxOpt = Annotated[float | None, typer.Option("--scale-max", help="Highest scale kept.")]
MaterialOpt = Annotated[str | None, typer.Option("--material-id", help="Material identifier.")]
PooledOpt = Annotated[
    bool,
    typer.Option("--include-pooled", help="Also the pooled results (one slope over a dataset)."),
]
AllRunsOpt = Annotated[
    bool,
    typer.Option(
        "--all-runs",
        help="Every stored result, not only the latest per material, model and reference.",
    ),
]

# ---- on a cluster ----------------------------------------------------------------------------------
LaunchpadOpt = Annotated[
    Path | None,
    typer.Option(
        "--launchpad",
        help="FireWorks LaunchPad YAML; ${VAR}s come from the environment. "
        "(default: SOFTENING_LAUNCHPAD, else ./launchpad.yaml)",
    ),
]
QadapterOpt = Annotated[
    Path | None,
    typer.Option(
        "--qadapter",
        help="SLURM queue adapter YAML (partitions per category). "
        "(default: SOFTENING_QADAPTER, else ./qadapter_slurm.yaml)",
    ),
]
LaunchDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--launch-dir",
        help="Folder (on the shared filesystem) for queue scripts and job folders. "
        "(default: ./softening-launches)",
    ),
]
LaunchOpt = Annotated[
    bool,
    typer.Option("--launch", help="Submit the READY jobs to SLURM (FireWorks' queue launcher)."),
]
FlowOpt = Annotated[
    str | None, typer.Option(help="One flow: its flow id (any of its job ids) or flow uuid.")
]

# ---- properties ------------------------------------------------------------------------------------
FiguresOpt = Annotated[
    Path | None,
    typer.Option(
        help="Folder for the figures (parity plots, phonon bands, formation energies...).",
        callback=out_folder,
    ),
]
MeshOpt = Annotated[
    tuple[int, int, int], typer.Option(help="q-point mesh of the comparison (Gamma-centred).")
]


def _thermal_temperature(value: float) -> float:
    """The ``--temperature`` callback of ``phonons`` and ``properties``: a finite value >= 0 K."""
    if not math.isfinite(value) or value < 0:
        raise InputError(f"--temperature must be a finite temperature >= 0 K, got {value:g}")
    return value


ThermalTemperatureOpt = Annotated[
    float,
    typer.Option(help="Temperature of the thermal properties, K.", callback=_thermal_temperature),
]

# ---- the property and its options (`properties`, `run --property`, `submit --property`) ----------
PropertyOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--property",
        "-p",
        help="Property to compute: phonon, surface, vacancy, barrier, mixing, or any registered "
        "one (repeat for several). [default: phonon]",
    ),
]
SubstituteOpt = Annotated[
    str | None,
    typer.Option(
        "--substitute",
        help="HOST:GUEST (e.g. Mg:Ca): --property mixing enumerates the orderings of GUEST on "
        "HOST's sublattice.",
    ),
]
MaxCellsOpt = Annotated[
    int,
    typer.Option(
        "--max-cells",
        min=1,
        help="--property mixing: largest supercell of the orderings, in primitive cells.",
    ),
]
IonOpt = Annotated[
    str | None,
    typer.Option("--ion", help="--property migration: the migrating species (Li, Mg, Na...)."),
]
MuOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--mu",
        help="--property defect: chemical potentials El=eV/atom (repeat; the same for both "
        "sides), or 'elemental' (each method's own relaxed elemental ground states). "
        "[default: none: composition-conserving combinations only]",
    ),
]

# ---- learning curves (`learning-curve`) -------------------------------------------------------------
CurveModeOpt = Annotated[
    str, typer.Option(help="scale (closed form, one evaluation), head (readout only) or full.")
]
CurveTrainFramesOpt = Annotated[
    str,
    typer.Option(
        "--train-frames", help="The curve's K: frames per material of each point, e.g. 1,2,4,8."
    ),
]
RepeatsOpt = Annotated[
    int, typer.Option("--repeats", help="Repeats (seeds) of the random choice; others run once.")
]
ChoiceOpt = Annotated[
    str,
    typer.Option(
        "--choice",
        help="Frame choices, comma-separated: highest-energy, largest-force, random, diverse "
        "(DIRECT: PCA + BIRCH on the model's structure features).",
    ),
]
SelectOpt = Annotated[
    list[str] | None,
    typer.Option(
        help="Keep frames whose material, formula, group or description contains "
        "this text; repeat to require several (e.g. --select AIMD --select '843 K')."
    ),
]
