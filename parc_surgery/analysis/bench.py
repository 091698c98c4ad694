"""Parameters, MACs and latency of an original model and its ParC conversion.

Params and MACs are counted by parc_surgery.costs (ParC as its spatial form, as in the
plan). Latency is the median of several timed runs after a warm-up, under
torch.inference_mode, in eval mode, on `device` (CUDA timings wait for the device after
each run). The two models are timed in alternating rounds so a noisy neighbour slows
both alike. `compile=True` times both models compiled with
`parc_surgery.ops.compile_model` (inductor, weights frozen), the same for both. The
training step (`bench_train`) and onnxruntime (`bench_onnx`) live beside this one.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterator

import torch
from torch import nn

from parc_surgery.costs import count_params, model_macs
from parc_surgery.models import eval_mode, input_channels
from parc_surgery.ops import IMPLS, compile_model, forced_impl

__all__ = [
    "BENCH_IMPLS",
    "CLOCKS",
    "bench_pair",
    "check_clock",
    "impl_context",
    "interleaved_times",
    "latency_stats",
    "pair_ratios",
    "synchronize",
    "time_models",
    "using_threads",
]

BENCH_IMPLS = ("auto", *IMPLS)
# "wall": elapsed time, what a user waits; "cpu": the calling thread's CPU time, which
# other processes preempting it do not inflate (only meaningful with one thread).
CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}


def check_clock(clock: str, threads: int | None) -> None:
    """Raise ValueError unless `clock` is known and "cpu" comes with one thread."""
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {tuple(CLOCKS)}, got {clock!r}")
    if clock == "cpu" and threads != 1:
        raise ValueError("the cpu clock times one thread: pass threads=1")


@contextlib.contextmanager
def using_threads(threads: int | None) -> Iterator[None]:
    """Run the block with torch's intra-op thread count set to `threads` (None: as is)."""
    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def impl_context(impl: str):
    """forced_impl(impl), or nothing for "auto"."""
    return contextlib.nullcontext() if impl == "auto" else forced_impl(impl)


