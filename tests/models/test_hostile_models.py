"""Hostile model inputs: trust of pickled models, names shadowed by local folders, zip bombs,
model/reference compatibility, corrupted correction folders, repeated models (issue 27)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA, MODELS, WBM_XYZ, needs, one_error_line
from pymatgen.core import Lattice, Structure

from softening.errors import ModelError
from softening.models import load_model
from softening.models.factory import _load_cached
from softening.settings import get_settings

M3GNET_DIR = MODELS / "M3GNet-MP-2021.2.8-PES"
TENSORNET_DIR = MODELS / "TensorNet-MatPES-PBE-v2025.1-PES"
FE2O3_PBE_U = DATA / "vasp_outputs" / "vasprun.magmom_ldau.xml.gz"
CLI = [sys.executable, "-m", "softening.cli"]


def _cli(*args, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CLI, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=600,
        env={**(env if env is not None else os.environ), "OMP_NUM_THREADS": "1"},
    )  # fmt: skip


class _Payload:
    """Unpickling it creates the marker file: proof that a pickled model's code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


# ---- 2. the registry of a default store found in the working directory is no trust --------------


@needs(DATA / "mlearn" / "Si" / "test.json")
def test_default_store_registry_in_working_directory_is_not_trust(tmp_path, monkeypatch):
    import torch

    from softening.models import trust

    marker = tmp_path / "PWNED"
    torch.save({"model": _Payload(marker)}, tmp_path / "evil.model")
    # Whoever wrote the folder wrote the registry of its default store too.
    trust.record_written_model(tmp_path / "softening-db" / "models", [tmp_path / "evil.model"])
    trust._WRITTEN_SHA.clear()  # written by "another process": only the registry file is left
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SOFTENING_STORE")  # the default store, ./softening-db
    get_settings.cache_clear()
    assert trust.named_store_models_dir() is None
    _load_cached.cache_clear()
    with pytest.raises(ModelError, match="--trust-model-file"):
        load_model("./evil.model")
    assert not marker.exists()

    # The same file on the command line: one error line, and the payload never runs.
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOFTENING_")}
    env["SOFTENING_CONFIG"] = str(tmp_path / "no-settings.yaml")
    res = _cli("evaluate", DATA / "mlearn" / "Si" / "test.json", "--model", "./evil.model",
               cwd=tmp_path, env=env)  # fmt: skip
    one_error_line(res, "evil.model", "--trust-model-file")
    assert not marker.exists()


def test_named_store_registry_is_trusted(tmp_path, monkeypatch):
    from softening.cli.options import named_store
    from softening.models import trust

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SOFTENING_STORE")
    monkeypatch.setenv(trust.NAMED_STORE_ENV, "")  # restored (unset) after the test
    get_settings.cache_clear()
    assert trust.named_store_models_dir() is None
    # --store names it (for this process and the job processes it starts)...
    named_store("mine")
    assert trust.named_store_models_dir() == (tmp_path / "mine" / "models").resolve()
    # ... and so do SOFTENING_STORE and the settings file; never a database server's folder.
    os.environ.pop(trust.NAMED_STORE_ENV)
    monkeypatch.setenv("SOFTENING_STORE", str(tmp_path / "env-store"))
    get_settings.cache_clear()
    assert trust.named_store_models_dir() == (tmp_path / "env-store" / "models").resolve()
    named_store("mongodb://localhost/softening")
    assert trust.NAMED_STORE_ENV not in os.environ
    monkeypatch.setenv("SOFTENING_STORE", "mongodb://localhost/softening")
    get_settings.cache_clear()
    assert trust.named_store_models_dir() is None


def test_a_job_vouches_only_for_the_bytes_its_output_records(tmp_path):
    """A correction written by a job in another process: trusted when its files hash as the job's
    output (in the user's store) records, not because of the folder they lie in."""
    from softening.models import trust
    from softening.models.corrected import model_files, trust_saved_model, write_corrected_model
    from softening.schemas import ModelInfo

    folder = tmp_path / "models" / "CHGNet-0.3.0+full-0123456789"
    folder.mkdir(parents=True)
    (folder / "model.model").write_bytes(b"weights")
    write_corrected_model(
        folder, name=folder.name, base={"spec": "chgnet"}, mode="full", factor=1.0,
        weights="model.model", train_frames=[], hyperparameters={},
    )  # fmt: skip
    info = ModelInfo(name=folder.name, family="mace", path=str(folder), weights_sha256="0" * 64)
    assert not trust_saved_model(info)
    assert trust.why_trusted(folder / "model.model") is None
    info.weights_sha256 = trust.sha256_of(model_files(folder, "model.model"))
    assert trust_saved_model(info)
    assert trust.why_trusted(folder / "model.model") == "written by softening"


