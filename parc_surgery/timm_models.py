"""The published ParC networks as timm models, and a timm entrypoint for any checkpoint.

After `import parc_surgery` (and timm, in either order), timm knows:

- `parc_resnet50`, `parc_mobilenetv2_100`, `parc_convnext_xt`, `parcnet_s`, `parcnet_xs`:
  the networks the official code defines (official.ARCHS), each built by the shipped
  conversion of its timm model, so `timm.create_model("parc_resnet50")` has exactly the
  official parameters (23,737,640 / 3,532,136 / 7,412,824 / 5,037,088 / 2,185,384), a
  `pretrained_cfg` (the base model's preprocessing at the official input size) and the
  official head dropout (0.2 in ParC-MobileNetV2 and ParC-Net-S / -XS) as its `drop_rate`
  default. `features_only=True`
  returns parc_surgery.backbone's feature extractor. No weights are fetched:
  `pretrained=True` reads the file given with `pretrained_cfg_overlay=dict(file=...)`
  (a parc-surgery checkpoint, checked, or a plain state_dict) or the folder of a
  `local-dir:` / save-pretrained model.
- `parc_recipe` (not a network by itself): the architecture `save-pretrained` writes in
  config.json. It rebuilds the model from the recipe of the folder's model.safetensors
  (checked as parc_surgery.load checks it), so `timm.create_model("local-dir:DIR",
  pretrained=True)` loads any converted checkpoint.

`register()` is idempotent; parc_surgery/__init__ calls it when timm is (or gets) imported.
"""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from parc_surgery.errors import CheckpointError, UsageError, WeightsError

__all__ = ["PUBLISHED", "RECIPE_ARCH", "parc_recipe", "register"]

# timm name -> (official.ARCHS name, official head dropout)
PUBLISHED: dict[str, tuple[str, float]] = {
    "parc_resnet50": ("parc-resnet50", 0.0),
    "parc_mobilenetv2_100": ("parc-mobilenetv2", 0.2),
    "parc_convnext_xt": ("parc-convnext-xt", 0.0),
    "parcnet_s": ("parcnet-s", 0.2),
    "parcnet_xs": ("parcnet-xs", 0.2),
}
RECIPE_ARCH = "parc_recipe"
WEIGHTS_NAME = "model.safetensors"
# Keys of a base model's pretrained_cfg that point at weights elsewhere: never inherited.
_SOURCE_KEYS = ("url", "hf_hub_id", "hf_hub_filename", "file", "state_dict", "source", "tag")

default_cfgs: dict[str, dict[str, Any]] = {}


