"""`ParC` (one direction) and `ParCPair` (H on the first half of channels, W on the rest)."""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from .backends import BACKENDS, eager_inference
from .dispatch import current_forced_impl
from .functional import check_direction, check_input, kernel_axis, resolve_impl
from .fx_leaf import fx_leaf
from .resample import resample_kernel

__all__ = ["ParC", "ParCPair"]

# Distinct (length, dtype, device, backend) forms kept per module; resolutions rarely vary.
_CACHE_SIZE = 8


@fx_leaf  # an FX leaf: forward resamples by the runtime size
class ParC(nn.Module):
    """Position aware circular convolution along one axis ('H' or 'W') of a (B, C, H, W) map.

    `kernel_size` is the global kernel length K (the feature map's height for 'H', width
    for 'W'). At another runtime length L the kernel and pe are linearly resampled to L.
    In eval mode without grad the backend's kernel form (spectrum, circulant matrices,
    folded position bias) is cached per (backend, L, dtype, device) and rebuilt when a
    parameter changes (its version counter or storage) or `train()` / `.to()` is called.
    Under torch.compile (checked with the default inductor and aot_eager backends on CPU,
    all three backends, forward and backward) the cache is bypassed and the kernel form
    is computed inside the graph; `compile_model`'s freezing folds it into constants in
    inference. `set_impl(name)` changes the backend of one module.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        direction: str,
        kernel_size: int,
        groups: int = 1,
        use_pe: bool = True,
        bias: bool = True,
        impl: str = "auto",
    ):
        super().__init__()
        check_direction(direction)
        if kernel_size < 1:
            raise ValueError(f"kernel_size must be >= 1, got {kernel_size}")
        if in_chs < 1 or out_chs < 1:
            raise ValueError(f"channels must be >= 1, got in_chs={in_chs}, out_chs={out_chs}")
        if groups < 1 or in_chs % groups or out_chs % groups:
            raise ValueError(f"groups={groups} must divide in_chs={in_chs} and out_chs={out_chs}")
        if impl != "auto" and impl not in BACKENDS:
            raise ValueError(f"impl must be 'auto' or one of {tuple(BACKENDS)}, got {impl!r}")
        self.in_chs, self.out_chs, self.direction = in_chs, out_chs, direction
        self.kernel_size, self.groups, self.impl = kernel_size, groups, impl
        k_shape = (kernel_size, 1) if direction == "H" else (1, kernel_size)
        self.weight = nn.Parameter(torch.empty(out_chs, in_chs // groups, *k_shape))
        self.bias = nn.Parameter(torch.empty(out_chs)) if bias else None
        self.pe = nn.Parameter(torch.empty(1, in_chs, *k_shape)) if use_pe else None
        self._forms: dict = {}  # plain attributes, so never part of state_dict
        self._routes: dict = {}
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise as the official code: nn.Conv2d's rule for weight/bias, pe ~ N(0, .02)."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight[0].numel()
            bound = 1.0 / math.sqrt(fan_in)
            nn.init.uniform_(self.bias, -bound, bound)
        if self.pe is not None:
            nn.init.trunc_normal_(self.pe, std=0.02)
        self._forget()

    def _params(self, length: int, dtype: torch.dtype):
        axis = kernel_axis(self.direction)
        w, b, pe = self.weight, self.bias, self.pe
        if w.dtype != dtype:  # e.g. fp32 weights under a bf16 input
            w = w.to(dtype)
            b = None if b is None else b.to(dtype)
            pe = None if pe is None else pe.to(dtype)
        w = resample_kernel(w, length, axis)
        pe = None if pe is None else resample_kernel(pe, length, axis)
        return w, b, pe

    def _make_form(self, impl: str, length: int, dtype: torch.dtype):
        prepare = BACKENDS[impl][0]
        return prepare(*self._params(length, dtype), self.direction, self.groups, length)

    def _version_key(self) -> tuple | None:
        # _parameters directly: nn.Module.__getattr__ costs a microsecond per name.
        try:
            return tuple(
                (p._version, p.data_ptr()) for p in self._parameters.values() if p is not None
            )
        except RuntimeError:  # inference-mode tensors have no version counter
            return None

    def _cached_form(self, impl: str, length: int, dtype: torch.dtype, device: torch.device):
        key = (impl, length, dtype, device)
        version = self._version_key()
        if version is None:
            return self._make_form(impl, length, dtype)
        hit = self._forms.get(key)
        if hit is not None and hit[0] == version:
            return hit[1]
        form = self._make_form(impl, length, dtype)
        if len(self._forms) >= _CACHE_SIZE and key not in self._forms:
            self._forms.pop(next(iter(self._forms)))
        self._forms[key] = (version, form)
        return form

    def resolved_impl(
        self,
        x_shape,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        mode: str = "eval",
    ) -> str:
        """The backend this module runs for an input of `x_shape` on `device`.

        `mode` is "eval" (forward only) or "train" (grad enabled: forward + backward).
        """
        return resolve_impl(
            self.impl, x_shape, self.in_chs, self.groups, self.direction, dtype, device, mode
        )

    def _route(self, x: torch.Tensor) -> str:
        # The backend per input signature, memoised: `auto` costs one dict lookup per call.
        mode = "train" if torch.is_grad_enabled() else "eval"
        key = (x.shape, x.dtype, x.device, mode, current_forced_impl())
        impl = self._routes.get(key)
        if impl is None:
            if len(self._routes) >= 4 * _CACHE_SIZE:
                self._routes.clear()
            impl = self.resolved_impl(x.shape, x.dtype, x.device, mode)
            self._routes[key] = impl
        return impl

    def forward(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """ParC of `x`; `out` (eager no-grad only) is a (B, out_chs, H, W) view to fill."""
        check_input(x, self.in_chs)
        return self._run(x, out, eager_inference())

    def _run(self, x: torch.Tensor, out: torch.Tensor | None, eager: bool) -> torch.Tensor:
        impl = self._route(x)
        length = x.shape[2 if self.direction == "H" else 3]
        if length == self.kernel_size:
            # A plain int, not the traced size: an exported graph then slices with
            # constants instead of a Shape -> Gather -> Sub chain per ParC.
            length = self.kernel_size
        if eager and not self.training:
            form = self._cached_form(impl, length, x.dtype, x.device)
        else:
            form = self._make_form(impl, length, x.dtype)
        return BACKENDS[impl][1](x, form, self.direction, self.groups, out)

    def set_impl(self, impl: str) -> None:
        """Run backend `impl` ("auto" or one of the backends) from now on."""
        if impl != "auto" and impl not in BACKENDS:
            raise ValueError(f"impl must be 'auto' or one of {tuple(BACKENDS)}, got {impl!r}")
        self.impl = impl
        self._forget()

    def _forget(self) -> None:
        self._forms.clear()
        self._routes.clear()

    def train(self, mode: bool = True):
        self._forget()
        return super().train(mode)

    def _apply(self, fn, *args, **kwargs):
        self._forget()  # .to()/.half() etc. make every cached form stale
        return super()._apply(fn, *args, **kwargs)

    def extra_repr(self) -> str:
        s = (
            f"{self.in_chs}, {self.out_chs}, direction={self.direction!r}, "
            f"kernel_size={self.kernel_size}, groups={self.groups}"
        )
        s += f", use_pe={self.pe is not None}, bias={self.bias is not None}"
        return s + ("" if self.impl == "auto" else f", impl={self.impl!r}")


def _half_groups(groups_per_half: int | str | None, chs: int) -> int:
    if groups_per_half is None or groups_per_half == "depthwise":
        return chs
    if isinstance(groups_per_half, str) or groups_per_half < 1 or chs % groups_per_half:
        raise ValueError(
            f"groups_per_half must be None, 'depthwise' or an int dividing the half's "
            f"{chs} channels, got {groups_per_half!r}"
        )
    return groups_per_half


@fx_leaf
class ParCPair(nn.Module):
    """The ParC plug-in for a local conv: 'H' ParC on channels[:C//2], 'W' ParC on the rest.

    With odd C the 'W' half gets the extra channel (C - C//2). `kernel_size` is K or
    (kH, kW), the feature map size; `groups_per_half` None / "depthwise" makes each half
    depthwise, an int g gives each half groups=g (1 is dense). Needs C >= 2. In eager
    inference both halves write into one preallocated output (no concatenation).
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int | tuple[int, int],
        groups_per_half: int | str | None = None,
        use_pe: bool = True,
        bias: bool = True,
        impl: str = "auto",
    ):
        super().__init__()
        if channels < 2:
            raise ValueError(f"ParCPair needs at least 2 channels, got {channels}")
        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
        c_h, c_w = channels // 2, channels - channels // 2
        self.channels, self.split = channels, (c_h, c_w)
        self.parc_h = ParC(
            c_h, c_h, "H", kh, _half_groups(groups_per_half, c_h), use_pe, bias, impl
        )
        self.parc_w = ParC(
            c_w, c_w, "W", kw, _half_groups(groups_per_half, c_w), use_pe, bias, impl
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.channels)
        if not eager_inference():
            x_h, x_w = x.split(self.split, dim=1)
            return torch.cat([self.parc_h(x_h), self.parc_w(x_w)], dim=1)
        # Inference: both halves write into one tensor, which saves the concatenation
        # (and for circulant fuses it with the bias add). The backends want NCHW: a
        # channels_last input (timm's ConvNeXt stages pass one) is converted once here
        # and the result converted back, instead of every backend copying its half in and
        # out (measured: 1.34 ms -> 0.87 ms per ConvNeXt-XT stage-3 block at batch 1).
        channels_last = not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
        if channels_last:
            x = x.contiguous()
        x_h, x_w = x.split(self.split, dim=1)
        y = torch.empty(x.shape, dtype=x.dtype, device=x.device)
        y_h, y_w = y.split(self.split, dim=1)
        # Through __call__, not _run: forward hooks on the halves must fire (export's
        # baking and user hooks rely on them).
        self.parc_h(x_h, out=y_h)
        self.parc_w(x_w, out=y_w)
        return y.contiguous(memory_format=torch.channels_last) if channels_last else y
