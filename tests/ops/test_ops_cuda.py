"""Every backend on CUDA (fp32 and bf16), forward and backward; skipped without a GPU.

The reference is the naive loop in float64 on the CPU. TF32 is switched off for these
tests: with it cuDNN and cuBLAS round fp32 inputs to 10-bit mantissas (about 1e-3).
"""

from __future__ import annotations

import pytest
import torch
from ops_naive_parc import naive_parc

from parc_surgery.ops import IMPLS, ParC, ParCPair, resample_kernel

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
CUDA = "cuda"


@pytest.fixture(autouse=True)
def no_tf32():
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def rel_err(a, b):
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def reference(m: ParCPair, x: torch.Tensor) -> torch.Tensor:
    """The naive loop per half, on the CPU in float64, kernels resampled to the map."""
    x = x.detach().double().cpu()
    halves = []
    for half, x_half in zip((m.parc_h, m.parc_w), x.split(m.split, dim=1), strict=True):
        axis = 2 if half.direction == "H" else 3
        cpu = {
            n: None if p is None else p.detach().double().cpu()
            for n, p in (("w", half.weight), ("b", half.bias), ("pe", half.pe))
        }
        w = resample_kernel(cpu["w"], x.shape[axis], axis)
        pe = None if cpu["pe"] is None else resample_kernel(cpu["pe"], x.shape[axis], axis)
        halves.append(naive_parc(x_half, w, cpu["b"], pe, half.direction, half.groups))
    return torch.cat(halves, dim=1)


@pytest.mark.parametrize("impl", [*IMPLS, "auto"])
@pytest.mark.parametrize("groups_per_half", [None, 1, 2])
@pytest.mark.parametrize("shape", [(1, 8, 7, 7), (3, 8, 14, 10), (2, 8, 5, 30)])
def test_fp32_forward_and_backward_match_the_naive_loop(impl, groups_per_half, shape):
    torch.manual_seed(0)
    m = ParCPair(shape[1], (12, 12), groups_per_half, impl=impl).to(CUDA)
    x = torch.randn(*shape, device=CUDA, requires_grad=True)
    y = m(x)  # train mode, grad: the autograd path
    assert y.device.type == "cuda" and y.dtype == torch.float32
    assert rel_err(y, reference(m, x)) <= 1e-5
    # gradients: against the same module in float64 on the CPU (autograd of the loop)
    probe = torch.randn_like(y)
    (y * probe).sum().backward()
    m64 = ParCPair(shape[1], (12, 12), groups_per_half, impl="spatial").double()
    m64.load_state_dict({k: v.double().cpu() for k, v in m.state_dict().items()})
    x64 = x.detach().double().cpu().requires_grad_(True)
    (m64(x64) * probe.double().cpu()).sum().backward()
    assert rel_err(x.grad, x64.grad) <= 1e-5
    for (name, p), (_, p64) in zip(m.named_parameters(), m64.named_parameters(), strict=True):
        assert rel_err(p.grad, p64.grad) <= 1e-5, name
    m.eval()
    with torch.no_grad():  # the inference fast paths and their cache
        for _ in range(2):
            assert rel_err(m(x), reference(m, x)) <= 1e-5


@pytest.mark.parametrize("impl", IMPLS)
def test_bf16_runs_on_cuda_within_bf16_rounding(impl):
    torch.manual_seed(0)
    m = ParCPair(8, 14, impl=impl).to(CUDA)
    x = torch.randn(2, 8, 14, 14, device=CUDA)
    want = reference(m, x)
    mb, xb = m.to(torch.bfloat16), x.to(torch.bfloat16).requires_grad_(True)
    y = mb(xb)
    assert y.dtype == torch.bfloat16 and y.device.type == "cuda"
    assert rel_err(y, want) < 3e-2
    y.float().sum().backward()
    assert xb.grad is not None and mb.parc_h.weight.grad is not None
    mb.eval()
    with torch.no_grad():
        assert rel_err(mb(xb), want) < 3e-2


@pytest.mark.parametrize("impl", IMPLS)
def test_channels_last_and_moving_between_devices(impl):
    torch.manual_seed(0)
    m = ParCPair(6, 9, impl=impl).eval()
    x = torch.randn(2, 6, 9, 9)
    with torch.no_grad():
        on_cpu = m(x)  # caches CPU forms
        m.to(CUDA)  # which .to() must drop
        x_cl = x.to(CUDA).contiguous(memory_format=torch.channels_last)
        got = m(x_cl)
        assert got.is_contiguous(memory_format=torch.channels_last)
        assert rel_err(got, on_cpu) <= 1e-5
        assert all(key[3].type == "cuda" for key in m.parc_h._forms)


def test_auto_on_cuda_chooses_per_shape_and_runs():
    m = ParC(16, 16, "W", 56, groups=16).to(CUDA).eval()
    x = torch.randn(1, 16, 56, 56, device=CUDA)
    assert m.resolved_impl(x.shape, x.dtype, x.device) in IMPLS
    with torch.no_grad():
        assert m(x).shape == x.shape


def test_bench_pair_on_cuda():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "analysis"))
    from analysis_testkit import TINY_SIZE, tiny_pair

    from parc_surgery.analysis.bench import bench_pair

    original, converted = tiny_pair()
    result = bench_pair(original, converted, TINY_SIZE, runs=2, warmup=1, device=CUDA)
    assert result["device"].startswith("cuda") and result["original"]["latency_ms"]["runs"] == 2