def synchronize(device: torch.device | str) -> None:
    """Wait for the work queued on an asynchronous device (CUDA); a no-op on the CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_times(
    calls: dict[str, Callable[[], object]],
    *,
    runs: int,
    warmup: int,
    clock: str = "wall",
    around: Callable[[str], contextlib.AbstractContextManager] | None = None,
) -> dict[str, list[float]]:
    """Seconds per call of each entry, `runs` each after `warmup` untimed rounds.

    The entries take turns, in alternating order so neither always runs right after the
    other; `around(name)`, if given, is entered outside the timed region of each call.
    """
    now = CLOCKS[clock]
    times: dict[str, list[float]] = {name: [] for name in calls}
    names = list(calls)
    for round_index in range(warmup + runs):
        order = names if round_index % 2 == 0 else names[::-1]
        for name in order:
            with around(name) if around is not None else contextlib.nullcontext():
                start = now()
                calls[name]()
                elapsed = now() - start
            if round_index >= warmup:
                times[name].append(elapsed)
    return times


def time_models(
    models: dict[str, nn.Module],
    x: torch.Tensor,
    *,
    runs: int = 20,
    warmup: int = 3,
    impls: dict[str, str] | None = None,
    clock: str = "wall",
) -> dict[str, list[float]]:
    """Seconds per forward of each model, `runs` each, timed in alternating rounds."""
    impls = impls or {}

    def forward(model: nn.Module) -> Callable[[], None]:
        def call() -> None:
            model(x)
            synchronize(x.device)

        return call

    with contextlib.ExitStack() as stack:
        for model in models.values():
            stack.enter_context(eval_mode(model))
        stack.enter_context(torch.inference_mode())
        return interleaved_times(
            {name: forward(m) for name, m in models.items()},
            runs=runs,
            warmup=warmup,
            clock=clock,
            around=lambda name: impl_context(impls.get(name, "auto")),
        )


def spread_stats(values: list[float]) -> dict[str, float]:
    """Median, min, max and quartiles of a list of numbers, and how many there are."""
    ordered = sorted(values)
    if len(ordered) >= 2:
        q1, _, q3 = statistics.quantiles(ordered, n=4, method="inclusive")
    else:
        q1 = q3 = ordered[0]
    return {
        "median": statistics.median(ordered),
        "min": ordered[0],
        "max": ordered[-1],
        "q1": q1,
        "q3": q3,
        "runs": len(ordered),
    }


def latency_stats(seconds: list[float]) -> dict[str, float]:
    """Median, min, max and quartiles of a list of timings, in milliseconds."""
    return spread_stats([t * 1e3 for t in seconds])


def _ratio(after: float, before: float) -> float | None:
    return after / before if before else None


def pair_ratios(
    figures: dict, measure: str = "latency_ms", times: dict[str, list[float]] | None = None
) -> dict:
    """converted / original of params, MACs, the median and the minimum of `measure`.

    With the per-round `times` of `interleaved_times`, also `latency_rounds`: the quartiles,
    minimum and maximum of the ratio of each round (converted / original timed back to
    back), the measurement's own run-to-run spread.
    """
    orig, conv = figures["original"], figures["converted"]
    ratios = {
        "params": _ratio(conv["params"], orig["params"]),
        "macs": _ratio(conv["macs"], orig["macs"]),
        "latency": _ratio(conv[measure]["median"], orig[measure]["median"]),
        # On a busy machine the fastest run is the one least disturbed by others.
        "latency_min": _ratio(conv[measure]["min"], orig[measure]["min"]),
    }
    if times is not None:
        rounds = [c / o for c, o in zip(times["converted"], times["original"], strict=True) if o]
        ratios["latency_rounds"] = spread_stats(rounds) if rounds else None
    return ratios


def bench_pair(
    original: nn.Module,
    converted: nn.Module,
    input_size: tuple[int, int],
    *,
    batch: int = 1,
    threads: int | None = None,
    impl: str = "auto",
    runs: int = 20,
    warmup: int = 3,
    seed: int = 0,
    device: torch.device | str = "cpu",
    compile: bool = False,
    clock: str = "wall",
    fuse: bool = False,
) -> dict:
    """Params, MACs and latency of both models and converted / original ratios.

    With `fuse` both models are timed in their inference form (`parc_surgery.fuse`,
    in place: BatchNorms folded into adjacent convs / ParCs); params and MACs are
    counted before fusing, as `--dry-run` counts them.

    `impl` forces one ParC backend in the converted model ("auto" lets each ParC choose).
    The models are moved to `device` (and stay there). With `compile` both run as
    `compile_model` builds them; the warm-up runs then include the compilation.
    """
    if impl not in BENCH_IMPLS:
        raise ValueError(f"impl must be one of {BENCH_IMPLS}, got {impl!r}")
    if runs < 1 or warmup < 0 or batch < 1:
        raise ValueError(f"need runs >= 1, warmup >= 0, batch >= 1; got {runs}, {warmup}, {batch}")
    check_clock(clock, threads)
    device = torch.device(device)
    models = {"original": original.to(device), "converted": converted.to(device)}
    x = torch.randn(
        batch, input_channels(original), *input_size, generator=torch.Generator().manual_seed(seed)
    )
    x = x.to(device)
    with using_threads(threads):
        figures = {
            name: {"params": count_params(m), "macs": model_macs(m, input_size)}
            for name, m in models.items()
        }
        if fuse:
            from parc_surgery.fusing import fuse as fuse_model

            models = {name: fuse_model(m.eval(), input_size) for name, m in models.items()}
        timed = models
        if compile:
            timed = {name: compile_model(m.eval()) for name, m in models.items()}
            warmup = max(warmup, 2)  # the first call compiles, the second settles
        times = time_models(
            timed, x, runs=runs, warmup=warmup, impls={"converted": impl}, clock=clock
        )
        used_threads = torch.get_num_threads()
    for name in models:
        figures[name]["latency_ms"] = latency_stats(times[name])
    return {
        "measure": "latency",
        "input_size": list(input_size),
        "batch": batch,
        "threads": used_threads,
        "impl": impl,
        "device": str(device),
        "compiled": bool(compile),
        "fused": bool(fuse),
        "clock": clock,
        "runs": runs,
        "warmup": warmup,
        **figures,
        "ratios": pair_ratios(figures, times=times),
    }
