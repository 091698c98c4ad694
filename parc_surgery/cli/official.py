"""`parc-surgery import-official FILE` and `parc-surgery export-official CHECKPOINT`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from parc_surgery.cli import app
from parc_surgery.cli.common import EXIT_CODE_HELP, Output, handle_errors, set_threads
from parc_surgery.cli.options import (
    ArchOpt,
    CheckpointArg,
    DataFormat,
    ForceOpt,
    FormatOpt,
    OfficialArch,
    OutputFileOpt,
    QuietOpt,
    ThreadsOpt,
)
from parc_surgery.errors import UsageError
from parc_surgery.report import dumps

__all__ = ["export_official_command", "import_official_command"]


@app.command(name="import-official", epilog=EXIT_CODE_HELP)
@handle_errors
def import_official_command(
    file: Annotated[
        Path,
        typer.Argument(
            help="Official ParC-Net weights (.pt / .pth state_dict).", show_default=False
        ),
    ],
    output: OutputFileOpt,
    arch: ArchOpt = None,
    force: ForceOpt = False,
    ema: Annotated[
        bool,
        typer.Option(
            "--ema/--no-ema",
            help="From a full training checkpoint (model_state_dict + ema_state_dict), "
            "take the EMA weights (the published ones) or, with --no-ema, the raw ones.",
        ),
    ] = True,
    threads: ThreadsOpt = None,
    fmt: FormatOpt = DataFormat.table,
    quiet: QuietOpt = False,
) -> None:
    """Load official ParC-Net weights into the converted timm model; write a checkpoint.

    Keys are mapped strictly: any unexpected, missing or misshapen key fails (exit 6).
    parcnet-s-ssd / parcnet-s-deeplabv3 import the encoder of the official SSD /
    DeepLabV3 checkpoint (its encoder.* keys) for a features_only backbone; their heads
    are the official code's and are not imported.
    """
    from parc_surgery.official import import_official

    set_threads(threads)
    if arch is None:
        raise UsageError(
            "import-official needs --arch",
            hint=f"one of {', '.join(a.value for a in OfficialArch)}",
        )
    ui = Output(quiet=quiet, fmt=DataFormat(fmt).value)
    with ui.steps(f"importing {file}") as on_step:
        on_step("building the converted model")
        summary = import_official(file, arch.value, output, force=force, ema=ema)
    _report(ui, summary, f"imported {file} as {summary['arch']}")
    if ui.fmt != "json":
        taken = _WEIGHTS.get(summary["weights"], summary["weights"])
        if ema and summary["weights"] == "model_state_dict":
            taken += "; the file has no ema_state_dict"
        ui.info(f"took the {taken}")
        if "official_head" in summary:
            heads = ", ".join(f"{k}.* ({n} tensors)" for k, n in summary["official_head"].items())
            ui.info(
                f"not imported: the official head ({heads or 'none in the file'}); "
                f"{', '.join(summary['not_imported'])} keep their initialisation (the official "
                "encoder has none): load the checkpoint with features_only=True"
            )


@app.command(name="export-official", epilog=EXIT_CODE_HELP)
@handle_errors
def export_official_command(
    checkpoint: CheckpointArg,
    output: OutputFileOpt,
    arch: ArchOpt = None,
    force: ForceOpt = False,
    fmt: FormatOpt = DataFormat.table,
    quiet: QuietOpt = False,
) -> None:
    """Write a converted published network as the official code's state_dict (.pt).

    --arch defaults to the network the checkpoint's recipe converts.
    """
    from parc_surgery.official import export_official

    ui = Output(quiet=quiet, fmt=DataFormat(fmt).value)
    with ui.steps(f"exporting {checkpoint}") as on_step:
        on_step("checking it is the published network")
        summary = export_official(
            checkpoint, output, arch=arch.value if arch else None, force=force
        )
    _report(ui, summary, f"exported {checkpoint} as the official {summary['arch']}")


_WEIGHTS = {
    "ema_state_dict": "EMA weights (ema_state_dict)",
    "model_state_dict": "raw weights (model_state_dict)",
    "state_dict file": "file's state_dict (no EMA copy in it)",
}


def _report(ui: Output, summary: dict, what: str) -> None:
    if ui.fmt == "json":
        ui.json(dumps(summary))
        return
    ui.info(f"{what} ({summary['model']} --rules {summary['rules']}, {summary['params']:,} params)")
    ui.info(f"wrote {summary['output']} (sha256 {summary['sha256'][:16]}...)")
