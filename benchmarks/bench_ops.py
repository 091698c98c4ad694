"""Time the ParC backends and print the markdown table of docs/benchmarks.md.

    python benchmarks/bench_ops.py [--threads 2] [--write-calibration] [--quick]

Each number is the median wall time of one ParC forward (eval mode, no_grad, so the
kernel forms are cached as in inference) after warm-up. --write-calibration re-measures
the calibration grid and rewrites parc_surgery/ops/calibration.json, which `auto` reads.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from parc_surgery.ops import IMPLS, ParC, dispatch

CALIBRATION = Path(dispatch.__file__).with_name("calibration.json")
DEPTHWISE = [(384, 7), (192, 14), (96, 28), (64, 56), (32, 112), (16, 224)]
DENSE = [(128, 14), (128, 7)]


def timed_ms(fns: dict, x, quantile=0.5, budget_s=1.5, min_runs=7, max_runs=60) -> dict:
    """A quantile (default the median) of each callable's ms, after warm-up.

    Rounds interleave the callables so that load from other processes hits every backend
    alike; inside a round each callable runs once untimed before its timed call, so it
    is not charged for the caches the previous one evicted (circulant's matrices do).
    """
    for fn in fns.values():
        fn(x)
    single = {}
    for name, fn in fns.items():
        t0 = time.perf_counter()
        fn(x)
        single[name] = time.perf_counter() - t0
    runs = int(min(max_runs, max(min_runs, budget_s / max(2 * sum(single.values()), 1e-6))))
    times = {name: [] for name in fns}
    for _ in range(runs):
        for name, fn in fns.items():
            fn(x)
            t0 = time.perf_counter()
            fn(x)
            times[name].append(time.perf_counter() - t0)
    if quantile == 0.5:
        return {name: statistics.median(ts) * 1e3 for name, ts in times.items()}
    return {name: sorted(ts)[int(quantile * (len(ts) - 1))] * 1e3 for name, ts in times.items()}


def time_case(kind, channels, length, batch, direction, impls=IMPLS + ("auto",), quantile=0.5):
    """ms per backend for one ParC of `direction` on a (batch, channels, L, L) map."""
    groups = channels if kind == "depthwise" else 1
    x = torch.randn(batch, channels, length, length)
    fns = {}
    for impl in impls:
        fns[impl] = ParC(channels, channels, direction, length, groups=groups, impl=impl).eval()
    if kind == "depthwise":
        w = torch.randn(channels, 1, 7, 7)
        fns["ref"] = lambda t: F.conv2d(t, w, padding=3, groups=channels)
    else:
        w = torch.randn(channels, channels, 3, 3)
        fns["ref"] = lambda t: F.conv2d(t, w, padding=1)
    with torch.no_grad():
        out = timed_ms(fns, x, quantile)
    out["picked"] = fns["auto"].resolved_impl(x.shape) if "auto" in fns else None
    return out


def cpu_model() -> str:
    """The CPU model name as lscpu prints it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def calibration_grid(quick: bool):
    grid = [("depthwise", c, ln, b) for b in (8, 1) for c, ln in DEPTHWISE]
    grid += [("dense", c, ln, b) for b in (1, 8) for c, ln in DENSE + [(64, 28)]]
    if quick:
        grid = [g for g in grid if g[2] <= 56]
    return grid


def write_calibration(quick: bool, passes: int) -> None:
    """Measure the grid `passes` times and keep each backend's best median: on a shared
    machine the slow passes measure the neighbours, not the backend. (Not a low quantile:
    oneDNN's long depthwise kernels are bimodal, and auto should see the typical time.)"""
    best: dict[tuple, dict[str, float]] = {}
    for _ in range(passes):
        for kind, channels, length, batch in calibration_grid(quick):
            for direction in "HW":
                t = time_case(kind, channels, length, batch, direction, IMPLS)
                key = (kind, channels, length, batch, direction)
                old = best.get(key, {k: float("inf") for k in IMPLS})
                best[key] = {k: min(old[k], t[k]) for k in IMPLS}
    entries = []
    for (kind, channels, length, batch, direction), times in best.items():
        entries.append(
            {
                "kind": kind,
                "direction": direction,
                "length": length,
                "channels": channels,
                "batch": batch,
                "other_len": length,
                "lines": batch * channels * length,
                "times": {k: round(times[k], 4) for k in IMPLS},
            }
        )
        print(
            f"calibrated {kind} C={channels} L={length} B={batch} {direction}: "
            + ", ".join(f"{k} {times[k]:.3f}" for k in IMPLS),
            flush=True,
        )
    meta = {
        "passes": passes,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": cpu_model(),
        "date": datetime.date.today().isoformat(),
        "unit": "ms, fp32, best over passes of the median",
    }
    CALIBRATION.write_text(json.dumps({"meta": meta, "entries": entries}, indent=1) + "\n")
    dispatch.load_calibration(reload=True)
    print(f"wrote {CALIBRATION}")


def table(quick: bool) -> str:
    rows = [("depthwise", c, ln, 8) for c, ln in DEPTHWISE]
    rows += [("dense", c, ln, b) for c, ln in DENSE for b in (1, 8)]
    if quick:
        rows = [r for r in rows if r[2] <= 56]
    lines = [
        "| kind | B | C | L | dir | spatial | fft | circulant | auto (picks) | ref conv |"
        " auto vs spatial | auto vs fastest |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for kind, channels, length, batch in rows:
        for direction in "HW":
            t = time_case(kind, channels, length, batch, direction)
            fastest = min(t[k] for k in IMPLS)
            lines.append(
                f"| {kind} | {batch} | {channels} | {length} | {direction} | {t['spatial']:.3f} "
                f"| {t['fft']:.3f} | {t['circulant']:.3f} | {t['auto']:.3f} ({t['picked']}) "
                f"| {t['ref']:.3f} | {t['spatial'] / t['auto']:.2f}x "
                f"| {t['auto'] / fastest:.2f}x |"
            )
            print(lines[-1], flush=True)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument(
        "--write-calibration",
        action="store_true",
        help="re-measure and rewrite parc_surgery/ops/calibration.json",
    )
    parser.add_argument("--passes", type=int, default=3, help="calibration passes (best kept)")
    parser.add_argument("--quick", action="store_true", help="skip L > 56 (a smoke run)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.write_calibration:
        write_calibration(args.quick, args.passes)
    print(
        f"\n{cpu_model()} ({os.cpu_count()} cores), torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {datetime.date.today().isoformat()}; fp32, "
        "eval + no_grad, median ms; ref conv: 7x7 depthwise or 3x3 dense\n"
    )
    print(table(args.quick))


if __name__ == "__main__":
    main()
