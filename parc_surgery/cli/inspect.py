"""`parc-surgery inspect MODEL` and `parc-surgery rules ...`: help a user write rules."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from parc_surgery.cli import app
from parc_surgery.cli.common import (
    EXIT_CODE_HELP,
    Output,
    conversion_kwargs,
    handle_errors,
    parse_model_args,
    parse_size,
    set_threads,
)
from parc_surgery.cli.options import (
    DataFormat,
    FormatOpt,
    InputSizeOpt,
    ModelArg,
    ModelArgsOpt,
    QuietOpt,
    StagesOpt,
    StrictOpt,
    ThreadsOpt,
)
from parc_surgery.errors import ParcSurgeryError
from parc_surgery.report import dumps

rules_app = typer.Typer(
    help="List the shipped rule files or validate your own.", no_args_is_help=True
)
app.add_typer(rules_app, name="rules")


def model_overview(name: str, model_args: dict[str, Any], input_size) -> dict[str, Any]:
    """Stages, containers, attention blocks and what each shipped config would select."""
    from parc_surgery.attention import find_attention
    from parc_surgery.blocks.unsupported import unsupported_reasons
    from parc_surgery.graph import analyze, container_blocks
    from parc_surgery.models import create_model
    from parc_surgery.planning import build_plan
    from parc_surgery.rules import default_rules_for, load_rules, match, shipped_configs

    model = create_model(name, model_args).eval()
    graph = analyze(model, input_size=input_size)
    stages = []
    for stage in graph.stages.values():
        containers = []
        for path, length in stage.containers:
            block_types = sorted({type(child).__name__ for child in container_blocks(model, path)})
            containers.append({"path": path, "blocks": length, "types": block_types})
        stages.append(
            {
                "stage": stage.stage,
                "stride": stage.stride,
                "feature_size": list(stage.feature_size),
                "channels": stage.channels,
                "containers": containers,
            }
        )
    shipped = {}
    for config in shipped_configs():
        try:
            ruleset = load_rules(config)
            result = match(ruleset, graph, model, None)
            # Build what convert would build: a class-name match whose builder refuses
            # the module (another library's block of the same name) is not a "would
            # replace", so inspect and convert agree.
            build_plan(
                model,
                model_name=name,
                model_args=model_args,
                graph=graph,
                matches=result.matches,
                stages=result.stages,
                rules_source=ruleset.source,
                rules=ruleset.to_dict(),
                warnings=result.warnings,
            )
            shipped[config] = {"stages": result.stages, "matches": [m.path for m in result.matches]}
        except ParcSurgeryError as err:
            shipped[config] = {"stages": [], "matches": [], "error": err.message}
    return {
        "model": name,
        "input_size": list(graph.input_size),
        "stages": stages,
        "no_spatial_reason": graph.no_spatial_reason,
        "unsupported": unsupported_reasons(model),
        "attention": [found.to_dict() for found in find_attention(model, graph)],
        # The same call, with the same model, as convert's: both pick the same rules.
        "default_rules": default_rules_for(name, model),
        "shipped_rules": shipped,
    }


@app.command(name="inspect", epilog=EXIT_CODE_HELP)
@handle_errors
def inspect_command(
    model: ModelArg,
    input_size: InputSizeOpt = None,
    model_arg: ModelArgsOpt = None,
    threads: ThreadsOpt = None,
    fmt: FormatOpt = DataFormat.table,
    quiet: QuietOpt = False,
) -> None:
    """Show a model's stages and block containers, and what each shipped rule would match."""
    set_threads(threads)
    fmt = DataFormat(fmt).value
    ui = Output(quiet=quiet, fmt=fmt)
    overview = model_overview(model, parse_model_args(model_arg), parse_size(input_size))
    if fmt == "json":
        ui.json(dumps(overview))
        return
    if quiet:
        return
    if overview["no_spatial_reason"]:
        ui.out.print(overview["no_spatial_reason"], highlight=False, markup=False)
    for reason in overview["unsupported"]:
        ui.out.print(reason, highlight=False, markup=False, soft_wrap=True)
    table = Table(
        title=f"{model} at {overview['input_size'][0]}x{overview['input_size'][1]}",
        title_justify="left",
    )
    for column in ("stage", "stride", "size", "channels", "container", "blocks", "block types"):
        table.add_column(column)
    for stage in overview["stages"]:
        for number, container in enumerate(stage["containers"] or [{}]):
            first = number == 0
            table.add_row(
                str(stage["stage"]) if first else "",
                str(stage["stride"]) if first else "",
                "x".join(map(str, stage["feature_size"])) if first else "",
                str(stage["channels"]) if first else "",
                container.get("path", "-"),
                str(container.get("blocks", "")),
                ", ".join(container.get("types", [])),
            )
    ui.out.print(table)
    if overview["attention"]:
        ui.out.print(_attention_table(overview["attention"]))
    chosen = overview["default_rules"]
    rules_table = Table(title="shipped rules (default stages)", title_justify="left")
    for column in ("rules", "stages", "would replace"):
        rules_table.add_column(column)
    for config, found in overview["shipped_rules"].items():
        label = f"{config} (default)" if config == chosen else config
        selected = ", ".join(found["matches"]) or found.get("error", "nothing")
        rules_table.add_row(label, ",".join(map(str, found["stages"])), selected)
    ui.out.print(rules_table)


