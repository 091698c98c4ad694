"""The model adapter: create a timm model by name, and read what the rest needs of a model.

Everything parc-surgery asks of "a model" goes through here: building one by name (with
user-facing errors), its name, its input channels and its default input size. Nothing
above this module is imported here, so checkpoint, pipeline, analysis and train can all
use it without an import circle.
"""

from __future__ import annotations

import difflib
from typing import Any

from torch import nn

from parc_surgery.errors import UsageError, WeightsError

__all__ = ["DEFAULT_INPUT_SIZE", "create_model", "input_channels", "input_size_of", "model_name_of"]

DEFAULT_INPUT_SIZE = (224, 224)


def create_model(name: str, model_args: dict[str, Any] | None = None, *, pretrained=False):
    """timm.create_model with user-facing errors for unknown names and bad kwargs."""
    import timm

    model_args = dict(model_args or {})
    if not timm.is_model(name):  # also accepts a pretrained tag: "resnet50.a1_in1k"
        close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
        hint = f"did you mean: {', '.join(close)}?" if close else "see timm.list_models()"
        raise UsageError(f"unknown timm model {name!r}", hint=hint)
    try:
        return timm.create_model(name, pretrained=pretrained, **model_args)
    except TypeError as err:
        raise UsageError(
            f"model {name!r} does not accept the arguments {model_args}: {err}",
            hint="check the --model-arg names against the model's constructor",
        ) from None
    except Exception as err:
        if not pretrained:
            raise
        raise WeightsError(
            f"could not fetch pretrained weights for {name!r} "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else 'no detail'})",
            hint="without network access, download the weights elsewhere and pass --weights FILE",
        ) from None


def model_name_of(model: nn.Module) -> str:
    """timm's architecture name when the model has one, else its class name."""
    cfg = getattr(model, "pretrained_cfg", None)
    if isinstance(cfg, dict) and cfg.get("architecture"):
        return str(cfg["architecture"])
    return type(model).__name__


def _cfg(model: nn.Module) -> dict:
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
    return cfg if isinstance(cfg, dict) else {}


def input_size_of(model: nn.Module) -> tuple[int, int]:
    """(H, W): the patch embedding's image size (a ViT or Swin built with img_size=...
    runs at that size only, whatever its pretrained_cfg says), else
    `model.pretrained_cfg["input_size"]`, else 224x224."""
    built = getattr(getattr(model, "patch_embed", None), "img_size", None)
    if isinstance(built, (tuple, list)) and len(built) == 2 and all(built):
        return int(built[0]), int(built[1])
    size = _cfg(model).get("input_size")
    if isinstance(size, (tuple, list)) and len(size) == 3:
        return int(size[1]), int(size[2])
    return DEFAULT_INPUT_SIZE


def input_channels(model: nn.Module) -> int:
    """How many channels the model's input has: timm's `in_chans`, else its first conv's."""
    chans = getattr(model, "in_chans", None)
    if isinstance(chans, int) and chans > 0:
        return chans
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            return int(module.in_channels if isinstance(module, nn.Conv2d) else module.in_features)
    return 3
