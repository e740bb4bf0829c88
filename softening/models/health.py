"""The doctor's checks of what the models layer owns: torch, the GPU, each uMLIP loading offline
(see :mod:`softening.health`)."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

from softening.errors import SofteningError
from softening.health import DoctorRequest, PlannedCheck, Problem, Skip
from softening.settings import get_settings


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
        raise Problem(
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
                raise Problem(
                    "models_dir is not set: M3GNet weights are looked up there",
                    "set SOFTENING_MODELS_DIR to the folder holding M3GNet-MP-2021.2.8-PES",
                )
        if family.startswith("mace") and importlib.util.find_spec("mace") is None:
            raise Problem("mace-torch is not installed", 'pip install "softening[mace]"')
        if family.startswith("mace") and not Path(spec).expanduser().exists():
            raise Skip(
                f"{spec} downloads its weights when first used; not loaded here",
                "give a local .model file to use MACE offline",
            )
        try:
            model = load_model(spec)
        except SofteningError as exc:
            raise Problem(str(exc)) from None
        return f"{model.name} loads on {model.device} ({len(model.elements)} elements)"

    return run


def plan_checks(request: DoctorRequest) -> list[PlannedCheck]:
    """torch, the GPU (needed with ``device=cuda``), every model asked for (needed) and the other
    built-in ones (optional)."""
    settings = get_settings()
    models = request.models
    if models is None:
        models = tuple(dict.fromkeys([settings.md_model, *settings.models]))
    timeout = request.timeout
    plan = [
        PlannedCheck("torch", check_torch, True, timeout),
        PlannedCheck("gpu", check_gpu, settings.device == "cuda", timeout),
    ]
    plan += [PlannedCheck(f"model {m}", check_model(m), True, timeout) for m in models]
    extra_models = [m for m in ("chgnet", "m3gnet") if m not in models]
    plan += [PlannedCheck(f"model {m}", check_model(m), False, timeout) for m in extra_models]
    return plan
