"""The Grad-CAM figure and numbers of docs/recovery.md: a trained original vs its recovery.

    python benchmarks/cam_figure.py ORIGINAL_WEIGHTS CHECKPOINT IMAGES... [--per-class 1]
        [--method gradcam] [--out docs/images/cam-digits.png] [--json FILE] [--force]

ORIGINAL_WEIGHTS is the trained original's state_dict (the teacher); CHECKPOINT the
recovered parc-surgery checkpoint. IMAGES are image files or folders; a folder laid out
as an ImageFolder split (`examples/make_digits.py OUT` writes OUT/val/<digit>/*.png)
gives its first --per-class images of each class, and the class folder's name is kept
as each image's "label". The original is rebuilt from the checkpoint's recipe and loaded
strictly with ORIGINAL_WEIGHTS, exactly as `parc-surgery cam` does; the script writes
the PNG, the JSON (the cam command's, plus labels) and prints a Markdown table of the
numbers to paste under the figure.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from parc_surgery.analysis.cam import CAM_METHODS, cam_of_pair, require_extra
from parc_surgery.analysis.cam_plot import write_cam_png
from parc_surgery.analysis.erf import IMAGE_SUFFIXES
from parc_surgery.analysis.pair import checkpoint_pair
from parc_surgery.analysis.render import json_ready
from parc_surgery.checkpoint import atomic_write
from parc_surgery.errors import ParcSurgeryError, UsageError

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "docs" / "images" / "cam-digits.png"


def pick_images(sources: list[Path], per_class: int) -> list[tuple[Path, str | None]]:
    """(path, label) for each file; per class folder of a directory, its first images."""
    picked: list[tuple[Path, str | None]] = []
    for source in sources:
        if not source.is_dir():
            picked.append((source, None))
            continue
        classes = sorted(p for p in source.iterdir() if p.is_dir())
        if not classes:  # a plain folder of pictures
            picked += [(p, None) for p in _images_in(source)]
        for folder in classes:
            picked += [(p, folder.name) for p in _images_in(folder)[:per_class]]
    if not picked:
        raise UsageError(f"no images in {', '.join(map(str, sources))}")
    return picked


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def _pct(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value * 100:.1f}%"


def markdown_table(result: dict) -> str:
    """One row per image: label, each model's class and map numbers, the IoU."""
    lines = [
        "| image | label | original: class (p) | mass 50% / 90% | entropy "
        "| converted: class (p) | mass 50% / 90% | entropy | IoU top-20% |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def cells(model: dict) -> list[str]:
        ratio = model["area_ratio"]
        return [
            f"{model['predicted_class']} ({model['probability']:.2f})",
            f"{_pct(ratio['50'])} / {_pct(ratio['90'])}",
            f"{model['entropy']:.3f}",
        ]

    for entry in result["images"]:
        row = [Path(entry["image"]).name, entry.get("label") or ""]
        row += cells(entry["original"]) + cells(entry["converted"]) + [_pct(entry["iou_top20"])]
        lines.append("| " + " | ".join(row) + " |")
    mean = result["mean"]
    row = ["mean", ""]
    for name in ("original", "converted"):
        ratio = mean[name]["area_ratio"]
        row += ["", f"{_pct(ratio['50'])} / {_pct(ratio['90'])}", f"{mean[name]['entropy']:.3f}"]
    lines.append("| " + " | ".join(row + [_pct(mean["iou_top20"])]) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("original_weights", type=Path)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("images", type=Path, nargs="+")
    parser.add_argument("--per-class", type=int, default=1)
    parser.add_argument("--method", choices=sorted(CAM_METHODS), default="gradcam")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--json", type=Path, default=None, help="default: --out with .json")
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)
    try:
        require_extra("benchmarks/cam_figure.py")
        picked = pick_images(args.images, args.per_class)
        pair = checkpoint_pair(args.checkpoint, original_weights=args.original_weights)
        for warning in pair.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        result, batch, maps = cam_of_pair(pair, [p for p, _ in picked], method=args.method)
        for entry, (_, label) in zip(result["images"], picked, strict=True):
            entry["label"] = label
        json_path = args.json or args.out.with_suffix(".json")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        result["output"] = write_cam_png(result, batch.pixels, maps, args.out, force=args.force)
        with atomic_write(json_path, force=args.force) as tmp:
            Path(tmp).write_text(json.dumps(json_ready(result), indent=2) + "\n")
    except ParcSurgeryError as err:
        print(f"error: {err.message}", file=sys.stderr)
        return err.exit_code
    print(markdown_table(result))
    print(f"wrote {args.out} and {json_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
