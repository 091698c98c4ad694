"""The attention in a model and the replacement that turns each into ParC.

`find_attention` reads a model and its ModelGraph and writes nothing; for every module
that computes attention (a class named ...Attention: timm's Attention, WindowAttention,
LinearSelfAttention, torch's MultiheadAttention; not a channel-attention gate) it
returns the block that a registered replacement converts: the nearest ancestor on the
spatial grid whose replacement builds for it (each is built once, on a copy, as
planning does). Attention that no replacement reaches is listed with the reason.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from parc_surgery.blocks.registry import (
    ReplacementContext,
    ReplacementError,
    get_replacement,
    replacement_names,
)
from parc_surgery.graph.model_graph import ModelGraph, ModuleInfo

__all__ = ["AttentionBlock", "find_attention", "is_attention"]


@dataclass(frozen=True)
class AttentionBlock:
    """One attention module and the block that converting it replaces."""

    attention: str  # path of the attention module, e.g. "blocks.3.attn"
    attention_type: str  # its class, e.g. "WindowAttention"
    block: str | None  # path of the block a replacement converts (None: none does)
    block_type: str | None
    stage: int | None
    feature_size: tuple[int, int] | None  # the grid the ParC kernels span
    replacement: str | None  # e.g. "parc_swin"
    reason: str | None = None  # why no replacement converts it

    def to_dict(self) -> dict:
        data = asdict(self)
        data["feature_size"] = list(self.feature_size) if self.feature_size else None
        return data


def is_attention(module: nn.Module) -> bool:
    """True for modules that compute attention over positions (not channel gates)."""
    name = type(module).__name__
    return isinstance(module, nn.MultiheadAttention) or (
        name.endswith("Attention") and "Channel" not in name
    )


def _ancestors(path: str) -> list[str]:
    parts = path.split(".")
    return [".".join(parts[:cut]) for cut in range(len(parts) - 1, 0, -1)]


def _builds(name: str, module: nn.Module, info: ModuleInfo) -> str | None:
    """None when replacement `name` builds for `module`, else why not."""
    ctx = ReplacementContext(
        path=info.path,
        feature_size=info.feature_size,
        stage=info.stage,
        index=info.index if info.index is not None else 0,
        first_in_container=True,
        prefix_tokens=info.prefix_tokens,
    )
    try:
        with torch.random.fork_rng(devices=[]):  # new weights must not move the caller's RNG
            get_replacement(name).builder(module, ctx)
    except ReplacementError as err:
        return err.what
    return None


def _block_replacement(block: str, module: nn.Module, graph: ModelGraph) -> tuple[str | None, str]:
    """(the replacement that builds for `block`, else None and why none does)."""
    info = graph.modules.get(block)
    names = [name for name in replacement_names() if get_replacement(name).can_replace(module)]
    if not names:
        return None, "no registered replacement accepts a block around it"
    if info is None or info.feature_size is None or info.stage is None or info.stage < 1:
        return None, f"{block} ({type(module).__name__}) is not on the spatial grid"
    reason = ""
    for name in names:
        why = _builds(name, module, info)
        if why is None:
            return name, ""
        reason = f"{name}: {why}"
    return None, reason


def find_attention(model: nn.Module, graph: ModelGraph) -> list[AttentionBlock]:
    """Every attention module of `model`, in model order, with the block that converts it."""
    modules = dict(model.named_modules())
    tried: dict[str, tuple[str | None, str]] = {}  # each block is built once
    found = []
    for path, module in modules.items():
        if not path or not is_attention(module):
            continue
        block, replacement, reason = (
            None,
            None,
            "no registered replacement accepts a block around it",
        )
        for ancestor in _ancestors(path):
            if ancestor not in tried:
                tried[ancestor] = _block_replacement(ancestor, modules[ancestor], graph)
            name, why = tried[ancestor]
            if name is not None:
                block, replacement, reason = ancestor, name, None
                break
            if not why.startswith("no registered"):
                reason = why  # the nearest block that a replacement accepts but cannot build
        info = graph.modules.get(block) if block else None
        found.append(
            AttentionBlock(
                attention=path,
                attention_type=type(module).__name__,
                block=block,
                block_type=info.type_name if info else None,
                stage=info.stage if info else None,
                feature_size=info.feature_size if info else None,
                replacement=replacement,
                reason=reason,
            )
        )
    return found
