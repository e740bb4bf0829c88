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


def one_line(
    exc: BaseException, lines: str | int = "all", *, typed: bool = False, limit: int | None = None
) -> str:
    """One line of text about ``exc``, for an error message or a record.

    Parameters
    ----------
    exc
        The exception.
    lines
        Which lines of its message (surrounding blank space removed, blank lines skipped):
        ``"first"``, the first, as it is (a message written for users leads with its point);
        ``"last"``, the last, as it is (a library's long message ends with its gist); an integer
        ``n``, the first ``n``, joined with spaces; ``"all"`` (default), the whole message with
        every run of white space made one space.
    typed
        Lead with the exception's type: ``"ValueError: ..."``.
    limit
        At most this many characters; a longer text is cut and ends with ``...``.

    Returns
    -------
    str
        The text; the exception's type name when its message is empty.
    """
    name = type(exc).__name__
    message = str(exc).strip()
    if lines == "all":
        text = " ".join(message.split())
    else:
        kept = [line for line in message.splitlines() if line.strip()]
        if lines == "first":
            kept = kept[:1]
        elif lines == "last":
            kept = kept[-1:]
        elif isinstance(lines, int) and lines >= 1:
            kept = kept[:lines]
        else:
            raise ValueError(f"lines must be 'first', 'last', 'all' or a count >= 1, not {lines!r}")
        text = " ".join(kept)
    text = (f"{name}: {text}" if typed else text) if text else name
    if limit is not None and len(text) > limit:
        text = text[: max(limit - 3, 0)] + "..."
    return text
