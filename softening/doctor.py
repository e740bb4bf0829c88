"""``softening doctor``: what this machine and configuration can do, before any job runs.

Each check returns a :class:`Check` with a status:

``ok``
    works;
``warn``
    missing or broken, but the current configuration does not need it (no VASP or GPU on a login
    node);
``fail``
    missing or broken and needed: the store always, GPAW when the reference is ``gpaw``, VASP and
    the POTCARs when the reference is ``vasp`` or VASP is asked for, MongoDB when the store or the
    LaunchPad names it, each model the settings name;
``skip``
    not checked (nothing configured to check).

Every check runs with its own time limit, so that one unreachable server cannot hang the rest.

Examples
--------
>>> from softening.doctor import run_checks
>>> report = run_checks(vasp=True, structures=["examples/MgO.cif"])  # doctest: +SKIP
>>> report.ok, [c.name for c in report.checks if c.status == "fail"]  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from softening.errors import InputError, SofteningError, one_line
from softening.settings import get_settings, redact

Status = Literal["ok", "warn", "fail", "skip"]

#: Seconds one check may take (a model load on a slow CPU is the longest).
DEFAULT_TIMEOUT = 30.0
#: Seconds all checks together may take; a check that starts late gets what is left.
TOTAL_BUDGET = 55.0

#: Distributions reported by the ``packages`` check: (distribution, extra that installs it or None).
PACKAGES: tuple[tuple[str, str | None], ...] = (
    ("torch", None),
    ("atomate2", None),
    ("jobflow", None),
    ("pymatgen", None),
    ("chgnet", None),
    ("matgl", None),
    ("maggma", None),
    ("montydb", None),
    ("fireworks", None),
    ("custodian", None),
    ("ase", None),
    ("numpy", None),
    ("gpaw", "gpaw"),
    ("mace-torch", "mace"),
)


@dataclass
class Check:
    """One line of the doctor's table.

    Attributes
    ----------
    name
        What was checked (``store``, ``vasp command``, ``model chgnet``...).
    status
        ``ok``, ``warn``, ``fail`` or ``skip`` (see the module docstring).
    detail
        What was found, one line.
    fix
        What to do when it is not ``ok``; empty otherwise.
    needed
        Whether the current configuration needs it (only a needed check can ``fail``).
    """

    name: str
    status: Status
    detail: str
    fix: str = ""
    needed: bool = False

    def as_dict(self) -> dict[str, Any]:
        """``{"name", "status", "detail", "fix", "needed"}``."""
        return asdict(self)


@dataclass
class DoctorReport:
    """All checks, in the order they ran.

    Attributes
    ----------
    checks
        One :class:`Check` per line.
    """

    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """False when a check the configuration needs failed."""
        return not any(c.status == "fail" for c in self.checks)

    def as_dict(self) -> dict[str, Any]:
        """``{"checks": [{"name", "status", "detail", "fix", "needed"}, ...], "ok": bool}``."""
        return {"checks": [c.as_dict() for c in self.checks], "ok": self.ok}

    def by_name(self, name: str) -> Check:
        """The check called ``name``.

        Raises
        ------
        KeyError
            When no check has that name.
        """
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(name)


class _Problem(Exception):
    """A check's negative verdict: ``detail`` and ``fix``; failing or warning by ``needed``."""

    def __init__(self, detail: str, fix: str = "") -> None:
        super().__init__(detail)
        self.detail = detail
        self.fix = fix


class _Skip(Exception):
    """Nothing to check."""

    def __init__(self, detail: str, fix: str = "") -> None:
        super().__init__(detail)
        self.detail = detail
        self.fix = fix


