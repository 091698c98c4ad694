"""Time the shipped conversions against their originals; tables of docs/benchmarks.md.

    python benchmarks/bench_models.py [--threads 2] [--runs 30] [--write] [--profile 15]
                                      [--only resnet50,...] [--impl auto] [--device cpu]
                                      [--compile] [--no-early]

Each model is converted with its shipped rules at 224x224 and both versions are timed at
batch 1 in eval mode under torch.inference_mode, in alternating rounds after a warm-up
(see parc_surgery.analysis.bench). The target of each row is the converted / original
MAC ratio: a conversion as efficient per MAC as its original. Besides the four published
families (and ParC-Net-S when the `parcnet-s` rules config exists), ConvNeXt-T and
MobileNetV2 are converted in all four stages (the early-stage rows). --compile times both
models compiled (inductor, frozen weights) in a section of its own. --write replaces this
script's sections of docs/benchmarks.md. --profile N prints the N ops that cost the
converted model the most self CPU time (torch.profiler).
"""

from __future__ import annotations

import argparse
import contextlib

import torch
from doc_tables import (
    EARLY_MODELS,
    MODELS,
    TARGET_SLACK,
    add_timing_arguments,
    machine_line,
    round_iqr,
    selected,
    write_section,
)

from parc_surgery.analysis.bench import bench_pair, using_threads
from parc_surgery.analysis.pair import convert_pair
from parc_surgery.report import human_count

SECTION = "## Converted models, {threads}, batch {batch} (benchmarks/bench_models.py)"
EARLY_SECTION = "## Early stages: ParC in stages 1-4 (benchmarks/bench_models.py)"
COMPILED_SECTION = "## Compiled with torch.compile (benchmarks/bench_models.py --compile)"
INPUT_SIZE = (224, 224)
_CLOCK_WORDS = {"wall": "wall time", "cpu": "CPU time of the one thread"}


def bench_one(name, model_args, rules, stages, args) -> dict:
    """Convert `name` and time it against its original (a dict of bench_pair)."""
    pair = convert_pair(
        name,
        model_args=model_args,
        input_size=INPUT_SIZE,
        rules=rules,
        stages=[int(s) for s in stages.split(",")] if stages else None,
    )
    result = bench_pair(
        pair.original,
        pair.converted,
        INPUT_SIZE,
        batch=args.batch,
        threads=args.threads,
        impl=args.impl,
        runs=args.runs,
        warmup=args.warmup,
        device=args.device,
        compile=args.compile,
        clock=args.clock,
        fuse=not args.no_fuse,
    )
    result["stages"] = pair.stages_label
    result["swaps"] = len(pair.plan.swaps)
    if args.profile:
        print(profile_table(pair.converted, args.threads, args.profile, args.impl, args.device))
    return result


def profile_table(model, threads: int, rows: int, impl: str, device: str = "cpu") -> str:
    """The ops with the most self CPU time over a few inference runs of `model`."""
    from torch.profiler import ProfilerActivity, profile

    from parc_surgery.ops import forced_impl

    x = torch.randn(1, 3, *INPUT_SIZE, device=device)
    forcing = contextlib.nullcontext() if impl == "auto" else forced_impl(impl)
    with using_threads(threads), forcing, torch.inference_mode():
        for _ in range(3):
            model(x)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(5):
                model(x)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def verdict(ratios: dict, target: float | None) -> str:
    """yes (median and minima within the target), minima (only the minima), no, or -."""
    if target is None:
        return "-"
    if ratios["latency"] <= target and ratios["latency_min"] <= target:
        return "yes"
    return "minima only" if ratios["latency_min"] <= target else "no"


