"""Phase 2's loss and its teacher: the original model, rebuilt from the checkpoint's recipe.

loss = (1 - w) * CE(student, labels) + w * T^2 * KL(softmax(teacher / T) || softmax(student / T))

with w = --distill-weight and T = --temperature (Hinton et al. 2015; the T^2 keeps the
soft term's gradient scale independent of T). Without a teacher w is 0: plain fine-tuning.

--distill-gate correct keeps the KL term only on the images whose label the teacher ranks
first (the batch mean over all images, so a teacher that is wrong everywhere distils
nothing): a converted model can learn what its original cannot (benchmarks/
bench_longrange.py), and ungated distillation pulls it back to the original's mistakes.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from parc_surgery.errors import UsageError
from parc_surgery.plan import Plan

__all__ = ["GATES", "DistillLoss", "build_teacher"]

GATES = ("none", "correct")


class DistillLoss(nn.Module):
    """Cross-entropy plus temperature-scaled KL to the teacher's logits."""

    def __init__(self, weight: float = 0.5, temperature: float = 2.0, gate: str = "none"):
        super().__init__()
        if gate not in GATES:
            raise UsageError(f"--distill-gate {gate!r}: give one of {', '.join(GATES)}")
        if not 0.0 <= weight <= 1.0:
            raise UsageError(f"--distill-weight {weight} is outside [0, 1]")
        if temperature <= 0:
            raise UsageError(f"--temperature {temperature} must be positive")
        self.weight = weight
        self.temperature = temperature
        self.gate = gate

    def forward(
        self, logits: torch.Tensor, targets: torch.Tensor, teacher_logits: torch.Tensor | None
    ) -> torch.Tensor:
        logits = logits.float()
        ce = F.cross_entropy(logits, targets)
        if teacher_logits is None or self.weight == 0.0:
            return ce
        t = self.temperature
        teacher_logits = teacher_logits.float()
        per_image = F.kl_div(
            F.log_softmax(logits / t, dim=1),
            F.log_softmax(teacher_logits / t, dim=1),
            reduction="none",
            log_target=True,
        ).sum(dim=1)
        if self.gate == "correct":
            per_image = per_image * (teacher_logits.argmax(dim=1) == targets)
        kl = per_image.mean()
        return (1.0 - self.weight) * ce + self.weight * (t * t) * kl


def build_teacher(plan: Plan, weights: str | Path) -> tuple[nn.Module, str]:
    """The unconverted model of `plan` with `weights` loaded strictly; (model, sha256).

    Frozen and in eval mode: its BatchNorms keep their running statistics.
    """
    from parc_surgery.checkpoint import load_source_weights
    from parc_surgery.models import create_model

    teacher = create_model(plan.model, plan.model_args)
    sha256 = load_source_weights(teacher, weights)
    teacher.eval().requires_grad_(False)
    return teacher, sha256