# ---- 3. a folder named like a model does not replace the model -----------------------------------


@needs(M3GNET_DIR)
def test_local_folder_named_like_a_model_does_not_replace_it(tmp_path, monkeypatch, caplog):
    shutil.copytree(M3GNET_DIR, tmp_path / "chgnet")
    monkeypatch.chdir(tmp_path)
    _load_cached.cache_clear()
    with caplog.at_level(logging.WARNING, logger="softening"):
        m = load_model("chgnet")
    assert m.name == "CHGNet-0.3.0" and m.family == "chgnet"
    assert any("./chgnet" in r.getMessage() for r in caplog.records), caplog.text
    # Written as a path, the folder is used.
    assert load_model("./chgnet").family == "matgl"
    # A matgl name is looked up in models_dir, never in the working directory.
    shutil.copytree(M3GNET_DIR, tmp_path / "m3gnet")
    with pytest.raises(ModelError, match="no network"):
        load_model("m3gnet")


def test_saved_model_id_named_like_a_model_does_not_replace_it(tmp_path):
    from softening.models.corrected import write_corrected_model

    store_models = Path(get_settings().store) / "models"
    write_corrected_model(
        store_models / "chgnet", name="chgnet", base={"spec": "chgnet"}, mode="scale",
        factor=0.5, weights=None, train_frames=[], hyperparameters={},
    )  # fmt: skip
    _load_cached.cache_clear()
    m = load_model("chgnet")
    assert m.name == "CHGNet-0.3.0" and m.factor == 1.0


# ---- 9b. zip bombs -------------------------------------------------------------------------------


def _zip_bomb(path: Path, mbytes: int) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        with z.open("archive/data.pkl", "w", force_zip64=True) as member:
            zeros = bytes(1 << 20)
            for _ in range(mbytes):
                member.write(zeros)
    return path


def test_zip_bomb_is_refused_before_it_is_read(tmp_path):
    bomb = _zip_bomb(tmp_path / "bomb.pth.tar", 60)
    assert bomb.stat().st_size < 1_000_000  # 60 MB of zeros, deflated
    t0 = time.perf_counter()
    for spec in (str(bomb), str(_zip_bomb(tmp_path / "bomb.model", 60))):
        with pytest.raises(ModelError, match=r"bomb\.(pth\.tar|model).*zip bomb") as err:
            load_model(spec, trust_model_file=True)  # refused before any unpickling
        assert "\n" not in str(err.value) and "max_model_gb" in str(err.value)
    assert time.perf_counter() - t0 < 30  # mace's import included; the check takes milliseconds


def test_model_over_the_size_limit_is_refused(tmp_path, monkeypatch):
    import chgnet

    checkpoint = next(Path(chgnet.__file__).parent.glob("pretrained/0.3.0/*.pth.tar"))
    monkeypatch.setenv("SOFTENING_MAX_MODEL_GB", "0.001")
    get_settings.cache_clear()
    _load_cached.cache_clear()
    with pytest.raises(ModelError, match=r"pth\.tar.*unpacks to 0\.00\d+ GB.*limit of 0\.001 GB"):
        load_model(str(checkpoint))


def test_size_limit_is_far_above_real_models():
    import chgnet

    from softening.models.trust import max_model_bytes

    real = [*Path(chgnet.__file__).parent.glob("pretrained/*/*.pth.tar"), *MODELS.glob("*/*.pt")]
    assert real and max(p.stat().st_size for p in real) < 0.01 * max_model_bytes()
    assert max_model_bytes() >= 2e9  # MACE-MP-0 large, eqV2-sized checkpoints: well under


# ---- 6. model/reference compatibility ------------------------------------------------------------


def test_training_data_of_known_models():
    from softening.models.backends import MATPES_PBE, MATPES_R2SCAN, MP_PBE, training_data_of

    assert training_data_of("CHGNet-0.3.0") is MP_PBE
    assert training_data_of("M3GNet-MP-2021.2.8-PES") is MP_PBE
    assert training_data_of("MACE-MP-0-medium") is MP_PBE
    assert training_data_of("TensorNet-MatPES-PBE-v2025.1-PES") is MATPES_PBE
    assert training_data_of("M3GNet-MatPES-r2SCAN-v2025.1-PES") is MATPES_R2SCAN
    assert training_data_of("CHGNet-0.3.0+scale-0123456789") is MP_PBE
    assert training_data_of("CHGNet-0.3.0+full-0123456789") is None  # trained on more
    assert training_data_of("CHGNet-my_checkpoint") is None


