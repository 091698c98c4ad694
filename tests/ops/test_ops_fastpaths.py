"""The inference fast paths (eval + no_grad) agree with the naive loop, and their caches.

The depthwise circulant runs a bmm per sample, pads matrices of tiny L past ATen's
small-GEMM loop, and adds a full-size folded bias at short L; ParCPair writes both
halves into one output and converts channels_last once. Each path is checked against
the loop of PARC.md section 1 in fp32 (1e-5 relative) and fp64 (1e-10).
"""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
import torch
from hypothesis import given, settings
from ops_naive_parc import naive_parc

from parc_surgery.ops import IMPLS, ParC, ParCPair, forced_impl, resample_kernel
from parc_surgery.ops.circulant import FULL_BIAS_MAX_LENGTH, SMALL_GEMM_MACS, prepare_circulant


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def want_pair(m: ParCPair, x: torch.Tensor) -> torch.Tensor:
    """The naive loop on each half, kernels resampled to the map as ParC does."""
    halves = []
    for half, x_half in zip((m.parc_h, m.parc_w), x.split(m.split, dim=1), strict=True):
        axis = 2 if half.direction == "H" else 3
        w = resample_kernel(half.weight, x.shape[axis], axis)
        pe = None if half.pe is None else resample_kernel(half.pe, x.shape[axis], axis)
        halves.append(
            naive_parc(
                x_half.double(), w.double(), _d(half.bias), _d(pe), half.direction, half.groups
            )
        )
    return torch.cat(halves, dim=1)


def _d(t):
    return None if t is None else t.double()


