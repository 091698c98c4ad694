"""Resume: a run killed (SIGKILL) or stopped (SIGINT) and resumed ends with the weights of
a run that went through; Ctrl-C exits 130 with the state saved and no half-written file.

Every run is a separate process, one thread, CPU, the same seed, random augmentation on.
"""

from __future__ import annotations

import signal
import subprocess
import time

import pytest
import torch
from train_testkit import cli_env, max_difference, parc_surgery, run

from parc_surgery.checkpoint import read_recipe
from parc_surgery.train.state import STATE_NAME


def _command(convnext, digits, out, state_dir, *extra):
    checkpoint, weights = convnext
    return parc_surgery(
        "finetune", str(checkpoint), "--data", str(digits), "--teacher-weights", str(weights),
        "-o", str(out), "--checkpoint-dir", str(state_dir), "--workers", "0", "-b", "8",
        "--warm-start-epochs", "1", "--epochs", "4", "--scale", "0.5", "--seed", "7", *extra,
    )  # fmt: skip


@pytest.fixture(scope="module")
def reference(convnext, digits, tmp_path_factory):
    """The uninterrupted run: its output checkpoint."""
    base = tmp_path_factory.mktemp("reference")
    out = base / "ref.safetensors"
    done = run(_command(convnext, digits, out, base / "state"))
    assert done.returncode == 0, done.stderr
    return out


def _position(state_dir):
    path = state_dir / STATE_NAME
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)["position"]
    except Exception:  # read while being replaced: try again
        return None


def _start_and_wait(command, state_dir, ready, timeout=240):
    """Start `command`; return it once its saved position satisfies `ready`."""
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env()
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        position = _position(state_dir)
        if position is not None and ready(position):
            return process
        if process.poll() is not None:
            break
        time.sleep(0.02)
    process.kill()
    out, err = process.communicate()
    pytest.fail(f"the run ended or stalled before the state was written: {err[-2000:]}")


def test_a_killed_run_resumed_ends_with_the_weights_of_one_that_ran_through(
    reference, convnext, digits, tmp_path
):
    out, state_dir = tmp_path / "out.safetensors", tmp_path / "state"
    command = _command(convnext, digits, out, state_dir)
    # Killed once the first fine-tuning epoch's state is saved: the optimizer, schedule
    # and RNG states must all come back for the remaining three epochs to match.
    process = _start_and_wait(command, state_dir, lambda p: p["phase"] == 1 and p["epoch"] >= 1)
    process.kill()
    process.communicate()
    assert process.returncode == -signal.SIGKILL and not out.exists()
    resumed = run([*command, "--resume"])
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stderr
    assert max_difference(out, reference) == 0.0
    history = read_recipe(out)["training"]["metrics"]["history"]
    expected = read_recipe(reference)["training"]["metrics"]["history"]
    assert [h["val"]["top1"] for h in history] == [h["val"]["top1"] for h in expected]


def test_ctrl_c_exits_130_with_the_state_saved_and_resume_finishes_the_run(
    reference, convnext, digits, tmp_path
):
    out, state_dir = tmp_path / "out.safetensors", tmp_path / "state"
    command = _command(convnext, digits, out, state_dir)
    process = _start_and_wait(command, state_dir, lambda p: p["epoch"] >= 1)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "SIGINT received: stopped" in err and "--resume" in err and "Traceback" not in err
    assert sorted(p.name for p in state_dir.iterdir()) == [STATE_NAME]  # no temporary file
    assert not out.exists() and list(tmp_path.glob(".out*")) == []
    position = _position(state_dir)
    assert position is not None
    # Stopped mid-epoch (after a step) or at an epoch's end: resume continues from there.
    resumed = run([*command, "--resume"])
    assert resumed.returncode == 0, resumed.stderr
    assert max_difference(out, reference) == 0.0


def test_resume_refuses_a_state_saved_with_other_settings(convnext, digits, tmp_path):
    from typer.testing import CliRunner

    from parc_surgery.cli import app

    out, state_dir = tmp_path / "out.safetensors", tmp_path / "state"
    args = _command(convnext, digits, out, state_dir)[1:]
    first = CliRunner().invoke(app, [*args, "--epochs", "0"])
    assert first.exit_code == 0, first.output
    other = CliRunner().invoke(app, [*args, "--force", "--resume"])  # --epochs 4 now
    assert other.exit_code == 2 and "other settings" in other.stderr
    # The keys that differ are named, not two whole configurations printed.
    assert "epochs differ" in other.stderr and "'epochs'" not in other.stderr
