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
    allow_empty: bool = False,
    on_step: StepCallback = _no_step,
    on_plan: Callable[[PlannedConversion], None] | None = None,
    **plan_kwargs: Any,
) -> Conversion:
    """Plan, apply and verify; with `output`, also write the checkpoint atomically.

    check_outputs also runs the original and the converted model on one seeded batch
    (see compare_outputs); that needs a copy of the original, so it costs memory, and
    fails (VerificationError) when the converted outputs are not finite. A plan with
    nothing to swap raises NothingMatchedError (exit 3) and writes nothing, unless
    `allow_empty`.
    """
    from parc_surgery.apply import apply_plan, verify
    from parc_surgery.checkpoint import check_output, save

    inputs = [plan_kwargs.get("weights"), plan_kwargs.get("rules")]
    if output:
        check_output(output, force=force, inputs=inputs)  # fail before the slow part
    planned = plan_conversion(model_name, on_step=on_step, **plan_kwargs)
    if on_plan is not None:
        on_plan(planned)  # shown before anything changes
    if not planned.plan.swaps and not allow_empty:
        raise NothingMatchedError(
            f"nothing to swap: no rule selected a block of {model_name} in stages "
            f"{', '.join(map(str, planned.plan.stages)) or '(none)'}, so the result would be "
            "the unconverted model" + ("; nothing was written" if output else ""),
            hint="choose other --stages or --rules (parc-surgery inspect shows what each "
            "shipped rule selects), or pass --allow-empty to write it anyway",
        )
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
            inputs=inputs,
        )
    return result


def compare_outputs(original: nn.Module, converted: nn.Module, input_size, seed: int = 0) -> dict:
    """Run both models on one seeded batch: shapes, finiteness, cosine similarity.

    The batch has the model's own input channels. Non-finite converted outputs raise
    VerificationError (exit 5): such a checkpoint is never written.
    """
    from parc_surgery.errors import VerificationError
    from parc_surgery.models import input_channels

    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(2, input_channels(original), *input_size, generator=generator)
    with torch.no_grad():
        a = original.eval()(x)
        b = converted.eval()(x)
    finite = bool(torch.isfinite(b).all())
    if not finite:
        bad = int((~torch.isfinite(b)).sum())
        raise VerificationError(
            f"the converted model's outputs on a seeded batch are not finite ({bad} of "
            f"{b.numel()} values are NaN or infinite"
            + ("; the original's are too)" if not bool(torch.isfinite(a).all()) else ")"),
            hint="check the source weights and the rules' options (init, kernel_size); "
            "nothing was written",
        )
    cosine = torch.nn.functional.cosine_similarity(a.flatten(1), b.flatten(1)).mean().item()
    return {
        "output_shape_original": list(a.shape),
        "output_shape_converted": list(b.shape),
        "finite": finite,
        "cosine_similarity": round(cosine, 6),
    }
