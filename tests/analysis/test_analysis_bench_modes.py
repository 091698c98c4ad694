"""bench modes: training steps, onnxruntime, compiled models, devices (no timing asserts)."""

from __future__ import annotations

import json

import pytest
import torch
from analysis_testkit import TINY_SIZE, tiny_pair
from typer.testing import CliRunner

import parc_surgery.cli.analysis  # noqa: F401  (registers the commands)
from parc_surgery.analysis import bench as bench_module
from parc_surgery.analysis.bench import bench_pair
from parc_surgery.analysis.bench_onnx import bench_onnx_pair
from parc_surgery.analysis.bench_train import bench_train_pair
from parc_surgery.cli import app
from parc_surgery.ops import CompiledModel, ParCPair, compile_model

runner = CliRunner()


def test_train_steps_change_the_weights_and_report_consistent_ratios():
    original, converted = tiny_pair()
    parc = next(m for m in converted.modules() if isinstance(m, ParCPair))
    before = parc.parc_h.weight.detach().clone()
    result = bench_train_pair(original, converted, TINY_SIZE, batch=2, runs=2, warmup=1, threads=1)
    assert result["measure"] == "train_step" and result["batch"] == 2
    for name in ("original", "converted"):
        steps = result[name]["step_ms"]
        assert steps["runs"] == 2 and 0 < steps["min"] <= steps["median"] <= steps["max"]
    ratios = result["ratios"]
    assert ratios["latency"] == pytest.approx(
        result["converted"]["step_ms"]["median"] / result["original"]["step_ms"]["median"]
    )
    assert not torch.equal(before, parc.parc_h.weight)  # the optimizer stepped
    assert converted.training  # measured in train mode


def test_onnxruntime_mode_exports_both_models_and_counts_the_exported_backends():
    original, converted = tiny_pair()
    result = bench_onnx_pair(original, converted, TINY_SIZE, threads=1, runs=2, warmup=1)
    assert result["measure"] == "onnxruntime" and result["runtime"].startswith("onnxruntime")
    assert sum(result["impls"].values()) == 4  # two pairs of two halves
    assert set(result["impls"]) <= {"spatial", "circulant"}
    assert result["converted"]["onnx_nodes"] > result["original"]["onnx_nodes"]
    forced = bench_onnx_pair(
        original, converted, TINY_SIZE, threads=1, runs=1, warmup=0, impl="circulant"
    )
    assert forced["impls"] == {"circulant": 4}


def test_compile_model_shares_parameters_and_matches_eager():
    torch._dynamo.reset()
    m = ParCPair(4, (5, 6), impl="circulant").eval()
    compiled = compile_model(m, backend="aot_eager")
    assert isinstance(compiled, CompiledModel) and compiled.module is m
    assert {id(p) for p in compiled.parameters()} == {id(p) for p in m.parameters()}
    x = torch.randn(2, 4, 5, 6)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), m(x))
    assert compiled.freeze is False  # freezing is an inductor option only
    assert compile_model(m).freeze is True


def test_bench_pair_compiles_both_models_when_asked(monkeypatch):
    compiled = []

    def fake_compile(model, **kwargs):
        compiled.append(model)
        return compile_model(model, backend="aot_eager")

    torch._dynamo.reset()
    monkeypatch.setattr(bench_module, "compile_model", fake_compile)
    original, converted = tiny_pair()
    result = bench_pair(original, converted, TINY_SIZE, runs=1, warmup=0, compile=True)
    assert result["compiled"] is True and result["warmup"] == 2
    assert compiled == [original, converted]


def _bench(*args: str):
    return runner.invoke(app, ["bench", "resnet26", "--input-size", "64", *args])


def test_cli_train_and_onnx_modes_in_json():
    result = _bench("--train", "--batch", "2", "--runs", "1", "--warmup", "0", "-f", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["measure"] == "train_step" and data["batch"] == 2 and data["device"] == "cpu"
    result = _bench("--onnx", "--runs", "1", "--warmup", "0", "--threads", "1", "-f", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["measure"] == "onnxruntime" and sum(data["impls"].values()) > 0


def test_bench_onnx_states_its_own_run_to_run_spread():
    # The JSON has the per-round ratio's spread over every round; the table says it too.
    from readme_testkit import json_keys

    result = _bench("--onnx", "--runs", "5", "--warmup", "0", "--threads", "1", "-f", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    rounds = data["ratios"]["latency_rounds"]
    assert rounds["runs"] == 5 and rounds["min"] <= rounds["q1"] <= rounds["median"]
    assert rounds["median"] <= rounds["q3"] <= rounds["max"]
    assert set(data["ratios"]) | set(rounds) <= json_keys("bench")  # as the README says
    table = _bench("--onnx", "--runs", "3", "--warmup", "0", "--threads", "1")
    assert table.exit_code == 0, table.output
    assert "per-round ratio (3 rounds)" in " ".join(table.output.split())


@pytest.mark.parametrize(
    "args,fragment",
    [
        (("--train", "--onnx"), "not both"),
        (("--onnx", "--compile"), "--onnx"),
        (("--onnx", "--impl", "fft"), "--onnx"),
        (("--onnx", "--batch", "4"), "batch 1"),
        (("--device", "tpu"), "--device"),
        (("--device", "nonsense:x"), "--device"),
    ],
)
def test_cli_rejects_contradictory_modes(args, fragment):
    result = _bench(*args)
    assert result.exit_code == 2, result.output
    assert fragment in result.stderr and "Traceback" not in result.output


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without a GPU")
def test_cli_cuda_without_a_gpu_says_so():
    result = _bench("--device", "cuda")
    assert result.exit_code == 2 and "no CUDA device" in result.stderr


def test_load_with_compile_returns_the_compiled_model(tmp_path):
    from analysis_testkit import converted_pair

    import parc_surgery as ps
    from parc_surgery.checkpoint import save

    pair = converted_pair("resnet26")
    path = tmp_path / "m.safetensors"
    save(pair.converted, pair.plan, path)
    model = ps.load(path, compile=True)
    assert isinstance(model, CompiledModel) and model.freeze
    plain = ps.load(path)
    assert not isinstance(plain, CompiledModel)
    assert model.module.state_dict().keys() == plain.state_dict().keys()


def test_cpu_clock_needs_one_thread():
    original, converted = tiny_pair()
    result = bench_pair(original, converted, TINY_SIZE, runs=2, warmup=0, threads=1, clock="cpu")
    assert result["clock"] == "cpu" and result["converted"]["latency_ms"]["min"] > 0
    with pytest.raises(ValueError, match="threads=1"):
        bench_pair(original, converted, TINY_SIZE, runs=1, threads=2, clock="cpu")
    with pytest.raises(ValueError, match="clock"):
        bench_pair(original, converted, TINY_SIZE, runs=1, threads=1, clock="sundial")
    cli = _bench("--clock", "cpu")
    assert cli.exit_code == 2 and "--threads 1" in cli.stderr