# Lengths on both sides of the padding bound (L**3 < 400) and the full-bias bound.
LENGTHS = st.sampled_from([1, 2, 3, 5, 7, 8, 13, 14, FULL_BIAS_MAX_LENGTH, 29, 33])


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
@settings(max_examples=25, deadline=None, derandomize=True)
@given(
    channels=st.integers(2, 9),
    h=LENGTHS,
    w=LENGTHS,
    batch=st.integers(1, 3),
    groups_per_half=st.sampled_from([None, 1]),
    use_pe=st.booleans(),
    bias=st.booleans(),
    channels_last=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_eager_pair_matches_naive_loop(
    impl, dtype, tol, channels, h, w, batch, groups_per_half, use_pe, bias, channels_last, seed
):
    torch.manual_seed(seed)
    m = ParCPair(channels, (h, w), groups_per_half, use_pe=use_pe, bias=bias, impl=impl)
    m = m.to(dtype).eval()
    x = torch.randn(batch, channels, h, w, dtype=dtype)
    want = want_pair(m, x)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        for _ in range(2):  # built, then from the cache
            got = m(x)
            assert got.dtype == dtype and got.shape == want.shape
            assert rel_err(got.double(), want) <= tol


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
@pytest.mark.parametrize("direction", "HW")
@pytest.mark.parametrize("batch", [1, 4])
def test_depthwise_circulant_at_resampled_lengths(dtype, tol, direction, batch):
    # Built for 12, run at 5 (padded GEMM) and 40 (above the full-bias bound): L != K.
    torch.manual_seed(0)
    m = ParC(6, 6, direction, 12, groups=6, impl="circulant").to(dtype).eval()
    for length in (5, 40, 12):
        shape = (batch, 6, length, 3) if direction == "H" else (batch, 6, 3, length)
        x = torch.randn(*shape, dtype=dtype)
        axis = 2 if direction == "H" else 3
        w, pe = (resample_kernel(t, length, axis) for t in (m.weight, m.pe))
        want = naive_parc(x.double(), w.double(), m.bias.double(), pe.double(), direction, 6)
        with torch.no_grad():
            assert rel_err(m(x).double(), want) <= tol


def test_tiny_lengths_pad_the_gemm_and_larger_ones_do_not():
    w = torch.randn(4, 1, 7, 1)
    form = prepare_circulant(w, None, None, "H", 4, 7)
    rows = form["fast"].shape[1]
    assert rows * 7 * 7 >= SMALL_GEMM_MACS and torch.all(form["fast"][:, 7:] == 0)
    form_w = prepare_circulant(w.transpose(2, 3), None, None, "W", 4, 7)
    assert form_w["fast"].shape[2] == rows
    big = prepare_circulant(torch.randn(4, 1, 8, 1), None, None, "H", 4, 8)
    assert big["fast"] is big["mat"]


def test_full_bias_follows_the_map_shape_for_one_cached_form():
    # The same form (cached per length) serves maps of other widths: the expanded bias
    # is rebuilt for each shape instead of reusing the first one's.
    torch.manual_seed(0)
    m = ParC(3, 3, "H", 6, groups=3, impl="circulant").double().eval()
    with torch.no_grad():
        for width in (6, 2, 9, 2):
            x = torch.randn(2, 3, 6, width, dtype=torch.float64)
            want = naive_parc(x, m.weight, m.bias, m.pe, "H", 3)
            torch.testing.assert_close(m(x), want, rtol=1e-10, atol=1e-10)
    assert len(m._forms) == 1


@pytest.mark.parametrize("impl", IMPLS)
def test_pair_cache_follows_in_place_weight_changes(impl):
    torch.manual_seed(0)
    m = ParCPair(8, 7, impl=impl).eval()
    x = torch.randn(2, 8, 7, 7)
    with torch.no_grad():
        first = m(x)
        m.parc_w.weight.mul_(-1.0)
        m.parc_h.pe.add_(1.0)
        changed = m(x)
    assert not torch.allclose(first, changed)
    torch.testing.assert_close(changed.double(), want_pair(m, x), rtol=1e-5, atol=1e-5)


def test_forward_hooks_on_the_halves_fire_in_inference():
    m = ParCPair(6, 5).eval()
    seen = []
    for half in (m.parc_h, m.parc_w):
        half.register_forward_pre_hook(lambda mod, args: seen.append(mod.direction))
    with torch.no_grad():
        m(torch.randn(1, 6, 5, 5))
    assert seen == ["H", "W"]


def test_a_parameter_set_to_none_after_construction_still_runs():
    torch.manual_seed(0)
    m = ParC(4, 4, "W", 6, groups=4).double().eval()
    m.pe = None  # a registered parameter removed: _parameters keeps the key with None
    x = torch.randn(1, 4, 3, 6, dtype=torch.float64)
    with torch.no_grad():
        got = m(x)
    torch.testing.assert_close(got, naive_parc(x, m.weight, m.bias, None, "W", 4))


def test_set_impl_validates_and_drops_cached_choices():
    m = ParC(4, 4, "H", 6, groups=4).eval()
    x = torch.randn(1, 4, 6, 6)
    with torch.no_grad():
        m(x)
    assert m._forms
    m.set_impl("spatial")
    assert not m._forms and not m._routes and m.impl == "spatial"
    assert m._route(x) == "spatial"
    with pytest.raises(ValueError, match="impl"):
        m.set_impl("winograd")


def test_route_follows_forced_impl_and_grad_mode(monkeypatch):
    from parc_surgery.ops import dispatch

    times = {"spatial": 2.0, "fft": 3.0, "circulant": 1.0}
    train_times = {"spatial": 1.0, "fft": 3.0, "circulant": 2.0}
    entries = [
        {"kind": "depthwise", "length": 6, "lines": 24, "times": times},
        {"kind": "depthwise", "length": 6, "lines": 24, "mode": "train", "times": train_times},
    ]
    monkeypatch.setattr(dispatch, "_calibration", {"entries": entries})
    m = ParC(4, 4, "H", 6, groups=4)
    x = torch.randn(1, 4, 6, 6)
    with torch.no_grad():
        assert m._route(x) == "circulant"
        with forced_impl("fft"):
            assert m._route(x) == "fft"
    assert m._route(x) == "spatial"  # grad enabled: the forward + backward entries decide


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("size,built", [((7, 7), (7, 7)), ((14, 5), (9, 12)), ((30, 2), (30, 2))])
@pytest.mark.parametrize("batch", [1, 3])
def test_grouped_halves_in_inference_match_naive_loop(impl, size, built, batch):
    torch.manual_seed(0)
    m = ParCPair(12, built, groups_per_half=2, impl=impl).eval()  # 6 channels, 2 groups
    x = torch.randn(batch, 12, *size)
    with torch.no_grad():
        for _ in range(2):
            assert rel_err(m(x).double(), want_pair(m, x)) <= 1e-5
