"""Rule sets: loading a file or a shipped config, and choosing a default per model.

`load_rules` reads a YAML file and writes nothing; it returns a RuleSet, the validated
schema plus where each rule came from ("file:line"), or raises RulesError.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from torch import nn

from parc_surgery.errors import RulesError
from parc_surgery.options import SwapOptions, layered
from parc_surgery.rules.schema import RuleFileSpec, RuleSpec
from parc_surgery.rules.validation import validate_rules
from parc_surgery.rules.yaml_source import Positions, parse_yaml, read_yaml_file

__all__ = [
    "BUILTIN_DEFAULTS",
    "RuleSet",
    "default_rules_for",
    "load_rules",
    "parse_rules",
    "shipped_configs",
]

# Options a rule gets when neither it nor the file's `defaults:` sets them.
BUILTIN_DEFAULTS: dict[str, Any] = SwapOptions().to_dict()


@dataclass
class RuleSet:
    """A validated rules file and the position of each of its rules."""

    spec: RuleFileSpec
    source: str  # "shipped:<name>" or the path as given
    label: str  # how messages name the file ("resnet50.yaml" or the path)
    rule_lines: list[str]  # "file:line" of each rule, in order
    positions: Positions
    # Options set for every rule over the file's (e.g. convert --init); empty: none.
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def rules(self) -> list[RuleSpec]:
        return self.spec.rules

    @property
    def stages(self) -> list[int] | None:
        return self.spec.stages

    @property
    def leaf(self) -> list[str]:
        return self.spec.leaf

    def rule_label(self, i: int) -> str:
        """How messages name rule i: "'name' (file:line)" or "rule 2 (file:line)"."""
        name = self.spec.rules[i].name
        return (
            f"{name!r} ({self.rule_lines[i]})" if name else f"rule {i + 1} ({self.rule_lines[i]})"
        )

    def options_for(self, i: int, **resolved: Any) -> SwapOptions:
        """Built-in defaults <- file `defaults:` <- the rule's own <- overrides <- resolved."""
        return layered(
            self.spec.defaults, self.spec.rules[i].replace, **{**self.overrides, **resolved}
        )

    def to_dict(self) -> dict[str, Any]:
        """The validated rules as plain data (for a Plan's recipe): what the file set."""
        return self.spec.model_dump(by_alias=True, exclude_unset=True, mode="json")


def parse_rules(text: str, source: str = "<rules>", label: str | None = None) -> RuleSet:
    """A RuleSet from YAML text; `label` names it in messages (default: `source`)."""
    label = label or source
    data, positions = parse_yaml(text, label)
    return _ruleset(data, positions, source=source, label=label)


def _ruleset(data: Any, positions: Positions, *, source: str, label: str) -> RuleSet:
    spec = validate_rules(data, positions)
    lines = [positions.line_of(("rules", i)) for i in range(len(spec.rules))]
    return RuleSet(spec=spec, source=source, label=label, rule_lines=lines, positions=positions)


def _configs_dir() -> Path:
    return Path(str(resources.files("parc_surgery.configs")))


def shipped_configs() -> dict[str, tuple[Path, str]]:
    """{name: (path, one-line description)} of the rules files shipped with the package."""
    found = {}
    for path in sorted(_configs_dir().glob("*.yaml")):
        try:
            data, _ = read_yaml_file(path)
        except RulesError:
            data = {}
        description = data.get("description") if isinstance(data, dict) else None
        lines = str(description or "").strip().splitlines()
        found[path.stem] = (path, lines[0] if lines else "")
    return found


def load_rules(path_or_name: str | Path) -> RuleSet:
    """A rules file by path, or a shipped config by name ("resnet50")."""
    path = Path(path_or_name)
    shipped = shipped_configs()
    if str(path_or_name) in shipped and not path.is_file():
        path = shipped[str(path_or_name)][0]
        source, label = f"shipped:{path_or_name}", path.name
    elif path.exists():  # read_yaml_file names a directory or a device as such
        source, label = str(path_or_name), str(path_or_name)
    else:
        raise RulesError(
            f"rules file {str(path_or_name)!r} does not exist",
            hint=f"Give a YAML file or a shipped config: {', '.join(shipped)}",
        )
    data, positions = read_yaml_file(path)
    positions.source = label
    return _ruleset(data, positions, source=source, label=label)


