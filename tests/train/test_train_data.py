"""Bad data and bad options end in one message naming the path and a documented exit code."""

from __future__ import annotations

import shutil

import pytest
from train_testkit import finetune_cli
from typer.testing import CliRunner

from parc_surgery.cli import app
from parc_surgery.errors import EXIT_CODES, DataError

runner = CliRunner()


def _eval(checkpoint, data, *extra):
    return runner.invoke(app, ["eval", str(checkpoint), "--data", str(data), "-j", "0", *extra])


def _finetune(checkpoint, weights, data, out, *extra):
    return finetune_cli(checkpoint, data, out, "--warm-start-epochs", "0", *extra, teacher=weights)


def _clean(result, code: int, *words: str) -> str:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    message = result.stderr.strip().splitlines()[-1]  # after any warnings
    assert message.startswith("error: ")
    for word in words:
        assert word in message, message
    return message


def test_data_errors_have_their_own_documented_exit_code():
    assert DataError.exit_code == 10 and "data" in EXIT_CODES[10]


def test_a_missing_data_folder_is_named(convnext, tmp_path):
    missing = tmp_path / "nowhere"
    _clean(_eval(convnext[0], missing), 10, str(missing), "does not exist")


def test_a_file_given_as_the_data_folder_is_named(convnext, tmp_path):
    single = tmp_path / "one.png"
    single.write_bytes(b"x")
    _clean(_eval(convnext[0], single), 10, str(single), "is a file, not a folder")


def test_a_missing_split_names_the_folder_it_looked_for(convnext, digits, tmp_path):
    data = tmp_path / "only-train"
    shutil.copytree(digits / "train", data / "train")
    _clean(_eval(convnext[0], data), 10, str(data / "val"), "found: train")


def test_a_split_without_images_is_named(convnext, tmp_path):
    data = tmp_path / "empty"
    (data / "val" / "0").mkdir(parents=True)
    (data / "val" / "0" / "notes.txt").write_text("no images here")
    _clean(_eval(convnext[0], data), 10, str(data / "val"), "no usable images")


def test_a_class_count_other_than_the_heads_says_how_to_convert(digits):
    result = runner.invoke(
        app,
        [
            "eval",
            "test_convnext",
            "--model-arg",
            "num_classes=3",
            "--data",
            str(digits),
            "--input-size",
            "64",
            "-j",
            "0",
        ],
    )
    _clean(result, 10, str(digits / "val"), "10 class folders", "3 classes", "num_classes=10")


def test_a_val_class_the_training_split_lacks_is_refused(convnext, digits, tmp_path):
    data = shutil.copytree(digits, tmp_path / "extra")
    shutil.copytree(data / "val" / "3", data / "val" / "extra")
    out = tmp_path / "out.safetensors"
    _clean(_finetune(*convnext, data, out), 10, "extra", "training split lacks")
    assert not out.exists()


@pytest.mark.parametrize("split", ["val", "train"])
def test_a_corrupt_image_stops_the_run_naming_the_file(convnext, digits, tmp_path, split):
    # In val it is met while measuring the start; in train in the middle of an epoch.
    data = shutil.copytree(digits, tmp_path / "corrupt")
    victim = sorted((data / split).glob("*/*.png"))[3]
    victim.write_bytes(b"\x89PNG\r\n\x1a\n this is not image data")
    out = tmp_path / "out.safetensors"
    _clean(_finetune(*convnext, data, out), 10, str(victim), "not a readable image")
    assert not out.exists() and list(tmp_path.glob(".out*")) == []


def test_a_corrupt_image_read_by_a_worker_process_keeps_its_message(convnext, digits, tmp_path):
    data = shutil.copytree(digits, tmp_path / "corrupt")
    victim = sorted((data / "val").glob("*/*.png"))[0]
    victim.write_bytes(b"garbage")
    result = runner.invoke(
        app, ["eval", str(convnext[0]), "--data", str(data), "--workers", "1", "-b", "4"]
    )
    message = _clean(result, 10, str(victim), "not a readable image")
    assert "Original Traceback" not in message


def test_too_few_images_for_one_batch_is_a_data_error(convnext, digits, tmp_path):
    out = tmp_path / "out.safetensors"
    result = _finetune(*convnext, digits, out, "-b", "64")
    _clean(result, 10, "no full batch", "--batch-size")


def test_finetune_without_a_teacher_refuses_and_names_no_teacher(convnext, digits, tmp_path):
    result = runner.invoke(
        app, ["finetune", str(convnext[0]), "--data", str(digits), "-o", str(tmp_path / "o")]
    )
    _clean(result, 2, "--teacher-weights", "--no-teacher")


def test_teacher_weights_that_do_not_fit_the_recipe_are_a_weights_error(
    convnext, mobilenet, digits, tmp_path
):
    result = _finetune(convnext[0], mobilenet[1], digits, tmp_path / "o.safetensors")
    _clean(result, 6, str(mobilenet[1]), "does not match the model")


def test_resume_without_saved_state_is_a_usage_error(convnext, digits, tmp_path):
    state = tmp_path / "state"
    result = _finetune(
        *convnext, digits, tmp_path / "o.safetensors", "--checkpoint-dir", str(state), "--resume"
    )
    _clean(result, 2, str(state / "state.pt"), "does not exist")


def test_an_existing_output_is_kept_without_force(convnext, digits, tmp_path):
    out = tmp_path / "taken.safetensors"
    out.write_bytes(b"keep me")
    _clean(_finetune(*convnext, digits, out), 7, str(out), "--force")
    assert out.read_bytes() == b"keep me"


def test_bad_hyper_parameters_are_usage_errors(convnext, digits, tmp_path):
    out = tmp_path / "o.safetensors"
    _clean(_finetune(*convnext, digits, out, "--distill-weight", "2"), 2, "--distill-weight")
    _clean(_finetune(*convnext, digits, out, "--lr-warmup-epochs", "1"), 2, "--lr-warmup-epochs")
    _clean(_finetune(*convnext, digits, out, "--sync-bn"), 2, "CUDA")
