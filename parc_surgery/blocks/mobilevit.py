"""The ParC meta-former block and the minimal MobileViT swap (`parc_mobilevit`).

MobileViT's global path is unfold -> n transformer blocks -> LayerNorm -> fold. ParC-Net
replaces it with n ParC meta-former blocks (global circular convs in both directions plus a
conv FFN with channel attention) and a BatchNorm, which makes the block a pure ConvNet:
no unfold, no attention, any input size. The minimal swap here keeps conv_kxk, conv_1x1,
conv_proj and conv_fusion with their weights and MobileViT's widths: a ParC-MobileViT
with MobileViT widths, not ParC-Net-S (that is `parcnet_s_block` in parcnet_s.py).
"""

from __future__ import annotations

import copy

import torch
from timm.layers import DropPath
from torch import nn

from parc_surgery.ops.fx_leaf import fx_leaf

from .local_conv import global_kernel_size, refuse_stride, require_type
from .registry import ReplacementContext, ReplacementError, register_replacement

__all__ = [
    "ChannelAttention",
    "ConvFfn",
    "ParCMetaFormerBlock",
    "ParCMobileVitBlock",
    "PositionEmbedding",
    "build_parc_mobilevit",
    "channel_shuffle",
    "check_mobilevit_block",
    "transformer_dims",
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
    """The meta-former's channel mixer: BN -> 1x1 conv -> Hardswish -> 1x1 conv -> Dropout.

    The dropout (0.1 in ParC-Net-S, after the second conv) acts in train mode only.
    """

    def __init__(self, dim: int, hidden: int, drop: float = 0.1):
        super().__init__()
        self.norm = nn.BatchNorm2d(dim)
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.act = nn.Hardswish()
        self.fc2 = nn.Conv2d(hidden, dim, 1)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.act(self.fc1(self.norm(x)))))


class PositionEmbedding(nn.Module):
    """x + pe, pe (1, C, K, 1) for 'H' or (1, C, 1, K) for 'W', resampled to the input length.

    The meta-former adds its first pe before a BatchNorm, so it cannot live inside a ParC
    (which adds pe right before its circular conv); resampling follows ParC's rule.
    """

    def __init__(self, channels: int, direction: str, length: int):
        super().__init__()
        from parc_surgery.ops.functional import kernel_axis  # late: registry imports without ops

        self.axis = kernel_axis(direction)
        shape = (1, channels, length, 1) if direction == "H" else (1, channels, 1, length)
        self.pe = nn.Parameter(torch.randn(shape))  # randn (std 1) as the official block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from parc_surgery.ops import resample_kernel

        return x + resample_kernel(self.pe, x.shape[self.axis], self.axis).to(x.dtype)


class ParCMetaFormerBlock(nn.Module):
    """ParC-Net's meta-former block (official `gcc_ca_mf_block`, PARC.md section 3).

    On the halves x1, x2 of a D-channel input (D/2 each):
      1. first block of a stack only: x1 + pe_h, x2 + pe_w (before the norm); then a
         BatchNorm per half (norm_h, norm_w);
      2. x1 -> H-ParC (parc1_h), x2 -> W-ParC (parc1_w);
      3. mid_mix only (off in ParC-Net-S): shuffle the channels of the two halves;
      4. x1 -> W-ParC (parc2_w), x2 -> H-ParC (parc2_h), whose own pe (first block only)
         is the official second-stage embedding; no norm before them;
      5. x = x + cat(x1, x2); then x = x + CA(FFN(x)).
    Every ParC is depthwise and global, without bias unless `bias`. Parameters start as
    the official ones: kernels (and bias) as nn.Conv2d (randn bias), pe randn, the FFN and
    CA convs kaiming_normal(fan_out) with zero bias.
    """

    def __init__(
        self,
        dim: int,
        kernel_size: tuple[int, int],
        ffn_dim: int,
        use_pe: bool = True,
        impl: str = "auto",
        drop_path: float = 0.0,
        mid_mix: bool = False,
        bias: bool = False,
        ffn_drop: float = 0.1,
    ):
        super().__init__()
        from parc_surgery.ops import ParC  # late: the registry imports without ops

        if dim % 2:
            raise ValueError(f"ParCMetaFormerBlock needs an even dim to split in halves, got {dim}")
        kh, kw = kernel_size
        half = dim // 2

        def parc(direction: str, length: int, pe: bool) -> nn.Module:
            return ParC(half, half, direction, length, half, pe, bias, impl)

        self.pe_h = PositionEmbedding(half, "H", kh) if use_pe else None
        self.pe_w = PositionEmbedding(half, "W", kw) if use_pe else None
        self.norm_h = nn.BatchNorm2d(half)
        self.norm_w = nn.BatchNorm2d(half)
        self.parc1_h = parc("H", kh, False)
        self.parc1_w = parc("W", kw, False)
        self.mid_mix = mid_mix
        self.parc2_w = parc("W", kw, use_pe)
        self.parc2_h = parc("H", kh, use_pe)
        self.ffn = ConvFfn(dim, ffn_dim, ffn_drop)
        self.ca = ChannelAttention(dim)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """The official initialisation (see the class docstring)."""
        for parc in (self.parc1_h, self.parc1_w, self.parc2_w, self.parc2_h):
            parc.reset_parameters()  # nn.Conv2d's rule for the kernel
            if parc.bias is not None:
                parc.bias.normal_()
            if parc.pe is not None:
                parc.pe.normal_()
        for pe in (self.pe_h, self.pe_w):
            if pe is not None:
                pe.pe.normal_()
        for conv in (self.ffn.fc1, self.ffn.fc2, self.ca.fc[0], self.ca.fc[3]):
            nn.init.kaiming_normal_(conv.weight, mode="fan_out")
            if conv.bias is not None:
                conv.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x.chunk(2, dim=1)
        if self.pe_h is not None and self.pe_w is not None:
            x1, x2 = self.pe_h(x1), self.pe_w(x2)
        y1 = self.parc1_h(self.norm_h(x1))
        y2 = self.parc1_w(self.norm_w(x2))
        if self.mid_mix:
            y1, y2 = channel_shuffle(torch.cat((y1, y2), dim=1), 2).chunk(2, dim=1)
        y = torch.cat((self.parc2_w(y1), self.parc2_h(y2)), dim=1)
        x = x + self.drop_path(y)
        return x + self.drop_path(self.ca(self.ffn(x)))


