"""`parc-convert MODEL` / `parc-surgery convert MODEL`: plan, apply, verify, save."""

from __future__ import annotations

from typing import Annotated

import typer

from parc_surgery.cli.common import Output, conversion_kwargs, handle_errors, set_threads
from parc_surgery.cli.options import (
    AllowEmptyOpt,
    ForceOpt,
    Init,
    InitOpt,
    InputSizeOpt,
    ModelArg,
    ModelArgsOpt,
    PlanFormat,
    PlanFormatOpt,
    QuietOpt,
    RulesOpt,
    SeedOpt,
    StagesOpt,
    StrictOpt,
    ThreadsOpt,
    WeightsOpt,
)
from parc_surgery.extras import require_extra
from parc_surgery.report import dumps, print_plan, result_dict

__all__ = ["convert_command"]


@handle_errors
def convert_command(
    model: ModelArg,
    stages: StagesOpt = None,
    rules: RulesOpt = None,
    input_size: InputSizeOpt = None,
    model_arg: ModelArgsOpt = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show the planned swaps; change and write nothing.")
    ] = False,
    fmt: PlanFormatOpt = PlanFormat.table,
    output: Annotated[
        str | None,  # not Path: a trailing '/' (a directory) must reach the check
        typer.Option(
            "--output",
            "-o",
            "--out",
            help="Checkpoint path (--out: old spelling). Default: <model>-parc.safetensors.",
        ),
    ] = None,
    force: ForceOpt = False,
    weights: WeightsOpt = None,
    pretrained: Annotated[
        bool, typer.Option("--pretrained", help="Load timm's pretrained weights (needs network).")
    ] = False,
    strict: StrictOpt = False,
    init: InitOpt = None,
    allow_empty: AllowEmptyOpt = False,
    verify: Annotated[
        bool,
        typer.Option(
            "--verify",
            help="Also run original and converted on a seeded batch and "
            "report shapes, finiteness and cosine similarity.",
        ),
    ] = False,
    export_onnx: Annotated[
        str | None, typer.Option("--export-onnx", help="Also export the converted model to ONNX.")
    ] = None,
    threads: ThreadsOpt = None,
    seed: SeedOpt = 0,
    quiet: QuietOpt = False,
) -> None:
    """Convert a timm model to ParC by rules; print the plan first.

    With --dry-run, print the plan (table, diff or json) and change nothing.
    """
    from parc_surgery.models import file_stem
    from parc_surgery.pipeline import convert, plan_conversion

    fmt = PlanFormat(fmt).value
    set_threads(threads)
    if export_onnx and not dry_run:
        require_extra("onnx", "onnx", "onnxruntime")  # before the slow part
    ui = Output(quiet=quiet, fmt=fmt)
    kwargs = conversion_kwargs(
        stages=stages, rules=rules, input_size=input_size, model_arg=model_arg, weights=weights
    )
    kwargs.update(pretrained=pretrained, strict=strict, init=Init(init).value if init else None)
    if dry_run:
        with ui.steps(f"planning {model}") as on_step:
            planned = plan_conversion(model, on_step=on_step, **kwargs)
        _report_plan(ui, planned, rules_given=rules is not None)
        if fmt == "json":
            ui.json(planned.plan.to_json())
        return

    target = output if output else f"{file_stem(model)}-parc.safetensors"
    if export_onnx:
        from parc_surgery.checkpoint import check_output

        check_output(export_onnx, force=force, inputs=[weights, target])
    with ui.steps(f"converting {model}") as on_step:
        result = convert(
            model,
            output=target,
            force=force,
            seed=seed,
            check_outputs=verify,
            allow_empty=allow_empty,
            on_step=on_step,
            on_plan=lambda planned: _report_plan(ui, planned, rules_given=rules is not None),
            **kwargs,
        )
        if export_onnx:
            on_step("export")
            from parc_surgery.analysis.export import export_onnx as run_export

            result.verification.onnx = run_export(
                result.model, export_onnx, input_size=result.plan.input_size, force=force
            )
    if fmt == "json":
        ui.json(dumps(result_dict(result)))
        return
    checked = result.verification
    ui.info(
        f"verified: {checked.blocks_checked} swapped blocks keep "
        f"their output shapes; model output {checked.output_shape}"
    )
    outputs = checked.outputs
    if outputs:
        ui.info(
            f"outputs on a seeded batch: finite, cosine similarity to the original "
            f"{outputs.cosine_similarity:.4f}. ParC changes the function until fine-tuned; "
            "a similarity near 1 can also mean the swapped residual branches start at zero "
            "(timm zero-initialises their last norm, e.g. zero_init_last), so they add "
            "nothing yet: it does not show the new layers are right"
        )
    onnx = checked.onnx
    if onnx:
        ui.info(
            f"exported ONNX to {onnx['output']}: max abs difference to PyTorch "
            f"{onnx['max_abs_diff']:.2e}"
        )
    ui.info(f"wrote {result.output} (sha256 {result.output_sha256[:16]}...)")


def _report_plan(ui: Output, planned, *, rules_given: bool) -> None:
    """Human plan output: the table or diff on stdout, notes and warnings on stderr."""
    plan = planned.plan
    chosen = "" if rules_given else " (chosen for the model's family; --rules to change)"
    ui.info(
        f"rules: {plan.rules_source}{chosen}"
        f"; stages {','.join(map(str, plan.stages))}; "
        f"input {plan.input_size[0]}x{plan.input_size[1]}"
    )
    for warning in plan.warnings:
        ui.warn(warning)
    if ui.fmt == "json":
        return
    if not plan.swaps:
        ui.info(f"nothing to swap: no rule matched a block of {plan.model} in the chosen stages")
        return
    if not ui.quiet:
        print_plan(plan, ui.fmt, ui.out)
