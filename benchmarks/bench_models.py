"""Time the shipped conversions against their originals; the table of docs/benchmarks.md.

    python benchmarks/bench_models.py [--threads 2] [--runs 30] [--write] [--profile 15]
                                      [--only resnet50,...] [--impl auto]

Each model is converted with its shipped rules at 224x224 and both versions are timed at
batch 1 in eval mode under torch.inference_mode, in alternating rounds after a warm-up
(see parc_surgery.analysis.bench). --write replaces the "## Converted models" section of
docs/benchmarks.md (other sections are kept). --profile N prints the N ops that cost the
converted model the most self CPU time (torch.profiler).
"""

from __future__ import annotations

import argparse
import datetime
import platform
import subprocess
from pathlib import Path

import torch

from parc_surgery.analysis.bench import bench_pair, using_threads
from parc_surgery.analysis.pair import convert_pair
from parc_surgery.report import human_count

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
SECTION = "## Converted models (benchmarks/bench_models.py)"
INPUT_SIZE = (224, 224)

# (label, timm name, model args, target converted/original latency, official ParC's ratio)
MODELS = [
    ("ResNet50", "resnet50", {}, 0.95, 0.97),
    ("MobileNetV2", "mobilenetv2_100", {}, 1.00, 1.09),
    ("ConvNeXt-XT", "convnext_tiny", {"dims": (48, 96, 192, 384)}, 0.98, 1.06),
    # mobilevit_s's pretrained_cfg says 256; the published comparison is at 224.
    ("MobileViT-S", "mobilevit_s", {}, 0.85, None),
]


def machine_name() -> str:
    """lscpu's model name, else platform's processor string."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        text = ""
    for line in text.splitlines():
        if line.lower().startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def bench_one(name: str, model_args: dict, args: argparse.Namespace) -> dict:
    pair = convert_pair(name, model_args=model_args, input_size=INPUT_SIZE)
    result = bench_pair(
        pair.original,
        pair.converted,
        INPUT_SIZE,
        batch=1,
        threads=args.threads,
        impl=args.impl,
        runs=args.runs,
        warmup=args.warmup,
    )
    result["stages"] = pair.stages_label
    result["swaps"] = len(pair.plan.swaps)
    if args.profile:
        print(profile_table(pair.converted, args.threads, args.profile, args.impl))
    return result


def profile_table(model, threads: int, rows: int, impl: str) -> str:
    """The ops with the most self CPU time over a few inference runs of `model`."""
    import contextlib

    from torch.profiler import ProfilerActivity, profile

    from parc_surgery.ops import forced_impl

    x = torch.randn(1, 3, *INPUT_SIZE)
    forcing = contextlib.nullcontext() if impl == "auto" else forced_impl(impl)
    with using_threads(threads), forcing, torch.inference_mode():
        for _ in range(3):
            model(x)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(5):
                model(x)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def _ratio_cell(value: float) -> str:
    return f"{value:.3f}"


def markdown(rows: list[tuple[str, float, float | None, dict]], args) -> str:
    """The section: how it was measured, then one row per model."""
    today = datetime.date.today().isoformat()
    lines = [
        SECTION,
        "",
        f"Measured {today} on {machine_name()}, {args.threads} threads, torch "
        f"{torch.__version__}, batch 1, {INPUT_SIZE[0]}x{INPUT_SIZE[1]}, eval mode under "
        f"torch.inference_mode, ParC backend `{args.impl}`. Latency is the median of "
        f"{args.runs} runs after {args.warmup} warm-up runs, the two models timed in "
        "alternating rounds; the spread is min-max, and the ratio of the minima is the "
        "steadier figure on a shared machine. MACs from torch.utils.flop_counter "
        "(ParC counted in its spatial form). Target and official columns are "
        "converted / original latency (official: the ParC-Net authors' models on this "
        "project's CPU, PARC.md section 5).",
        "",
        "| model | stages | swaps | params | MACs | original ms | converted ms "
        "| latency ratio | ratio of minima | target | official ParC | meets target |",
        "|---|---|---:|---|---|---:|---:|---:|---:|---:|---:|:---:|",
    ]
    for label, target, official, r in rows:
        orig, conv, ratio = r["original"], r["converted"], r["ratios"]
        lat_o, lat_c = orig["latency_ms"], conv["latency_ms"]
        lines.append(
            f"| {label} | {r['stages']} | {r['swaps']} "
            f"| {human_count(orig['params'])} -> {human_count(conv['params'])} "
            f"({_ratio_cell(ratio['params'])}) "
            f"| {human_count(orig['macs'])} -> {human_count(conv['macs'])} "
            f"({_ratio_cell(ratio['macs'])}) "
            f"| {lat_o['median']:.2f} ({lat_o['min']:.2f}-{lat_o['max']:.2f}) "
            f"| {lat_c['median']:.2f} ({lat_c['min']:.2f}-{lat_c['max']:.2f}) "
            f"| **{ratio['latency']:.3f}** | {ratio['latency_min']:.3f} | {target:.2f} "
            f"| {'-' if official is None else f'{official:.2f}'} "
            f"| {'yes' if ratio['latency'] <= target else 'no'} |"
        )
    if args.note:
        lines += ["", args.note.strip()]
    return "\n".join(lines) + "\n"


def write_section(text: str, path: Path = DOC) -> None:
    """Replace this script's section of `path` (or append it); other sections stay."""
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    start = old.find(SECTION)
    if start < 0:
        new = old.rstrip("\n") + "\n\n" + text
    else:
        end = old.find("\n## ", start + len(SECTION))
        tail = "" if end < 0 else old[end + 1 :]
        new = old[:start] + text + ("\n" + tail if tail else "")
    path.write_text(new)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--runs", type=int, default=30, help="timed runs per model")
    parser.add_argument("--warmup", type=int, default=5, help="untimed runs first")
    parser.add_argument("--impl", default="auto", help="ParC backend: auto|spatial|fft|circulant")
    parser.add_argument("--only", default="", help="comma-separated labels or timm names")
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="print the N most expensive ops of each converted model",
    )
    parser.add_argument("--write", action="store_true", help=f"update {DOC.name}")
    parser.add_argument("--note", default="", help="a sentence to add under the table")
    args = parser.parse_args()
    wanted = {w.strip().lower() for w in args.only.split(",") if w.strip()}
    rows = []
    for label, name, model_args, target, official in MODELS:
        if wanted and label.lower() not in wanted and name not in wanted:
            continue
        print(f"{label}: converting and timing {name} ...", flush=True)
        result = bench_one(name, model_args, args)
        print(
            f"  latency {result['original']['latency_ms']['median']:.2f} -> "
            f"{result['converted']['latency_ms']['median']:.2f} ms "
            f"(ratio {result['ratios']['latency']:.3f}, target {target:.2f})",
            flush=True,
        )
        rows.append((label, target, official, result))
    text = markdown(rows, args)
    print()
    print(text)
    if args.write:
        write_section(text)
        print(f"wrote the section to {DOC}")


if __name__ == "__main__":
    main()
