"""Input checks up front: frames, structure files, sampling settings, numeric filters, file names."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, WBM_XYZ, needs
from pymatgen.core import Lattice, Structure

from softening.datasets import read_frames, read_structure
from softening.datasets.checks import (
    check_sampling,
    md_kept_frames,
    structure_digest,
    wrap_structure,
)
from softening.errors import InputError

CLI = [sys.executable, "-m", "softening.cli"]


def _cli(*args, env_extra=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CLI, *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env_extra or {})},
        timeout=600,
    )


def _one_line_error(res, *words) -> str:
    assert res.returncode != 0
    assert "Traceback" not in res.stderr, res.stderr
    err = res.stderr.strip()
    assert err.startswith("error:") and "\n" not in err, err
    for w in words:
        assert w in err, err
    return err


def _write_xyz(path: Path, blocks: list[str]) -> Path:
    path.write_text("".join(blocks))
    return path


def _frame(n: int, positions, energy="-1.0", forces=None) -> str:
    forces = forces or [[0.1, 0.0, 0.0]] * n
    head = (
        f'{n}\nLattice="5 0 0 0 5 0 0 0 5" Properties=species:S:1:pos:R:3:REF_forces:R:3 '
        f'REF_energy={energy} pbc="T T T"\n'
    )
    return head + "".join(
        f"Cu {p[0]} {p[1]} {p[2]} {f[0]} {f[1]} {f[2]}\n"
        for p, f in zip(positions, forces, strict=True)
    )


# ---- dataset frames -------------------------------------------------------------------------------


def test_overlapping_atoms_are_refused_naming_frame_and_atoms(tmp_path):
    ok = _frame(2, [[0, 0, 0], [2.5, 2.5, 2.5]])
    same = _frame(2, [[1, 1, 1], [1, 1, 1]])
    path = _write_xyz(tmp_path / "d.extxyz", [ok, same])
    with pytest.raises(InputError, match=r"d\.extxyz frame 1.*atoms 0 \(Cu\) and 1 \(Cu\)"):
        read_frames(path)


def test_zero_atom_frame_is_refused(tmp_path):
    path = _write_xyz(tmp_path / "z.extxyz", [_frame(1, [[0, 0, 0]]), _frame(0, [])])
    with pytest.raises(InputError, match=r"z\.extxyz frame 1.*no atoms"):
        read_frames(path)


@pytest.mark.parametrize(
    ("energy", "forces", "what"),
    [("nan", None, "energy"), ("-1.0", [[0.1, 0, 0], ["nan", 0, 0]], "forces")],
)
def test_non_finite_labels_are_refused_before_any_model(tmp_path, energy, forces, what):
    path = _write_xyz(
        tmp_path / "n.extxyz", [_frame(2, [[0, 0, 0], [2.5, 2.5, 2.5]], energy, forces)]
    )
    with pytest.raises(InputError, match=rf"n\.extxyz frame 0: non-finite reference {what}"):
        read_frames(path)


def test_evaluate_cli_names_the_overlapping_frame(tmp_path):
    path = _write_xyz(tmp_path / "d.extxyz", [_frame(2, [[1, 1, 1], [1, 1, 1]])])
    res = _cli("evaluate", path, "--store", tmp_path / "db", "--json")
    err = _one_line_error(res, "d.extxyz frame 0", "overlapping")
    assert "NaN" not in err


# ---- structure files ------------------------------------------------------------------------------

CU4_DUPLICATED = """data_Cu
_cell_length_a 3.61
_cell_length_b 3.61
_cell_length_c 3.61
_cell_angle_alpha 90
_cell_angle_beta 90
_cell_angle_gamma 90
_symmetry_space_group_name_H-M 'P 1'
loop_
_symmetry_equiv_pos_as_xyz
'x, y, z'
loop_
_atom_site_label
_atom_site_type_symbol
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
_atom_site_occupancy
Cu1 Cu 0.0 0.0 0.0 1
Cu2 Cu 0.5 0.5 0.0 1
Cu3 Cu 0.5 0.0 0.5 1
Cu4 Cu 0.5 0.5 0.0 1
"""


def test_cif_with_duplicated_sites_is_refused(tmp_path):
    path = tmp_path / "cu4.cif"
    path.write_text(CU4_DUPLICATED)
    with pytest.raises(InputError, match=r"cu4\.cif.*Cu2 = Cu4"):
        read_structure(path)
    # Without the duplicate line the same file is the Cu3 it says it is.
    path.write_text(CU4_DUPLICATED.replace("Cu4 Cu 0.5 0.5 0.0 1\n", ""))
    assert len(read_structure(path)) == 3


def test_run_cli_refuses_duplicated_sites_in_one_line(tmp_path):
    path = tmp_path / "cu4.cif"
    path.write_text(CU4_DUPLICATED)
    _one_line_error(_cli("run", path, "--reference", "emt"), "cu4.cif", "Cu2 = Cu4")


@pytest.mark.parametrize(
    "content",
    [b"\x00\xff\x10garbage" * 50, b"", b"data_x\n_cell_length_a 3\nloop_\n_atom_site_label\n"],
)
def test_bad_structure_file_is_one_input_error(tmp_path, content):
    path = tmp_path / "bad.cif"
    path.write_bytes(content)
    with pytest.raises(InputError, match=r"bad\.cif") as info:
        read_structure(path)
    assert "\n" not in str(info.value)


# ---- wrapping into the cell ----------------------------------------------------------------------


def test_wrap_structure_moves_atoms_into_the_cell_only_when_needed():
    s = Structure(Lattice.cubic(4.0), ["Cu", "Cu"], [[0.1, 0.2, 0.3], [0.6, 0.5, 0.5]])
    assert wrap_structure(s) is s  # already inside: the same object, content keys unchanged
    shifted = s.copy()
    shifted.translate_sites([0, 1], [1e5, -1e5, 3e4], frac_coords=False, to_unit_cell=False)
    wrapped = wrap_structure(shifted)
    assert ((wrapped.frac_coords >= 0) & (wrapped.frac_coords < 1)).all()
    np.testing.assert_allclose(wrapped.cart_coords, s.cart_coords, atol=1e-6)
    assert structure_digest(shifted) == structure_digest(s)


@needs(WBM_XYZ)
def test_chgnet_forces_do_not_depend_on_the_periodic_image(tmp_path):
    import ase.io

    from softening.models import load_model
    from softening.models.evaluate import evaluate_structures

    images = ase.io.read(WBM_XYZ, index=":4")
    for atoms in images:
        atoms.positions += 1e5  # every atom 1e5 Å away along x, y and z: another image
    ase.io.write(tmp_path / "shifted.extxyz", images, format="extxyz")
    plain = [f.structure for f in read_frames(WBM_XYZ)[:4]]
    shifted = [f.structure for f in read_frames(tmp_path / "shifted.extxyz")]
    model = load_model("chgnet")
    for a, b in zip(
        evaluate_structures(model, plain), evaluate_structures(model, shifted), strict=True
    ):
        assert np.abs(a.forces - b.forces).max() < 1e-4
        assert a.energy == pytest.approx(b.energy, abs=1e-4)


# ---- sampling settings ---------------------------------------------------------------------------


def test_md_kept_frames_matches_run_md_bookkeeping():
    for steps, stride, eq in [
        (100, 10, 0.2),
        (105, 10, 0.2),
        (40, 2, 0.2),
        (7, 3, 0.0),
        (5, 10, 0),
    ]:
        n_equil = int(steps * eq)
        expected = sum(
            1 for s in range(1, steps + 1) if (s % stride == 0 or s == steps) and s > n_equil
        )
        assert md_kept_frames(steps, stride, eq) == expected


def test_stride_zero_and_too_few_md_frames_are_refused_before_the_md():
    from softening.makers import FrameSelectionMaker, MDSamplingMaker

    with pytest.raises(InputError, match="stride"):
        MDSamplingMaker(stride=0)
    with pytest.raises(InputError, match="keeps 16 frame.*30 frames"):
        check_sampling(MDSamplingMaker(steps=40, stride=2), FrameSelectionMaker(n_frames=30))
    check_sampling(MDSamplingMaker(steps=40, stride=2), FrameSelectionMaker(n_frames=16))


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--stride", "0"], ["stride"]),
        (["--steps", "40", "--stride", "2", "--frames", "30"], ["keeps 16", "30 frames"]),
    ],
)
def test_run_cli_refuses_bad_sampling_before_any_job(tmp_path, args, words):
    cif = tmp_path / "Cu.cif"
    (Structure.from_spacegroup("Fm-3m", Lattice.cubic(3.61), ["Cu"], [[0, 0, 0]])).to(
        filename=str(cif)
    )
    res = _cli("run", cif, "--reference", "emt", "--store", tmp_path / "db", *args)
    _one_line_error(res, *words)
    assert not (tmp_path / "db").exists() or not any((tmp_path / "db").iterdir())


def test_finetune_zero_epochs_is_refused():
    from softening.models.finetune import FineTuneSettings

    with pytest.raises(InputError, match="epochs"):
        FineTuneSettings(epochs=0)


# ---- numeric filters and file names -------------------------------------------------------------


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_query_refuses_non_finite_scale_bounds(value):
    from softening.stores.queries import results_criteria

    with pytest.raises(InputError, match="scale-min must be a finite number"):
        results_criteria(scale_min=value)
    with pytest.raises(InputError, match="scale-max must be a finite number"):
        results_criteria(scale_max=value)


def test_query_cli_scale_min_nan_is_one_line(tmp_path):
    (tmp_path / "db").mkdir()
    _one_line_error(_cli("query", "--store", tmp_path / "db", "--scale-min", "nan"), "scale-min")


def test_safe_filename_is_bounded_and_unique():
    from softening.naming import safe_filename

    long_a, long_b = "x" * 299 + "a", "x" * 299 + "b"
    assert len(safe_filename(long_a)) <= 60 and safe_filename(long_a) != safe_filename(long_b)
    assert safe_filename("mp-149") == "mp-149"
    assert "/" not in safe_filename("../../etc/passwd") and safe_filename("..") not in (".", "..")


def test_report_with_a_300_character_material_id(tmp_path):
    from documents import _doc, _insert_docs

    from softening.stores import get_job_store

    store = get_job_store(tmp_path / "db")
    long_id = "mp-" + "7" * 297
    f_ref = [[0.1, -0.2, 0.3], [0.2, 0.1, -0.1]]
    _insert_docs(
        store,
        [
            _doc(
                long_id,
                "CHGNet-0.3.0",
                0.9,
                ["Cu"],
                formula="Cu",
                forces_ref=f_ref,
                forces_ml=f_ref,
            )
        ],
    )
    res = _cli("report", "--store", tmp_path / "db", "--out", tmp_path / "rep", "--json")
    assert res.returncode == 0, res.stderr
    (parity,) = json.loads(res.stdout)["files"]["parity"]
    assert Path(parity).is_file() and len(Path(parity).name) < 150
