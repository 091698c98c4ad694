"""Render a Plan or a conversion result for people (table, diff) or programs (json)."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from parc_surgery.plan import Plan

__all__ = ["FORMATS", "human_count", "plan_diff", "plan_table", "result_dict", "totals_line"]

FORMATS = ("table", "diff", "json")


def human_count(n: int | float) -> str:
    """1234567 -> '1.23M' (params, MACs)."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(int(n))


def _pct(before: int, after: int) -> str:
    return f"{(after - before) / before * 100:+.1f}%" if before else "n/a"


def totals_line(plan: Plan) -> str:
    return (
        f"{len(plan.swaps)} swaps; params {human_count(plan.params_total_before)} -> "
        f"{human_count(plan.params_total_after)} "
        f"({_pct(plan.params_total_before, plan.params_total_after)}); "
        f"MACs {human_count(plan.macs_total_before)} -> {human_count(plan.macs_total_after)} "
        f"({_pct(plan.macs_total_before, plan.macs_total_after)}) at "
        f"{plan.input_size[0]}x{plan.input_size[1]}"
    )


_PLAN_COLUMNS = (
    ("module", "left"),
    ("stage", "right"),
    ("idx", "right"),
    ("size", "right"),
    ("replacement", "left"),
    ("pe", "center"),
    ("params", "right"),
    ("MACs", "right"),
    ("auto", "left"),
    ("rule", "left"),
)
# What an 80-column terminal shows (--format wide: every column).
_NARROW_COLUMNS = ("module", "size", "replacement", "params", "MACs")


def plan_table(plan: Plan, *, wide: bool = True) -> Table:
    """One row per swap; the caption is the totals line. Not `wide`: the narrow columns,
    without box lines, so a plan fits an 80-column terminal."""
    from rich import box

    table = Table(
        title=f"{plan.model}: stages {','.join(map(str, plan.stages))}, rules {plan.rules_source}",
        caption=totals_line(plan),
        title_justify="left",
        caption_justify="left",
        box=box.HEAVY_HEAD if wide else box.SIMPLE_HEAD,
        pad_edge=wide,
        collapse_padding=not wide,
    )
    keep = [i for i, (name, _) in enumerate(_PLAN_COLUMNS) if wide or name in _NARROW_COLUMNS]
    for i in keep:
        column, justify = _PLAN_COLUMNS[i]
        table.add_column(column, justify=justify, no_wrap=column == "module")
    for s in plan.swaps:
        cells = (
            s.path,
            str(s.stage),
            f"{s.index}/{s.container_len}",
            f"{s.feature_size[0]}x{s.feature_size[1]}",
            s.replacement,
            "yes" if s.options.pe else "no",
            f"{human_count(s.params_before)} -> {human_count(s.params_after)}",
            f"{human_count(s.macs_before)} -> {human_count(s.macs_after)}",
            s.impl_auto,
            s.rule,
        )
        table.add_row(*(cells[i] for i in keep))
    return table


def plan_diff(plan: Plan) -> Text:
    """Unified-diff style: '-' old module, '+' new module, one hunk per swap."""
    out = Text()
    out.append(f"--- {plan.model} (timm)\n", style="bold")
    out.append(f"+++ {plan.model} (parc, rules {plan.rules_source})\n", style="bold")
    for s in plan.swaps:
        out.append(
            f"@@ {s.path} stage {s.stage} index {s.index}/{s.container_len} "
            f"{s.feature_size[0]}x{s.feature_size[1]} [{s.rule}] @@\n",
            style="cyan",
        )
        out.append(f"-{s.path}: {s.old_module}  ({human_count(s.params_before)} params)\n", "red")
        out.append(
            f"+{s.path}: {s.new_module}  ({human_count(s.params_after)} params, "
            f"auto={s.impl_auto})\n",
            style="green",
        )
    out.append(totals_line(plan) + "\n")
    return out


def _natural_width(table: Table) -> int:
    """How wide `table` is when nothing constrains it."""
    import io

    roomy = Console(file=io.StringIO(), width=10_000, color_system=None)
    with roomy.capture() as captured:
        roomy.print(table)
    return max((len(line.rstrip()) for line in captured.get().splitlines()), default=0)


def print_plan(plan: Plan, fmt: str, console: Console) -> None:
    """Print the plan in `fmt` ("table" | "wide" | "diff" | "json") to `console`.

    A table on a terminal too narrow for every column shows the columns that fit 80
    characters; "wide" all of them.
    """
    if fmt == "json":
        console.file.write(plan.to_json() + "\n")
    elif fmt == "diff":
        console.print(plan_diff(plan), end="", soft_wrap=True, highlight=False)
    elif not console.is_terminal:
        # Files and pipes: every column, and no padding at the ends of the lines.
        with console.capture() as captured:
            console.print(plan_table(plan))
        text = "\n".join(line.rstrip() for line in captured.get().splitlines())
        console.file.write(text + "\n")
    else:
        table = plan_table(plan)
        if fmt != "wide" and _natural_width(table) > console.width:
            table = plan_table(plan, wide=False)  # the columns that fit 80 characters
        console.print(table)


def result_dict(conversion: Any) -> dict[str, Any]:
    """The JSON document of a real conversion (keys documented in the README)."""
    return conversion.to_dict()


def dumps(data: Any) -> str:
    return json.dumps(data, indent=2)
