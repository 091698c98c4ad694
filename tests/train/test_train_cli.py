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
    for option in ("--teacher-weights", "--no-teacher", "--warm-start-epochs", "--checkpoint-dir",
                   "--resume", "--distill-weight", "--temperature", "--ema-decay"):  # fmt: skip
        assert option in finetune.stdout, option
    evaluation = runner.invoke(app, ["eval", "--help"])
    assert "--limit" in evaluation.stdout and "--weights" in evaluation.stdout
