"""ParC modules stay leaves under any torch.fx tracer, torchvision's included.

timm's tracers know the ParC modules as leaves (`register_notrace_module`); torchvision's
`create_feature_extractor` and plain `torch.fx.symbolic_trace` do not, and trace into
forwards that read runtime sizes (TraceError). `@fx_leaf` registers a class with timm and
wraps its forward: called with an fx Proxy (by any tracer), it records one `call_module`
node for the module, what a tracer records for a leaf, so the module runs as a whole at
run time; called with tensors, it is the forward as written.
"""

from __future__ import annotations

import functools
from typing import Any, TypeVar

import torch.fx
from timm.layers import register_notrace_module
from torch import nn

__all__ = ["fx_leaf"]

M = TypeVar("M", bound=type[nn.Module])


def fx_leaf(cls: M) -> M:
    """Class decorator: a timm notrace module that every fx tracer records as one call."""
    forward = cls.forward

    @functools.wraps(forward)
    def traced_as_leaf(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
        if args and isinstance(args[0], torch.fx.Proxy):
            tracer = args[0].tracer
            path = tracer.path_of_module(self)
            return tracer.create_proxy("call_module", path, args, kwargs)
        return forward(self, *args, **kwargs)

    cls.forward = traced_as_leaf
    return register_notrace_module(cls)
