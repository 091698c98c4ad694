"""The ParC operator (PARC.md sec. 1-2): backends, dispatch, resampling, modules.

- `ParC(in_chs, out_chs, direction, kernel_size, groups=1, use_pe=True, bias=True,
  impl="auto")`: one direction; `ParCPair(channels, kernel_size, groups_per_half=None,
  use_pe=True, bias=True, impl="auto")`: the plug-in for a local conv.
- `parc(x, weight, bias, pe, direction, groups=1, impl="auto")`: the functional form.
- Backends "spatial" (official circular extension + conv2d, `spatial.py`), "fft"
  (Fast-ParC, `fft.py`) and "circulant" (batched matmul, `circulant.py`), all computing
  the same function; "auto" picks one per shape, device type and mode (forward, or
  forward + backward under grad) with `choose_impl` (see `parc_surgery.ops.dispatch`),
  `forced_impl(name)` overrides every ParC inside it. `mode.py` says when inference-only
  shortcuts (cached forms, in-place ops, out=) are safe.
- `resample_kernel(t, length, dim)`: the kernel / pe resampling used at other resolutions.
- `compile_model(model)`: torch.compile (inductor) with frozen weights in inference.
"""

from .compile import CompiledModel, compile_model
from .dispatch import IMPLS, choose_impl, forced_impl
from .functional import parc
from .modules import ParC, ParCPair
from .resample import resample_kernel

__all__ = [
    "CompiledModel",
    "IMPLS",
    "ParC",
    "ParCPair",
    "choose_impl",
    "compile_model",
    "forced_impl",
    "parc",
    "resample_kernel",
]
