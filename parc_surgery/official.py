"""Official ParC-Net weights <-> parc-surgery checkpoints (import-official, export-official).

The networks the official code (hkzhang-git/ParC-Net) defines are each a shipped
conversion of a timm model (`ARCHS`): the same parameters under other names
(`official_names`), plus, for ParC-Net-S and -H, the fusion conv's input halves in the
other order (the official block concatenates (global, shortcut), timm's (shortcut,
global)). ParC-Net-H's timm model is `parcnet_h_base`, which parc_surgery registers
(timm_models.py): no timm model has its layout.

import_official reads an official state_dict (a torch file, possibly nested under
`state_dict` / `model` / `model_state_dict`, possibly `module.`-prefixed), builds the
converted timm model, loads the renamed tensors strictly and writes a parc-surgery
checkpoint. export_official does the reverse, after checking that the checkpoint is
that published network. Any unmapped, missing or misshapen key is a CheckpointError
(exit 6) that lists them; nothing is ever loaded or written partially.
"""

from __future__ import annotations

import copy
import functools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from parc_surgery.errors import CheckpointError, UsageError
from parc_surgery.official_names import NAME_MAPS

__all__ = [
    "ARCHS",
    "MAX_OFFICIAL_BYTES",
    "OfficialArch",
    "export_official",
    "from_official",
    "import_official",
    "load_encoder",
    "read_official",
    "read_official_weights",
    "to_official",
]

# An official checkpoint is at most a ResNet50 (~100 MB); refuse anything far larger
# before torch.load reads it into memory.
MAX_OFFICIAL_BYTES = 2 << 30
_MAX_KEYS = 100_000
_NESTING = ("state_dict", "model", "model_state_dict")
_EMA = "ema_state_dict"  # the official trainer's EMA copy in a full checkpoint.pt


@dataclass(frozen=True)
class OfficialArch:
    """A published ParC network as a shipped conversion of a timm model."""

    name: str
    title: str
    model: str  # timm model name
    rules: str  # shipped rules config
    input_size: tuple[int, int]  # the resolution the official kernels are sized for
    model_args: dict[str, Any] = field(default_factory=dict)
    # Official keys that alias another official key (the same module registered twice).
    aliases: dict[str, str] = field(default_factory=dict)
    # Our keys whose tensor has its input halves swapped in the official layout.
    swapped_halves: str = ""
    # An encoder inside an official detection / segmentation model: its keys carry this
    # prefix, the official modules listed in `absent` were deleted from it, and every key
    # outside the prefix belongs to the official head (not imported).
    encoder_of: str = ""  # the official model ("SSD", "DeepLabV3"); "" for classification
    absent: tuple[str, ...] = ()
    names: str = ""  # the NAME_MAPS entry, when not `name`

    @property
    def name_map(self):
        return NAME_MAPS[self.names or self.name]


# The official edgeformer encoder's prefix in its SSD and DeepLabV3 models, and what those
# delete from it (`encoder.classifier = None`, `encoder.conv_1x1_exp = None`).
_ENCODER = "encoder."
_NO_HEAD = ("classifier.", "conv_1x1_exp.")
# Model args that change no tensor, only training (the official head dropout).
_TRAINING_ONLY = ("drop_rate", "drop_path_rate")