def _run_one(
    name: str, fn: Callable[[], str], *, needed: bool, timeout: float, fix_on_timeout: str = ""
) -> Check:
    """Run ``fn`` in a daemon thread, at most ``timeout`` s; turn its outcome into a Check."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["detail"] = fn()
        except BaseException as exc:  # noqa: BLE001 - every failure becomes a line of the table
            box["exc"] = exc

    worker = threading.Thread(target=target, name=f"doctor-{name}", daemon=True)
    stdout, stderr = sys.stdout, sys.stderr
    start = time.monotonic()
    worker.start()
    worker.join(timeout)
    bad: Status = "fail" if needed else "warn"
    if worker.is_alive():
        # A check left running may hold a redirect of stdout (model libraries' banners are
        # silenced that way): what this process prints next must still reach the terminal.
        sys.stdout, sys.stderr = stdout, stderr
        return Check(name, bad, f"no answer within {timeout:g} s", fix_on_timeout, needed)
    exc = box.get("exc")
    if exc is None:
        detail = box.get("detail", "")
        took = time.monotonic() - start
        if took > 2:
            detail = f"{detail} ({took:.0f} s)"
        return Check(name, "ok", redact(detail), "", needed)
    # Every detail goes through redact(): a store or LaunchPad named in it may carry a password.
    if isinstance(exc, _Skip):
        return Check(name, "skip", redact(exc.detail), exc.fix, needed)
    if isinstance(exc, _Problem):
        return Check(name, bad, redact(exc.detail), exc.fix, needed)
    return Check(name, bad, redact(one_line(exc, "first")), "", needed)


# ---- the checks -----------------------------------------------------------------------------------


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def check_packages() -> str:
    """Versions of the main dependencies; a missing core one or one outside its range is a problem."""
    found, missing = [], []
    for dist, extra in PACKAGES:
        v = _version(dist)
        if v is not None:
            found.append(f"{dist} {v}")
        elif extra is None:
            missing.append(dist)
    outside = _outside_ranges()
    if missing or outside:
        raise _Problem(
            "; ".join(
                ([f"missing: {', '.join(missing)}"] if missing else [])
                + ([f"outside the required range: {', '.join(outside)}"] if outside else [])
            ),
            'pip install -U "softening" (or `make setup` in a clone)',
        )
    return ", ".join(found)


def _outside_ranges() -> list[str]:
    """Core requirements of the installed ``softening`` that the environment does not satisfy."""
    from importlib.metadata import PackageNotFoundError, requires

    try:
        from packaging.requirements import Requirement
    except ImportError:  # pragma: no cover - packaging comes with pip's tooling
        return []
    try:
        reqs = requires("softening") or []
    except PackageNotFoundError:  # running from a source tree without installing
        return []
    bad = []
    for text in reqs:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        v = _version(req.name)
        if v is not None and req.specifier and not req.specifier.contains(v, prereleases=True):
            bad.append(f"{req.name} {v} (needs {req.specifier})")
    return bad


def check_torch() -> str:
    """torch's version and the device uMLIPs will use."""
    import torch

    device = get_settings().device
    cuda = torch.cuda.is_available()
    where = "CUDA available" if cuda else "CPU only"
    chosen = "cuda" if device == "cuda" or (device == "auto" and cuda) else "cpu"
    return f"torch {torch.__version__}, {where}; uMLIPs run on {chosen} (device={device})"


def check_gpu() -> str:
    """The GPU and its memory; a problem when there is none."""
    import torch

    if not torch.cuda.is_available():
        raise _Problem(
            "no CUDA device visible to torch: uMLIPs run on the CPU",
            "for speed, run uMLIP jobs on a GPU node (the 'umlip' category of the queue adapter); "
            "with SOFTENING_DEVICE=cuda this is an error",
        )
    free, total = torch.cuda.mem_get_info()
    name = torch.cuda.get_device_name(0)
    n = torch.cuda.device_count()
    return f"{n} x {name}; {free / 2**30:.1f} of {total / 2**30:.1f} GiB free on device 0"


def check_model(spec: str) -> Callable[[], str]:
    """A check that loads the model ``spec`` through the package's factory, offline."""

    def run() -> str:
        from softening.models import load_model

        family = spec.lower()
        if family.startswith("m3gnet") and not Path(spec).expanduser().exists():
            models_dir = get_settings().models_dir
            if models_dir is None:
                raise _Problem(
                    "models_dir is not set: M3GNet weights are looked up there",
                    "set SOFTENING_MODELS_DIR to the folder holding M3GNet-MP-2021.2.8-PES",
                )
        if family.startswith("mace") and importlib.util.find_spec("mace") is None:
            raise _Problem("mace-torch is not installed", 'pip install "softening[mace]"')
        if family.startswith("mace") and not Path(spec).expanduser().exists():
            raise _Skip(
                f"{spec} downloads its weights when first used; not loaded here",
                "give a local .model file to use MACE offline",
            )
        try:
            model = load_model(spec)
        except SofteningError as exc:
            raise _Problem(str(exc)) from None
        return f"{model.name} loads on {model.device} ({len(model.elements)} elements)"

    return run


