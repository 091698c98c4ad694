"""What a module costs: parameters and multiply-accumulates, counted one way everywhere.

MACs come from torch.utils.flop_counter at batch 1 (or the given shape) with every ParC
forced to its spatial backend: the FFT backend's complex multiplies are not counted as
MACs by the flop counter, so counting it would make ParC look free. The plan's per-swap
costs and `parc-surgery bench` both count here, so their numbers agree.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterable, Iterator

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from parc_surgery.models import eval_mode, input_channels
from parc_surgery.ops import forced_impl

__all__ = ["count_macs", "count_params", "counting_form", "model_macs"]


def count_params(module: nn.Module) -> int:
    """Number of parameters (shared ones once)."""
    return sum(p.numel() for p in module.parameters())


@contextlib.contextmanager
def counting_form(module: nn.Module) -> Iterator[None]:
    """`module` as MACs are counted: eval mode, ParC in its spatial form, fused attention
    (scaled_dot_product_attention) as its matmuls (torch's flop counter counts no fused CPU
    kernel), and no parameter requiring grad (the counter's module tracker fails on a
    parameter passed straight to a submodule: PiT's and CaiT's class tokens)."""
    grads = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in grads:
        p.requires_grad_(False)
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(eval_mode(module))
            stack.enter_context(forced_impl("spatial"))
            try:
                from torch.nn.attention import SDPBackend, sdpa_kernel
            except ImportError:  # torch < 2.3 has no sdpa_kernel
                pass
            else:
                stack.enter_context(sdpa_kernel(SDPBackend.MATH))
            # nn.MultiheadAttention's inference fast path (torchvision's ViT) is one fused
            # kernel the counter does not count: off, it runs as its matmuls.
            mha = getattr(torch.backends, "mha", None)
            if mha is not None:
                was = mha.get_fastpath_enabled()
                mha.set_fastpath_enabled(False)
                stack.callback(mha.set_fastpath_enabled, was)
            yield
    finally:
        for p, flag in grads:
            p.requires_grad_(flag)


def count_macs(
    module: nn.Module, in_shape: Iterable[int], grid: tuple[int, int] | None = None
) -> int:
    """MACs of one forward on a zero input of `in_shape` (batch included), in eval mode.

    The input has the module's dtype and device; training flags are restored afterwards.
    A block whose forward also takes the token grid (Twins: `forward(x, size)`) gets `grid`.
    """
    ref = next(iter(module.parameters()), None)
    floating = ref is not None and ref.is_floating_point()
    x = torch.zeros(
        tuple(in_shape),
        dtype=ref.dtype if floating else torch.float32,
        device=ref.device if ref is not None else None,
    )
    counter = FlopCounterMode(display=False)
    with counting_form(module), torch.no_grad(), counter:
        module(x, tuple(grid)) if grid is not None and _takes_grid(module) else module(x)
    return int(counter.get_total_flops() // 2)


def _takes_grid(module: nn.Module) -> bool:
    params = list(inspect.signature(module.forward).parameters.values())
    return len(params) > 1 and params[1].name == "size" and params[1].default is params[1].empty


def model_macs(model: nn.Module, input_size: tuple[int, int], *, batch: int = 1) -> int:
    """MACs of one forward of a whole model on `batch` images of `input_size` (H, W)."""
    return count_macs(model, (batch, input_channels(model), *input_size))
