"""INT8 accuracy on real images: does `export --quantize int8` keep a trained converted
model's top-1?

    python benchmarks/bench_int8.py [--out-dir out/int8] [--seeds 0,1,2] [--epochs 10]
                                    [--only ResNet50,...] [--threads 1] [--write]

The latency half of the INT8 target (>= 1.5x over FP32 onnxruntime) is bench_onnx.py's
`--int8`; this script measures the other half, top-1 within 0.5 points, on the three
models of that target row: ResNet50, MobileNetV2 and ViT-S/16, converted with their shipped
rules (`vit` turns every attention into ParC on the token grid).

Per model and seed, all through the real CLI (in this process), on scikit-learn's digits
at 64x64 (`examples/make_digits.py`: 1,437 train / 360 val images):
1. `convert` a randomly initialised original (10 classes, 64x64; ViT-S/16 with
   `img_size=64`, a 4x4 token grid);
2. `finetune --no-teacher` it for --epochs on digits/train (`train`'s lr 2e-3 and 1-epoch
   warm-up, batch 32, finetune's defaults otherwise; the epoch is chosen on finetune's
   holdout of the train split);
3. `export --quantize int8 --calibration-data digits`: static QDQ calibrated on up to 256
   train images; it reports FP32 and INT8 top-1 on the 360 val images, which nothing above
   read.
Rows are appended to out-dir/results.json (a JSON line each) and skipped when found: a
cut-off run resumes. --write renders the section "## INT8 on digits" of docs/benchmarks.md
from results.json without training.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from bench_longrange import cli, read_results
from doc_tables import write_section

ROOT = Path(__file__).resolve().parent.parent
HEADING = "## INT8 on digits (benchmarks/bench_int8.py)"
SIZE = 64
TOLERANCE = 0.5  # points: the "digits top-1 within 0.5 points"
# From scratch: `train`'s lr and warm-up (finetune's defaults are for a trained model), one lr
# for every parameter, finetune's augmentation (scale 0.5, no flip: digits are not symmetric).
RECIPE = ["--lr", "2e-3", "--parc-lr-scale", "1", "--lr-warmup-epochs", "1", "-b", "32"]
# (label, timm name, model args)
MODELS = [
    ("ResNet50", "resnet50", []),
    ("MobileNetV2", "mobilenetv2_100", []),
    ("ViT-S/16", "vit_small_patch16_224", ["img_size=64"]),
]


def digits(out: Path) -> Path:
    """examples/make_digits.py's tree at SIZE, written once (1,437 train / 360 val)."""
    target = out / "digits"
    if not (target / "val").is_dir():
        if str(ROOT / "examples") not in sys.path:
            sys.path.insert(0, str(ROOT / "examples"))
        from make_digits import write_digits

        write_digits(target, size=SIZE)
    return target


def run(out: Path, label: str, name: str, extra: list[str], seed: int, epochs: int,
        threads: int) -> dict:  # fmt: skip
    data = digits(out)
    work = out / name / f"seed{seed}-epochs{epochs}"  # a run at other --epochs trains anew
    work.mkdir(parents=True, exist_ok=True)
    args = [a for arg in ["num_classes=10", *extra] for a in ("--model-arg", arg)]
    common = ["-j", "0", "--threads", str(threads), "--force"]
    start = time.perf_counter()
    fresh, trained = work / "converted-random.safetensors", work / "trained.safetensors"
    if not trained.is_file():  # written whole or not at all: a cut-off run resumes
        cli("convert", name, *args, "--input-size", str(SIZE), "--seed", str(seed),
            "-o", str(fresh), "--force")  # fmt: skip
        cli("finetune", str(fresh), "--data", str(data), "--no-teacher", "--epochs",
            str(epochs), *RECIPE, "--seed", str(seed), "-o", str(trained), *common)  # fmt: skip
    trained_s = time.perf_counter() - start
    found = cli("export", str(trained), "-o", str(work / "int8.onnx"), "--quantize", "int8",
                "--calibration-data", str(data), "--threads", str(threads), "--force")  # fmt: skip
    return {
        "model": label, "seed": seed, "epochs": epochs, "fp32_top1": found["fp32_top1"],
        "int8_top1": found["int8_top1"], "val_images": found["val_images"],
        "calibration_images": found["calibration_images"], "int8_bytes": found["bytes"],
        "fp32_bytes": found["fp32_bytes"], "train_s": round(trained_s, 1),
    }  # fmt: skip


def _stats(values: list[float]) -> str:
    return f"{statistics.mean(values):.2f} ({min(values):.2f} to {max(values):.2f})"


def render(rows: list[dict], epochs: int) -> str:
    by: dict[str, list[dict]] = {}
    for row in rows:
        if row.get("epochs") == epochs:
            by.setdefault(row["model"], []).append(row)
    lines = [
        HEADING,
        "",
        "Top-1 of the FP32 ONNX export and of its INT8 QDQ form (`export --quantize int8 "
        "--calibration-data digits`, calibrated on 256 train images) of the same converted "
        f"model, on the 360 digits val images at {SIZE}x{SIZE}. Each model is converted from a "
        f"random original with its shipped rules and trained for {epochs} epochs (`finetune "
        "--no-teacher --lr 2e-3 -b 32`, epoch chosen on its holdout of the train split); the "
        "val images are read only here. Mean and range over seeds; one image is 0.28 "
        f"points. Target: INT8 within {TOLERANCE} points of FP32.",
        "",
        "| model | seeds | FP32 top-1 | INT8 top-1 | INT8 - FP32 (points) | met | "
        "INT8 / FP32 size |",
        "|---|---|---:|---:|---:|:---:|---:|",
    ]
    for label, _, _ in MODELS:
        found = sorted(by.get(label, []), key=lambda r: r["seed"])
        if not found:
            lines.append(f"| {label} | - | not run | | | | |")
            continue
        fp32 = [r["fp32_top1"] for r in found]
        int8 = [r["int8_top1"] for r in found]
        diffs = [b - a for a, b in zip(fp32, int8, strict=True)]
        met = "yes" if all(abs(d) <= TOLERANCE + 1e-9 for d in diffs) else "no"
        size = statistics.mean(r["int8_bytes"] / r["fp32_bytes"] for r in found)
        seeds = ",".join(str(r["seed"]) for r in found)
        lines.append(
            f"| {label} | {seeds} | {_stats(fp32)} | {_stats(int8)} | {_stats(diffs)} | "
            f"{met} | {size:.2f} |"
        )
    lines += ["", "`met` asks it of every seed, not of the mean."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out-dir", type=Path, default=ROOT / "out" / "int8")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--only", default="", help="comma-separated labels (default: all)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--write", action="store_true", help="render the docs section and stop")
    args = p.parse_args(argv)
    results = args.out_dir / "results.json"
    if args.write:
        write_section(render(read_results(results), args.epochs))
        return 0
    args.out_dir.mkdir(parents=True, exist_ok=True)
    done = {(r["model"], r["seed"], r["epochs"]) for r in read_results(results)}
    only = set(filter(None, args.only.split(",")))
    for seed in [int(s) for s in args.seeds.split(",")]:
        for label, name, extra in MODELS:
            if (only and label not in only) or (label, seed, args.epochs) in done:
                continue
            row = run(args.out_dir, label, name, extra, seed, args.epochs, args.threads)
            print(json.dumps(row), file=sys.stderr, flush=True)
            with results.open("a") as f:
                f.write(json.dumps(row) + "\n")
    print(render(read_results(results), args.epochs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
