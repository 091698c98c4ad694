"""The commands are registered, documented, and their exit codes are in the README."""

from __future__ import annotations

import re
from pathlib import Path

from typer.testing import CliRunner

from parc_surgery.cli import app
from parc_surgery.errors import EXIT_CODES

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_exit_code_is_in_the_readme_table():
    table = README.read_text().split("### Exit codes", 1)[1].split("\n## ", 1)[0]
    documented = {int(code) for row in re.findall(r"^\| ([\d /]+) \|", table, re.M)
                  for code in row.split("/")}  # fmt: skip
    assert set(EXIT_CODES) <= documented


def test_eval_and_finetune_are_commands_with_help():
    runner = CliRunner()
    top = runner.invoke(app, ["--help"])
    assert "eval" in top.stdout and "finetune" in top.stdout
    finetune = runner.invoke(app, ["finetune", "--help"])
    assert finetune.exit_code == 0, finetune.output
    # The real parameter list (click's), not the help text, whose prose names options too.
    import typer.main

    params = typer.main.get_command(app).commands["finetune"].params
    options = {opt for p in params if not getattr(p, "hidden", False) for opt in p.opts}
    for option in ("--teacher-weights", "--no-teacher", "--warm-start-epochs", "--checkpoint-dir",
                   "--resume", "--distill-weight", "--temperature", "--ema-decay"):  # fmt: skip
        assert option in options, option
    evaluation = runner.invoke(app, ["eval", "--help"])
    assert "--limit" in evaluation.stdout and "--weights" in evaluation.stdout
