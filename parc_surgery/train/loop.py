"""The recovery loop: phases and epochs, evaluation after each, the best weights, resume.

Trainer.run() measures the teacher and the converted model, runs phase 1 (warm start)
and phase 2 (fine-tune) epoch by epoch, evaluates after every epoch, keeps the weights
of the best phase-2 epoch, and loads them into the student at the end. "Best" is read on
the selection holdout (held-out training images: highest top-1, then lowest loss), never
on the val split it reports; without a holdout the last epoch is kept. The warm-started
model competes too: when no phase-2 epoch beats it on the holdout, it is written
instead, with a warning; the record's `written` says which state was written. With a
checkpoint directory it writes the resumable state after every epoch; SIGINT / SIGTERM
stop the run after the current step, with the state saved.
"""

from __future__ import annotations

import math
import random
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from parc_surgery.errors import DivergedError, Interrupted
from parc_surgery.train.data import batches
from parc_surgery.train.distributed import Distributed, all_reduce_sum, unwrap
from parc_surgery.train.evaluate import EvalResult, evaluate
from parc_surgery.train.phases import Phase, TrainConfig, finetune_phase, warmstart_phase
from parc_surgery.train.state import (
    STATE_NAME,
    capture_rng,
    check_state,
    read_state,
    restore_rng,
    write_state,
)
from parc_surgery.train.warmstart import block_errors

__all__ = ["EpochRecord", "Measurements", "StopSignals", "TrainProgress", "Trainer"]

# Block errors are measured on at most this many val images per process: enough for a
# stable mean, and cheap next to an epoch on a large val set.
BLOCK_ERROR_IMAGES = 1024


@dataclass
class EpochRecord:
    """One finished epoch: its phase, mean training loss, last lr and val metrics."""

    phase: str
    epoch: int  # 1-based within its phase
    train_loss: float
    lr: float
    seconds: float
    val: EvalResult
    select: EvalResult | None = None  # on the selection holdout (what chooses the epoch)

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "val": self.val.to_dict(),
            "select": self.select.to_dict() if self.select else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EpochRecord:
        select = data.get("select")
        return cls(
            **{
                **data,
                "val": EvalResult(**data["val"]),
                "select": EvalResult(**select) if select else None,
            }
        )


@dataclass
class Measurements:
    """What a recovery run measured, in order; the training record's `metrics`."""

    original: EvalResult | None = None  # the teacher
    before: EvalResult | None = None  # the converted model before any training
    after_warmstart: EvalResult | None = None
    after_finetune: EvalResult | None = None  # val of the written phase-2 epoch
    best_epoch: int | None = None  # the written phase-2 epoch (None: none was written)
    selected_on: str = "last"  # "holdout" (held-out training images) | "last" (last epoch)
    written: str | None = None  # "finetune" | "warmstart": which state the output holds
    block_nmse_before: dict[str, float] | None = None
    block_nmse_after: dict[str, float] | None = None
    history: list[EpochRecord] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for name in ("original", "before", "after_warmstart", "after_finetune"):
            value = getattr(self, name)
            data[name] = value.to_dict() if value is not None else None
        data["history"] = [record.to_dict() for record in self.history]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Measurements:
        kwargs = dict(data)
        for name in ("original", "before", "after_warmstart", "after_finetune"):
            kwargs[name] = EvalResult(**data[name]) if data.get(name) else None
        kwargs["history"] = [EpochRecord.from_dict(r) for r in data.get("history", [])]
        return cls(**kwargs)


class TrainProgress:
    """What the loop reports as it goes; this base reports nothing (non-zero ranks, tests)."""

    def stage(self, label: str, total: int) -> None:
        """A new bar: `label`, `total` units (steps or images)."""

    def advance(self, amount: int = 1) -> None:
        """`amount` more units of the current bar are done."""

    def epoch_done(self, record: EpochRecord) -> None:
        """An epoch ended and was evaluated."""

    def note(self, text: str) -> None:
        """A one-line message."""


