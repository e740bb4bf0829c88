"""Hostile inputs that gave silently wrong numbers or tracebacks (issue 27, third round): frames given
twice, a CI below 0 called "includes 0", one absurd force component, NaN in --json, open-boundary
frames, a surface energy of 1e300, 1-atom cells, atoms in a box as a bulk, --min-length 0."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA, WBM_XYZ, needs, one_error_line, run_cli
from pymatgen.core import Lattice, Structure

from softening.errors import InputError

CU_TEST = DATA / "mlearn" / "Cu" / "test.json"
WBM_JSON = DATA / "wbm_high_energy_subset" / "wbm_subset_21frames.json.gz"


def _strict_loads(text: str):
    """Parse JSON as a strict parser does: NaN, Infinity and -Infinity are errors."""
    return json.loads(text, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))


def _atoms(symbol: str = "Cu", a: float = 3.6, forces=None, energy: float = -3.5, **kw):
    """A labelled fcc cell (1 atom unless ``cubic``) as ASE Atoms."""
    from ase.build import bulk

    atoms = bulk(symbol, "fcc", a=a, **kw)
    atoms.info["REF_energy"] = energy
    n = len(atoms)
    atoms.arrays["REF_forces"] = (
        np.zeros((n, 3)) if forces is None else np.asarray(forces, float).reshape(n, 3)
    )
    return atoms


def _write(path: Path, images) -> Path:
    import ase.io

    ase.io.write(path, list(images), format="extxyz")
    return path


def _rattled(seed: int, n: int = 4):
    """Labelled 4-atom Cu cells with random forces (distinct frames)."""
    rng = np.random.default_rng(seed)
    return [
        _atoms(cubic=True, a=3.6 + 0.01 * k, forces=rng.normal(size=(4, 3)), energy=-14.0 + k)
        for k in range(n)
    ]


# ---- 5. a frame given twice ------------------------------------------------------------------------


def test_a_frame_repeated_inside_one_file_is_refused_naming_both(tmp_path):
    from softening.datasets import read_frames
    from softening.datasets.readers import iter_frames

    a, b = _rattled(0, 2)
    path = _write(tmp_path / "dup.extxyz", [a, b, a])
    for read in (read_frames, lambda p: list(iter_frames(p))):
        with pytest.raises(InputError, match="frame 2 is the same frame as .*frame 0"):
            read(path)
    assert len(read_frames(_write(tmp_path / "ok.extxyz", [a, b]))) == 2


def test_the_same_file_twice_is_refused_by_evaluate_and_finetune_readers(tmp_path):
    from softening.datasets.readers import iter_labelled_frames
    from softening.datasets.references import labelled_frames

    path = _write(tmp_path / "cu.extxyz", _rattled(1))
    with pytest.raises(InputError, match="frame 0 was read twice"):
        list(iter_labelled_frames([path, path]))
    with pytest.raises(InputError, match="read twice"):
        labelled_frames([path, path])


@needs(WBM_JSON)
def test_one_dataset_in_two_formats_is_refused():
    """The WBM subset as extended XYZ and as JSON: the same 21 frames under other ids."""
    from softening.datasets.readers import iter_labelled_frames

    with pytest.raises(InputError, match="same frame as .*wbm_subset_21frames.extxyz' frame 0"):
        list(iter_labelled_frames([WBM_XYZ, WBM_JSON]))


@needs(CU_TEST)
def test_surfaces_refuse_a_slab_or_a_file_given_twice(tmp_path):
    from softening.datasets.surfaces import read_surface_data

    with pytest.raises(InputError, match="read twice"):
        read_surface_data([CU_TEST, CU_TEST])
    records = json.loads(CU_TEST.read_text())
    slab = next(r for r in records if r["group"] == "Surface")
    path = tmp_path / "cu.json"
    path.write_text(json.dumps([*records, slab]))
    with pytest.raises(InputError, match=f"frame {len(records)} is the same frame as"):
        read_surface_data([path])
    (data,) = read_surface_data([CU_TEST])
    assert len(data.slabs) == 2


def test_cli_refuses_a_repeated_frame_with_one_line(tmp_path):
    a, b = _rattled(2, 2)
    res = run_cli("evaluate", _write(tmp_path / "dup.extxyz", [a, b, a]), "--model", "chgnet",
                  "--store", tmp_path / "db")  # fmt: skip
    one_error_line(res, "dup.extxyz' frame 2", "frame 0", "count twice")


# ---- 6. flags that say what was measured ---------------------------------------------------------


def test_a_ci_below_zero_is_anticorrelated_not_includes_zero():
    from softening.analysis.metrics import correlation, is_uncorrelated
    from softening.makers.force_comparison import correlation_flag

    assert correlation((-1.94, -0.58)) == "anticorrelated"
    assert correlation((-0.05, 0.09)) == "uncorrelated"
    assert correlation((0.0, 0.0)) == "uncorrelated"
    assert correlation((0.7, 0.9)) is None
    anti = correlation_flag((-1.94, -0.58))
    assert anti.kind == "anticorrelated" and "[-1.94, -0.58]" in anti.detail
    assert "below 0" in anti.detail and "includes 0" not in anti.detail
    unc = correlation_flag((-0.05, 0.09))
    assert unc.kind == "uncorrelated" and "[-0.05, 0.09] includes 0" in unc.detail
    # Both mean "cMAE not meaningful" to the tables, report and HTML page (they test the CI).
    assert is_uncorrelated((-1.94, -0.58)) and is_uncorrelated((-0.05, 0.09))


def _doc(f_ml, f_ref, keys=None):
    from softening.makers.force_comparison import softening_doc
    from softening.schemas import CodeInfo, ModelInfo

    keys = keys or [("X", str(i)) for i in range(len(f_ref))]
    return softening_doc(
        keys=keys, f_ml=f_ml, f_ref=f_ref, species=[["Cu"] * len(f) for f in f_ref],
        e_ml=[None] * len(keys), e_ref=[None] * len(keys), formula="Cu",
        model=ModelInfo(name="m", family="test"), reference=CodeInfo(name="dft"), n_bootstrap=200,
    )  # fmt: skip


def test_forces_pointing_the_other_way_are_flagged_anticorrelated():
    rng = np.random.default_rng(3)
    f_ref = [rng.normal(size=(8, 3)) for _ in range(6)]
    f_ml = [-1.35 * f + 0.2 * rng.normal(size=f.shape) for f in f_ref]
    doc = _doc(f_ml, f_ref)
    assert doc.scale_ci[1] < 0
    kinds = {f.kind for f in doc.flags}
    assert kinds == {"anticorrelated"}, doc.flags


# ---- 7a. one absurd force component --------------------------------------------------------------


def test_an_absurd_reference_force_is_refused_when_read(tmp_path):
    from softening.datasets import read_frames

    frames = _rattled(4, 2)
    forces = frames[1].arrays["REF_forces"].copy()
    forces[2, 0] = 1e6
    frames[1].arrays["REF_forces"] = forces
    path = _write(tmp_path / "f.extxyz", frames)
    with pytest.raises(
        InputError, match=r"frame 1: reference force component 1e\+06 eV/Å on atom 2"
    ):
        read_frames(path)


def test_outlier_force_components_are_flagged_naming_frames_and_atoms():
    rng = np.random.default_rng(5)
    f_ref = [rng.normal(size=(8, 3)) for _ in range(5)]
    f_ml = [0.8 * f for f in f_ref]
    assert not _doc(f_ml, f_ref).flags  # ordinary data: nothing flagged
    blown = [f.copy() for f in f_ml]
    blown[3][5, 1] = 1e6  # the model blows up on one atom
    doc = _doc(blown, f_ref)
    (flag,) = [f for f in doc.flags if f.kind == "outlier_forces"]
    assert "1 atom(s) in 1 frame(s) (X/3)" in flag.detail and "uMLIP 1e+06" in flag.detail
    ref = [f.copy() for f in f_ref]
    ref[1][0, 0] = 200.0  # a reference component far beyond the rest (but below the read limit)
    (flag,) = [f for f in _doc([0.8 * f for f in ref], ref).flags if f.kind == "outlier_forces"]
    assert "(X/1)" in flag.detail and "reference 200" in flag.detail


# ---- 7b. strict JSON -------------------------------------------------------------------------------


def test_every_json_writer_writes_null_for_nan_and_infinity(tmp_path):
    from softening.cli.display import dumps
    from softening.jsonio import write_json

    obj = {"a": float("nan"), "b": [np.float64("inf"), -np.inf], "c": np.array([1.0, np.nan])}
    expected = {"a": None, "b": [None, None], "c": [1.0, None]}
    assert _strict_loads(dumps(obj)) == expected
    assert _strict_loads(write_json(tmp_path / "x.json", obj, indent=2).read_text()) == expected


# ---- 8a + 7b. 1-atom cells: one line, or a batch that keeps its other materials -------------------


def test_all_zero_reference_forces_give_one_line_not_a_traceback(tmp_path):
    cells = [_atoms(a=3.6), _atoms(a=3.65, energy=-3.4)]  # 1-atom cells: forces 0 by symmetry
    res = run_cli("evaluate", _write(tmp_path / "one.extxyz", cells), "--model", "chgnet",
                  "--store", tmp_path / "db")  # fmt: skip
    one_error_line(res, "Cu", "every reference force component is zero", "undefined")


def test_a_batch_keeps_its_other_materials_and_its_json_is_strict(tmp_path):
    """Cu 1-atom cells (zero forces): skipped with the reason; Al 1-atom cells with made-up
    non-zero forces: CHGNet's are 0, so scale 0 and cMAE NaN, written as null; a 4-atom Cu
    material: a normal result. Parsed as a strict parser does."""
    zero = [_atoms(a=3.6), _atoms(a=3.65, energy=-3.4)]
    al = [_atoms("Al", 4.05, [[0.1, -0.2, 0.05]], -3.7), _atoms("Al", 4.1, [[0.05, 0.1, -0.1]])]
    from ase.calculators.emt import EMT

    rattled = []
    for k, atoms in enumerate(_rattled(6, 3)):  # labelled with EMT: forces CHGNet follows
        atoms.rattle(0.05, seed=k)
        atoms.calc = EMT()
        atoms.info["REF_energy"] = atoms.get_potential_energy()
        atoms.arrays["REF_forces"] = atoms.get_forces()
        atoms.calc = None
        atoms.info["material_id"] = "cu-4"
        rattled.append(atoms)
    path = _write(tmp_path / "batch.extxyz", zero + al + rattled)
    res = run_cli("evaluate", path, "--model", "chgnet", "--json", "--store", tmp_path / "db")
    assert res.returncode == 0, res.stderr[-2000:]
    (model,) = _strict_loads(res.stdout)["models"].values()
    by_id = {m["material_id"]: m for m in model["materials"]}
    assert set(by_id) == {"Al", "cu-4"}
    assert by_id["Al"]["scale"] == 0.0 and by_id["Al"]["cmae"] is None
    assert any(f.startswith("uncorrelated:") for f in by_id["Al"]["flags"])
    assert 0 < by_id["cu-4"]["scale"] and by_id["cu-4"]["cmae"] is not None
    (skip,) = model["skipped"]
    assert skip["material_id"] == "Cu" and skip["n_frames"] == 2
    assert "every reference force component is zero" in skip["reason"]
    assert model["pooled"]["n_frames"] == 5  # the skipped frames are out of the pooled fit too


# ---- 7e. frames declared non-periodic --------------------------------------------------------------


def test_a_frame_declared_open_without_vacuum_is_refused(tmp_path):
    from ase import Atoms

    from softening.datasets import read_frames

    crystal = _rattled(7, 1)[0]
    crystal.pbc = False
    with pytest.raises(InputError, match=r'frame 0: declared non-periodic \(pbc="F F F"\)'):
        read_frames(_write(tmp_path / "open.extxyz", [crystal]))
    # A molecule with 10 Å or more of vacuum on every side is the same periodic or not: read.
    water = Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]], cell=[12] * 3)
    water.center()
    water.pbc = False
    water.info["REF_energy"] = -14.2
    water.arrays["REF_forces"] = np.array([[0.1, 0, 0], [-0.05, 0.02, 0], [-0.05, -0.02, 0]])
    (frame,) = read_frames(_write(tmp_path / "water.extxyz", [water]))
    assert frame.n_atoms == 3


# ---- 7f. physically absurd surface energies --------------------------------------------------------


def _surface_case(gamma_ref: float, gamma_ml: float):
    """Surface energies of Cu (100) from made-up energies: each side's slab energy is its bulk
    energy plus ``2 A gamma`` (gamma in J/m^2)."""
    from softening.analysis.surfaces import J_PER_M2_PER_EV_PER_A2
    from softening.makers.properties import BULK
    from softening.makers.slabs import generate_slabs, slab_inputs
    from softening.makers.surfaces import compare_surface_results
    from softening.schemas import CodeInfo, FrameResult, ModelInfo, UMLIPResults

    bulk = Structure(Lattice.cubic(3.6), ["Cu"] * 4,
                     [[0, 0, 0], [0, .5, .5], [.5, 0, .5], [.5, .5, 0]])  # fmt: skip
    slabs, _ = generate_slabs(bulk, miller=[(1, 0, 0)])
    inputs, frames = slab_inputs("Cu", bulk, slabs, [])
    (row,) = inputs["slabs"]
    n, area = row["n_atoms"], row["area"]
    energies = {
        BULK: (-16.0, -15.0),
        row["frame_id"]: tuple(
            n * e + 2 * area * g / J_PER_M2_PER_EV_PER_A2
            for e, g in ((-4.0, gamma_ref), (-3.75, gamma_ml))
        ),
    }

    def results(side: int, code: str) -> list[FrameResult]:
        return [
            FrameResult(frame_id=f.frame_id, material_id="Cu", formula="Cu", structure=f.structure,
                        energy=energies[f.frame_id][side], code=CodeInfo(name=code))
            for f in frames
        ]  # fmt: skip

    umlip = UMLIPResults(model=ModelInfo(name="m", family="test"), frames=results(1, "m"))
    return compare_surface_results(inputs, results(0, "dft"), umlip)


def test_a_surface_energy_of_1e300_is_skipped_with_the_reason():
    sane = _surface_case(1.3, 1.0)
    ((g_ref, g),) = [(r.gamma_ref, r.gamma) for r in sane.values.rows]
    assert g_ref == pytest.approx(1.3) and g == pytest.approx(1.0) and not sane.values.skipped
    for gamma_ref, gamma, side in ((1e300, 1.0, "reference"), (1.3, -500.0, "m")):
        doc = _surface_case(gamma_ref, gamma)
        assert doc.values.rows == [] and doc.values.mae is None
        (why,) = doc.values.skipped
        assert f"{side} surface energy" in why and "not physical" in why


# ---- 8b. a structure that is not a bulk crystal -------------------------------------------------


def test_atoms_in_a_box_are_refused_as_a_bulk_for_surfaces():
    from softening.makers.reference import ReferenceStaticMaker
    from softening.makers.surfaces import SurfaceMaker

    box = Structure(Lattice.cubic(200.0), ["Cu", "Cu"], [[100, 100, 100], [102.5, 100, 100]],
                    coords_are_cartesian=True)  # fmt: skip
    maker = SurfaceMaker(reference_maker=ReferenceStaticMaker(calculator="emt"), models=[])
    with pytest.raises(InputError, match="box: not a bulk crystal: 200.0 Å of empty space"):
        maker.inputs(box, "box")


# ---- 8c. --min-length 0 ------------------------------------------------------------------------


@pytest.mark.parametrize("length", [0.0, -5.0, float("nan")])
def test_a_non_positive_min_length_is_refused(length):
    from softening.makers.phonon_setup import supercell_matrix_for

    cu = Structure(Lattice.cubic(3.6), ["Cu"], [[0, 0, 0]])
    with pytest.raises(InputError, match="--min-length must be a positive length"):
        supercell_matrix_for(cu, min_length=length)
