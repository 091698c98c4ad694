"""When the backends may take inference-only shortcuts (in-place ops, out=, cached forms)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["eager_inference", "eager_parc_in_compiled_inference", "leave_graph_for_inference"]

_eager_in_compiled = False


def eager_inference() -> bool:
    """True in plain eager no-grad runs, where in-place and out= shortcuts are safe.

    Under autograd, torch.compile, FX, TorchScript tracing or ONNX export the backends
    stick to out-of-place ops, which every tracer and exporter understands.
    """
    if torch.is_grad_enabled() or torch.jit.is_tracing() or torch.jit.is_scripting():
        return False
    compiler = getattr(torch, "compiler", None)
    if compiler is not None and compiler.is_compiling():
        return False
    fx = torch.fx._symbolic_trace
    tracing = getattr(fx, "is_fx_symbolic_tracing", None) or fx.is_fx_tracing
    return not tracing()


@contextlib.contextmanager
def eager_parc_in_compiled_inference(enabled: bool = True) -> Iterator[None]:
    """Inside, a compiled model's ParC layers run eagerly in inference (eval, no grad).

    Inductor cannot fold a ParC's kernel form into a constant (the circulant gather and
    the position-bias conv stay in the graph and run every call: a MobileNetV2 pair took
    0.43 ms compiled against 0.10 ms eager), so `compile_model` breaks the graph around
    each ParC and lets the eager path, with its cached forms, run it. Dynamo guards on
    this flag, so graphs compiled outside keep ParC inside them.
    """
    global _eager_in_compiled
    before = _eager_in_compiled
    _eager_in_compiled = enabled
    try:
        yield
    finally:
        _eager_in_compiled = before


def leave_graph_for_inference(training: bool) -> bool:
    """True while compiling inference under `eager_parc_in_compiled_inference`."""
    if not _eager_in_compiled or training or torch.is_grad_enabled():
        return False
    compiler = getattr(torch, "compiler", None)
    return compiler is not None and compiler.is_compiling()
