"""The CAM figure: one row per image; the picture, the original's and the converted's map."""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch

from parc_surgery.errors import printable

__all__ = [
    "CAM_DPI",
    "cam_figure",
    "cam_figure_pixels",
    "cam_title",
    "plot_cam_rows",
    "write_cam_png",
]

CAM_DPI = 100
_COLUMN_INCHES = 3.2
_ROW_INCHES = 4.0
_TITLE_INCHES = 0.6


def _figure_inches(rows: int) -> tuple[float, float]:
    return 3 * _COLUMN_INCHES, rows * _ROW_INCHES + _TITLE_INCHES


def cam_figure_pixels(rows: int) -> tuple[int, int]:
    """(width, height) of the PNG that plot_cam_rows writes for `rows` images."""
    width, height = _figure_inches(rows)
    return round(width * CAM_DPI), round(height * CAM_DPI)


def _pct(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{value * 100:.0f}%"


def _drawn(name: str | None) -> str:
    """A class name as matplotlib text: escaped, cut, its $ not read as mathtext."""
    from parc_surgery.analysis.cam_labels import shown_name

    return shown_name(name).replace("$", r"\$")


def _named(cls: int, name: str | None) -> str:
    return f"{cls} {_drawn(name)}" if name else str(cls)


def _caption(model: dict) -> str:
    ratio = model["area_ratio"]
    entropy = "n/a" if not math.isfinite(model["entropy"]) else f"{model['entropy']:.3f}"
    predicted = _named(model["predicted_class"], model.get("predicted_name"))
    lines = [
        f"class {predicted} (p={model['probability']:.2f})",
        f"50% / 90% of mass in {_pct(ratio['50'])} / {_pct(ratio['90'])} of area",
        f"entropy {entropy}",
    ]
    if model["explained_class"] != model["predicted_class"]:
        lines[0] += (
            f", map of class {_named(model['explained_class'], model.get('explained_name'))}"
        )
    return "\n".join(lines)


def cam_title(result: dict) -> str:
    """The figure's title: method, model, layer, stages, input size, original's weights."""
    size = result["input_size"]
    return (
        f"{result['method']} of {result['model']} at {result['target_layer']}, ParC in "
        f"stages {','.join(map(str, result['stages']))} ({size[0]}x{size[1]}); original weights: "
        f"{result['original_weights']}"
    )


def plot_cam_rows(
    result: dict,
    pixels: torch.Tensor,
    maps: dict[str, torch.Tensor],
    path: str | os.PathLike,
    *,
    labels: tuple[str, str] = ("original", "converted (ParC)"),
) -> None:
    """Write a PNG: per image the picture and each model's map over it, with its numbers.

    `result` is cam_of_pair's; `pixels` (N, H, W, C) in [0, 1]; `maps` {"original",
    "converted"} (N, H, W); each map is drawn scaled to its own maximum (the Grad-CAM
    convention) over the picture.
    """
    cam_figure(result, pixels, maps, labels=labels).savefig(path, format="png", dpi=CAM_DPI)


def cam_figure(
    result: dict,
    pixels: torch.Tensor,
    maps: dict[str, torch.Tensor],
    *,
    labels: tuple[str, str] = ("original", "converted (ParC)"),
):
    """The matplotlib Figure plot_cam_rows writes, with one colour bar for every map."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = pixels.shape[0]
    drawn = None
    figure = Figure(figsize=_figure_inches(rows), dpi=CAM_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, 3, squeeze=False)
    for row in range(rows):
        picture = pixels[row].numpy()
        gray = picture.shape[-1] == 1
        shown = picture[..., 0] if gray else picture
        entry = result["images"][row]
        axes[row][0].imshow(shown, cmap="gray" if gray else None, vmin=0, vmax=1)
        title = printable(Path(entry["image"]).name).replace("$", r"\$")
        if entry.get("true_class") is not None:
            title += f"\ntrue class {_named(entry['true_class'], entry.get('true_name'))}"
        axes[row][0].set_title(title, fontsize=9)
        for column, (key, label) in enumerate(
            zip(("original", "converted"), labels, strict=True), start=1
        ):
            ax = axes[row][column]
            heat = maps[key][row]
            top = float(heat.max())
            ax.imshow(shown, cmap="gray" if gray else None, vmin=0, vmax=1)
            scaled = heat.numpy() / (top if top > 0 else 1)
            drawn = ax.imshow(scaled, cmap="jet", alpha=0.5, vmin=0, vmax=1)
            caption = _caption(entry[key])
            if key == "converted":
                caption += f", IoU of top-20% with original {_pct(entry['iou_top20'])}"
            ax.set_title(label, fontsize=10)
            ax.set_xlabel(caption, fontsize=8)
        for ax in axes[row]:
            ax.set_xticks([])
            ax.set_yticks([])
    if drawn is not None:
        bar = figure.colorbar(drawn, ax=axes[:, 1:].ravel().tolist(), shrink=0.8, aspect=30)
        bar.set_label("map / its maximum (each map scaled to its own peak)", fontsize=8)
        bar.solids.set_alpha(1)
    figure.suptitle(cam_title(result), fontsize=11)
    return figure


def write_cam_png(
    result: dict,
    pixels: torch.Tensor,
    maps: dict[str, torch.Tensor],
    path: str | os.PathLike,
    *,
    force: bool = False,
) -> str:
    """plot_cam_rows into a temporary file beside `path`, renamed over it when done."""
    from parc_surgery.checkpoint import atomic_write

    with atomic_write(path, force=force) as tmp:
        plot_cam_rows(result, pixels, maps, tmp)
    return str(path)
