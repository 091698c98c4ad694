"""Command-line entry points: `parc-convert` and `parc-surgery`.

Argument parsing and exit codes only; the work lives in the library modules.
"""

from __future__ import annotations

from typing import Annotated

import typer

from parc_surgery.cli.common import EXIT_CODE_HELP
from parc_surgery.cli.convert import convert_command

__all__ = ["app", "convert_app", "convert_main", "main"]

_CONTEXT = {"help_option_names": ["-h", "--help"]}

convert_app = typer.Typer(
    add_completion=False,
    context_settings=_CONTEXT,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    epilog=EXIT_CODE_HELP,
)
convert_app.command(name="parc-convert", epilog=EXIT_CODE_HELP)(convert_command)

app = typer.Typer(
    name="parc-surgery",
    help="Model surgery for timm vision models: swap local spatial mixing for ParC.",
    add_completion=True,
    no_args_is_help=True,
    context_settings=_CONTEXT,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    epilog=EXIT_CODE_HELP,
)
app.command(name="convert", epilog=EXIT_CODE_HELP)(convert_command)


def _print_version(value: bool) -> None:
    if value:
        from parc_surgery import __version__

        typer.echo(f"parc-surgery {__version__}")
        raise typer.Exit()


VersionOpt = Annotated[
    bool,
    typer.Option(
        "--version",
        "-V",
        callback=_print_version,
        is_eager=True,
        help="Print the version and exit.",
    ),
]


@app.callback()
def _main_options(version: VersionOpt = False) -> None:
    """Model surgery for timm vision models: swap local spatial mixing for ParC."""


# Importing these modules registers their commands on `app` (they import it from here).
from parc_surgery.cli import analysis as _analysis  # noqa: E402, F401  (erf, bench, export)
from parc_surgery.cli import batch as _batch  # noqa: E402, F401
from parc_surgery.cli import cam as _cam  # noqa: E402, F401
from parc_surgery.cli import hub as _hub  # noqa: E402, F401  (save-pretrained)
from parc_surgery.cli import inspect as _inspect  # noqa: E402, F401  (inspect, rules)
from parc_surgery.cli import official as _official  # noqa: E402, F401  (import/export-official)
from parc_surgery.cli import train as _train  # noqa: E402, F401  (eval, finetune)


def main() -> None:
    """Entry point of `parc-surgery`."""
    app()


def convert_main() -> None:
    """Entry point of `parc-convert` (the same command as `parc-surgery convert`)."""
    convert_app()
