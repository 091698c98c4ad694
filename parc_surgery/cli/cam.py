"""`parc-surgery cam`: Grad-CAM of a checkpoint's original and converted model side by side.

Argument parsing and exit codes only; the work lives in parc_surgery.analysis (cam,
cam_plot, images, pair). Importing this module registers the command on
`parc_surgery.cli.app`; `checkpoint_pair_for` is shared with `erf CHECKPOINT`.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from parc_surgery.cli import app
from parc_surgery.cli.common import EXIT_CODE_HELP, Output, handle_errors, parse_size, set_threads
from parc_surgery.cli.options import (
    CheckpointArg,
    CheckpointSizeOpt,
    DataFormat,
    ForceOpt,
    FormatOpt,
    OriginalWeightsOpt,
    QuietOpt,
    RandomOriginalOpt,
    ThreadsOpt,
)

__all__ = ["CamMethod", "cam_command", "checkpoint_pair_for"]


class CamMethod(str, Enum):
    """The class activation map methods `cam` offers (torchcam's implementations)."""

    gradcam = "gradcam"
    gradcampp = "gradcam++"
    layercam = "layercam"


def checkpoint_pair_for(
    ui: Output, checkpoint: Path, *, original_weights: Path | None, random_original: bool
):
    """checkpoint_pair() with a status line, a one-line summary and its warnings on stderr."""
    from parc_surgery.analysis.pair import checkpoint_pair

    with ui.steps(f"loading {checkpoint.name}") as on_step:
        on_step("load")
        pair = checkpoint_pair(
            checkpoint, original_weights=original_weights, random_original=random_original
        )
    ui.info(
        f"{checkpoint}: {pair.plan.model}, {len(pair.plan.swaps)} swaps in stages "
        f"{pair.stages_label}; original weights: {pair.original_weights}"
    )
    for warning in pair.warnings:
        ui.warn(warning)
    return pair


@app.command(name="cam", epilog=EXIT_CODE_HELP)
@handle_errors
def cam_command(
    checkpoint: CheckpointArg,
    images: Annotated[
        list[Path], typer.Argument(help="Image files (PNG, JPEG, ...).", show_default=False)
    ],
    original_weights: OriginalWeightsOpt = None,
    random_original: RandomOriginalOpt = False,
    method: Annotated[
        CamMethod, typer.Option("--method", help="CAM method.", case_sensitive=False)
    ] = CamMethod.gradcam,
    target_layer: Annotated[
        str | None,
        typer.Option(
            "--target-layer",
            help="Module path to explain, the same in both models. Default: the last "
            "stage's output (the deepest entry of timm's feature_info).",
        ),
    ] = None,
    class_index: Annotated[
        int | None,
        typer.Option("--class", help="Class to explain. Default: each model's top-1 class."),
    ] = None,
    class_names: Annotated[
        Path | None,
        typer.Option(
            "--class-names",
            help="Text file of class names, one a line in the model's class order. Default: "
            "the images' class folders when they sit in an ImageFolder split (DIR/<class>/).",
            show_default=False,
        ),
    ] = None,
    input_size: CheckpointSizeOpt = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            "--out",
            help="PNG to write (--out: old spelling). Default: <checkpoint>-cam.png.",
        ),
    ] = None,
    force: ForceOpt = False,
    threads: ThreadsOpt = None,
    fmt: FormatOpt = DataFormat.table,
    quiet: QuietOpt = False,
) -> None:
    """Grad-CAM of CHECKPOINT's converted model and its original on each IMAGE.

    The original is rebuilt from the checkpoint's recipe and given --original-weights
    (or, with --random-original, left at random init). Each image goes through timm's
    evaluation transform at the checkpoint's input size. Writes a PNG with one row per
    image (the picture, each model's map over it, its class and probability) and prints
    per model the smallest share of the image area holding 50% / 90% of the map's mass,
    the map's normalised entropy, and the IoU of the two maps' top-20% regions.
    Needs the 'analysis' extra: pip install 'parc-surgery[analysis]'.
    """
    from parc_surgery.analysis.cam import cam_of_pair, require_extra
    from parc_surgery.analysis.cam_labels import read_class_names
    from parc_surgery.analysis.cam_plot import write_cam_png
    from parc_surgery.analysis.images import check_image_paths
    from parc_surgery.analysis.render import cam_table
    from parc_surgery.checkpoint import check_output
    from parc_surgery.cli.analysis import _emit

    require_extra("parc-surgery cam")
    fmt = DataFormat(fmt).value
    set_threads(threads)
    method = CamMethod(method).value
    ui = Output(quiet=quiet, fmt=fmt)
    target = out if out is not None else Path(f"{checkpoint.stem}-cam.png")
    # Fail on the cheap things before loading any model.
    check_output(target, force=force)
    paths = check_image_paths(images)
    size = parse_size(input_size)
    names = read_class_names(class_names) if class_names is not None else None
    pair = checkpoint_pair_for(
        ui, checkpoint, original_weights=original_weights, random_original=random_original
    )
    with ui.steps(f"{method} on {len(paths)} images") as on_step:
        on_step("maps")
        result, batch, maps = cam_of_pair(
            pair,
            paths,
            method=method,
            target_layer=target_layer,
            class_index=class_index,
            input_size=size,
            class_names=names,
        )
    result["output"] = write_cam_png(result, batch.pixels, maps, target, force=force)
    _emit(ui, fmt, result, cam_table(result))
    ui.info(f"wrote {result['output']}")
