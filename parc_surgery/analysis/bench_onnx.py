"""Deployed cost: the ONNX exports of an original model and its conversion in onnxruntime.

Both models are exported with `export_onnx` (checked against PyTorch, ParC as the
backend `impl` says: "auto" picks per layer what onnxruntime runs fastest) into a
temporary folder and run by onnxruntime's CPU provider with `threads` intra-op threads
(inter-op 1, sequential), at batch 1, timed in alternating rounds after a warm-up.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from parc_surgery.analysis.bench import (
    check_clock,
    interleaved_times,
    latency_stats,
    pair_ratios,
)
from parc_surgery.costs import count_params, model_macs
from parc_surgery.models import input_channels

__all__ = ["bench_onnx_pair", "ort_session", "time_sessions"]


def ort_session(path: str | Path, threads: int | None = None):
    """An onnxruntime CPU session of `path` with `threads` intra-op threads (None: ORT's)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    if threads is not None:
        options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def time_sessions(
    sessions: dict, feed, *, runs: int = 20, warmup: int = 3, clock: str = "wall"
) -> dict:
    """Seconds per run of each onnxruntime session on `feed` (a numpy array), interleaved.

    With one intra-op thread onnxruntime computes on the calling thread, so the "cpu"
    clock sees all of its work.
    """

    def run(session) -> Callable[[], object]:
        inputs = {session.get_inputs()[0].name: feed}
        return lambda: session.run(None, inputs)

    calls = {name: run(session) for name, session in sessions.items()}
    return interleaved_times(calls, runs=runs, warmup=warmup, clock=clock)


def bench_onnx_pair(
    original: nn.Module,
    converted: nn.Module,
    input_size: tuple[int, int],
    *,
    threads: int | None = None,
    impl: str = "auto",
    runs: int = 20,
    warmup: int = 3,
    seed: int = 0,
    clock: str = "wall",
    fuse: bool = False,
) -> dict:
    """Params, MACs and onnxruntime latency of both exports; converted / original ratios.

    `fuse` exports both in their inference form (`export_onnx(..., fuse=True)`).
    """
    from parc_surgery.analysis.export import export_onnx

    input_size = (int(input_size[0]), int(input_size[1]))
    threads = threads if threads is not None else torch.get_num_threads()
    check_clock(clock, threads)
    figures = {
        name: {"params": count_params(m), "macs": model_macs(m, input_size)}
        for name, m in (("original", original), ("converted", converted))
    }
    with tempfile.TemporaryDirectory(prefix="parc-bench-") as folder:
        exports = {
            "original": export_onnx(
                original, Path(folder, "original.onnx"), input_size=input_size, fuse=fuse
            ),
            "converted": export_onnx(
                converted,
                Path(folder, "converted.onnx"),
                input_size=input_size,
                impl=impl,
                fuse=fuse,
            ),
        }
        sessions = {name: ort_session(e["output"], threads) for name, e in exports.items()}
        chans = input_channels(original)
        x = torch.randn(1, chans, *input_size, generator=torch.Generator().manual_seed(seed))
        times = time_sessions(sessions, x.numpy(), runs=runs, warmup=warmup, clock=clock)
    for name in figures:
        figures[name]["latency_ms"] = latency_stats(times[name])
        figures[name]["onnx_nodes"] = exports[name]["nodes"]
    import onnxruntime

    return {
        "measure": "onnxruntime",
        "input_size": list(input_size),
        "batch": 1,
        "threads": threads,
        "impl": impl,
        "impls": exports["converted"]["impls"],
        "device": "cpu",
        "compiled": False,
        "fused": bool(fuse),
        "clock": clock,
        "runtime": f"onnxruntime {onnxruntime.__version__}",
        "runs": runs,
        "warmup": warmup,
        **figures,
        "ratios": pair_ratios(figures, times=times),
    }
