"""The two phases of recovery, each as a training step plus what it trains.

`warmstart_phase` (phase 1) trains the swapped blocks alone, each on its original's
input (warmstart.py); `finetune_phase` (phase 2) trains the whole model on labels and
the teacher's logits (distill.py). Both use timm's AdamW (create_optimizer_v2) and a
per-step cosine schedule (create_scheduler_v2); the loop in loop.py runs them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from parc_surgery.errors import UsageError
from parc_surgery.train.distill import DistillLoss
from parc_surgery.train.distributed import Distributed
from parc_surgery.train.evaluate import autocast_for
from parc_surgery.train.features import FeatureCapture, parc_param_groups
from parc_surgery.train.warmstart import BlockCapture, BlockwiseStudent, freeze_outside

__all__ = ["Phase", "TrainConfig", "finetune_phase", "warmstart_phase"]


@dataclass(frozen=True)
class TrainConfig:
    """The hyper-parameters of a recovery run (the CLI's training options)."""

    epochs: int = 10  # phase 2
    warmup_epochs: int = 1  # phase 1, the block-wise warm start (0 skips it)
    lr: float = 5e-4
    block_lr: float = 1e-3  # phase 1's learning rate
    min_lr: float = 1e-6
    lr_warmup_epochs: float = 0.5  # linear lr warm-up at the start of phase 2
    weight_decay: float = 0.05
    clip_grad: float | None = 1.0  # max gradient norm; None: no clipping
    ema_decay: float | None = None  # timm ModelEmaV3 (with warm-up) when set
    distill_weight: float = 0.5
    temperature: float = 2.0
    distill_gate: str = "none"  # "correct": KL only where the teacher's top-1 is the label
    # Phase 2: weight of the swapped blocks' normalised MSE to the teacher's (0: off).
    feature_distill_weight: float = 0.0
    parc_lr_scale: float = 1.0  # phase 2 lr multiplier of the swapped blocks' parameters
    seed: int = 0
    amp: bool = True  # bf16 autocast, on CUDA only
    channels_last: bool = False
    sync_bn: bool = False  # SyncBatchNorm under DDP (CUDA only)

    def __post_init__(self) -> None:
        for name in ("epochs", "warmup_epochs"):
            if getattr(self, name) < 0:
                raise UsageError(f"--{name.replace('_', '-')} must be 0 or more")
        for name in ("lr", "block_lr"):
            if getattr(self, name) <= 0:
                raise UsageError(f"--{name.replace('_', '-')} must be positive")
        if self.epochs and not 0 <= self.lr_warmup_epochs < self.epochs:
            raise UsageError(
                f"--lr-warmup-epochs {self.lr_warmup_epochs} must be at least 0 and below "
                f"--epochs {self.epochs}"
            )
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise UsageError(f"--ema-decay {self.ema_decay} must lie between 0 and 1")
        DistillLoss(self.distill_weight, self.temperature, self.distill_gate)  # validates
        if not self.feature_distill_weight >= 0:
            raise UsageError(
                f"--feature-distill-weight {self.feature_distill_weight} must be 0 or more"
            )
        if not self.parc_lr_scale > 0:
            raise UsageError(f"--parc-lr-scale {self.parc_lr_scale} must be positive")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Phase:
    """One phase, set up: the module that trains, its optimizer, schedule and step."""

    name: str  # "warmstart" | "finetune"
    epochs: int
    trained: nn.Module  # what DDP wraps and the optimizer updates
    optimizer: torch.optim.Optimizer
    scheduler: Any
    step: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]  # (x, y, update n) -> loss
    ema: Any = None

    def state_dict(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])


def _schedule(optimizer, config: TrainConfig, epochs: int, steps: int, lr: float, warmup: float):
    from timm.scheduler import create_scheduler_v2

    scheduler, _ = create_scheduler_v2(
        optimizer,
        sched="cosine",
        num_epochs=epochs,
        warmup_epochs=warmup,
        warmup_lr=min(1e-5, lr),
        min_lr=min(config.min_lr, lr),
        step_on_epochs=False,
        updates_per_epoch=steps,
    )
    return scheduler


def _optimizer(
    module: nn.Module,
    config: TrainConfig,
    lr: float,
    paths: Sequence[str] = (),
    lr_scale: float = 1.0,
):
    from timm.optim import create_optimizer_v2

    # filter_bias_and_bn (timm's default): no weight decay on biases and norm weights.
    if not paths or lr_scale == 1.0:
        return create_optimizer_v2(module, opt="adamw", lr=lr, weight_decay=config.weight_decay)
    return create_optimizer_v2(
        module,
        opt="adamw",
        lr=lr,
        weight_decay=config.weight_decay,
        param_group_fn=lambda m: parc_param_groups(m, paths, config.weight_decay, lr_scale),
    )


