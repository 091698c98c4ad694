"""Evaluation: top-1, top-5, mean cross-entropy and images per second, over all ranks."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from parc_surgery.train.data import batches, head_classes
from parc_surgery.train.distributed import Distributed, all_reduce_sum, unwrap

__all__ = ["EvalResult", "autocast_for", "evaluate", "evaluating"]


@dataclass
class EvalResult:
    """Accuracy in percent, loss in nats per image, counted over every rank's shard."""

    top1: float
    top5: float
    loss: float
    images: int
    seconds: float
    images_per_s: float
    topk: int = 5  # min(5, classes): top-5 of a 3-class head would always be 100%

    def to_dict(self) -> dict:
        return asdict(self)


@contextlib.contextmanager
def evaluating(model: nn.Module):
    """Eval mode inside; afterwards every module gets back its own mode (in phase 1 they
    differ: a model-wide .train(flag) would not restore them)."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, mode in modes:
            module.training = mode


def autocast_for(device: torch.device, amp: bool):
    """bf16 autocast on CUDA when asked; a no-op elsewhere (CPU runs stay fp32)."""
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def evaluate(
    model: nn.Module,
    loader,
    info: Distributed,
    *,
    amp: bool = True,
    channels_last: bool = False,
    on_batch: Callable[[int], None] | None = None,
) -> EvalResult:
    """Run `model` in eval mode over `loader`; sums are all-reduced before dividing.

    images/s is the images of all ranks over this rank's wall time, data loading included.
    """
    sums = torch.zeros(4, dtype=torch.float64, device=info.device)  # top1, top5, loss, n
    topk = min(5, head_classes(unwrap(model)) or 5)
    start = time.perf_counter()
    with evaluating(model), torch.inference_mode():
        for images, targets in batches(loader):
            images = images.to(info.device, non_blocking=True)
            targets = targets.to(info.device, non_blocking=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with autocast_for(info.device, amp):
                logits = model(images)
            logits = logits.float()
            best = logits.topk(topk, dim=1).indices
            hits = best.eq(targets[:, None])
            sums[0] += hits[:, 0].sum()
            sums[1] += hits.any(dim=1).sum()
            sums[2] += F.cross_entropy(logits, targets, reduction="sum")
            sums[3] += targets.numel()
            if on_batch is not None:
                on_batch(targets.numel())
    seconds = time.perf_counter() - start
    top1, top5, loss, count = all_reduce_sum(sums, info).tolist()
    share = 1.0 / count if count else float("nan")
    return EvalResult(
        top1=100.0 * top1 * share,
        top5=100.0 * top5 * share,
        loss=loss * share,
        images=int(count),
        seconds=seconds,
        images_per_s=count / seconds if seconds > 0 else 0.0,
        topk=topk,
    )
