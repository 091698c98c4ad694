"""Batch jobs and machine-readable output, as a CI job would use them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from typer.testing import CliRunner

from parc_surgery.checkpoint import load
from parc_surgery.cli import app

runner = CliRunner()

JOBS = """\
defaults: {input_size: 64}
jobs:
  - {name: good, model: resnet26, stages: [4], output: good.safetensors}
  - {name: bad, model: resnet26, stages: [9], output: bad.safetensors}
  - {name: also-good, model: mobilenetv2_050, output: mnv2.safetensors}
"""


def test_batch_runs_every_job_and_fails_when_one_fails(tmp_path):
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text(JOBS)
    result = runner.invoke(app, ["batch", str(jobs), "--format", "json"])
    assert result.exit_code == 8, result.output
    report = json.loads(result.stdout)
    status = {job["name"]: job for job in report["jobs"]}
    assert status["good"]["ok"] and status["also-good"]["ok"]
    assert not status["bad"]["ok"] and status["bad"]["exit_code"] == 2
    assert "no stage 9" in status["bad"]["error"]
    assert report["failed"] == 1
    assert load(tmp_path / "good.safetensors") is not None
    assert load(tmp_path / "mnv2.safetensors") is not None
    assert not (tmp_path / "bad.safetensors").exists()
    assert "job 'bad' failed" in result.stderr


def test_batch_table_summary_and_output_dir(tmp_path):
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text("jobs:\n  - {model: resnet26, stages: [4], input_size: 64}\n")
    out = tmp_path / "artifacts"
    result = runner.invoke(app, ["batch", str(jobs), "--output-dir", str(out)])
    assert result.exit_code == 0, result.output
    assert "resnet26" in result.stdout and "ok" in result.stdout
    assert (out / "resnet26-parc.safetensors").is_file()


def test_batch_file_with_unknown_key_names_it(tmp_path):
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text("jobs:\n  - {model: resnet26, stagez: [4]}\n")
    result = runner.invoke(app, ["batch", str(jobs), "--format", "json"])
    assert result.exit_code == 8
    assert "stagez" in json.loads(result.stdout)["jobs"][0]["error"]


def test_real_conversion_json_holds_the_documented_keys(tmp_path):
    out = tmp_path / "r.safetensors"
    result = runner.invoke(
        app,
        [
            "convert",
            "resnet26",
            "--stages",
            "4",
            "--input-size",
            "64",
            "-o",
            str(out),
            "--format",
            "json",
            "--verify",
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert set(data) == {"plan", "result", "output", "output_sha256"}
    assert {"params_before", "params_after", "macs_before", "macs_after", "verification"} <= set(
        data["result"]
    )
    assert data["output"] == str(out) and len(data["output_sha256"]) == 64
    assert data["result"]["verification"]["outputs"]["finite"] is True


def test_quiet_prints_nothing_but_errors(tmp_path):
    out = tmp_path / "q.safetensors"
    args = ["convert", "resnet26", "--stages", "4", "--input-size", "64", "-o", str(out), "-q"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0 and result.output == ""
    again = runner.invoke(app, args)
    assert again.exit_code == 7 and again.output.startswith("error:")


def test_installed_entry_point_has_no_ansi_codes_off_a_terminal(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    bin_dir = os.path.dirname(sys.executable)
    proc = subprocess.run(
        [
            os.path.join(bin_dir, "parc-convert"),
            "resnet26",
            "--stages",
            "4",
            "--input-size",
            "64",
            "--dry-run",
            "--format",
            "diff",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "+layer4.1: Bottleneck[conv2=ParCPair" in proc.stdout
    assert "\x1b[" not in proc.stdout + proc.stderr
    assert list(tmp_path.iterdir()) == []  # a dry run writes nothing
