"""ParC ViT block: a timm ViT / DeiT block whose attention is ParC on the patch-token grid.

The patch tokens of a plain ViT are a (H/p) x (W/p) grid in disguise. The block's
attention becomes the ParC spatial mixer (blocks.parc_mixer) on that grid; everything
else is the model's own and keeps its weights and state_dict keys: norm1, ls1,
drop_path1, norm2, mlp, ls2, drop_path2 (only `attn.*` becomes `mixer.*`).

Class and register tokens (the model's num_prefix_tokens) bypass the spatial mixer: each
gets the mean of the mixer's output over the grid, attention's output for a token that
attends to every patch alike, so a class-token head still sees the whole image; they
keep the MLP path. Without that the class token would never see a patch again.

The grid at run time: the tokens carry no shape, so the block reads it from their
number. The conversion grid, or any grid of the same aspect ratio (a square ViT at any
square size), is found alone; another aspect ratio needs `set_token_grid(model, (h, w))`
first (TokenGridError says so). EfficientFormer's last stage uses the same block with no
prefix tokens (blocks.efficientformer).
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from parc_surgery.errors import UsageError
from parc_surgery.ops.fx_leaf import fx_leaf

from .local_conv import global_kernel_size, require_type
from .parc_mixer import ParCSpatialMixer
from .registry import ReplacementContext, ReplacementError, register_replacement

__all__ = [
    "ParCViTBlock",
    "TokenGridError",
    "build_parc_vit",
    "refuse_init_from_local",
    "set_token_grid",
    "token_grid",
]

_ACCEPTS = ("Block",)
_VIT_MODULE = "timm.models.vision_transformer"
# The attributes a timm pre-norm transformer block has besides its token mixer.
_KEPT = ("norm1", "ls1", "drop_path1", "norm2", "mlp", "ls2", "drop_path2")


class TokenGridError(UsageError, ValueError):
    """A ParC token block got a number of patch tokens it cannot lay out as a grid."""


def token_grid(
    cells: int, built: tuple[int, int], override: tuple[int, int] | None = None
) -> tuple[int, int]:
    """(h, w) of `cells` patch tokens: `override` if set, else the built grid scaled.

    A grid of another aspect ratio than `built` cannot be told from its transpose (or any
    other factorisation), so it is refused rather than guessed.
    """
    if override is not None:
        h, w = override
        if h * w != cells:
            raise TokenGridError(
                f"the token grid was set to {h}x{w} ({h * w} patches) but the block got "
                f"{cells} patch tokens",
                hint="call set_token_grid(model, (h, w)) with the grid of this input, or "
                "set_token_grid(model, None) to infer square-like grids again",
            )
        return h, w
    kh, kw = built
    step = math.gcd(kh, kw)
    a, b = kh // step, kw // step
    scale = math.isqrt(cells // (a * b)) if cells >= a * b else 0
    if scale and a * b * scale * scale == cells:
        return a * scale, b * scale
    raise TokenGridError(
        f"{cells} patch tokens are not a grid of the conversion's {kh}x{kw} aspect ratio, "
        "so the ParC blocks cannot tell its height from its width",
        hint="call parc_surgery.blocks.set_token_grid(model, (h, w)) with the patch grid of "
        "this input size (a timm ViT's model.patch_embed.dynamic_feat_size((H, W)))",
    )


@fx_leaf
class ParCViTBlock(nn.Module):
    """Pre-norm transformer block with ParC on the token grid instead of attention.

    forward(x: (B, prefix + h * w, C)) -> same shape; `grid_size` is the conversion grid,
    `runtime_grid` an explicit grid for other aspect ratios (set_token_grid).
    """

    def __init__(
        self,
        block: nn.Module,
        mixer: ParCSpatialMixer,
        grid_size: tuple[int, int],
        prefix_tokens: int = 0,
    ):
        super().__init__()
        for name in _KEPT:  # absent in some variants (ls1 / ls2 without layer scale)
            kept = getattr(block, name, None)
            setattr(self, name, copy.deepcopy(kept) if kept is not None else nn.Identity())
        self.mixer = mixer
        self.grid_size = tuple(grid_size)
        self.prefix_tokens = prefix_tokens
        self.runtime_grid: tuple[int, int] | None = None

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False
    ) -> torch.Tensor:
        if attn_mask is not None or is_causal:
            raise ValueError("a ParC block has no attention: attn_mask / is_causal do not apply")
        if self.mixer.fast_path_applies():
            return self._forward_fast(x)
        return self.forward_reference(x)

    def _forward_fast(self, x: torch.Tensor) -> torch.Tensor:
        # The patch tokens are a (B, h, w, C) map as they lie: the mixer reads and writes
        # them through views, so no block transposes or concatenates its tokens.
        p = self.prefix_tokens
        b, n, c = x.shape
        h, w = token_grid(n - p, self.grid_size, self.runtime_grid)
        mixer = self.mixer
        z = x
        if mixer.has_pe:  # pe before the norm, on the patch tokens only
            z = torch.empty_like(x)
            z[:, :p] = x[:, :p]
            mixer.add_pe_nhwc(x[:, p:].view(b, h, w, c), out=z[:, p:].view(b, h, w, c))
        zn = self.norm1(z)
        y = torch.empty_like(x)
        mixer.mix_nhwc(zn[:, p:].view(b, h, w, c), out=y[:, p:].view(b, h, w, c))
        if p:
            y[:, :p] = y[:, p:].mean(dim=1, keepdim=True)
        x = x + self.drop_path1(self.ls1(y))
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))

    def forward_reference(self, x: torch.Tensor) -> torch.Tensor:
        """The block on the (B, C, h, w) grid, with transposes: training, tracing, export."""
        p = self.prefix_tokens
        b, n, c = x.shape
        h, w = token_grid(n - p, self.grid_size, self.runtime_grid)

        def grid(tokens: torch.Tensor) -> torch.Tensor:
            return tokens.transpose(1, 2).reshape(b, c, h, w)

        z = x
        if self.mixer.has_pe:
            pos = self.mixer.add_pe_reference(grid(x[:, p:]))
            z = torch.cat([x[:, :p], pos.flatten(2).transpose(1, 2)], dim=1)
        y = self.mixer.forward_reference(grid(self.norm1(z)[:, p:])).flatten(2).transpose(1, 2)
        if p:
            y = torch.cat([y.mean(dim=1, keepdim=True).expand(-1, p, -1), y], dim=1)
        x = x + self.drop_path1(self.ls1(y))
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))

    def extra_repr(self) -> str:
        h, w = self.grid_size
        return f"grid_size=({h}, {w}), prefix_tokens={self.prefix_tokens}"


def set_token_grid(model: nn.Module, grid: tuple[int, int] | None) -> int:
    """Tell every ParCViTBlock in `model` the patch grid of the next inputs (None: infer
    it from the token count again); returns how many blocks were set."""
    blocks = [m for m in model.modules() if isinstance(m, ParCViTBlock)]
    for block in blocks:
        block.runtime_grid = None if grid is None else (int(grid[0]), int(grid[1]))
    return len(blocks)


def refuse_init_from_local(ctx: ReplacementContext, what: str) -> None:
    """Raise for init from_local: attention has no local kernel to start a ParC from."""
    if ctx.init == "from_local":
        raise ReplacementError(
            f"init from_local needs a local kernel to start from, and {what} has none",
            where=ctx.path,
            hint="use init: paper for this replacement",
        )


def token_block(
    module: nn.Module, ctx: ReplacementContext, mixer_attr: str, prefix_tokens: int
) -> ParCViTBlock:
    """ParCViTBlock for a pre-norm block whose token mixer is `mixer_attr`."""
    refuse_init_from_local(ctx, f"a {type(module).__name__}'s attention")
    missing = [a for a in ("norm1", mixer_attr, "norm2", "mlp") if not hasattr(module, a)]
    if missing:
        raise ReplacementError(
            f"this {type(module).__name__} has no {', '.join(missing)}: it is not a pre-norm "
            "transformer block",
            where=ctx.path,
        )
    dim = module.norm2.normalized_shape[-1] if hasattr(module.norm2, "normalized_shape") else 0
    dim = dim or module.mlp.fc1.in_features
    mixer = ParCSpatialMixer(dim, global_kernel_size(ctx), use_pe=ctx.pe, impl=ctx.impl)
    new = ParCViTBlock(module, mixer, ctx.feature_size, prefix_tokens)
    ref = next(module.parameters())
    return new.to(device=ref.device, dtype=ref.dtype).train(module.training)


@register_replacement("parc_vit", accepts=_ACCEPTS, level="block")
def build_parc_vit(module: nn.Module, ctx: ReplacementContext) -> nn.Module:
    """ViT / DeiT Block -> ParCViTBlock: attention -> ParC on the token grid; rest kept."""
    require_type(module, ctx, _ACCEPTS, "parc_vit")
    if type(module).__module__ != _VIT_MODULE:
        raise ReplacementError(
            f"parc_vit replaces timm's VisionTransformer blocks ({_VIT_MODULE}.Block), not a "
            f"{type(module).__module__}.{type(module).__name__}",
            where=ctx.path,
        )
    return token_block(module, ctx, "attn", ctx.prefix_tokens)
