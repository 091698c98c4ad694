"""The pipeline: one orchestration for the CLI, batch jobs and the Python API.

plan_conversion: a model (object or name) + rules -> model, ModelGraph, Plan (changes nothing)
convert:         ... -> apply -> verify -> optional save            (the real job)
parcify_:        convert a model object in place and return its Plan (the public verb)

A model given by name is created here (models.create_model) and owned by the pipeline; a
model object is the caller's and is converted in place. After the first step both take
the same path, so a name and the object it names give the same Plan.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from parc_surgery.apply import OutputComparison, Verification
from parc_surgery.errors import NothingMatchedError, UsageError, VerificationError
from parc_surgery.models import create_model, eval_mode, input_channels, model_name_of, source_of
from parc_surgery.plan import ModelSource, Plan

if TYPE_CHECKING:
    from parc_surgery.rules.matching import FilterFn

__all__ = [
    "Conversion",
    "PlannedConversion",
    "compare_outputs",
    "convert",
    "create_model",
    "parcify_",
    "plan_conversion",
]

StepCallback = Callable[[str], None]


def _no_step(_: str) -> None:
    return None


@dataclass
class PlannedConversion:
    """What a dry run produces: the untouched model, its graph and the Plan."""

    model: nn.Module
    graph: Any
    plan: Plan
    ruleset: Any
    weights_sha256: str | None = None


@dataclass
class Conversion(PlannedConversion):
    """A finished conversion: the converted model and what was checked on it."""

    verification: Verification | None = None
    output: str | None = None
    output_sha256: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON document of a conversion (keys documented in the README)."""
        plan = self.plan
        return {
            "plan": plan.to_dict(),
            "result": {
                "params_before": plan.params_total_before,
                "params_after": plan.params_total_after,
                "macs_before": plan.macs_total_before,
                "macs_after": plan.macs_total_after,
                "verification": self.verification.to_dict() if self.verification else {},
            },
            "output": self.output,
            "output_sha256": self.output_sha256,
        }


def _model_to_convert(
    model: nn.Module | str,
    model_args: dict[str, Any],
    weights: str | None,
    pretrained: bool,
) -> tuple[nn.Module, str, ModelSource, str | None]:
    """(model, its name in the Plan, its source, source weights sha256) for either form."""
    from parc_surgery.checkpoint import load_source_weights

    if isinstance(model, nn.Module):
        if model_args or weights or pretrained:
            raise UsageError(
                "model_args, weights and pretrained apply to a model given by name, not to "
                f"a model object ({type(model).__name__})",
                hint="build the model with its arguments and weights yourself, then convert it",
            )
        source = source_of(model)
        return model, source.model_name or model_name_of(model), source, None
    if not isinstance(model, str):
        raise UsageError(
            f"cannot convert a {type(model).__name__}: give a model name or an nn.Module"
        )
    created = create_model(model, model_args, pretrained=pretrained)
    created.eval()
    weights_sha = load_source_weights(created, weights) if weights else None
    return created, model, source_of(created, model), weights_sha


def plan_conversion(
    model: nn.Module | str,
    *,
    stages: list[int] | None = None,
    rules: str | None = None,
    input_size: tuple[int, int] | None = None,
    model_args: dict[str, Any] | None = None,
    weights: str | None = None,
    pretrained: bool = False,
    strict: bool = False,
    init: str | None = None,
    filter_fn: FilterFn | None = None,
    on_step: StepCallback = _no_step,
) -> PlannedConversion:
    """Trace the model, match rules and compute the Plan; changes nothing.

    `model` is a model object (timm, torchvision or your own nn.Module) or a name
    (timm's, or "torchvision:NAME"; model_args, weights and pretrained apply to names).
    `filter_fn(module, path) -> bool` narrows what the rules select. `init` ("paper" or
    "from_local") sets the new ParC convs' initialisation for every rule, over the file's.
    """
    from parc_surgery.graph import analyze, default_input_size
    from parc_surgery.planning import build_plan
    from parc_surgery.rules import default_rules_for, load_rules, match

    model_args = dict(model_args or {})
    on_step("load")
    module, name, source, weights_sha = _model_to_convert(model, model_args, weights, pretrained)
    ruleset = load_rules(rules if rules else default_rules_for(source.model_name, module))
    if init is not None:
        ruleset.overrides["init"] = init
    size = tuple(input_size) if input_size else default_input_size(module)
    on_step("trace")
    graph = analyze(module, input_size=size, leaf_classes=tuple(ruleset.leaf))
    on_step("plan")
    result = match(ruleset, graph, module, stages, filter_fn=filter_fn)
    if strict and result.unmatched_rules:
        raise NothingMatchedError(
            f"{', '.join(result.unmatched_rules)} matched nothing in {name}",
            hint="fix the rule or drop --strict to allow it",
        )
    plan = build_plan(
        module,
        model_name=name,
        model_args=model_args,
        graph=graph,
        matches=result.matches,
        stages=result.stages,
        rules_source=ruleset.source,
        rules=ruleset.to_dict(),
        warnings=result.warnings,
        source=source,
    )
    return PlannedConversion(module, graph, plan, ruleset, weights_sha)