def check_gpaw() -> str:
    """GPAW imports and finds its PAW setups."""
    try:
        import gpaw
    except ImportError:
        raise _Problem(
            "GPAW is not installed",
            'pip install "softening[gpaw]" (needs libxc, OpenBLAS, FFTW), or use --reference emt',
        ) from None
    paths = [p for p in getattr(gpaw, "setup_paths", []) if Path(p).is_dir()]
    try:
        import gpaw_data

        paths.append(str(gpaw_data.get_datapath()))
    except (ImportError, AttributeError):
        pass
    if not paths:
        raise _Problem(
            f"GPAW {gpaw.__version__}: no PAW setups found",
            'pip install gpaw-data (part of "softening[gpaw]"), or set GPAW_SETUP_PATH',
        )
    return f"GPAW {gpaw.__version__}, setups in {paths[0]}"


def _vasp_maker():
    from softening.makers.vasp import VaspReferenceMaker

    return VaspReferenceMaker()


def check_vasp_command() -> str:
    """atomate2's VASP command: its launcher and VASP binary must be executables on PATH."""
    from dataclasses import replace

    from atomate2 import SETTINGS

    maker = replace(_vasp_maker(), potcar_spec=True)  # the command only
    try:
        maker.check_environment()
    except SofteningError as exc:
        raise _Problem(
            str(exc).split("; set ATOMATE2_VASP_CMD")[0],
            "set ATOMATE2_VASP_CMD (or VASP_CMD in ~/.atomate2.yaml) to how VASP runs here, "
            "e.g. 'srun vasp_std'; load VASP's module on a compute node",
        ) from None
    cmd = os.path.expandvars(SETTINGS.VASP_CMD)
    exe = shutil.which(cmd.split()[0]) if cmd.split() else None
    return f"{cmd!r} ({exe})"


def check_potcars(structures: Sequence[Any] = ()) -> Callable[[], str]:
    """A check of pymatgen's POTCAR folder and, per structure, every POTCAR MP's input set needs."""

    def run() -> str:
        from pymatgen.core import SETTINGS as PMG_SETTINGS

        psp = PMG_SETTINGS.get("PMG_VASP_PSP_DIR")
        if not psp or not Path(psp).expanduser().is_dir():
            raise _Problem(
                "PMG_VASP_PSP_DIR is " + (f"{psp!r}, not a folder" if psp else "not set"),
                "point PMG_VASP_PSP_DIR (environment, or ~/.config/.pmgrc.yaml) at the folder "
                "holding POT_GGA_PAW_PBE/ (see `pmg config`)",
            )
        if not structures:
            subdirs = sorted(p.name for p in Path(psp).expanduser().iterdir() if p.is_dir())
            return f"PMG_VASP_PSP_DIR={psp} ({', '.join(subdirs) or 'no subfolders'})"
        from pymatgen.io.vasp.inputs import PotcarSingle

        maker = _vasp_maker()
        functional = maker.input_set_generator().potcar_functional
        needed: list[str] = []
        for structure in structures:
            spec = maker.get_input_set(structure, potcar_spec=True)["POTCAR.spec"]
            needed += [s for s in str(spec).split() if s not in needed]
        missing = []
        for symbol in needed:
            try:
                with warnings.catch_warnings():  # a POTCAR pymatgen does not know the hash of
                    warnings.simplefilter("ignore")
                    PotcarSingle.from_symbol_and_functional(symbol, functional)
            except Exception:  # noqa: BLE001 - any failure means VASP could not run
                missing.append(symbol)
        if missing:
            raise _Problem(
                f"missing under {psp} ({functional}): {', '.join(missing)}",
                f"add the {functional} POTCARs {', '.join(missing)} (MP's choice) to "
                "PMG_VASP_PSP_DIR",
            )
        return f"{', '.join(needed)} ({functional}) under {psp}"

    return run


