"""CHGNet (the ``chgnet`` package): bundled weights, checkpoints, batched inference, fine-tuning.

Specs: ``chgnet`` / ``chgnet-0.3.0`` / ``chgnet-0.2.0`` / ``chgnet-r2scan`` (weights shipped inside
the ``chgnet`` wheel, offline; ``chgnet`` is 0.3.0, the paper's), or a ``.pth.tar`` checkpoint.
Checkpoints are loaded without unpickling code (:func:`chgnet_from_checkpoint`).
"""

from __future__ import annotations

import contextlib
import copy
import io
from pathlib import Path
from typing import Any

import numpy as np

from softening.errors import ModelError
from softening.models.backends import (
    Backend,
    BatchParts,
    LoadedModel,
    as_numpy,
    quiet,
    symbols_of,
)
from softening.models.training import GPA_PER_EV_PER_A3, FineTuneSettings, TrainingSet, split
from softening.models.trust import check_archive_size, load_problem, sha256_of

CHGNET_VERSIONS = {"0.3.0", "0.2.0", "r2scan"}
WEIGHTS = "model.pth.tar"


class ChgnetBackend(Backend):
    """CHGNet models (see the module docstring)."""

    family = "chgnet"
    # CHGNet needs about 0.8 GB per 64-atom frame in a batch (measured on these machines).
    gb_per_atom = 0.8 / 64
    names = ("chgnet",)
    suffixes = (".pth.tar", ".pth")
    local = "a CHGNet .pth.tar checkpoint"

    def claims(self, spec: str, path: Path | None) -> bool:
        low = spec.lower()
        if path is not None:
            return not path.is_dir() and low.endswith(self.suffixes)
        return low == "chgnet" or low.startswith(("chgnet-", "chgnet_"))

    def name_key(self, spec: str) -> str:
        return f"chgnet-{spec.strip().lower()[7:] or '0.3.0'}"

    def load(
        self, spec: str, path: Path | None, device: str, dtype: str, trust: bool = False
    ) -> LoadedModel:
        import chgnet

        if path is not None:
            model = chgnet_from_checkpoint(path)
            weights = path
            name = f"CHGNet-{path.stem.split('.')[0]}"
            version = getattr(model, "version", None) or path.stem
        else:
            version = spec.lower()[7:] or "0.3.0"
            if version not in CHGNET_VERSIONS:
                raise ModelError(
                    f"unknown CHGNet version {version!r}; bundled: "
                    f"{', '.join(sorted(CHGNET_VERSIONS))}"
                )
            pretrained = Path(chgnet.__file__).parent / "pretrained" / version
            weights = next(pretrained.glob("*.pth.tar"))
            # As CHGNet.load, but without unpickling code (CHGNet.from_file: weights_only=False).
            model = chgnet_from_checkpoint(
                weights, mlp_out_bias=version == "0.2.0", version=version
            )
            name = f"CHGNet-{version}"
        if dtype == "float64":
            # CHGNet's graph converter and composition model hard-code float32 tensors
            # (chgnet.model.model.TORCH_DTYPE); a float64 model fails inside CHGNet itself.
            raise ModelError("CHGNet runs in float32 only; use --dtype float32 (the default)")
        model = model.to(device)
        model.eval()
        # CHGNet's embedding covers atomic numbers 1-94.
        n_elements = model.atom_embedding.embedding.num_embeddings
        return LoadedModel(
            name=name,
            family=self.family,
            model=model,
            elements=symbols_of(range(1, n_elements + 1)),
            device=device,
            dtype=dtype,
            version=str(version),
            path=str(weights),
            weights_sha256=sha256_of(weights),
            backend=self,
        )

    def calculator(self, model: LoadedModel):
        from chgnet.model.dynamics import CHGNetCalculator

        return CHGNetCalculator(model=model.model, use_device=model.device)

    def batch_parts(self, model: LoadedModel) -> BatchParts:
        net = model.model
        # The graph converter holds no parameters: a CPU copy builds graphs in workers.
        return net.graph_converter, lambda graphs: chgnet_forward(net, graphs, model.device)

    def finetune(
        self, model: LoadedModel, train: TrainingSet, settings: FineTuneSettings, workdir: Path
    ) -> tuple[Any, dict]:
        return finetune_chgnet(model.model, train, settings, workdir)

    def save(self, model: LoadedModel, folder: Path, trained: Any = None) -> str:
        save_chgnet(model.model if trained is None else trained, folder / WEIGHTS)
        return WEIGHTS

    def features(self, model: LoadedModel, structures: list) -> np.ndarray:
        # CHGNet's crystal features: the pooled atom features its energy head reads.
        import torch

        with quiet(), torch.no_grad():
            preds = model.model.predict_structure(
                list(structures), task="e", return_crystal_feas=True, batch_size=16
            )
        if isinstance(preds, dict):
            preds = [preds]
        return np.stack([np.asarray(p["crystal_fea"], dtype=float).ravel() for p in preds])


