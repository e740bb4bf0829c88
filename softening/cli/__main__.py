"""``python -m softening.cli``: the ``softening`` command."""

from softening.cli import main

if __name__ == "__main__":  # pragma: no cover - the command's entry point
    main()
