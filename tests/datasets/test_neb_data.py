"""Tests of the VASP NEB folder reader on a vacancy hop in fcc Cu computed by the VASP emulator."""

from __future__ import annotations

import gzip
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from pymatgen.io.vasp import Poscar
from vasp_emulator.neb import _ENERGY_RE, N_FOLDERS, A, hop_start, image_structure, write_and_run

from softening.datasets.neb import NEBData, read_neb_folder
from softening.errors import InputError

pytestmark = [
    # The emulator's fake POTCARs are unknown to pymatgen, as expected.
    pytest.mark.filterwarnings("ignore:POTCAR data with symbol"),
    # pymatgen's note on the stars written in for an overflowed energy (a refusal follows).
    pytest.mark.filterwarnings("ignore:Float overflow"),
]


def _vasprun_energy(folder: Path) -> float:
    """The emulator's final energy, parsed independently of the package."""
    return float(_ENERGY_RE.findall((folder / "vasprun.xml").read_text())[-1])


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """A finished NEB, 00 .. 04, with the end points' statics in place (built once)."""
    root = tmp_path_factory.mktemp("neb") / "cu_vac"
    for k in range(N_FOLDERS):
        write_and_run(root / f"{k:02d}", image_structure(k))
    return root


@pytest.fixture
def neb(pristine, tmp_path) -> Path:
    """A copy of the pristine NEB that a test may damage."""
    return Path(shutil.copytree(pristine, tmp_path / "cu_vac"))


# ---------------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------------


def test_reads_vacancy_hop(neb):
    expected = [_vasprun_energy(neb / f"{k:02d}") for k in range(N_FOLDERS)]
    data = read_neb_folder(neb)

    assert isinstance(data, NEBData)
    assert data.name == "cu_vac"
    assert data.source == str(neb)
    assert [f.frame_id for f in data.images] == ["00", "01", "02", "03", "04"]
    assert all(f.material_id == "cu_vac" for f in data.images)
    assert [f.source for f in data.images] == [
        str(neb / f"{k:02d}" / "vasprun.xml") for k in range(N_FOLDERS)
    ]
    energies = [f.energy for f in data.images]
    np.testing.assert_allclose(energies, expected, rtol=0, atol=1e-8)
    # A symmetric, unrelaxed path: the end points are equivalent, the middle image the saddle.
    assert int(np.argmax(energies)) == 2
    assert energies[2] > max(energies[1], energies[3]) > energies[0]
    assert energies[0] == pytest.approx(energies[4], abs=1e-6)

    assert data.ion == "Cu"
    assert data.hop_distance == pytest.approx(A / math.sqrt(2), abs=1e-6)
    # Each image's structure is the one computed: the hopping atom moved linearly.
    for k, frame in enumerate(data.images):
        assert len(frame.structure) == 31
        want = hop_start() * (1 - k / (N_FOLDERS - 1)) * 2 * A
        got = frame.structure[0].coords
        delta = (got - want + A) % (2 * A) - A  # wrapped positions: compare modulo the cell
        assert np.abs(delta).max() < 1e-6
    # MP-compatible settings: nothing flagged; the guard rails' record is kept.
    assert all(f.flags == [] for f in data.images)
    assert all(f.metadata["vasp"]["parameters"]["ENCUT"] == 520 for f in data.images)


def test_outcar_and_contcar_give_the_same_images(neb):
    from_vasprun = read_neb_folder(neb)
    for k in range(N_FOLDERS):
        (neb / f"{k:02d}" / "vasprun.xml").unlink()
    from_outcar = read_neb_folder(neb)

    assert [f.source for f in from_outcar.images] == [
        str(neb / f"{k:02d}" / "OUTCAR") for k in range(N_FOLDERS)
    ]
    np.testing.assert_allclose(
        [f.energy for f in from_outcar.images],
        [f.energy for f in from_vasprun.images],
        rtol=0,
        atol=1e-6,
    )
    for a, b in zip(from_outcar.images, from_vasprun.images, strict=True):
        np.testing.assert_allclose(a.structure.frac_coords, b.structure.frac_coords, atol=1e-7)
    assert from_outcar.ion == "Cu"
    assert from_outcar.hop_distance == pytest.approx(A / math.sqrt(2), abs=1e-6)


