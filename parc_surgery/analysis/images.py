"""Image files -> a model's input batch, with timm's evaluation transform.

Each file is opened with PIL, checked against the model's input channels (1: grayscale,
3: RGB), and passed through `timm.data.create_transform` with the model's data config
(`resolve_data_config`: resize, centre crop, normalise), exactly what timm's validation
feeds the model. The same pixels, de-normalised, are what a figure shows, so a heat map
is drawn over the picture the model saw.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from parc_surgery.errors import UsageError

__all__ = [
    "ASPECT_LIMIT",
    "PIXEL_LIMIT",
    "ImageBatch",
    "ImageTooLarge",
    "check_image_paths",
    "image_channels",
    "load_images",
    "open_bounded",
    "open_image",
]

# One bound for every image reader (cam, erf --images, eval and finetune data), checked
# from the header before any pixel is decoded: PIL's own default pixel count (a
# decompression bomb of a few kB claims far more), and a side ratio past which resizing
# the short side to the input size would make the long side absurd (1 x 3,000,000).
PIXEL_LIMIT = 89_478_485
ASPECT_LIMIT = 100

# PIL modes whose band count is not their channel count as a picture: a palette image is
# RGB (RGBA with its alpha band).
_PALETTE_CHANNELS = {"P": 3, "PA": 4}
_CHANNEL_NAMES = {1: "grayscale", 2: "grayscale + alpha", 3: "RGB", 4: "RGBA or CMYK"}


@dataclass
class ImageBatch:
    """`inputs` (N, C, H, W) normalised for the model; `pixels` (N, H, W, C) in [0, 1]."""

    paths: list[str]
    inputs: torch.Tensor
    pixels: torch.Tensor


class ImageTooLarge(ValueError):
    """An image whose header claims more pixels, or a longer side ratio, than the limits."""


@contextlib.contextmanager
def open_bounded(source) -> Iterator:
    """`PIL.Image.open(source)`, refused (ImageTooLarge) past PIXEL_LIMIT or ASPECT_LIMIT.

    Only the header is read before the check; PIL's DecompressionBombError (its own limit)
    becomes ImageTooLarge too, so every reader refuses the same files the same way.
    """
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(source)
        except Image.DecompressionBombError as err:
            raise ImageTooLarge(f"too many pixels ({err})") from None
    with image:
        width, height = image.size
        if width * height > PIXEL_LIMIT:
            raise ImageTooLarge(
                f"{width} x {height} pixels is more than the limit of {PIXEL_LIMIT:,} "
                "(a decompression bomb, or a picture to shrink first)"
            )
        if max(width, height) > ASPECT_LIMIT * max(min(width, height), 1):
            raise ImageTooLarge(
                f"{width} x {height} pixels: one side is more than {ASPECT_LIMIT} times the other"
            )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield image


def check_image_paths(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Fail (UsageError) on a missing path or a directory before any model is loaded."""
    if not paths:
        raise UsageError("no images given", hint="name one or more image files")
    checked = []
    for text in paths:
        path = Path(text)
        if path.is_dir():
            raise UsageError(
                f"image {path} is a directory",
                hint=f"name the image files, e.g. {path}/*.png",
            )
        if not path.is_file():
            if path.exists():  # a FIFO or device: reading it could block forever
                raise UsageError(f"image {path} is not a regular file", hint="name image files")
            raise UsageError(f"image {path} does not exist", hint="check the path")
        checked.append(path)
    return checked


def image_channels(mode: str) -> int:
    """How many channels a picture in PIL mode `mode` has (alpha counted)."""
    from PIL import Image

    return _PALETTE_CHANNELS.get(mode, Image.getmodebands(mode))


def open_image(path: str | os.PathLike, channels: int):
    """The image at `path` as a PIL image with `channels` channels (1: "L", 3: "RGB").

    Raises UsageError for a file PIL cannot read and for a picture whose channel count
    is not `channels`: converting colour to gray (or inventing colour) silently would
    explain a different input than the user gave.
    """
    from PIL import UnidentifiedImageError

    try:
        with open_bounded(path) as image:
            image.load()  # decode now: a truncated file fails here, not later
            found = image_channels(image.mode)
            if found != channels:
                wanted = _CHANNEL_NAMES.get(channels, f"{channels}-channel")
                raise UsageError(
                    f"image {path} has {found} channels ({image.mode}), but the model "
                    f"takes {channels} ({wanted})",
                    hint=f"convert it first, e.g. with PIL: "
                    f"Image.open(path).convert({'L' if channels == 1 else 'RGB'!r}).save(...)",
                )
            return image.convert("L" if channels == 1 else "RGB")
    except (UnidentifiedImageError, ImageTooLarge, OSError, SyntaxError) as err:
        raise UsageError(
            f"image {path} is not an image PIL can read ({type(err).__name__}: {err})",
            hint="give PNG, JPEG or another common image file",
        ) from None


def _data_config(model: nn.Module, channels: int, input_size: tuple[int, int]) -> dict:
    from timm.data import resolve_data_config

    config = resolve_data_config({"input_size": (channels, *input_size)}, model=model)
    if channels == 1 and len(config["mean"]) == 3:
        # ImageNet statistics for a grayscale model: the average over the colour channels.
        config["mean"] = (sum(config["mean"]) / 3,)
        config["std"] = (sum(config["std"]) / 3,)
    return config


def load_images(
    paths: Sequence[str | os.PathLike],
    model: nn.Module,
    input_size: tuple[int, int],
    *,
    channels: int = 3,
) -> ImageBatch:
    """Read `paths`, check their channels, transform them for `model` at `input_size`."""
    from timm.data import create_transform

    config = _data_config(model, channels, input_size)
    transform = create_transform(**config, is_training=False)
    mean = torch.tensor(config["mean"], dtype=torch.float32).view(-1, 1, 1)
    std = torch.tensor(config["std"], dtype=torch.float32).view(-1, 1, 1)
    inputs = torch.stack([transform(open_image(p, channels)) for p in check_image_paths(paths)])
    pixels = (inputs * std + mean).clamp(0, 1).permute(0, 2, 3, 1)
    return ImageBatch([str(p) for p in paths], inputs, pixels)
