"""The README's Quick start is what CI runs, word for word."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def quick_start_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)\n```", section, flags=re.S)


def test_quick_start_has_exactly_two_commands():
    commands = quick_start_commands()
    assert len(commands) == 2
    assert "parc-convert resnet50 --stages 3,4" in commands[0]


def test_ci_installs_and_tests_exactly_as_the_readme_says():
    install, tests = quick_start_commands()
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    install_part = install.split(" && .venv/bin/parc-convert")[0]
    assert install_part in ci
    assert tests in ci


def bash_blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)\n```", (ROOT / "README.md").read_text(), flags=re.S)


def _lines(block: str) -> list[list[str]]:
    import shlex

    return [shlex.split(line, comments=True) for line in block.splitlines() if line.strip()]


def test_the_readme_has_no_issue_numbers():
    assert not re.search(r"\bissues? \d+|#\d+\b", (ROOT / "README.md").read_text(), re.I)


def test_the_readme_says_where_the_commands_come_from():
    # Outside Quick start the commands are bare: the README says to activate the venv.
    section = (ROOT / "README.md").read_text().split("## Quick start", 1)[1].split("\n## ")[0]
    assert "source .venv/bin/activate" in section


def test_no_two_commands_in_the_readme_write_the_same_file():
    # Run top to bottom, a second write of one file stops with exit 7 (no --force): each
    # conversion's output (-o, or the default <model>-parc.safetensors) is written once.
    from parc_surgery.models import file_stem

    written: dict[str, str] = {}
    for block in bash_blocks():
        for words in _lines(block):
            words = [w.removeprefix(".venv/bin/") for w in words]
            if not words or words[0] not in ("parc-convert", "parc-surgery"):
                continue
            args = words[1:] if words[0] == "parc-convert" else words[2:]
            command = "convert" if words[0] == "parc-convert" else words[1]
            if "--dry-run" in args or "--force" in args or command not in (
                "convert", "train", "finetune", "export", "import-official", "export-official",
                "cam", "erf",
            ):  # fmt: skip
                continue
            if "-o" in args:
                target = args[args.index("-o") + 1]
            elif command == "convert":
                target = f"{file_stem(args[0])}-parc.safetensors"
            else:
                continue
            assert target not in written, f"{target}: written by {written[target]!r} and {words!r}"
            written[target] = " ".join(words)


def test_the_digits_journey_runs_as_written_at_a_tiny_size(tmp_path, monkeypatch):
    # The README block from nothing to an exported model, each line run as written in this
    # process, with only its sizes cut: 5 images per class, 1 epoch, batch 8, no workers.
    import runpy
    import sys

    from typer.testing import CliRunner

    from parc_surgery.cli import app

    block = next(b for b in bash_blocks() if "examples/make_digits.py" in b)
    lines = _lines(block)
    assert [w[1] if w[0] == "parc-surgery" else w[0] for w in lines] == [
        "python", "train", "parc-convert", "eval", "finetune", "eval", "export",
    ]  # fmt: skip
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    for words in lines:
        if words[0] == "python":
            script = str(ROOT / words[1])
            monkeypatch.setattr(sys, "argv", [script, *words[2:], "--per-class", "5"])
            with contextlib.suppress(SystemExit):
                runpy.run_path(script, run_name="__main__")
            continue
        args = words[1:] if words[0] == "parc-surgery" else ["convert", *words[1:]]
        args = [
            ("1" if previous == "--epochs" else w)
            for previous, w in zip(["", *args], args, strict=False)
        ]
        if args[0] in ("train", "finetune", "eval"):
            args += ["-b", "8", "-j", "0"]
        if args[0] in ("train", "finetune"):
            args += ["--lr-warmup-epochs", "0.5"]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, f"{' '.join(words)}\n{result.output}"
    assert (tmp_path / "r26-parc-ft.onnx").is_file()
