"""ParC / ParCPair modules: parameters, init, caching, errors, dtypes, layouts, compile."""

from __future__ import annotations

import math

import pytest
import torch
from ops_naive_parc import naive_parc

from parc_surgery.ops import IMPLS, ParC, ParCPair, choose_impl, forced_impl, parc


@pytest.mark.parametrize("direction,k_shape", [("H", (7, 1)), ("W", (1, 7))])
def test_parameter_names_and_shapes(direction, k_shape):
    m = ParC(8, 12, direction, 7, groups=4)
    assert dict(m.named_parameters()).keys() == {"weight", "bias", "pe"}
    assert m.weight.shape == (12, 2, *k_shape)
    assert m.bias.shape == (12,)
    assert m.pe.shape == (1, 8, *k_shape)
    bare = ParC(8, 8, direction, 7, use_pe=False, bias=False)
    assert bare.bias is None and bare.pe is None
    assert set(bare.state_dict()) == {"weight"}


def test_init_follows_conv2d_and_trunc_normal():
    torch.manual_seed(0)
    m = ParC(64, 64, "H", 14, groups=1)
    bound = 1 / math.sqrt(64 * 14)  # kaiming_uniform(a=sqrt(5)) and bias both give this
    assert m.weight.abs().max() <= bound and m.weight.abs().max() > 0.9 * bound
    assert m.bias.abs().max() <= bound
    assert 0.015 < m.pe.std() < 0.025  # timm and torch truncate at +-2 absolute, not 2 std


