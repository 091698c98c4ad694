"""ParC MobileViT block: the transformer of a timm MobileVitBlock becomes ParC meta-formers.

MobileViT's global path is unfold -> n transformer blocks -> LayerNorm -> fold. ParC-Net
replaces it with n ParC meta-former blocks (global circular convs in both directions plus a
conv FFN with channel attention) and a BatchNorm, which makes the block a pure ConvNet:
no unfold, no attention, any input size. conv_kxk, conv_1x1, conv_proj and conv_fusion
keep their weights under the same names.
"""

from __future__ import annotations

import copy

import torch
from timm.layers import DropPath, register_notrace_module
from torch import nn

from .local_conv import global_kernel_size, refuse_stride, require_type
from .registry import ReplacementContext, ReplacementError, register_replacement

__all__ = [
    "ChannelAttention",
    "ConvFfn",
    "ParCMetaFormerBlock",
    "ParCMobileVitBlock",
    "build_parc_mobilevit",
    "channel_shuffle",
]

_ACCEPTS = ("MobileVitBlock",)


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave the channels of `groups` equal groups (ShuffleNet's shuffle)."""
    # No shape arithmetic, so FX tracing and ONNX export see one static reshape pattern.
    return x.unflatten(1, (groups, -1)).transpose(1, 2).flatten(1, 2)


class ChannelAttention(nn.Module):
    """Squeeze-excitation gate: x * hardsigmoid(BN(conv(hardswish(BN(conv(avgpool(x)))))))."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        rd = max(1, channels // reduction)
        self.pool = nn.AdaptiveAvgPool2d(1)
        # No conv biases: each conv is followed by a BN, as in the official CA layer.
        self.fc = nn.Sequential(
            nn.Conv2d(channels, rd, 1, bias=False),
            nn.BatchNorm2d(rd),
            nn.Hardswish(),
            nn.Conv2d(rd, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.Hardsigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.fc(self.pool(x))


class ConvFfn(nn.Module):
    """The meta-former's channel mixer: BN -> 1x1 conv -> Hardswish -> 1x1 conv."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(dim)
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.act = nn.Hardswish()
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.norm(x))))


class ParCMetaFormerBlock(nn.Module):
    """ParC-Net's meta-former block (official `gcc_ca_mf_block`, PARC.md section 3).

    Spatial part: halves x1, x2 -> BN -> H-ParC / W-ParC -> channel shuffle -> W-ParC /
    H-ParC, plus the residual. Channel part: x + CA(FFN(x)). All ParCs are depthwise,
    global and without bias; pe lives in the ParC modules (only the stack's first block
    gets one).
    """

    def __init__(
        self,
        dim: int,
        kernel_size: tuple[int, int],
        ffn_dim: int,
        use_pe: bool = True,
        impl: str = "auto",
        drop_path: float = 0.0,
    ):
        super().__init__()
        from parc_surgery.ops import ParC, ParCPair  # late: the registry imports without ops

        if dim % 2:
            raise ValueError(f"ParCMetaFormerBlock needs an even dim to split in halves, got {dim}")
        kh, kw = kernel_size
        half = dim // 2
        # BatchNorm is per channel, so one BN over D is exactly one BN per half.
        self.norm = nn.BatchNorm2d(dim)
        self.parc1 = ParCPair(
            dim, (kh, kw), groups_per_half=None, use_pe=use_pe, bias=False, impl=impl
        )  # x1 -> H, x2 -> W
        # After the shuffle the directions swap: x1 -> W, x2 -> H.
        self.parc2_w = ParC(half, half, "W", kw, groups=half, use_pe=use_pe, bias=False, impl=impl)
        self.parc2_h = ParC(half, half, "H", kh, groups=half, use_pe=use_pe, bias=False, impl=impl)
        self.ffn = ConvFfn(dim, ffn_dim)
        self.ca = ChannelAttention(dim)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = channel_shuffle(self.parc1(self.norm(x)), 2)
        y1, y2 = y.chunk(2, dim=1)
        y = torch.cat([self.parc2_w(y1), self.parc2_h(y2)], dim=1)
        x = x + self.drop_path(y)
        return x + self.drop_path(self.ca(self.ffn(x)))


