"""softening: measure and correct the systematic softening of universal ML interatomic potentials."""

from __future__ import annotations

__version__ = "0.1.0"
