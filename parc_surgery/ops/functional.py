"""Functional ParC: `parc(x, weight, bias, pe, direction, groups, impl)` and its checks."""

from __future__ import annotations

import torch

from .backends import BACKENDS
from .dispatch import IMPLS, choose_impl, current_forced_impl
from .resample import resample_kernel

__all__ = ["parc", "resolve_impl", "check_input", "check_direction", "kernel_axis"]


def check_direction(direction: str) -> str:
    """Return `direction` if it is 'H' or 'W', else raise ValueError."""
    if direction not in ("H", "W"):
        raise ValueError(f"direction must be 'H' or 'W', got {direction!r}")
    return direction


def kernel_axis(direction: str) -> int:
    """Tensor axis (of NCHW and of the weight) that a ParC of `direction` runs along."""
    return 2 if check_direction(direction) == "H" else 3


def check_input(x: torch.Tensor, in_chs: int) -> None:
    """Raise ValueError unless `x` is (B, in_chs, H, W)."""
    if x.dim() != 4 or x.shape[1] != in_chs:
        raise ValueError(f"ParC expects input of shape (B, {in_chs}, H, W), got {tuple(x.shape)}")


def _check_params(weight, bias, pe, direction: str, groups: int) -> tuple[int, int]:
    axis = kernel_axis(direction)
    if weight.dim() != 4 or weight.shape[5 - axis] != 1:
        want = "(O, C/groups, K, 1)" if direction == "H" else "(O, C/groups, 1, K)"
        raise ValueError(f"ParC weight for '{direction}' must be {want}, got {tuple(weight.shape)}")
    out_chs, in_chs = weight.shape[0], weight.shape[1] * groups
    if groups < 1 or out_chs % groups:
        raise ValueError(f"groups={groups} must divide out channels {out_chs}")
    if bias is not None and tuple(bias.shape) != (out_chs,):
        raise ValueError(f"ParC bias must be ({out_chs},), got {tuple(bias.shape)}")
    k = weight.shape[axis]
    if pe is not None:
        want = (1, in_chs, k, 1) if direction == "H" else (1, in_chs, 1, k)
        if tuple(pe.shape) != want:
            raise ValueError(f"ParC pe must be {want}, got {tuple(pe.shape)}")
    return in_chs, k


def resolve_impl(
    impl: str,
    x_shape,
    channels: int,
    groups: int,
    direction: str,
    dtype,
    device="cpu",
    mode: str = "eval",
) -> str:
    """The backend that actually runs: forced > explicit > auto's choice for this shape.

    `mode` "train" (grad enabled) asks auto for the fastest forward + backward.
    """
    forced = current_forced_impl()
    if forced is not None:
        return forced
    if impl != "auto":
        if impl not in IMPLS:
            raise ValueError(f"impl must be 'auto' or one of {IMPLS}, got {impl!r}")
        return impl
    axis = kernel_axis(direction)
    b, _, h, w = x_shape
    other = w if axis == 2 else h
    return choose_impl(x_shape[axis], channels, groups, b, other, dtype, direction, device, mode)


def parc(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    pe: torch.Tensor | None,
    direction: str,
    groups: int = 1,
    impl: str = "auto",
) -> torch.Tensor:
    """One ParC direction (PARC.md sec. 1); weight and pe are resampled if L != K."""
    in_chs, _ = _check_params(weight, bias, pe, direction, groups)
    check_input(x, in_chs)
    axis = kernel_axis(direction)
    length = x.shape[axis]
    mode = "train" if torch.is_grad_enabled() else "eval"
    name = resolve_impl(impl, x.shape, in_chs, groups, direction, x.dtype, x.device, mode)
    weight = resample_kernel(weight, length, axis)
    if pe is not None:
        pe = resample_kernel(pe, length, axis)
    prepare, apply = BACKENDS[name]
    return apply(x, prepare(weight, bias, pe, direction, groups, length), direction, groups)
