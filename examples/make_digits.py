"""Write scikit-learn's handwritten digits as an ImageFolder tree parc-surgery can train on.

    python examples/make_digits.py OUT_DIR [--size 64] [--val-fraction 0.2] [--seed 0]
                                   [--per-class N] [--pad 1]

writes OUT_DIR/train/<digit>/<index>.png and OUT_DIR/val/<digit>/<index>.png: the 1,797
real 8x8 images of `sklearn.datasets.load_digits` (bundled with scikit-learn, nothing is
downloaded), split per class (stratified, seeded), drawn white on black, upscaled with
bicubic interpolation to SIZE x SIZE and saved as RGB PNGs. Each digit is first framed by
`--pad` (default 1) black source pixels on every side, so the ink fills the central 80%
and timm's centre crop at eval (crop_pct 0.875 or more) never cuts into a digit.
`--per-class N` keeps only the first N images of each class before the split (small sets for
tests).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

__all__ = ["write_digits"]


def write_digits(
    out_dir: str | Path,
    *,
    size: int = 64,
    val_fraction: float = 0.2,
    seed: int = 0,
    per_class: int | None = None,
    pad: int = 1,
) -> dict[str, dict[str, int]]:
    """Write the tree; returns {split: {class: count}}."""
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images, labels = digits.images, digits.target
    if per_class is not None:
        keep = np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in range(10)])
        keep.sort()
        images, labels = images[keep], labels[keep]
    index = np.arange(len(labels))
    train_idx, val_idx = train_test_split(
        index, test_size=val_fraction, stratify=labels, random_state=seed
    )
    out = Path(out_dir)
    counts: dict[str, dict[str, int]] = {}
    for split, chosen in (("train", train_idx), ("val", val_idx)):
        counts[split] = {}
        for i in sorted(chosen):
            label = str(int(labels[i]))
            folder = out / split / label
            folder.mkdir(parents=True, exist_ok=True)
            # load_digits pixels are 0..16 ink; scale to 0..255, grey replicated to RGB.
            grey = np.clip(images[i] * (255.0 / 16.0), 0, 255).astype(np.uint8)
            grey = np.pad(grey, pad)  # a black frame: the eval crop keeps the digit whole
            picture = Image.fromarray(grey).resize((size, size), Image.Resampling.BICUBIC)
            picture.convert("RGB").save(folder / f"{i:04d}.png")
            counts[split][label] = counts[split].get(label, 0) + 1
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-class", type=int, default=None)
    parser.add_argument("--pad", type=int, default=1, help="black source pixels around each digit")
    args = parser.parse_args(argv)
    if any((args.out_dir / split).exists() for split in ("train", "val")):
        print(f"error: {args.out_dir} already holds train/ or val/", file=sys.stderr)
        return 7
    counts = write_digits(
        args.out_dir,
        size=args.size,
        val_fraction=args.val_fraction,
        seed=args.seed,
        per_class=args.per_class,
        pad=args.pad,
    )
    for split, per_class in counts.items():
        print(f"{split}: {sum(per_class.values())} images in {len(per_class)} classes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
