"""When the backends may take inference-only shortcuts (in-place ops, out=, cached forms)."""

from __future__ import annotations

import torch

__all__ = ["eager_inference"]


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
