"""finetune never writes a model worse than its warm start without saying so."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from parc_surgery.train.evaluate import EvalResult
from parc_surgery.train.loop import EpochRecord, Measurements, Trainer


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
