"""Shared checks for the mixer families: convert, reload, other sizes, no attention left."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

import parc_surgery as ps

__all__ = ["attention_left", "check_sizes", "convert_and_reload", "kept_weights_equal"]


def convert_and_reload(
    tmp_path: Path, name: str, model_args: dict, size: tuple[int, int], **kw
) -> tuple[object, nn.Module]:
    """Convert (verified), save, load back: the loaded model gives identical outputs."""
    out = tmp_path / f"{name}.safetensors"
    result = ps.convert(name, model_args=model_args, input_size=size, output=str(out), **kw)
    assert result.plan.swaps and result.verification.blocks_checked == len(result.plan.swaps)
    model = result.model.eval()
    loaded = ps.load(out).eval()
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    return result, model


def check_sizes(
    model: nn.Module,
    sizes: list[tuple[int, int]],
    classes: int,
    prepare: Callable[[nn.Module, tuple[int, int]], None] | None = None,
) -> None:
    """At each size: an eval forward, and a train forward + backward with finite grads."""
    for size in sizes:
        if prepare is not None:
            prepare(model, size)
        x = torch.randn(2, 3, *size)
        with torch.no_grad():
            y = model.eval()(x)
        assert y.shape == (2, classes) and torch.isfinite(y).all(), size
        model.train()
        model(x).square().mean().backward()
        grads = [p.grad for p in model.parameters() if p.requires_grad]
        assert all(g is not None and torch.isfinite(g).all() for g in grads), size
        model.zero_grad(set_to_none=True)
    model.eval()


def attention_left(model: nn.Module) -> list[str]:
    """Paths of modules that compute attention (by class name), e.g. a WindowAttention."""
    return [
        path
        for path, m in model.named_modules()
        if "attention" in type(m).__name__.lower() or type(m).__name__ in ("Attention",)
    ]


def kept_weights_equal(old: nn.Module, new: nn.Module, dropped: str, added: str) -> None:
    """Every state_dict entry but `dropped.*` is in `new` under the same key, unchanged;
    `new` adds only `added.*` keys."""
    old_sd, new_sd = old.state_dict(), new.state_dict()
    kept = {k for k in old_sd if f".{dropped}." not in f".{k}"}
    extra = {k for k in new_sd if k not in kept}
    assert extra and all(f".{added}." in f".{k}" for k in extra), sorted(extra)[:5]
    for key in kept:
        assert torch.equal(old_sd[key], new_sd[key]), key