BACKEND = ChgnetBackend()


def chgnet_from_checkpoint(path: str | Path, **kwargs: Any):
    """A CHGNet from a ``.pth.tar`` checkpoint, loaded without unpickling code.

    CHGNet's checkpoints are dicts of tensors and plain data (``{"model": {"state_dict",
    "model_args"}, ...}``): ``torch.load(weights_only=True)`` reads them, then the model is built
    from its arguments and state dict, as ``CHGNet.from_file`` does with ``weights_only=False``.

    Parameters
    ----------
    path
        The checkpoint (CHGNet's own, its trainer's, or one saved by :mod:`softening`).
    **kwargs
        Passed to ``CHGNet(...)`` (e.g. ``mlp_out_bias``, ``version``).

    Raises
    ------
    ModelError
        A file that is not a CHGNet checkpoint (random, truncated, or holding pickled code), or
        one that unpacks to more than the size limit (a zip bomb).
    """
    import torch
    from chgnet.model import CHGNet

    check_archive_size(path)
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(
            f"cannot load CHGNet checkpoint {str(path)!r}: {load_problem(exc, Path(path))}"
        ) from None
    model_dict = state.get("model", state) if isinstance(state, dict) else None
    if not isinstance(model_dict, dict) or not {"state_dict", "model_args"} <= set(model_dict):
        raise ModelError(
            f"cannot load CHGNet checkpoint {str(path)!r}: no model state_dict and model_args in it"
        )
    try:
        with quiet():
            return CHGNet.from_dict(model_dict, **kwargs)
    except Exception as exc:
        raise ModelError(
            f"cannot load CHGNet checkpoint {str(path)!r}: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:200] if str(exc) else ''}"
        ) from None


