"""`compile_model`: torch.compile (inductor) set up for converted models.

In inference (eval mode, no grad) inductor's `freezing` treats parameters as constants,
so each ParC's kernel form (circulant matrices, FFT spectrum, folded position bias) is
folded once at compile time, as the eager cache does, instead of inside every call.
`freezing` is read from inductor's global config while the graph compiles (passing it
in torch.compile's `options` left the position-bias conv in the graph, measured on
torch 2.14), so the returned module sets it around each call, which is when dynamo
compiles. Training graphs ignore freezing. Compiling needs a C++ compiler at run time
(inductor generates C++ / Triton); nothing is built when parc-surgery is installed.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["CompiledModel", "compile_model"]


class CompiledModel(nn.Module):
    """A torch.compile'd model whose graphs compile with inductor's freezing set as asked.

    `module` is the original (its parameters are shared); `compiled` what runs.
    """

    def __init__(self, module: nn.Module, compiled: Any, freeze: bool):
        super().__init__()
        self.module = module
        self._compiled = compiled  # not a submodule: the parameters live in `module`
        self.freeze = freeze

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        import torch._inductor.config as inductor_config

        with inductor_config.patch(freezing=self.freeze):
            return self._compiled(*args, **kwargs)


def compile_model(model: nn.Module, *, freeze: bool = True, **compile_kwargs: Any) -> nn.Module:
    """`torch.compile(model)` (inductor unless `backend` says otherwise), weights frozen
    in inference when `freeze`.

    `compile_kwargs` go to torch.compile (e.g. mode="max-autotune", dynamic=False).
    Compilation happens on the first call. Returns a `CompiledModel` sharing `model`'s
    parameters; with freezing, change weights only before the first call (a frozen
    graph keeps the values it was compiled with).
    """
    compiled = torch.compile(model, **compile_kwargs)
    return CompiledModel(
        model, compiled, freeze and compile_kwargs.get("backend") in (None, "inductor")
    )
