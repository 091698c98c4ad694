"""`parc-surgery eval` and `parc-surgery finetune`: measure and recover accuracy.

Argument parsing, progress and exit codes only; the work lives in parc_surgery.train.
Under torchrun every rank runs this; only rank 0 prints. Importing this module registers
both commands on `parc_surgery.cli.app`.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated

import typer

from parc_surgery.cli import app
from parc_surgery.cli.common import (
    EXIT_CODE_HELP,
    Output,
    handle_errors,
    parse_model_args,
    parse_size,
    set_threads,
    warn_other_size,
)
from parc_surgery.cli.options import (
    AllowOutsideDataOpt,
    BatchSizeOpt,
    CheckpointSizeOpt,
    DataFormat,
    DataOpt,
    DatasetOpt,
    DeviceOpt,
    DistillGate,
    ForceOpt,
    FormatOpt,
    ModelArgsOpt,
    QuietOpt,
    SeedOpt,
    ThreadsOpt,
    WeightsOpt,
    WorkersOpt,
)
from parc_surgery.errors import Interrupted, ParcSurgeryError, UsageError

__all__ = ["eval_command", "finetune_command", "train_command"]

# Options the training commands (finetune, train) share, declared once.
TrainSplitOpt = Annotated[str, typer.Option("--train-split", help="Split trained on.")]
ValSplitOpt = Annotated[str, typer.Option("--val-split", help="Split evaluated after each epoch.")]
AugmentOpt = Annotated[
    bool,
    typer.Option(
        "--augment/--no-augment",
        help="timm's train augmentation; --no-augment trains on the eval transform.",
    ),
]
ScaleOpt = Annotated[
    float, typer.Option("--scale", help="RandomResizedCrop's smallest area share.")
]
HflipOpt = Annotated[float, typer.Option("--hflip", help="Horizontal flip probability.")]
HoldoutOpt = Annotated[
    float,
    typer.Option(
        "--holdout",
        help="Share of the training images held out to pick the best epoch (never "
        "trained on); 0 keeps the last epoch. --val-split is only reported.",
    ),
]


class _Lines:
    """Progress off a terminal: epoch lines and notes on stderr, no bars."""

    def __init__(self, ui: Output):
        self.ui = ui

    def stage(self, label: str, total: int) -> None:
        return None

    def advance(self, amount: int = 1) -> None:
        return None

    def epoch_done(self, record) -> None:
        from parc_surgery.train.render import epoch_line

        self.ui.info(epoch_line(record))

    def note(self, text: str) -> None:
        if text.startswith("warning: "):
            self.ui.warn(text[len("warning: ") :])
        else:
            self.ui.info(text)


class _Bars(_Lines):
    """Progress on a terminal: one rich bar per stage (an epoch, an evaluation)."""

    def __init__(self, ui: Output, progress):
        super().__init__(ui)
        self.progress = progress
        self.task = None

    def stage(self, label: str, total: int) -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task(label, total=total)

    def advance(self, amount: int = 1) -> None:
        if self.task is not None and amount:
            self.progress.advance(self.task, amount)

    def epoch_done(self, record) -> None:
        from parc_surgery.train.render import epoch_line

        self.progress.console.print(epoch_line(record), highlight=False)


@contextlib.contextmanager
def _progress(ui: Output, is_main: bool):
    """Bars on a terminal, lines elsewhere, silence on ranks other than 0."""
    from parc_surgery.train import TrainProgress

    if not is_main:
        yield TrainProgress()
    elif not ui.interactive:
        yield _Lines(ui)
    else:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=ui.err, transient=True) as progress:
            yield _Bars(ui, progress)


@contextlib.contextmanager
def _distributed(device: str):
    """Join torchrun's process group (if any); errors on ranks > 0 exit without a message."""
    from parc_surgery.train.distributed import init_distributed

    info = init_distributed(device)
    try:
        yield info
    except ParcSurgeryError as err:
        if info.is_main:
            raise
        raise typer.Exit(err.exit_code) from None
    finally:
        info.close()


@contextlib.contextmanager
def _stop_at_once():
    """Ctrl-C during an evaluation: exit 130 with a message, not click's 'Aborted!'."""
    try:
        yield
    except KeyboardInterrupt:
        raise Interrupted("interrupted: stopped at once") from None


