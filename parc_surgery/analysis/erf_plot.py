"""The ERF figure: original and converted side by side on one log colour scale."""

from __future__ import annotations

import math
import os

import torch

__all__ = [
    "ERF_FIGURE_DPI",
    "ERF_FIGURE_INCHES",
    "erf_figure_pixels",
    "plot_erf_pair",
    "write_erf_png",
]

ERF_FIGURE_INCHES = (10.0, 4.8)
ERF_FIGURE_DPI = 100
# How many decades below the brightest pixel the colour scale reaches; darker is clipped.
_DECADES = 4.0


def erf_figure_pixels() -> tuple[int, int]:
    """(width, height) of the PNG that plot_erf_pair writes."""
    return (
        round(ERF_FIGURE_INCHES[0] * ERF_FIGURE_DPI),
        round(ERF_FIGURE_INCHES[1] * ERF_FIGURE_DPI),
    )


def _log_share(erf: torch.Tensor) -> torch.Tensor:
    # Each map is divided by its own total so the two are distributions over the same
    # pixels: a wider ERF then shows as lower, flatter values, as in the ParC figures.
    share = erf.double() / erf.double().sum().clamp_min(1e-300)
    return torch.log10(share.clamp_min(1e-300))


def plot_erf_pair(
    original: torch.Tensor,
    converted: torch.Tensor,
    path: str | os.PathLike,
    *,
    title: str,
    labels: tuple[str, str] = ("original", "converted (ParC)"),
    notes: tuple[str, str] = ("", ""),
) -> None:
    """Write a PNG: two heat maps of log10(share of gradient mass), one shared colorbar."""
    from parc_surgery.extras import require_extra

    require_extra("analysis", "matplotlib")
    # The object-oriented API with an explicit Agg canvas: no global backend switch, no
    # display needed, safe next to other matplotlib users in the same process.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    maps = [_log_share(original), _log_share(converted)]
    vmax = max(float(m.max()) for m in maps)
    vmin = max(min(float(m.min()) for m in maps), vmax - _DECADES)
    if not math.isfinite(vmin) or vmin >= vmax:
        vmin = vmax - _DECADES
    figure = Figure(figsize=ERF_FIGURE_INCHES, dpi=ERF_FIGURE_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 2)
    image = None
    for ax, data, label, note in zip(axes, maps, labels, notes, strict=True):
        image = ax.imshow(data.numpy(), cmap="magma", vmin=vmin, vmax=vmax, interpolation="nearest")
        ax.set_title(label + (f"\n{note}" if note else ""), fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    colorbar = figure.colorbar(image, ax=list(axes), shrink=0.85)
    colorbar.set_label("log10 share of gradient mass per pixel")
    figure.suptitle(title, fontsize=11)
    figure.savefig(path, format="png", dpi=ERF_FIGURE_DPI)


def write_erf_png(
    original: torch.Tensor,
    converted: torch.Tensor,
    path: str | os.PathLike,
    *,
    title: str,
    notes: tuple[str, str] = ("", ""),
    force: bool = False,
) -> str:
    """plot_erf_pair into a temporary file beside `path`, renamed over it when done."""
    from parc_surgery.checkpoint import atomic_write

    with atomic_write(path, force=force) as tmp:
        plot_erf_pair(original, converted, tmp, title=title, notes=notes)
    return str(path)
