"""The long-range benchmark: does a converted ParC model beat its original where the label
depends on two regions farther apart than the original can see?

    python benchmarks/bench_longrange.py [--out-dir out/longrange] [--seeds 0,1,2]
                                         [--tasks far,near] [--epochs 8] [--arms core]
                                         [--write]

The task (drawn images, written as ImageFolder trees by `write_task`): a 32x544 black strip
holding two 16x16 tiles, each red or green at a random brightness and height; the label is
`same` when both tiles have the same colour, else `different` (balanced). In the `far` task
one tile sits at each end (at least 447 px between them); in the `near` control the two
tiles touch, at a random place. The original, a quarter-width timm ResNet-18 (channels
8-64, deep stem of width 4), sees 439 px (the support of its last feature map's input
gradient, measured by `receptive_field`): no unit of it sees both far tiles, and a global
average pool followed by a linear head adds the two tiles' evidence, which cannot express
"same colour" (an XOR): its ceiling on `far` is 75%, on `near` 100%.

Per task and seed, all through the real CLI (in this process):
1. `train` the original for --epochs (no augmentation, epoch chosen on the holdout);
2. `convert` it with the shipped rules (resnet: the last BasicBlock of stages 3 and 4);
3. recover with `finetune` for --epochs / 2 (its defaults, but no augmentation);
4. train the ParC network from scratch (`convert` of a randomly initialised original, then
   `finetune --no-teacher`) for --epochs with the original's lr schedule;
5. the ablation arms (--arms all): a recovery with a block-wise warm start, labels only (no
   distillation), and distillation from every teacher output (no gate).
Every model is scored with `eval` on the val split (600 strips drawn apart from the
training ones), which nothing reads to choose an epoch; --crop-pct 1.0 everywhere keeps the
tiles at the strip's ends. The ERF (`erf`: share of the input area holding 50% of the
gradient mass of the centre unit, over 32 val strips) of each recovered model is recorded
beside its original's. One thread. Finished runs are appended to out-dir/results.json (a
JSON line each) and skipped when found: a cut-off run resumes. --write renders the section
"## Long-range benchmark" of docs/recovery.md from results.json without training.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from doc_tables import write_section

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "recovery.md"
HEADING = "## Long-range benchmark"
NAME, RULES = "resnet18", "resnet"
H, W, TILE = 32, 544, 16
SIZE = f"{H}x{W}"
MODEL_ARGS = ["channels=[8,16,32,64]", "stem_width=4", "stem_type=deep", "num_classes=2"]
TRAIN_STRIPS, VAL_STRIPS = 8000, 600
# The original's training recipe (train's defaults but augmentation); the scratch arm uses it.
LR = 2e-3

# Recovery arms: finetune flags on top of its defaults (--epochs is set per run).
ARMS = {
    "recovered": [],
    "recovered, warm start 1": ["--warm-start-epochs", "1"],
    "recovered, labels only": ["--distill-weight", "0"],
    "recovered, ungated KD": ["--distill-gate", "none"],
}
SCRATCH = "ParC from scratch"
ORIGINAL = "original"
CORE = ["recovered", SCRATCH]


# ----------------------------------------------------------------------------- the task
def strip(rng: np.random.Generator, task: str) -> tuple[np.ndarray, str]:
    """One HxWx3 strip and its label (`same` / `different` tile colour)."""
    reds = (bool(rng.random() < 0.5), bool(rng.random() < 0.5))
    canvas = np.zeros((H, W, 3), np.uint8)
    if task == "far":
        x0, x1 = int(rng.integers(8, 25)), int(rng.integers(488, 505))
    else:
        x0 = int(rng.integers(8, W - 8 - 2 * TILE + 1))
        x1 = x0 + TILE
    for x, red in zip((x0, x1), reds, strict=True):
        y = int(rng.integers(0, H - TILE + 1))
        canvas[y : y + TILE, x : x + TILE, 0 if red else 1] = int(rng.integers(153, 256))
    return canvas, "same" if reds[0] == reds[1] else "different"


def write_task(target: Path, task: str, *, seed: int = 0) -> Path:
    """target/{train,val}/{same,different}/*.png (skipped when val/ is already there)."""
    from PIL import Image

    if (target / "val").is_dir():
        return target
    rng = np.random.default_rng(seed)
    for split, count in (("train", TRAIN_STRIPS), ("val", VAL_STRIPS)):
        for k in range(count):
            pixels, label = strip(rng, task)
            folder = target / split / label
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(folder / f"{k:05d}.png")
    return target


def receptive_field() -> int:
    """Width in px of the input-gradient support of the original's centre output unit
    (random weights, no zero-initialised last BatchNorm: the theoretical field)."""
    import torch

    from parc_surgery.analysis.erf import erf_map
    from parc_surgery.cli.common import parse_model_args
    from parc_surgery.models import create_model

    torch.manual_seed(0)
    model = create_model(NAME, {**parse_model_args(MODEL_ARGS), "zero_init_last": False})
    grad = erf_map(model.eval(), torch.randn(2, 3, H, 1024))
    columns = torch.nonzero(grad.sum(0) > 0).flatten()
    return int(columns.max() - columns.min() + 1)


# ----------------------------------------------------------------------------- the runs
def cli(*args: str) -> dict:
    """One parc-surgery command in this process, its JSON output."""
    from typer.testing import CliRunner

    from parc_surgery.cli import app

    result = CliRunner().invoke(app, [*args, "--format", "json"])
    if result.exit_code != 0:
        raise RuntimeError(f"{' '.join(args[:2])} exited {result.exit_code}: {result.output}")
    return json.loads(result.stdout)


def model_args() -> list[str]:
    return [flag for arg in MODEL_ARGS for flag in ("--model-arg", arg)]


COMMON = ["-b", "64", "-j", "0", "--threads", "1", "--crop-pct", "1.0", "--no-augment"]


def top1(checkpoint: Path, data: Path, *, original: bool = False) -> float:
    extra = ["--weights", str(checkpoint), *model_args()] if original else []
    source = NAME if original else str(checkpoint)
    # A timm name alone would be evaluated at its pretrained_cfg's 224x224: give the strip's size.
    found = cli("eval", source, "--data", str(data), *extra, "--input-size", SIZE, "-b", "64",
                "-j", "0", "--threads", "1", "--crop-pct", "1.0")  # fmt: skip
    return float(found["top1"])


def erf_share(checkpoint: Path, original: Path, images: Path, png: Path) -> dict[str, float]:
    """Share of the input area holding 50% of the centre unit's gradient, both models."""
    found = cli("erf", str(checkpoint), "--original-weights", str(original), "--images",
                str(images), "-o", str(png), "--force", "--threads", "1")  # fmt: skip
    return {name: found[name]["area_ratio"]["50"] for name in ("original", "converted")}


def run_seed(out: Path, task: str, seed: int, epochs: int, arms: list[str], done: set) -> list:
    data = write_task(out / f"data-{task}", task)
    work = out / task / f"seed{seed}-epochs{epochs}"  # a run at other --epochs trains anew
    work.mkdir(parents=True, exist_ok=True)
    original = work / "original.safetensors"
    rows = []

    def record(arm: str, score: float, start: float, **extra) -> None:
        row = {"task": task, "arm": arm, "seed": seed, "epochs": epochs, "top1": score,
               "s": round(time.perf_counter() - start, 1), **extra}  # fmt: skip
        print(json.dumps(row), file=sys.stderr, flush=True)
        rows.append(row)
        with (out / "results.json").open("a") as f:
            f.write(json.dumps(row) + "\n")

    start = time.perf_counter()
    if not original.is_file():
        cli("train", NAME, "--data", str(data), *model_args(), "--input-size", SIZE,
            "--epochs", str(epochs), "--lr", str(LR), "--seed", str(seed), "-o", str(original),
            "--force", *COMMON)  # fmt: skip
    if (task, ORIGINAL, seed, epochs) not in done:
        record(ORIGINAL, top1(original, data, original=True), start)
    converted = work / "converted.safetensors"
    if not converted.is_file():
        cli("convert", NAME, *model_args(), "--input-size", SIZE, "--rules", RULES,
            "--weights", str(original), "-o", str(converted), "--force")  # fmt: skip
    for arm in arms:
        if (task, arm, seed, epochs) in done:
            continue
        start = time.perf_counter()
        target = work / f"{arm.replace(' ', '_').replace(',', '')}.safetensors"
        if arm == SCRATCH:
            if not target.is_file():  # written whole or not at all: a cut-off run resumes
                fresh = work / "converted-random.safetensors"
                cli("convert", NAME, *model_args(), "--input-size", SIZE, "--rules", RULES,
                    "--seed", str(seed), "-o", str(fresh), "--force")  # fmt: skip
                cli("finetune", str(fresh), "--data", str(data), "--no-teacher", "--epochs",
                    str(epochs), "--lr", str(LR), "--parc-lr-scale", "1", "--lr-warmup-epochs",
                    "1", "--seed", str(seed), "-o", str(target), "--force", *COMMON)  # fmt: skip
            record(arm, top1(target, data), start)
            continue
        flags = ARMS[arm]
        budget = max(1, epochs // 2) - (1 if "--warm-start-epochs" in flags else 0)
        if not target.is_file():
            cli("finetune", str(converted), "--data", str(data), "--teacher-weights",
                str(original), "--epochs", str(budget), "--seed", str(seed), "-o", str(target),
                "--force", *flags, *COMMON)  # fmt: skip
        erf = erf_share(target, original, data / "val" / "same", work / f"{target.stem}-erf.png")
        record(arm, top1(target, data), start, erf50=erf)
    return rows


# ----------------------------------------------------------------------------- the doc
def read_results(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _stats(values: list[float]) -> str:
    return f"{statistics.mean(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def _verdict(ours: list[float], theirs: list[float]) -> str:
    gap = statistics.mean(ours) - statistics.mean(theirs)
    if min(ours) > max(theirs):
        how = "above, the ranges do not overlap"
    elif max(ours) < min(theirs):
        how = "below, the ranges do not overlap"
    else:
        how = "a tie, the ranges overlap"
    return f"{gap:+.2f} ({how})"


def render(rows: list[dict], epochs: int, field: int | None) -> str:
    by: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        if row.get("epochs") == epochs:
            by.setdefault((row["task"], row["arm"]), []).append(row)
    arms = [ORIGINAL, *[a for a in ARMS if a in {arm for _, arm in by}], SCRATCH]
    field_text = f"{field} px" if field else "the measured field"
    lines = [
        f"{HEADING} (benchmarks/bench_longrange.py)",
        "",
        "Does a conversion give a model something its original cannot have? Two 16x16 "
        f"tiles, each red or green, on a black {H}x{W} strip; the label is whether their "
        "colours agree. In **far** one tile sits at each end of the strip (at least 447 px "
        "between them); in **near**, the control, the two touch. The original is a "
        "quarter-width timm ResNet-18 (channels 8-64, deep stem) whose last feature map "
        f"sees {field_text} of input (the support of its input gradient): no unit sees both "
        "far tiles, and its average pool + linear head can only add their evidence, which "
        "cannot say 'same' (an XOR; ceiling 75%). Trained "
        f"{epochs} epochs (no augmentation), converted with the shipped `resnet` rules (the "
        "last BasicBlock of stages 3 and 4 gets a ParC pair: every unit then sees its whole "
        f"row), recovered by `finetune` in {max(1, epochs // 2)} epochs (its defaults, "
        "`--no-augment`); the ParC network is also trained from scratch for "
        f"{epochs} epochs with the original's recipe. {TRAIN_STRIPS:,} training strips "
        f"(10% held out to pick the epoch), {VAL_STRIPS} val strips, reported; val top-1, "
        "mean (min-max) over seeds; CPU, 1 thread. ERF 50%: the share of the input area "
        "holding half the centre unit's input-gradient mass (original -> recovered), over "
        "the val strips. Command: `OMP_NUM_THREADS=1 python benchmarks/bench_longrange.py "
        "&& python benchmarks/bench_longrange.py --write`.",
        "",
        "| model | far: val top-1 | near: val top-1 | seeds | ERF 50% (far) |",
        "|---|---|---|---|---|",
    ]
    for arm in arms:
        cells = []
        for task in ("far", "near"):
            found = by.get((task, arm), [])
            cells.append(_stats([r["top1"] for r in found]) if found else "-")
        per_task = {t: ",".join(str(s) for s in sorted({r["seed"] for r in by.get((t, arm), [])}))
                    for t in ("far", "near")}  # fmt: skip
        seeds = (per_task["far"] if per_task["far"] == per_task["near"]
                 else "; ".join(f"{t} {s or '-'}" for t, s in per_task.items()))  # fmt: skip
        erf = [r["erf50"] for r in by.get(("far", arm), []) if "erf50" in r]
        erf_text = "-"
        if erf:
            before = statistics.mean(e["original"] for e in erf)
            after = statistics.mean(e["converted"] for e in erf)
            erf_text = f"{100 * before:.1f}% -> {100 * after:.1f}%"
        label = f"**{arm}**" if arm == "recovered" else arm
        lines.append(f"| {label} | {cells[0]} | {cells[1]} | "
                     f"{seeds} | {erf_text} |")  # fmt: skip
    lines += ["", "Against the original (mean gap, and whether the seeds' ranges overlap):", ""]
    for arm in arms[1:]:
        parts = []
        for task in ("far", "near"):
            ours = [r["top1"] for r in by.get((task, arm), [])]
            base = [r["top1"] for r in by.get((task, ORIGINAL), [])]
            if ours and base:
                parts.append(f"{task} {_verdict(ours, base)}")
        if parts:
            lines.append(f"- {arm}: {'; '.join(parts)}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out-dir", type=Path, default=ROOT / "out" / "longrange")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--tasks", default="far,near")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--arms", default="core", help="'core', 'all' or comma-separated arms")
    p.add_argument("--write", action="store_true", help="render the docs section and stop")
    args = p.parse_args(argv)
    out = args.out_dir
    results = out / "results.json"
    if args.write:
        field = next((r["field"] for r in read_results(results) if "field" in r), None)
        write_section(render(read_results(results), args.epochs, field), DOC)
        return 0
    import torch

    torch.set_num_threads(1)
    out.mkdir(parents=True, exist_ok=True)
    found = read_results(results)
    if not any("field" in r for r in found):
        with results.open("a") as f:
            f.write(json.dumps({"field": receptive_field()}) + "\n")
    done = {(r["task"], r["arm"], r["seed"], r["epochs"]) for r in found if "task" in r}
    arms = {"core": CORE, "all": [*ARMS, SCRATCH]}.get(args.arms) or args.arms.split(",")
    for seed in [int(s) for s in args.seeds.split(",")]:
        for task in args.tasks.split(","):
            run_seed(out, task, seed, args.epochs, arms, done)
    return 0


if __name__ == "__main__":
    sys.exit(main())
