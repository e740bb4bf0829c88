"""Tests of the dataset readers on the shared real DFT data and on small files written here."""

from __future__ import annotations

import gzip
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import needs
from pymatgen.core import Lattice, Structure

from softening.datasets import (
    KBAR_TO_EV_PER_A3,
    Frame,
    check_structure,
    detect_format,
    read_extxyz,
    read_frames,
    read_mlearn_json,
    read_structure,
    read_vasprun,
    read_wbm_json,
    vasp_stress_to_ase,
)
from softening.errors import InputError

DATA = Path(__file__).parents[2].parent / "shared" / "data"
WBM_XYZ = DATA / "wbm_high_energy_subset" / "wbm_subset_21frames.extxyz"
WBM_JSON = DATA / "wbm_high_energy_subset" / "wbm_subset_21frames.json.gz"
MLEARN_FILES = [DATA / "mlearn" / "Si" / "training.json", DATA / "mlearn" / "Si" / "test.json"]
MLEARN_CU = DATA / "mlearn" / "Cu" / "test.json"
VASP = DATA / "vasp_outputs"

needs_data = needs(DATA)


def _silicon() -> Structure:
    return Structure(
        Lattice.cubic(5.43), ["Si"] * 2, [[0, 0, 0], [0.25, 0.25, 0.25]], coords_are_cartesian=False
    )


def _check_frames(frames: list[Frame], max_stress: float | None = 0.7) -> None:
    """Common sanity checks on labelled frames: shapes, dtypes, units, unique ids.

    ``max_stress`` (eV/Å^3): bound on |σ| that catches a missing kbar conversion (~0.7 eV/Å^3 is
    about 100 GPa); ``None`` skips it (unconverged SCF gives arbitrary stresses).
    """
    assert frames
    keys = {(f.material_key, f.frame_id) for f in frames}
    assert len(keys) == len(frames)
    for frame in frames:
        assert isinstance(frame.frame_id, str)
        assert frame.forces is not None and frame.forces.dtype == np.float64
        assert frame.forces.shape == (frame.n_atoms, 3)
        assert np.isfinite(frame.forces).all()
        assert frame.energy is not None
        # total energies of these (PBE, PAW) datasets: between -15 and 0 eV/atom
        assert -15.0 < frame.energy / frame.n_atoms < 0.0
        if frame.stress is not None:
            assert frame.stress.shape == (3, 3)
            if max_stress is not None:
                assert np.abs(frame.stress).max() < max_stress
        assert frame.source and frame.source.startswith(str(DATA))


# ---------------------------------------------------------------------------------------------------
# WBM subset: extxyz and JSON hold the same 21 frames
# ---------------------------------------------------------------------------------------------------


@needs_data
def test_wbm_extxyz_reads_21_frames_with_sane_units() -> None:
    frames = read_frames(WBM_XYZ)
    assert len(frames) == 21
    _check_frames(frames)
    assert all(f.material_id is None for f in frames)  # no ids: grouped by reduced formula
    assert len({f.material_key for f in frames}) == 14
    assert [f.frame_id for f in frames] == [str(i) for i in range(21)]
    assert frames[3].source == f"{WBM_XYZ}@3"
    # README: "mean abs(F) 1.5 eV/Å" is the mean norm of the per-atom force vectors (the mean
    # absolute force component is about half of it)
    forces = np.concatenate([f.forces for f in frames])
    assert np.linalg.norm(forces, axis=1).mean() == pytest.approx(1.5, abs=0.1)
    assert 0.5 < np.abs(forces).mean() < 1.0
    assert all(f.stress is not None for f in frames)


@needs_data
def test_wbm_json_reads_21_frames_with_meta() -> None:
    frames = read_wbm_json(WBM_JSON)
    assert read_frames(WBM_JSON)[0].frame_id == frames[0].frame_id  # detected by layout
    assert len(frames) == 21
    _check_frames(frames)
    assert all(f.material_id and f.material_id.startswith("wbm-subset-") for f in frames)
    assert all("index_in_file" in f.metadata for f in frames)