class StopSignals:
    """SIGINT / SIGTERM set a flag the loop reads after each step; a second Ctrl-C aborts."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc) -> bool:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
        return False


def _load_phase(phase, state: dict[str, Any], directory) -> None:
    """The optimizer / scheduler / EMA state of a resumed phase; a misfit is exit 6."""
    from parc_surgery.errors import CheckpointError

    try:
        phase.load_state_dict(state)
    except (KeyError, ValueError, TypeError, RuntimeError, IndexError) as err:
        raise CheckpointError(
            f"{directory}/state.pt: 'phase' does not fit this run's optimizer "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})",
            hint="the file was edited or damaged: delete it and start again without --resume",
        ) from None


@dataclass
class _Position:
    phase: int = 0
    epoch: int = 0  # epochs finished in this phase
    step: int = 0  # steps finished in this epoch
    update: int = 0  # optimizer updates in this phase
    loss_sum: float = 0.0  # of this epoch's finished steps
    loss_steps: int = 0


class Trainer:
    """Recover `student` (a converted model) with `teacher` (its original, or None)."""

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None,
        paths: list[str],
        train_loader,
        val_loader,
        config: TrainConfig,
        info: Distributed,
        *,
        checkpoint_dir: Path | None = None,
        fingerprint: dict[str, Any] | None = None,
        progress: TrainProgress | None = None,
        select_loader=None,
        name: str = "finetune",
    ):
        self.student = student
        self.teacher = teacher
        self.paths = list(paths)
        self.train_loader = train_loader
        self.val_loader = val_loader
        self.select_loader = select_loader  # None: keep the last epoch
        self.config = config
        self.info = info
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.fingerprint = fingerprint or {}
        self.progress = progress or TrainProgress()
        self.measurements = Measurements(selected_on="holdout" if select_loader else "last")
        self.position = _Position()
        self.best_key: tuple[float, float] | None = None
        self.best_state: dict[str, torch.Tensor] | None = None
        self.signals = StopSignals()
        self._epoch_seconds = 0.0
        self.phases: list[tuple[str, int]] = []
        if teacher is not None and self.paths and config.warmup_epochs:
            self.phases.append(("warmstart", config.warmup_epochs))
        if config.epochs:
            # `name` labels phase 2 in progress and records ("train" for train_model).
            self.phases.append((name, config.epochs))

    # -- the run ---------------------------------------------------------------------

    def run(self, *, resume: bool = False) -> Measurements:
        """Train; the student ends holding the best weights. Returns what was measured."""
        # Before the first step (measuring the start) Ctrl-C stops at once: nothing to save.
        phase_state = self._restore() if resume else self._start()
        with self.signals:
            for index, (name, epochs) in enumerate(self.phases):
                if index < self.position.phase:
                    continue
                if self.position.epoch < epochs:
                    phase = self._phase(name)
                    if phase_state is not None:
                        _load_phase(phase, phase_state, self.checkpoint_dir)
                        phase_state = None
                    while self.position.epoch < epochs:
                        self._train_epoch(phase)
                        self._end_epoch(phase)
                self.position = _Position(phase=index + 1)
        if self.best_state is not None:
            self.student.load_state_dict(self.best_state)
        self._say_written()
        return self.measurements

    def _say_written(self) -> None:
        m = self.measurements
        if m.written == "warmstart" and any(r.phase != "warmstart" for r in m.history):
            self.progress.note(
                "warning: no fine-tune epoch beat the warm-started model on the selection "
                "holdout: the output holds the warm-started weights (record: written=warmstart)"
            )
        elif (
            m.written == "finetune"
            and m.after_warmstart is not None
            and m.after_finetune is not None
            and m.after_finetune.top1 < m.after_warmstart.top1
        ):
            self.progress.note(
                f"warning: the written model (fine-tune epoch {m.best_epoch}, "
                f"{m.selected_on}) scores {m.after_finetune.top1:.2f} top-1 on val, below the "
                f"warm-started model's {m.after_warmstart.top1:.2f}"
            )

    def _start(self) -> None:
        """Seed this process and measure the starting point (no phase state to restore)."""
        seed = self.config.seed + self.info.rank
        torch.manual_seed(seed)
        random.seed(seed)
        import numpy as np

        np.random.seed(seed % 2**32)
        if self.teacher is not None:
            self.measurements.original = self._evaluate(self.teacher, "evaluating the original")
        self.measurements.before = self._evaluate(self.student, "evaluating the converted model")
        if self.phases and self.phases[0][0] == "warmstart":
            self.measurements.block_nmse_before = self._block_errors()

    def _phase(self, name: str) -> Phase:
        steps = len(self.train_loader)
        if name == "warmstart":
            return warmstart_phase(
                self.student, self.teacher, self.paths, self.config, self.info, steps
            )
        return finetune_phase(self.student, self.teacher, self.config, self.info, steps, self.paths)

    def _train_epoch(self, phase: Phase) -> None:
        pos = self.position
        sampler = self.train_loader.sampler
        counter = sum(n for _, n in self.phases[: pos.phase]) + pos.epoch
        sampler.set_epoch(counter)
        sampler.skip = pos.step * self.train_loader.batch_size
        # Worker seeds are drawn from this generator: a function of (seed, epoch) only.
        self.train_loader.generator.manual_seed(self.config.seed * 1_000_003 + counter)
        total = len(sampler) // self.train_loader.batch_size + pos.step
        name = self.phases[pos.phase][0]
        self.progress.stage(f"{name} epoch {pos.epoch + 1}/{phase.epochs}", total)
        self.progress.advance(pos.step)
        loss_sum = torch.tensor(pos.loss_sum, dtype=torch.float64, device=self.info.device)
        start = time.perf_counter()
        for images, targets in batches(self.train_loader):
            loss = phase.step(images, targets, pos.update + 1)
            pos.update += 1
            phase.scheduler.step_update(pos.update)
            loss_sum += loss.detach()  # stays on the device: no sync per step
            pos.step += 1
            pos.loss_steps += 1
            self.progress.advance()
            if self.info.any(self.signals.signum is not None):
                pos.loss_sum = float(loss_sum)
                self._interrupt(phase)
        sampler.skip = 0
        pos.loss_sum = float(loss_sum)
        self._epoch_seconds = time.perf_counter() - start

    def _end_epoch(self, phase: Phase) -> None:
        pos = self.position
        name, epochs = self.phases[pos.phase]
        evaluated = phase.ema.module if phase.ema is not None else self.student
        val = self._evaluate(evaluated, f"{name} epoch {pos.epoch + 1}: evaluating")
        select = None
        if self.select_loader is not None:
            select = self._evaluate(
                evaluated, f"{name} epoch {pos.epoch + 1}: selection holdout", self.select_loader
            )
        total, steps = all_reduce_sum(
            torch.tensor([pos.loss_sum, float(pos.loss_steps)]), self.info
        ).tolist()
        record = EpochRecord(
            phase=name,
            epoch=pos.epoch + 1,
            train_loss=total / steps if steps else float("nan"),
            lr=float(phase.optimizer.param_groups[0]["lr"]),
            seconds=self._epoch_seconds,
            val=val,
            select=select,
        )
        self._check_finite(evaluated, record)
        self.measurements.history.append(record)
        last = pos.epoch + 1 == epochs
        if name == "warmstart" and last:
            self.measurements.after_warmstart = val
            self.measurements.block_nmse_after = self._block_errors()
            # The warm-started model is a candidate: the result when there is no phase 2,
            # kept when no phase-2 epoch beats it on the holdout.
            if len(self.phases) == 1 or select is not None:
                self._keep_best(evaluated, val, select, None)
        if name != "warmstart":
            self._keep_best(evaluated, val, select, pos.epoch + 1)
        self.position = _Position(phase=pos.phase, epoch=pos.epoch + 1, update=pos.update)
        self._save(phase)
        self.progress.epoch_done(record)
        if self.info.any(self.signals.signum is not None):
            self._interrupt(phase, saved=True)

    def _check_finite(self, model: nn.Module, record: EpochRecord) -> None:
        """DivergedError (exit 11) for a non-finite loss or weight, before anything is kept:
        the best weights and the state in --checkpoint-dir stay those of the last finite
        epoch, and no NaN model is ever saved."""
        losses = {"training loss": record.train_loss, "validation loss": record.val.loss}
        bad = [f"{label} {value}" for label, value in losses.items() if not math.isfinite(value)]
        weights = [
            name
            for name, value in model.state_dict().items()
            if value.is_floating_point() and not bool(torch.isfinite(value).all())
        ]
        if weights:
            bad.append(f"{len(weights)} non-finite weight tensors ({', '.join(weights[:3])})")
        if not bad:
            return
        kept = (
            f"a state in {self.checkpoint_dir} is from the last finite epoch"
            if self.checkpoint_dir is not None
            else "nothing was saved"
        )
        raise DivergedError(
            f"{record.phase} epoch {record.epoch} diverged: {'; '.join(bad)}. Training "
            f"stopped, {kept} and no output was written",
            hint="lower --lr / --block-lr, keep --clip-grad on, or try --no-amp",
        )

    def _keep_best(
        self, model: nn.Module, val: EvalResult, select: EvalResult | None, epoch: int | None
    ) -> None:
        # Chosen on the holdout only (val is what gets reported); without one, the latest.
        # after_finetune / best_epoch: the best phase-2 epoch; written: what the output holds.
        m = self.measurements
        key = (select.top1, -select.loss) if select is not None else (len(m.history),)
        if epoch is not None:
            best = next(
                (r for r in m.history if r.phase != "warmstart" and r.epoch == m.best_epoch), None
            )
            if best is None or select is None or key > (best.select.top1, -best.select.loss):
                m.after_finetune, m.best_epoch = val, epoch
        if self.best_key is not None and tuple(key) <= tuple(self.best_key):
            return
        self.best_key = key
        self.best_state = {
            k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()
        }
        m.written = "warmstart" if epoch is None else "finetune"

    def _evaluate(self, model: nn.Module, label: str, loader=None) -> EvalResult:
        loader = loader if loader is not None else self.val_loader
        self.progress.stage(label, len(loader.sampler))
        return evaluate(
            model,
            loader,
            self.info,
            amp=self.config.amp,
            channels_last=self.config.channels_last,
            on_batch=self.progress.advance,
        )

    def _block_errors(self) -> dict[str, float]:
        self.progress.stage("block errors", min(len(self.val_loader.sampler), BLOCK_ERROR_IMAGES))
        return block_errors(
            self.student,
            self.teacher,
            self.paths,
            self.val_loader,
            self.info,
            max_images=BLOCK_ERROR_IMAGES,
            channels_last=self.config.channels_last,
        )

    # -- state -----------------------------------------------------------------------

    def _interrupt(self, phase: Phase, *, saved: bool = False) -> None:
        if not saved:
            self._save(phase)
        signum = self.signals.signum or signal.SIGINT
        name = signal.Signals(signum).name
        pos = self.position
        where = (
            f"{self.phases[pos.phase][0]} epoch {pos.epoch + 1}, after step {pos.step}"
            if pos.step
            else f"after {self.phases[pos.phase][0]} epoch {pos.epoch}"
        )
        if self.checkpoint_dir is not None:
            hint = (
                f"the state is in {self.checkpoint_dir}: run the same command with --resume "
                "to continue"
            )
        else:
            hint = "nothing was saved; pass --checkpoint-dir DIR to be able to resume"
        err = Interrupted(f"{name} received: stopped {where}", hint=hint)
        err.exit_code = 128 + int(signum)
        raise err

    def _save(self, phase: Phase) -> None:
        if self.checkpoint_dir is None:
            return
        rng = self.info.gather(capture_rng())  # a collective: every rank takes part
        if not self.info.is_main:
            return
        state = {
            "fingerprint": self.fingerprint,
            "position": asdict(self.position),
            "student": unwrap(self.student).state_dict(),
            "phase": phase.state_dict(),
            "measurements": self.measurements.to_dict(),
            "best_key": list(self.best_key) if self.best_key else None,
            "best_state": self.best_state,
            "rng": rng,
        }
        write_state(self.checkpoint_dir, state)

    def _restore(self):
        state = read_state(self.checkpoint_dir, self.fingerprint)
        check_state(
            self.checkpoint_dir / STATE_NAME,
            state,
            student=unwrap(self.student).state_dict(),
            phases=self.phases,
            world_size=self.info.world_size,
        )
        self.student.load_state_dict(state["student"])
        self.position = _Position(**state["position"])
        self.measurements = Measurements.from_dict(state["measurements"])
        self.best_key = tuple(state["best_key"]) if state["best_key"] else None
        self.best_state = state["best_state"]
        rng = state["rng"]
        restore_rng(rng[self.info.rank] if len(rng) == self.info.world_size else rng[0])
        done = self.position.phase >= len(self.phases)
        name, epochs = ("done", 0) if done else self.phases[self.position.phase]
        self.progress.note(
            f"resumed from {self.checkpoint_dir}: {name}, {self.position.epoch} of {epochs} "
            f"epochs done, {self.position.step} steps into the next"
        )
        return state["phase"] if self.position.epoch < epochs else None
