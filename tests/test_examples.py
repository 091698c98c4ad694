"""Every example runs as documented, so none of them can rot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml
from typer.testing import CliRunner

from parc_surgery.cli import app

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
BIN = Path(sys.executable).parent


def _env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}


def test_convert_resnet50_script_dry_runs_converts_and_loads(tmp_path):
    proc = subprocess.run(
        ["bash", str(EXAMPLES / "convert_resnet50.sh"), str(tmp_path), "96"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert "layer3.3" in proc.stdout  # the dry-run table
    assert "loaded: ResNet (1, 1000)" in proc.stdout
    assert (tmp_path / "resnet50-parc.safetensors").is_file()


def test_python_api_example_runs(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "python_api.py"), str(tmp_path), "96"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert "blocks.3.2" in proc.stdout and "verified blocks: 4" in proc.stdout
    assert "128x96: logits (1, 1000)" in proc.stdout


def test_custom_rules_convert_a_model_no_shipped_config_covers():
    result = CliRunner().invoke(
        app,
        [
            "convert",
            "efficientnet_b0",
            "--rules",
            str(EXAMPLES / "custom_rules.yaml"),
            "--input-size",
            "96",
            "--dry-run",
            "--format",
            "json",
        ],
    )
    assert result.exit_code == 0, result.output
    swaps = json.loads(result.stdout)["swaps"]
    assert [s["path"] for s in swaps] == [
        "blocks.3.1",
        "blocks.3.2",
        "blocks.4.1",
        "blocks.4.2",
        "blocks.5.1",
        "blocks.5.2",
        "blocks.5.3",
    ]
    assert [s["options"]["pe"] for s in swaps] == [True, False, True, False, True, False, False]


def test_ci_workflow_runs_the_batch_and_keeps_artifacts():
    workflow = yaml.safe_load((EXAMPLES / "ci" / "convert-models.yml").read_text())
    steps = workflow["jobs"]["convert"]["steps"]
    run = "\n".join(step.get("run", "") for step in steps)
    assert "parc-surgery batch examples/ci/jobs.yaml" in run and "pipefail" in run
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact"))
    assert upload["if"] == "always()" and "converted-report.json" in upload["with"]["path"]


def test_ci_jobs_file_converts_every_model(tmp_path):
    jobs = yaml.safe_load((EXAMPLES / "ci" / "jobs.yaml").read_text())
    jobs["defaults"]["input_size"] = 96  # same jobs, smaller maps: keeps the suite fast
    small = tmp_path / "jobs.yaml"
    small.write_text(yaml.safe_dump(jobs))
    result = CliRunner().invoke(
        app, ["batch", str(small), "--output-dir", str(tmp_path / "out"), "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["failed"] == 0 and len(report["jobs"]) == 3
    assert all(Path(job["output"]).is_file() for job in report["jobs"])


def test_make_digits_writes_a_stratified_imagefolder_of_rgb_pngs(tmp_path):
    from PIL import Image

    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "make_digits.py"), str(tmp_path), "--size", "40"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "train: 1437 images in 10 classes" in proc.stdout
    assert "val: 360 images in 10 classes" in proc.stdout
    counts = {}
    for split in ("train", "val"):
        assert sorted(p.name for p in (tmp_path / split).iterdir()) == [str(d) for d in range(10)]
        counts[split] = [len(list((tmp_path / split / str(d)).glob("*.png"))) for d in range(10)]
    for train, val in zip(counts["train"], counts["val"], strict=True):
        assert abs(val / (train + val) - 0.2) < 0.01  # stratified: a fifth of every class
    train = {p.name for p in (tmp_path / "train").glob("*/*.png")}
    assert not train & {p.name for p in (tmp_path / "val").glob("*/*.png")}
    with Image.open(next((tmp_path / "val" / "7").glob("*.png"))) as image:
        assert image.mode == "RGB" and image.size == (40, 40)
    again = subprocess.run(
        [sys.executable, str(EXAMPLES / "make_digits.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 7 and "already holds" in again.stderr
