"""Every backend against the naive loop of PARC.md sec. 1, forward and backward."""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from ops_naive_parc import naive_parc

from parc_surgery.ops import IMPLS, ParCPair, parc, resample_kernel

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True)


@st.composite
def parc_case(draw, max_len=40):
    """A random ParC problem: shapes, groups (dense, grouped, depthwise), pe and bias on/off."""
    groups = draw(st.integers(1, 3))
    cg = draw(st.integers(1, 3))  # in channels per group; 1 is depthwise
    og = draw(st.integers(1, 2))  # out channels per group
    h = draw(st.integers(1, max_len))
    w = draw(st.integers(1, 12))
    direction = draw(st.sampled_from("HW"))
    if direction == "W":
        h, w = w, h
    length = h if direction == "H" else w
    use_pe, use_bias = draw(st.booleans()), draw(st.booleans())
    batch = draw(st.integers(1, 2))
    seed = draw(st.integers(0, 2**16))
    return dict(
        groups=groups,
        cg=cg,
        og=og,
        shape=(batch, groups * cg, h, w),
        direction=direction,
        length=length,
        use_pe=use_pe,
        use_bias=use_bias,
        seed=seed,
    )


def make_tensors(case, dtype, requires_grad=False):
    gen = torch.Generator().manual_seed(case["seed"])
    length, d = case["length"], case["direction"]
    in_chs, out_chs = case["shape"][1], case["groups"] * case["og"]
    k_shape = (length, 1) if d == "H" else (1, length)

    def rnd(*shape):
        return torch.randn(*shape, generator=gen, dtype=dtype).requires_grad_(requires_grad)

    x = rnd(*case["shape"])
    weight = rnd(out_chs, case["cg"], *k_shape)
    bias = rnd(out_chs) if case["use_bias"] else None
    pe = rnd(1, in_chs, *k_shape) if case["use_pe"] else None
    return x, weight, bias, pe


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
@SETTINGS
@given(case=parc_case())
def test_forward_matches_naive_loop(impl, dtype, tol, case):
    x, weight, bias, pe = make_tensors(case, dtype)
    want = naive_parc(x, weight, bias, pe, case["direction"], case["groups"])
    # fp32 runs the no-grad inference shortcuts (in-place, out=), fp64 the autograd path.
    with torch.set_grad_enabled(dtype == torch.float64):
        got = parc(x, weight, bias, pe, case["direction"], case["groups"], impl=impl)
    assert got.shape == want.shape and got.dtype == dtype
    assert rel_err(got, want) <= tol


@pytest.mark.parametrize("impl", IMPLS)
@settings(max_examples=20, deadline=None, derandomize=True)
@given(case=parc_case(max_len=20))
def test_gradients_match_naive_loop(impl, case):
    tensors = make_tensors(case, torch.float64, requires_grad=True)
    leaves = [t for t in tensors if t is not None]
    probe = torch.randn(
        case["shape"][0], case["groups"] * case["og"], *case["shape"][2:], dtype=torch.float64
    )
    want_y = naive_parc(*tensors, case["direction"], case["groups"])
    want = torch.autograd.grad((want_y * probe).sum(), leaves)
    got_y = parc(*tensors, case["direction"], case["groups"], impl=impl)
    got = torch.autograd.grad((got_y * probe).sum(), leaves)
    for g, w in zip(got, want, strict=True):
        assert rel_err(g, w) <= 1e-10


@pytest.mark.parametrize("impl", IMPLS)
@SETTINGS
@given(case=parc_case(max_len=24), runtime=st.integers(1, 24))
def test_runtime_length_resamples_kernel_and_pe(impl, case, runtime):
    x, weight, bias, pe = make_tensors(case, torch.float64)
    axis = 2 if case["direction"] == "H" else 3
    x = x.narrow(axis, 0, 1).repeat_interleave(runtime, dim=axis) + torch.randn(
        *x.shape[:axis], runtime, *x.shape[axis + 1 :], dtype=torch.float64
    )
    w_l = resample_kernel(weight, runtime, axis)
    pe_l = None if pe is None else resample_kernel(pe, runtime, axis)
    want = naive_parc(x, w_l, bias, pe_l, case["direction"], case["groups"])
    got = parc(x, weight, bias, pe, case["direction"], case["groups"], impl=impl)
    assert rel_err(got, want) <= 1e-10


@SETTINGS
@given(case=parc_case())
def test_spatial_at_built_length_is_the_official_expression(case):
    x, weight, bias, pe = make_tensors(case, torch.float32)
    xt = x if pe is None else x + pe
    if case["direction"] == "H":
        official = F.conv2d(
            torch.cat([xt, xt[:, :, :-1]], dim=2), weight, bias, groups=case["groups"]
        )
    else:
        official = F.conv2d(
            torch.cat([xt, xt[..., :-1]], dim=3), weight, bias, groups=case["groups"]
        )
    got = parc(x, weight, bias, pe, case["direction"], case["groups"], impl="spatial")
    torch.testing.assert_close(got, official, rtol=0, atol=0)


@pytest.mark.parametrize("impl", IMPLS)
def test_backends_agree_in_bfloat16(impl):
    torch.manual_seed(0)
    x = torch.randn(2, 6, 14, 9)
    weight, bias, pe = torch.randn(6, 1, 14, 1) / 4, torch.randn(6), torch.randn(1, 6, 14, 1)
    want = naive_parc(x.double(), weight.double(), bias.double(), pe.double(), "H", 6)
    args = [t.bfloat16() for t in (x, weight, bias, pe)]
    got = parc(*args, "H", 6, impl=impl)
    assert got.dtype == torch.bfloat16
    assert rel_err(got.double(), want) < 3e-2


@pytest.mark.parametrize("impl", IMPLS)
@settings(max_examples=15, deadline=None, derandomize=True)
@given(
    channels=st.integers(2, 7),
    size=st.tuples(st.integers(1, 20), st.integers(1, 20)),
    built=st.tuples(st.integers(1, 20), st.integers(1, 20)),
    groups_per_half=st.sampled_from([None, 1]),
    batch=st.integers(1, 3),
    channels_last=st.booleans(),
)
def test_pair_inference_matches_naive_loop(
    impl, channels, size, built, groups_per_half, batch, channels_last
):
    # Eval + no_grad: the cached forms and the one-output-tensor path of ParCPair.
    m = ParCPair(channels, built, groups_per_half, impl=impl).double().eval()
    x = torch.randn(batch, channels, *size, dtype=torch.float64)
    halves = []
    for half, x_half in zip((m.parc_h, m.parc_w), x.split(m.split, dim=1), strict=True):
        axis = 2 if half.direction == "H" else 3
        w = resample_kernel(half.weight, x.shape[axis], axis)
        pe = resample_kernel(half.pe, x.shape[axis], axis)
        halves.append(naive_parc(x_half, w, half.bias, pe, half.direction, half.groups))
    want = torch.cat(halves, dim=1)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        torch.testing.assert_close(m(x), want, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(m(x), want, rtol=1e-10, atol=1e-10)  # from the cache
        if channels_last:  # the memory format the next layer expects is kept
            assert m(x).is_contiguous(memory_format=torch.channels_last)
