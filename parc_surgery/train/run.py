"""The two jobs the CLI and the Python API run: `finetune()` and `evaluate_source()`.

finetune:        checkpoint + teacher weights + data -> Trainer -> checkpoint with a
                 `training` record in its recipe (written by rank 0 only)
evaluate_source: a timm name (+ weights) or a checkpoint + data -> EvalReport
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from parc_surgery.errors import OutputError, UsageError
from parc_surgery.train.data import (
    DataConfig,
    HeldOut,
    describe_preprocessing,
    eval_loader,
    head_classes,
    holdout_indices,
    open_split,
    preprocessing,
    train_loader,
    transform_for,
)
from parc_surgery.train.distributed import Distributed, init_distributed, unwrap
from parc_surgery.train.evaluate import EvalResult, evaluate
from parc_surgery.train.loop import Measurements, Trainer, TrainProgress
from parc_surgery.train.phases import TrainConfig
from parc_surgery.train.state import STATE_NAME

__all__ = [
    "DataBundle",
    "EvalReport",
    "FinetuneResult",
    "evaluate_source",
    "finetune",
    "prepare_data",
    "train_model",
]


@dataclass
class EvalReport:
    """What `parc-surgery eval` prints: which model, which data, and the metrics."""

    model: str
    source: str  # "checkpoint" | "timm"
    weights: str | None
    data: str
    split: str
    input_size: tuple[int, int]
    result: EvalResult
    preprocessing: dict[str, Any] | None = None  # timm's eval data config that was applied

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "source": self.source,
            "weights": self.weights,
            "data": self.data,
            "split": self.split,
            "input_size": list(self.input_size),
            "preprocessing": self.preprocessing,
            **self.result.to_dict(),
        }


@dataclass
class FinetuneResult:
    """A finished recovery run: where the checkpoint went and what was measured."""

    output: str
    output_sha256: str | None  # None on ranks other than 0, which write nothing
    record: dict[str, Any]
    measurements: Measurements

    def summary(self) -> list[dict[str, Any]]:
        """The rows original / converted / after warm start / after fine-tune."""
        m = self.measurements
        rows = [
            ("original", m.original),
            ("converted, before training", m.before),
            ("after warm start", m.after_warmstart),
            (f"after fine-tune ({_written(m)})", m.after_finetune),
        ]
        return [
            {"stage": label, "top1": r.top1, "top5": r.top5, "loss": r.loss}
            for label, r in rows
            if r is not None
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "output": self.output,
            "output_sha256": self.output_sha256,
            "summary": self.summary(),
            "training": self.record,
        }


def _written(m: Measurements) -> str:
    if m.best_epoch is None:
        return "not written"
    how = "best" if m.selected_on == "holdout" else "last"
    kept = "" if m.written != "warmstart" else "; not written: the warm start was better"
    return f"{how} epoch {m.best_epoch}{kept}"


def _model_input_size(model: nn.Module, plan=None) -> tuple[int, int]:
    from parc_surgery.models import input_size_of

    return tuple(plan.input_size) if plan is not None else input_size_of(model)


def evaluate_source(
    source: str | Path,
    data: DataConfig,
    *,
    weights: str | Path | None = None,
    model_args: dict[str, Any] | None = None,
    limit: int | None = None,
    info: Distributed | None = None,
    progress: TrainProgress | None = None,
) -> EvalReport:
    """Evaluate a parc-surgery checkpoint (a file) or a timm model name on `data.val_split`."""
    from parc_surgery.checkpoint import load, load_source_weights, read_recipe
    from parc_surgery.models import create_model
    from parc_surgery.plan import Plan

    info = info or init_distributed()
    progress = progress or TrainProgress()
    if limit is not None and limit < 1:
        raise UsageError(f"--limit {limit}: evaluate at least one image")
    path = Path(source)
    if path.is_file():
        if weights is not None or model_args:
            raise UsageError(
                f"{path} is a parc-surgery checkpoint: it holds its weights and model arguments",
                hint="drop --weights / --model-arg, or give a timm model name",
            )
        plan = Plan.from_dict(read_recipe(path)["plan"])
        model, kind, name = load(path), "checkpoint", plan.model
    else:
        if path.suffix == ".safetensors" or path.parent != Path("."):
            raise UsageError(f"{source}: no such checkpoint file", hint="check the path")
        plan, name, kind = None, str(source), "timm"
        model = create_model(name, model_args)
        if weights is not None:
            load_source_weights(model, weights)
        else:
            progress.note(f"warning: no --weights: evaluating {name} with random initial weights")
    size = data.input_size or _model_input_size(model, plan)
    model.to(info.device).eval()
    images = open_split(data, data.val_split, num_classes=head_classes(model))
    applied = preprocessing(model, data, size)
    progress.note(describe_preprocessing(applied))
    images.set_transform(transform_for(model, data, size, training=False))
    loader = eval_loader(
        images, data, rank=info.rank, world=info.world_size, device=info.device, limit=limit
    )
    progress.stage(f"evaluating {name}", len(loader.sampler))
    result = evaluate(model, loader, info, on_batch=progress.advance)
    return EvalReport(
        name,
        kind,
        str(weights) if weights else None,
        str(data.root),
        data.val_split,
        size,
        result,
        applied,
    )


@dataclass
class DataBundle:
    """Both splits of a data set, their transforms set, and their loaders.

    `select` (the epoch-selection holdout, `data.holdout` of the training split, eval
    transform, never trained on) is None when data.holdout is 0: the last epoch is kept.
    The val split is only reported, never read to choose.
    """

    train_set: Any
    val_set: Any
    train: Any  # DataLoader over train_set (shuffled by an EpochSampler)
    val: Any  # DataLoader over val_set (in order, sharded over ranks)
    select_set: Any = None
    select: Any = None


def prepare_data(
    model: nn.Module, data: DataConfig, size: tuple[int, int], info: Distributed, *, seed: int
) -> DataBundle:
    """Open and check both splits for `model`; timm's transforms at `size`; the loaders."""
    classes = head_classes(model)
    train_set = open_split(data, data.train_split, num_classes=classes)
    val_set = open_split(
        data, data.val_split, num_classes=classes, reference=train_set.class_to_idx
    )
    train_set.set_transform(transform_for(model, data, size, training=True))
    val_set.set_transform(transform_for(model, data, size, training=False))
    where = {"rank": info.rank, "world": info.world_size, "device": info.device}
    kept, held = holdout_indices(len(train_set), data.holdout)
    select_set = select = None
    if held:
        # The same split opened again, for its own (eval) transform.
        eval_view = open_split(data, data.train_split, num_classes=classes)
        eval_view.set_transform(transform_for(model, data, size, training=False))
        select_set = HeldOut(eval_view, held, f"{train_set.where} (selection holdout)")
        train_set = HeldOut(train_set, kept, train_set.where)
        select = eval_loader(select_set, data, **where)
    return DataBundle(
        train_set,
        val_set,
        train_loader(train_set, data, seed=seed, **where),
        eval_loader(val_set, data, **where),
        select_set,
        select,
    )