def _attention_table(found: list[dict[str, Any]]) -> Table:
    """One row per attention module: the block a replacement converts, or why none does."""
    table = Table(title="attention (what converts it to ParC)", title_justify="left")
    for column in ("attention", "type", "block", "stage", "size", "replacement"):
        table.add_column(column)
    for item in found:
        size = "x".join(map(str, item["feature_size"])) if item["feature_size"] else "-"
        table.add_row(
            item["attention"],
            item["attention_type"],
            f"{item['block']} ({item['block_type']})" if item["block"] else "-",
            str(item["stage"]) if item["stage"] is not None else "-",
            size,
            item["replacement"] or f"none: {item['reason']}",
        )
    return table


@rules_app.command(name="list")
@handle_errors
def rules_list_command(fmt: FormatOpt = DataFormat.table) -> None:
    """The shipped rule files, one line each."""
    from parc_surgery.rules import shipped_configs

    fmt = DataFormat(fmt).value
    ui = Output(fmt=fmt)
    configs = shipped_configs()
    if fmt == "json":
        ui.json(
            dumps({name: {"path": str(p), "description": d} for name, (p, d) in configs.items()})
        )
        return
    for name, (_, description) in configs.items():
        ui.out.print(f"{name:<12} {description}", highlight=False, markup=False)


@rules_app.command(name="validate", epilog=EXIT_CODE_HELP)
@handle_errors
def rules_validate_command(
    file: Annotated[str, typer.Argument(help="Rules YAML file (or a shipped config name).")],
    model: Annotated[
        str | None, typer.Option("--model", help="Also match the rules against this timm model.")
    ] = None,
    stages: StagesOpt = None,
    input_size: InputSizeOpt = None,
    model_arg: ModelArgsOpt = None,
    strict: StrictOpt = False,
    threads: ThreadsOpt = None,
) -> None:
    """Check a rules file: YAML, schema, replacement names; optionally against a model."""
    set_threads(threads)
    from parc_surgery.pipeline import plan_conversion
    from parc_surgery.rules import load_rules

    ui = Output()
    ruleset = load_rules(file)
    ui.out.print(f"{file}: valid ({len(ruleset.rules)} rules)", highlight=False, markup=False)
    if model:
        planned = plan_conversion(
            model,
            strict=strict,
            **conversion_kwargs(
                stages=stages, rules=file, input_size=input_size, model_arg=model_arg
            ),
        )
        for warning in planned.plan.warnings:
            ui.warn(warning)
        paths = ", ".join(s.path for s in planned.plan.swaps) or "nothing"
        ui.out.print(f"{model}: would replace {paths}", highlight=False, markup=False)
