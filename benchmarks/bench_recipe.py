"""The recipe check: does `finetune`'s default beat plain logit distillation on digits?

    python benchmarks/bench_recipe.py [--out-dir out/recipe] [--seeds 0,1,2]
                                      [--original-epochs 8] [--epochs 4] [--arms a,b]
                                      [--write]

MobileNetV2-0.5 trained from scratch on digits at 64 px (`train_model`, no augmentation,
epoch chosen on the holdout), converted with the shipped mobilenetv2 rules, then
recovered with the same epoch budget (--epochs, warm-start epochs included) by each arm:
the real `parc-surgery finetune` CLI (in this process, with the arm's flags on top of its
defaults) or a plain loop (CE + T^2 KL, T=2, AdamW 5e-4, no warm start, no augmentation,
last epoch). Every arm trains on the same images (the training split less finetune's 10%
selection holdout) and is scored on the val split, which nothing reads to choose. One
thread. Each finished run is appended to out-dir/results.json (one JSON line), and runs
already there are skipped: a cut-off run resumes. --write renders the section
"## Recipe vs plain distillation" of docs/recovery.md from results.json (mean and range
per arm over the seeds found) without training.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from doc_tables import write_section

ROOT = Path(__file__).resolve().parent.parent
NAME, RULES, SIZE = "mobilenetv2_050", "mobilenetv2", 64
DOC = ROOT / "docs" / "recovery.md"
HEADING = "## Recipe vs plain distillation"
PLAIN = "plain KD loop"

# The finetune options an arm may change (flag -> its value in results.json's settings).
TRACKED = ("--warm-start-epochs", "--feature-distill-weight", "--parc-lr-scale", "--scale",
           "--hflip", "--augment")  # fmt: skip
# Arms: overrides of the CLI defaults. --epochs is always the budget less the warm start.
ARMS = {
    "warm start 0": {"--warm-start-epochs": 0},
    "warm start 1": {"--warm-start-epochs": 1},
    "ParC lr x1": {"--parc-lr-scale": 1.0},
    "feature distillation 1": {"--feature-distill-weight": 1.0},
    "ParC lr x3": {"--parc-lr-scale": 3.0},
    "old augmentation (scale 0.08, hflip 0.5)": {"--scale": 0.08, "--hflip": 0.5},
    "no augmentation": {"--augment": False},
}
CORE = ["warm start 0", "warm start 1", PLAIN]


def digits(out: Path) -> Path:
    target = out / "digits"
    if not (target / "val").is_dir():
        spec = importlib.util.spec_from_file_location("md", ROOT / "examples/make_digits.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.write_digits(target, size=SIZE)
    return target


def cli_defaults() -> dict[str, object]:
    """The finetune command's defaults of the TRACKED options (what 'defaults' means)."""
    import typer.main

    from parc_surgery.cli import app

    command = typer.main.get_command(app).commands["finetune"]
    found = {opt: p.default for p in command.params for opt in getattr(p, "opts", [])}
    return {flag: found[flag] for flag in TRACKED}


def settings_of(overrides: dict[str, object], defaults: dict[str, object]) -> dict[str, object]:
    return {flag: overrides.get(flag, defaults[flag]) for flag in TRACKED}


def flags_of(settings: dict[str, object], epochs: int) -> list[str]:
    """CLI flags for `settings` with a budget of `epochs` (warm start included)."""
    flags = ["--epochs", str(epochs - int(settings["--warm-start-epochs"]))]
    for flag, value in settings.items():
        if flag == "--augment":
            flags.append("--augment" if value else "--no-augment")
        else:
            flags += [flag, str(value)]
    return flags


def plain_kd(converted: Path, teacher_weights: Path, data, epochs: int, seed: int) -> float:
    """CE + T^2 KL(T=2), AdamW 5e-4 constant, no warm start, no augmentation, last epoch."""
    from safetensors.torch import load_file

    import parc_surgery as ps
    from parc_surgery.train.distributed import init_distributed
    from parc_surgery.train.run import prepare_data

    torch.manual_seed(seed)
    student = ps.load(converted)
    teacher = ps.create_model(NAME, {"num_classes": 10})
    teacher.load_state_dict(load_file(str(teacher_weights)))
    teacher.eval()
    sets = prepare_data(student, data, (SIZE, SIZE), init_distributed(), seed=seed)
    opt = torch.optim.AdamW(student.parameters(), lr=5e-4, weight_decay=0.05)
    for epoch in range(epochs):
        sets.train.sampler.set_epoch(epoch)
        student.train()
        for images, targets in sets.train:
            with torch.no_grad():
                soft = F.log_softmax(teacher(images) / 2, -1)
            logits = student(images)
            kl = F.kl_div(
                F.log_softmax(logits / 2, -1), soft, log_target=True, reduction="batchmean"
            )
            loss = F.cross_entropy(logits, targets) + 4 * kl
            opt.zero_grad()
            loss.backward()
            opt.step()
    student.eval()
    correct = total = 0
    with torch.no_grad():
        for images, targets in sets.val:
            correct += int((student(images).argmax(-1) == targets).sum())
            total += len(targets)
    return 100.0 * correct / total


