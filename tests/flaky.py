"""An EMT calculator that fails on demand and records each frame it computes (for resume tests)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from ase.calculators.emt import EMT


class FlakyEMT(EMT):
    """EMT that logs a hash of every structure it computes to ``log_file``, and raises on the
    ``n``-th distinct structure while ``fail_file`` (holding ``n``) exists."""

    def __init__(self, log_file: str, fail_file: str, **kwargs):
        super().__init__(**kwargs)
        self.log_file = Path(log_file)
        self.fail_file = Path(fail_file)

    def calculate(self, atoms=None, properties=("energy",), system_changes=None):
        digest = hashlib.sha1(atoms.get_positions().round(6).tobytes()).hexdigest()
        seen = self.log_file.read_text().split() if self.log_file.exists() else []
        if digest not in seen:
            seen.append(digest)
            self.log_file.write_text("\n".join(seen))
        if self.fail_file.exists() and seen.index(digest) + 1 == int(self.fail_file.read_text()):
            raise RuntimeError("injected reference failure")
        super().calculate(atoms, properties, system_changes or ["positions"])