def test_mismatches_are_named_on_the_result():
    from softening.models.backends import ReferenceRun, flags_for_model

    pbe_u = ReferenceRun("PBE", (("Mn", 3.9),), frozenset({"Tm", "Mn", "F"}))
    mp_flag = "hubbard_u: U(Mn) = 0 eV, MP: 3.9 eV"  # a reference flag judged against MP
    flags = [str(f) for f in flags_for_model("TensorNet-MatPES-PBE-v2025.1-PES", [], [pbe_u])]
    assert flags == [
        "training_data: reference has U(Mn)=3.9 eV; TensorNet-MatPES-PBE-v2025.1-PES was "
        "trained on PBE without +U (MatPES)"
    ]
    assert flags_for_model("CHGNet-0.3.0", [], [pbe_u]) == []  # MP's own U for Mn in fluorides
    # PBE without U: right for MatPES (the reference's MP-relative flag is dropped), not for MP.
    pbe = ReferenceRun("PBE", (), frozenset({"Tm", "Mn", "F"}))
    assert flags_for_model("TensorNet-MatPES-PBE-v2025.1-PES", [mp_flag], [pbe]) == []
    (chg,) = [str(f) for f in flags_for_model("CHGNet-0.3.0", [], [pbe])]
    assert chg.startswith("training_data: reference has no U on Mn (MP: 3.9 eV); CHGNet-0.3.0")
    # Functionals: r2SCAN models on PBE data, MP models on PBEsol or SCAN data.
    (r2,) = flags_for_model("M3GNet-MatPES-r2SCAN-v2025.1-PES", [], [pbe])
    assert r2.kind == "training_data" and "reference is PBE;" in r2.detail and "r2SCAN" in r2.detail
    for functional in ("PBEsol", "SCAN"):
        run = ReferenceRun(functional, (), frozenset({"Si"}))
        (f,) = flags_for_model("CHGNet-0.3.0", [], [run])
        assert f.detail.startswith(f"reference is {functional}; CHGNet-0.3.0 was trained on PBE")
    assert flags_for_model("M3GNet-MatPES-r2SCAN-v2025.1-PES", [], [
        ReferenceRun("R2SCAN", (), frozenset({"Si"}))]) == []  # fmt: skip
    # An unknown model keeps the references' flags as they are.
    assert [str(f) for f in flags_for_model("MACE-mine", [mp_flag], [pbe])] == [mp_flag]


def _frames(model_name: str):
    from softening.schemas import CodeInfo, FrameResult, ModelInfo, UMLIPResults

    rng = np.random.default_rng(0)
    structure = Structure(
        Lattice.cubic(4.2), ["Tm", "Mn", "F", "F"], [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0, 0],
                                                     [0, 0.5, 0]],
    )  # fmt: skip
    settings = {"functional": "PBE+U", "hubbard_u": {"Mn": 3.9}}
    refs, mls = [], []
    for i in range(3):
        f = rng.normal(size=(4, 3))
        common = {"frame_id": str(i), "material_id": "TmMnF6", "formula": "TmMnF2",
                  "structure": structure, "energy": -10.0 - i}  # fmt: skip
        refs.append(FrameResult(**common, forces=f.tolist(), code=CodeInfo(name="vasp",
                                settings=settings)))  # fmt: skip
        mls.append(FrameResult(**common, forces=(0.8 * f).tolist(), code=CodeInfo(name="ml")))
    model = ModelInfo(name=model_name, family="matgl")
    return refs, UMLIPResults(model=model, frames=mls)


def test_flow_comparison_names_the_mismatch():
    from softening.makers.force_comparison import compare_results

    refs, ml = _frames("TensorNet-MatPES-PBE-v2025.1-PES")
    doc = compare_results(refs, ml, n_bootstrap=50)
    assert doc.scale == pytest.approx(0.8)
    assert [str(f) for f in doc.flags if f.kind == "training_data"] == [
        "training_data: reference has U(Mn)=3.9 eV; TensorNet-MatPES-PBE-v2025.1-PES was "
        "trained on PBE without +U (MatPES)"
    ]
    refs, ml = _frames("M3GNet-MP-2021.2.8-PES")
    assert not [f for f in compare_results(refs, ml, n_bootstrap=50).flags
                if f.kind == "training_data"]  # fmt: skip