CropPctOpt = Annotated[
    float | None,
    typer.Option(
        "--crop-pct",
        help="Eval resize-and-crop share (timm's crop_pct; 1.0: no crop). "
        "Default: the model's pretrained_cfg.",
    ),
]


def _data_config(data, dataset, input_size, batch_size, workers, **extra):
    from parc_surgery.train import DataConfig

    for name, value, least in (("--batch-size", batch_size, 1), ("--workers", workers, 0)):
        if value < least:
            raise UsageError(f"{name} must be at least {least}, got {value}")
    crop = extra.get("crop_pct")
    if crop is not None and not 0 < crop <= 1:
        raise UsageError(f"--crop-pct {crop}: give a share in (0, 1] (1.0 keeps the whole image)")
    return DataConfig(
        root=data,
        dataset=dataset,
        input_size=parse_size(input_size),
        batch_size=batch_size,
        workers=workers,
        **extra,
    )


@app.command(name="eval", epilog=EXIT_CODE_HELP)
@handle_errors
def eval_command(
    model: Annotated[
        str,
        typer.Argument(
            help="A parc-surgery checkpoint (.safetensors) or a timm model name.",
            show_default=False,
        ),
    ],
    data: DataOpt,
    weights: WeightsOpt = None,
    model_arg: ModelArgsOpt = None,
    dataset: DatasetOpt = "",
    allow_outside: AllowOutsideDataOpt = False,
    split: Annotated[str, typer.Option("--split", "--val-split", help="Split evaluated.")] = "val",
    input_size: CheckpointSizeOpt = None,
    batch_size: BatchSizeOpt = 64,
    workers: WorkersOpt = 2,
    limit: Annotated[
        int | None,
        typer.Option("--limit", help="Evaluate N images, spread evenly over the split."),
    ] = None,
    crop_pct: CropPctOpt = None,
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = None,
    fmt: FormatOpt = DataFormat.table,
    quiet: QuietOpt = False,
) -> None:
    """Top-1, top-5, mean cross-entropy and images/s of a model on an image folder.

    MODEL is a parc-surgery checkpoint (it holds its weights) or a timm model name with
    --weights FILE (and --model-arg num_classes=N for a head other than ImageNet's).
    Images are resized, centre-cropped and normalised exactly as timm's validation
    transform does for the model's pretrained_cfg (--crop-pct changes the crop); what was
    applied is printed on stderr and in the JSON's `preprocessing`. Under torchrun each
    rank evaluates a shard; the numbers are all-reduced.
    """
    from parc_surgery.report import dumps
    from parc_surgery.train import evaluate_source
    from parc_surgery.train.render import eval_table

    fmt = DataFormat(fmt).value
    set_threads(threads)
    config = _data_config(
        data,
        dataset,
        input_size,
        batch_size,
        workers,
        val_split=split,
        allow_outside=allow_outside,
        crop_pct=crop_pct,
    )
    with _distributed(device) as info:
        ui = Output(quiet=quiet or not info.is_main, fmt=fmt)
        warn_other_size(ui, model, input_size)
        with _progress(ui, info.is_main) as progress, _stop_at_once():
            report = evaluate_source(
                model,
                config,
                weights=weights,
                model_args=parse_model_args(model_arg),
                limit=limit,
                info=info,
                progress=progress,
            )
        if not info.is_main:
            return
        if fmt == "json":
            ui.json(dumps(report.to_dict()))
        elif not quiet:
            ui.out.print(eval_table(report))


