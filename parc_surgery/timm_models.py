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
- `parcnet_h`: ParC-Net-H (official edgeformer_h.yaml, 20,403,940 params, dropout 0.2),
  the shipped parcnet-h conversion of `parcnet_h_base`, as above.
- `parcnet_h_base` (not a ParC network by itself): ParC-Net-H's layout as a timm
  MobileViT, which no timm model has (a 5x5 stem to 48 channels, MV2 widths
  96/144/216/288/432, final 1x1 to 960): a timm ByobNet of timm's MV2 and MobileViT
  blocks at the official widths, its MobileViT transformers of width D and depth n of
  blocks/parcnet_s.H_STAGES. `--rules parcnet-h` converts it; it has no weights.
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

__all__ = ["BASES", "PUBLISHED", "RECIPE_ARCH", "parc_recipe", "register"]

# timm name -> (official.ARCHS name, official head dropout)
PUBLISHED: dict[str, tuple[str, float]] = {
    "parc_resnet50": ("parc-resnet50", 0.0),
    "parc_mobilenetv2_100": ("parc-mobilenetv2", 0.2),
    "parc_convnext_xt": ("parc-convnext-xt", 0.0),
    "parcnet_s": ("parcnet-s", 0.2),
    "parcnet_xs": ("parcnet-xs", 0.2),
    "parcnet_h": ("parcnet-h", 0.2),
}
# Base layouts no timm model has, registered for the conversions above to start from.
BASES = ("parcnet_h_base",)
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

    if default_cfgs and all(is_model(name) for name in (*BASES, *PUBLISHED, RECIPE_ARCH)):
        return
    default_cfgs["parcnet_h_base"] = _mobilevit_cfg()
    register_model(parcnet_h_base)  # first: parcnet_h's pretrained_cfg starts from it
    for name, (arch, _) in PUBLISHED.items():
        default_cfgs[name] = _base_cfg(ARCHS[arch])
    for fn in (
        parc_resnet50,
        parc_mobilenetv2_100,
        parc_convnext_xt,
        parcnet_s,
        parcnet_xs,
        parcnet_h,
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


def parcnet_h(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """ParC-Net-H: parcnet_h_base with the parcnet-h rules, at 256x256 (20,403,940)."""
    return _published("parcnet_h", pretrained, **kwargs)


def _mobilevit_cfg() -> dict[str, Any]:
    """timm's mobilevit_s preprocessing ([0, 1] inputs, as the official edgeformer) at
    256 px, without its weights."""
    import timm

    cfg = timm.get_pretrained_cfg("mobilevit_s").to_dict()
    for key in (*_SOURCE_KEYS, "architecture"):
        cfg.pop(key, None)
    cfg.update(input_size=(3, 256, 256), test_input_size=None, pool_size=(8, 8))
    return cfg


def _parcnet_h_layout():
    """ParC-Net-H's layout as a variant of timm's mobilevit_s ByobNet config (official
    `scale_h`): MV2 blocks of
    expansion 4 (cvnets' InvertedResidual is timm's bottle_in / linear_out bottleneck),
    then per ParC stage a stride-2 MV2 block and a MobileViT block of the stage's C, whose
    transformer has the ParC stack's width D and depth n (so its drop-path rates are n)."""
    from dataclasses import replace

    from timm.models.byobnet import ByoBlockCfg
    from timm.models.mobilevit import model_cfgs

    from parc_surgery.blocks.parcnet_s import H_STAGES

    def mv2(c: int, stride: int, depth: int = 1) -> ByoBlockCfg:
        return ByoBlockCfg(type="bottle", d=depth, c=c, s=stride, gs=1, br=4.0,
                           block_kwargs=dict(bottle_in=True, linear_out=True))  # fmt: skip

    def parc_stage(c: int, dim: int, depth: int) -> tuple[ByoBlockCfg, ByoBlockCfg]:
        kwargs = dict(transformer_dim=dim, transformer_depth=depth, patch_size=2)
        return mv2(c, 2), ByoBlockCfg(type="mobilevit", d=1, c=c, s=1, block_kwargs=kwargs)

    stages = tuple(parc_stage(*H_STAGES[s]) for s in sorted(H_STAGES))
    # mobilevit_s's settings otherwise (SiLU, no stem pool, no shortcut convs); its 3x3
    # stem is replaced by the official 5x5 one in parcnet_h_base.
    return replace(
        model_cfgs["mobilevit_s"],
        blocks=(mv2(96, 1), mv2(144, 2, depth=3), *stages),
        stem_chs=48,
        num_features=960,  # conv_1x1_exp: min(4 * 432, 960)
    )


def parcnet_h_base(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """ParC-Net-H's layout as a timm MobileViT (ByobNet), to convert with --rules parcnet-h.

    timm's stems are 3x3 or 7x7; the official one (conv_1) is a 5x5 stride-2 conv to 48
    channels + BN + SiLU, so the 3x3 stem is replaced by that, initialised as ByobNet
    initialises its convs (normal, fan_out). No weights exist for it.
    """
    from timm.models import build_model_with_cfg
    from timm.models.byobnet import ByobNet, get_layer_fns

    if pretrained:
        raise WeightsError(
            "parcnet_h_base has no weights: it is ParC-Net-H's layout before its conversion",
            hint='use timm.create_model("parcnet_h", pretrained=True, '
            "pretrained_cfg_overlay=dict(file=...)) for ParC-Net-H weights",
        )
    for key in ("pretrained_cfg_overlay", "cache_dir"):
        kwargs.pop(key, None)
    cfg = _parcnet_h_layout()
    model = build_model_with_cfg(
        ByobNet,
        "parcnet_h_base",
        False,
        model_cfg=cfg,
        feature_cfg=dict(flatten_sequential=True),
        **kwargs,
    )
    if kwargs.get("features_only"):
        raise UsageError(
            "parcnet_h_base takes no features_only: it is a layout to convert",
            hint='use timm.create_model("parcnet_h", features_only=True)',
        )
    weight = model.stages[0][0].conv1_1x1.conv.weight
    stem = get_layer_fns(cfg, allow_aa=False).conv_norm_act(
        kwargs.get("in_chans", 3), 48, 5, stride=2
    )
    nn.init.kaiming_normal_(stem.conv.weight, mode="fan_out", nonlinearity="relu")
    model.stem = stem.to(device=weight.device, dtype=weight.dtype)
    return model


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