def test_gzipped_vasprun_and_extra_folders(neb):
    expected = [_vasprun_energy(neb / f"{k:02d}") for k in range(N_FOLDERS)]
    plain = neb / "02" / "vasprun.xml"
    with gzip.open(neb / "02" / "vasprun.xml.gz", "wb") as handle:
        handle.write(plain.read_bytes())
    plain.unlink()
    # What users keep beside the images: VTST output, the end points' relaxations, a plot.
    (neb / "vtst").mkdir()
    (neb / "vtst" / "OUTCAR").write_text("not an OUTCAR\n")
    shutil.copytree(neb / "00", neb / "relax")
    (neb / "neb.dat").write_text("0 0.0\n")

    data = read_neb_folder(neb)
    assert [f.frame_id for f in data.images] == ["00", "01", "02", "03", "04"]
    assert data.images[2].source == str(neb / "02" / "vasprun.xml.gz")
    np.testing.assert_allclose([f.energy for f in data.images], expected, rtol=0, atol=1e-8)


def test_guard_rail_flags_are_kept_per_image(neb):
    write_and_run(neb / "02", image_structure(2), ENCUT=400)
    data = read_neb_folder(neb)
    assert any(flag.startswith("low_precision") for flag in data.images[2].flags)
    assert all(f.flags == [] for i, f in enumerate(data.images) if i != 2)


def _calculation_block(folder: Path) -> str:
    text = (folder / "vasprun.xml").read_text()
    return text[text.index("<calculation>") : text.index("</calculation>") + len("</calculation>")]


def _prepend_step(folder: Path, block: str) -> None:
    """Make the vasprun in ``folder`` a two-step run: ``block``, then its own step."""
    path = folder / "vasprun.xml"
    text = path.read_text()
    at = text.index("<calculation>")
    path.write_text(text[:at] + block + "\n" + text[at:])


def test_only_the_last_ionic_step_must_be_converged(neb, tmp_path):
    # An NEB image's vasprun holds every NEB iteration; the last one is the image.
    scratch = tmp_path / "scratch"
    write_and_run(scratch, image_structure(2), NELM=3)
    unconverged = _calculation_block(scratch)
    expected = _vasprun_energy(neb / "02")
    _prepend_step(neb / "02", unconverged)
    data = read_neb_folder(neb)
    assert data.images[2].energy == pytest.approx(expected, abs=1e-8)
    assert data.images[2].metadata["ionic_step"] == 1

    # The other way round: an earlier converged step is not the image, so it is refused.
    converged = _calculation_block(neb / "01")
    write_and_run(neb / "02", image_structure(2), NELM=3)
    _prepend_step(neb / "02", converged)
    with pytest.raises(InputError, match=r"image 02: .*last ionic step.*unconverged SCF"):
        read_neb_folder(neb)


def test_no_migrating_ion_when_end_points_coincide(neb):
    shutil.rmtree(neb / "04")
    shutil.copytree(neb / "00", neb / "04")
    data = read_neb_folder(neb)
    assert data.ion is None
    assert data.hop_distance == pytest.approx(0.0, abs=1e-6)


# ---------------------------------------------------------------------------------------------------
# Refusals: one line naming the folder and the image
# ---------------------------------------------------------------------------------------------------


def _drop_vasprun(neb: Path, image: str) -> None:
    (neb / image / "vasprun.xml").unlink()


def _remove_image(image: str):
    def damage(neb: Path) -> None:
        shutil.rmtree(neb / image)

    return damage


def _too_few(neb: Path) -> None:
    for image in ("02", "03", "04"):
        shutil.rmtree(neb / image)


def _empty_image(neb: Path) -> None:
    for path in (neb / "02").iterdir():
        path.unlink()


def _end_point_without_results(neb: Path) -> None:
    # What a user has after an NEB whose end points were never computed as statics.
    for path in (neb / "00").iterdir():
        if path.name != "POSCAR":
            path.unlink()


