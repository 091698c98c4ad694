"""Effective receptive field (Luo et al. 2016), measured the way RepLKNet does.

The ERF of a model is the input gradient of its central output unit: take the last
feature map (``forward_features``), sum the channels at its centre pixel, backpropagate
to the input, take the absolute value, sum over the input's colour channels and average
over a set of inputs. Models run in eval mode, so BatchNorm uses its running statistics
and the inputs of a batch do not mix: one backward pass gives every input's gradient.

The number that summarises it is the *high-contribution area ratio*: the smallest
fraction of the input area that holds a given share (20%, 50%, 90%) of the total
gradient mass. A larger ratio means the model draws on more of the image.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from parc_surgery.errors import UsageError
from parc_surgery.models import eval_mode

__all__ = [
    "AREA_FRACTIONS",
    "IMAGE_SUFFIXES",
    "area_ratios",
    "compare_erf",
    "erf_map",
    "erf_summary",
    "image_inputs",
    "normalisation_of",
    "random_inputs",
]

AREA_FRACTIONS = (0.2, 0.5, 0.9)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def _features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    # timm models expose the last feature map before pooling; plain nets are used whole.
    forward = getattr(model, "forward_features", None)
    out = forward(x) if callable(forward) else model(x)
    if isinstance(out, (list, tuple)):  # feature-list models: the deepest map
        out = out[-1]
    if not isinstance(out, torch.Tensor) or out.dim() != 4:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise UsageError(
            f"the ERF needs a (B, C, H, W) feature map, but forward_features returned {shape}",
            hint="use a convolutional model (ResNet, MobileNet, ConvNeXt, MobileViT)",
        )
    return out


def erf_map(model: nn.Module, inputs: torch.Tensor, *, chunk: int = 8) -> torch.Tensor:
    """Mean over `inputs` of |d centre unit / d input|, summed over colour channels: (H, W)."""
    if inputs.dim() != 4 or inputs.shape[0] < 1:
        raise ValueError(f"inputs must be (N, C, H, W) with N >= 1, got {tuple(inputs.shape)}")
    total = torch.zeros(inputs.shape[-2:], dtype=torch.float64)
    with eval_mode(model), torch.enable_grad():
        for start in range(0, inputs.shape[0], chunk):
            x = inputs[start : start + chunk].detach().clone().requires_grad_(True)
            feats = _features(model, x)
            h, w = feats.shape[-2:]
            # Summing over the batch is safe: in eval mode each input's gradient is its own.
            centre = feats[:, :, h // 2, w // 2].sum()
            (grad,) = torch.autograd.grad(centre, x)
            total += grad.abs().sum(dim=1).sum(dim=0).double()
    return (total / inputs.shape[0]).float()


def area_ratios(erf: torch.Tensor, fractions: Sequence[float] = AREA_FRACTIONS) -> dict[str, float]:
    """{"20": r, ...}: the smallest share r of pixels holding that percent of the mass."""
    values = erf.flatten().double().clamp_min(0)
    mass = values.sum()
    if not torch.isfinite(mass) or mass <= 0:
        return {_key(f): float("nan") for f in fractions}
    cumulative = torch.cumsum(values.sort(descending=True).values, 0) / mass
    # The tiny slack keeps a share reached exactly (up to rounding) at that pixel.
    targets = torch.tensor([f - 1e-12 for f in fractions], dtype=torch.float64)
    counts = (torch.searchsorted(cumulative, targets) + 1).clamp_max(values.numel())
    return {_key(f): int(c) / values.numel() for f, c in zip(fractions, counts, strict=True)}


def _key(fraction: float) -> str:
    return f"{round(fraction * 100):d}"


def erf_summary(erf: torch.Tensor) -> dict:
    """What the report shows for one model: area ratios and where the mass peaks."""
    flat_peak = int(erf.flatten().argmax())
    w = erf.shape[-1]
    return {
        "area_ratio": area_ratios(erf),
        "peak": [flat_peak // w, flat_peak % w],
        "centre_share": float(erf[erf.shape[0] // 2, w // 2] / erf.sum())
        if float(erf.sum()) > 0
        else float("nan"),
    }


def compare_erf(original: nn.Module, converted: nn.Module, inputs: torch.Tensor) -> dict:
    """Both models' ERF maps ("maps") and summaries ("original", "converted")."""
    maps = {"original": erf_map(original, inputs), "converted": erf_map(converted, inputs)}
    result: dict = {name: erf_summary(m) for name, m in maps.items()}
    result["maps"] = maps
    result["area_ratio_gain"] = {
        key: (result["converted"]["area_ratio"][key] / value if value else None)
        for key, value in result["original"]["area_ratio"].items()
    }
    return result


def random_inputs(
    count: int, input_size: tuple[int, int], *, seed: int = 0, channels: int = 3
) -> torch.Tensor:
    """`count` seeded standard-normal inputs (the statistics of normalised images)."""
    if count < 1:
        raise UsageError(f"--random {count}: need at least one input")
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(count, channels, *input_size, generator=generator)


def normalisation_of(model: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) from the model's pretrained_cfg, ImageNet's when it has none."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    mean = tuple(cfg.get("mean", _IMAGENET_MEAN)) if isinstance(cfg, dict) else _IMAGENET_MEAN
    std = tuple(cfg.get("std", _IMAGENET_STD)) if isinstance(cfg, dict) else _IMAGENET_STD
    return mean, std


def image_inputs(
    directory: str | Path,
    input_size: tuple[int, int],
    mean: Sequence[float] = _IMAGENET_MEAN,
    std: Sequence[float] = _IMAGENET_STD,
    *,
    limit: int | None = None,
) -> torch.Tensor:
    """The images of `directory` (sorted by name), RGB, resized to input_size, normalised."""
    from PIL import Image, UnidentifiedImageError

    from parc_surgery.analysis.images import ImageTooLarge, open_bounded

    folder = Path(directory)
    if not folder.is_dir():
        raise UsageError(f"--images {folder}: not a directory")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if limit is not None:
        files = files[:limit]
    if not files:
        raise UsageError(
            f"--images {folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in it",
            hint="point --images at a folder of pictures, or use --random N",
        )
    h, w = input_size
    mean_t = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    batch = []
    for path in files:
        if not path.is_file():  # a FIFO would block the read forever
            raise UsageError(f"{path}: not a regular file", hint="remove it from --images")
        try:
            with open_bounded(path) as image:
                rgb = image.convert("RGB").resize((w, h), Image.Resampling.BILINEAR)
                data = torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8)
        except (UnidentifiedImageError, ImageTooLarge, OSError, SyntaxError) as err:
            raise UsageError(f"{path}: not a readable image ({err})") from None
        pixels = data.view(h, w, 3).permute(2, 0, 1).float() / 255.0
        batch.append((pixels - mean_t) / std_t)
    return torch.stack(batch)