def save_chgnet(model, path: Path) -> Path:
    """Save CHGNet weights in the layout ``CHGNet.from_file`` (and :func:`chgnet_from_checkpoint`)
    reads."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.as_dict()}, path)
    return path


def chgnet_forward(net, graphs, device: str = "cpu") -> list[tuple[float, np.ndarray, np.ndarray]]:
    """Energy (eV), forces (eV/Å) and stress (eV/Å^3, ASE sign) of CHGNet graphs, for inference.

    ``CHGNet.forward`` is written for training: it takes forces and stress in two separate
    ``autograd.grad`` calls, each with ``create_graph=True`` (a double-backward graph). Inference
    needs one backward pass without a graph, on positions and strains together: the same
    derivatives at about half the cost.
    """
    import torch
    from chgnet.model.model import BatchedGraph

    graphs = [g.to(device) for g in graphs]
    comp_energy = 0 if net.composition_model is None else net.composition_model(graphs)
    bg = BatchedGraph.from_graphs(
        graphs,
        bond_basis_expansion=net.bond_basis_expansion,
        angle_basis_expansion=net.angle_basis_expansion,
        compute_stress=True,
    )
    pred = net._compute(bg, compute_force=False, compute_stress=False)
    n_atoms = torch.tensor([g.atomic_number.shape[0] for g in graphs], device=pred["e"].device)
    # CHGNet predicts energy per atom (intensive); forces derive from the total energy.
    e_total = (pred["e"] + comp_energy) * (n_atoms if net.is_intensive else 1)
    grads = torch.autograd.grad(e_total.sum(), [*bg.atom_positions, *bg.strains])
    forces, strain_grads = grads[: len(graphs)], grads[len(graphs) :]
    return [
        (
            float(e_total[k].detach()),
            -as_numpy(forces[k]),
            as_numpy(strain_grads[k]) / float(bg.volumes[k]),
        )
        for k in range(len(graphs))
    ]


def finetune_chgnet(net, train: TrainingSet, settings: FineTuneSettings, workdir: Path):
    """Fine-tune a copy of the CHGNet model ``net`` on ``train`` with CHGNet's ``Trainer``; returns
    the trained model and the training history.

    The paper's recipe: MSE; energy:force:stress weights 0.1:100:0.1; Adam, lr 1e-3 cosine-decayed
    to 1e-5; the best validation force-MAE checkpoint, or the last epoch when there is only one
    training frame. Modes: ``head`` (readout MLP only, backbone frozen) and ``full``.
    """
    import torch
    from chgnet.data.dataset import StructureData, collate_graphs
    from chgnet.trainer import Trainer
    from torch.utils.data import DataLoader, Subset

    model = copy.deepcopy(net)
    for p in model.parameters():
        p.requires_grad = settings.mode == "full"
    if settings.mode == "head":
        for p in model.mlp.parameters():
            p.requires_grad = True
    has_stress = all(s is not None for s in train.stresses)
    data = StructureData(
        structures=train.structures,
        energies=[e / len(s) for e, s in zip(train.energies, train.structures, strict=True)],
        forces=[np.asarray(f).tolist() for f in train.forces],
        stresses=[(np.asarray(s) * GPA_PER_EV_PER_A3).tolist() for s in train.stresses]
        if has_stress
        else None,
        structure_ids=train.ids or None,
        graph_converter=model.graph_converter,
        shuffle=False,
    )
    train_idx, val_idx, held_out = split(len(train.structures), settings)
    batch = min(settings.batch_size, len(train_idx))
    train_loader = DataLoader(
        Subset(data, train_idx.tolist()),
        batch_size=batch,
        shuffle=True,
        collate_fn=collate_graphs,
        generator=torch.Generator().manual_seed(settings.seed),
    )
    val_loader = DataLoader(
        Subset(data, val_idx.tolist()),
        batch_size=batch,
        collate_fn=collate_graphs,
    )
    trainer = Trainer(
        model=model,
        targets="efs" if has_stress else "ef",
        energy_loss_ratio=settings.energy_weight,
        force_loss_ratio=settings.force_weight,
        stress_loss_ratio=settings.stress_weight,
        optimizer="Adam",
        scheduler="CosLR",
        # CHGNet's CosLR steps once per batch with T_max = 10 epochs' worth; decay_fraction sets
        # the floor (1e-5 / 1e-3 = the paper's final learning rate).
        scheduler_params={"decay_fraction": settings.final_learning_rate / settings.learning_rate},
        criterion="MSE",
        epochs=settings.epochs,
        learning_rate=settings.learning_rate,
        torch_seed=settings.seed,
        data_seed=settings.seed,
        use_device="cpu" if not torch.cuda.is_available() else "cuda",
        print_freq=10**9,
    )
    with contextlib.redirect_stdout(io.StringIO()):
        trainer.train(train_loader, val_loader, save_dir=str(workdir))
    best = _best_force_checkpoint(workdir) if held_out else None
    if best is not None:
        model = chgnet_from_checkpoint(best)
    model.eval()
    history = {k: v for k, v in trainer.training_history.items() if v["train"]}
    return model, history


def _best_force_checkpoint(workdir: Path) -> Path | None:
    found = sorted(Path(workdir).glob("bestF_epoch*.pth.tar"))
    return found[-1] if found else None
