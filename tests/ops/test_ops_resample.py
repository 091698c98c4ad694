"""Kernel / pe resampling to the runtime length (linear, align_corners=True)."""

from __future__ import annotations

import hypothesis.strategies as st
import numpy as np
import pytest
import torch
from hypothesis import given, settings

from parc_surgery.ops import resample_kernel

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True)


@SETTINGS
@given(k=st.integers(1, 40), dim=st.sampled_from([2, 3, -1]))
def test_same_length_is_identity(k, dim):
    t = torch.randn(3, 2, k, k)
    assert resample_kernel(t, k, dim) is t


@SETTINGS
@given(k=st.integers(1, 40), length=st.integers(1, 60), value=st.floats(-3, 3))
def test_constant_kernel_stays_constant(k, length, value):
    t = torch.full((4, 1, 1, k), value, dtype=torch.float64)
    out = resample_kernel(t, length, 3)
    assert out.shape == (4, 1, 1, length)
    torch.testing.assert_close(out, torch.full_like(out, value))


@SETTINGS
@given(k=st.integers(2, 40), length=st.integers(2, 60))
def test_matches_numpy_linear_interpolation_with_aligned_corners(k, length):
    t = torch.randn(2, 3, k, 1, dtype=torch.float64)
    out = resample_kernel(t, length, 2)
    grid = np.linspace(0, k - 1, length)  # align_corners: end points map onto end points
    want = np.stack(
        [[np.interp(grid, np.arange(k), row) for row in ch] for ch in t[..., 0].numpy()]
    )
    np.testing.assert_allclose(out[..., 0].numpy(), want, rtol=1e-12, atol=1e-12)
    assert out[:, :, 0].equal(t[:, :, 0]) and out[:, :, -1].allclose(t[:, :, -1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_keeps_dtype_and_gradient(dtype):
    t = torch.randn(2, 1, 5, 1, dtype=dtype, requires_grad=True)
    out = resample_kernel(t, 9, 2)
    assert out.dtype == dtype and out.shape == (2, 1, 9, 1)
    out.float().sum().backward()
    assert t.grad is not None


def test_bad_length_raises():
    with pytest.raises(ValueError, match="length"):
        resample_kernel(torch.randn(1, 1, 3, 1), 0, 2)
