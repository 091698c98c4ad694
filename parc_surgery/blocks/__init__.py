"""Replacement blocks: the registry and one builder file per block family.

Importing this package registers every built-in replacement: parc_bottleneck (ResNet
Bottleneck / BasicBlock), parc_regnet, parc_inverted_residual, parc_convnext,
parc_mobilevit, parcnet_s_block, parc_dwconv, and the attention replacements parc_vit,
parc_swin, parc_efficientformer, parc_mobilevitv2; the first three also for torchvision's
blocks (blocks/torchvision.py).
"""

from . import (  # noqa: F401  (register)
    attention_zoo,
    bottleneck,
    convnext,
    dense_conv,
    dwconv,
    efficientformer,
    inverted_residual,
    metaformer,
    mobilevit,
    mobilevitv2,
    parcnet_s,
    regnet,
    swin,
    vit,
)
from . import torchvision as _torchvision  # noqa: F401  (after the families it extends)
from .mobilevit import ChannelAttention, ConvFfn, ParCMetaFormerBlock, ParCMobileVitBlock
from .mobilevitv2 import ParCMapBlock, ParCMobileVitV2Block
from .parc_mixer import ParCSpatialMixer
from .registry import (
    Replacement,
    ReplacementContext,
    ReplacementError,
    build_replacement,
    get_replacement,
    register_builder,
    register_replacement,
    replacement_names,
)
from .swin import ParCSwinBlock
from .vit import ParCViTBlock, TokenGridError, set_token_grid

__all__ = [
    "ChannelAttention",
    "ConvFfn",
    "ParCMapBlock",
    "ParCMetaFormerBlock",
    "ParCMobileVitBlock",
    "ParCMobileVitV2Block",
    "ParCSpatialMixer",
    "ParCSwinBlock",
    "ParCViTBlock",
    "Replacement",
    "ReplacementContext",
    "ReplacementError",
    "TokenGridError",
    "build_replacement",
    "get_replacement",
    "register_builder",
    "register_replacement",
    "replacement_names",
    "set_token_grid",
]
