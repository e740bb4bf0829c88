"""Read finished VASP nudged-elastic-band (NEB) runs, so that ML potentials can be judged on the images.

The standard VASP NEB layout is a folder with one sub-folder per image, named with two digits:
``00`` and ``NN`` are the end points, ``01`` .. ``NN-1`` the images VASP moved (``IMAGES = NN-1``).
Each numbered sub-folder holds

- a full ``vasprun.xml`` or ``vasprun.xml.gz``: its last ionic step is the image (for an image of a
  finished NEB, the converged one), read with
  :func:`~softening.datasets.formats.vasprun.read_vasprun` and judged by
  :func:`~softening.datasets.guards.apply_guard_rails` as ``softening evaluate`` judges any VASP run
  (a stripped vasprun without ``<incar>``/``<parameters>`` is read as
  :mod:`softening.datasets.mixing` reads one: its last ``<calculation>``, no guard rails);
- or else an ``OUTCAR`` / ``OUTCAR.gz``: its last ``free  energy   TOTEN``, with the structure of
  ``CONTCAR`` (else ``POSCAR``).

VASP computes no energy for the end points during an NEB: ``00`` and ``NN`` need the results of
their own static or relaxation runs copied in. Sub-folders that are not two digits (``vtst``,
``relax``...) and files beside the sub-folders are ignored.

Everything is checked before :func:`read_neb_folder` returns, so before any model runs: every image
needs a finite total energy and a structure without atoms closer than
:data:`~softening.datasets.checks.MIN_INTERATOMIC_DISTANCE`, and all images must hold the same atoms
in the same order in the same cell (VASP's NEB never changes the cell). A refusal is an
:class:`~softening.errors.InputError` with a one-line message naming the folder and the image.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pymatgen.core import Structure

from softening.datasets.checks import MIN_INTERATOMIC_DISTANCE, check_structure
from softening.datasets.formats.files import detail
from softening.datasets.formats.vasp_folder import (
    first_file,
    is_full_vasprun,
    read_cell_outcar,
    read_stripped_vasprun,
)
from softening.datasets.formats.vasprun import read_vasprun
from softening.datasets.frames import Frame
from softening.datasets.guards import apply_guard_rails
from softening.errors import InputError, one_line

__all__ = ["HOP_THRESHOLD", "LATTICE_TOLERANCE", "NEBData", "read_neb_folder"]

#: Largest difference between the lattice vectors of two images, Å: VASP keeps the cell of an NEB
#: fixed, so anything beyond rounding in the written files means images of different runs.
LATTICE_TOLERANCE: float = 1e-3

#: An atom moving less than this between the end points (Å) is not a migrating ion.
HOP_THRESHOLD: float = 0.1

# VASP names the image folders with two digits (00 .. 99), whatever IMAGES is.
_IMAGE_NAME = re.compile(r"\d{2}")


@dataclass
class NEBData:
    """The images of a finished VASP NEB, with their DFT total energies.

    Attributes
    ----------
    name
        The folder's name (the last part of the path).
    images
        ``00`` .. ``NN`` in order: ``frame_id`` = the sub-folder's name, ``material_id`` =
        :attr:`name`, ``energy`` = total energy in eV (always set, finite), ``structure`` = the
        image's final structure, ``source`` = the file read (``vasprun.xml[.gz]`` or ``OUTCAR``),
        ``flags`` = what the guard rails flagged in a full vasprun's settings (e.g.
        ``"low_precision: ..."``), ``metadata`` as the readers set it (``metadata["vasp"]`` for a
        full vasprun, and ``"ionic_step"``, the index of the step kept).
    source
        The path given.
    ion
        The element of the atom that moves most between ``00`` and ``NN`` (minimum-image
        displacement), or ``None`` when no atom moves more than :data:`HOP_THRESHOLD` (0.1 Å).
    hop_distance
        That atom's minimum-image displacement between ``00`` and ``NN``, Å (when :attr:`ion` is
        ``None``, the largest displacement of any atom, below 0.1 Å).
    """

    name: str
    images: list[Frame]
    source: str
    ion: str | None
    hop_distance: float


def read_neb_folder(path: str | Path) -> NEBData:
    """Read a finished VASP NEB from its folder of ``00`` .. ``NN`` sub-folders.

    Parameters
    ----------
    path
        The folder holding the numbered sub-folders (see the module docstring for what each holds).

    Returns
    -------
    NEBData
        At least 3 images (two end points and one image), each with a finite total energy (eV)
        and a checked final structure; the migrating ion and its hop distance.

    Raises
    ------
    InputError
        One line naming the folder (and the image, where one is at fault): not a folder; fewer
        than 3 numbered sub-folders; a gap in the numbering; an image with no vasprun.xml(.gz) or
        OUTCAR, or with a truncated or unreadable one; an image refused by the guard rails (e.g.
        its last ionic step has an unconverged SCF); a missing or non-finite energy; atoms closer
        than 0.5 Å; images with different atom counts, species order or cells.
    """
    source = str(path)
    root = Path(path).expanduser()
    if not root.exists():
        raise InputError(f"no such NEB folder: {source!r}")
    if not root.is_dir():
        raise InputError(
            f"NEB {source!r} is not a folder (expected the folder holding 00, 01, ..., NN)"
        )
    name = root.name or root.resolve().name
    folders = _image_folders(root, source)
    images = []
    for position, folder in enumerate(folders):
        end_point = position in (0, len(folders) - 1)
        with _naming_image(source, folder.name):
            frame = _read_image(folder, end_point)
            images.append(_checked_image(frame, folder.name, name))
    _check_same_system(images, source)
    ion, hop_distance = _migrating_ion(images[0].structure, images[-1].structure)
    return NEBData(name=name, images=images, source=source, ion=ion, hop_distance=hop_distance)


# ----------------------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------------------


def _image_error(source: str, image: str, what: str) -> InputError:
    return InputError(f"NEB {source!r} image {image}: {what}")


@contextmanager
def _naming_image(source: str, image: str) -> Iterator[None]:
    """Prefix the folder and image to any InputError (the readers name only the file)."""
    try:
        yield
    except InputError as exc:
        raise _image_error(source, image, one_line(exc)) from exc


# ----------------------------------------------------------------------------------------------------
# The numbered sub-folders
# ----------------------------------------------------------------------------------------------------


def _image_folders(root: Path, source: str) -> list[Path]:
    """``00`` .. ``NN`` in order, refusing fewer than 3 or a gap in the numbering."""
    numbered = {
        int(p.name): p for p in root.iterdir() if p.is_dir() and _IMAGE_NAME.fullmatch(p.name)
    }
    found = ", ".join(f"{i:02d}" for i in sorted(numbered)) or "none"
    if len(numbered) < 3:
        hint = ""
        if not numbered and any((root / n).is_file() for n in ("OUTCAR", "vasprun.xml", "INCAR")):
            hint = "; it looks like a single calculation, not the top folder of an NEB"
        raise InputError(
            f"NEB {source!r} has {len(numbered)} numbered sub-folders ({found}); an NEB needs at "
            f"least 3: the end points 00 and NN and the images between them{hint}"
        )
    missing = next(i for i in range(max(numbered) + 2) if i not in numbered)
    if missing < max(numbered):
        raise InputError(
            f"NEB {source!r}: image {missing:02d} is missing (numbered sub-folders: {found})"
        )
    return [numbered[i] for i in sorted(numbered)]


# ----------------------------------------------------------------------------------------------------
# One image
# ----------------------------------------------------------------------------------------------------


def _read_image(folder: Path, end_point: bool) -> Frame:
    """The image's final frame: from vasprun.xml(.gz) when there is one, else OUTCAR + CONTCAR."""
    vasprun = first_file(folder, ("vasprun.xml", "vasprun.xml.gz"))
    if vasprun is not None:
        return _read_image_vasprun(vasprun, folder)
    outcar = first_file(folder, ("OUTCAR", "OUTCAR.gz"))
    if outcar is None:
        # The usual cause for the end points: VASP's NEB does not compute them.
        hint = (
            " (VASP computes no energy for the end points in an NEB: copy in the OUTCAR or "
            "vasprun.xml of their own static or relaxation run)"
            if end_point
            else " (the NEB did not run, or its results were not copied in)"
        )
        raise InputError(f"no vasprun.xml(.gz) or OUTCAR(.gz) in {str(folder)!r}{hint}")
    # mixing's reader refuses an OUTCAR without its final timing block (a run killed mid-step)
    # and one whose atom count differs from CONTCAR's.
    return read_cell_outcar(outcar, folder)


