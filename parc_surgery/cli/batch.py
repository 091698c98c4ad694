"""`parc-surgery batch JOBS.yaml`: convert a list of models, report every job."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from parc_surgery.cli import app
from parc_surgery.cli.common import EXIT_CODE_HELP, Output, handle_errors
from parc_surgery.cli.options import DataFormat, ForceOpt, FormatOpt, QuietOpt
from parc_surgery.errors import BatchError
from parc_surgery.report import dumps, human_count


@app.command(name="batch", epilog=EXIT_CODE_HELP)
@handle_errors
def batch_command(
    jobs: Annotated[Path, typer.Argument(help="YAML file with a `jobs:` list.")],
    output_dir: Annotated[
        Path | None,
        typer.Option("--output-dir", help="Folder for outputs (default: beside the jobs file)."),
    ] = None,
    force: ForceOpt = False,
    fmt: FormatOpt = DataFormat.table,
    quiet: QuietOpt = False,
) -> None:
    """Run conversion jobs in order; a failed job does not stop the others (exit 8)."""
    from parc_surgery.batch import run_batch

    fmt = DataFormat(fmt).value
    ui = Output(quiet=quiet, fmt=fmt)
    if output_dir is not None:
        output_dir.mkdir(parents=True, exist_ok=True)
    results = run_batch(
        jobs,
        output_dir=output_dir,
        force=force,
        on_job=lambda number, name: ui.info(f"[{number + 1}] converting {name}"),
    )
    failed = [r for r in results if not r.ok]
    if fmt == "json":
        ui.json(dumps({"jobs": [r.to_dict() for r in results], "failed": len(failed)}))
    elif not quiet:
        ui.out.print(_summary(results))
    for result in failed:
        ui.err.print(
            f"error: job {result.name!r} failed (exit {result.exit_code}): {result.error}",
            highlight=False,
            soft_wrap=True,
            markup=False,
        )
    if failed:
        raise BatchError(f"{len(failed)} of {len(results)} jobs failed")


def _summary(results) -> Table:
    table = Table(title="batch summary", title_justify="left")
    for column in ("job", "model", "status", "swaps", "params", "MACs", "output", "seconds"):
        table.add_column(column)
    for r in results:
        table.add_row(
            r.name,
            r.model,
            "ok" if r.ok else f"FAILED ({r.exit_code})",
            str(r.swaps),
            f"{human_count(r.params_before)} -> {human_count(r.params_after)}" if r.ok else "",
            f"{human_count(r.macs_before)} -> {human_count(r.macs_after)}" if r.ok else "",
            r.output or "",
            f"{r.seconds:.1f}",
        )
    return table