# Each shipped family config: the model names it is for (timm's, and torchvision's after
# "torchvision:"), and the block classes (module, class name) that identify the family
# in a model of any name, timm's or torchvision's. First match wins.
_TV = "torchvision.models"
_FAMILIES: tuple[tuple[str, tuple[str, ...], tuple[tuple[str, str], ...]], ...] = (
    ("resnet", ("resnet*", "resnext*", "wide_resnet*", "seresnet*", "seresnext*"),
     (("timm.models.resnet", "Bottleneck"), ("timm.models.resnet", "BasicBlock"),
      (f"{_TV}.resnet", "Bottleneck"), (f"{_TV}.resnet", "BasicBlock"))),
    ("regnet", ("regnetx_*", "regnety_*", "regnetv_*"),
     (("timm.models.regnet", "Bottleneck"), ("timm.models.regnet", "PreBottleneck"))),
    ("regnet", ("regnet_*",), ((f"{_TV}.regnet", "ResBottleneckBlock"),)),
    ("convnets", ("resnetv2_*", "res2net*", "res2next*", "cspresnet*", "cspresnext*",
                  "cspdarknet*", "darknet*", "repvgg_*", "dla*", "dpn*", "nfnet_*",
                  "eca_nfnet_*", "dm_nfnet_*", "hrnet_*"),
     (("timm.models.resnetv2", "PreActBottleneck"), ("timm.models.res2net", "Bottle2neck"),
      ("timm.models.cspnet", "BottleneckBlock"), ("timm.models.cspnet", "DarkBlock"),
      ("timm.models.byobnet", "RepVggBlock"), ("timm.models.dla", "DlaBasic"),
      ("timm.models.dla", "DlaBottleneck"), ("timm.models.dpn", "DualPathBlock"),
      ("timm.models.nfnet", "NormFreeBlock"), ("timm.models.hrnet", "HighResolutionModule"))),
    ("densenet", ("densenet*",), (("timm.models.densenet", "DenseLayer"),)),
    ("inception", ("inception_v3", "tf_inception_v3", "adv_inception_v3", "gluon_inception_v3"),
     (("timm.models.inception_v3", "InceptionE"), (f"{_TV}.inception", "InceptionE"))),
    ("vgg", ("vgg*",), (("timm.models.vgg", "VGG"), (f"{_TV}.vgg", "VGG"))),
    ("convmixer", ("convmixer_*",), (("timm.models.convmixer", "ConvMixer"),)),
    ("mobilenetv2", ("mobilenetv2*", "mobilenet_v2"),
     ((f"{_TV}.mobilenetv2", "InvertedResidual"),)),
    ("convnext", ("convnext*",),
     (("timm.models.convnext", "ConvNeXtBlock"), (f"{_TV}.convnext", "CNBlock"))),
    ("mobilevit", ("mobilevit_*",), (("timm.models.mobilevit", "MobileVitBlock"),)),
    ("mobilevitv2", ("mobilevitv2_*",), (("timm.models.mobilevit", "MobileVitV2Block"),)),
    ("pit", ("pit_*",), (("timm.models.pit", "Transformer"),)),
    ("vit", ("vit_*", "deit_*", "deit3_*"), (("timm.models.vision_transformer", "Block"),
                                            (f"{_TV}.vision_transformer", "EncoderBlock"))),
    ("swin", ("swin_*",), (("timm.models.swin_transformer", "SwinTransformerBlock"),
                           (f"{_TV}.swin_transformer", "SwinTransformerBlock"))),
    ("efficientformer", ("efficientformer_l*",),
     (("timm.models.efficientformer", "MetaBlock1d"),)),
    # Attention families (blocks/attention_zoo.py).
    ("cait", ("cait_*",), (("timm.models.cait", "LayerScaleBlock"),)),
    ("twins", ("twins_*",), (("timm.models.twins", "Block"),)),
    ("coatnet", ("coatnet_*",), (("timm.models.maxxvit", "TransformerBlock2d"),)),
    ("maxvit", ("maxvit_*",), (("timm.models.maxxvit", "MaxxVitBlock"),)),
    ("poolformer", ("poolformer*", "convformer_*", "caformer_*"),
     (("timm.models.metaformer", "MetaFormerBlock"),)),
)  # fmt: skip


def _classes_in(model: nn.Module | None) -> set[tuple[str, str]]:
    if model is None:
        return set()
    return {(type(m).__module__, type(m).__name__) for m in model.modules()}


def default_rules_for(model_name: str | None, model: nn.Module | None = None) -> str:
    """The shipped config for a model's family, else generic.

    By name first ("timm/resnet50.a1_in1k", "torchvision:resnet50" -> resnet), unless the
    model is given and lacks the family's classes (resnetv2_50 is not a timm.models.resnet
    model); then by the block classes it contains, for a model of any name or none (a
    timm, torchvision or hand-built model object).
    """
    name = (model_name or "").split(":")[-1].split("/")[-1].split(".")[0].lower()
    classes = _classes_in(model)
    for config, patterns, family in _FAMILIES:
        named = any(fnmatch.fnmatch(name, pattern) for pattern in patterns)
        # A name is checked against the family's timm classes when it lists any (timm's
        # InvertedResidual is no mark of MobileNetV2: EfficientNet has it too).
        timm_family = {c for c in family if c[0].startswith("timm.")}
        if named and (model is None or not timm_family or classes & set(family)):
            return config
    for config, _, family in _FAMILIES:
        if classes & set(family):
            return config
    return "generic"
