"""The crashes and misleading results of the report, each now a documented exit code."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

import parc_surgery as ps
from parc_surgery.cli import app
from parc_surgery.errors import NothingMatchedError, RulesError, UsageError
from parc_surgery.model_args import FORBIDDEN_MODEL_ARGS, check_model_args

runner = CliRunner()
SMALL = ["--input-size", "64", "--stages", "4"]


def test_every_timm_factory_keyword_that_reaches_files_is_denied():
    """If timm's factory or builder grows a keyword, this names it: decide and list it."""
    import inspect

    from timm.models import _builder, _factory

    harmless = {"model_name", "model_cls", "variant", "scriptable", "exportable", "no_jit"}
    harmless |= {"feature_cfg", "kwargs"}  # features_only's layout; the constructor's own
    for function in (_factory.create_model, _builder.build_model_with_cfg):
        for name in inspect.signature(function).parameters:
            assert name in harmless or name in FORBIDDEN_MODEL_ARGS, name


@pytest.mark.parametrize(
    "args",
    [
        {"pretrained_cfg": "resnet50.a1_in1k"},
        {"pretrained_window_sizes": [8, 8]},
        {"weights_path": "w.pth"},
        {"act_layer": "/tmp/evil"},
        {"act_layer": "https://example.com/x"},
        {"dims": [1 << 30]},
        {"drop_rate": float("nan")},
        {"norm_kwargs": {"checkpoint_path": "x"}},
        {"x": object()},
        {"dims": list(range(100))},
    ],
)
def test_model_argument_policy_refuses(args):
    with pytest.raises(UsageError):
        check_model_args(args)


def test_model_argument_policy_keeps_architecture_arguments():
    args = {"dims": (48, 96, 192, 384), "drop_path_rate": 0.1, "act_layer": "gelu"}
    args |= {"in_chans": 1, "global_pool": "avg", "norm_kwargs": {"eps": 1e-5}, "x": None}
    assert check_model_args(args) == args


def test_cli_refuses_a_checkpoint_path_model_arg_with_exit_2():
    result = runner.invoke(app, ["convert", "resnet26", "--dry-run", "--model-arg", "cache_dir=x"])
    assert result.exit_code == 2 and "cache_dir: not allowed" in result.stderr


def test_in_chans_1_converts_verifies_and_exports(tmp_path):
    out, onnx = tmp_path / "g.safetensors", tmp_path / "g.onnx"
    args = ["convert", "test_convnext", "--input-size", "64", "--model-arg", "in_chans=1"]
    args += ["-o", str(out), "--verify", "--export-onnx", str(onnx), "--format", "json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["result"]["verification"]["outputs"]["finite"]
    model = ps.load(out)
    assert model(torch.zeros(1, 1, 64, 64)).shape == (1, 1000)
    assert onnx.is_file()


def test_a_constructor_error_other_than_type_error_is_exit_2():
    result = runner.invoke(
        app, ["convert", "convnext_atto", "--dry-run", "--model-arg", "dims=[48,96,192]"]
    )
    assert result.exit_code == 2, result.output
    assert "cannot be built with the arguments" in result.stderr and "IndexError" in result.stderr


def test_bench_threads_0_is_exit_2():
    result = runner.invoke(app, ["bench", "resnet26", "--threads", "0"])
    assert result.exit_code == 2 and "--threads must be at least 1" in result.stderr


def test_nothing_to_swap_is_exit_3_and_writes_nothing_unless_allowed(tmp_path):
    out = tmp_path / "h.safetensors"
    args = ["convert", "test_resnet", "--input-size", "64", "-o", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 3 and "nothing to swap" in result.stderr
    assert not out.exists()
    result = runner.invoke(app, [*args, "--allow-empty"])
    assert result.exit_code == 0, result.output
    assert ps.load(out) is not None
    with pytest.raises(NothingMatchedError):
        ps.convert("test_resnet", input_size=(64, 64))
    assert ps.convert("test_resnet", input_size=(64, 64), allow_empty=True).plan.swaps == []


def test_verify_fails_with_exit_5_on_non_finite_outputs(tmp_path):
    from parc_surgery.models import create_model

    state = create_model("resnet26").state_dict()
    state["bn1.running_var"] = torch.full_like(state["bn1.running_var"], float("nan"))
    weights = tmp_path / "nan.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(weights))
    out = tmp_path / "o.safetensors"
    args = ["convert", "resnet26", *SMALL, "--weights", str(weights), "-o", str(out), "--verify"]
    result = runner.invoke(app, args)
    assert result.exit_code == 5, result.output
    assert "not finite" in result.stderr and not out.exists()


def test_verify_explains_cosine_similarity_for_zero_initialised_branches(tmp_path):
    out = tmp_path / "r.safetensors"
    result = runner.invoke(app, ["convert", "resnet26", *SMALL, "-o", str(out), "--verify"])
    assert result.exit_code == 0, result.output
    assert "residual branches start at zero" in result.stderr


def test_a_kernel_longer_than_its_feature_map_is_refused_naming_the_rule(tmp_path):
    rules = tmp_path / "big-kernel.yaml"
    rules.write_text(
        "version: 1\nrules:\n  - name: huge\n    match: {module: Bottleneck, index: -1}\n"
        "    replace: {with: parc_bottleneck, kernel_size: 1000}\n"
    )
    with pytest.raises(RulesError, match=r"'huge' \(.*big-kernel.yaml:3\) selects layer4.1") as e:
        ps.plan_conversion("resnet26", rules=str(rules), input_size=(192, 192), stages=[4])
    assert "kernel_size 1000 is longer than the 6x6 feature map" in e.value.message
    rules.write_text(rules.read_text().replace("1000", "6"))
    planned = ps.plan_conversion("resnet26", rules=str(rules), input_size=(192, 192), stages=[4])
    assert planned.plan.swaps[0].options.kernel_size == 6


def test_inspect_and_convert_choose_the_same_default_rules():
    inspected = runner.invoke(
        app, ["inspect", "hrnet_w18_small", "-f", "json", "--input-size", "64"]
    )
    assert inspected.exit_code == 0, inspected.output
    chosen = json.loads(inspected.stdout)["default_rules"]
    planned = runner.invoke(app, ["convert", "hrnet_w18_small", "--dry-run", "--input-size", "64"])
    assert f"rules: shipped:{chosen} (chosen" in planned.stderr
    assert chosen == "convnets"  # HRNet is chosen by its family, not by its Bottlenecks


def test_a_directory_as_weights_is_named_as_such(tmp_path):
    result = runner.invoke(app, ["convert", "resnet26", "--dry-run", "--weights", str(tmp_path)])
    assert result.exit_code == 6 and "is a directory" in result.stderr


def test_output_equal_to_weights_is_refused_even_with_force(tmp_path):
    from parc_surgery.models import create_model

    weights = tmp_path / "w.pth"
    torch.save(create_model("resnet26").state_dict(), weights)
    before = weights.read_bytes()
    args = ["convert", "resnet26", *SMALL, "--weights", str(weights), "-o", str(weights)]
    result = runner.invoke(app, [*args, "--force"])
    assert result.exit_code == 7 and "is the input file" in result.stderr
    assert weights.read_bytes() == before