def check_store(store: str | None = None) -> Callable[[], str]:
    """A check that the result store opens and is writable.

    An embedded folder is checked without writing into its database (a temporary file in the
    folder, write permission on the database files); a new folder is not created, and a MontyDB
    folder of an older version is reported, not converted. On MongoDB a probe document is written
    into the collection ``softening_doctor`` and removed.
    """

    def run() -> str:
        from softening.stores.factory import describe_store, resolve_store_spec, store_kind

        spec = resolve_store_spec(store)
        where = describe_store(spec)
        embedded = store_kind(spec) == "embedded"
        if embedded:
            path = Path(spec).expanduser()
            if not path.exists():
                parent = next((p for p in path.resolve().parents if p.exists()), Path("/"))
                if not os.access(parent, os.W_OK):
                    raise _Problem(
                        f"{where} does not exist and {parent} is not writable",
                        "give a writable --store folder or set SOFTENING_STORE",
                    )
                return f"{where} (new: created on the first run)"
            if not path.is_dir():
                raise _Problem(f"{where} is a file", "give a folder, a mongodb:// URI or .yaml")
            try:
                with tempfile.TemporaryFile(dir=path):
                    pass
            except OSError as exc:
                raise _Problem(
                    f"{where} is not writable: {exc.strerror}",
                    "give a writable --store folder or set SOFTENING_STORE",
                ) from None
            readonly = [p.name for p in sorted(path.glob("*.sqlite*")) if not os.access(p, os.W_OK)]
            if readonly:
                raise _Problem(
                    f"{where}: read-only {', '.join(readonly)}",
                    "make the store files writable (chmod u+w) or give another --store",
                )
            legacy = _legacy_store(path)
            if legacy:
                return f"{where}: {legacy}"
        from softening.stores import get_job_store

        job_store = get_job_store(spec)
        try:
            job_store.connect()
            n = job_store.docs_store.count()
            if not embedded:
                _probe_write(job_store.docs_store)
        except SofteningError as exc:
            raise _Problem(str(exc), _store_fix(spec)) from None
        finally:
            try:
                job_store.close()
            except Exception:  # noqa: BLE001 - closing a broken connection
                pass
        return f"{where}: {n} result document(s), writable"

    return run


def _legacy_store(path: Path) -> str | None:
    """A note when ``path`` holds an older (MontyDB) embedded store, which the next open converts."""
    try:
        from softening.stores.sqlite import has_legacy_store
    except ImportError:  # pragma: no cover - the MontyDB-only version of the stores
        return None
    if has_legacy_store(path):
        return "an older MontyDB folder: converted to SQLite by the next command that opens it"
    return None


def _probe_write(docs_store) -> None:
    """Write one document into the collection ``softening_doctor`` of a MongoDB store, remove it."""
    collection = getattr(docs_store, "_coll", None) or getattr(docs_store, "_collection", None)
    if collection is None:
        return
    probe = collection.database["softening_doctor"]
    try:
        result = probe.insert_one({"probe": "softening-doctor", "time": time.time()})
        probe.delete_one({"_id": result.inserted_id})
    except Exception as exc:  # noqa: BLE001 - reported as a line
        raise SofteningError(f"cannot write to the store: {redact(str(exc))}") from None


def _store_fix(spec: str) -> str:
    from softening.stores.factory import store_kind

    if store_kind(spec) == "mongodb":
        return (
            "check SOFTENING_MONGO_HOST/PORT/USERNAME/PASSWORD (or the URI) and that this node "
            "may reach the server; SOFTENING_MONGO_TIMEOUT sets the wait"
        )
    return "give a usable --store or set SOFTENING_STORE"


def check_store_integrity(store: str | None = None) -> Callable[[], str]:
    """A full check of an embedded store: the stores layer's ``check_integrity`` (sqlite's
    ``PRAGMA integrity_check``, then every document decoded), or ``PRAGMA integrity_check`` on every
    sqlite file of the folder where that is not available."""

    def run() -> str:
        from softening.stores.factory import resolve_store_spec, store_kind

        spec = resolve_store_spec(store)
        try:
            kind = store_kind(spec)
        except InputError:
            raise _Skip("no usable store spec (see the store check)") from None
        if kind != "embedded":
            raise _Skip("MongoDB keeps its own consistency; only embedded stores are checked")
        path = Path(spec).expanduser()
        if not path.is_dir():
            raise _Skip(f"{path} does not exist yet")
        files = [p for p in sorted(path.rglob("*")) if p.is_file() and _is_sqlite(p)]
        problems: list[str] = []
        try:
            from softening.stores.sqlite import check_integrity
        except ImportError:  # pragma: no cover - the MontyDB-only version of the stores
            check_integrity = None
        checked = set()
        if check_integrity is not None:
            from softening.stores.sqlite import database_path

            problems += check_integrity(path)
            checked.add(database_path(path).resolve())
        for p in files:
            if p.resolve() in checked:
                continue
            verdict = sqlite_integrity(p)
            if verdict != "ok":
                problems.append(f"{p.relative_to(path)}: {verdict}")
        if problems:
            raise _Problem(
                "; ".join(problems[:5]) + (f" (+{len(problems) - 5} more)" if problems[5:] else ""),
                "restore the store folder from a copy, or rerun into a fresh --store",
            )
        return f"{len(files)} sqlite file(s) in {path}: intact"

    return run


