"""Hostile phonon inputs (issue 27, third round): a YAML tag that runs a command, another material's
FORCE_SETS, a supercell phonopy would search for minutes, a broken FORCE_SETS blamed on the yaml,
and a negative --temperature."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA, needs, one_error_line, run_cli
from pymatgen.core import Lattice, Structure

from softening.errors import InputError

PHONOPY = DATA / "phonopy_examples"
MGO, NACL, ZNO, CR, SI = (PHONOPY / m for m in ("MgO", "NaCl", "ZnO", "Cr", "Si"))


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.is_file():
            shutil.copyfile(f, dst / f.name)  # copyfile: the shared files are read-only
    return dst


def _prepend(path: Path, text: str) -> None:
    path.write_text(text + path.read_text())


# ---- 1. YAML tags that run code ------------------------------------------------------------------


@needs(CR)
def test_python_tag_in_phonopy_disp_yaml_is_refused_not_run(tmp_path):
    folder = _copy(CR, tmp_path / "Cr")
    marker = tmp_path / "pwned"
    _prepend(
        folder / "phonopy_disp.yaml",
        f'evil_key: !!python/object/apply:os.system ["touch {marker}"]\n',
    )
    res = run_cli("phonons", folder, "--store", tmp_path / "db")
    one_error_line(res, "phonopy_disp.yaml", "refused", "python/object/apply:os.system")
    assert not marker.exists(), "the YAML tag ran its command"
    assert not (tmp_path / "db").exists()  # refused before any job


@needs(MGO)
def test_python_tag_in_phonopy_params_yaml_is_refused_not_run(tmp_path):
    """phonopy_params.yaml (forces inside) goes through the same safe loader."""
    from softening.datasets.phonopy import read_phonopy_folder

    folder = _copy(MGO, tmp_path / "MgO")
    marker = tmp_path / "pwned"
    params = folder / "phonopy_params.yaml"
    params.write_text(
        f'x: !!python/object/apply:os.system ["touch {marker}"]\nforces:\n- [0, 0, 0]\n'
        + (folder / "phonopy_disp.yaml").read_text()
    )
    with pytest.raises(InputError, match="phonopy_params.yaml.*refused"):
        read_phonopy_folder(params)
    assert not marker.exists()
    (folder / "phonopy_disp.yaml").write_text("a: [1, 2\nb: c\n")
    with pytest.raises(InputError, match=r"phonopy_disp.yaml' is not valid YAML \(line"):
        read_phonopy_folder(folder / "phonopy_disp.yaml")


# ---- 4. forces that cannot belong to the structure ------------------------------------------------


def _dataset(folder: Path):
    from softening.datasets.phonopy import read_phonopy_folder

    return read_phonopy_folder(folder)


@needs(ZNO)
def test_force_consistency_on_real_data_permuted_and_reversed():
    """The pure check: phonopy's VASP forces pass; shuffled atoms and reversed forces do not."""
    from softening.analysis.phonons import force_consistency

    rng = np.random.default_rng(0)
    for folder in (ZNO, NACL, CR):
        data = _dataset(folder)
        f = data.forces
        # A model that softens by 30 %, with 20 % noise: consistent.
        model = 0.7 * f * (1 + 0.2 * rng.standard_normal(f.shape))
        ok = force_consistency(data.displacements, f, model)
        assert ok.problems() == [], (folder.name, ok)
        assert ok.n_restoring == len(data.displacements) and ok.correlation > 0.9
        shuffled = f[:, rng.permutation(f.shape[1])]
        bad = force_consistency(data.displacements, shuffled, model)
        assert any("correlation" in p for p in bad.problems()), (folder.name, bad)
        reversed_ = force_consistency(data.displacements, -f)
        assert reversed_.n_restoring == 0
        assert "points along its displacement, not back" in reversed_.problems()[0]


@needs(MGO)
@needs(NACL)
def test_force_sets_of_another_material_flagged_and_real_data_not(tmp_path):
    """NaCl with MgO's FORCE_SETS (same 64-atom supercell, same displacements): the issue's ratio
    0.288 and force scale 0.081 came with no flag. What ``softening phonons`` runs, in-process."""
    from softening.makers.phonon_setup import phonon_frames, reference_frames, setup_from_data
    from softening.makers.phonons import compare_phonon_results
    from softening.makers.umlip import UMLIPStaticMaker, predict_frames

    swapped = _copy(NACL, tmp_path / "NaCl_with_MgO_forces")
    shutil.copyfile(MGO / "FORCE_SETS", swapped / "FORCE_SETS")
    real = _dataset(NACL)
    setup = setup_from_data(real)
    umlip = predict_frames(phonon_frames(setup, "NaCl"), UMLIPStaticMaker(model="chgnet"))
    docs = {
        name: compare_phonon_results(
            setup_from_data(data),
            reference_frames(data, "NaCl"),
            umlip,
            "NaCl",
            mesh=(4, 4, 4),
            sources=data.sources,
        )
        for name, data in (("swapped", _dataset(swapped)), ("real", real))
    }
    bad = docs["swapped"]
    assert bad.values.scale < 0.2 and bad.values.omega_max_ratio < 0.35  # the issue: 0.081, 0.288
    flag = next(str(f) for f in bad.flags if f.kind == "implausible_forces")
    assert f"force scale {bad.values.scale:.3f}" in flag and "times the model's" in flag
    good = docs["real"]
    assert 0.3 < good.values.scale < 1
    assert not any(f.kind == "implausible_forces" for f in good.flags), good.flags


# ---- 9a. supercells too big for phonopy's symmetry search -----------------------------------------


