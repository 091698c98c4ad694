"""find_attention: every attention module, and the block a replacement converts."""

from __future__ import annotations

import timm
import torch
from torch import nn

from parc_surgery.attention import find_attention, is_attention
from parc_surgery.blocks import ChannelAttention
from parc_surgery.graph import analyze


class Block(nn.Module):  # named like timm's ViT block, but not one: parc_vit refuses it
    def __init__(self, dim: int):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, 2, batch_first=True)

    def forward(self, x):
        return x + self.attn(x, x, x, need_weights=False)[0]


class Wrapped(Block):  # a class no replacement accepts
    pass


class TokenNet(nn.Module):
    def __init__(self, block: type[nn.Module]):
        super().__init__()
        self.embed = nn.Conv2d(3, 16, 8, stride=8)
        self.blocks = nn.Sequential(block(16), block(16))

    def forward(self, x):
        return self.blocks(self.embed(x).flatten(2).transpose(1, 2)).mean(1)


def test_vit_attention_is_converted_by_its_block():
    model = timm.create_model("vit_tiny_patch16_224", img_size=64, patch_size=8, depth=2)
    found = find_attention(model, analyze(model, (64, 64)))
    assert [(f.attention, f.block, f.replacement) for f in found] == [
        ("blocks.0.attn", "blocks.0", "parc_vit"),
        ("blocks.1.attn", "blocks.1", "parc_vit"),
    ]
    assert found[0].feature_size == (8, 8) and found[0].stage == 2
    assert found[0].to_dict()["feature_size"] == [8, 8]


def test_attention_no_replacement_converts_says_why():
    for block, reason in ((Wrapped, "no registered replacement"), (Block, "parc_vit: parc_vit")):
        model = TokenNet(block).eval()
        before = torch.random.get_rng_state()
        found = find_attention(model, analyze(model, (64, 64)))
        assert torch.equal(before, torch.random.get_rng_state())  # trial builds leave no trace
        assert [f.attention for f in found] == ["blocks.0.attn", "blocks.1.attn"]
        assert all(f.replacement is None and f.reason.startswith(reason) for f in found)


def test_channel_attention_gates_are_not_attention():
    assert not is_attention(ChannelAttention(16))
    assert is_attention(nn.MultiheadAttention(16, 2))
