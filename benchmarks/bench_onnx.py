"""Deployed cost: ONNX exports in onnxruntime, and the calibration `export --impl auto` reads.

    python benchmarks/bench_onnx.py [--threads 2] [--runs 30] [--only resnet50,...]
                                    [--impl auto] [--write] [--write-calibration]

The table: each shipped conversion and its original exported with `export_onnx` (opset
17, ParC as `--impl`: auto picks per layer) and run by onnxruntime's CPU provider at
batch 1, 224x224, `--threads` intra-op threads, in alternating rounds after warm-up (the
same as `parc-surgery bench MODEL --onnx`). Target (issue 13): the deployed ratio at
most the MAC ratio. --write-calibration times each exportable backend of one ParC
between two 1x1 convs (so onnxruntime's layout changes around it are paid as in a
model) at a grid of batch-1 shapes and writes parc_surgery/ops/onnx_calibration.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import tempfile
from pathlib import Path

import torch
from doc_tables import (
    MODELS,
    add_timing_arguments,
    machine_line,
    machine_name,
    selected,
    write_section,
)
from torch import nn

from parc_surgery.analysis.bench_onnx import bench_onnx_pair, ort_session, time_sessions
from parc_surgery.analysis.export import EXPORTABLE_BACKENDS, ONNX_CALIBRATION, trace_to_onnx
from parc_surgery.analysis.pair import convert_pair
from parc_surgery.ops import ParC, dispatch

SECTION = "## Deployed: ONNX in onnxruntime (benchmarks/bench_onnx.py)"
INPUT_SIZE = (224, 224)
CALIBRATION = Path(dispatch.__file__).with_name(ONNX_CALIBRATION)
# (kind, channels, L): the ParC halves of the shipped conversions and the early stages.
GRID = [
    ("depthwise", 480, 7),
    ("depthwise", 192, 7),
    ("depthwise", 288, 14),
    ("depthwise", 96, 14),
    ("depthwise", 72, 28),
    ("depthwise", 48, 56),
    ("depthwise", 24, 112),
    ("dense", 256, 7),
    ("dense", 128, 14),
    ("dense", 64, 28),
]


def _sandwich(kind: str, channels: int, length: int, direction: str, impl: str) -> nn.Module:
    groups = channels if kind == "depthwise" else 1
    parc = ParC(channels, channels, direction, length, groups=groups, impl=impl)
    return nn.Sequential(
        nn.Conv2d(channels, channels, 1), parc, nn.Conv2d(channels, channels, 1)
    ).eval()


def calibrate(threads: int, runs: int, passes: int) -> None:
    import onnxruntime

    entries = []
    with tempfile.TemporaryDirectory(prefix="parc-onnx-cal-") as folder:
        for kind, channels, length in GRID:
            for direction in "HW":
                x = torch.randn(1, channels, length, length)
                sessions = {}
                for impl in EXPORTABLE_BACKENDS:
                    path = Path(folder, f"{impl}.onnx")
                    trace_to_onnx(_sandwich(kind, channels, length, direction, impl), path, x)
                    sessions[impl] = ort_session(path, threads)
                best = {impl: float("inf") for impl in EXPORTABLE_BACKENDS}
                for _ in range(passes):
                    times = time_sessions(sessions, x.numpy(), runs=runs, warmup=3)
                    for impl, ts in times.items():
                        best[impl] = min(best[impl], statistics.median(ts) * 1e3)
                entries.append(
                    {
                        "kind": kind,
                        "direction": direction,
                        "length": length,
                        "channels": channels,
                        "batch": 1,
                        "other_len": length,
                        "lines": channels * length,
                        "times": {k: round(v, 4) for k, v in best.items()},
                    }
                )
                print(f"calibrated {kind} C={channels} L={length} {direction}: {best}", flush=True)
    meta = {
        "passes": passes,
        "threads": threads,
        "runtime": f"onnxruntime {onnxruntime.__version__}",
        "machine": machine_name(),
        "date": datetime.date.today().isoformat(),
        "unit": "ms, fp32, batch 1, ParC between two 1x1 convs, best over passes of the median",
    }
    CALIBRATION.write_text(json.dumps({"meta": meta, "entries": entries}, indent=1) + "\n")
    dispatch.load_calibration(reload=True, name=ONNX_CALIBRATION)
    print(f"wrote {CALIBRATION}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_timing_arguments(
        parser,
        runs=30,
        warmup=5,
        impl_help="exported backend: auto|spatial|circulant",
        threads_help="onnxruntime intra-op threads",
        device=False,
    )
    parser.add_argument("--write-calibration", action="store_true", help="rewrite the table")
    parser.add_argument("--passes", type=int, default=3, help="calibration passes (best kept)")
    args = parser.parse_args()
    command = "python benchmarks/bench_onnx.py " + " ".join(
        a for a in sys.argv[1:] if a not in ("--write", "--write-calibration")
    )
    torch.set_num_threads(args.threads)
    if args.write_calibration:
        calibrate(args.threads, 20, args.passes)
    import onnxruntime

    lines = [
        SECTION,
        "",
        f"{machine_line(args.threads)}, onnxruntime {onnxruntime.__version__} (CPU "
        f"provider, {args.threads} intra-op threads), batch 1, {INPUT_SIZE[0]}x"
        f"{INPUT_SIZE[1]}, opset 17; ParC exported as `{args.impl}` (auto: per layer, "
        "from the shipped onnxruntime calibration). Median "
        f"({'CPU time of the one thread' if args.clock == 'cpu' else 'wall time'}) of "
        f"{args.runs} runs after {args.warmup} warm-up runs, the two sessions in "
        "alternating rounds. Target: the deployed ratio at most the MAC ratio. "
        f"Command: `{command}`",
        "",
        "| model | stages | ParC exported as | MACs ratio = target | original ms "
        "| converted ms | deployed ratio | ratio of minima | met |",
        "|---|---|---|---:|---:|---:|---:|---:|:---:|",
    ]
    for (label, name, model_args, rules, _, _, _), missing in selected(MODELS, args.only):
        if missing:
            lines.append(f"| {missing} | | | | | | | | |")
            continue
        print(f"{label}: converting, exporting and timing {name} ...", flush=True)
        pair = convert_pair(name, model_args=model_args, input_size=INPUT_SIZE, rules=rules)
        r = bench_onnx_pair(
            pair.original,
            pair.converted,
            INPUT_SIZE,
            threads=args.threads,
            impl=args.impl,
            runs=args.runs,
            warmup=args.warmup,
            clock=args.clock,
        )
        o, c, ratio = r["original"]["latency_ms"], r["converted"]["latency_ms"], r["ratios"]
        goal = ratio["macs"]
        impls = ", ".join(f"{n} {k}" for k, n in r["impls"].items())
        met = "yes" if ratio["latency"] <= goal and ratio["latency_min"] <= goal else "no"
        lines.append(
            f"| {label} | {pair.stages_label} | {impls} | {goal:.3f} "
            f"| {o['median']:.2f} ({o['min']:.2f}-{o['max']:.2f}) "
            f"| {c['median']:.2f} ({c['min']:.2f}-{c['max']:.2f}) "
            f"| **{ratio['latency']:.3f}** | {ratio['latency_min']:.3f} | {met} |"
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