def _read_image_vasprun(path: Path, folder: Path) -> Frame:
    """The last ionic step of a full vasprun (after the guard rails), else of a stripped one."""
    if not is_full_vasprun(path):
        return read_stripped_vasprun(path, folder, None)
    try:
        steps = read_vasprun(path)
    except InputError as exc:
        if exc.__cause__ is None:
            raise  # a refusal of what was read (e.g. a non-finite energy), not a parse failure
        # As mixing does: well-formed XML that pymatgen cannot interpret is read as a stripped
        # file; a truncated one is refused there with both parsers' reasons.
        return read_stripped_vasprun(path, folder, exc)
    # Raises "refused '<file>': ..." when no step is usable; the caller adds the image's name.
    kept, _ = apply_guard_rails(steps)
    last = steps[-1]
    if not kept or kept[-1] is not last:
        # The image is the last step: an earlier, converged step is a different structure, so
        # dropping only the last one (as evaluate does for a trajectory) would mislabel the image.
        raise InputError(
            f"{str(path)!r}: its last ionic step, the image's final energy, {_dropped_why(last)}"
        )
    _check_contcar(folder, last, path)
    return dataclasses.replace(
        last,
        source=str(path),
        metadata={**last.metadata, "ionic_step": len(steps) - 1},
    )