@needs_data
def test_wbm_extxyz_and_json_agree() -> None:
    """Same data in two files and two stress conventions: the converted labels must agree."""
    xyz = read_extxyz(WBM_XYZ)
    wbm = read_wbm_json(WBM_JSON)
    # also check the conversion against the raw numbers of the JSON file (kbar, VASP sign)
    with gzip.open(WBM_JSON, "rt") as handle:
        raw = json.load(handle)
    for frame in wbm:
        matches = [
            x
            for x in xyz
            if x.formula == frame.formula
            and x.n_atoms == frame.n_atoms
            and np.allclose(x.structure.cart_coords, frame.structure.cart_coords, atol=1e-6)
            and np.allclose(x.structure.lattice.matrix, frame.structure.lattice.matrix, atol=1e-6)
        ]
        assert len(matches) == 1, frame.frame_id
        other = matches[0]
        assert frame.energy == pytest.approx(other.energy, abs=1e-6)
        np.testing.assert_allclose(frame.forces, other.forces, atol=1e-6)
        np.testing.assert_allclose(frame.stress, other.stress, atol=1e-7)
        vasp_s = np.array(raw[frame.material_id][frame.frame_id]["vasp_s"])
        np.testing.assert_allclose(frame.stress, -vasp_s * 0.1 / 160.21766208, rtol=1e-6)


# ---------------------------------------------------------------------------------------------------
# mlearn
# ---------------------------------------------------------------------------------------------------


@needs_data
@pytest.mark.parametrize(
    "path", [*MLEARN_FILES, MLEARN_CU], ids=lambda p: f"{p.parent.name}/{p.name}"
)
def test_mlearn_counts_groups_and_units(path: Path) -> None:
    raw = json.loads(path.read_text())
    frames = read_frames(path)
    assert len(frames) == len(raw)
    _check_frames(frames)
    assert [f.frame_id for f in frames] == [str(i) for i in range(len(raw))]
    assert all(f.material_id is None for f in frames)
    assert {f.material_key for f in frames} == {path.parent.name}  # reduced formula: Si or Cu
    assert [f.group for f in frames] == [r["group"] for r in raw]
    assert [f.description for f in frames] == [r["description"] for r in raw]
    for frame, record in zip(frames, raw, strict=True):
        assert frame.energy == pytest.approx(record["outputs"]["energy"])
        # diagonal: VASP sign and kbar -> ASE sign and eV/Å^3
        expected = -np.array(record["outputs"]["virial_stress"][:3]) * KBAR_TO_EV_PER_A3
        np.testing.assert_allclose(np.diag(frame.stress), expected)


def _shear_and_strain_checks(frames: list[Frame]) -> tuple[int, int]:
    """Check stresses of 'Elastic' frames against the strain read off their lattice.

    Returns the number of (normal, shear) frames checked. In the ASE convention a compressive
    strain gives negative normal stress, and a shear strain ε_ij gives σ_ij of the same sign.
    """
    n_normal = n_shear = 0
    for frame in frames:
        if frame.group != "Elastic":
            continue
        match = re.search(r"strain (-?[\d.]+)", frame.description or "")
        if match is None:  # the unstrained "Ground state crystal"
            continue
        strain = float(match.group(1))
        lattice = frame.structure.lattice.matrix
        off = lattice - np.diag(np.diag(lattice))
        if np.abs(off).max() < 0.1:  # a normal strain
            if abs(strain) >= 0.02:
                assert np.sign(np.trace(frame.stress)) == np.sign(strain), frame.description
                n_normal += 1
            continue
        i, j = np.unravel_index(np.argmax(np.abs(off)), off.shape)
        shear = frame.stress - np.diag(np.diag(frame.stress))
        k, m = np.unravel_index(np.argmax(np.abs(shear)), shear.shape)
        assert {int(k), int(m)} == {int(i), int(j)}, frame.description
        assert np.sign(shear[k, m]) == np.sign(off[i, j]), frame.description
        n_shear += 1
    return n_normal, n_shear