@register_notrace_module  # an FX leaf, as its ParCs (timm feature extraction)
class ParCMobileVitBlock(nn.Module):
    """MobileViT block with its transformer replaced by a stack of ParC meta-former blocks.

    forward: conv_kxk -> conv_1x1 -> parc_blocks -> norm -> conv_proj -> conv_fusion(cat
    (shortcut, x)), the same order as timm's MobileVitBlock minus unfold/fold.
    """

    def __init__(
        self,
        conv_kxk: nn.Module,
        conv_1x1: nn.Module,
        conv_proj: nn.Module,
        conv_fusion: nn.Module | None,
        dim: int,
        kernel_size: tuple[int, int],
        ffn_dims: list[int],
        use_pe: bool = True,
        impl: str = "auto",
        drop_path_rates: list[float] | None = None,
    ):
        super().__init__()
        rates = drop_path_rates or [0.0] * len(ffn_dims)
        self.conv_kxk = conv_kxk
        self.conv_1x1 = conv_1x1
        self.parc_blocks = nn.Sequential(
            *[
                # pe marks absolute position once; later blocks inherit it in the features.
                ParCMetaFormerBlock(dim, kernel_size, ffn, use_pe and i == 0, impl, rate)
                for i, (ffn, rate) in enumerate(zip(ffn_dims, rates, strict=True))
            ]
        )
        self.norm = nn.BatchNorm2d(dim)
        self.conv_proj = conv_proj
        self.conv_fusion = conv_fusion

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.conv_1x1(self.conv_kxk(x))
        x = self.norm(self.parc_blocks(x))
        x = self.conv_proj(x)
        if self.conv_fusion is not None:
            x = self.conv_fusion(torch.cat((shortcut, x), dim=1))
        return x


def _transformer_dims(module: nn.Module, ctx: ReplacementContext) -> tuple[list[int], list[float]]:
    """Per transformer block: its MLP hidden width and its drop-path rate."""
    ffn_dims, rates = [], []
    for i, blk in enumerate(module.transformer):
        fc1 = getattr(getattr(blk, "mlp", None), "fc1", None)
        if fc1 is None or not hasattr(fc1, "out_features"):
            raise ReplacementError(
                f"transformer.{i} is a {type(blk).__name__} without an mlp.fc1 Linear, so "
                "its FFN width is unknown",
                where=ctx.path,
            )
        ffn_dims.append(fc1.out_features)
        drop = getattr(blk, "drop_path1", None)
        rates.append(float(getattr(drop, "drop_prob", 0.0)) if drop is not None else 0.0)
    return ffn_dims, rates


@register_replacement("parc_mobilevit", accepts=_ACCEPTS, level="block")
def build_parc_mobilevit(module: nn.Module, ctx: ReplacementContext) -> nn.Module:
    """MobileVitBlock -> ParCMobileVitBlock: n ParC meta-formers + BN instead of attention."""
    require_type(module, ctx, _ACCEPTS, "parc_mobilevit")
    if ctx.init == "from_local":
        raise ReplacementError(
            "init from_local needs a local kernel to start from, and a MobileViT transformer "
            "has none",
            where=ctx.path,
            hint="use init: paper for parc_mobilevit",
        )
    # The global kernel is the feature size at the block's input, which the global path
    # only keeps if conv_kxk does not downsample.
    strides = [s for m in module.conv_kxk.modules() if isinstance(m, nn.Conv2d) for s in m.stride]
    if any(s != 1 for s in strides):
        refuse_stride(ctx, "this MobileVitBlock's conv_kxk has stride 2")
    dim = module.conv_1x1.out_channels
    if dim % 2:
        raise ReplacementError(
            f"transformer dim {dim} is odd; the ParC meta-former splits it into two halves",
            where=ctx.path,
        )
    ffn_dims, rates = _transformer_dims(module, ctx)
    new = ParCMobileVitBlock(
        copy.deepcopy(module.conv_kxk),
        copy.deepcopy(module.conv_1x1),
        copy.deepcopy(module.conv_proj),
        copy.deepcopy(module.conv_fusion),
        dim,
        global_kernel_size(ctx),
        ffn_dims,
        use_pe=ctx.pe,
        impl=ctx.impl,
        drop_path_rates=rates,
    )
    weight = module.conv_1x1.weight
    return new.to(device=weight.device, dtype=weight.dtype).train(module.training)
