"""benchmarks/bench_models.py: its section of docs/benchmarks.md is replaced, others kept."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_models.py"


def _script():
    spec = importlib.util.spec_from_file_location("bench_models_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_write_section_appends_then_replaces_only_its_own_section(tmp_path):
    script = _script()
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\n## Operator backends\n\nops table\n")
    script.write_section(f"{script.SECTION}\n\nfirst\n", doc)
    script.write_section(f"{script.SECTION}\n\nsecond\n", doc)
    text = doc.read_text()
    assert text.count(script.SECTION) == 1 and "second" in text and "first" not in text
    assert "## Operator backends\n\nops table\n" in text
    doc.write_text(text + "\n## Later section\n\nkept\n")
    script.write_section(f"{script.SECTION}\n\nthird\n", doc)
    text = doc.read_text()
    assert "third" in text and "second" not in text and "## Later section\n\nkept" in text
    assert text.index("## Operator backends") < text.index(script.SECTION)


def test_the_four_published_models_are_benchmarked():
    labels = [row[0] for row in _script().MODELS]
    assert labels == ["ResNet50", "MobileNetV2", "ConvNeXt-XT", "MobileViT-S"]
