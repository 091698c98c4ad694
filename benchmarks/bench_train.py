"""Training-step cost of the shipped conversions: the table of docs/benchmarks.md.

    python benchmarks/bench_train.py [--threads 2] [--batch 32] [--runs 5] [--warmup 2]
                                     [--only resnet50,...] [--device cpu] [--write]

One training step = forward, cross-entropy on random labels, backward and an SGD step
(timm's create_optimizer_v2), batch 32 at 224x224, fp32, both models in train mode,
timed in alternating rounds after warm-up steps (parc_surgery.analysis.bench_train; the
same as `parc-surgery bench MODEL --train`). Target (issue 13): converted / original at
most 1.05. --write replaces this script's section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import sys

from doc_tables import MODELS, add_timing_arguments, machine_line, selected, write_section

from parc_surgery.analysis.bench_train import bench_train_pair
from parc_surgery.analysis.pair import convert_pair

SECTION = "## Training step (benchmarks/bench_train.py)"
INPUT_SIZE = (224, 224)
TARGET = 1.05


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_timing_arguments(parser, runs=5, warmup=2)
    parser.add_argument("--batch", type=int, default=32, help="batch size")
    args = parser.parse_args()
    command = "python benchmarks/bench_train.py " + " ".join(
        a for a in sys.argv[1:] if a != "--write"
    )
    lines = [
        SECTION,
        "",
        f"{machine_line(args.threads, args.device)}, device {args.device}, batch "
        f"{args.batch}, {INPUT_SIZE[0]}x{INPUT_SIZE[1]}, fp32, train mode; one step = "
        "forward + cross-entropy + backward + SGD step (momentum 0.9); median "
        f"({'CPU time of the one thread' if args.clock == 'cpu' else 'wall time'}) of "
        f"{args.runs} steps after {args.warmup} warm-up steps, the two models in "
        f"alternating rounds. ParC backend `{args.impl}` (with grad, auto reads the "
        f"calibration's forward + backward entries). Target: at most {TARGET:.2f}. "
        f"Command: `{command}`",
        "",
        "| model | stages | swaps | MACs ratio | original step ms | converted step ms "
        "| step ratio | ratio of minima | target | met |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|:---:|",
    ]
    for (label, name, model_args, rules, _, _, _), missing in selected(MODELS, args.only):
        if missing:
            lines.append(f"| {missing} | | | | | | | | | |")
            continue
        print(f"{label}: converting and timing training steps of {name} ...", flush=True)
        pair = convert_pair(name, model_args=model_args, input_size=INPUT_SIZE, rules=rules)
        r = bench_train_pair(
            pair.original,
            pair.converted,
            INPUT_SIZE,
            batch=args.batch,
            threads=args.threads,
            impl=args.impl,
            runs=args.runs,
            warmup=args.warmup,
            device=args.device,
            clock=args.clock,
        )
        o, c, ratio = r["original"]["step_ms"], r["converted"]["step_ms"], r["ratios"]
        met = "yes" if ratio["latency"] <= TARGET else "no"
        lines.append(
            f"| {label} | {pair.stages_label} | {len(pair.plan.swaps)} | {ratio['macs']:.3f} "
            f"| {o['median']:.0f} ({o['min']:.0f}-{o['max']:.0f}) "
            f"| {c['median']:.0f} ({c['min']:.0f}-{c['max']:.0f}) "
            f"| **{ratio['latency']:.3f}** | {ratio['latency_min']:.3f} | {TARGET:.2f} | {met} |"
        )
        print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    print()
    print(text)
    if args.write:
        write_section(text)
        print("wrote the section to docs/benchmarks.md")


if __name__ == "__main__":
    main()
