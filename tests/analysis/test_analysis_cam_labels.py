"""`cam` names classes and shows true labels when the images sit in ImageFolder class folders
(or a --class-names file names the classes); elsewhere classes stay bare indices."""

from __future__ import annotations

import json

import pytest
from cam_testkit import digit_images
from typer.testing import CliRunner

from parc_surgery.cli import app

pytest.importorskip("matplotlib")
pytest.importorskip("torchcam")

runner = CliRunner()
CLASSES = ["cat", "dog2", "dog10"]  # timm's natural order: cat, dog2, dog10


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 3-class resnet18 checkpoint (random original) and a val/<class>/ split of digits."""
    from parc_surgery.analysis.pair import convert_pair
    from parc_surgery.checkpoint import save

    folder = tmp_path_factory.mktemp("labels")
    pair = convert_pair("resnet18", input_size=(32, 32), model_args={"num_classes": 3})
    checkpoint = folder / "tiny-parc.safetensors"
    save(pair.converted, pair.plan, checkpoint)
    images = {}
    for name in reversed(CLASSES):  # created out of order: the order comes from sorting
        (folder / "val" / name).mkdir(parents=True)
        images[name] = digit_images(folder / "val" / name, count=1, size=32)[0]
    (folder / "val" / "empty").mkdir()  # holds no image: not a class, as in timm
    loose = digit_images(folder, count=1, size=32)[0]
    return {"checkpoint": checkpoint, "images": images, "loose": loose, "folder": folder}


def _cam(tiny, tmp_path, *images, extra=()):
    args = ["cam", tiny["checkpoint"], *images, "--random-original", "--force"]
    args += ["-o", tmp_path / "c.png"]
    result = run(*args, "--format", "json", *extra)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_cam_reads_true_labels_and_class_names_from_imagefolder_class_folders(tiny, tmp_path):
    shots = [tiny["images"]["dog10"], tiny["images"]["cat"]]
    data = _cam(tiny, tmp_path, *shots)
    assert [img["true_class"] for img in data["images"]] == [2, 0]
    assert [img["true_name"] for img in data["images"]] == ["dog10", "cat"]
    for img in data["images"]:
        for key in ("original", "converted"):
            model = img[key]
            assert model["predicted_name"] == CLASSES[model["predicted_class"]]
    table = run("cam", tiny["checkpoint"], *shots, "--random-original", "-o", tmp_path / "t.png")
    assert table.exit_code == 0, table.output
    predicted = data["images"][0]["converted"]["predicted_class"]
    assert f"{predicted} {CLASSES[predicted]}" in table.stdout


def test_cam_figure_shows_the_true_label_and_predicted_name(tiny, tmp_path):
    import torch

    from parc_surgery.analysis.cam import cam_of_pair
    from parc_surgery.analysis.cam_plot import cam_figure
    from parc_surgery.analysis.pair import checkpoint_pair

    pair = checkpoint_pair(tiny["checkpoint"], original_weights=None, random_original=True)
    result, batch, maps = cam_of_pair(pair, [tiny["images"]["dog2"]])
    figure = cam_figure(result, batch.pixels, maps)
    picture, original = figure.axes[0], figure.axes[1]
    assert "true class 1 dog2" in picture.get_title()
    name = CLASSES[result["images"][0]["original"]["predicted_class"]]
    assert f" {name} (p=" in original.get_xlabel()
    assert isinstance(maps["original"], torch.Tensor)


def test_cam_keeps_bare_indices_outside_class_folders_and_takes_class_names(tiny, tmp_path):
    data = _cam(tiny, tmp_path, tiny["loose"])
    image = data["images"][0]
    assert image["true_class"] is None and image["true_name"] is None
    assert image["original"]["predicted_name"] is None
    names = tmp_path / "names.txt"
    names.write_text("zero\n\x1b[31mone$x$\ntwo\n", encoding="utf-8")
    data = _cam(tiny, tmp_path, tiny["images"]["dog2"], extra=["--class-names", names])
    image = data["images"][0]
    assert image["true_class"] is None  # "dog2" is not one of the file's names
    assert (
        image["converted"]["predicted_name"]
        == ["zero", "\x1b[31mone$x$", "two"][image["converted"]["predicted_class"]]
    )
    shown = run(
        "cam",
        tiny["checkpoint"],
        tiny["loose"],
        "--random-original",
        "--class",
        1,
        "-o",
        tmp_path / "s.png",
        "--force",
        "--class-names",
        names,
    )
    assert shown.exit_code == 0, shown.output
    assert "\x1b[31m" not in shown.stdout and "\\x1b[31mone$x$" in shown.stdout
    names.write_text("a\nb\n", encoding="utf-8")
    wrong = run(
        "cam",
        tiny["checkpoint"],
        tiny["loose"],
        "--random-original",
        "-o",
        tmp_path / "w.png",
        "--class-names",
        names,
    )
    assert wrong.exit_code == 2 and "2 names but the model predicts 3" in wrong.stderr
    assert "Traceback" not in wrong.output and not (tmp_path / "w.png").exists()


def test_a_bad_class_names_file_is_a_usage_error(tmp_path, monkeypatch):
    import os

    from parc_surgery.analysis import cam_labels
    from parc_surgery.errors import UsageError

    good = tmp_path / "ok.txt"
    good.write_bytes(b"\xef\xbb\xbfa\n\n  b  \r\nc\n")
    assert cam_labels.read_class_names(good) == ["a", "b", "c"]
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    (tmp_path / "blank.txt").write_text("\n \n")
    (tmp_path / "latin.txt").write_bytes(b"caf\xe9\n")
    monkeypatch.setattr(cam_labels, "MAX_NAMES_BYTES", 4)
    cases = {"missing.txt": "cannot be read", "fifo": "not a regular file", "ok.txt": "larger"}
    for name, fragment in cases.items():
        with pytest.raises(UsageError, match=fragment):
            cam_labels.read_class_names(tmp_path / name)
    monkeypatch.setattr(cam_labels, "MAX_NAMES_BYTES", 1024)
    for name, fragment in {"blank.txt": "no names", "latin.txt": "UTF-8"}.items():
        with pytest.raises(UsageError, match=fragment):
            cam_labels.read_class_names(tmp_path / name)
