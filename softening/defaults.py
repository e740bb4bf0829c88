"""The defaults of a softening study, written once: the paper's protocol (Deng et al. 2025).

The makers (:class:`~softening.makers.md.MDSamplingMaker`,
:class:`~softening.makers.select.FrameSelectionMaker`, the reference and correction makers), the
options of a study (:class:`~softening.workflows.study.StudyOptions`), the settings and the
command line all take their defaults from here, so that ``softening run``, ``submit`` and Python
users study the same thing by default. A leaf module of constants (it imports nothing) rather than
the makers themselves: the command line reads these values when it starts, and importing the makers
there would load jobflow's and pymatgen's job machinery for ``--help``.
"""

from __future__ import annotations

#: uMLIP that drives the MD (the paper: pretrained CHGNet).
MD_MODEL = "chgnet"
#: Reference calculator: embedded GPAW (the paper: VASP, ``--reference vasp``).
REFERENCE = "gpaw"
#: MD temperature, K.
TEMPERATURE = 1000.0
#: MD time step, fs.
TIMESTEP = 2.0
#: MD steps: 20 ps at 2 fs.
STEPS = 10_000
#: MD steps between stored frames.
STRIDE = 10
#: Frames selected (and labelled) per material.
FRAMES = 10
#: Of them, frames strained by +3 %, and as many by -3 % (the paper: 4 of 10 strained).
STRAINED = 2
#: How frames are picked from the MD: one per potential-energy bin (the paper).
FRAME_SELECTION = "stratified-energy"
#: GPAW plane-wave cutoff, eV.
ECUT = 500.0
#: GPAW k-point spacing, 1/Å (2π included).
KSPACING = 0.25
#: Seed of MD, frame choice and bootstrap.
SEED = 0
#: Frames per material a correction is fitted on (the paper: one, for the linear scale).
TRAIN_FRAMES = 1
#: Largest supercell of the orderings of ``--property mixing``, in primitive cells.
MAX_CELLS = 4