@needs_data
def test_mlearn_si_stress_sign_and_order_match_the_strains() -> None:
    """Si 'Elastic' frames: stress sign and Voigt order (xx yy zz xy yz zx) follow the strain."""
    frames = read_mlearn_json(MLEARN_FILES[0]) + read_mlearn_json(MLEARN_FILES[1])
    n_normal, n_shear = _shear_and_strain_checks(frames)
    assert n_normal >= 10 and n_shear >= 10


@needs_data
def test_mlearn_cu_test_file_has_its_last_two_shear_components_swapped() -> None:
    """Cu/test.json's shear frames only make sense with the order xx yy zz xy zx yz."""
    with pytest.raises(AssertionError):
        _shear_and_strain_checks(read_mlearn_json(MLEARN_CU))
    n_normal, n_shear = _shear_and_strain_checks(
        read_mlearn_json(MLEARN_CU, voigt_order="xx yy zz xy zx yz")
    )
    assert n_normal >= 5 and n_shear >= 4


def test_mlearn_bad_voigt_order_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    path.write_text("[]")
    with pytest.raises(InputError, match="Voigt order"):
        read_mlearn_json(path, voigt_order="xx yy zz xy xy zx")


# ---------------------------------------------------------------------------------------------------
# vasprun
# ---------------------------------------------------------------------------------------------------


def _count_ionic_steps(path: Path) -> int:
    """Independent of pymatgen: count <calculation> blocks in the raw XML."""
    with gzip.open(path, "rt") as handle:
        return sum(line.count("<calculation>") for line in handle)


@needs_data
@pytest.mark.parametrize(
    "name",
    [
        "vasprun.md.xml.gz",
        "vasprun.lifepo4.xml.gz",
        "vasprun.magmom_ldau.xml.gz",
        "vasprun.unconverged.xml.gz",
        "vasprun.ml_md.xml.gz",
        "vasprun.bad_random_seed.xml.gz",
    ],
)
def test_vasprun_one_frame_per_ionic_step(name: str) -> None:
    path = VASP / name
    frames = read_frames(path)
    assert len(frames) == _count_ionic_steps(path)
    _check_frames(frames, max_stress=None if "unconverged" in name else 0.7)
    assert [f.source for f in frames[:2]] == [f"{path}@0", f"{path}@1"]
    for frame in frames:
        meta = frame.metadata
        assert meta["electronic_steps"] >= 1
        assert meta["nelm"] >= meta["electronic_steps"]
        assert isinstance(meta["scf_converged"], bool)
        assert {"incar", "parameters", "potcar_symbols", "vasp_version"} <= set(meta["vasp"])
    json.dumps(frames[0].metadata)  # JSON-serialisable for the documents built later


@needs_data
def test_vasprun_matches_ase_reader() -> None:
    """pymatgen-based reader vs ASE's own vasprun parser (independent sign/unit conversion)."""
    import ase.io

    path = VASP / "vasprun.md.xml.gz"
    frames = read_vasprun(path)
    images = ase.io.read(str(path), index=":", format="vasp-xml")
    assert len(images) == len(frames)
    for frame, atoms in zip(frames, images, strict=True):
        # TOTEN (free energy) is what the forces are the derivative of
        assert frame.energy == pytest.approx(atoms.get_potential_energy(force_consistent=True))
        np.testing.assert_allclose(frame.forces, atoms.get_forces(), atol=1e-8)
        # ASE symmetrises the tensor (it keeps Voigt components); VASP's is symmetric to ~1e-9
        np.testing.assert_allclose(frame.stress, atoms.get_stress(voigt=False), atol=1e-9)


@needs_data
def test_vasprun_metadata_for_later_guard_rails() -> None:
    unconverged = read_vasprun(VASP / "vasprun.unconverged.xml.gz")
    assert all(f.metadata["scf_converged"] is False for f in unconverged)
    assert unconverged[0].metadata["nelm"] == 100
    md = read_vasprun(VASP / "vasprun.md.xml.gz")
    assert md[0].metadata["nelm"] == 60  # VASP default: not in the INCAR
    assert all(f.metadata["scf_converged"] for f in md)
    ldau = read_vasprun(VASP / "vasprun.magmom_ldau.xml.gz")[0].metadata["vasp"]
    assert ldau["parameters"]["LDAU"] is True and ldau["parameters"]["LDAUU"][0] == 5.3
    assert ldau["potcar_symbols"] == ["PAW_PBE Fe_pv 06Sep2000", "PAW_PBE O 08Apr2002"]
    ml = read_vasprun(VASP / "vasprun.ml_md.xml.gz")[0].metadata["vasp"]
    assert ml["incar"]["ML_LMLFF"] is True
    # VASP 5 writes a wrong e_0_energy in the ionic block here; TOTEN must be used
    lifepo4 = read_vasprun(VASP / "vasprun.lifepo4.xml.gz")
    assert lifepo4[0].energy == pytest.approx(-773.09034081)


