"""Real pictures without a download, and checkpoints with the original's weights beside them.

scikit-learn ships two photos (`load_sample_images`: a temple in China, a flower) and the
handwritten digits (`load_digits`); the tests write them as ordinary image files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["digit_images", "sample_photos", "write_pair"]


def sample_photos(folder: Path) -> list[Path]:
    """china.jpg and flower.jpg (427x640 RGB) from scikit-learn, written into `folder`."""
    from sklearn.datasets import load_sample_images

    photos = load_sample_images()
    paths = []
    for filename, pixels in zip(photos.filenames, photos.images, strict=True):
        path = folder / Path(filename).name
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


def digit_images(folder: Path, count: int = 2, size: int = 32) -> list[Path]:
    """The first `count` scikit-learn digits, white on black, upscaled, as RGB PNGs."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    paths = []
    for index in range(count):
        grey = np.clip(digits.images[index] * (255.0 / 16.0), 0, 255).astype(np.uint8)
        picture = Image.fromarray(grey).resize((size, size), Image.Resampling.BICUBIC)
        path = folder / f"digit-{int(digits.target[index])}.png"
        picture.convert("RGB").save(path)
        paths.append(path)
    return paths


def write_pair(folder: Path, model: str = "resnet26", size: int = 64) -> tuple[Path, Path]:
    """(checkpoint, original weights) of the shared test conversion, written into `folder`.

    The weights are the original's state_dict (safetensors) taken just before the swap,
    so they load strictly into the model the checkpoint's recipe rebuilds.
    """
    from analysis_testkit import converted_pair
    from safetensors.torch import save_file

    from parc_surgery.checkpoint import save

    pair = converted_pair(model, size)
    checkpoint = folder / f"{model}-parc.safetensors"
    save(pair.converted, pair.plan, checkpoint)
    weights = folder / f"{model}-original.safetensors"
    state = {k: v.contiguous() for k, v in pair.original.state_dict().items()}
    save_file(state, str(weights))
    return checkpoint, weights
