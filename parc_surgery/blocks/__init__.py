"""Replacement blocks: the registry and one builder file per block family.

Importing this package registers every built-in replacement:
parc_bottleneck, parc_inverted_residual, parc_convnext, parc_mobilevit, parcnet_s_block,
parc_dwconv (the first three also for torchvision's blocks: blocks/torchvision.py).
"""

from . import bottleneck, convnext, dwconv, inverted_residual, mobilevit, parcnet_s  # noqa: F401
from . import torchvision as _torchvision  # noqa: F401  (after the families it extends)
from .mobilevit import ChannelAttention, ConvFfn, ParCMetaFormerBlock, ParCMobileVitBlock
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

__all__ = [
    "ChannelAttention",
    "ConvFfn",
    "ParCMetaFormerBlock",
    "ParCMobileVitBlock",
    "Replacement",
    "ReplacementContext",
    "ReplacementError",
    "build_replacement",
    "get_replacement",
    "register_builder",
    "register_replacement",
    "replacement_names",
]
