"""Each model family, converted at 64x64 with the shipped rules, exports to ONNX."""

from __future__ import annotations

import onnx
import pytest
from analysis_testkit import converted_pair

from parc_surgery.analysis.export import export_onnx, onnx_op_types

FAMILIES = ["resnet26", "mobilenetv2_050", "convnext_atto", "mobilevit_xxs"]


@pytest.mark.parametrize("model", FAMILIES)
def test_onnx_export_equals_pytorch(tmp_path, model):
    pair = converted_pair(model)
    assert pair.plan.swaps, f"the shipped rules swap nothing in {model}"
    target = tmp_path / f"{model}.onnx"
    result = export_onnx(pair.converted, target, input_size=pair.input_size)
    assert result["ok"] and result["max_abs_diff"] <= 1e-4
    assert "DFT" not in onnx_op_types(onnx.load(str(target)))