def train_model(
    model: nn.Module,
    data: DataConfig,
    config: TrainConfig,
    *,
    input_size: tuple[int, int] | None = None,
    info: Distributed | None = None,
    progress: TrainProgress | None = None,
) -> Measurements:
    """Supervised training of any model on labels alone (config.epochs; no teacher).

    The model ends holding the weights of its best epoch on the selection holdout
    (data.holdout of the training images; the val split is only reported), or of its
    last epoch with data.holdout 0. Epochs are labelled "train". This is how the
    recovery benchmarks train their originals from scratch.
    """
    info = info or init_distributed()
    model.to(info.device)
    size = data.input_size or input_size or _model_input_size(model)
    sets = prepare_data(model, data, size, info, seed=config.seed)
    trainer = Trainer(
        model, None, [], sets.train, sets.val, config, info, progress=progress,
        select_loader=sets.select, name="train",
    )  # fmt: skip
    with _deterministic(info.device.type == "cpu"):
        return trainer.run()


def _check_teacher(teacher_weights, no_teacher: bool) -> None:
    if teacher_weights is None and not no_teacher:
        raise UsageError(
            "finetune needs --teacher-weights FILE: the original model's weights, the teacher "
            "of the warm start and of distillation",
            hint="pass the weights the checkpoint was converted from, or --no-teacher for "
            "plain fine-tuning on labels (which also skips the warm start)",
        )
    if teacher_weights is not None and no_teacher:
        raise UsageError("give --teacher-weights or --no-teacher, not both")


@contextlib.contextmanager
def _deterministic(enabled: bool):
    # Deterministic kernels where torch has them (warn_only: where it has none, it runs
    # the usual one); restored afterwards, so library callers keep their own setting.
    before = torch.are_deterministic_algorithms_enabled()
    if enabled:
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)