@app.command(name="finetune", epilog=EXIT_CODE_HELP)
@handle_errors
def finetune_command(
    checkpoint: Annotated[
        Path, typer.Argument(help="A converted parc-surgery checkpoint.", show_default=False)
    ],
    data: DataOpt,
    teacher_weights: Annotated[
        Path | None,
        typer.Option(
            "--teacher-weights",
            help="Weights of the original model (the teacher; what was converted).",
        ),
    ] = None,
    no_teacher: Annotated[
        bool,
        typer.Option(
            "--no-teacher", help="Fine-tune on labels only: no distillation, no warm start."
        ),
    ] = False,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="Checkpoint to write. Default: <checkpoint>-ft.safetensors."
        ),
    ] = None,
    force: ForceOpt = False,
    epochs: Annotated[int, typer.Option("--epochs", help="Phase 2 (whole model) epochs.")] = 10,
    warmup_epochs: Annotated[
        int,
        typer.Option(
            "--warm-start-epochs",
            help="Phase 1 (block-wise warm start) epochs; 0 (the default) skips it: on the "
            "digits benchmark it cost accuracy at an equal epoch budget (docs/recovery.md).",
        ),
    ] = 0,
    old_warmup_epochs: Annotated[
        int | None,
        typer.Option(
            "--warmup-epochs",
            hidden=True,
            help="Deprecated spelling of --warm-start-epochs (timm's --warmup-epochs is the "
            "learning-rate warm-up: --lr-warmup-epochs here).",
        ),
    ] = None,
    lr: Annotated[float, typer.Option("--lr", help="Phase 2 peak learning rate (AdamW).")] = 5e-4,
    block_lr: Annotated[
        float, typer.Option("--block-lr", help="Phase 1 learning rate (AdamW).")
    ] = 1e-3,
    min_lr: Annotated[float, typer.Option("--min-lr", help="Cosine schedule's floor.")] = 1e-6,
    lr_warmup_epochs: Annotated[
        float, typer.Option("--lr-warmup-epochs", help="Linear lr warm-up at phase 2's start.")
    ] = 0.5,
    weight_decay: Annotated[
        float, typer.Option("--weight-decay", help="AdamW weight decay.")
    ] = 0.05,
    clip_grad: Annotated[
        float, typer.Option("--clip-grad", help="Max gradient norm; 0 disables clipping.")
    ] = 1.0,
    ema_decay: Annotated[
        float | None,
        typer.Option(
            "--ema-decay", help="Keep an EMA of the weights (timm ModelEmaV3); saved instead."
        ),
    ] = None,
    distill_weight: Annotated[
        float,
        typer.Option("--distill-weight", help="w in (1-w)*CE + w*T^2*KL(teacher || student)."),
    ] = 0.5,
    temperature: Annotated[float, typer.Option("--temperature", help="T of the KL term.")] = 2.0,
    distill_gate: Annotated[
        DistillGate,
        typer.Option(
            "--distill-gate",
            help="Which images the KL term uses: all of them (none), or only those whose "
            "label the teacher ranks first (correct).",
        ),
    ] = DistillGate.none,
    feature_distill_weight: Annotated[
        float,
        typer.Option(
            "--feature-distill-weight",
            help="Phase 2: add this times the swapped blocks' normalised MSE to the "
            "teacher's blocks (0: off).",
        ),
    ] = 0.0,
    parc_lr_scale: Annotated[
        float,
        typer.Option(
            "--parc-lr-scale",
            help="Phase 2: the swapped blocks' lr is --lr times this (best of those measured "
            "on the digits benchmark: docs/recovery.md).",
        ),
    ] = 3.0,
    dataset: DatasetOpt = "",
    allow_outside: AllowOutsideDataOpt = False,
    train_split: TrainSplitOpt = "train",
    val_split: ValSplitOpt = "val",
    input_size: CheckpointSizeOpt = None,
    batch_size: BatchSizeOpt = 64,
    workers: WorkersOpt = 2,
    augment: AugmentOpt = True,
    scale: ScaleOpt = 0.5,
    hflip: HflipOpt = 0.0,
    holdout: HoldoutOpt = 0.1,
    crop_pct: CropPctOpt = None,
    checkpoint_dir: Annotated[
        Path | None,
        typer.Option("--checkpoint-dir", help="Write resumable state here after every epoch."),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from --checkpoint-dir's state.")
    ] = False,
    device: DeviceOpt = "auto",
    amp: Annotated[
        bool, typer.Option("--amp/--no-amp", help="bf16 autocast on CUDA (CPU runs stay fp32).")
    ] = True,
    channels_last: Annotated[
        bool | None,
        typer.Option(
            "--channels-last/--no-channels-last", help="NHWC memory format. Default: on CUDA."
        ),
    ] = None,
    sync_bn: Annotated[
        bool,
        typer.Option("--sync-bn", help="SyncBatchNorm across torchrun ranks (CUDA only)."),
    ] = False,
    seed: SeedOpt = 0,
    threads: ThreadsOpt = None,
    fmt: FormatOpt = DataFormat.table,
    quiet: QuietOpt = False,
) -> None:
    """Recover a converted checkpoint's accuracy: distillation, after an optional warm start.

    Phase 1 (--warm-start-epochs, default 0: off) trains only the swapped blocks, each to
    reproduce its original block's output from the original's input (captured from the
    teacher), MSE. Phase 2 (--epochs) trains the whole model on cross-entropy plus KL divergence
    to the teacher's logits: AdamW, cosine schedule, gradient clipping. Each epoch ends
    with an evaluation; the phase-2 epoch best on the selection holdout (--holdout of
    the training images, never the reported --val-split) is written to --output with a
    `training` record in its recipe; if none beats the warm-started model there, that
    is written instead, with a warning. Under `torchrun --nproc_per_node=N` the same command runs
    DistributedDataParallel (--batch-size is per process). Ctrl-C stops after the current
    step and saves the state to --checkpoint-dir (exit 130).
    """
    from parc_surgery.report import dumps
    from parc_surgery.train import TrainConfig, finetune
    from parc_surgery.train.render import summary_table

    fmt = DataFormat(fmt).value
    set_threads(threads)
    if old_warmup_epochs is not None:
        Output(quiet=quiet).warn(
            "--warmup-epochs is deprecated: it is the block-wise warm start, now spelled "
            "--warm-start-epochs (the learning-rate warm-up is --lr-warmup-epochs)"
        )
        warmup_epochs = old_warmup_epochs
    data_config = _data_config(
        data,
        dataset,
        input_size,
        batch_size,
        workers,
        train_split=train_split,
        val_split=val_split,
        augment=augment,
        scale=scale,
        hflip=hflip,
        allow_outside=allow_outside,
        holdout=holdout,
        crop_pct=crop_pct,
    )
    target = (
        output if output is not None else checkpoint.with_name(f"{checkpoint.stem}-ft.safetensors")
    )
    with _distributed(device) as info:
        config = TrainConfig(
            epochs=epochs,
            warmup_epochs=warmup_epochs,
            lr=lr,
            block_lr=block_lr,
            min_lr=min_lr,
            lr_warmup_epochs=lr_warmup_epochs,
            weight_decay=weight_decay,
            clip_grad=clip_grad or None,
            ema_decay=ema_decay,
            distill_weight=distill_weight,
            temperature=temperature,
            distill_gate=DistillGate(distill_gate).value,
            feature_distill_weight=feature_distill_weight,
            parc_lr_scale=parc_lr_scale,
            seed=seed,
            amp=amp,
            channels_last=info.device.type == "cuda" if channels_last is None else channels_last,
            sync_bn=sync_bn,
        )
        ui = Output(quiet=quiet or not info.is_main, fmt=fmt)
        try:
            with _progress(ui, info.is_main) as progress:
                result = finetune(
                    checkpoint,
                    data_config,
                    config,
                    output=target,
                    teacher_weights=teacher_weights,
                    no_teacher=no_teacher,
                    force=force,
                    checkpoint_dir=checkpoint_dir,
                    resume=resume,
                    info=info,
                    progress=progress,
                )
        except KeyboardInterrupt:
            raise Interrupted(
                "interrupted: stopped at once",
                hint="a state saved in --checkpoint-dir after the last finished epoch is "
                "kept: run the same command with --resume to continue from it",
            ) from None
        if not info.is_main:
            return
        if fmt == "json":
            ui.json(dumps(result.to_dict()))
            return
        if not quiet:
            ui.out.print(summary_table(result))
        ui.info(f"wrote {result.output} (sha256 {result.output_sha256[:16]}...)")


