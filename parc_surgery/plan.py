"""The Plan: what a conversion will change, as plain data with a JSON round trip.

The dry run prints a Plan, apply executes it, and a checkpoint stores it as the recipe
that reproduces the converted architecture. Computing a Plan never modifies the model.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field, fields
from typing import Any

from parc_surgery.options import SwapOptions

__all__ = ["MODEL_KINDS", "PLAN_FORMAT_VERSION", "ModelSource", "Plan", "Swap"]

PLAN_FORMAT_VERSION = 1
MODEL_KINDS = ("timm", "torchvision", "custom")


@dataclass(frozen=True)
class ModelSource:
    """Where the converted model came from, so load() knows how to rebuild the base model.

    kind: "timm" or "torchvision" (rebuilt by `name` when it has one) or "custom" (the
    caller builds it: `load(path, model=...)`); class_path: "package.module.Class".
    """

    kind: str
    name: str | None
    class_path: str

    @property
    def model_name(self) -> str | None:
        """The name `models.create_model` rebuilds it by, or None if it cannot."""
        if self.name is None or self.kind == "custom":
            return None
        return self.name if self.kind == "timm" else f"torchvision:{self.name}"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "class": self.class_path}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSource:
        kind, name, class_path = data.get("kind"), data.get("name"), data.get("class")
        if kind not in MODEL_KINDS or not isinstance(class_path, str):
            raise ValueError(f"source {data!r}: kind must be one of {MODEL_KINDS}, class a string")
        if name is not None and not isinstance(name, str):
            raise ValueError(f"source name {name!r} is not a string")
        return cls(kind=kind, name=name, class_path=class_path)


@dataclass
class Swap:
    """One module replaced by one replacement block."""

    path: str  # qualified module name, e.g. "layer3.3"
    module_type: str  # class name of the original module
    stage: int
    container: str  # qualified name of the parent Sequential / ModuleList
    index: int  # 0-based position in the container
    container_len: int
    feature_size: tuple[int, int]  # (H, W) the module's output has at the input size
    replacement: str  # registered replacement name, e.g. "parc_bottleneck"
    options: SwapOptions  # resolved options (pe a bool), validated again when read back
    rule: str  # the rule that matched, as "file:line" plus its name if any
    first_in_container: bool = False  # the first selected block of its container
    prefix_tokens: int = 0  # patch-token blocks (ViT): class / register tokens before the grid
    old_module: str = ""  # one-line description of the original module
    new_module: str = ""  # one-line description of the replacement
    params_before: int = 0
    params_after: int = 0
    macs_before: int = 0
    macs_after: int = 0
    impl_auto: str = ""  # backend `auto` chooses at the plan's input size

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["feature_size"] = list(self.feature_size)
        data["options"] = self.options.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Swap:
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs["feature_size"] = tuple(kwargs["feature_size"])
        options = dict(kwargs.get("options") or {})
        # 0.1 recipes kept first_in_container among the options.
        if "first_in_container" in options:
            kwargs.setdefault("first_in_container", bool(options.pop("first_in_container")))
        kwargs["options"] = SwapOptions.model_validate(options)
        return cls(**kwargs)


@dataclass
class Plan:
    """Every swap of a conversion plus what produced it."""

    model: str  # the model's name (timm, "torchvision:NAME") or, for a custom one, its class
    model_args: dict[str, Any]
    input_size: tuple[int, int]  # (H, W)
    stages: list[int]
    rules_source: str  # path of the rules file, or "shipped:<name>"
    rules: dict[str, Any]  # the resolved rules (validated, as plain data)
    swaps: list[Swap] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    params_total_before: int = 0
    macs_total_before: int = 0
    format_version: int = PLAN_FORMAT_VERSION
    # None in recipes written before 0.2: a timm model named by `model`.
    source: ModelSource | None = None

    @property
    def params_total_after(self) -> int:
        return self.params_total_before + sum(s.params_after - s.params_before for s in self.swaps)

    @property
    def macs_total_after(self) -> int:
        return self.macs_total_before + sum(s.macs_after - s.macs_before for s in self.swaps)

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data = copy.deepcopy({k: v for k, v in data.items() if k not in ("swaps", "source")})
        data["input_size"] = list(self.input_size)
        data["swaps"] = [swap.to_dict() for swap in self.swaps]
        data["source"] = self.source.to_dict() if self.source is not None else None
        data["params_total_after"] = self.params_total_after
        data["macs_total_after"] = self.macs_total_after
        return data

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Plan:
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs["input_size"] = tuple(kwargs["input_size"])
        kwargs["swaps"] = [Swap.from_dict(s) for s in kwargs.get("swaps", [])]
        if kwargs.get("source") is not None:
            kwargs["source"] = ModelSource.from_dict(kwargs["source"])
        return cls(**kwargs)

    @classmethod
    def from_json(cls, text: str) -> Plan:
        return cls.from_dict(json.loads(text))
