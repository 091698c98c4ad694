"""How `auto` chooses: calibration table lookup, memory guard, analytic fallback."""

from __future__ import annotations

import json

import pytest
import torch

from parc_surgery.ops import IMPLS, ParC, choose_impl, dispatch


@pytest.fixture
def table(monkeypatch):
    """Install a synthetic calibration table for one test."""

    def install(entries):
        monkeypatch.setattr(dispatch, "_calibration", {"entries": entries})

    yield install


def entry(kind, length, lines, fastest, direction="H"):
    times = {name: 2.0 for name in IMPLS}
    times[fastest] = 1.0
    return {"kind": kind, "direction": direction, "length": length, "lines": lines, "times": times}


def test_nearest_entry_of_the_same_kind_decides(table):
    table(
        [
            entry("depthwise", 14, 8 * 192 * 14, "circulant"),
            entry("depthwise", 224, 8 * 16 * 224, "fft"),
            entry("dense", 14, 128 * 14, "spatial"),
        ]
    )
    assert choose_impl(14, 192, 192, 8, 14) == "circulant"
    assert choose_impl(20, 64, 64, 1, 20) == "circulant"
    assert choose_impl(160, 32, 32, 4, 160) == "fft"
    assert choose_impl(14, 128, 1, 1, 14) == "spatial"  # dense never reads depthwise rows


def test_direction_prefers_entries_of_that_direction(table):
    table(
        [entry("depthwise", 56, 1000, "fft", "H"), entry("depthwise", 56, 1000, "circulant", "W")]
    )
    assert choose_impl(56, 64, 64, 1, 56, torch.float32, "H") == "fft"
    assert choose_impl(56, 64, 64, 1, 56, torch.float32, "W") == "circulant"


def test_circulant_is_ruled_out_when_its_matrices_are_huge(table):
    table([entry("dense", 56, 256 * 56, "circulant")])
    assert choose_impl(56, 256, 1, 1, 56) != "circulant"


def test_analytic_model_without_a_table(table):
    table([])
    assert choose_impl(224, 16, 16, 8, 224) == "fft"
    assert choose_impl(7, 384, 384, 8, 7) in IMPLS
    assert choose_impl(1, 4, 4, 1, 1) == "spatial"


def test_module_auto_follows_the_table(table):
    table([entry("depthwise", 8, 64, "fft", "H"), entry("depthwise", 8, 64, "circulant", "W")])
    assert ParC(8, 8, "H", 8, groups=8).resolved_impl((1, 8, 8, 8)) == "fft"
    assert ParC(8, 8, "W", 8, groups=8).resolved_impl((1, 8, 8, 8)) == "circulant"


def test_shipped_calibration_parses_and_covers_both_kinds():
    data = json.loads(
        dispatch.resources.files("parc_surgery.ops").joinpath("calibration.json").read_text()
    )
    kinds = {e["kind"] for e in data["entries"]}
    assert kinds == {"depthwise", "dense"}
    for e in data["entries"]:
        assert set(e["times"]) == set(IMPLS) and e["direction"] in "HW"


def test_training_entries_decide_with_grad_and_eval_entries_otherwise(table):
    table(
        [
            entry("depthwise", 14, 8 * 192 * 14, "circulant"),
            {**entry("depthwise", 14, 8 * 192 * 14, "spatial"), "mode": "train"},
        ]
    )
    assert choose_impl(14, 192, 192, 8, 14) == "circulant"
    assert choose_impl(14, 192, 192, 8, 14, mode="train") == "spatial"
    # no training entry of the kind: the forward timings are used
    table([entry("depthwise", 14, 8 * 192 * 14, "fft")])
    assert choose_impl(14, 192, 192, 8, 14, mode="train") == "fft"


def test_entries_of_another_device_type_are_not_read(table):
    table([{**entry("depthwise", 14, 8 * 192 * 14, "fft"), "device": "cuda"}])
    # no CPU entry: the CPU cost model decides (circulant here), not the CUDA timing
    assert choose_impl(14, 192, 192, 8, 14, device="cpu") == "circulant"
    assert choose_impl(14, 192, 192, 8, 14, device="cuda") == "fft"
    assert choose_impl(14, 192, 192, 8, 14, device=torch.device("cuda", 1)) == "fft"


def test_cuda_without_a_calibration_uses_the_gpu_cost_model(table):
    table([])
    assert choose_impl(14, 192, 192, 1, 14, device="cuda") == "circulant"
    assert choose_impl(224, 16, 16, 8, 224, device="cuda") == "fft"


def test_choose_from_table_limits_the_backends_and_falls_back_to_the_first():
    from parc_surgery.ops.dispatch import choose_from_table

    onnx_table = {
        "entries": [
            {
                "kind": "depthwise",
                "direction": "H",
                "length": 14,
                "lines": 192 * 14,
                "times": {"spatial": 2.0, "circulant": 1.0},
            }
        ]
    }
    args = (14, 192, 192, 1, 14, "H")
    assert choose_from_table(onnx_table, ("spatial", "circulant"), *args) == "circulant"
    assert choose_from_table(onnx_table, ("spatial",), *args) == "spatial"
    dense = (14, 128, 1, 1, 14, "H")  # no dense entry in the table
    assert choose_from_table(onnx_table, ("spatial", "circulant"), *dense) == "spatial"


def test_shipped_onnx_calibration_parses():
    data = dispatch.load_calibration(name="onnx_calibration.json")
    for e in data["entries"]:
        assert set(e["times"]) == {"spatial", "circulant"} and e["direction"] in "HW"
