"""`parc-surgery cam` through the typer app: the figure, the numbers, the exit codes."""

from __future__ import annotations

import json
import sys

import pytest
from cam_testkit import digit_images, sample_photos, write_pair
from PIL import Image
from typer.testing import CliRunner

from parc_surgery.analysis.cam_plot import cam_figure_pixels
from parc_surgery.cli import app

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def assert_clean_error(result, code: int, fragment: str) -> None:
    assert result.exit_code == code, result.output
    assert fragment in result.stderr, result.stderr
    assert "Traceback" not in result.output
    assert result.stdout == ""


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cam")
    checkpoint, weights = write_pair(folder)
    return {
        "checkpoint": checkpoint,
        "weights": weights,
        "photos": sample_photos(folder),
        "digits": digit_images(folder, count=2),
    }


def test_cam_on_the_sample_photos_writes_the_figure_and_the_numbers(tmp_path, files):
    png = tmp_path / "cam.png"
    result = run(
        "cam", files["checkpoint"], *files["photos"], "--original-weights", files["weights"],
        "-o", png, "--format", "json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["model"] == "resnet26" and data["checkpoint"] == str(files["checkpoint"])
    assert data["original_weights"] == str(files["weights"])
    assert data["method"] == "gradcam" and data["target_layer"] == "layer4"
    assert data["input_size"] == [64, 64] and data["feature_size"] == [2, 2]
    assert data["output"] == str(png) and data["class"] is None
    assert [img["image"] for img in data["images"]] == [str(p) for p in files["photos"]]
    for image in data["images"]:
        for name in ("original", "converted"):
            model = image[name]
            assert model["explained_class"] == model["predicted_class"]
            assert 0 < model["probability"] <= 1
            assert 0 < model["area_ratio"]["50"] < model["area_ratio"]["90"] <= 1
            assert 0 < model["entropy"] <= 1
        assert 0 <= image["iou_top20"] <= 1
    ious = [img["iou_top20"] for img in data["images"]]
    assert data["mean"]["iou_top20"] == pytest.approx(sum(ious) / 2)
    with Image.open(png) as figure:
        assert figure.format == "PNG" and figure.size == cam_figure_pixels(2)
    assert f"wrote {png}" in result.stderr
    assert "original weights: " + str(files["weights"]) in result.stderr


def test_cam_on_digits_with_a_class_a_method_and_a_random_original(tmp_path, files):
    png = tmp_path / "digits.png"
    args = ["cam", files["checkpoint"], *files["digits"], "--random-original", "-o", png]
    result = run(*args, "--class", 3, "--method", "layercam", "--format", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["method"] == "layercam" and data["class"] == 3
    assert data["original_weights"] == "random init"
    assert all(
        img[n]["explained_class"] == 3 for img in data["images"] for n in ("original", "converted")
    )
    assert "random initialisation" in result.stderr
    table = run(*args, "--method", "gradcam++", "--target-layer", "layer3", "--force")
    assert table.exit_code == 0, table.output
    for fragment in ("gradcam++ of resnet26 at layer3", "mass 50%", "IoU top-20%", "mean"):
        assert fragment in table.stdout


def test_cam_user_errors_exit_2_without_traceback_or_file(tmp_path, files):
    png = tmp_path / "cam.png"
    base = ["cam", files["checkpoint"]]
    weights = ["--original-weights", files["weights"], "-o", png]
    photo = files["photos"][0]
    assert_clean_error(run(*base, tmp_path / "none.jpg", *weights), 2, "does not exist")
    text = tmp_path / "notes.jpg"
    text.write_text("words")
    assert_clean_error(run(*base, text, *weights), 2, "not an image PIL can read")
    gray = tmp_path / "gray.png"
    Image.new("L", (20, 20)).save(gray)
    assert_clean_error(run(*base, gray, *weights), 2, "has 1 channels (L), but the model takes 3")
    assert_clean_error(
        run(*base, photo, *weights, "--target-layer", "layer5"), 2, "Close names: layer4"
    )
    assert_clean_error(
        run(*base, photo, *weights, "--class", 1000), 2, "--class 1000 is out of range"
    )
    assert_clean_error(run(*base, photo, "-o", png), 2, "--random-original")
    assert_clean_error(run(*base, photo, *weights, "--method", "scorecam"), 2, "--method")
    assert not png.exists()
    png.write_bytes(b"old")
    assert_clean_error(run(*base, photo, *weights), 7, "already exists")
    assert png.read_bytes() == b"old"


def test_cam_without_the_analysis_extra_names_the_pip_command(tmp_path, files, monkeypatch):
    monkeypatch.setitem(sys.modules, "torchcam", None)
    png = tmp_path / "cam.png"
    result = run("cam", files["checkpoint"], files["photos"][0], "--random-original", "-o", png)
    assert_clean_error(result, 2, "pip install 'parc-surgery[analysis]'")
    assert len(result.stderr.strip().splitlines()) == 1
    assert not png.exists()


def test_cam_help_lists_the_methods():
    result = run("cam", "--help")
    assert result.exit_code == 0
    assert "gradcam++" in result.stdout and "layercam" in result.stdout