def convert(
    model: nn.Module | str,
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

    A model object is converted in place (the result's `model` is the same object).
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
    planned = plan_conversion(model, on_step=on_step, **plan_kwargs)
    if on_plan is not None:
        on_plan(planned)  # shown before anything changes
    if not planned.plan.swaps and not allow_empty:
        raise NothingMatchedError(
            f"nothing to swap: no rule selected a block of {planned.plan.model} in stages "
            f"{', '.join(map(str, planned.plan.stages)) or '(none)'}, so the result would be "
            "the unconverted model" + ("; nothing was written" if output else ""),
            hint="choose other --stages or --rules (parc-surgery inspect shows what each "
            "shipped rule selects), or pass --allow-empty to write it anyway",
        )
    original = copy.deepcopy(planned.model) if check_outputs else None
    on_step("apply")
    converted = apply_plan(planned.model, planned.plan, seed=seed)
    on_step("verify")
    leaf = tuple(planned.ruleset.leaf)
    verification = verify(converted, planned.plan, planned.graph, leaf_classes=leaf)
    if original is not None:
        verification.outputs = compare_outputs(original, converted, planned.plan.input_size)
        del original
    result = Conversion(
        converted,
        planned.graph,
        planned.plan,
        planned.ruleset,
        planned.weights_sha256,
        verification,
    )
    if output:
        on_step("save")
        result.output = str(output)
        result.output_sha256 = save(
            converted,
            planned.plan,
            output,
            force=force,
            source_weights_sha256=planned.weights_sha256,
            seed=seed,
            inputs=inputs,
        )
    return result


def parcify_(
    model: nn.Module,
    rules: str | None = None,
    *,
    stages: list[int] | None = None,
    input_size: tuple[int, int] | None = None,
    filter_fn: FilterFn | None = None,
    seed: int | None = 0,
    allow_empty: bool = False,
) -> Plan:
    """Convert `model` (timm, torchvision or your own nn.Module) to ParC in place.

    Rules: a rules file or shipped config name; default: chosen by the model's name or
    the block classes it contains. `filter_fn(module, path) -> bool` narrows what the
    rules select. Returns the Plan it applied (save it with the model: `save(model, plan,
    path)`). The training flags are kept; the converted model is verified by re-tracing
    (VerificationError if a shape changed, which leaves the model converted). When the
    rules select nothing it raises NothingMatchedError, unless `allow_empty`.
    """
    if not isinstance(model, nn.Module):
        raise UsageError(
            f"parcify_ converts a model object in place, not a {type(model).__name__}",
            hint="for a model name use convert(name) or plan_conversion(name)",
        )
    conversion = convert(
        model,
        rules=rules,
        stages=stages,
        input_size=input_size,
        filter_fn=filter_fn,
        seed=seed,
        allow_empty=allow_empty,
    )
    return conversion.plan


def compare_outputs(
    original: nn.Module, converted: nn.Module, input_size, seed: int = 0
) -> OutputComparison:
    """Run both models in eval mode on one seeded batch: shapes, finiteness, cosine.

    The batch has the model's own input channels. Non-finite converted outputs raise
    VerificationError (exit 5): such a checkpoint is never written.
    """
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(2, input_channels(original), *input_size, generator=generator)
    ref = next(iter(converted.parameters()), None)
    if ref is not None:
        x = x.to(device=ref.device, dtype=ref.dtype if ref.is_floating_point() else None)
    with torch.no_grad(), eval_mode(original), eval_mode(converted):
        a = original(x)
        b = converted(x)
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
    return OutputComparison(
        output_shape_original=list(a.shape),
        output_shape_converted=list(b.shape),
        finite=finite,
        cosine_similarity=round(cosine, 6),
    )
