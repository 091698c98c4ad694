"""The README's Quick start is what CI runs, word for word."""

from __future__ import annotations

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