@app.command(name="train", epilog=EXIT_CODE_HELP)
@handle_errors
def train_command(
    model: Annotated[
        str, typer.Argument(help="timm model name, trained from scratch.", show_default=False)
    ],
    data: DataOpt,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            "--out",
            help="Weights file (safetensors state_dict) to write, the file convert's "
            "--weights reads. Default: <model>-trained.safetensors.",
        ),
    ] = None,
    force: ForceOpt = False,
    model_arg: ModelArgsOpt = None,
    weights: WeightsOpt = None,
    epochs: Annotated[int, typer.Option("--epochs", help="Training epochs.", min=1)] = 10,
    lr: Annotated[float, typer.Option("--lr", help="Peak learning rate (AdamW).")] = 2e-3,
    min_lr: Annotated[float, typer.Option("--min-lr", help="Cosine schedule's floor.")] = 1e-6,
    lr_warmup_epochs: Annotated[
        float, typer.Option("--lr-warmup-epochs", help="Linear lr warm-up at the start.")
    ] = 1.0,
    weight_decay: Annotated[
        float, typer.Option("--weight-decay", help="AdamW weight decay.")
    ] = 0.05,
    dataset: DatasetOpt = "",
    train_split: TrainSplitOpt = "train",
    val_split: ValSplitOpt = "val",
    input_size: CheckpointSizeOpt = None,
    batch_size: BatchSizeOpt = 64,
    workers: WorkersOpt = 2,
    augment: AugmentOpt = True,
    scale: ScaleOpt = 0.08,
    hflip: HflipOpt = 0.5,
    holdout: HoldoutOpt = 0.1,
    crop_pct: CropPctOpt = None,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    threads: ThreadsOpt = None,
    fmt: FormatOpt = DataFormat.table,
    quiet: QuietOpt = False,
) -> None:
    """Train the original MODEL on labels (the model you later convert and recover).

    Cross-entropy, AdamW, cosine schedule, an evaluation after each epoch; the weights of
    the epoch best on the selection holdout (--holdout of the training images: highest
    top-1, then lowest loss; --val-split is only reported) are written to --output as a
    safetensors state_dict, which `convert --weights`, `eval --weights` and `finetune
    --teacher-weights` read. --weights FILE starts from those weights instead of scratch.
    """
    import torch
    from safetensors.torch import save

    from parc_surgery.files import check_output, write_bytes
    from parc_surgery.models import create_model, file_stem
    from parc_surgery.report import dumps
    from parc_surgery.train import TrainConfig
    from parc_surgery.train.run import train_model
    from parc_surgery.weights import load_source_weights

    fmt = DataFormat(fmt).value
    set_threads(threads)
    data_config = _data_config(
        data,
        dataset,
        input_size,
        batch_size,
        workers,
        train_split=train_split,
        val_split=val_split,
        augment=augment,
        scale=scale,
        hflip=hflip,
        holdout=holdout,
        crop_pct=crop_pct,
    )
    target = output if output is not None else Path(f"{file_stem(model)}-trained.safetensors")
    check_output(target, force=force, inputs=[weights])  # fail before the slow part
    with _distributed(device) as info:
        ui = Output(quiet=quiet or not info.is_main, fmt=fmt)
        torch.manual_seed(seed)
        network = create_model(model, parse_model_args(model_arg))
        if weights is not None:
            load_source_weights(network, weights)
        config = TrainConfig(
            epochs=epochs,
            warmup_epochs=0,
            lr=lr,
            min_lr=min_lr,
            lr_warmup_epochs=lr_warmup_epochs,
            weight_decay=weight_decay,
            seed=seed,
        )
        try:
            with _progress(ui, info.is_main) as progress:
                measured = train_model(network, data_config, config, info=info, progress=progress)
        except KeyboardInterrupt:
            raise Interrupted("interrupted: stopped at once; nothing was written") from None
        if not info.is_main:
            return
        state = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
        written = write_bytes(target, save(state), force=force, inputs=[weights])
        best = measured.after_finetune
        result = {
            "model": model,
            "output": str(written),
            "best_epoch": measured.best_epoch,
            "best": best.to_dict() if best is not None else None,
            "history": [record.to_dict() for record in measured.history],
        }
        if fmt == "json":
            ui.json(dumps(result))
            return
        if best is not None:
            ui.info(
                f"best epoch {measured.best_epoch}: val top-1 {best.top1:.2f}%, "
                f"loss {best.loss:.4f}"
            )
        ui.info(f"wrote {written}")
