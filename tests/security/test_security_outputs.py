"""Hostile outputs: an output that is an input, planted links, zip bombs, failing writes,
non-finite training, terminal escapes, batch under SIGTERM."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))
from train_testkit import convert_tiny, finetune_cli, make_digits  # noqa: E402

from parc_surgery.cli import app  # noqa: E402


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(converted checkpoint, original weights, digits folder) for a tiny model."""
    folder = tmp_path_factory.mktemp("tiny")
    with torch.random.fork_rng(devices=[]):
        checkpoint, weights = convert_tiny(folder, "test_convnext")
    return checkpoint, weights, make_digits(folder / "digits", per_class=5)


@pytest.mark.parametrize("which", ["teacher", "checkpoint"])
def test_finetune_never_writes_over_its_inputs_even_with_force(tiny, which):
    checkpoint, weights, digits = tiny
    victim = weights if which == "teacher" else checkpoint
    before = _sha(victim)
    result = finetune_cli(checkpoint, digits, victim, "--force", teacher=weights)
    assert result.exit_code == 7, result.output
    assert "is the input file" in result.output
    assert _sha(victim) == before


def test_cam_never_writes_its_png_over_the_checkpoint(tiny):
    pytest.importorskip("matplotlib")
    checkpoint, _, digits = tiny
    image = next(p for p in sorted(digits.rglob("*.png")))
    before = _sha(checkpoint)
    args = ["cam", str(checkpoint), str(image), "--random-original", "-o", str(checkpoint)]
    result = CliRunner().invoke(app, [*args, "--force"])
    assert result.exit_code == 7, result.output
    assert "is the input file" in result.output
    assert _sha(checkpoint) == before


def test_convert_output_through_a_link_to_its_weights_is_refused(tiny, tmp_path):
    checkpoint, weights, _ = tiny
    link = tmp_path / "out.safetensors"
    link.symlink_to(weights)
    before = _sha(weights)
    args = ["test_convnext", "--model-arg", "num_classes=10", "--input-size", "64"]
    result = CliRunner().invoke(
        app, ["convert", *args, "--weights", str(weights), "-o", str(link), "--force"]
    )
    assert result.exit_code == 7, result.output
    assert _sha(weights) == before
