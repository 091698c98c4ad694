"""benchmarks/bench_recovery.py: its rules, its tables and its section of docs/recovery.md."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_recovery.py"


def _script():
    spec = importlib.util.spec_from_file_location("bench_recovery_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_conversion_rules_are_the_shipped_ones_with_init_from_local(tmp_path):
    from parc_surgery.rules import load_rules

    script = _script()
    for _, _, shipped, _, _ in script.MODELS:
        shipped_rules = load_rules(shipped).to_dict()
        local = load_rules(str(script.from_local_rules(shipped, tmp_path))).to_dict()
        assert local["defaults"]["init"] == "from_local"
        assert (
            local["rules"] == shipped_rules["rules"] and local["stages"] == shipped_rules["stages"]
        )


def _metrics(top1):
    return {"top1": top1, "top5": 100.0, "loss": 0.05}


def test_the_tables_show_every_stage_the_gap_and_the_erf(tmp_path):
    script = _script()
    recovery = {
        "variant": "recipe",
        "swaps": ["blocks.3.2"],
        "epochs": 6,
        "seconds": 60.0,
        "converted": _metrics(90.0),
        "after_warmstart": _metrics(95.0),
        "final": _metrics(98.5),
        "best_epoch": 4,
        "block_nmse_before": {"blocks.3.2": 0.5},
        "block_nmse_after": {"blocks.3.2": 0.25},
    }
    erf = {"original": {"area_ratio": {"50": 0.2}}, "converted": {"area_ratio": {"50": 0.3}}}
    result = {
        "label": "Net",
        "original": _metrics(99.0),
        "original_epochs": 30,
        "original_first_epoch_at_target": 9,
        "original_train_seconds": 600.0,
        "recovery": recovery,
        "ablations": [{**recovery, "variant": "no teacher", "after_warmstart": None}],
        "erf": {"digits": erf, "random": erf, "random 128x128": erf},
        "target_met": False,
    }
    args = argparse.Namespace(threads=1, ablations=True)
    text = script.markdown([result], args)
    assert "| Net | converted, before training | 90.00% |" in text
    assert "| Net | after fine-tune (best epoch 4) | 98.50% |" in text
    assert "| 6 / 30 (20%) | -0.50 | no |" in text
    assert "| Net | no teacher | 90.00% | - | 98.50% | 4 |" in text
    assert "| Net | digits | 20.00% | 30.00% | 1.50x |" in text
    assert "| Net | blocks.3.2 | 0.5000 | 0.2500 | 0.50 |" in text
    doc = tmp_path / "recovery.md"
    doc.write_text("# Recovery\n\n## The benchmark\n\nkept\n")
    script.write_section(text, doc)
    script.write_section(text.replace("98.50%", "98.75%"), doc)
    written = doc.read_text()
    assert written.count(script.SECTION) == 1 and "98.75%" in written and "kept" in written