def finetune_cli(converted: Path, weights: Path, root: Path, output: Path, flags, seed: int):
    """`parc-surgery finetune` with the arm's flags (the CLI's defaults otherwise)."""
    from typer.testing import CliRunner

    from parc_surgery.cli import app

    args = ["finetune", str(converted), "--data", str(root), "--teacher-weights", str(weights),
            "-o", str(output), "--force", "-j", "0", "-b", "32", "--threads", "1",
            "--seed", str(seed), "--format", "json", *flags]  # fmt: skip
    result = CliRunner().invoke(app, args)
    if result.exit_code != 0:
        raise RuntimeError(f"finetune {' '.join(flags)} exited {result.exit_code}: {result.output}")
    return json.loads(result.stdout)


def read_results(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _stats(values: list[float]) -> str:
    return f"{statistics.mean(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def label_of(settings: dict[str, object] | None, defaults: dict[str, object]) -> str:
    """An arm's name: how its settings differ from finetune's current defaults."""
    if settings is None:
        return PLAIN
    changed = [
        ("--no-augment" if not v else "--augment") if f == "--augment" else f"{f} {v}"
        for f, v in settings.items()
        if v != defaults[f]
    ]
    return " ".join(changed) if changed else "finetune defaults"


def render(rows: list[dict], epochs: int, defaults: dict[str, object]) -> str:
    """The docs section: one line per configuration, mean and range over its seeds."""
    by_arm: dict[str, list[dict]] = {}
    for row in rows:
        if row.get("epochs") == epochs:
            by_arm.setdefault(label_of(row.get("settings"), defaults), []).append(row)
    default_settings = settings_of({}, defaults)
    default_arm = "finetune defaults"
    originals = sorted({row["original"] for row in rows})
    plain = [r["top1"] for r in by_arm.get(PLAIN, [])]
    default = [r["top1"] for r in by_arm.get(default_arm, [])]
    shown = ", ".join(f"`{f} {v}`" for f, v in default_settings.items())
    lines = [
        f"{HEADING} (benchmarks/bench_recipe.py)",
        "",
        f"MobileNetV2-0.5 on digits at 64 px (1,293 training images after the 10% selection "
        f"holdout, 360 val), original trained 8 epochs without augmentation "
        f"({', '.join(f'{o:.2f}' for o in originals)}% val top-1), converted with the shipped "
        f"`mobilenetv2` rules, then recovered with {epochs} epochs per arm (warm-start epochs "
        "included) by the real `parc-surgery finetune` CLI (its defaults but the arm's "
        "change; epoch chosen on the holdout) or by a plain loop (CE + T^2 KL, T=2, AdamW "
        "5e-4, no warm start, no augmentation, last epoch). Val top-1, mean (min-max) over "
        "the seeds; CPU, 1 thread, batch 32. Command: `OMP_NUM_THREADS=1 python "
        "benchmarks/bench_recipe.py --arms all && python benchmarks/bench_recipe.py --write`. "
        f"finetune's defaults: {shown}.",
        "",
        "| recovery (change from finetune's defaults) | seeds | val top-1, mean (range) "
        "| vs plain KD |",
        "|---|---|---|---|",
    ]
    for arm in sorted(by_arm, key=lambda a: (a != default_arm, a == PLAIN, a)):
        found = by_arm[arm]
        values = [r["top1"] for r in found]
        gap = f"{statistics.mean(values) - statistics.mean(plain):+.2f}" if plain else "-"
        seeds = ",".join(str(r["seed"]) for r in sorted(found, key=lambda r: r["seed"]))
        label = f"**{arm}**" if arm == default_arm else arm
        lines.append(f"| {label} | {seeds} | {_stats(values)} | {gap} |")
    if default:
        lines += ["", "finetune's defaults against each other configuration (mean; a gap "
                  "inside the seeds' ranges is a tie):", ""]  # fmt: skip
        for arm in sorted(a for a in by_arm if a != default_arm):
            values = [r["top1"] for r in by_arm[arm]]
            lines.append(f"- vs {arm}: {_verdict(default, values)}")
    lines += ["", WHY]
    return "\n".join(lines) + "\n"


def _verdict(ours: list[float], theirs: list[float]) -> str:
    gap = statistics.mean(ours) - statistics.mean(theirs)
    if min(ours) > max(theirs):
        how = "above (the ranges do not overlap)"
    elif max(ours) < min(theirs):
        how = "below (the ranges do not overlap)"
    else:
        how = "a tie (the ranges overlap)"
    return f"{statistics.mean(ours):.2f} vs {statistics.mean(theirs):.2f} ({gap:+.2f}), {how}"


WHY = (
    "Why these defaults. Augmentation: timm's ImageNet default (RandomResizedCrop down to "
    "8% of the image, horizontal flips) crops small digits apart and mirrors them; it "
    "scored about 5 points under `--scale 0.5 --hflip 0`, and no augmentation about 7. "
    "Warm start: at an equal epoch budget a block-wise warm-start epoch is one fine-tune "
    "epoch less; with the lr x1 it was 0.7 below no warm start (a tie within the seeds' "
    "ranges, but never ahead on a seed), so it is off by default (`--warm-start-epochs 1` "
    "turns it on). The new blocks' lr x3 (`--parc-lr-scale 3`) had the best mean of the "
    "configurations measured (a tie too, ahead or level on every seed); feature "
    "distillation in phase 2 (`--feature-distill-weight 1`) did not help here and is off "
    "by default. Teacher and student always see the same augmented batch (tested). The "
    "plain loop keeps its last epoch, finetune its holdout-best one; both are scored on "
    "val only."
)


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out-dir", type=Path, default=ROOT / "out" / "recipe")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--original-epochs", type=int, default=8)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--arms", default="core", help="'core', 'all' or comma-separated labels")
    p.add_argument("--write", action="store_true", help="render the docs section and stop")
    args = p.parse_args(argv)
    out = args.out_dir
    results = out / "results.json"
    n = args.epochs
    defaults = cli_defaults()
    if args.write:
        write_section(render(read_results(results), n, defaults), DOC)
        return 0
    import parc_surgery as ps
    from parc_surgery.train import DataConfig, TrainConfig, evaluate_source, train_model

    torch.set_num_threads(1)
    out.mkdir(parents=True, exist_ok=True)
    root = digits(out)
    plain = DataConfig(root=root, batch_size=32, workers=0, input_size=(SIZE, SIZE))
    plain = replace(plain, augment=False)
    weights = out / "original.safetensors"
    if not weights.is_file():
        from safetensors.torch import save_file

        torch.manual_seed(0)
        model = ps.create_model(NAME, {"num_classes": 10})
        cfg = TrainConfig(epochs=args.original_epochs, warmup_epochs=0, lr=4e-3, seed=0)
        train_model(model, plain, cfg)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    original = evaluate_source(NAME, plain, weights=weights, model_args={"num_classes": 10})
    converted = out / "converted.safetensors"
    if not converted.is_file():
        ps.convert(NAME, model_args={"num_classes": 10}, input_size=(SIZE, SIZE), rules=RULES,
                   weights=str(weights), output=str(converted), force=True)  # fmt: skip
    labels = {"core": CORE, "all": [*ARMS, PLAIN]}.get(args.arms) or args.arms.split(",")
    # A run is identified by its settings (not its arm's name): a change of the CLI
    # defaults re-runs the arms whose settings it changes, and keeps the others.
    done = {
        (json.dumps(r.get("settings"), sort_keys=True), r["seed"], r.get("epochs"))
        for r in read_results(results)
    }
    for seed in [int(s) for s in args.seeds.split(",")]:
        for arm in labels:
            settings = None if arm == PLAIN else settings_of(ARMS[arm], defaults)
            if (json.dumps(settings, sort_keys=True), seed, n) in done:
                continue
            start = time.perf_counter()
            if arm == PLAIN:
                top1 = plain_kd(converted, weights, plain, n, seed)
            else:
                target = out / f"ft-{seed}.safetensors"
                finetune_cli(converted, weights, root, target, flags_of(settings, n), seed)
                top1 = evaluate_source(target, plain).result.top1
            seconds = round(time.perf_counter() - start, 1)
            row = {"arm": arm, "seed": seed, "epochs": n, "top1": top1, "settings": settings,
                   "original": original.result.top1, "s": seconds}  # fmt: skip
            print(json.dumps(row), file=sys.stderr, flush=True)
            with results.open("a") as f:
                f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
