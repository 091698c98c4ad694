"""What the README's JSON output section documents, for tests that compare it with a run."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def json_keys(label: str) -> set[str]:
    """Every `name` the JSON output section's bullet for `label` ("Inspect", ...) gives."""
    section = README.read_text().split("\n## JSON output", 1)[1].split("\n## ", 1)[0]
    (bullet,) = [b for b in re.split(r"\n- ", section) if b.startswith(f"{label}:")]
    return set(re.findall(r"`([\w.-]+)`", bullet))
