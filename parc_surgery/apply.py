"""Execute a Plan on a model in place, and verify the result against the original.

apply_plan reads a Plan and writes the model's submodules at the swap paths; verify
re-traces the converted model and compares shapes with the original's ModelGraph.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from parc_surgery.blocks.registry import build_for_swap
from parc_surgery.errors import TraceError, VerificationError
from parc_surgery.plan import Plan

__all__ = ["PARC_LEAF_CLASSES", "OutputComparison", "Verification", "apply_plan", "verify"]

# Modules parc-surgery installs: traced as leaves, since their forward branches on the
# runtime feature size (kernel resampling) which symbolic tracing cannot follow.
PARC_LEAF_CLASSES = (
    "ParC",
    "ParCPair",
    "ParCMobileVitBlock",
    "ParCSpatialMixer",
    "ParCViTBlock",
    "ParCSwinBlock",
    "ParCMapBlock",
    "ParCMobileVitV2Block",
    "ParCCaitBlock",
    "ParCTwinsBlock",
    "ParCMap2dBlock",
    "ParCPartitionBlock",
)


@dataclass
class OutputComparison:
    """Original and converted model run on one seeded batch (`convert(check_outputs=True)`)."""

    output_shape_original: list[int]
    output_shape_converted: list[int]
    finite: bool
    cosine_similarity: float

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass
class Verification:
    """What was checked on a converted model; `to_dict` gives the JSON `verification` keys."""

    blocks_checked: int  # swapped blocks whose output shape equals the original's
    output_shape: list[int]  # the model's output at batch 1 and the plan's input size
    outputs: OutputComparison | None = None
    onnx: dict[str, Any] | None = None  # the ONNX export's result (--export-onnx)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "blocks_checked": self.blocks_checked,
            "output_shape": list(self.output_shape),
        }
        if self.outputs is not None:
            data["outputs"] = self.outputs.to_dict()
        if self.onnx is not None:
            data["onnx"] = self.onnx
        return data


def apply_plan(model: nn.Module, plan: Plan, *, seed: int | None = 0) -> nn.Module:
    """Swap every planned module in place; returns the same model object.

    With a seed, new parameters are initialised from a generator seeded per swap, so the
    same command gives the same checkpoint; the global RNG state is left as it was.
    """
    for number, swap in enumerate(plan.swaps):
        parent_path, _, child_name = swap.path.rpartition(".")
        parent = model.get_submodule(parent_path) if parent_path else model
        original = parent.get_submodule(child_name)
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed + number)
            new = build_for_swap(original, swap)
        new.train(original.training)
        setattr(parent, child_name, new)
    record_input_size(model, plan)
    from parc_surgery.reparam import keep_unfused

    keep_unfused(model, [swap.path for swap in plan.swaps])
    return model


def record_input_size(model: nn.Module, plan: Plan) -> None:
    """A timm model's pretrained_cfg says the input size it was converted at (its kernels
    and position embeddings are sized for it), so timm's resolve_data_config uses it."""
    cfg = getattr(model, "pretrained_cfg", None)
    if not isinstance(cfg, dict) or not plan.input_size:
        return
    size = tuple(int(side) for side in plan.input_size)
    old = cfg.get("input_size")
    channels = int(old[0]) if isinstance(old, (tuple, list)) and len(old) == 3 else 3
    if tuple(old or ())[1:] == size:
        return
    cfg = dict(cfg, input_size=(channels, *size))
    cfg.pop("test_input_size", None)
    cfg.pop("pool_size", None)
    model.pretrained_cfg = cfg
    if isinstance(getattr(model, "default_cfg", None), dict):
        model.default_cfg = cfg


def verify(model: nn.Module, plan: Plan, original_graph: Any, *, leaf_classes=()) -> Verification:
    """Re-trace the converted model; every swapped block and the model keep their shapes.

    Returns what was checked (VerificationError when a shape differs).
    """
    from parc_surgery.graph import analyze

    try:
        graph = analyze(
            model,
            input_size=tuple(plan.input_size),
            leaf_classes=tuple(leaf_classes) + PARC_LEAF_CLASSES,
        )
    except TraceError as err:
        raise VerificationError(
            f"the converted model could not be traced again: {err.what}",
            hint="this is a parc-surgery bug if the original model traced; please report it",
        ) from None
    for swap in plan.swaps:
        before = original_graph.modules[swap.path].out_shape
        after = graph.modules[swap.path].out_shape
        if tuple(before) != tuple(after):
            raise VerificationError(
                f"block {swap.path} ({swap.replacement}) outputs {tuple(after)} "
                f"where the original output {tuple(before)}",
                hint="check the rule's options (kernel_size) for this block",
            )
    model_before = original_graph.output_shape
    model_after = graph.output_shape
    if model_before != model_after:
        raise VerificationError(
            f"the converted model outputs {tuple(model_after)} where the original "
            f"output {tuple(model_before)}"
        )
    return Verification(blocks_checked=len(plan.swaps), output_shape=list(model_after or ()))
