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
    TARGET_SLACK,
    add_timing_arguments,
    machine_line,
    machine_name,
    round_iqr,
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


def int8_rows(args) -> list[str]:
    """INT8 (static QDQ, `quantize_export`'s recipe) vs FP32 ONNX of converted models."""

    from parc_surgery.analysis.bench import latency_stats
    from parc_surgery.analysis.export import export_onnx
    from parc_surgery.analysis.quantize import INT8_IMPL, quantize_qdq

    int8_impl = INT8_IMPL if args.impl == "auto" else args.impl
    out = [
        "INT8 vs FP32 onnxruntime, converted models (same run; `export --quantize int8`'s "
        f"recipe: FP32 export as `{args.impl}`, INT8 export as `{int8_impl}`, onnxruntime's "
        "quantization pre-processing, static QDQ, per-channel int8 weights, uint8 "
        "activations, only Conv / MatMul / Gemm quantized in graphs with GELU; calibrated on "
        "16 random N(0,1) inputs: a latency figure only. Accuracy is not measured here: "
        "`export --quantize int8 --calibration-data DIR` prints FP32 and INT8 top-1 on DIR's "
        "val split, tests/analysis/test_analysis_quantize.py checks that it does on a tiny "
        "converted model, and the digits FP32-vs-INT8 top-1 of these three models is not "
        "measured). Target: INT8 >= 1.5x faster.",
        "",
        "| converted model | FP32 ms | INT8 ms | speed-up (FP32 / INT8) | ratio of minima | met |",
        "|---|---:|---:|---:|---:|:---:|",
    ]
    wanted = [w.strip() for w in args.int8.split(",") if w.strip()]
    for label, name, model_args, rules, *_ in MODELS:
        if label not in wanted and name not in wanted:
            continue
        print(f"{label}: INT8 vs FP32 ...", flush=True)
        pair = convert_pair(name, model_args=model_args, input_size=INPUT_SIZE, rules=rules)
        gen = torch.Generator().manual_seed(0)
        calib = [torch.randn(1, 3, *INPUT_SIZE, generator=gen).numpy() for _ in range(16)]
        try:
            with tempfile.TemporaryDirectory(prefix="parc-int8-") as folder:
                fp32, int8 = Path(folder, "fp32.onnx"), Path(folder, "int8.onnx")
                source = Path(folder, "int8-source.onnx")
                fuse = not args.no_fuse
                export_onnx(pair.converted, fp32, input_size=INPUT_SIZE, impl=args.impl, fuse=fuse)
                export_onnx(
                    pair.converted, source, input_size=INPUT_SIZE, impl=int8_impl, fuse=fuse
                )
                quantize_qdq(source, int8, calib, "input")
                sessions = {
                    "fp32": ort_session(fp32, args.threads),
                    "int8": ort_session(int8, args.threads),
                }
                times = time_sessions(
                    sessions, calib[0], runs=args.runs, warmup=args.warmup, clock=args.clock
                )
        except Exception as err:  # one model failing must not lose the other rows
            detail = f"{type(err).__name__}: {str(err).splitlines()[0][:100]}"
            out.append(f"| {label} | | | failed: {detail} | | no |")
            print(out[-1], flush=True)
            continue
        f, q = latency_stats(times["fp32"]), latency_stats(times["int8"])
        speed, speed_min = f["median"] / q["median"], f["min"] / q["min"]
        out.append(
            f"| {label} | {f['median']:.2f} ({f['min']:.2f}-{f['max']:.2f}) "
            f"| {q['median']:.2f} ({q['min']:.2f}-{q['max']:.2f}) | **{speed:.2f}x** "
            f"| {speed_min:.2f}x | {'yes' if speed >= 1.5 and speed_min >= 1.5 else 'no'} |"
        )
        print(out[-1], flush=True)
    return out


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
    parser.add_argument("--no-fuse", action="store_true", help="export the unfused models")
    parser.add_argument(
        "--int8", default="", help="comma-separated labels: INT8 vs FP32 rows of converted models"
    )
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
        "alternating rounds; spread min-max; the per-round ratio (each round times the two "
        "back to back) gives the measurement's own run-to-run spread as its IQR. "
        f"{'Unfused' if args.no_fuse else 'Both models exported fused (parc_surgery.fuse)'}. "
        "Target: the deployed ratio at most the MAC ratio x 1.05. "
        f"Command: `{command}`",
        "",
        "| model | stages | ParC exported as | MAC ratio (target x1.05) | original ms "
        "| converted ms | deployed ratio | ratio of minima | per-round ratio IQR | met |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|:---:|",
    ]
    for (label, name, model_args, rules, _, _, _), missing in selected(MODELS, args.only):
        if missing:
            lines.append(f"| {missing} | | | | | | | | | |")
            continue
        print(f"{label}: converting, exporting and timing {name} ...", flush=True)
        try:
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
                fuse=not args.no_fuse,
            )
        except Exception as err:  # one model failing must not lose the run of record
            detail = f"{type(err).__name__}: {str(err).splitlines()[0][:80]}"
            lines.append(f"| {label} (failed: {detail}) | | | | | | | | | |")
            print(lines[-1], flush=True)
            continue
        o, c, ratio = r["original"]["latency_ms"], r["converted"]["latency_ms"], r["ratios"]
        goal = ratio["macs"] * TARGET_SLACK
        impls = ", ".join(f"{n} {k}" for k, n in r["impls"].items())
        met = "yes" if ratio["latency"] <= goal and ratio["latency_min"] <= goal else "no"
        lines.append(
            f"| {label} | {pair.stages_label} | {impls} | {ratio['macs']:.3f} ({goal:.3f}) "
            f"| {o['median']:.2f} ({o['min']:.2f}-{o['max']:.2f}) "
            f"| {c['median']:.2f} ({c['min']:.2f}-{c['max']:.2f}) "
            f"| **{ratio['latency']:.3f}** | {ratio['latency_min']:.3f} "
            f"| {round_iqr(ratio)} | {met} |"
        )
        print(lines[-1], flush=True)
    if args.int8:
        lines += ["", *int8_rows(args)]
    text = "\n".join(lines) + "\n"
    print()
    print(text)
    if args.write:
        write_section(text)
        print("wrote the section to docs/benchmarks.md")


if __name__ == "__main__":
    main()
