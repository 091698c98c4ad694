"""`parc-surgery save-pretrained CHECKPOINT DIR`: a checkpoint as a hub folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from parc_surgery.cli import app
from parc_surgery.cli.common import EXIT_CODE_HELP, Output, handle_errors
from parc_surgery.cli.options import CheckpointArg, DataFormat, ForceOpt, FormatOpt, QuietOpt
from parc_surgery.report import dumps

__all__ = ["save_pretrained_command"]


@app.command(name="save-pretrained", epilog=EXIT_CODE_HELP)
@handle_errors
def save_pretrained_command(
    checkpoint: CheckpointArg,
    folder: Annotated[
        Path,
        typer.Argument(
            help="Folder to write model.safetensors, config.json and README.md into.",
            show_default=False,
        ),
    ],
    force: ForceOpt = False,
    fmt: FormatOpt = DataFormat.table,
    quiet: QuietOpt = False,
) -> None:
    """Write a checkpoint in the Hugging Face hub layout timm reads.

    timm.create_model("local-dir:DIR", pretrained=True) loads it after `import
    parc_surgery`, as does parc_surgery.load(DIR); push it with `hf upload USER/NAME DIR`.
    """
    from parc_surgery.hub import save_pretrained

    ui = Output(quiet=quiet, fmt=DataFormat(fmt).value)
    with ui.steps(f"saving {checkpoint}") as on_step:
        on_step("checking the checkpoint")
        summary = save_pretrained(checkpoint, folder, force=force)
    if ui.fmt == "json":
        ui.json(dumps(summary))
        return
    ui.info(
        f"wrote {', '.join(summary['files'])} into {summary['output']} "
        f"({summary['model']}, {summary['params']:,} params)"
    )
