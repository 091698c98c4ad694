"""ONNX export of small ParC models: no DFT, onnxruntime equals PyTorch, atomic writes."""

from __future__ import annotations

import onnx
import pytest
import torch
from analysis_testkit import TINY_SIZE, tiny_pair

from parc_surgery.analysis.export import export_onnx, onnx_op_types
from parc_surgery.errors import ExportError, OutputError
from parc_surgery.ops import ParCPair


def _dense_net() -> torch.nn.Module:
    torch.manual_seed(1)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        ParCPair(8, (12, 16), groups_per_half=1),  # dense halves, as in ResNet
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(8, 5),
    ).eval()


@pytest.mark.parametrize("impl", ["spatial", "circulant"])
def test_export_matches_pytorch_and_has_no_dft(tmp_path, impl):
    _, converted = tiny_pair()
    target = tmp_path / "tiny.onnx"
    result = export_onnx(converted, target, input_size=TINY_SIZE, impl=impl)
    assert result["ok"] and result["output"] == str(target)
    assert result["opset"] >= 17
    assert result["max_abs_diff"] <= 1e-4
    ops = onnx_op_types(onnx.load(str(target)))
    assert "DFT" not in ops
    assert ("MatMul" in ops) == (impl == "circulant")
    assert [p.name for p in tmp_path.iterdir()] == ["tiny.onnx"]


def test_export_keeps_the_batch_axis_dynamic(tmp_path):
    import onnxruntime

    model = _dense_net()
    target = tmp_path / "dense.onnx"
    export_onnx(model, target, input_size=(12, 16))
    session = onnxruntime.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    x = torch.randn(5, 3, 12, 16)
    (got,) = session.run(None, {"input": x.numpy()})
    with torch.no_grad():
        assert torch.allclose(torch.from_numpy(got), model(x), atol=1e-5)


def test_export_at_another_resolution_resamples_kernels(tmp_path):
    model = _dense_net()
    result = export_onnx(model, tmp_path / "m.onnx", input_size=(20, 24))
    assert result["input_size"] == [20, 24] and result["ok"]


def test_export_keeps_an_existing_file_without_force(tmp_path):
    target = tmp_path / "m.onnx"
    target.write_bytes(b"keep me")
    with pytest.raises(OutputError, match="already exists"):
        export_onnx(_dense_net(), target, input_size=(12, 16))
    assert target.read_bytes() == b"keep me"
    export_onnx(_dense_net(), target, input_size=(12, 16), force=True)
    assert target.read_bytes() != b"keep me"


def test_a_failed_check_raises_export_error_and_writes_nothing(tmp_path):
    target = tmp_path / "m.onnx"
    with pytest.raises(ExportError, match="differs from PyTorch") as info:
        export_onnx(_dense_net(), target, input_size=(12, 16), atol=-1.0)
    assert info.value.exit_code == 9
    assert list(tmp_path.iterdir()) == []


def test_fft_and_unexportable_models_raise_export_error(tmp_path):
    with pytest.raises(ExportError, match="fft"):
        export_onnx(_dense_net(), tmp_path / "m.onnx", input_size=(12, 16), impl="fft")

    class Unexportable(torch.nn.Module):
        def forward(self, x):
            return torch.from_numpy(x.numpy() * 2)  # leaves the traced graph

    with pytest.raises(ExportError):
        export_onnx(Unexportable(), tmp_path / "u.onnx", input_size=(4, 4))
    assert list(tmp_path.iterdir()) == []


def test_export_leaves_the_model_in_its_mode(tmp_path):
    model = _dense_net().train()
    export_onnx(model, tmp_path / "m.onnx", input_size=(12, 16))
    assert model.training


def test_block_level_position_embeddings_resampled_in_the_graph_run_in_onnxruntime(tmp_path):
    # The MobileViT meta-former adds its first pe before a BatchNorm, outside any ParC, so
    # exporting at another size resamples it inside the graph; that graph must load in
    # onnxruntime (a Transpose perm with -1 once failed its type inference).
    from parc_surgery.blocks import ParCMetaFormerBlock

    torch.manual_seed(0)
    block = ParCMetaFormerBlock(8, (6, 6), 16, use_pe=True).eval()
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), block).eval()
    result = export_onnx(net, tmp_path / "mf.onnx", input_size=(10, 8), impl="spatial")
    assert result["ok"] and result["max_abs_diff"] <= 1e-4