@needs(TENSORNET_DIR)
@needs(FE2O3_PBE_U)
def test_matpes_model_on_real_pbe_u_data_is_flagged():
    from softening.makers.evaluate import evaluate_datasets

    ev = evaluate_datasets([FE2O3_PBE_U], [str(TENSORNET_DIR)], n_bootstrap=50)
    (mat,) = ev.models["TensorNet-MatPES-PBE-v2025.1-PES"].materials
    assert [str(f) for f in mat.flags if f.kind == "training_data"] == [
        "training_data: reference has U(Fe)=5.3 eV; TensorNet-MatPES-PBE-v2025.1-PES was "
        "trained on PBE without +U (MatPES)"
    ]


# ---- 7c/8f. correction folders ---------------------------------------------------------------------


def _correction(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "softening-model.json").write_text(text)
    return folder


GOOD = {"name": "c", "base": {"spec": "chgnet", "name": "CHGNet-0.3.0"}, "mode": "scale",
        "factor": 1.16, "weights": None, "train_frames": []}  # fmt: skip


@pytest.mark.parametrize(
    ("factor", "key"),
    [("-1", "'factor'"), ("0", "'factor'"), ("NaN", "'factor'"), ('"abc"', "'factor'"),
     ("Infinity", "'factor'"), ("-Infinity", "'factor'"), ("true", "'factor'")],
)  # fmt: skip
def test_correction_factor_is_checked(tmp_path, factor, key):
    text = json.dumps(GOOD).replace('"factor": 1.16', f'"factor": {factor}')
    folder = _correction(tmp_path / "bad", text)
    with pytest.raises(ModelError, match=key) as err:
        load_model(str(folder))
    assert "softening-model.json" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("doc", "key"),
    [({k: v for k, v in GOOD.items() if k != "base"}, "'base'"),
     ({**GOOD, "base": {"name": "x"}}, "'base.spec'"),
     ({**GOOD, "base": "chgnet"}, "'base'"),
     ({**GOOD, "mode": "sideways"}, "'mode'"),
     ({**GOOD, "name": 3}, "'name'"),
     ({**GOOD, "train_frames": "all"}, "'train_frames'"),
     ([1, 2], "JSON object")],
)  # fmt: skip
def test_correction_metadata_is_checked(tmp_path, doc, key):
    folder = _correction(tmp_path / "bad", json.dumps(doc))
    with pytest.raises(ModelError, match=key):
        load_model(str(folder))


def test_correction_base_that_leads_back_is_refused(tmp_path):
    folder = tmp_path / "loop"
    _correction(folder, json.dumps({**GOOD, "base": {"spec": str(folder)}}))
    with pytest.raises(ModelError, match="leads back"):
        load_model(str(folder))


def test_good_correction_folder_loads_and_bad_one_is_one_cli_line(tmp_path):
    good = _correction(tmp_path / "good", json.dumps(GOOD))
    m = load_model(str(good))
    assert m.factor == pytest.approx(1.16) and m.family == "chgnet"
    bad = _correction(tmp_path / "bad", json.dumps({**GOOD, "factor": -1}))
    res = _cli("evaluate", WBM_XYZ, "--model", bad, "--store", tmp_path / "db", cwd=tmp_path)
    one_error_line(res, "softening-model.json", "'factor'", "above 0")


# ---- 7d. a model given many times is evaluated once --------------------------------------------------


def test_repeated_models_are_collapsed_with_a_warning(caplog, monkeypatch):
    from softening.workflows.inputs import default_models

    with caplog.at_level(logging.WARNING, logger="softening"):
        assert default_models(["chgnet"] * 50) == ["chgnet"]
    assert "chgnet given 50 times" in caplog.text
    assert default_models(["chgnet", "CHGNet-0.3.0", "chgnet-0.3.0", "chgnet-r2scan"]) == [
        "chgnet", "chgnet-r2scan"]  # fmt: skip
    monkeypatch.setenv("SOFTENING_MODELS", '["chgnet", "chgnet"]')
    get_settings.cache_clear()
    assert default_models(None) == ["chgnet"]
    if M3GNET_DIR.exists():  # a matgl name and its folder in models_dir are one model
        monkeypatch.setenv("SOFTENING_MODELS_DIR", str(MODELS))
        get_settings.cache_clear()
        assert default_models(["m3gnet", str(M3GNET_DIR)]) == ["m3gnet"]


@needs(WBM_XYZ)
def test_model_given_fifty_times_stores_one_result_per_material(tmp_path):
    from softening.stores import get_job_store

    args = [a for _ in range(50) for a in ("--model", "chgnet")]
    res = _cli("evaluate", WBM_XYZ, *args, "--store", tmp_path / "db", "--json", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert list(json.loads(res.stdout)["models"]) == ["CHGNet-0.3.0"]
    assert "given 50 times" in res.stderr
    store = get_job_store(tmp_path / "db")
    store.connect()
    assert store.count() == 15  # 14 materials and the pooled result
