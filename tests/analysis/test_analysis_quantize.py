"""`export --quantize int8`: a QDQ INT8 file that onnxruntime runs, with its accuracy check."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import parc_surgery as ps
import parc_surgery.cli.analysis  # noqa: F401  (registers export on `app`)
from parc_surgery.cli import app

ROOT = Path(__file__).resolve().parents[2]
SIZE = 32


def run(*args: str):
    return CliRunner().invoke(app, list(args))


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    spec = importlib.util.spec_from_file_location(
        "make_digits", ROOT / "examples" / "make_digits.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    path = tmp_path_factory.mktemp("digits") / "digits"
    module.write_digits(path, size=SIZE, per_class=5)
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """mobilenetv2_050 (BatchNorms, 10 classes) converted at 32x32, saved."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        path = tmp_path_factory.mktemp("q") / "mnv2-parc.safetensors"
        ps.convert(
            "mobilenetv2_050",
            model_args={"num_classes": 10},
            input_size=(SIZE, SIZE),
            output=str(path),
        )
    return path


def test_int8_export_writes_a_qdq_model_that_runs_and_reports_top1(tmp_path, checkpoint, digits):
    import numpy as np
    import onnx
    import onnxruntime

    from parc_surgery.analysis.export import onnx_op_types

    target = tmp_path / "int8.onnx"
    result = run(
        "export",
        str(checkpoint),
        "--out",
        str(target),
        "--quantize",
        "int8",
        "--calibration-data",
        str(digits),
        "--calibration-images",
        "16",
        "--format",
        "json",
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["output"] == str(target) and data["quantize"] == "int8"
    assert "path" not in data  # the file a command wrote is `output` in every command
    assert data["calibration_images"] == 16 and data["calibration_split"] == "train"
    assert data["val_images"] > 0
    assert 0.0 <= data["fp32_top1"] <= 100.0 and 0.0 <= data["int8_top1"] <= 100.0
    ops = onnx_op_types(onnx.load(str(target)))
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert data["bytes"] < data["fp32_bytes"]  # int8 weights
    session = onnxruntime.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: np.zeros((2, 3, SIZE, SIZE), "f")})
    assert out.shape == (2, 10)
    assert [p.name for p in tmp_path.iterdir()] == ["int8.onnx"]


def test_int8_export_table_prints_fp32_and_int8_top1(tmp_path, checkpoint, digits):
    target = tmp_path / "int8.onnx"
    args = ["--quantize", "int8", "--calibration-data", str(digits), "--calibration-images", "8"]
    result = run("export", str(checkpoint), "--out", str(target), *args)
    assert result.exit_code == 0, result.output
    assert "INT8" in result.stderr and "FP32" in result.stderr and "top-1" in result.stderr


def test_quantize_without_calibration_data_is_a_usage_error(tmp_path, checkpoint):
    target = tmp_path / "int8.onnx"
    result = run("export", str(checkpoint), "--out", str(target), "--quantize", "int8")
    assert result.exit_code == 2, result.output
    assert "--calibration-data" in result.stderr and "Traceback" not in result.output
    assert not target.exists()


def test_missing_calibration_folder_is_a_data_error(tmp_path, checkpoint):
    target = tmp_path / "int8.onnx"
    missing = tmp_path / "nowhere"
    result = run(
        "export", str(checkpoint), "--out", str(target), "--quantize", "int8",
        "--calibration-data", str(missing),
    )  # fmt: skip
    assert result.exit_code == 10, result.output
    assert "does not exist" in result.stderr and "Traceback" not in result.output
    assert not target.exists()


def test_quantize_without_onnxruntime_names_the_onnx_extra(monkeypatch, tmp_path, checkpoint):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    result = run(
        "export", str(checkpoint), "--out", str(tmp_path / "q.onnx"), "--quantize", "int8",
        "--calibration-data", str(tmp_path),
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "pip install 'parc-surgery[onnx]'" in lines[0]


def test_convs_whose_bias_the_exporter_shares_are_quantized(tmp_path):
    """Equal initializers are exported once, the others as Identity of it: pre-processing
    folds those, or the convs behind them stay FP32 between Dequantize / Quantize pairs."""
    import onnx

    from parc_surgery.analysis.export import trace_to_onnx
    from parc_surgery.analysis.quantize import quantize_qdq

    convs = [torch.nn.Conv2d(4, 4, 1) for _ in range(3)]
    for conv in convs:
        torch.nn.init.zeros_(conv.bias)  # what a folded BatchNorm at its init gives
    fp32, int8 = tmp_path / "fp32.onnx", tmp_path / "int8.onnx"
    x = torch.randn(1, 4, 8, 8)
    trace_to_onnx(torch.nn.Sequential(*convs).eval(), fp32, x)
    assert "Identity" in {node.op_type for node in onnx.load(str(fp32)).graph.node}
    calib = [torch.randn(1, 4, 8, 8).numpy() for _ in range(4)]
    quantize_qdq(fp32, int8, calib, onnx.load(str(fp32)).graph.input[0].name)
    graph = onnx.load(str(int8)).graph
    made_by = {out: node.op_type for node in graph.node for out in node.output}
    conv_nodes = [node for node in graph.node if node.op_type == "Conv"]
    assert len(conv_nodes) == 3
    assert all(made_by.get(i) == "DequantizeLinear" for n in conv_nodes for i in n.input)


def test_graphs_with_gelu_quantize_only_conv_matmul_gemm(tmp_path):
    from parc_surgery.analysis.export import trace_to_onnx
    from parc_surgery.analysis.quantize import TRANSFORMER_OP_TYPES, quantize_op_types

    x = torch.randn(1, 8)
    gelu, relu = tmp_path / "gelu.onnx", tmp_path / "relu.onnx"
    trace_to_onnx(torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.GELU()).eval(), gelu, x)
    trace_to_onnx(torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU()).eval(), relu, x)
    assert quantize_op_types(gelu) == list(TRANSFORMER_OP_TYPES)
    assert quantize_op_types(relu) is None