def _dropped_why(step: Frame) -> str:
    """Why the guard rails dropped a step, from the metadata read_vasprun recorded."""
    meta = step.metadata
    if meta.get("mlff"):
        return "was predicted by VASP's machine-learned force field, not computed with DFT"
    if meta.get("scf_converged") is None:
        return "has no SCF steps, so nothing shows its energy is converged"
    last_de = meta.get("scf_last_de")
    change = f", last change {last_de:.2g} eV" if last_de is not None else ""
    return (
        f"has an unconverged SCF ({meta.get('electronic_steps')} steps = NELM="
        f"{meta.get('nelm')}{change} > EDIFF={meta.get('ediff')} eV)"
    )


def _check_contcar(folder: Path, frame: Frame, vasprun: Path) -> None:
    """A CONTCAR beside a vasprun must hold as many atoms: else the files are of different runs.

    Only the count is compared: CONTCAR holds the positions after the last ionic update, which
    differ from the last step's when a run stops at NSW.
    """
    from pymatgen.io.vasp import Poscar

    contcar = folder / "CONTCAR"
    # VASP leaves an empty CONTCAR when it stops before the first ionic step.
    if not contcar.is_file() or not contcar.stat().st_size:
        return
    try:
        poscar = Poscar.from_file(str(contcar), check_for_potcar=False, read_velocities=False)
    except Exception as exc:
        raise InputError(f"cannot read {str(contcar)!r} ({detail(exc)})") from exc
    n_contcar, n_vasprun = len(poscar.structure), len(frame.structure)
    if n_contcar != n_vasprun:
        raise InputError(
            f"{str(contcar)!r} has {n_contcar} atoms but {vasprun.name} {n_vasprun}: "
            "files of different runs?"
        )


def _checked_image(frame: Frame, image: str, material_id: str) -> Frame:
    """The image as NEBData holds it, refused without a finite energy or with close atoms."""
    if frame.energy is None:
        raise InputError(f"{frame.source}: no energy")
    if not math.isfinite(frame.energy):
        raise InputError(f"{frame.source}: non-finite energy {frame.energy}")
    # The readers refuse only coincident atoms (0.1 Å, as MD frames may come close); an NEB image
    # this squeezed is a broken file or interpolation, not a point of a barrier.
    check_structure(frame.structure, str(frame.source), min_distance=MIN_INTERATOMIC_DISTANCE)
    return dataclasses.replace(frame, frame_id=image, material_id=material_id)


# ----------------------------------------------------------------------------------------------------
# The images together
# ----------------------------------------------------------------------------------------------------


def _check_same_system(images: list[Frame], source: str) -> None:
    """Same atom count, species order and cell in every image as in ``00``."""
    first = images[0]
    first_species = [site.species_string for site in first.structure]
    first_cell = np.asarray(first.structure.lattice.matrix)
    for image in images[1:]:
        n, n_first = len(image.structure), len(first.structure)
        if n != n_first:
            raise InputError(
                f"NEB {source!r}: image {image.frame_id} has {n} atoms, image "
                f"{first.frame_id} has {n_first}; all images must hold the same atoms"
            )
        species = [site.species_string for site in image.structure]
        if species != first_species:
            k = next(
                i for i, (a, b) in enumerate(zip(species, first_species, strict=True)) if a != b
            )
            raise InputError(
                f"NEB {source!r}: image {image.frame_id} has {species[k]} as atom {k}, image "
                f"{first.frame_id} {first_species[k]}; all images must list the same species in "
                "the same order"
            )
        diff = float(np.abs(np.asarray(image.structure.lattice.matrix) - first_cell).max())
        if diff > LATTICE_TOLERANCE:
            raise InputError(
                f"NEB {source!r}: image {image.frame_id} has a different cell from image "
                f"{first.frame_id} (lattice vectors differ by up to {diff:.4g} Å > "
                f"{LATTICE_TOLERANCE:g} Å); VASP's NEB keeps the cell fixed, so these are not "
                "images of one NEB"
            )


def _migrating_ion(start: Structure, end: Structure) -> tuple[str | None, float]:
    """The element and minimum-image displacement (Å) of the atom moving most from start to end."""
    delta = np.asarray(end.frac_coords) - np.asarray(start.frac_coords)
    delta -= np.round(delta)
    # Rounding fractional differences is the minimum image only in orthogonal cells: also try
    # the neighbouring images, which covers any cell not too skewed for VASP.
    shifts = np.array(list(itertools.product((-1, 0, 1), repeat=3)), dtype=float)
    cart = (delta[:, None, :] + shifts[None, :, :]) @ np.asarray(start.lattice.matrix)
    distances = np.linalg.norm(cart, axis=2).min(axis=1)
    k = int(np.argmax(distances))
    hop = float(distances[k])
    return (start[k].species_string if hop > HOP_THRESHOLD else None), hop
