"""The ParC operator: backends (spatial, fft, circulant), dispatch, resampling, modules."""

from .dispatch import IMPLS, choose_impl, forced_impl
from .functional import parc
from .modules import ParC, ParCPair
from .resample import resample_kernel

__all__ = [
    "IMPLS",
    "ParC",
    "ParCPair",
    "choose_impl",
    "forced_impl",
    "parc",
    "resample_kernel",
]
