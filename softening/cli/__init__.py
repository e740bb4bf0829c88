"""The ``softening`` command line: thin commands over library functions.

Commands are grouped as users think of them, each a few lines over a function Python users can call
too:

- :mod:`~softening.cli.workflow`: ``run``, ``evaluate``, ``finetune``;
- :mod:`~softening.cli.results`: ``query``, ``build``, ``report``;
- :mod:`~softening.cli.cluster`: ``submit``, ``status``, ``rerun``;
- :mod:`~softening.cli.properties`: ``phonons``, ``surfaces``, ``mixing``, ``barriers``,
  ``properties``;
- :mod:`~softening.cli.doctor`: ``doctor``.

Options are defined once (:mod:`~softening.cli.options`), output helpers and tables in
:mod:`~softening.cli.display` and :mod:`~softening.cli.tables`. Errors are handled in one place
(:class:`_App`): a :class:`SofteningError` prints one line and exits with status 1; anything else
is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from softening.cli import cluster, doctor, properties, results, workflow
from softening.cli.display import console
from softening.errors import SofteningError

__all__ = ["app", "main"]


class _App(typer.Typer):
    """The application: turns a :class:`SofteningError` into one ``error:`` line and status 1."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except SofteningError as exc:
            from rich.markup import escape

            from softening.settings import redact

            # The one exit of user-facing errors: any store URI in a message loses its password;
            # escaped, so that `softening[gpaw]` in a message is not taken for markup.
            console.print(
                f"[bold red]error:[/] {escape(redact(str(exc)))}", highlight=False, soft_wrap=True
            )
            sys.exit(1)


app = _App(
    name="softening",
    help="Measure and correct the softening of universal ML interatomic potentials against DFT.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _print_version(value: bool) -> None:
    if value:
        from softening import __version__

        print(f"softening {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Measure and correct the softening of universal ML interatomic potentials against DFT."""


# Top-level commands (`softening run`), grouped in --help.
for _panel, _commands in (
    ("Workflow", (workflow.run, workflow.evaluate, workflow.finetune, workflow.learning_curve)),
    ("Results", (results.query, results.build, results.report)),
    ("Cluster", (cluster.submit, cluster.status, cluster.rerun)),
    (
        "Properties",
        (
            properties.phonons,
            properties.surfaces,
            properties.mixing,
            properties.barriers,
            properties.properties,
        ),
    ),
    ("Setup", (doctor.doctor,)),
):
    for _command in _commands:
        app.command(rich_help_panel=_panel)(_command)


def main() -> None:  # pragma: no cover - console entry point
    """Run the ``softening`` command."""
    app()