@pytest.mark.parametrize("impl", IMPLS)
def test_module_matches_naive_loop_nonsquare(impl):
    torch.manual_seed(0)
    for direction in "HW":
        m = ParC(6, 6, direction, 9, groups=3, impl=impl).double()
        x = (
            torch.randn(2, 6, 9, 9, dtype=torch.float64)[..., :5]
            if direction == "H"
            else torch.randn(2, 6, 4, 9, dtype=torch.float64)
        )
        want = naive_parc(x, m.weight, m.bias, m.pe, direction, 3)
        torch.testing.assert_close(m(x), want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("impl", IMPLS)
def test_eval_cache_follows_weight_changes_and_train(impl):
    torch.manual_seed(0)
    m = ParC(4, 4, "W", 8, groups=4, impl=impl).eval()
    x = torch.randn(2, 4, 3, 8)
    with torch.no_grad():
        first = m(x)
        assert len(m._forms) == 1
        torch.testing.assert_close(m(x), first)
        m.weight.mul_(2.0)
        m.pe.zero_()
        changed = m(x)
    want = parc(x, m.weight, m.bias, m.pe, "W", 4, impl=impl)
    torch.testing.assert_close(changed, want)
    assert not torch.allclose(changed, first)
    m.train()
    assert not m._forms
    m.load_state_dict({k: torch.ones_like(v) for k, v in m.state_dict().items()})
    m.eval()
    with torch.inference_mode():
        torch.testing.assert_close(m(x), parc(x, m.weight, m.bias, m.pe, "W", 4, impl=impl))


def test_cache_is_not_in_state_dict_and_unused_with_grad():
    m = ParC(4, 4, "H", 5).eval()
    x = torch.randn(1, 4, 5, 5)
    m(x)
    assert not m._forms  # grad enabled: no cache
    with torch.no_grad():
        m(x)
    assert m._forms and set(m.state_dict()) == {"weight", "bias", "pe"}


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_dtypes_layouts_and_batch_one(impl, dtype):
    torch.manual_seed(0)
    m = ParCPair(10, (7, 5), impl=impl).to(dtype)
    x = torch.randn(1, 10, 7, 5, dtype=dtype)
    y = m(x)
    assert y.dtype == dtype and y.shape == x.shape
    y_cl = m(x.contiguous(memory_format=torch.channels_last))
    tol = 2e-2 if dtype == torch.bfloat16 else 1e-5
    torch.testing.assert_close(y_cl, y, rtol=tol, atol=tol)
    y.float().sum().backward()
    assert m.parc_h.weight.grad is not None and m.parc_w.pe.grad is not None


def test_pair_split_odd_channels_nonsquare_and_kernel_tuple():
    torch.manual_seed(0)
    m = ParCPair(7, (6, 10), groups_per_half=None).double()
    assert (m.parc_h.in_chs, m.parc_w.in_chs) == (3, 4)
    assert m.parc_h.weight.shape == (3, 1, 6, 1) and m.parc_w.weight.shape == (4, 1, 1, 10)
    x = torch.randn(2, 7, 6, 10, dtype=torch.float64)
    want = torch.cat(
        [
            naive_parc(x[:, :3], m.parc_h.weight, m.parc_h.bias, m.parc_h.pe, "H", 3),
            naive_parc(x[:, 3:], m.parc_w.weight, m.parc_w.bias, m.parc_w.pe, "W", 4),
        ],
        dim=1,
    )
    torch.testing.assert_close(m(x), want, rtol=1e-10, atol=1e-10)
    m.eval()
    with torch.no_grad():
        torch.testing.assert_close(m(x), want, rtol=1e-10, atol=1e-10)
        assert m(torch.randn(1, 7, 12, 3, dtype=torch.float64)).shape == (1, 7, 12, 3)


def test_pair_groups_per_half():
    dense = ParCPair(8, 4, groups_per_half=1)
    assert dense.parc_h.groups == 1 and dense.parc_h.weight.shape == (4, 4, 4, 1)
    grouped = ParCPair(8, 4, groups_per_half=2)
    assert grouped.parc_w.groups == 2 and grouped.parc_w.weight.shape == (4, 2, 1, 4)
    assert ParCPair(8, 4, groups_per_half="depthwise").parc_w.groups == 4


@pytest.mark.parametrize(
    "build,match",
    [
        (lambda: ParC(4, 4, "X", 5), "direction"),
        (lambda: ParC(4, 4, "H", 0), "kernel_size"),
        (lambda: ParC(4, 6, "H", 5, groups=4), "groups=4"),
        (lambda: ParC(4, 4, "H", 5, impl="magic"), "impl"),
        (lambda: ParCPair(6, 5, groups_per_half=2), "groups_per_half"),
        (lambda: ParCPair(1, 5), "at least 2"),
    ],
)
def test_bad_construction_raises_value_error(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_bad_input_names_expected_and_received_shape():
    m = ParC(4, 4, "H", 5)
    with pytest.raises(ValueError, match=r"\(B, 4, H, W\).*\(2, 3, 5, 5\)"):
        m(torch.randn(2, 3, 5, 5))
    with pytest.raises(ValueError, match=r"\(B, 4, H, W\).*\(4, 5, 5\)"):
        m(torch.randn(4, 5, 5))
    with pytest.raises(ValueError, match=r"\(B, 6, H, W\).*\(1, 5, 3, 3\)"):
        ParCPair(6, 3)(torch.randn(1, 5, 3, 3))
    with pytest.raises(ValueError, match="direction"):
        parc(torch.randn(1, 4, 5, 5), m.weight, None, None, "D", 1)
    with pytest.raises(ValueError, match=r"\(O, C/groups, 1, K\).*\(4, 4, 5, 1\)"):
        parc(torch.randn(1, 4, 5, 5), m.weight, None, None, "W", 1)


def test_forced_impl_overrides_every_module_and_nests():
    m = ParCPair(8, 14, impl="fft")
    x = torch.randn(1, 8, 14, 14)
    assert m.parc_h.resolved_impl(x.shape) == "fft"
    with forced_impl("spatial"):
        assert m.parc_w.resolved_impl(x.shape) == "spatial"
        assert choose_impl(224, 16, 16, 8, 224, torch.float32) == "spatial"
        with forced_impl("circulant"):
            assert m.parc_h.resolved_impl(x.shape) == "circulant"
        assert m.parc_h.resolved_impl(x.shape) == "spatial"
    assert m.parc_h.resolved_impl(x.shape) == "fft"
    with pytest.raises(ValueError), forced_impl("winograd"):
        pass


@pytest.mark.parametrize("impl,expected", [("spatial", "convolution"), ("circulant", "bmm")])
def test_forced_backend_has_no_fft_in_the_trace(impl, expected):
    from torch.utils.flop_counter import FlopCounterMode

    m = ParCPair(8, 56, impl="fft").eval()  # forced_impl beats even an explicit impl
    x = torch.randn(2, 8, 56, 56)
    with forced_impl(impl), torch.no_grad(), FlopCounterMode(display=False) as counter:
        m(x)
    ops = {str(op) for op in counter.get_flop_counts()["Global"]}
    assert any(expected in op for op in ops)
    with torch.no_grad(), torch.profiler.profile() as prof, forced_impl(impl):
        m(x)
    names = {e.name for e in prof.events()}
    assert not any("fft" in n for n in names), names


def test_choose_impl_returns_a_backend():
    for length in (1, 7, 14, 56, 224):
        for groups in (1, 64):
            assert choose_impl(length, 64, groups, 1, length, torch.float32) in IMPLS
    assert choose_impl(56, 256, 1, 1, 56, torch.float32) != "circulant"  # 800 MB of matrices


@pytest.mark.parametrize("impl", IMPLS)
def test_module_compiles_on_cpu(impl):
    # aot_eager runs dynamo and AOT autograd without a C++ toolchain, so the test stays
    # fast; the default inductor backend was checked by hand on torch 2.x CPU.
    torch._dynamo.reset()
    m = ParCPair(4, (5, 6), impl=impl)
    x = torch.randn(2, 4, 5, 6, requires_grad=True)
    want = m(x)
    compiled = torch.compile(m, backend="aot_eager", fullgraph=True)
    got = compiled(x)
    torch.testing.assert_close(got, want)
    got.sum().backward()
    assert m.parc_h.weight.grad is not None
    m.eval()
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), m(x))
