"""eval warns at an input size other than the checkpoint's; finetune's old option name."""

from __future__ import annotations

import json

from readme_testkit import json_keys
from train_testkit import finetune_cli
from typer.testing import CliRunner

from parc_surgery.cli import app

runner = CliRunner()


def _eval(checkpoint, digits, *extra: str):
    args = ["eval", str(checkpoint), "--data", str(digits), "-j", "0", "--limit", "4"]
    return runner.invoke(app, [*args, "--format", "json", *extra])


def test_eval_at_another_size_than_the_checkpoints_warns(convnext, digits):
    checkpoint, _ = convnext  # converted at 64x64
    other = _eval(checkpoint, digits, "--input-size", "48")
    assert other.exit_code == 0, other.output
    assert "--input-size 48x48 differs from the 64x64" in other.stderr
    assert json.loads(other.stdout)["top1"] is not None
    assert set(json.loads(other.stdout)) <= json_keys("Eval")  # as the README documents
    same = _eval(checkpoint, digits, "--input-size", "64")
    assert same.exit_code == 0, same.output
    assert "differs" not in same.stderr
    default = _eval(checkpoint, digits)
    assert default.exit_code == 0 and "differs" not in default.stderr


def test_the_old_warmup_epochs_spelling_still_works_and_says_it_is_deprecated(
    tmp_path, convnext, digits
):
    checkpoint, weights = convnext
    assert "--warmup-epochs" not in runner.invoke(app, ["finetune", "--help"]).stdout
    result = finetune_cli(
        checkpoint, digits, tmp_path / "ft.safetensors", "--warmup-epochs", "0", teacher=weights
    )
    assert result.exit_code == 0, result.output
    assert "--warmup-epochs is deprecated" in result.stderr
    assert "--warm-start-epochs" in result.stderr


def test_train_writes_the_weights_convert_reads(tmp_path, digits):
    weights = tmp_path / "trained.safetensors"
    args = ["train", "test_convnext", "--data", str(digits), "--model-arg", "num_classes=10"]
    args += [
        "--input-size",
        "32",
        "--epochs",
        "1",
        "--lr-warmup-epochs",
        "0.5",
        "-b",
        "8",
        "-j",
        "0",
    ]
    args += ["-o", str(weights)]
    result = runner.invoke(app, [*args, "--format", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["output"] == str(weights) and data["best_epoch"] == 1
    assert 0 <= data["best"]["top1"] <= 100 and len(data["history"]) == 1
    documented = json_keys("Train")  # the README's keys, and Eval's for an epoch's eval
    assert set(data) | set(data["history"][0]) <= documented
    assert set(data["best"]) <= json_keys("Eval")
    again = runner.invoke(app, args)
    assert again.exit_code == 7 and "already exists" in again.output  # nothing overwritten
    checkpoint = tmp_path / "parc.safetensors"
    convert = [
        "convert", "test_convnext", "--model-arg", "num_classes=10", "--input-size", "32",
        "--weights", str(weights), "-o", str(checkpoint), "-q",
    ]  # fmt: skip
    converted = runner.invoke(app, convert)
    assert converted.exit_code == 0, converted.output
    from parc_surgery.checkpoint import read_recipe
    from parc_surgery.weights import file_sha256

    assert read_recipe(checkpoint)["source_weights_sha256"] == file_sha256(weights)