def markdown(section: str, rows: list, args, skipped: list[str]) -> str:
    """One section: how it was measured, then one row per model."""
    compiled = ", both models compiled (inductor, frozen weights)" if args.compile else ""
    lines = [
        section,
        "",
        f"{machine_line(args.threads, args.device)}, device {args.device}, batch {args.batch}, "
        f"{INPUT_SIZE[0]}x{INPUT_SIZE[1]}, eval mode under torch.inference_mode, ParC "
        f"backend `{args.impl}`{compiled}, "
        f"{'unfused' if args.no_fuse else 'both models fused (parc_surgery.fuse)'}. "
        f"Latency ({_CLOCK_WORDS[args.clock]}) is the median of {args.runs} runs after "
        f"{args.warmup} warm-up runs, the "
        "two models timed in alternating rounds; the spread is min-max, and the ratio of "
        "the minima is the steadier figure on a shared machine; the per-round ratio (each "
        "round times the two back to back) gives the measurement's own spread as its IQR. "
        "MACs from "
        "torch.utils.flop_counter (ParC counted in its spatial form). The target is the "
        "MAC ratio: converted / original latency no higher than converted / original "
        "MACs x 1.05 (meets: yes = median and minima, minima only, no). Official: the ParC-Net "
        "authors' models on this project's CPU (PARC.md section 5).",
        "",
        f"Command: `{args.command}`",
        "",
        "| model | stages | swaps | params | MACs | original ms | converted ms "
        "| latency ratio | ratio of minima | per-round ratio IQR | target | official ParC "
        "| meets target |",
        "|---|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|:---:|",
    ]
    for label, target, official, r in rows:
        orig, conv, ratio = r["original"], r["converted"], r["ratios"]
        lat_o, lat_c = orig["latency_ms"], conv["latency_ms"]
        goal = target if target is not None else ratio["macs"] * TARGET_SLACK
        lines.append(
            f"| {label} | {r['stages']} | {r['swaps']} "
            f"| {human_count(orig['params'])} -> {human_count(conv['params'])} "
            f"({ratio['params']:.3f}) "
            f"| {human_count(orig['macs'])} -> {human_count(conv['macs'])} "
            f"({ratio['macs']:.3f}) "
            f"| {lat_o['median']:.2f} ({lat_o['min']:.2f}-{lat_o['max']:.2f}) "
            f"| {lat_c['median']:.2f} ({lat_c['min']:.2f}-{lat_c['max']:.2f}) "
            f"| **{ratio['latency']:.3f}** | {ratio['latency_min']:.3f} "
            f"| {round_iqr(ratio)} | {goal:.3f} | {'-' if official is None else f'{official:.2f}'} "
            f"| {verdict(ratio, goal)} |"
        )
    for note in skipped:
        lines.append(f"| {note} | | | | | | | | | | | | skipped |")
    if args.note:
        lines += ["", args.note.strip()]
    return "\n".join(lines) + "\n"


def run_rows(models, args) -> tuple[list, list[str]]:
    rows, skipped = [], []
    for row, missing in selected(models, args.only):
        label, name, model_args, rules, stages, target, official = row
        if missing:
            skipped.append(missing)
            print(f"{missing}: skipped", flush=True)
            continue
        print(f"{label}: converting and timing {name} ...", flush=True)
        try:
            result = bench_one(name, model_args, rules, stages, args)
        except Exception as err:  # one model failing must not lose the run of record
            skipped.append(f"{label} ({type(err).__name__}: {str(err).splitlines()[0][:80]})")
            print(f"  failed: {err}", flush=True)
            continue
        ratios = result["ratios"]
        print(
            f"  latency {result['original']['latency_ms']['median']:.2f} -> "
            f"{result['converted']['latency_ms']['median']:.2f} ms (ratio "
            f"{ratios['latency']:.3f}, minima {ratios['latency_min']:.3f}, MACs "
            f"{ratios['macs']:.3f})",
            flush=True,
        )
        rows.append((label, target, official, result))
    return rows, skipped


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_timing_arguments(parser, runs=30, warmup=5)
    parser.add_argument("--compile", action="store_true", help="time both models compiled")
    parser.add_argument("--no-early", action="store_true", help="skip the stages 1-4 rows")
    parser.add_argument("--no-fuse", action="store_true", help="time the unfused models")
    parser.add_argument("--batch", type=int, default=1, help="batch size")
    parser.add_argument(
        "--profile", type=int, default=0, metavar="N", help="print the N costliest ops"
    )
    parser.add_argument("--note", default="", help="a sentence to add under the table")
    args = parser.parse_args(argv)
    args.command = "python benchmarks/bench_models.py " + " ".join(argv or _argv())
    return args


def _argv() -> list[str]:
    import sys

    return [a for a in sys.argv[1:] if a != "--write"]


def main() -> None:
    args = parse_args()
    sections = []
    rows, skipped = run_rows(MODELS, args)
    # One section per setting: a 2-thread or batch-8 run keeps the 1-thread batch-1 table.
    threads = f"{args.threads} thread" + ("" if args.threads == 1 else "s")
    main_section = (
        COMPILED_SECTION if args.compile else SECTION.format(threads=threads, batch=args.batch)
    )
    if rows or skipped:
        sections.append(markdown(main_section, rows, args, skipped))
    if not args.no_early and not args.compile:
        early, _ = run_rows(EARLY_MODELS, args)
        if early:
            sections.append(markdown(EARLY_SECTION, early, args, []))
    for text in sections:
        print()
        print(text)
        if args.write:
            write_section(text)
    if args.write:
        print("wrote the sections to docs/benchmarks.md")


if __name__ == "__main__":
    main()