def _update(loss, optimizer, params, clip_grad: float | None) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if clip_grad:
        torch.nn.utils.clip_grad_norm_(params, clip_grad)
    optimizer.step()


def _prepare(x: torch.Tensor, info: Distributed, channels_last: bool) -> torch.Tensor:
    x = x.to(info.device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def warmstart_phase(
    student: nn.Module,
    teacher: nn.Module,
    paths: Sequence[str],
    config: TrainConfig,
    info: Distributed,
    steps_per_epoch: int,
) -> Phase:
    """Phase 1: only the blocks at `paths` train, on the teacher's block inputs (MSE)."""
    params = freeze_outside(student, paths)
    blocks = BlockwiseStudent(student, paths)
    trained = info.wrap(blocks, sync_bn=config.sync_bn)
    optimizer = _optimizer(blocks, config, config.block_lr)
    scheduler = _schedule(
        optimizer, config, config.warmup_epochs, steps_per_epoch, config.block_lr, 0
    )
    capture = BlockCapture(teacher, paths)

    def step(images: torch.Tensor, targets: torch.Tensor, update: int) -> torch.Tensor:
        x = _prepare(images, info, config.channels_last)
        with autocast_for(info.device, config.amp):
            with capture:
                inputs, outputs = capture.run(x)
            loss, _ = trained(inputs, outputs)
        _update(loss, optimizer, params, config.clip_grad)
        return loss

    return Phase("warmstart", config.warmup_epochs, trained, optimizer, scheduler, step)


def finetune_phase(
    student: nn.Module,
    teacher: nn.Module | None,
    config: TrainConfig,
    info: Distributed,
    steps_per_epoch: int,
    paths: Sequence[str] = (),
) -> Phase:
    """Phase 2: the whole student on CE + KL to the teacher (CE alone without one).

    Teacher and student see the same augmented images (one batch, one view). With
    config.feature_distill_weight > 0 (and a teacher), the swapped blocks at `paths` are
    also pulled towards the teacher's blocks (features.py); config.parc_lr_scale scales
    their learning rate.
    """
    student.train().requires_grad_(True)
    trained = info.wrap(student, sync_bn=config.sync_bn)
    params = [p for p in student.parameters() if p.requires_grad]
    optimizer = _optimizer(student, config, config.lr, paths, config.parc_lr_scale)
    scheduler = _schedule(
        optimizer, config, config.epochs, steps_per_epoch, config.lr, config.lr_warmup_epochs
    )
    criterion = DistillLoss(
        config.distill_weight if teacher is not None else 0.0,
        config.temperature,
        config.distill_gate,
    )
    feature_weight = config.feature_distill_weight if teacher is not None and paths else 0.0
    use_teacher = teacher is not None and (criterion.weight > 0 or feature_weight > 0)
    ema = None
    if config.ema_decay is not None:
        from timm.utils import ModelEmaV3

        ema = ModelEmaV3(student, decay=config.ema_decay, use_warmup=True)
    teacher_blocks = FeatureCapture(teacher, paths) if feature_weight else None
    student_blocks = FeatureCapture(student, paths) if feature_weight else None

    def step(images: torch.Tensor, targets: torch.Tensor, update: int) -> torch.Tensor:
        x = _prepare(images, info, config.channels_last)
        y = targets.to(info.device, non_blocking=True)
        with autocast_for(info.device, config.amp):
            teacher_logits = None
            if use_teacher:
                with torch.no_grad(), contextlib.ExitStack() as stack:
                    if teacher_blocks is not None:
                        stack.enter_context(teacher_blocks)
                    teacher_logits = teacher(x)
                if criterion.weight == 0:
                    teacher_logits = None
            if student_blocks is not None:
                with student_blocks:
                    logits = trained(x)
                loss = criterion(logits, y, teacher_logits)
                loss = loss + feature_weight * student_blocks.loss(teacher_blocks.outputs)
            else:
                loss = criterion(trained(x), y, teacher_logits)
        _update(loss, optimizer, params, config.clip_grad)
        if ema is not None:
            ema.update(student, step=update)
        return loss

    return Phase("finetune", config.epochs, trained, optimizer, scheduler, step, ema)