def finetune(
    checkpoint: str | Path,
    data: DataConfig,
    config: TrainConfig,
    *,
    output: str | Path,
    teacher_weights: str | Path | None = None,
    no_teacher: bool = False,
    force: bool = False,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    info: Distributed | None = None,
    progress: TrainProgress | None = None,
) -> FinetuneResult:
    """Recover a converted checkpoint; write the best weights to `output` (rank 0)."""
    from parc_surgery.checkpoint import check_output, file_sha256, save

    _check_teacher(teacher_weights, no_teacher)
    if not config.epochs and not (config.warmup_epochs and not no_teacher):
        raise UsageError("nothing to train: --epochs is 0 and there is no warm start")
    if resume and checkpoint_dir is None:
        raise UsageError("--resume needs --checkpoint-dir (where the interrupted run saved)")
    info = info or init_distributed()
    if config.sync_bn and info.device.type != "cuda":
        raise UsageError("--sync-bn needs CUDA (SyncBatchNorm has no CPU implementation)")
    progress = progress or TrainProgress()
    if info.is_main:
        check_output(output, force=force)  # fail before the slow part, not after
        if checkpoint_dir is not None:
            _make_checkpoint_dir(Path(checkpoint_dir))
            if not resume and (Path(checkpoint_dir) / STATE_NAME).exists():
                progress.note(
                    f"warning: {Path(checkpoint_dir) / STATE_NAME} exists and will be replaced "
                    "by this run's state (pass --resume to continue it instead)"
                )
    recipe, plan, student, teacher, teacher_sha = _models(
        checkpoint, teacher_weights, no_teacher, config, info, progress
    )
    paths = [swap.path for swap in plan.swaps]
    if not paths:
        progress.note("the checkpoint swapped nothing: there is no warm start to run")

    size = data.input_size or tuple(plan.input_size)
    sets = prepare_data(student, data, size, info, seed=config.seed)
    checkpoint_sha = file_sha256(checkpoint)
    fingerprint = {
        "checkpoint_sha256": checkpoint_sha,
        "teacher_weights_sha256": teacher_sha,
        "config": config.to_dict(),
        "data": {k: v for k, v in data.to_dict().items() if k != "workers"},
        "input_size": list(size),
        "world_size": info.world_size,
        "images": [len(sets.train_set), len(sets.val_set)],
    }
    trainer = Trainer(
        student,
        teacher,
        paths,
        sets.train,
        sets.val,
        config,
        info,
        checkpoint_dir=Path(checkpoint_dir) if checkpoint_dir else None,
        fingerprint=fingerprint,
        progress=progress,
        select_loader=sets.select,
    )
    with _deterministic(info.device.type == "cpu"):
        measurements = trainer.run(resume=resume)
    record = _record(
        data, size, sets, config, info, measurements, recipe,
        teacher={"model": plan.model, "weights_sha256": teacher_sha} if teacher else None,
        checkpoint_sha256=checkpoint_sha,
        swapped_blocks=paths,
    )  # fmt: skip
    sha = None
    if info.is_main:
        sha = save(
            unwrap(student),
            plan,
            output,
            force=force,
            source_weights_sha256=recipe.get("source_weights_sha256"),
            seed=recipe.get("seed"),
            training=record,
        )
    info.barrier()
    return FinetuneResult(str(output), sha, record, measurements)


def _models(checkpoint, teacher_weights, no_teacher: bool, config, info, progress):
    """(recipe, plan, student, teacher or None, teacher sha256), on the device."""
    from parc_surgery.checkpoint import load, read_recipe
    from parc_surgery.plan import Plan
    from parc_surgery.train.distill import build_teacher

    recipe = read_recipe(checkpoint)
    plan = Plan.from_dict(recipe["plan"])
    student = load(checkpoint)
    teacher, teacher_sha = None, None
    if not no_teacher:
        teacher, teacher_sha = build_teacher(plan, teacher_weights)
        source_sha = recipe.get("source_weights_sha256")
        if source_sha != teacher_sha:
            progress.note(
                "warning: the checkpoint was converted from "
                + (f"weights with sha256 {source_sha[:12]}..." if source_sha else "random weights")
                + f", the teacher's have {teacher_sha[:12]}...: the warm start teaches the "
                "new blocks another model's function"
            )
    elif config.warmup_epochs:
        progress.note("--no-teacher: no warm start (it needs the teacher); fine-tuning on labels")
    for model in (student, teacher):
        if model is not None:
            model.to(info.device)
            if config.channels_last:
                model.to(memory_format=torch.channels_last)
    return recipe, plan, student, teacher, teacher_sha


def _record(data, size, sets, config, info, measurements, recipe, **extra) -> dict[str, Any]:
    """The `training` record of the output's recipe (plain JSON data)."""
    splits = {
        name: {"images": len(images), "classes": _count(images)}
        for name, images in (
            ("train", sets.train_set),
            ("selection_holdout", sets.select_set),
            ("val", sets.val_set),
        )
        if images is not None
    }
    return _plain(
        {
            "data": {
                **data.to_dict(),
                "root": str(Path(data.root).resolve()),
                "input_size": list(size),
                "splits": splits,
            },
            "hyper_parameters": {
                **config.to_dict(),
                "batch_size": data.batch_size,
                "global_batch_size": data.batch_size * info.world_size,
            },
            **extra,
            "seed": config.seed,
            "world_size": info.world_size,
            "device": info.device.type,
            "metrics": measurements.to_dict(),
            "previous": recipe.get("training"),
        }
    )


def _count(images) -> int | None:
    classes = images.class_to_idx
    return len(classes) if classes is not None else None


def _plain(value: Any) -> Any:
    """JSON-safe: tuples to lists, non-finite floats to None."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _make_checkpoint_dir(folder: Path) -> None:
    """Create --checkpoint-dir; a file in its place or an OS error is exit 7 with the path."""
    from parc_surgery.files import os_error

    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(
            f"--checkpoint-dir {folder} is a file, not a folder",
            hint="give a folder for the training state, or remove the file",
        ) from None
    except OSError as err:
        raise os_error(folder, err, doing="create --checkpoint-dir") from None
    if not os.access(folder, os.W_OK | os.X_OK):  # fail now, not after the first epoch
        raise OutputError(
            f"--checkpoint-dir {folder} is not writable (read-only file system or permissions)",
            hint="give a folder this user can write, or leave out --checkpoint-dir",
        )
