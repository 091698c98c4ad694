"""Phase 1, the block-wise warm start: each swapped block learns its original's function.

The teacher (the original model) runs on a batch with forward hooks on the modules the
Plan swapped; each hook keeps its module's input and output. Each new block then runs on
its original's input, and its loss is the mean squared error to the original's output, divided per
image by that output's mean square (so every block counts alike, whatever its scale).
Only the swapped blocks' parameters train; the whole student stays in eval mode, so no
BatchNorm statistic moves (see freeze_outside). The teacher's forward stops at the last
hooked block.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
from torch import nn

from parc_surgery.train.data import batches
from parc_surgery.train.distributed import Distributed, all_reduce_sum
from parc_surgery.train.evaluate import evaluating
from parc_surgery.train.features import normalised_mse

__all__ = ["BlockCapture", "BlockwiseStudent", "block_errors", "freeze_outside"]


class _AllCaptured(Exception):
    """Raised by the last hook: the rest of the teacher's forward is not needed."""


class BlockCapture:
    """Forward hooks on `paths` of `model`: `run(x)` returns their inputs and outputs."""

    def __init__(self, model: nn.Module, paths: Sequence[str]):
        self.model = model
        self.paths = list(paths)
        self.inputs: dict[str, tuple[tuple, dict]] = {}
        self.outputs: dict[str, torch.Tensor] = {}
        self._handles: list = []

    def __enter__(self) -> BlockCapture:
        for path in self.paths:
            module = self.model.get_submodule(path)
            self._handles.append(module.register_forward_hook(self._hook(path), with_kwargs=True))
        return self

    def __exit__(self, *exc) -> bool:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        return False

    def _hook(self, path: str):
        def keep(module, args, kwargs, output):
            self.inputs[path] = (args, kwargs)
            self.outputs[path] = output
            if len(self.outputs) == len(self.paths):
                raise _AllCaptured

        return keep

    @torch.no_grad()
    def run(self, x: torch.Tensor) -> tuple[dict, dict]:
        self.inputs, self.outputs = {}, {}
        with contextlib.suppress(_AllCaptured):
            self.model(x)
        missing = [p for p in self.paths if p not in self.outputs]
        if missing:
            raise RuntimeError(f"the teacher's forward never ran {', '.join(missing)}")
        return self.inputs, self.outputs


class BlockwiseStudent(nn.Module):
    """The student's swapped blocks as one module (what DDP wraps in phase 1).

    forward(inputs, targets) -> (mean normalised MSE, per-block values detached).
    """

    def __init__(self, student: nn.Module, paths: Sequence[str]):
        super().__init__()
        self.paths = list(paths)
        self.blocks = nn.ModuleList(student.get_submodule(p) for p in self.paths)

    def forward(self, inputs: dict, targets: dict) -> tuple[torch.Tensor, torch.Tensor]:
        errors = []
        for path, block in zip(self.paths, self.blocks, strict=True):
            args, kwargs = inputs[path]
            # Per image, so a batch's loss is the mean of its images' losses: the same
            # whether one process sees 16 images or two processes see 8 each.
            errors.append(normalised_mse(block(*args, **kwargs), targets[path]))
        stacked = torch.stack(errors)
        return stacked.mean(), stacked.detach()


def freeze_outside(student: nn.Module, paths: Sequence[str]) -> list[nn.Parameter]:
    """Freeze the student but the blocks at `paths`; returns their parameters.

    The whole student, swapped blocks included, stays in eval mode: a block learns the
    function it computes at inference (its BatchNorms normalise with the running
    statistics the original block left, which the teacher's eval-mode output also used),
    not a batch-statistics variant of it. Only the swapped blocks' parameters get gradients.
    """
    student.eval().requires_grad_(False)
    params: list[nn.Parameter] = []
    for path in paths:
        block = student.get_submodule(path)
        block.requires_grad_(True)
        params.extend(block.parameters())
    return params


@torch.no_grad()
def block_errors(
    student: nn.Module,
    teacher: nn.Module,
    paths: Sequence[str],
    loader,
    info: Distributed,
    *,
    max_images: int | None = None,
    channels_last: bool = False,
) -> dict[str, float]:
    """Each swapped block's normalised MSE to its original, both in eval mode, per image."""
    blocks = BlockwiseStudent(student, paths)
    sums = torch.zeros(len(paths) + 1, dtype=torch.float64, device=info.device)
    with evaluating(blocks), BlockCapture(teacher, paths) as capture:
        for images, _ in batches(loader):
            images = images.to(info.device, non_blocking=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            inputs, outputs = capture.run(images)
            _, per_block = blocks(inputs, outputs)
            sums[:-1] += per_block.double() * images.shape[0]
            sums[-1] += images.shape[0]
            if max_images is not None and sums[-1] >= max_images:
                break
    totals = all_reduce_sum(sums, info).tolist()
    count = totals[-1] or float("nan")
    return {path: value / count for path, value in zip(paths, totals[:-1], strict=True)}