def test_supercell_limit_before_phonopy(monkeypatch, tmp_path):
    from softening.makers.phonon_setup import phonon_setup, supercell_matrix_for
    from softening.settings import get_settings

    fe = Structure(Lattice.cubic(2.87), ["Fe"], [[0, 0, 0]])
    with pytest.raises(
        InputError, match=r"8000 atoms .* limit of 2000 atoms .*SOFTENING_MAX_SUPERC"
    ):
        phonon_setup(fe, [20, 20, 20])  # before: minutes in phonopy's symmetry search
    monkeypatch.setenv("SOFTENING_MAX_SUPERCELL_ATOMS", "10")
    get_settings.cache_clear()
    with pytest.raises(InputError, match="27 atoms"):
        phonon_setup(fe, [3, 3, 3])
    assert len(phonon_setup(fe, [2, 2, 2]).displacements) == 1
    # atomate2's choice that finds no supercell: one line, not pymatgen's AttributeError.
    with pytest.raises(InputError, match="--min-length"):
        supercell_matrix_for(fe, 60.0)


@needs(MGO)
def test_supercell_limit_on_phonopy_folders(monkeypatch):
    from softening.datasets.phonopy import read_phonopy_folder
    from softening.settings import get_settings

    monkeypatch.setenv("SOFTENING_MAX_SUPERCELL_ATOMS", "32")
    get_settings.cache_clear()
    with pytest.raises(InputError, match="phonopy_disp.yaml.*64 atoms .* limit of 32"):
        read_phonopy_folder(MGO)


def test_supercell_limit_cli(tmp_path):
    cif = tmp_path / "Cu.cif"
    Structure(Lattice.cubic(2.55), ["Cu"], [[0, 0, 0]]).to(filename=str(cif))
    res = run_cli(
        "properties", cif, "--reference", "emt", "--supercell", "20 20 20",
        "--store", tmp_path / "db", timeout=120,
    )  # fmt: skip
    one_error_line(res, "8000 atoms", "2000", "SOFTENING_MAX_SUPERCELL_ATOMS", '"20 20 20"')


# ---- 14d. errors name the file at fault --------------------------------------------------------------


@needs(MGO)
@pytest.mark.parametrize(
    ("damage", "words"),
    [
        ("truncate", ("truncated",)),
        ("garble", ("could not convert",)),
        ("natom", ()),
        ("short_rows", ("displacement 1", "shape")),
    ],
)
def test_broken_force_sets_is_named(tmp_path, damage, words):
    from softening.datasets.phonopy import read_phonopy_folder

    folder = _copy(MGO, tmp_path / "MgO")
    lines = (folder / "FORCE_SETS").read_text().splitlines(keepends=True)
    if damage == "truncate":
        lines = lines[: len(lines) // 2]
    elif damage == "garble":
        lines[10] = "  abc def ghi\n"
    elif damage == "natom":
        lines[0] = "32\n"
    else:  # every force row with two numbers
        lines = [
            " ".join(ln.split()[:2]) + "\n" if len(ln.split()) == 3 and i > 2 else ln
            for i, ln in enumerate(lines)
        ]
    (folder / "FORCE_SETS").write_text("".join(lines))
    with pytest.raises(InputError) as err:
        read_phonopy_folder(folder)
    message = str(err.value)
    assert "FORCE_SETS" in message, message
    assert "phonopy_disp.yaml" not in message, message
    for w in words:
        assert w in message, message


@needs(MGO)
def test_broken_force_sets_cli_one_line(tmp_path):
    folder = _copy(MGO, tmp_path / "MgO")
    text = (folder / "FORCE_SETS").read_text()
    (folder / "FORCE_SETS").write_text(text[: len(text) // 2])
    res = run_cli("phonons", folder, "--store", tmp_path / "db")
    one_error_line(res, "FORCE_SETS", "truncated")
    assert "phonopy_disp.yaml" not in res.stderr


@needs(SI)
@needs(CR)
def test_force_sets_in_working_directory_is_not_read(tmp_path, monkeypatch):
    """phonopy reads ./FORCE_SETS when the folder has none: Si's vasprun.xml layout must keep its
    own displacements (Cr's FORCE_SETS has the same 16 atoms and one displacement)."""
    from softening.datasets.phonopy import read_phonopy_folder

    shutil.copyfile(CR / "FORCE_SETS", tmp_path / "FORCE_SETS")
    monkeypatch.chdir(tmp_path)
    data = read_phonopy_folder(SI)
    assert data.layout == "vasprun"
    assert np.allclose(data.displacements[0][1], [0, 0.0070710678118655, 0.0070710678118655])


# ---- 8d. --temperature ---------------------------------------------------------------------------


@needs(CR)
@pytest.mark.parametrize("command", ["phonons", "properties"])
def test_negative_temperature_one_error_line(tmp_path, command):
    target = CR if command == "phonons" else tmp_path / "Cu.cif"
    if command == "properties":
        Structure(Lattice.cubic(3.6), ["Cu"] * 4, [[0, 0, 0], [0, .5, .5], [.5, 0, .5], [.5, .5, 0]]).to(filename=str(target))  # fmt: skip
    res = run_cli(command, target, "--temperature", "-5", "--store", tmp_path / "db", timeout=120)
    one_error_line(res, "--temperature", ">= 0 K", "-5")
    assert not (tmp_path / "db").exists()


def test_harmonic_phonons_refuses_negative_temperature():
    from softening.analysis.phonons import build_phonopy, harmonic_phonons

    phonon = build_phonopy(np.eye(3) * 3.6, [[0, 0, 0]], ["Cu"], [2, 2, 2])
    forces = np.zeros((len(phonon.dataset["first_atoms"]), len(phonon.supercell), 3))
    with pytest.raises(ValueError, match="temperature -5"):
        harmonic_phonons(phonon, forces, temperature=-5.0)
