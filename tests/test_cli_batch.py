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


def run_jobs(tmp_path, text, *extra):
    jobs = tmp_path / "repo" / "jobs.yaml"
    jobs.parent.mkdir(exist_ok=True)
    jobs.write_text(text)
    out = tmp_path / "repo" / "out"
    result = runner.invoke(
        app, ["batch", str(jobs), "--output-dir", str(out), "--format", "json", *extra]
    )
    return result, out


ESCAPES = """\
defaults: {model: test_convnext, input_size: 64}
jobs:
  - {name: up, output: ../../escaped.safetensors}
  - {name: absolute, output: %s}
  - {name: through-link, output: link/x.safetensors}
  - {name: sub, output: sub/deeper/ok.safetensors}
"""


def test_batch_outputs_stay_inside_the_output_dir(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "repo" / "out").mkdir(parents=True)
    (tmp_path / "repo" / "out" / "link").symlink_to(outside)
    absolute = tmp_path / "abs.safetensors"
    result, out = run_jobs(tmp_path, ESCAPES % absolute)
    assert result.exit_code == 8, result.output
    jobs = {job["name"]: job for job in json.loads(result.stdout)["jobs"]}
    for name in ("up", "absolute", "through-link"):
        assert jobs[name]["exit_code"] == 7 and "--allow-outside" in jobs[name]["error"]
    assert "is an absolute path" in jobs["absolute"]["error"]
    assert "outside" in jobs["up"]["error"] and "symlink" in jobs["through-link"]["error"]
    assert jobs["sub"]["ok"] and (out / "sub" / "deeper" / "ok.safetensors").is_file()
    assert not (tmp_path / "escaped.safetensors").exists() and not absolute.exists()
    assert list(outside.iterdir()) == []


def test_allow_outside_lets_a_trusted_jobs_file_write_anywhere(tmp_path):
    absolute = tmp_path / "abs.safetensors"
    text = f"jobs:\n  - {{model: test_convnext, input_size: 64, output: {absolute}}}\n"
    result, _ = run_jobs(tmp_path, text, "--allow-outside")
    assert result.exit_code == 0, result.output
    assert absolute.is_file()


def test_batch_reads_rules_and_weights_only_beside_the_jobs_file(tmp_path):
    secret = tmp_path / "secret.yaml"
    secret.write_text("password: hunter2-and-more-secret-text\n")
    text = (
        "defaults: {model: test_convnext, input_size: 64}\njobs:\n"
        f"  - {{name: rules, rules: {secret}, output: r.safetensors}}\n"
        "  - {name: weights, weights: ../secret.yaml, output: w.safetensors}\n"
        "  - {name: shipped, rules: generic}\n"
    )
    result, _ = run_jobs(tmp_path, text)
    jobs = {job["name"]: job for job in json.loads(result.stdout)["jobs"]}
    assert jobs["rules"]["exit_code"] == 2 and "absolute path" in jobs["rules"]["error"]
    assert jobs["weights"]["exit_code"] == 2 and "outside" in jobs["weights"]["error"]
    assert "hunter2" not in result.output
    assert jobs["shipped"]["ok"]


def test_duplicate_outputs_refuse_the_whole_file_before_any_job_runs(tmp_path):
    text = (
        "jobs:\n  - {model: test_convnext, input_size: 64, output: a.safetensors}\n"
        "  - {model: test_convnext, input_size: 64, output: ./sub/../a.safetensors}\n"
    )
    result, out = run_jobs(tmp_path, text, "--force")
    assert result.exit_code == 2, result.output
    assert "jobs 0 (" in result.stderr and "write the same output" in result.stderr
    assert not (out / "a.safetensors").exists()


def test_ctrl_c_prints_the_summary_so_far_and_exits_130(tmp_path, monkeypatch):
    import parc_surgery.pipeline

    real = parc_surgery.pipeline.convert
    calls = []

    def interrupted_second(*args, **kwargs):
        calls.append(args)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(parc_surgery.pipeline, "convert", interrupted_second)
    text = "defaults: {model: test_convnext, input_size: 64}\njobs:\n" + "".join(
        f"  - {{name: j{n}, output: j{n}.safetensors}}\n" for n in range(3)
    )
    result, out = run_jobs(tmp_path, text)
    assert result.exit_code == 130, result.output
    report = json.loads(result.stdout)
    assert report["interrupted"] is True and report["skipped"] == 1
    assert [(j["name"], j["ok"], j["exit_code"]) for j in report["jobs"]] == [
        ("j0", True, 0),
        ("j1", False, 130),
    ]
    assert "interrupted: 1 jobs finished, 1 stopped, 1 not started" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["j0.safetensors"]


def test_a_real_sigint_during_a_job_keeps_the_summary(tmp_path):
    import signal

    jobs = tmp_path / "jobs.yaml"
    jobs.write_text(
        "jobs:\n  - {name: quick, model: test_convnext, input_size: 64}\n"
        "  - {name: slow, model: resnet50, input_size: 448, stages: [2, 3, 4]}\n"
    )
    bin_dir = os.path.dirname(sys.executable)
    proc = subprocess.Popen(
        [os.path.join(bin_dir, "parc-surgery"), "batch", str(jobs), "--format", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # a runner that started pytest in the background (`cmd &`) hands its children
        # SIGINT ignored, and Python then installs no Ctrl-C handler: restore the default
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    for line in proc.stderr:
        if "[2] converting slow" in line:
            break
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    report = json.loads(stdout)
    assert report["interrupted"] and report["jobs"][0]["ok"]
    assert report["jobs"][1]["exit_code"] == 130
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "jobs.yaml",
        "test_convnext-parc.safetensors",
    ]
