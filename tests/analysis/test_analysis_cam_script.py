"""benchmarks/cam_figure.py: the figure and numbers for docs/recovery.md from an ImageFolder."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

from cam_testkit import digit_images, write_pair
from PIL import Image

from parc_surgery.analysis.cam_plot import cam_figure_pixels

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "cam_figure.py"


def _script():
    spec = importlib.util.spec_from_file_location("cam_figure_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cam_figure_takes_the_first_image_of_each_class_and_keeps_labels(tmp_path, capsys):
    checkpoint, weights = write_pair(tmp_path)
    split = tmp_path / "digits" / "val"
    for path in digit_images(tmp_path, count=4):  # digits 0-3, as digit-<label>.png
        folder = split / path.stem.split("-")[1]
        folder.mkdir(parents=True)
        for name in ("a.png", "b.png"):  # two per class; --per-class 1 keeps a.png
            shutil.copy(path, folder / name)
    out = tmp_path / "figure" / "cam.png"
    script = _script()
    code = script.main([str(weights), str(checkpoint), str(split), "--out", str(out)])
    assert code == 0
    data = json.loads(out.with_suffix(".json").read_text())
    assert [img["label"] for img in data["images"]] == ["0", "1", "2", "3"]
    assert [Path(img["image"]).name for img in data["images"]] == ["a.png"] * 4
    assert data["original_weights"] == str(weights) and data["output"] == str(out)
    with Image.open(out) as figure:
        assert figure.size == cam_figure_pixels(4)
    table = capsys.readouterr().out.strip().splitlines()
    assert table[0].startswith("| image | label |") and len(table) == 2 + 4 + 1
    assert table[-1].startswith("| mean |")
    assert script.main([str(weights), str(checkpoint), str(split), "--out", str(out)]) == 7