@needs_data
def test_vasprun_directory(tmp_path: Path) -> None:
    shutil.copy(VASP / "vasprun.md.xml.gz", tmp_path / "vasprun.xml.gz")
    assert detect_format(tmp_path) == "vasprun"
    frames = read_frames(tmp_path)
    assert len(frames) == 10
    assert frames[0].source == f"{tmp_path / 'vasprun.xml.gz'}@0"


def test_directory_without_vasprun(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no vasprun"):
        read_frames(tmp_path)


# ---------------------------------------------------------------------------------------------------
# extxyz written here, plain structures
# ---------------------------------------------------------------------------------------------------


def test_extxyz_plain_keys_ids_and_voigt_stress(tmp_path: Path) -> None:
    """energy/forces/stress that ASE stores on a SinglePointCalculator are read too."""
    import ase.io
    from ase.calculators.singlepoint import SinglePointCalculator
    from pymatgen.io.ase import AseAtomsAdaptor

    atoms = AseAtomsAdaptor.get_atoms(_silicon())
    forces = np.array([[0.1, -0.2, 0.3], [-0.1, 0.2, -0.3]])
    voigt = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]) * 1e-3  # ASE order xx yy zz yz xz xy
    atoms.calc = SinglePointCalculator(atoms, energy=-10.8, forces=forces, stress=voigt)
    atoms.info.update(material_id="mp-149", frame_id="a", temperature=1000)
    path = tmp_path / "si.extxyz"
    ase.io.write(path, [atoms, atoms], format="extxyz")
    with pytest.raises(InputError, match="occurs twice"):
        read_frames(path)
    second = atoms.copy()
    # Another frame (the same content under another id would be refused as a repeat).
    second.calc = SinglePointCalculator(second, energy=-10.7, forces=forces, stress=voigt)
    second.info.update(frame_id="b")
    ase.io.write(path, [atoms, second], format="extxyz")
    frames = read_frames(path)
    assert [(f.material_id, f.frame_id) for f in frames] == [("mp-149", "a"), ("mp-149", "b")]
    assert frames[0].energy == pytest.approx(-10.8)
    np.testing.assert_allclose(frames[0].forces, forces)
    expected = np.array([[1, 6, 5], [6, 2, 4], [5, 4, 3]]) * 1e-3
    np.testing.assert_allclose(frames[0].stress, expected)
    assert frames[0].metadata["temperature"] == 1000


def test_plain_cif_is_one_unlabelled_frame(tmp_path: Path) -> None:
    path = tmp_path / "si.cif"
    _silicon().to(filename=str(path))
    frames = read_frames(path)
    assert len(frames) == 1
    frame = frames[0]
    assert not frame.is_labelled and frame.energy is None and frame.stress is None
    assert frame.formula == "Si" and frame.n_atoms == 2 and frame.source == str(path)
    assert read_structure(path).matches(_silicon())


def test_read_structure_poscar_and_extxyz(tmp_path: Path) -> None:
    import ase.io
    from pymatgen.io.ase import AseAtomsAdaptor

    poscar = tmp_path / "POSCAR"
    _silicon().to(filename=str(poscar), fmt="poscar")
    assert read_structure(poscar).matches(_silicon())
    xyz = tmp_path / "traj.extxyz"
    first = AseAtomsAdaptor.get_atoms(_silicon())
    second = first.copy()
    second.positions[1] += 0.1
    ase.io.write(xyz, [first, second], format="extxyz")
    np.testing.assert_allclose(read_structure(xyz).cart_coords, first.positions, atol=1e-8)


