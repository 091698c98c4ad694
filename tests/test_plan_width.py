"""The plan table fits an 80-column terminal; files get every column and no end padding."""

from __future__ import annotations

import io

import pytest
from rich.console import Console
from typer.testing import CliRunner

from parc_surgery.cli import convert_app
from parc_surgery.pipeline import plan_conversion
from parc_surgery.report import print_plan


@pytest.fixture(scope="module")
def plans():
    return [
        plan_conversion(name, input_size=(64, 64)).plan for name in ("resnet18", "mobilenetv2_050")
    ]


def _terminal(fmt: str, plan, width: int = 80) -> list[str]:
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, force_terminal=True, color_system=None)
    print_plan(plan, fmt, console)
    return buffer.getvalue().splitlines()


def test_the_table_fits_an_80_column_terminal_without_wrapping_a_row(plans):
    for plan in plans:
        lines = _terminal("table", plan)
        assert max(len(line) for line in lines) <= 80
        for swap in plan.swaps:  # each swap on one line: nothing folded into a second row
            row = next(line for line in lines if line.strip().startswith(swap.path + " "))
            assert swap.replacement in row


def test_wide_shows_every_column(plans):
    header = next(line for line in _terminal("wide", plans[0]) if "module" in line)
    for column in ("idx", "pe", "auto", "rule"):
        assert column in header
    narrow = next(line for line in _terminal("table", plans[0]) if "module" in line)
    assert "rule" not in narrow
    roomy = next(line for line in _terminal("table", plans[0], 200) if "module" in line)
    assert "rule" in roomy  # a terminal wide enough gets every column


def test_a_table_written_to_a_file_has_every_column_and_no_trailing_spaces():
    result = CliRunner().invoke(convert_app, ["resnet18", "--input-size", "64", "--dry-run"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines and all(line == line.rstrip() for line in lines)
    assert any("rule" in line and "auto" in line for line in lines)
