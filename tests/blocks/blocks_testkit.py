"""Shared helpers for the replacement-block tests: feature sizes, swap checks, smooth inputs."""

from __future__ import annotations

import math

import torch
from torch import nn

from parc_surgery.blocks import ReplacementContext
from parc_surgery.options import SwapOptions

__all__ = [
    "block_inputs",
    "check_runs_anywhere",
    "context",
    "param_count",
    "rel_err",
    "smooth_input",
    "snapshot",
]


@torch.no_grad()
def block_inputs(model: nn.Module, size: tuple[int, int]) -> dict[str, torch.Tensor]:
    """Each submodule's input at `size` (batch 2), recorded by forward pre-hooks."""
    seen: dict[str, torch.Tensor] = {}
    hooks = [
        m.register_forward_pre_hook(lambda _m, a, n=n: seen.setdefault(n, a[0].detach()))
        for n, m in model.named_modules()
        if n
    ]
    try:
        model.eval()(torch.randn(2, 3, *size))
    finally:
        for h in hooks:
            h.remove()
    return seen


def context(path: str, x: torch.Tensor, **kw) -> ReplacementContext:
    """A ReplacementContext for the block at `path` whose input is `x`."""
    defaults = dict(stage=3, index=1, first_in_container=True)
    option_names = set(SwapOptions.model_fields)
    options = dict(kw.pop("options", {}))
    options.update({k: kw.pop(k) for k in list(kw) if k in option_names})
    defaults.update(kw)
    return ReplacementContext(
        path=path, feature_size=tuple(x.shape[-2:]), options=SwapOptions(**options), **defaults
    )


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def param_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def check_runs_anywhere(new: nn.Module, channels: int, other: tuple[int, int]) -> None:
    """`new` runs at the non-square size `other` in train and eval mode, with a backward."""
    for train in (True, False):
        new.train(train)
        x = torch.randn(2, channels, *other, requires_grad=True)
        y = new(x)
        assert y.shape[-2:] == other and torch.isfinite(y).all()
        y.square().mean().backward()
        assert x.grad is not None and torch.isfinite(x.grad).all()
        grads = [p.grad for p in new.parameters() if p.requires_grad]
        assert all(g is not None for g in grads)
        new.zero_grad(set_to_none=True)


def smooth_input(b: int, c: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """Random mix of the lowest spatial frequencies (0 and 1 period per side) per channel."""
    g = torch.Generator().manual_seed(seed)
    i = torch.arange(h, dtype=torch.float32).view(1, 1, h, 1) / h
    j = torch.arange(w, dtype=torch.float32).view(1, 1, 1, w) / w
    x = torch.zeros(b, c, h, w)
    for fh, fw in ((0, 0), (1, 0), (0, 1), (1, 1)):
        amp = torch.randn(b, c, 1, 1, generator=g)
        phase = torch.rand(b, c, 1, 1, generator=g) * 2 * math.pi
        x += amp * torch.cos(2 * math.pi * (fh * i + fw * j) + phase)
    return x


def rel_err(y: torch.Tensor, ref: torch.Tensor) -> float:
    return ((y - ref).norm() / ref.norm()).item()