def _base_cfg(arch) -> dict[str, Any]:
    import timm

    base = timm.get_pretrained_cfg(arch.model)
    cfg = base.to_dict() if base is not None else {}
    for key in _SOURCE_KEYS:
        cfg.pop(key, None)
    cfg.pop("architecture", None)
    cfg.update(
        input_size=(3, *arch.input_size),
        test_input_size=None,
        pool_size=tuple(side // 32 for side in arch.input_size),
        license="apache-2.0",
        paper_ids="arXiv:2203.03952",
        paper_name="ParC-Net: Position Aware Circular Convolution with Merits from "
        "ConvNets and Transformer",
        origin_url="https://github.com/hkzhang-git/ParC-Net",
    )
    return cfg


def register() -> None:
    """Register the published networks and `parc_recipe` with timm (idempotent)."""
    from timm.models import is_model
    from timm.models._registry import register_model

    from parc_surgery.official import ARCHS

    if default_cfgs and all(is_model(name) for name in (*PUBLISHED, RECIPE_ARCH)):
        return
    for name, (arch, _) in PUBLISHED.items():
        default_cfgs[name] = _base_cfg(ARCHS[arch])
    for fn in (
        parc_resnet50,
        parc_mobilenetv2_100,
        parc_convnext_xt,
        parcnet_s,
        parcnet_xs,
        parc_recipe,
    ):
        register_model(fn)


def _resolved_cfg(name, pretrained_cfg, overlay) -> dict[str, Any]:
    from timm.models._builder import resolve_pretrained_cfg

    return resolve_pretrained_cfg(name, pretrained_cfg, overlay).to_dict()


def _finish(model, cfg, plan, *, pretrained, features_only, out_indices):
    cfg["input_size"] = (int(cfg.get("input_size", (3,))[0]), *plan.input_size)
    model.pretrained_cfg = model.default_cfg = cfg
    if pretrained:
        load_pretrained(model, cfg)
    if features_only:
        from parc_surgery.backbone import features_only as backbone

        return backbone(model, out_indices, input_size=tuple(plan.input_size))
    return model


def _published(name: str, pretrained=False, **kwargs: Any) -> nn.Module:
    from parc_surgery.apply import apply_plan
    from parc_surgery.official import ARCHS
    from parc_surgery.pipeline import plan_conversion

    arch_name, drop_rate = PUBLISHED[name]
    arch = ARCHS[arch_name]
    cfg = _resolved_cfg(
        name, kwargs.pop("pretrained_cfg", None), kwargs.pop("pretrained_cfg_overlay", None)
    )
    features_only = bool(kwargs.pop("features_only", False))
    out_indices = kwargs.pop("out_indices", None)
    for key in ("pretrained_model_args", "cache_dir", "feature_cfg", "feature_cls"):
        kwargs.pop(key, None)
    if drop_rate:
        kwargs.setdefault("drop_rate", drop_rate)
    model_args = {**arch.model_args, **kwargs}
    planned = plan_conversion(
        arch.model, rules=arch.rules, input_size=arch.input_size, model_args=model_args
    )
    model = apply_plan(planned.model, planned.plan, seed=0)
    cfg["num_classes"] = getattr(model, "num_classes", cfg.get("num_classes"))
    return _finish(
        model,
        cfg,
        planned.plan,
        pretrained=pretrained,
        features_only=features_only,
        out_indices=tuple(out_indices) if out_indices is not None else None,
    )


def parc_resnet50(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """ParC-ResNet50: resnet50, ParC bottlenecks at layer3.3-5 and layer4.2 (23,737,640)."""
    return _published("parc_resnet50", pretrained, **kwargs)


def parc_mobilenetv2_100(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """ParC-MobileNetV2: mobilenetv2_100 with ParC in blocks.3.2-3.3, 4.2, 5.2 (3,532,136)."""
    return _published("parc_mobilenetv2_100", pretrained, **kwargs)


def parc_convnext_xt(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """ParC-ConvNeXt-XT: convnext_tiny with dims 48-96-192-384, ParC in the last third of
    stages 3 and 4 (7,412,824)."""
    return _published("parc_convnext_xt", pretrained, **kwargs)


def parcnet_s(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """ParC-Net-S: mobilevit_s with the parcnet-s rules, at 256x256 (5,037,088)."""
    return _published("parcnet_s", pretrained, **kwargs)


def parcnet_xs(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """ParC-Net-XS: mobilevit_s with the parcnet-xs rules, at 256x256 (2,185,384)."""
    return _published("parcnet_xs", pretrained, **kwargs)


def parc_recipe(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """Any parc-surgery checkpoint's model, rebuilt from its recipe (the architecture of a
    save-pretrained folder). The recipe is read from the checkpoint the pretrained_cfg
    names (`local-dir:` folder or `file`), with every check of parc_surgery.load."""
    from parc_surgery.checkpoint import _build, _check_architecture, _recipe_of, read_header

    cfg_in = kwargs.pop("pretrained_cfg", None)
    overlay = kwargs.pop("pretrained_cfg_overlay", None)
    features_only = bool(kwargs.pop("features_only", False))
    out_indices = kwargs.pop("out_indices", None)
    for key in ("pretrained_model_args", "cache_dir"):
        kwargs.pop(key, None)
    if kwargs:
        raise UsageError(
            f"{RECIPE_ARCH} takes no model arguments ({', '.join(sorted(kwargs))} given): "
            "the checkpoint's recipe fixes the architecture",
            hint="convert again with the arguments you want (parc-convert --model-arg)",
        )
    cfg = _resolved_cfg(RECIPE_ARCH, cfg_in, overlay)
    path = checkpoint_file(cfg)
    if path is None:
        raise UsageError(
            f"{RECIPE_ARCH} is built from a checkpoint's recipe and none was given",
            hint='use timm.create_model("local-dir:DIR") on a save-pretrained folder, or '
            "pretrained_cfg_overlay=dict(file=CHECKPOINT)",
        )
    header = read_header(path)
    _, plan = _recipe_of(header)
    _check_architecture(plan, header)
    model = _build(plan, header, device=None)
    return _finish(
        model,
        cfg,
        plan,
        pretrained=pretrained,
        features_only=features_only,
        out_indices=tuple(out_indices) if out_indices is not None else None,
    )


def checkpoint_file(cfg: dict[str, Any]) -> str | None:
    """The weights file a pretrained_cfg names: `file`, or a folder's model.safetensors."""
    file = cfg.get("file")
    if not file:
        return None
    file = os.fspath(file)
    return os.path.join(file, WEIGHTS_NAME) if os.path.isdir(file) else file


def load_pretrained(model: nn.Module, cfg: dict[str, Any]) -> None:
    """Load the weights the pretrained_cfg names into `model`, strictly; nothing is fetched.

    A parc-surgery checkpoint is checked (format, tensor checksum); a plain state_dict
    (safetensors, or torch with weights_only) is loaded as --weights files are.
    """
    from parc_surgery.checkpoint import (
        CHECKPOINT_FORMAT,
        _check_tensors,
        _read_tensors,
        read_header,
    )
    from parc_surgery.weights import load_source_weights, load_strict

    path = checkpoint_file(cfg)
    if path is None:
        name = cfg.get("architecture", "this model")
        raise WeightsError(
            f"no weights for {name}: parc-surgery fetches none",
            hint="pass the file: timm.create_model(name, pretrained=True, "
            "pretrained_cfg_overlay=dict(file='weights.safetensors'))",
        )
    if path.endswith(".safetensors"):
        header = read_header(path, error=WeightsError)
        if header.metadata.get("format") == CHECKPOINT_FORMAT:
            state = _read_tensors(header, "cpu")
            _check_tensors(header, state)
            load_strict(model, state, source=header.path, error=CheckpointError)
            return
    load_source_weights(model, path)
