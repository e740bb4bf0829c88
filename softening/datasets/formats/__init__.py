"""One module per dataset format, each holding both the whole-file read and the streamed read.

- :mod:`~softening.datasets.formats.extxyz`: extended XYZ;
- :mod:`~softening.datasets.formats.wbm`: the WBM high-energy-states JSON layout;
- :mod:`~softening.datasets.formats.mlearn`: the mlearn JSON layout;
- :mod:`~softening.datasets.formats.vasprun`: ``vasprun.xml`` (read whole: one run is one
  calculation's size);
- :mod:`~softening.datasets.formats.structure`: a plain structure file (CIF, POSCAR, ...);

and what they share: :mod:`~softening.datasets.formats.files` (opening files, the one-line errors
that name the file) and :mod:`~softening.datasets.formats.building` (labels to checked frames:
units, Voigt orders, stress signs). Format detection and the entry points (``read_frames``,
``iter_frames``...) are :mod:`softening.datasets.readers`; the VASP run metadata the guard rails
judge is :mod:`softening.datasets.vasp_metadata`.
"""
