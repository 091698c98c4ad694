"""Parameter names of the official ParC-Net models, per published architecture.

Each map takes the state_dict keys of the converted timm model and returns
{our key: the official model's key} for every key it knows; a key it leaves out is a
structure the official model does not have. Read from the official code
(hkzhang-git/ParC-Net): `ParC_ConvNets/ParC_resnet50.py`, `ParC_mobilenetv2.py`,
`ParC_convnext.py` (torchvision-style names around `ParC_operator`s), and for ParC-Net-S
`cvnets/models/classification/edgeformer.py` with `cvnets/modules/edgeformer_block.py`
(`outer_frame_v1` holding `gcc_ca_mf_block`s) and cvnets' `ConvLayer` (`block.conv`,
`block.norm`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

__all__ = ["NAME_MAPS", "convnext_names", "mobilenetv2_names", "parcnet_s_names", "resnet_names"]

Rule = tuple[str, str]


def _apply(rules: list[Rule], keys: Iterable[str]) -> dict[str, str]:
    """Map each key by the first rule whose pattern matches it whole."""
    compiled = [(re.compile(pattern), template) for pattern, template in rules]
    names = {}
    for key in keys:
        for pattern, template in compiled:
            found = pattern.fullmatch(key)
            if found:
                names[key] = found.expand(template)
                break
    return names


def _parc_pair(ours: str, official: str, operator: str) -> list[Rule]:
    """A ParCPair `ours.parc_h/w.{weight,bias,pe}` -> `official.{operator}_H/W.gcc_conv...`."""
    rules = []
    for half, direction in (("parc_h", "H"), ("parc_w", "W")):
        target = f"{official}.{operator}_{direction}"
        rules.append((rf"{ours}\.{half}\.(?P<n>weight|bias)", rf"{target}.gcc_conv.\g<n>"))
        rules.append((rf"{ours}\.{half}\.pe", f"{target}.pe"))
    return rules


def _renamed(ours: str, official: str, parts: dict[str, str]) -> list[Rule]:
    """`ours.a.<rest>` -> `official.b.<rest>` for each a: b of `parts`."""
    return [(rf"{ours}\.{a}\.(?P<t>\w+)", rf"{official}.{b}.\g<t>") for a, b in parts.items()]


def resnet_names(keys: Iterable[str]) -> dict[str, str]:
    """ParC-ResNet50: torchvision names (as timm's); conv2 -> parc_H / parc_W operators."""
    rules = _parc_pair(r"(?P<b>layer\d+\.\d+)\.conv2", r"\g<b>", "parc")
    same = r"(conv1|bn1|fc|layer\d+\.\d+\.(conv[123]|bn[123]|downsample\.[01]))\.\w+"
    rules.append((same, r"\g<0>"))
    return _apply(rules, keys)


# torchvision MobileNetV2 inside `features.N`, by the timm module each part replaces.
_MV2_PLAIN = {"conv_pw": "conv.0.0", "bn1": "conv.0.1", "conv_dw": "conv.1.0", "bn2": "conv.1.1",
              "conv_pwl": "conv.2", "bn3": "conv.3"}  # fmt: skip
_MV2_FIRST = {"conv_dw": "conv.0.0", "bn1": "conv.0.1", "conv_pw": "conv.1", "bn2": "conv.2"}
_MV2_PARC = {"conv_pw": "pw_expand.0", "bn1": "pw_expand.1", "bn2": "bn",
             "conv_pwl": "pw_linear.0", "bn3": "pw_linear.1"}  # fmt: skip


def mobilenetv2_names(keys: Iterable[str]) -> dict[str, str]:
    """ParC-MobileNetV2: torchvision `features.N` numbering, `InvertedResidual_parc` blocks."""
    keys = list(keys)
    found = (re.match(r"blocks\.(\d+)\.(\d+)\.", k) for k in keys)
    blocks = sorted({(int(m[1]), int(m[2])) for m in found if m})
    parc_blocks = {k.split(".conv_dw.")[0] for k in keys if ".conv_dw.parc_" in k}
    head = len(blocks) + 1
    rules: list[Rule] = [
        (r"conv_stem\.weight", "features.0.0.weight"),
        (r"bn1\.(\w+)", r"features.0.1.\1"),
        (r"conv_head\.weight", f"features.{head}.0.weight"),
        (r"bn2\.(\w+)", rf"features.{head}.1.\1"),
        (r"classifier\.(weight|bias)", r"classifier.1.\1"),
    ]
    for number, (stage, index) in enumerate(blocks, start=1):
        ours, official = rf"blocks\.{stage}\.{index}", f"features.{number}"
        if f"blocks.{stage}.{index}" in parc_blocks:
            rules += _parc_pair(rf"{ours}\.conv_dw", official, "gcc")
            rules += _renamed(ours, official, _MV2_PARC)
        else:  # the first block is timm's DepthwiseSeparableConv (expansion 1)
            rules += _renamed(ours, official, _MV2_FIRST if number == 1 else _MV2_PLAIN)
    return _apply(rules, keys)


def convnext_names(keys: Iterable[str]) -> dict[str, str]:
    """ParC-ConvNeXt: `downsample_layers` + `stages.i.j` (dwconv / gcc_H, gcc_W, pwconv1/2)."""
    block, official = r"stages\.(?P<s>\d+)\.blocks\.(?P<j>\d+)", r"stages.\g<s>.\g<j>"
    rules = _parc_pair(rf"{block}\.conv_dw", official, "gcc")
    parts = {"conv_dw": "dwconv", "norm": "norm", r"mlp\.fc1": "pwconv1", r"mlp\.fc2": "pwconv2"}
    rules += _renamed(block, official, parts)
    rules += [
        (rf"{block}\.gamma", rf"{official}.gamma"),
        (r"stem\.([01])\.(weight|bias)", r"downsample_layers.0.\1.\2"),
        (r"stages\.(\d+)\.downsample\.([01])\.(weight|bias)", r"downsample_layers.\1.\2.\3"),
        (r"head\.norm\.(weight|bias)", r"norm.\1"),
        (r"head\.fc\.(weight|bias)", r"head.\1"),
    ]
    return _apply(rules, keys)


# cvnets' ConvLayer keeps its conv and norm in `block`.
_CONV_LAYER = {"conv": "block.conv", "bn": "block.norm"}
# The ParC meta-former, ours -> official `gcc_ca_mf_block` names.
_META_FORMER: list[Rule] = [
    (r"norm_h\.(?P<t>\w+)", r"pre_Norm_1.\g<t>"),
    (r"norm_w\.(?P<t>\w+)", r"pre_Norm_2.\g<t>"),
    (r"pe_h\.pe", "meta_pe_1_H"),
    (r"pe_w\.pe", "meta_pe_1_W"),
    (r"ffn\.norm\.(?P<t>\w+)", r"ffn.0.\g<t>"),
    (r"ffn\.fc1\.(?P<t>\w+)", r"ffn.1.\g<t>"),
    (r"ffn\.fc2\.(?P<t>\w+)", r"ffn.4.\g<t>"),
    (r"ca\.fc\.(?P<t>[0134]\.\w+)", r"ca.fc.\g<t>"),
]
for _stage, _direction in ((1, "h"), (1, "w"), (2, "h"), (2, "w")):
    _D = _direction.upper()
    _META_FORMER += [
        (rf"parc{_stage}_{_direction}\.weight", f"meta_kernel_{_stage}_{_D}"),
        (rf"parc{_stage}_{_direction}\.bias", f"meta_{_stage}_{_D}_bias"),
    ]
_META_FORMER += [(r"parc2_h\.pe", "meta_pe_2_H"), (r"parc2_w\.pe", "meta_pe_2_W")]


def parcnet_s_names(keys: Iterable[str]) -> dict[str, str]:
    """ParC-Net-S (cvnets `edgeformer`): conv_1, layer_1..5 (MV2 + outer_frame_v1), head."""
    keys = list(keys)
    stages = {int(m[1]) for k in keys if (m := re.match(r"stages\.(\d+)\.", k))}
    rules = _renamed("stem", "conv_1", _CONV_LAYER) + _renamed(
        "final_conv", "conv_1x1_exp", _CONV_LAYER
    )
    rules.append((r"head\.fc\.(weight|bias)", r"classifier.fc.\1"))
    for stage in sorted(stages):  # timm's stages.s is cvnets' layer_{s+1}
        layer = f"layer_{stage + 1}"
        for a, b in {
            "conv1_1x1": "exp_1x1",
            "conv2_kxk": "conv_3x3",
            "conv3_1x1": "red_1x1",
        }.items():
            rules += _renamed(
                rf"stages\.{stage}\.(?P<i>\d+)\.{a}", rf"{layer}.\g<i>.block.{b}", _CONV_LAYER
            )
        ours, official = rf"stages\.{stage}\.1", f"{layer}.1"
        n = sum(1 for k in keys if re.fullmatch(rf"{ours}\.parc_blocks\.\d+\.norm_h\.weight", k))
        for a, b in {"conv_kxk": "dim_adaptive.0", "conv_proj": "channel_adaptive",
                     "conv_fusion": "local_global_fusion"}.items():  # fmt: skip
            rules += _renamed(rf"{ours}\.{a}", f"{official}.{b}", _CONV_LAYER)
        rules.append((rf"{ours}\.conv_1x1\.weight", f"{official}.dim_adaptive.1.block.conv.weight"))
        # The stack's BatchNorm follows its n ParC blocks in `spatial_global_rep`.
        rules.append((rf"{ours}\.norm\.(?P<t>\w+)", rf"{official}.spatial_global_rep.{n}.\g<t>"))
        for pattern, name in _META_FORMER:
            rules.append(
                (
                    rf"{ours}\.parc_blocks\.(?P<j>\d+)\.{pattern}",
                    rf"{official}.spatial_global_rep.\g<j>.{name}",
                )
            )
    return _apply(rules, keys)


NAME_MAPS: dict[str, Callable[[Iterable[str]], dict[str, str]]] = {
    "parc-resnet50": resnet_names,
    "parc-mobilenetv2": mobilenetv2_names,
    "parc-convnext-xt": convnext_names,
    "parcnet-s": parcnet_s_names,
}
