"""matgl potentials (M3GNet, TensorNet, ...): model folders, batched inference, fine-tuning.

Specs: a matgl model folder (``model.json``), or a matgl model name (``m3gnet`` is
``M3GNet-MP-2021.2.8-PES``) looked up in the ``models_dir`` setting first, then (only with network)
on the model hub. A folder naming code outside matgl is refused (:func:`check_matgl_folder`).
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from pymatgen.core import Structure

from softening.errors import ModelError
from softening.models.backends import Backend, BatchParts, LoadedModel, as_numpy, require_network
from softening.models.training import GPA_PER_EV_PER_A3, FineTuneSettings, TrainingSet, split
from softening.models.trust import check_archive_size, load_problem, sha256_of
from softening.settings import get_settings

EV_PER_A3_PER_GPA = 1.0 / GPA_PER_EV_PER_A3
WEIGHTS = "model"


class MatglBackend(Backend):
    """matgl potentials (see the module docstring)."""

    family = "matgl"
    gb_per_atom = 0.4 / 64
    names = ("m3gnet",)
    local = "a matgl model folder (model.json)"

    def claims(self, spec: str, path: Path | None) -> bool:
        if path is not None:
            return path.is_dir() and (path / "model.json").is_file()
        low = spec.lower()
        return low.startswith(("m3gnet", "tensornet", "matgl")) or "-pes" in low

    def name_key(self, spec: str) -> str:
        # As load looks the name up: the folder in models_dir (the same key as its path), else the
        # hub name.
        name = spec.strip()
        folder = _find_matgl_folder(name)
        if folder is None and name.lower() == "m3gnet":
            name = "M3GNet-MP-2021.2.8-PES"
            folder = _find_matgl_folder(name)
        return str(folder.resolve()) if folder is not None else name.lower()

    def load(
        self, spec: str, path: Path | None, device: str, dtype: str, trust: bool = False
    ) -> LoadedModel:
        # A name is looked up in the models_dir setting, never in the working directory (a folder
        # there named like a model does not replace it: softening.models.factory).
        folder = path if path is not None else _find_matgl_folder(spec)
        spec = str(path) if path is not None else spec
        if folder is None and spec.lower() == "m3gnet":
            spec = "M3GNet-MP-2021.2.8-PES"
            folder = _find_matgl_folder(spec)
        if folder is None:
            require_network(spec, hint="a local matgl model folder (with model.json)")
        import matgl

        os.environ.setdefault("HF_HUB_OFFLINE", "0" if folder is None else "1")
        if folder is not None:
            check_matgl_folder(folder)
        try:
            potential = matgl.load_model(str(folder or spec))
        except Exception as exc:  # matgl raises many kinds for a bad folder
            raise ModelError(f"cannot load matgl model {spec!r}: {exc}") from exc
        if dtype == "float64":
            potential = potential.double()
        potential = potential.to(device).eval()
        name = folder.name if folder is not None else spec
        element_types = getattr(potential.model, "element_types", None) or ()
        files = sorted(folder.glob("*.pt")) if folder is not None else []
        return LoadedModel(
            name=name,
            family=self.family,
            model=potential,
            elements=frozenset(element_types),
            device=device,
            dtype=dtype,
            version=name,
            path=str(folder) if folder is not None else None,
            weights_sha256=sha256_of(files) if files else None,
            extra={"architecture": type(potential.model).__name__},
            backend=self,
        )

    def calculator(self, model: LoadedModel):
        from matgl.ext.ase import PESCalculator

        return PESCalculator(model.model, stress_unit="eV/A3")

    def batch_parts(self, model: LoadedModel) -> BatchParts:
        import torch
        from torch_geometric.data import Batch

        pot = model.model
        dtype = next(pot.parameters()).dtype

        def forward(batch):
            g = Batch.from_data_list([b[0] for b in batch]).to(model.device)
            for key in ("frac_coords", "pbc_offset"):
                if key in g and torch.is_floating_point(g[key]):
                    g[key] = g[key].to(dtype)
            lat = torch.cat([b[1] for b in batch]).to(model.device, dtype)
            state = torch.cat([b[2].reshape(1, -1) for b in batch]).to(model.device, dtype)
            e, f, st = pot(g, lat, state)[:3]
            e = e.reshape(-1)  # a batch of one comes back 0-dim
            sizes = [b[0].num_nodes for b in batch]
            forces = torch.split(f, sizes)
            if st.numel() != 9 * len(batch):  # a potential built without stresses returns a stub
                return [
                    (float(e[i].detach()), as_numpy(forces[i]), None) for i in range(len(batch))
                ]
            st = st.reshape(len(batch), 3, 3)
            return [
                (float(e[i].detach()), as_numpy(forces[i]), as_numpy(st[i]) * EV_PER_A3_PER_GPA)
                for i in range(len(batch))
            ]

        return MatglGraphBuilder(pot.model.element_types, pot.model.cutoff), forward

    def features(self, model: LoadedModel, structures: list[Structure]) -> np.ndarray:
        # The per-atom features the readout reads (TensorNet's scalars, M3GNet's last graph
        # convolution), averaged over the atoms of each structure: what DIRECT clusters.
        import torch

        net = model.model.model
        rows = []
        with torch.no_grad():
            for structure in structures:
                net.predict_structure(structure)
                rows.append(_structure_feature(net.feature_dict))
        return np.stack(rows)

    def finetune(
        self, model: LoadedModel, train: TrainingSet, settings: FineTuneSettings, workdir: Path
    ) -> tuple[Any, dict]:
        return finetune_matgl(model.model, train, settings, workdir)

    def save(self, model: LoadedModel, folder: Path, trained: Any = None) -> str:
        folder.mkdir(parents=True, exist_ok=True)
        (model.model if trained is None else trained).save(str(folder / WEIGHTS))
        return WEIGHTS


BACKEND = MatglBackend()


class MatglGraphBuilder:
    """Structure -> (graph, lattice, state) for a matgl potential (picklable, runs in workers)."""

    def __init__(self, element_types, cutoff: float) -> None:
        from matgl.ext.ase import Atoms2Graph

        self.converter = Atoms2Graph(element_types, cutoff)

    def __call__(self, structure: Structure):
        import torch
        from pymatgen.io.ase import AseAtomsAdaptor

        g, lat, state = self.converter.get_graph(AseAtomsAdaptor.get_atoms(structure))
        return g, torch.as_tensor(lat).reshape(1, 3, 3), torch.as_tensor(state)


def _matgl_modules(obj: Any) -> Iterable[str]:
    """Every ``@module`` named in a matgl model description (nested dicts and lists)."""
    if isinstance(obj, dict):
        if isinstance(obj.get("@module"), str):
            yield obj["@module"]
        for v in obj.values():
            yield from _matgl_modules(v)
    elif isinstance(obj, list | tuple):
        for v in obj:
            yield from _matgl_modules(v)


def check_matgl_folder(folder: Path) -> None:
    """Refuse a matgl folder whose description names classes outside matgl.

    matgl imports the ``@module``/``@class`` that ``model.json`` and ``model.pt`` name and calls
    them with the file's arguments: a crafted folder could name any importable callable. Its
    tensors are loaded with ``weights_only=True`` by matgl itself.

    Raises
    ------
    ModelError
        Unreadable files, a file over the size limit (a zip bomb), or a module outside ``matgl``.
    """
    import json

    import torch

    try:
        described = json.loads((folder / "model.json").read_text())
    except Exception as exc:
        raise ModelError(
            f"cannot read {str(folder / 'model.json')!r}: {type(exc).__name__}"
        ) from None
    modules = list(_matgl_modules(described))
    for archive in sorted(folder.glob("*.pt")):  # matgl reads model.pt and state.pt
        check_archive_size(archive)
    if (folder / "model.pt").is_file():
        try:
            args = torch.load(str(folder / "model.pt"), map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ModelError(
                f"cannot load {str(folder / 'model.pt')!r}: {load_problem(exc, folder / 'model.pt')}"
            ) from None
        modules += list(_matgl_modules(args))
    bad = sorted({m for m in modules if m != "matgl" and not m.startswith("matgl.")})
    if bad:
        raise ModelError(
            f"matgl model folder {str(folder)!r} names code outside matgl ({', '.join(bad)}); "
            "refused: loading it would import and call that code"
        )


def _find_matgl_folder(spec: str) -> Path | None:
    """The folder of the matgl model named ``spec`` in the ``models_dir`` setting, if any."""
    models_dir = get_settings().models_dir
    if models_dir is not None and (Path(models_dir) / spec / "model.json").is_file():
        return Path(models_dir) / spec
    return None


def finetune_matgl(potential, train: TrainingSet, settings: FineTuneSettings, workdir: Path):
    """Fine-tune a copy of a matgl ``Potential`` (M3GNet, TensorNet, ...) with matgl's Lightning
    module; returns the trained ``Potential`` and the per-epoch losses."""
    from functools import partial

    import lightning as pl
    import torch
    from matgl.ext.pymatgen import Structure2Graph
    from matgl.graph.data import MGLDataLoader, MGLDataset, collate_fn_pes
    from matgl.utils.training import PotentialLightningModule

    pot = copy.deepcopy(potential)
    model = pot.model
    for name, p in model.named_parameters():
        # head: only the final readout MLP learns; the backbone stays as trained on MP.
        p.requires_grad = settings.mode == "full" or name.startswith("final_layer")
    has_stress = all(s is not None for s in train.stresses)
    converter = Structure2Graph(element_types=model.element_types, cutoff=model.cutoff)
    labels = {
        "energies": [float(e) for e in train.energies],
        "forces": [np.asarray(f).tolist() for f in train.forces],
        "stresses": [
            (np.asarray(s) * GPA_PER_EV_PER_A3).tolist()
            if has_stress
            else np.zeros((3, 3)).tolist()
            for s in train.stresses
        ],
    }
    train_idx, val_idx, _ = split(len(train.structures), settings)

    def subset(idx, tag):
        return MGLDataset(
            structures=[train.structures[i] for i in idx],
            labels={k: [v[i] for i in idx] for k, v in labels.items()},
            converter=converter,
            root=str(workdir / tag),
            save_cache=False,
        )

    workdir.mkdir(parents=True, exist_ok=True)
    collate = partial(collate_fn_pes, include_line_graph=False, include_stress=True)
    train_loader, val_loader = MGLDataLoader(
        train_data=subset(train_idx, "train"),
        val_data=subset(val_idx, "val"),
        collate_fn=collate,
        batch_size=min(settings.batch_size, len(train_idx)),
        num_workers=0,
        generator=torch.Generator().manual_seed(settings.seed),
    )
    steps = max(1, settings.epochs * len(train_loader))
    lit = PotentialLightningModule(
        model=model,
        element_refs=getattr(pot.element_refs, "property_offset", None),
        data_mean=pot.data_mean,
        data_std=pot.data_std,
        energy_weight=settings.energy_weight,
        force_weight=settings.force_weight,
        stress_weight=settings.stress_weight if has_stress else 0.0,
        lr=settings.learning_rate,
        decay_steps=steps,
        decay_alpha=settings.final_learning_rate / settings.learning_rate,
        include_line_graph=False,
    )
    pl.seed_everything(settings.seed, verbose=False)
    trainer = pl.Trainer(
        max_epochs=settings.epochs,
        accelerator="cpu" if not torch.cuda.is_available() else "auto",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(workdir),
    )
    with contextlib.redirect_stdout(io.StringIO()):
        trainer.fit(lit, train_loader, val_loader)
    # Trained without stress labels, matgl's module builds its Potential without stresses; the
    # saved model is rebuilt around the trained network so that it predicts them as the base did.
    from matgl.apps.pes import Potential

    trained = Potential(
        model=lit.model.model,
        data_mean=lit.model.data_mean,
        data_std=lit.model.data_std,
        element_refs=getattr(pot.element_refs, "property_offset", None),
        calc_stresses=potential.calc_stresses,
    ).eval()
    history = {k: float(v) for k, v in trainer.callback_metrics.items()}
    return trained, history


def _structure_feature(feature_dict: dict[str, Any]) -> np.ndarray:
    """Mean over atoms of a matgl model's last per-atom features (``model.feature_dict``)."""
    readout = feature_dict.get("readout")
    if readout is not None and readout.ndim == 2 and readout.shape[1] > 1:
        atoms = readout  # TensorNet: (n_atoms, n_features) scalars fed to the energy head
    else:
        layers = [k for k in feature_dict if k.startswith("gc_")]
        last = feature_dict[max(layers, key=lambda k: int(k.split("_")[1]))] if layers else None
        atoms = last["node_feat"] if isinstance(last, dict) else last
        if atoms is None:
            raise ModelError(f"no per-atom features in this matgl model: {sorted(feature_dict)}")
    atoms = atoms.detach().reshape(atoms.shape[0], -1)
    return atoms.mean(dim=0).cpu().double().numpy()
