"""What a module costs: parameters and multiply-accumulates, counted one way everywhere.

MACs come from torch.utils.flop_counter at batch 1 (or the given shape) with every ParC
forced to its spatial backend: the FFT backend's complex multiplies are not counted as
MACs by the flop counter, so counting it would make ParC look free. The plan's per-swap
costs and `parc-surgery bench` both count here, so their numbers agree.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from parc_surgery.models import eval_mode, input_channels
from parc_surgery.ops import forced_impl

__all__ = ["count_macs", "count_params", "model_macs"]


def count_params(module: nn.Module) -> int:
    """Number of parameters (shared ones once)."""
    return sum(p.numel() for p in module.parameters())


def count_macs(module: nn.Module, in_shape: Iterable[int]) -> int:
    """MACs of one forward on a zero input of `in_shape` (batch included), in eval mode.

    The input has the module's dtype and device; training flags are restored afterwards.
    """
    ref = next(iter(module.parameters()), None)
    floating = ref is not None and ref.is_floating_point()
    x = torch.zeros(
        tuple(in_shape),
        dtype=ref.dtype if floating else torch.float32,
        device=ref.device if ref is not None else None,
    )
    counter = FlopCounterMode(display=False)
    with eval_mode(module), torch.no_grad(), forced_impl("spatial"), counter:
        module(x)
    return int(counter.get_total_flops() // 2)


def model_macs(model: nn.Module, input_size: tuple[int, int], *, batch: int = 1) -> int:
    """MACs of one forward of a whole model on `batch` images of `input_size` (H, W)."""
    return count_macs(model, (batch, input_channels(model), *input_size))