def test_read_structure_rejects_overlapping_atoms(tmp_path: Path) -> None:
    path = tmp_path / "overlap.cif"
    Structure(
        Lattice.cubic(5.0), ["Si", "Si"], [[0, 0, 0], [0.2, 0, 0]], coords_are_cartesian=True
    ).to(filename=str(path))
    assert len(read_frames(path)) == 1  # reading a dataset does not judge geometry
    with pytest.raises(InputError, match=r"overlap\.cif.*0\.200 Å apart"):
        read_structure(path)


def test_check_structure_rejects_flat_cells_and_periodic_images() -> None:
    flat = Structure(Lattice([[3, 0, 0], [0, 3, 0], [0, 0, 0]]), ["Si"], [[0, 0, 0]])
    with pytest.raises(InputError, match="no lattice"):
        check_structure(flat)
    tiny = Structure(Lattice.cubic(0.3), ["Si"], [[0, 0, 0]])
    with pytest.raises(InputError, match="periodic image"):
        check_structure(tiny)
    check_structure(_silicon())


def test_molecule_without_cell_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "h2.xyz"
    path.write_text("2\n\nH 0 0 0\nH 0 0 0.74\n")
    with pytest.raises(InputError, match=r"h2\.xyz.*no 3D periodic cell"):
        read_structure(path)


# ---------------------------------------------------------------------------------------------------
# Error paths
# ---------------------------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file.*nope.cif"):
        read_frames(tmp_path / "nope.cif")
    with pytest.raises(InputError, match="no such file"):
        read_structure(tmp_path / "nope.cif")


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("garbage.cif", b"hello world\n"),
        ("garbage.txt", b"hello world\n"),
        ("garbage.extxyz", b"hello world\n"),
        ("garbage.json", b"{not json"),
        ("other.json", b'{"a": 1}'),
        ("empty.json", b"[]"),
        ("vasprun.xml", b"<?xml version='1.0'?><modeling><generator>"),
        ("binary.dat", bytes(range(256))),
    ],
)
def test_garbage_is_an_input_error_naming_the_file(
    tmp_path: Path, name: str, content: bytes
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InputError) as info:
        read_frames(path)
    message = str(info.value)
    assert name in message and "\n" not in message
    assert info.value.__cause__ is not None or "layout" in message or "no frames" in message


def test_malformed_labels(tmp_path: Path) -> None:
    record = {
        "structure": _silicon().as_dict(),
        "outputs": {"energy": -10.0, "forces": [[0, 0, 0]]},
    }
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([record]))
    with pytest.raises(InputError, match=r"bad\.json.*entry 0: forces have shape \(1, 3\)"):
        read_frames(path)
    with pytest.raises(InputError, match="not the WBM layout"):
        read_wbm_json(path)
    with pytest.raises(InputError, match="unknown format"):
        read_frames(path, fmt="lammps-dump")


@needs_data
@pytest.mark.parametrize("source", [VASP / "vasprun.md.xml.gz", WBM_JSON])
def test_truncated_gzip_is_an_input_error(tmp_path: Path, source: Path) -> None:
    blob = source.read_bytes()
    cut = tmp_path / source.name
    cut.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(InputError, match=re.escape(source.name)) as info:
        read_frames(cut)
    assert info.value.__cause__ is not None


@needs_data
def test_gzip_of_truncated_xml_is_an_input_error(tmp_path: Path) -> None:
    xml = gzip.decompress((VASP / "vasprun.md.xml.gz").read_bytes())
    path = tmp_path / "vasprun.xml.gz"
    path.write_bytes(gzip.compress(xml[: int(len(xml) * 0.9)]))
    with pytest.raises(InputError, match="vasprun.xml.gz.*not a readable vasprun"):
        read_frames(path)


def test_vasp_stress_conversion() -> None:
    kbar = np.diag([10.0, 20.0, 30.0])  # compressive in VASP's sign
    ase_stress = vasp_stress_to_ase(kbar)
    np.testing.assert_allclose(np.diag(ase_stress), -np.array([10, 20, 30]) / 1602.1766208)