ARCHS: dict[str, OfficialArch] = {
    arch.name: arch
    for arch in (
        OfficialArch("parc-resnet50", "ParC-ResNet50", "resnet50", "resnet50", (224, 224)),
        OfficialArch(
            "parc-mobilenetv2",
            "ParC-MobileNetV2",
            "mobilenetv2_100",
            "mobilenetv2",
            (224, 224),
            # The official classifier is Dropout(0.2) + Linear; only training sees it.
            model_args={"drop_rate": 0.2},
        ),
        OfficialArch(
            "parc-convnext-xt",
            "ParC-ConvNeXt-XT",
            "convnext_tiny",
            "convnext",
            (224, 224),
            model_args={"dims": (48, 96, 192, 384)},
        ),
        OfficialArch(
            "parcnet-s",
            "ParC-Net-S",
            "mobilevit_s",
            "parcnet-s",
            (256, 256),
            model_args={"drop_rate": 0.2},  # edgeformer_s.yaml: classifier_dropout 0.2
            # edgeformer keeps its last stride-2 MV2 block also as the attribute
            # `residual`, so its state_dict holds those tensors twice.
            aliases={"residual.": "layer_5.0."},
            swapped_halves=".conv_fusion.conv.weight",
        ),
        OfficialArch(
            "parcnet-xs",
            "ParC-Net-XS",
            "mobilevit_s",
            "parcnet-xs",
            (256, 256),
            model_args={"drop_rate": 0.2},  # edgeformer_xs.yaml: classifier_dropout 0.2
            aliases={"residual.": "layer_5.0."},
            # fusion "add": local_global_fusion reads res + x, no halves to swap.
            names="parcnet-s",
        ),
        OfficialArch(
            "parcnet-h",
            "ParC-Net-H",
            "parcnet_h_base",  # no timm model has its layout: timm_models registers it
            "parcnet-h",
            (256, 256),
            model_args={"drop_rate": 0.2},  # edgeformer_h.yaml: classifier_dropout 0.2
            aliases={"residual.": "layer_5.0."},
            swapped_halves=".conv_fusion.conv.weight",  # fusion concat, as in S
            names="parcnet-s",
        ),
        OfficialArch(
            "parcnet-s-ssd",
            "ParC-Net-S SSD encoder",
            "mobilevit_s",
            "parcnet-s",
            (256, 256),
            aliases={"residual.": "layer_5.0."},
            swapped_halves=".conv_fusion.conv.weight",
            encoder_of="SSD",
            absent=_NO_HEAD,
            names="parcnet-s",
        ),
        OfficialArch(
            "parcnet-s-deeplabv3",
            "ParC-Net-S DeepLabV3 encoder",
            "mobilevit_s",
            "parcnet-s",
            (256, 256),
            # The segmentation encoder dilates its last stage (output stride 16); its
            # kernels stay 32/16/8 (the block's nominal stride, blocks/parcnet_s.py).
            model_args={"output_stride": 16},
            aliases={"residual.": "layer_5.0."},
            swapped_halves=".conv_fusion.conv.weight",
            encoder_of="DeepLabV3",
            absent=_NO_HEAD,
            names="parcnet-s",
        ),
    )
}


def _arch(name: str) -> OfficialArch:
    if name not in ARCHS:
        raise UsageError(f"unknown --arch {name!r}", hint=f"choose one of {', '.join(ARCHS)}")
    return ARCHS[name]


@functools.lru_cache(maxsize=len(ARCHS))
def _reference(name: str) -> tuple[nn.Module, Any]:
    """The converted timm model (and Plan) of a published network; built once per process."""
    from parc_surgery.apply import apply_plan
    from parc_surgery.pipeline import plan_conversion

    arch = ARCHS[name]
    planned = plan_conversion(
        arch.model, rules=arch.rules, input_size=arch.input_size, model_args=arch.model_args
    )
    return apply_plan(planned.model, planned.plan, seed=0), planned.plan


def _swap_halves(t: torch.Tensor) -> torch.Tensor:
    """(O, 2C, kh, kw) -> the same weight for inputs cat(b, a) instead of cat(a, b)."""
    return torch.cat(t.chunk(2, dim=1)[::-1], dim=1)


