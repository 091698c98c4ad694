"""finetune never writes a model worse than its warm start without saying so."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from parc_surgery.train.distributed import init_distributed
from parc_surgery.train.evaluate import EvalResult
from parc_surgery.train.loop import EpochRecord, Measurements, Trainer, TrainProgress
from parc_surgery.train.phases import TrainConfig


def _val(top1: float) -> EvalResult:
    return EvalResult(top1=top1, top5=100.0, loss=0.1, images=360, seconds=1.0, images_per_s=1.0)


def _notes(m: Measurements) -> list[str]:
    notes: list[str] = []
    Trainer._say_written(
        SimpleNamespace(measurements=m, progress=SimpleNamespace(note=notes.append))
    )
    return notes


def _run(written: str, warm: float, tuned: float) -> Measurements:
    history = [EpochRecord("warmstart", 1, 0.5, 1e-3, 1.0, _val(warm)),
               EpochRecord("finetune", 1, 0.4, 1e-3, 1.0, _val(tuned))]  # fmt: skip
    return Measurements(after_warmstart=_val(warm), after_finetune=_val(tuned), best_epoch=1,
                        selected_on="holdout", written=written, history=history)  # fmt: skip


@pytest.mark.parametrize(
    ("written", "warm", "tuned", "said"),
    [
        (
            "warmstart",
            94.17,
            93.89,
            "output holds the warm-started weights",
        ),  # the holdout chose it
        ("finetune", 94.17, 93.89, "below the warm-started model's 94.17"),  # val says worse
    ],
)
def test_a_written_model_worse_than_the_warm_start_is_said(written, warm, tuned, said):
    (note,) = _notes(_run(written, warm, tuned))
    assert note.startswith("warning:") and said in note


def test_a_fine_tuned_model_better_than_the_warm_start_says_nothing():
    assert _notes(_run("finetune", 94.17, 98.89)) == []


class _Notes(TrainProgress):
    def __init__(self) -> None:
        self.notes: list[str] = []

    def note(self, text: str) -> None:
        self.notes.append(text)


def _scripted_trainer(holdout: list[float]) -> tuple[Trainer, _Notes]:
    """A Trainer whose epochs set the student's weight to their number (1: the warm start,
    2, 3: fine-tune epochs) and whose holdout scores are `holdout`; the selection and the
    loading of the chosen weights at the end are the real ones."""
    student, teacher = nn.Linear(2, 2), nn.Linear(2, 2)
    progress = _Notes()
    trainer = Trainer(
        student, teacher, ["x"], None, None, TrainConfig(warmup_epochs=1, epochs=2),
        init_distributed("cpu"), progress=progress, select_loader=object(),
    )  # fmt: skip
    epoch = iter(range(1, 4))
    scores = iter(holdout)
    optimizer = SimpleNamespace(param_groups=[{"lr": 1e-3}])

    def train_epoch(phase) -> None:
        with torch.no_grad():
            student.weight.fill_(float(next(epoch)))
        trainer.position.loss_sum, trainer.position.loss_steps = 0.1, 1  # a finite loss
        trainer._epoch_seconds = 0.0

    def evaluate(model, label, loader=None):
        return _val(next(scores)) if "holdout" in label else _val(90.0)

    trainer._start = lambda: None
    trainer._phase = lambda name: SimpleNamespace(optimizer=optimizer, ema=None, epochs=1)
    trainer._train_epoch = train_epoch
    trainer._evaluate = evaluate
    trainer._block_errors = dict
    return trainer, progress


@pytest.mark.parametrize(
    ("holdout", "written", "weight"),
    [
        ([95.0, 90.0, 92.0], "warmstart", 1.0),  # the warm start beats both fine-tune epochs
        ([90.0, 92.0, 95.0], "finetune", 3.0),  # the last fine-tune epoch is best
    ],
)
def test_finetune_writes_the_better_of_warm_start_and_fine_tune_and_says_so(
    holdout, written, weight
):
    trainer, progress = _scripted_trainer(holdout)
    measurements = trainer.run()
    assert measurements.written == written
    assert torch.all(trainer.student.weight == weight)  # the student holds what is written
    if written == "warmstart":
        (note,) = progress.notes
        assert note.startswith("warning:") and "warm-started weights" in note
    else:
        assert progress.notes == []
