"""Phase 2's feature term and the new blocks' own learning rate.

Feature distillation: during fine-tuning each swapped block's output in the student is
pulled towards the original block's output in the teacher, on the same images, with the
normalised MSE the warm start uses (per image, divided by the teacher output's mean
square, so every block counts alike). Unlike the warm start, the student block runs on
the student's own input: the term keeps the new blocks close to what the rest of the
network expects while everything trains together.

`parc_param_groups` splits the student's parameters into the swapped blocks' and the
rest, each with and without weight decay, for timm's create_optimizer_v2; the swapped
blocks' groups carry timm's `lr_scale`, which timm's schedulers multiply into the lr.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["FeatureCapture", "normalised_mse", "parc_param_groups"]


def normalised_mse(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of each image's MSE divided by the target's mean square."""
    target = target.float().flatten(1)
    out = out.float().flatten(1)
    error = (out - target).pow(2).mean(1) / target.pow(2).mean(1).clamp_min(1e-12)
    return error.mean()


class FeatureCapture:
    """Forward hooks that keep the outputs of `paths` of `model` (the whole forward runs).

    As a context manager the hooks are on; `outputs` maps each path to its latest output
    (with its autograd graph when the forward ran with gradients).
    """

    def __init__(self, model: nn.Module, paths: Sequence[str]):
        self.model = model
        self.paths = list(paths)
        self.outputs: dict[str, torch.Tensor] = {}
        self._handles: list = []

    def __enter__(self) -> FeatureCapture:
        for path in self.paths:
            module = self.model.get_submodule(path)
            self._handles.append(module.register_forward_hook(self._hook(path)))
        return self

    def __exit__(self, *exc) -> bool:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        return False

    def _hook(self, path: str):
        def keep(module, args, output):
            self.outputs[path] = output

        return keep

    def loss(self, targets: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean over the paths of normalised_mse(own output, `targets[path]`)."""
        missing = [p for p in self.paths if p not in self.outputs or p not in targets]
        if missing:
            raise RuntimeError(f"no output captured for {', '.join(missing)}")
        errors = [normalised_mse(self.outputs[p], targets[p].detach()) for p in self.paths]
        return torch.stack(errors).mean()


def parc_param_groups(
    model: nn.Module, paths: Sequence[str], weight_decay: float, lr_scale: float
) -> list[dict[str, Any]]:
    """Parameter groups: the rest, then the blocks at `paths` (timm `lr_scale`=lr_scale).

    As timm's default (filter_bias_and_bn), biases and 1-d weights get no weight decay.
    Empty groups are left out; the first group is the rest's whenever it has parameters.
    """
    prefixes = tuple(f"{p}." for p in paths)
    buckets: dict[tuple[bool, bool], list[nn.Parameter]] = {
        (False, True): [],
        (False, False): [],
        (True, True): [],
        (True, False): [],
    }
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        new = name.startswith(prefixes)
        decay = not (param.ndim <= 1 or name.endswith(".bias"))
        buckets[(new, decay)].append(param)
    groups = []
    for (new, decay), params in buckets.items():
        if params:
            groups.append(
                {
                    "params": params,
                    "weight_decay": weight_decay if decay else 0.0,
                    "lr_scale": lr_scale if new else 1.0,
                }
            )
    return groups
