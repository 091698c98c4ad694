"""`parc-surgery batch JOBS.yaml`: convert a list of models, report every job."""

from __future__ import annotations

import contextlib
import signal
import threading
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from parc_surgery.cli import app
from parc_surgery.cli.common import EXIT_CODE_HELP, Output, handle_errors, set_threads
from parc_surgery.cli.options import (
    AllowOutsideOpt,
    DataFormat,
    ForceOpt,
    FormatOpt,
    QuietOpt,
    ThreadsOpt,
)
from parc_surgery.errors import BatchError, printable
from parc_surgery.files import os_error
from parc_surgery.report import dumps, human_count


@app.command(name="batch", epilog=EXIT_CODE_HELP)
@handle_errors
def batch_command(
    jobs: Annotated[Path, typer.Argument(help="YAML file with a `jobs:` list.")],
    output_dir: Annotated[
        Path | None,
        typer.Option(
            "--output-dir",
            help="Folder for outputs (default: beside the jobs file); jobs cannot write "
            "outside it.",
        ),
    ] = None,
    allow_outside: AllowOutsideOpt = False,
    force: ForceOpt = False,
    threads: ThreadsOpt = None,
    fmt: FormatOpt = DataFormat.table,
    quiet: QuietOpt = False,
) -> None:
    """Run conversion jobs in order; a failed job does not stop the others (exit 8).

    Ctrl-C (exit 130) or SIGTERM (exit 143) stops after printing the summary of the jobs
    done so far (with --format json, a complete JSON report with "interrupted": true).
    """
    from parc_surgery.batch import BatchInterrupted, run_batch

    set_threads(threads)
    fmt = DataFormat(fmt).value
    ui = Output(quiet=quiet, fmt=fmt)
    if output_dir is not None:
        try:
            output_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise os_error(output_dir, err, doing="create") from None
    try:
        with _sigterm_stops():
            results = run_batch(
                jobs,
                output_dir=output_dir,
                force=force,
                allow_outside=allow_outside,
                on_job=lambda number, name: ui.info(
                    f"[{number + 1}] converting {escape(printable(name))}"
                ),
            )
    except BatchInterrupted as stop:
        _report(ui, fmt, stop.results, interrupted=True, skipped=stop.skipped)
        finished = sum(r.exit_code not in (130, 143) for r in stop.results)
        ui.err.print(
            f"{'stopped by SIGTERM' if stop.exit_code == 143 else 'interrupted'}: "
            f"{finished} jobs finished, {len(stop.results) - finished} stopped, "
            f"{stop.skipped} not started; no partial file was left",
            highlight=False,
            markup=False,
        )
        raise typer.Exit(stop.exit_code) from None
    failed = _report(ui, fmt, results, interrupted=False, skipped=0)
    if failed:
        raise BatchError(f"{len(failed)} of {len(results)} jobs failed")


@contextlib.contextmanager
def _sigterm_stops():
    """SIGTERM stops the batch as Ctrl-C does (summary, complete JSON), exit 143."""
    from parc_surgery.batch import BatchTerminated

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise BatchTerminated

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _report(ui: Output, fmt: str, results, *, interrupted: bool, skipped: int) -> list:
    """The summary (table or JSON) on stdout, one error line per failed job on stderr."""
    failed = [r for r in results if not r.ok]
    if fmt == "json":
        report = {
            "jobs": [r.to_dict() for r in results],
            "failed": len(failed),
            "interrupted": interrupted,
            "skipped": skipped,
        }
        ui.json(dumps(report))
    elif not ui.quiet:
        ui.out.print(_summary(results))
    for result in failed:
        ui.err.print(
            f"error: job {result.name!r} failed (exit {result.exit_code}): "
            f"{printable(result.error, keep=chr(10))}",
            highlight=False,
            soft_wrap=True,
            markup=False,
        )
    return failed


def _summary(results) -> Table:
    table = Table(title="batch summary", title_justify="left")
    for column in ("job", "model", "status", "swaps", "params", "MACs", "output", "seconds"):
        table.add_column(column)
    for r in results:
        table.add_row(  # Text: names are shown as written, never as rich markup
            Text(printable(r.name)),
            Text(printable(r.model)),
            "ok" if r.ok else f"FAILED ({r.exit_code})",
            str(r.swaps),
            f"{human_count(r.params_before)} -> {human_count(r.params_after)}" if r.ok else "",
            f"{human_count(r.macs_before)} -> {human_count(r.macs_after)}" if r.ok else "",
            Text(printable(r.output or "")),
            f"{r.seconds:.1f}",
        )
    return table
