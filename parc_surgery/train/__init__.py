"""Recovery after conversion: evaluate, warm-start the swapped blocks, distil, resume.

data.py (timm datasets, transforms, samplers) -> evaluate.py (top-1/5, loss) ->
warmstart.py (phase 1) + distill.py (phase 2's loss, the teacher) -> phases.py ->
loop.py (epochs, best weights, resume, signals) -> run.py (finetune, evaluate_source,
train_model); distributed.py (torchrun -> DDP) and state.py (resumable state) serve
the loop; render.py prints tables and lines for the CLI.
"""

from __future__ import annotations

from parc_surgery.train.data import DataConfig
from parc_surgery.train.evaluate import EvalResult, evaluate
from parc_surgery.train.loop import Measurements, Trainer, TrainProgress
from parc_surgery.train.phases import TrainConfig
from parc_surgery.train.run import (
    EvalReport,
    FinetuneResult,
    evaluate_source,
    finetune,
    train_model,
)

__all__ = [
    "DataConfig",
    "EvalReport",
    "EvalResult",
    "FinetuneResult",
    "Measurements",
    "TrainConfig",
    "TrainProgress",
    "Trainer",
    "evaluate",
    "evaluate_source",
    "finetune",
    "train_model",
]
