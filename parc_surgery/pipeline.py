"""The pipeline: one orchestration for the CLI, batch jobs and the Python API.

plan_conversion: model name + rules -> (model, ModelGraph, Plan)   (changes nothing)
convert:         ... -> apply -> verify -> optional save            (the real job)
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from parc_surgery.errors import NothingMatchedError
from parc_surgery.models import create_model

__all__ = ["Conversion", "PlannedConversion", "convert", "create_model", "plan_conversion"]

StepCallback = Callable[[str], None]


def _no_step(_: str) -> None:
    return None


@dataclass
class PlannedConversion:
    """What a dry run produces: the untouched model, its graph and the Plan."""

    model: nn.Module
    graph: Any
    plan: Any
    ruleset: Any
    weights_sha256: str | None = None


@dataclass
class Conversion(PlannedConversion):
    """A finished conversion: the converted model and what was measured on it."""

    verification: dict[str, Any] = field(default_factory=dict)
    output: str | None = None
    output_sha256: str | None = None


def plan_conversion(
    model_name: str,
    *,
    stages: list[int] | None = None,
    rules: str | None = None,
    input_size: tuple[int, int] | None = None,
    model_args: dict[str, Any] | None = None,
    weights: str | None = None,
    pretrained: bool = False,
    strict: bool = False,
    on_step: StepCallback = _no_step,
) -> PlannedConversion:
    """Build the model, trace it, match rules and compute the Plan; changes nothing."""
    from parc_surgery.checkpoint import load_source_weights
    from parc_surgery.graph import analyze, default_input_size
    from parc_surgery.planning import build_plan
    from parc_surgery.rules import default_rules_for, load_rules, match

    model_args = dict(model_args or {})
    on_step("load")
    model = create_model(model_name, model_args, pretrained=pretrained)
    model.eval()
    weights_sha = load_source_weights(model, weights) if weights else None
    ruleset = load_rules(rules if rules else default_rules_for(model_name, model))
    size = tuple(input_size) if input_size else default_input_size(model)
    on_step("trace")
    graph = analyze(model, input_size=size, leaf_classes=tuple(ruleset.leaf))
    on_step("plan")
    result = match(ruleset, graph, model, stages)
    if strict and result.unmatched_rules:
        raise NothingMatchedError(
            f"{', '.join(result.unmatched_rules)} matched nothing in {model_name}",
            hint="fix the rule or drop --strict to allow it",
        )
    plan = build_plan(
        model,
        model_name=model_name,
        model_args=model_args,
        graph=graph,
        matches=result.matches,
        stages=result.stages,
        rules_source=ruleset.source,
        rules=ruleset.to_dict(),
        warnings=result.warnings,
    )
    return PlannedConversion(model, graph, plan, ruleset, weights_sha)


def convert(
    model_name: str,
    *,
    output: str | None = None,
    force: bool = False,
    seed: int | None = 0,
    check_outputs: bool = False,
    on_step: StepCallback = _no_step,
    on_plan: Callable[[PlannedConversion], None] | None = None,
    **plan_kwargs: Any,
) -> Conversion:
    """Plan, apply and verify; with `output`, also write the checkpoint atomically.

    check_outputs also runs the original and the converted model on one seeded batch
    (see compare_outputs); that needs a copy of the original, so it costs memory.
    """
    from parc_surgery.apply import apply_plan, verify
    from parc_surgery.checkpoint import check_output, save

    if output:
        check_output(output, force=force)  # fail before the slow part, not after
    planned = plan_conversion(model_name, on_step=on_step, **plan_kwargs)
    if on_plan is not None:
        on_plan(planned)  # shown before anything changes
    original = copy.deepcopy(planned.model) if check_outputs else None
    on_step("apply")
    model = apply_plan(planned.model, planned.plan, seed=seed)
    on_step("verify")
    figures = verify(model, planned.plan, planned.graph, leaf_classes=tuple(planned.ruleset.leaf))
    result = Conversion(
        model, planned.graph, planned.plan, planned.ruleset, planned.weights_sha256, figures
    )
    if original is not None:
        result.verification["outputs"] = compare_outputs(original, model, planned.plan.input_size)
        del original
    if output:
        on_step("save")
        result.output = str(output)
        result.output_sha256 = save(
            model,
            planned.plan,
            output,
            force=force,
            source_weights_sha256=planned.weights_sha256,
            seed=seed,
        )
    return result


def compare_outputs(original: nn.Module, converted: nn.Module, input_size, seed: int = 0) -> dict:
    """Run both models on one seeded batch: shapes, finiteness, cosine similarity."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, *input_size, generator=generator)
    with torch.no_grad():
        a = original.eval()(x)
        b = converted.eval()(x)
    cosine = torch.nn.functional.cosine_similarity(a.flatten(1), b.flatten(1)).mean().item()
    return {
        "output_shape_original": list(a.shape),
        "output_shape_converted": list(b.shape),
        "finite": bool(torch.isfinite(b).all()),
        "cosine_similarity": round(cosine, 6),
    }