def _truncated_vasprun(neb: Path) -> None:
    path = neb / "03" / "vasprun.xml"
    text = path.read_text()
    path.write_text(text[: len(text) // 2])


def _truncated_outcar(neb: Path) -> None:
    _drop_vasprun(neb, "03")
    path = neb / "03" / "OUTCAR"
    text = path.read_text()
    path.write_text(text[: text.index("General timing")])


def _remove_last_atom(path: Path) -> None:
    structure = Poscar.from_file(path).structure
    structure.remove_sites([len(structure) - 1])
    Poscar(structure).write_file(path)


def _contcar_one_atom_fewer(neb: Path) -> None:
    _remove_last_atom(neb / "01" / "CONTCAR")


def _contcar_one_atom_fewer_outcar(neb: Path) -> None:
    _drop_vasprun(neb, "01")
    _remove_last_atom(neb / "01" / "CONTCAR")


def _image_one_atom_fewer(neb: Path) -> None:
    structure = image_structure(3)
    structure.remove_sites([len(structure) - 1])
    write_and_run(neb / "03", structure)


def _other_species_order(neb: Path) -> None:
    structure = image_structure(3)
    structure.replace(len(structure) - 1, "Ag")
    write_and_run(neb / "03", structure)


def _other_cell(neb: Path) -> None:
    structure = image_structure(2)
    structure.scale_lattice(structure.volume * 1.003**3)
    write_and_run(neb / "02", structure)


def _close_atoms(neb: Path) -> None:
    structure = image_structure(2)
    structure.replace(0, "Cu", structure[1].coords + np.array([0.3, 0.0, 0.0]), True)
    write_and_run(neb / "02", structure)


def _unconverged_scf(neb: Path) -> None:
    write_and_run(neb / "02", image_structure(2), NELM=3)


def _overflowed_energy(neb: Path) -> None:
    # VASP writes stars for a number too large for its format.
    path = neb / "02" / "vasprun.xml"
    text = path.read_text()
    last = list(_ENERGY_RE.finditer(text))[-1]
    path.write_text(text[: last.start(1)] + "****************" + text[last.end(1) :])


def _nan_outcar_energy(neb: Path) -> None:
    _drop_vasprun(neb, "02")
    path = neb / "02" / "OUTCAR"
    text = path.read_text()
    path.write_text(re.sub(r"(free  energy   TOTEN  =)\s*\S+", r"\1 NaN", text))


def _no_outcar_energy(neb: Path) -> None:
    _drop_vasprun(neb, "02")
    path = neb / "02" / "OUTCAR"
    kept = [line for line in path.read_text().splitlines() if "TOTEN" not in line]
    path.write_text("\n".join(kept) + "\n")


BAD_CASES = {
    "gap": (_remove_image("02"), "02", r"image 02 is missing"),
    "first missing": (_remove_image("00"), "00", r"image 00 is missing"),
    "too few": (_too_few, None, r"2 numbered sub-folders \(00, 01\).*at least 3"),
    "empty image": (_empty_image, "02", r"no vasprun\.xml\(\.gz\) or OUTCAR"),
    "end point not computed": (_end_point_without_results, "00", r"end points"),
    "truncated vasprun": (_truncated_vasprun, "03", r"truncated or unreadable"),
    "truncated OUTCAR": (_truncated_outcar, "03", r"truncated: no final timing block"),
    "CONTCAR one atom fewer": (_contcar_one_atom_fewer, "01", r"CONTCAR.* has 30 atoms"),
    "CONTCAR one atom fewer (OUTCAR)": (
        _contcar_one_atom_fewer_outcar,
        "01",
        r"has 31 atoms but CONTCAR 30",
    ),
    "atom count": (_image_one_atom_fewer, "03", r"image 03 has 30 atoms, image 00 has 31"),
    "species order": (_other_species_order, "03", r"Ag as atom 30.*same species"),
    "cell": (_other_cell, "02", r"different cell.*keeps the cell fixed"),
    "close atoms": (_close_atoms, "02", r"0\.300 Å apart"),
    "unconverged SCF": (_unconverged_scf, "02", r"refused .*no ionic step with a converged SCF"),
    "overflowed energy": (_overflowed_energy, "02", r"non-finite"),
    "NaN OUTCAR energy": (_nan_outcar_energy, "02", r"non-finite"),
    "no OUTCAR energy": (_no_outcar_energy, "02", r"no energy"),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_neb_is_refused_naming_the_image(neb, case):
    damage, image, pattern = BAD_CASES[case]
    damage(neb)
    with pytest.raises(InputError) as info:
        read_neb_folder(neb)
    message = str(info.value)
    assert "\n" not in message
    assert str(neb) in message
    if image is not None:
        assert f"image {image}" in message
    assert re.search(pattern, message), message


def test_not_a_folder(tmp_path):
    path = tmp_path / "OUTCAR"
    path.write_text("x\n")
    with pytest.raises(InputError, match="is not a folder"):
        read_neb_folder(path)
    with pytest.raises(InputError, match="no such NEB folder"):
        read_neb_folder(tmp_path / "missing")
