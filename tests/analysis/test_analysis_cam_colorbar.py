"""The Grad-CAM figure has a colour bar saying what the map colours mean."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("matplotlib")


def _model(cls: int) -> dict:
    return {
        "predicted_class": cls,
        "probability": 0.5,
        "explained_class": cls,
        "explained_probability": 0.5,
        "area_ratio": {"50": 0.2, "90": 0.6},
        "entropy": 0.9,
    }


def test_the_cam_figure_has_one_colour_bar_for_the_maps(tmp_path):
    from parc_surgery.analysis.cam_plot import cam_figure, plot_cam_rows

    rows = 2
    result = {
        "method": "gradcam",
        "model": "resnet18",
        "target_layer": "layer4",
        "stages": [3, 4],
        "input_size": [16, 16],
        "original_weights": "random init",
        "images": [
            {"image": f"{i}.png", "original": _model(1), "converted": _model(2), "iou_top20": 0.5}
            for i in range(rows)
        ],
    }
    pixels = torch.rand(rows, 16, 16, 3)
    maps = {"original": torch.rand(rows, 16, 16), "converted": torch.rand(rows, 16, 16) * 3}
    figure = cam_figure(result, pixels, maps)
    assert len(figure.axes) == rows * 3 + 1  # the picture and two maps per row, one bar
    bar = figure.axes[-1]
    assert "maximum" in bar.get_ylabel()
    assert "stages 3,4 " in figure.get_suptitle()
    plot_cam_rows(result, pixels, maps, tmp_path / "cam.png")
    assert (tmp_path / "cam.png").stat().st_size > 0
