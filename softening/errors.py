"""User-facing errors.

Anything raised as a :class:`SofteningError` is a problem with the user's input or environment; the CLI
prints its message on one line and exits non-zero without a traceback. Everything else is a bug.
"""

from __future__ import annotations


class SofteningError(Exception):
    """A problem the user can fix (bad input file, unknown model, missing executable...)."""


class InputError(SofteningError, ValueError):
    """Bad user input: an unreadable structure or dataset file, out-of-range settings."""


class ModelError(SofteningError):
    """A model that cannot be loaded, or that cannot handle the requested elements."""


class CalculationError(SofteningError):
    """A calculation that failed in a way the user should know about (e.g. an MD that blew up)."""