@fx_leaf  # an FX leaf, as its ParCs (timm feature extraction)
class ParCMobileVitBlock(nn.Module):
    """MobileViT block with its transformer replaced by a stack of ParC meta-former blocks.

    forward: conv_kxk -> conv_1x1 -> parc_blocks -> norm -> conv_proj -> conv_fusion(cat
    (shortcut, x)), the same order as timm's MobileVitBlock minus unfold/fold; with
    fusion="add" (ParC-Net-XS) conv_fusion reads shortcut + x instead. The conversions
    (`parc_mobilevit`, `parcnet_s_block`, `parcnet_xs_block`) build this class; they
    differ in the convs around the stack, its widths and depth.
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
        mid_mix: bool = False,
        bias: bool = False,
        fusion: str = "concat",
    ):
        super().__init__()
        if fusion not in ("concat", "add"):
            raise ValueError(f"fusion must be 'concat' or 'add', got {fusion!r}")
        rates = drop_path_rates or [0.0] * len(ffn_dims)
        self.conv_kxk = conv_kxk
        self.conv_1x1 = conv_1x1
        self.parc_blocks = nn.Sequential(
            *[
                # pe marks absolute position once; later blocks inherit it in the features.
                ParCMetaFormerBlock(
                    dim, kernel_size, ffn, use_pe and i == 0, impl, rate, mid_mix, bias
                )
                for i, (ffn, rate) in enumerate(zip(ffn_dims, rates, strict=True))
            ]
        )
        self.norm = nn.BatchNorm2d(dim)
        self.conv_proj = conv_proj
        self.conv_fusion = conv_fusion
        self.fusion = fusion

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.conv_1x1(self.conv_kxk(x))
        x = self.norm(self.parc_blocks(x))
        x = self.conv_proj(x)
        if self.conv_fusion is not None:
            fused = shortcut + x if self.fusion == "add" else torch.cat((shortcut, x), dim=1)
            x = self.conv_fusion(fused)
        return x


def transformer_dims(module: nn.Module, ctx: ReplacementContext) -> tuple[list[int], list[float]]:
    """Per transformer block of a MobileVitBlock: its MLP hidden width and drop-path rate."""
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


def check_mobilevit_block(module: nn.Module, ctx: ReplacementContext, name: str) -> None:
    """Refuse what neither MobileViT conversion can do: other types, from_local, stride 2."""
    require_type(module, ctx, _ACCEPTS, name)
    if ctx.init == "from_local":
        raise ReplacementError(
            "init from_local needs a local kernel to start from, and a MobileViT transformer "
            "has none",
            where=ctx.path,
            hint=f"use init: paper for {name}",
        )
    # The global kernel is the feature size at the block's input, which the global path
    # only keeps if conv_kxk does not downsample.
    strides = [s for m in module.conv_kxk.modules() if isinstance(m, nn.Conv2d) for s in m.stride]
    if any(s != 1 for s in strides):
        refuse_stride(ctx, "this MobileVitBlock's conv_kxk has stride 2")


@register_replacement("parc_mobilevit", accepts=_ACCEPTS, level="block")
def build_parc_mobilevit(module: nn.Module, ctx: ReplacementContext) -> nn.Module:
    """MobileVitBlock -> ParC-MobileViT with MobileViT widths (the minimal swap).

    n ParC meta-formers of width D = the transformer dim and FFN width = the replaced
    MLP's, plus a BN, replace unfold -> transformer -> norm -> fold; conv_kxk, conv_1x1,
    conv_proj and conv_fusion keep their weights. Not ParC-Net-S (see parcnet_s_block).
    """
    check_mobilevit_block(module, ctx, "parc_mobilevit")
    dim = module.conv_1x1.out_channels
    if dim % 2:
        raise ReplacementError(
            f"transformer dim {dim} is odd; the ParC meta-former splits it into two halves",
            where=ctx.path,
        )
    ffn_dims, rates = transformer_dims(module, ctx)
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
        mid_mix=ctx.options.mid_mix,
        bias=bool(ctx.options.bias),
    )
    weight = module.conv_1x1.weight
    return new.to(device=weight.device, dtype=weight.dtype).train(module.training)