def _is_sqlite(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            return fh.read(16) == b"SQLite format 3\x00"
    except OSError:
        return False


def sqlite_integrity(path: str | Path) -> str:
    """``ok``, or what sqlite's ``PRAGMA integrity_check`` found wrong in ``path`` (one line)."""
    from softening.stores.sqlite import file_integrity

    try:
        # Read-only, also on a read-only mount (where a WAL file cannot get its -shm file).
        lines = file_integrity(Path(path).resolve(), timeout=5)
    except sqlite3.DatabaseError as exc:
        return str(exc)
    return "; ".join(lines[:3]) if lines else "ok"


def check_launchpad(path: str | None = None) -> Callable[[], str]:
    """A check that the LaunchPad's MongoDB answers (``mongo_timeout`` s at most)."""

    def run() -> str:
        from softening.hpc.config import launchpad_dict, load_launchpad, resolve_launchpad_path

        try:
            p = resolve_launchpad_path(path)
        except SofteningError as exc:
            if path is not None or get_settings().launchpad is not None:
                raise _Problem(str(exc)) from None
            raise _Skip(
                str(exc).split(":")[0], "only `submit`, `status`, `rerun` need it"
            ) from None
        data = launchpad_dict(p)
        try:
            lp = load_launchpad(p, check=True)
        except SofteningError as exc:
            raise _Problem(
                str(exc),
                "check SOFTENING_MONGO_HOST/PORT/USERNAME/PASSWORD and that this node may reach "
                "the server (or `softening submit --single-job`, which needs no MongoDB)",
            ) from None
        n = lp.workflows.count_documents({})
        where = f"{data['host']}:{data.get('port', 27017)}/{data.get('name', 'fireworks')}"
        return f"{p}: {redact(where)} answers, {n} flows"

    return run


def check_slurm() -> str:
    """sbatch and squeue on PATH, and squeue answering."""
    missing = [c for c in ("sbatch", "squeue", "scontrol") if shutil.which(c) is None]
    if missing:
        raise _Problem(
            f"not on PATH: {', '.join(missing)}",
            "run `softening submit` on a SLURM login node (or load the slurm module)",
        )
    try:
        proc = subprocess.run(
            ["squeue", "--version"], capture_output=True, text=True, timeout=5, check=False
        )
    except subprocess.TimeoutExpired:
        raise _Problem("squeue --version hangs", "check slurmctld on this cluster") from None
    lines = (proc.stdout + proc.stderr).strip().splitlines() or [f"exit {proc.returncode}"]
    if proc.returncode != 0:
        raise _Problem(
            f"squeue --version failed: {lines[-1]}",
            "SLURM has no configuration on this node (slurm.conf, SLURM_CONF): run on a login node",
        )
    return f"{lines[0]}; sbatch at {shutil.which('sbatch')}"


def check_qadapter(path: str | None = None) -> Callable[[], str]:
    """A check that the queue adapter file parses into queue groups."""

    def run() -> str:
        from softening.hpc.config import load_qadapters, resolve_qadapter_path

        p = resolve_qadapter_path(path, required=False)
        if p is None:
            raise _Skip(
                "no queue adapter file (./qadapter_slurm.yaml or SOFTENING_QADAPTER)",
                "only `submit --launch` needs it",
            )
        try:
            groups = load_qadapters(p, None, tempfile.gettempdir())
        except SofteningError as exc:
            raise _Problem(str(exc), "fix the file (qadapter_slurm.yaml is a template)") from None
        parts = [f"{g.name}: queue {g.params.get('queue') or '(default)'}" for g in groups]
        return f"{p}: {'; '.join(parts)}"

    return run


# ---- all of them ----------------------------------------------------------------------------------


def _read_structures(structures: Iterable[Any]) -> list[Any]:
    from pymatgen.core import Structure

    from softening.datasets.readers import read_structure

    return [s if isinstance(s, Structure) else read_structure(s) for s in structures]


def run_checks(
    *,
    store: str | None = None,
    structures: Iterable[Any] = (),
    vasp: bool = False,
    launchpad: str | None = None,
    qadapter: str | None = None,
    models: Sequence[str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    total: float = TOTAL_BUDGET,
) -> DoctorReport:
    """Check what this machine and configuration can do; each check at most ``timeout`` s.

    Parameters
    ----------
    store
        The result store (default: the ``store`` setting); always needed.
    structures
        Files or pymatgen structures that VASP would label: every POTCAR they need under MP's
        choice is checked, and VASP counts as needed.
    vasp
        Treat VASP as needed even when the ``reference`` setting is not ``vasp``.
    launchpad, qadapter
        The FireWorks files (default: the settings, then ``./launchpad.yaml`` and
        ``./qadapter_slurm.yaml``); needed when given here or named by the settings.
    models
        The uMLIPs to load (default: ``md_model`` and ``models`` of the settings); all needed.
    timeout
        Seconds each check may take (MongoDB checks: at least ``mongo_timeout`` + 2).
    total
        Seconds all checks together may take; checks left when it is spent are skipped.

    Returns
    -------
    DoctorReport
        ``report.ok`` is False when a needed check failed.

    Raises
    ------
    SofteningError
        When a structure file cannot be read.
    """
    settings = get_settings()
    structs = _read_structures(structures)
    reference = settings.reference.lower()
    need_vasp = vasp or bool(structs) or reference == "vasp"
    if models is None:
        models = list(dict.fromkeys([settings.md_model, *settings.models]))
    from softening.stores.factory import resolve_store_spec, store_kind

    try:
        store_is_mongo = store_kind(resolve_store_spec(store)) == "mongodb"
    except InputError:
        store_is_mongo = False  # an unusable spec: the store check reports it, as one line
    lp_named = launchpad is not None or settings.launchpad is not None
    qa_named = qadapter is not None or settings.qadapter is not None
    mongo_wait = settings.mongo_timeout + 2
    gpu_needed = settings.device == "cuda"

    plan: list[tuple[str, Callable[[], str], bool, float]] = [
        ("packages", check_packages, True, timeout),
        ("torch", check_torch, True, timeout),
        ("gpu", check_gpu, gpu_needed, timeout),
    ]
    plan += [(f"model {m}", check_model(m), True, timeout) for m in models]
    extra_models = [m for m in ("chgnet", "m3gnet") if m not in models]
    plan += [(f"model {m}", check_model(m), False, timeout) for m in extra_models]
    plan += [
        ("gpaw", check_gpaw, reference == "gpaw", timeout),
        ("vasp command", check_vasp_command, need_vasp, timeout),
        ("potcars", check_potcars(structs), need_vasp, timeout),
        ("store", check_store(store), True, max(timeout, mongo_wait)),
        ("store integrity", check_store_integrity(store), True, max(timeout, 30.0)),
        ("launchpad", check_launchpad(launchpad), lp_named, max(timeout, mongo_wait)),
        ("slurm", check_slurm, qa_named, timeout),
        ("queue adapter", check_qadapter(qadapter), qa_named, timeout),
    ]
    # Needed checks first, so that a slow optional one cannot spend the budget they need; the
    # report keeps the order above.
    results: dict[int, Check] = {}
    deadline = time.monotonic() + max(total, 1.0)
    for i in sorted(range(len(plan)), key=lambda i: not plan[i][2]):
        name, fn, needed, limit = plan[i]
        left = deadline - time.monotonic()
        if left < 1:
            results[i] = Check(
                name, "skip", f"not run: the {total:g} s budget is spent", "", needed
            )
            continue
        fix = _store_fix(resolve_store_spec(store)) if name == "store" and store_is_mongo else ""
        results[i] = _run_one(name, fn, needed=needed, timeout=min(limit, left), fix_on_timeout=fix)
    return DoctorReport([results[i] for i in range(len(plan))])


def python_info() -> str:
    """``Python 3.x.y on <platform>`` (the header of the table)."""
    return f"Python {sys.version.split()[0]} on {sys.platform} ({sys.executable})"