def _layout(arch: OfficialArch, key: str, tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` of our `key` in the other model's layout (the swap is its own inverse)."""
    if arch.swapped_halves and key.endswith(arch.swapped_halves):
        return _swap_halves(tensor)
    return tensor


def to_official(arch: OfficialArch, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our converted state_dict -> the official model's (renamed, fusion swapped, aliases)."""
    names = arch.name_map(state)
    unmapped = sorted(set(state) - set(names))
    if unmapped:
        raise CheckpointError(
            f"{len(unmapped)} keys have no place in the official {arch.title}: "
            f"{_listing(unmapped)}",
            hint=f"export-official takes a checkpoint of the shipped {arch.rules} conversion",
        )
    out = {names[key]: _layout(arch, key, tensor) for key, tensor in state.items()}
    for alias, target in arch.aliases.items():
        out.update(
            {alias + k[len(target) :]: v for k, v in list(out.items()) if k.startswith(target)}
        )
    return out


def from_official(
    arch: OfficialArch, official: dict[str, torch.Tensor], own: dict[str, torch.Tensor], source: str
) -> dict[str, torch.Tensor]:
    """An official state_dict -> ours, checked against `own` (our model's state_dict).

    Raises CheckpointError listing every unexpected, missing and misshapen key.
    """
    names = arch.name_map(own)
    wanted = {official_key: key for key, official_key in names.items()
              if not official_key.startswith(arch.absent)}  # fmt: skip
    aliases = {k for k in official if any(k.startswith(a) for a in arch.aliases)}
    unexpected = sorted(set(official) - set(wanted) - aliases)
    missing = sorted(set(wanted) - set(official))
    misshapen = [
        f"{k} {tuple(official[k].shape)}, expected {tuple(own[wanted[k]].shape)}"
        for k in sorted(set(wanted) & set(official))
        if tuple(official[k].shape) != tuple(own[wanted[k]].shape)
    ]
    for alias in sorted(aliases):  # a duplicate of another key: only its shape must agree
        prefix = next(a for a in arch.aliases if alias.startswith(a))
        target = arch.aliases[prefix] + alias[len(prefix) :]
        if target not in official:
            unexpected.append(alias)
        elif official[alias].shape != official[target].shape:
            misshapen.append(f"{alias} {tuple(official[alias].shape)}, expected "
                             f"{tuple(official[target].shape)}")  # fmt: skip
    problems = [
        f"{len(keys)} {label} ({_listing(keys)})"
        for label, keys in (
            ("unexpected keys", unexpected),
            ("missing keys", missing),
            ("keys with another shape", misshapen),
        )
        if keys
    ]
    if problems:
        raise CheckpointError(
            f"{source} is not an official {arch.title} state_dict: {'; '.join(problems)}",
            hint=f"check --arch (one of {', '.join(ARCHS)}) and that the file is that model's "
            "weights",
        )
    return {key: _layout(arch, key, official[official_key]) for official_key, key in wanted.items()}


def read_official(path: str | os.PathLike, *, ema: bool = True) -> dict[str, torch.Tensor]:
    """The state_dict in an official torch file (its EMA weights when it has them)."""
    return read_official_weights(path, ema=ema)[0]


def read_official_weights(
    path: str | os.PathLike, *, ema: bool = True
) -> tuple[dict[str, torch.Tensor], str]:
    """(state_dict, which) from an official torch file, read with weights_only=True.

    The file is untrusted: it must be a regular file of at most MAX_OFFICIAL_BYTES
    holding a dict of tensors (directly, under one of `_NESTING`, keys possibly
    prefixed `module.`); anything else is a CheckpointError. A full training checkpoint
    (the official trainer's `checkpoint.pt`) holds `model_state_dict` and, with EMA on,
    `ema_state_dict`: `ema` takes the EMA weights when present (the published models are
    EMA averages), else the raw ones. `which` names what was taken: "ema_state_dict",
    "model_state_dict", another nesting key, or "state_dict file" for a bare state_dict.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist or is not a regular file")
    size = path.stat().st_size
    if size > MAX_OFFICIAL_BYTES:
        raise CheckpointError(
            f"{path} is {size / 2**30:.1f} GiB, larger than any official ParC-Net checkpoint "
            f"({MAX_OFFICIAL_BYTES / 2**30:.0f} GiB at most)"
        )
    from parc_surgery.files import note_inputs
    from parc_surgery.weights import check_zip_size

    note_inputs(path)
    check_zip_size(path, error=CheckpointError)  # a zip bomb, before torch.load unpacks it
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a bad or hostile file
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
        raise CheckpointError(
            f"{path} could not be read as a torch weights file ({type(err).__name__}: {first})",
            hint="give the official .pt/.pth state_dict; only tensors and plain containers "
            "are accepted (weights_only)",
        ) from None
    which = "state_dict file"
    nesting = (_EMA, *_NESTING) if ema else _NESTING
    for _ in range(2):  # {"model": {...}} or {"state_dict": {"model": ...}}: unwrap
        if isinstance(obj, dict):
            key = next((k for k in nesting if isinstance(obj.get(k), dict)), None)
            obj, which = (obj[key], key) if key is not None else (obj, which)
    if (
        not isinstance(obj, dict)
        or not obj
        or len(obj) > _MAX_KEYS
        or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    ):
        raise CheckpointError(
            f"{path} holds no state_dict (expected a dict of parameter names to tensors, "
            f"directly or under {' / '.join(repr(k) for k in nesting)})"
        )
    if all(k.startswith("module.") for k in obj):  # saved from DataParallel / DDP
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return obj, which


def _encoder_part(
    spec: OfficialArch, official: dict[str, torch.Tensor], source: str
) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """The encoder's state_dict inside an official detection / segmentation one, and
    {head module: number of tensors} for the rest (the official head, not imported)."""
    encoder = {k[len(_ENCODER) :]: v for k, v in official.items() if k.startswith(_ENCODER)}
    if not encoder:
        raise CheckpointError(
            f"{source} has no {_ENCODER}* keys, so it is not an official {spec.encoder_of} "
            f"model with a ParC-Net-S encoder",
            hint="for a classification checkpoint use --arch parcnet-s",
        )
    heads: dict[str, int] = {}
    for key in official:
        if not key.startswith(_ENCODER):
            heads[key.split(".")[0]] = heads.get(key.split(".")[0], 0) + 1
    return encoder, heads


def import_official(
    path: str | os.PathLike,
    arch: str,
    output: str | os.PathLike,
    *,
    force: bool = False,
    ema: bool = True,
) -> dict[str, Any]:
    """Official weights -> a parc-surgery checkpoint of the converted timm model.

    `ema`: from a full training checkpoint, take `ema_state_dict` when present (else
    `model_state_dict`). For an encoder arch (`parcnet-s-ssd`, `parcnet-s-deeplabv3`) only
    the file's `encoder.*` tensors are imported; the model's `final_conv` and `head`, which
    that encoder does not have, keep their initialisation, and the official head's tensors
    are counted, not imported. Returns a summary (arch, model, params, output, sha256,
    weights: which state_dict was taken; for encoders not_imported and official_head).
    """
    from parc_surgery.checkpoint import check_output, file_sha256, save

    spec = _arch(arch)
    check_output(output, force=force)  # fail before the slow part
    official, which = read_official_weights(path, ema=ema)
    heads: dict[str, int] = {}
    if spec.encoder_of:
        official, heads = _encoder_part(spec, official, str(path))
    reference, plan = _reference(spec.name)
    model = copy.deepcopy(reference)
    own = model.state_dict()
    state = from_official(spec, official, own, str(path))
    kept = sorted({k.split(".")[0] for k in set(own) - set(state)})
    model.load_state_dict({**own, **state}, strict=True)
    digest = save(model, plan, output, force=force, source_weights_sha256=file_sha256(path))
    summary = {**_summary(spec, model, output, digest), "weights": which}
    if spec.encoder_of:
        summary["not_imported"] = kept  # ours, not in the official encoder
        summary["official_head"] = heads  # theirs, not ours
    return summary


def load_encoder(
    checkpoint: str | os.PathLike, out_indices: tuple[int, ...] | None = None
) -> nn.Module:
    """A ParC-Net-S checkpoint as the official encoder: forward returns its end points.

    The features are cvnets' `out_l1` .. `out_l5` (the outputs of `layer_1` .. `layer_5`,
    ours `stages.0` .. `stages.4`: 32/64/96/128/160 channels, stride 2/4/8/16/32, the
    last 16 when dilated) that the official SSD and DeepLabV3 heads read; `out_indices`
    index them (default: all five). timm's own feature_info ends at `final_conv`, which
    the official encoder does not have.
    """
    from parc_surgery.backbone import features_only
    from parc_surgery.checkpoint import load

    model = load(checkpoint)
    stages = getattr(model, "stages", None)
    if not isinstance(stages, nn.Sequential) or len(stages) != 5:
        raise CheckpointError(
            f"{checkpoint} is not a ParC-Net-S (mobilevit_s) checkpoint: it has no five stages",
            hint="import it with import-official --arch parcnet-s-ssd / parcnet-s-deeplabv3",
        )
    info = {f["module"]: f for f in (getattr(model, "feature_info", None) or [])}
    if [f"stages.{i}" for i in range(4)] != list(info)[:4] or "final_conv" not in info:
        raise CheckpointError(f"{checkpoint} is not a timm mobilevit_s conversion")
    last = stages[4][-1]
    fusion = getattr(last, "conv_fusion", None)
    channels = fusion.conv.out_channels if fusion is not None else info["final_conv"]["num_chs"]
    model.feature_info = [*(dict(info[f"stages.{i}"]) for i in range(4)),
                          {"module": "stages.4", "num_chs": channels,
                           "reduction": info["final_conv"]["reduction"]}]  # fmt: skip
    return features_only(model, out_indices)


def export_official(
    checkpoint: str | os.PathLike,
    output: str | os.PathLike,
    *,
    arch: str | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """A parc-surgery checkpoint of a published network -> the official state_dict (.pt).

    `arch` None: found from the checkpoint's recipe (its timm model and model args).
    """
    from parc_surgery.checkpoint import atomic_write, check_output, file_sha256, load, read_recipe

    check_output(output, force=force)
    recipe = read_recipe(checkpoint)
    spec = _arch(arch) if arch else _arch_of(recipe, checkpoint)
    if spec.encoder_of:
        raise UsageError(
            f"export-official writes whole classification networks; {spec.name} is the "
            f"encoder of the official {spec.encoder_of}, whose head parc-surgery does not have",
            hint="export --arch parcnet-s, or load the encoder with features_only=True",
        )
    model = load(checkpoint)
    state = model.state_dict()
    _check_is_reference(spec, state, recipe, checkpoint)
    official = {k: v.detach().cpu().contiguous() for k, v in to_official(spec, state).items()}
    with atomic_write(output, force=force) as tmp:
        torch.save(official, tmp)
    return _summary(spec, model, output, file_sha256(output))


def _canonical(args: dict[str, Any]) -> str:
    """The args that shape the network (not the head dropout), as a comparable string."""
    args = {k: v for k, v in args.items() if k not in _TRAINING_ONLY}
    return json.dumps(args, sort_keys=True, default=list)


def _arch_of(recipe: dict[str, Any], checkpoint: str | os.PathLike) -> OfficialArch:
    plan = recipe.get("plan") or {}
    model = str(plan.get("model", "")).split("/")[-1].split(".")[0]
    args = _canonical(plan.get("model_args") or {})
    found = [s for s in ARCHS.values() if s.model == model and _canonical(s.model_args) == args]
    if len(found) > 1:  # mobilevit_s: ParC-Net-S or -XS, told apart by the block they swap in
        used = {str(s.get("replacement")) for s in plan.get("swaps") or []}
        same = [s for s in found if {w.replacement for w in _reference(s.name)[1].swaps} == used]
        found = same or found[:1]  # none: the first, which _check_is_reference then judges
    if found:
        return found[0]
    raise CheckpointError(
        f"{checkpoint} converts {model or 'an unknown model'} with model args {args}, which is "
        "none of the published ParC networks",
        hint="give --arch, or convert resnet50 / mobilenetv2_100 / convnext_tiny "
        "dims=[48,96,192,384] / mobilevit_s --rules parcnet-s or parcnet-xs / parcnet_h_base "
        "--rules parcnet-h at its native input size",
    )


def _check_is_reference(
    spec: OfficialArch, state: dict[str, torch.Tensor], recipe: dict[str, Any], checkpoint
) -> None:
    """Refuse a checkpoint whose structure or block semantics differ from the published one."""
    reference, plan = _reference(spec.name)
    own = {k: tuple(v.shape) for k, v in state.items()}
    ref = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    shapes = [f"{k} {own[k]}, published {ref[k]}" for k in sorted(set(own) & set(ref))
              if own[k] != ref[k]]  # fmt: skip
    problems = [
        f"{len(keys)} {label} ({_listing(keys)})"
        for label, keys in (
            ("missing keys", sorted(set(ref) - set(own))),
            ("extra keys", sorted(set(own) - set(ref))),
            ("keys with another shape", shapes),
        )
        if keys
    ]
    # Options that change the function without changing any shape (mid_mix) count too.
    swaps = {s["path"]: (s["replacement"], s["options"].get("mid_mix", False))
             for s in recipe.get("plan", {}).get("swaps", [])}  # fmt: skip
    expected = {s.path: (s.replacement, s.options.mid_mix) for s in plan.swaps}
    if swaps != expected:
        problems.append(f"swaps {sorted(swaps.items())}, published {sorted(expected.items())}")
    if problems:
        raise CheckpointError(
            f"{checkpoint} is not the published {spec.title}: {'; '.join(problems)}",
            hint=f"convert {spec.model} with --rules {spec.rules} at input "
            f"{spec.input_size[0]}x{spec.input_size[1]} (the official kernel lengths)",
        )


def _summary(spec: OfficialArch, model: nn.Module, output, digest: str) -> dict[str, Any]:
    return {
        "arch": spec.name,
        "model": spec.model,
        "rules": spec.rules,
        "params": sum(p.numel() for p in model.parameters()),
        "output": str(output),
        "sha256": digest,
    }


def _listing(items: list[str], limit: int = 12) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... and {len(items) - limit} more" if len(items) > limit else "")
