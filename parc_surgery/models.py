"""The model adapter: create a model by name, and read what the rest needs of a model.

Everything parc-surgery asks of "a model" goes through here: building one by name (a timm
name, or "torchvision:NAME"; with user-facing errors), where a model object comes from
(`source_of`), its name, its input channels, its default input size, and running it in
eval mode for a moment (`eval_mode`). Nothing above this module is imported here, so
checkpoint, pipeline, analysis and train can all use it without an import circle.
"""

from __future__ import annotations

import contextlib
import difflib
import os
from collections.abc import Iterator
from typing import Any

from torch import nn

from parc_surgery.errors import ParcSurgeryError, UsageError, WeightsError
from parc_surgery.model_args import check_model_args
from parc_surgery.plan import ModelSource

__all__ = [
    "DEFAULT_INPUT_SIZE",
    "TORCHVISION_PREFIX",
    "class_path",
    "create_model",
    "eval_mode",
    "file_stem",
    "input_channels",
    "input_size_of",
    "model_name_of",
    "source_of",
]

DEFAULT_INPUT_SIZE = (224, 224)

# A name with this prefix is a torchvision model: "torchvision:resnet50".
TORCHVISION_PREFIX = "torchvision:"


def create_model(name: str, model_args: dict[str, Any] | None = None, *, pretrained=False):
    """A model by name (timm's, or "torchvision:NAME"), with user-facing errors for
    unknown names and bad kwargs. Random weights unless `pretrained` (needs network)."""
    # The argument policy comes first: jobs files and recipes are untrusted input.
    model_args = check_model_args(model_args)
    if isinstance(name, str) and name.startswith(TORCHVISION_PREFIX):
        return _create_torchvision(name[len(TORCHVISION_PREFIX) :], model_args, pretrained)
    import timm

    # is_model also accepts a pretrained tag ("resnet50.a1_in1k") and refuses the
    # "hf-hub:" / "local-dir:" sources that would read a config from the hub or a folder.
    if not isinstance(name, str) or not timm.is_model(name):
        close = difflib.get_close_matches(str(name), timm.list_models(), n=5, cutoff=0.6)
        hint = f"did you mean: {', '.join(close)}?" if close else "see timm.list_models()"
        raise UsageError(f"unknown timm model {name!r}", hint=hint)
    if pretrained:
        _check_reachable(name, os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    try:
        return timm.create_model(name, pretrained=pretrained, **model_args)
    except ParcSurgeryError:
        raise
    except Exception as err:
        if model_args and (not pretrained or isinstance(err, TypeError)):
            raise _constructor_error(name, model_args, err) from None
        if not pretrained:
            raise
        raise _fetch_error(name, err) from None


def _constructor_error(name: str, model_args: dict[str, Any], err: Exception) -> UsageError:
    """The constructor refused the user's arguments: a TypeError for an unknown keyword,
    anything else (IndexError, AssertionError...) for a value it cannot use."""
    detail = " ".join(str(err).split())[:300] or "no detail"
    return UsageError(
        f"model {name!r} cannot be built with the arguments {model_args} "
        f"({type(err).__name__}: {detail})",
        hint="check the --model-arg names and values against the model's constructor",
    )


def _create_torchvision(name: str, model_args: dict[str, Any] | None, pretrained: bool):
    import torchvision

    known = torchvision.models.list_models()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=5, cutoff=0.6)
        hint = f"did you mean: {', '.join(close)}?" if close else "see its list_models()"
        raise UsageError(f"unknown torchvision model {name!r}", hint=hint)
    if pretrained:
        _check_reachable(TORCHVISION_PREFIX + name, "https://download.pytorch.org")
    try:
        return torchvision.models.get_model(
            name, weights="DEFAULT" if pretrained else None, **model_args
        )
    except Exception as err:
        if model_args and (not pretrained or isinstance(err, TypeError)):
            raise _constructor_error(TORCHVISION_PREFIX + name, model_args, err) from None
        if not pretrained:
            raise
        raise _fetch_error(TORCHVISION_PREFIX + name, err) from None


# How long --pretrained waits for the weights' host before failing (instead of the
# hub client's retries, about 45 s without network).
REACHABLE_TIMEOUT_S = 3.0


def _check_reachable(name: str, url: str) -> None:
    """WeightsError at once when `url`'s host cannot be reached (no network).

    Skipped under HF_HUB_OFFLINE=1, where the hub client reads its cache only and fails
    fast by itself when the weights are not there.
    """
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host = parts.hostname or url
    port = parts.port or (80 if parts.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=REACHABLE_TIMEOUT_S).close()
    except OSError as err:
        raise WeightsError(
            f"could not fetch pretrained weights for {name!r}: {host} cannot be reached "
            f"({type(err).__name__}: {err or 'no detail'})",
            hint="without network access, download the weights elsewhere and pass --weights "
            "FILE (or set HF_HUB_OFFLINE=1 to use weights already in the hub cache)",
        ) from None


def _fetch_error(name: str, err: Exception) -> WeightsError:
    return WeightsError(
        f"could not fetch pretrained weights for {name!r} "
        f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else 'no detail'})",
        hint="without network access, download the weights elsewhere and pass --weights FILE",
    )


def file_stem(name: str) -> str:
    """A model name as a file name stem: "timm/resnet50" -> "timm_resnet50"."""
    return name.replace("/", "_").replace(":", "_")


def source_of(model: nn.Module, name: str | None = None) -> ModelSource:
    """Where `model` comes from: timm, torchvision or custom, by its class's module.

    `name` is the name it was created by, if any; a timm model object is named by its
    pretrained_cfg's architecture (rebuilt with timm's default kwargs on load).
    """
    cls = type(model)
    package = cls.__module__.split(".")[0]
    kind = package if package in ("timm", "torchvision") else "custom"
    if name is None and kind == "timm":
        arch = model_name_of(model)
        name = arch if arch != cls.__name__ else None
    if name is not None and name.startswith(TORCHVISION_PREFIX):
        name = name[len(TORCHVISION_PREFIX) :]
    return ModelSource(kind=kind, name=name, class_path=class_path(model))


def class_path(module: nn.Module) -> str:
    """ "package.module.Class" of a module's class."""
    cls = type(module)
    return f"{cls.__module__}.{cls.__qualname__}"


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put `model` in eval mode; restore every submodule's own training flag on exit."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in flags:
            module.training = training


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
    # A Linear's in_features says nothing about image channels (it may follow an unfold).
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return int(module.in_channels)
    return 3
