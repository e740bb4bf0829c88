"""MACE (the ``mace`` package): model files, MACE-MP-0, batched inference, fine-tuning.

Specs: ``mace-mp-0`` / ``mace-mp-0-medium`` (mace's ``mace_mp`` foundation model; needs network), or
a local ``.model`` file. A MACE model file is a whole pickled module: it is unpickled only when
:mod:`softening.models.trust` allows it.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import numpy as np
from pymatgen.core import Structure

from softening.errors import InputError, ModelError
from softening.models.backends import (
    Backend,
    BatchParts,
    LoadedModel,
    as_numpy,
    require_network,
    symbols_of,
)
from softening.models.training import FineTuneSettings, TrainingSet, split
from softening.models.trust import is_pickled_code, sha256_of

WEIGHTS = "model.model"


class MaceBackend(Backend):
    """MACE models (see the module docstring)."""

    family = "mace"
    gb_per_atom = 0.6 / 64
    names = ("mace-mp-0",)
    suffixes = (".model", ".pt")
    local = "a MACE .model file"

    def claims(self, spec: str, path: Path | None) -> bool:
        low = spec.lower()
        if path is not None:
            return not path.is_dir() and low.endswith(self.suffixes)
        return low.startswith("mace")

    def name_key(self, spec: str) -> str:
        low = spec.strip().lower()
        if not low.startswith("mace-mp-0"):
            return low
        return f"mace-mp-0-{low.removeprefix('mace-mp-0').strip('-') or 'medium'}"

    def load(
        self, spec: str, path: Path | None, device: str, dtype: str, trust: bool = False
    ) -> LoadedModel:
        _import_mace()
        if path is None:
            require_network(spec, hint="a local MACE .model file")
            from mace.calculators import mace_mp

            size = spec.lower().removeprefix("mace-mp-0").strip("-") or "medium"
            calc = mace_mp(model=size, device=device, default_dtype=dtype)
            module = calc.models[0]
            name, weights = f"MACE-MP-0-{size}", None
        else:
            module = load_mace_module(path, device, trust=trust)
            name, weights = f"MACE-{path.stem}", path
        module = module.double() if dtype == "float64" else module.float()
        module = module.to(device).eval()
        z_table = getattr(module, "atomic_numbers", None)
        elements = symbols_of(z_table.tolist()) if z_table is not None else frozenset()
        return LoadedModel(
            name=name,
            family=self.family,
            model=module,
            elements=elements,
            device=device,
            dtype=dtype,
            version=path.stem if path is not None else spec,
            path=str(path) if path is not None else None,
            weights_sha256=sha256_of(weights) if weights is not None else None,
            backend=self,
        )

    def calculator(self, model: LoadedModel):
        MACECalculator = _import_mace().MACECalculator  # noqa: N806

        return MACECalculator(models=model.model, device=model.device, default_dtype=model.dtype)

    def batch_parts(self, model: LoadedModel) -> BatchParts:
        import torch
        from mace.tools import torch_geometric

        calc = self.calculator(model)  # holds the z table, cutoff and heads of this model
        net = model.model
        dtype = next(net.parameters()).dtype

        def forward(batch):
            b = torch_geometric.Batch.from_data_list(batch).to(model.device)
            for key in b.keys:
                if torch.is_tensor(b[key]) and torch.is_floating_point(b[key]):
                    b[key] = b[key].to(dtype)
            out = net(b.to_dict(), compute_stress=True, training=False)
            sizes = (b["ptr"][1:] - b["ptr"][:-1]).tolist()
            forces = torch.split(out["forces"], sizes)
            return [
                (float(out["energy"][i].detach()), as_numpy(forces[i]), as_numpy(out["stress"][i]))
                for i in range(len(batch))
            ]

        build = MaceGraphBuilder(
            calc.z_table, calc.r_max, calc.head, calc.available_heads, model.dtype
        )
        return build, forward

    def features(self, model: LoadedModel, structures: list[Structure]) -> np.ndarray:
        # MACE's invariant node descriptors (all layers), averaged over the atoms.
        from pymatgen.io.ase import AseAtomsAdaptor

        calc = self.calculator(model)
        rows = []
        for structure in structures:
            desc = calc.get_descriptors(AseAtomsAdaptor.get_atoms(structure))
            rows.append(np.asarray(desc, dtype=float).reshape(len(structure), -1).mean(axis=0))
        return np.stack(rows)

    def finetune(
        self, model: LoadedModel, train: TrainingSet, settings: FineTuneSettings, workdir: Path
    ) -> tuple[Any, dict]:
        if model.path is None:
            raise InputError("MACE fine-tuning needs the foundation model as a local file")
        replay = Path(settings.replay_data) if settings.replay_data else None
        return finetune_mace(
            Path(model.path), train, settings, workdir, dtype=model.dtype, replay=replay
        )

    def save(self, model: LoadedModel, folder: Path, trained: Any = None) -> str:
        """``trained`` is the model file mace's trainer wrote; by default, ``model``'s own file."""
        import torch

        folder.mkdir(parents=True, exist_ok=True)
        source = trained if trained is not None else model.path
        if source is not None:
            (folder / WEIGHTS).write_bytes(Path(source).read_bytes())
        else:  # a downloaded foundation model: the loaded module, pickled as mace saves models
            torch.save(model.model, folder / WEIGHTS)
        return WEIGHTS


BACKEND = MaceBackend()


def _import_mace():
    """Import ``mace.calculators`` without keeping its process-wide side effect.

    mace sets ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` on import, which silently turns off torch's
    safe loading for every later ``torch.load`` in the process; this package passes
    ``weights_only=False`` explicitly where a whole model is loaded, so the variable is restored.
    """
    before = os.environ.get("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")
    try:
        import mace.calculators
    except ImportError as exc:
        if importlib.util.find_spec("mace") is not None:
            raise  # installed but broken: keep the real error
        raise ModelError('MACE is not installed: pip install "softening[mace]"') from exc

    if before is None:
        os.environ.pop("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", None)
    return mace.calculators


def load_mace_module(path: Path, device: str, trust: bool = False):
    """Load a whole pickled MACE model file (how MACE-MP-0 and mace's trainer save models).

    torch >= 2.6 defaults to ``weights_only=True``, which refuses pickled modules; mace's own
    calculator does not pass ``weights_only``. Unpickling runs code from the file, so it happens
    only for files :func:`softening.models.trust.check_pickle_allowed` accepts (an opt-in, known
    published weights, or a model this package wrote).

    Raises
    ------
    ModelError
        The file is not trusted (the message says how to opt in), or it is not a MACE model
        (random or truncated bytes, another pickled object).
    """
    import torch

    from softening.models.trust import check_pickle_allowed

    # Unreadable bytes are said to be so (not "untrusted"): the restricted unpickler reads them
    # without running anything.
    if is_pickled_code(path) is None:
        raise ModelError(
            f"cannot load MACE model file {str(path)!r}: not a readable torch file (random, "
            "truncated or corrupted bytes)"
        )
    check_pickle_allowed(path, "MACE model file", trust=trust)
    try:
        module = torch.load(str(path), map_location=device, weights_only=False)
    except Exception as exc:
        first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "")
        raise ModelError(
            f"cannot load MACE model file {str(path)!r}: not a readable torch file "
            f"({type(exc).__name__}: {first[:160]})"
        ) from None
    if not isinstance(module, torch.nn.Module) or not hasattr(module, "atomic_numbers"):
        raise ModelError(
            f"cannot load MACE model file {str(path)!r}: it holds a {type(module).__name__}, "
            "not a MACE model"
        )
    return module


class MaceGraphBuilder:
    """Structure -> MACE ``AtomicData`` (picklable, runs in workers)."""

    def __init__(self, z_table, cutoff: float, head: str, heads, dtype: str) -> None:
        from mace import data as mace_data

        self.z_table, self.cutoff, self.head, self.heads = z_table, cutoff, head, heads
        self.dtype = dtype
        self.keyspec = mace_data.KeySpecification(info_keys={}, arrays_keys={"charges": "Qs"})

    def __call__(self, structure: Structure):
        from mace import data as mace_data
        from mace.tools import torch_tools
        from pymatgen.io.ase import AseAtomsAdaptor

        with torch_tools.default_dtype(self.dtype):
            config = mace_data.config_from_atoms(
                AseAtomsAdaptor.get_atoms(structure),
                key_specification=self.keyspec,
                head_name=self.head,
            )
            return mace_data.AtomicData.from_config(
                config, z_table=self.z_table, cutoff=self.cutoff, heads=self.heads
            )


def finetune_mace(
    model_path: Path,
    train: TrainingSet,
    settings: FineTuneSettings,
    workdir: Path,
    dtype: str = "float64",
    replay: Path | None = None,
) -> tuple[Path, dict]:
    """Fine-tune a MACE model file with mace's own training entry point (``mace.cli.run_train``).

    Plain fine-tuning of the foundation model by default; with ``replay`` (an extxyz of the
    foundation's training data), mace's multi-head replay fine-tuning. ``head`` mode trains the
    readouts only (the other learning-rate factors are zero). Returns the new model file.
    """
    import json as _json
    import subprocess
    import sys

    from ase.io import write

    workdir.mkdir(parents=True, exist_ok=True)
    atoms = []
    for s, e, f, st in zip(
        train.structures, train.energies, train.forces, train.stresses, strict=True
    ):
        a = s.to_ase_atoms()
        a.info["REF_energy"] = float(e)
        a.arrays["REF_forces"] = np.asarray(f)
        if st is not None:
            a.info["REF_stress"] = np.asarray(st)
        atoms.append(a)
    train_idx, val_idx, _ = split(len(atoms), settings)
    val = [atoms[i] for i in val_idx]
    tr = [atoms[i] for i in train_idx]
    write(workdir / "train.extxyz", tr)
    write(workdir / "valid.extxyz", val)
    factors = {
        "embedding_lr_factor": 1.0,
        "interactions_lr_factor": 1.0,
        "products_lr_factor": 1.0,
        "readouts_lr_factor": 1.0,
    }
    if settings.mode == "head":
        factors.update(embedding_lr_factor=0.0, interactions_lr_factor=0.0, products_lr_factor=0.0)
    args = [
        "--name",
        "finetuned",
        "--foundation_model",
        str(model_path),
        "--train_file",
        "train.extxyz",
        "--valid_file",
        "valid.extxyz",
        "--energy_key",
        "REF_energy",
        "--forces_key",
        "REF_forces",
        "--stress_key",
        "REF_stress",
        "--loss",
        "weighted",
        "--energy_weight",
        str(settings.energy_weight),
        "--forces_weight",
        str(settings.force_weight),
        "--stress_weight",
        str(settings.stress_weight),
        "--lr",
        str(settings.learning_rate),
        "--max_num_epochs",
        str(settings.epochs),
        "--batch_size",
        str(min(settings.batch_size, len(tr))),
        "--valid_batch_size",
        str(min(settings.batch_size, len(val))),
        "--E0s",
        "average",
        "--device",
        "cpu",
        "--default_dtype",
        dtype,
        "--seed",
        str(settings.seed),
        "--eval_interval",
        "1",
        "--lr_params_factors",
        _json.dumps(factors),
        "--multiheads_finetuning",
        "True" if replay else "False",
    ]
    if replay is not None:
        args += ["--pt_train_file", str(replay)]
    res = subprocess.run(
        [sys.executable, "-m", "mace.cli.run_train", *args],
        cwd=workdir,
        capture_output=True,
        text=True,
    )
    out = workdir / "finetuned.model"
    if res.returncode != 0 or not out.exists():
        tail = (res.stderr or res.stdout).strip().splitlines()[-1:] or ["no output"]
        raise ModelError(f"MACE fine-tuning failed: {tail[0]}")
    return out, {"log": str(workdir / "logs")}
