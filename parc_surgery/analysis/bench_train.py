"""Training-step time of an original model and its conversion: forward, backward, step.

What fine-tuning a converted model costs per step against the original. Both models run
in train mode on the same seeded batch with random labels and cross-entropy, an SGD
optimizer from timm's `create_optimizer_v2` (momentum 0.9, weight decay 1e-4), and are
timed in alternating rounds after a warm-up (the first steps allocate the optimizer
state and the autograd buffers). A model whose output is not (batch, classes) logits
is trained on the mean square of its output instead. With grad enabled `auto` reads the
calibration's training entries (forward + backward timings). The models' weights
change: pass copies to keep them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from parc_surgery.analysis.bench import (
    BENCH_IMPLS,
    check_clock,
    impl_context,
    interleaved_times,
    latency_stats,
    pair_ratios,
    synchronize,
    using_threads,
)
from parc_surgery.costs import count_params, model_macs
from parc_surgery.models import input_channels
from parc_surgery.ops import compile_model

__all__ = ["bench_train_pair", "time_train_steps"]


def _step_fn(model: nn.Module, x: torch.Tensor, labels: torch.Tensor):
    from timm.optim import create_optimizer_v2

    optimizer = create_optimizer_v2(model, "sgd", lr=1e-3, momentum=0.9, weight_decay=1e-4)
    loss_fn = nn.CrossEntropyLoss()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        out = model(x)
        # A classifier's logits get cross-entropy; any other output (a backbone's feature
        # map) its mean square, which costs the same backward through the network.
        loss = loss_fn(out, labels) if out.dim() == 2 else out.float().pow(2).mean()
        loss.backward()
        optimizer.step()

    return step


def time_train_steps(
    models: dict[str, nn.Module],
    x: torch.Tensor,
    labels: torch.Tensor,
    *,
    runs: int = 5,
    warmup: int = 2,
    impls: dict[str, str] | None = None,
    step_fns: dict | None = None,
    clock: str = "wall",
) -> dict[str, list[float]]:
    """Seconds per training step of each model, `runs` each, in alternating rounds."""
    impls = impls or {}
    steps = step_fns or {name: _step_fn(m, x, labels) for name, m in models.items()}
    for model in models.values():
        model.train()

    def timed(name: str) -> Callable[[], None]:
        def call() -> None:
            steps[name]()
            synchronize(x.device)

        return call

    return interleaved_times(
        {name: timed(name) for name in models},
        runs=runs,
        warmup=warmup,
        clock=clock,
        around=lambda name: impl_context(impls.get(name, "auto")),
    )


def bench_train_pair(
    original: nn.Module,
    converted: nn.Module,
    input_size: tuple[int, int],
    *,
    batch: int = 32,
    threads: int | None = None,
    impl: str = "auto",
    runs: int = 5,
    warmup: int = 2,
    seed: int = 0,
    device: torch.device | str = "cpu",
    compile: bool = False,
    clock: str = "wall",
) -> dict:
    """Params, MACs and training-step time of both models, converted / original ratios.

    The models are trained for warmup + runs steps in place (pass copies to keep them).
    """
    if impl not in BENCH_IMPLS:
        raise ValueError(f"impl must be one of {BENCH_IMPLS}, got {impl!r}")
    if runs < 1 or warmup < 0 or batch < 1:
        raise ValueError(f"need runs >= 1, warmup >= 0, batch >= 1; got {runs}, {warmup}, {batch}")
    check_clock(clock, threads)
    device = torch.device(device)
    models = {"original": original.to(device), "converted": converted.to(device)}
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, input_channels(original), *input_size, generator=generator).to(device)
    with using_threads(threads):
        figures = {
            name: {"params": count_params(m), "macs": model_macs(m, input_size)}
            for name, m in models.items()
        }
        with torch.no_grad():
            classes = int(models["original"].eval()(x[:1]).shape[1])
        labels = torch.randint(0, classes, (batch,), generator=generator).to(device)
        runnable = models
        if compile:
            runnable = {name: compile_model(m, freeze=False) for name, m in models.items()}
            warmup = max(warmup, 2)
        steps = {name: _step_fn(runnable[name], x, labels) for name in models}
        times = time_train_steps(
            models,
            x,
            labels,
            runs=runs,
            warmup=warmup,
            impls={"converted": impl},
            step_fns=steps,
            clock=clock,
        )
        used_threads = torch.get_num_threads()
    for name in models:
        figures[name]["step_ms"] = latency_stats(times[name])
    return {
        "measure": "train_step",
        "input_size": list(input_size),
        "batch": batch,
        "threads": used_threads,
        "impl": impl,
        "device": str(device),
        "compiled": bool(compile),
        "clock": clock,
        "runs": runs,
        "warmup": warmup,
        **figures,
        "ratios": pair_ratios(figures, "step_ms", times),
    }
