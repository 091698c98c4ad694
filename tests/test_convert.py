"""Real conversions: the result is still the timm model, runs anywhere, and loads back."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from parc_surgery.checkpoint import load
from parc_surgery.cli import convert_app
from parc_surgery.pipeline import convert, create_model

FAMILIES = {
    # model: (convert kwargs, input size used)
    "resnet26": dict(stages=[3, 4], input_size=(64, 64)),
    "mobilenetv2_050": dict(stages=[3, 4], input_size=(64, 64)),
    "convnext_atto": dict(stages=[3, 4], input_size=(64, 64)),
    "mobilevit_xxs": dict(input_size=(64, 64)),
    "efficientnet_b0": dict(stages=[3, 4], input_size=(64, 64), rules="generic"),
}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request, tmp_path_factory):
    name = request.param
    out = tmp_path_factory.mktemp(name) / f"{name}.safetensors"
    result = convert(name, output=str(out), check_outputs=True, **FAMILIES[name])
    return name, result, out


def test_round_trip_gives_identical_outputs(family):
    name, result, out = family
    assert result.plan.swaps, f"{name}: nothing was converted"
    loaded = load(out).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), result.model.eval()(x), rtol=0, atol=0)


def test_converted_model_is_still_the_timm_model(family):
    name, result, _ = family
    model = result.model
    reference = create_model(name)
    assert type(model) is type(reference)
    untouched = {
        k
        for k in reference.state_dict()
        if not any(k.startswith(s.path + ".") for s in result.plan.swaps)
    }
    assert untouched <= set(model.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        feats = model.eval().forward_features(x)
        assert model.forward_head(feats).shape == (1, reference.num_classes)
    model.reset_classifier(7)
    with torch.no_grad():
        assert model(x).shape == (1, 7)
    assert model.feature_info and model.pretrained_cfg


@pytest.mark.parametrize("size", [(96, 96), (64, 96)])
def test_converted_model_runs_at_other_resolutions_and_trains(family, size):
    _, result, _ = family
    model = result.model.train()
    x = torch.randn(2, 3, *size, requires_grad=True)
    model(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    model.eval()
    with torch.no_grad():
        assert torch.isfinite(model(x)).all()


def test_verification_figures_and_outputs_comparison(family):
    _, result, _ = family
    assert result.verification.blocks_checked == len(result.plan.swaps)
    outputs = result.verification.outputs
    assert outputs.finite and -1.0 <= outputs.cosine_similarity <= 1.0


def test_kept_weights_are_the_source_weights(tmp_path):
    from safetensors.torch import save_file

    source = create_model("resnet26")
    for p in source.parameters():  # distinctive values, so a re-init would show
        torch.nn.init.normal_(p)
    weights = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(weights))
    result = convert("resnet26", weights=str(weights), stages=[3, 4], input_size=(64, 64))
    swapped = {s.path for s in result.plan.swaps}
    assert swapped == {"layer3.1", "layer4.1"}
    converted = result.model.state_dict()
    replaced = [k for k in source.state_dict() if any(k.startswith(p + ".conv2.") for p in swapped)]
    assert replaced  # conv2 of each swapped Bottleneck is the only thing that went
    for key, value in source.state_dict().items():
        if key not in replaced:
            torch.testing.assert_close(converted[key], value, rtol=0, atol=0, msg=key)
    # partially kept modules: bn2 / conv3 of a swapped block are the source's
    torch.testing.assert_close(result.model.layer3[1].bn2.weight, source.layer3[1].bn2.weight)


def test_weights_file_is_used_and_its_hash_recorded(tmp_path):
    from safetensors.torch import save_file

    from parc_surgery.checkpoint import file_sha256, read_recipe

    source = create_model("resnet26")
    torch.nn.init.constant_(source.fc.weight, 0.25)
    weights = tmp_path / "trained.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(weights))
    out = tmp_path / "converted.safetensors"
    result = convert(
        "resnet26", weights=str(weights), output=str(out), stages=[4], input_size=(64, 64)
    )
    assert torch.all(result.model.fc.weight == 0.25)
    assert read_recipe(out)["source_weights_sha256"] == file_sha256(weights)
    assert torch.all(load(out).fc.weight == 0.25)


def test_cli_writes_the_checkpoint_and_refuses_to_overwrite(tmp_path):
    runner = CliRunner()
    out = tmp_path / "r.safetensors"
    args = ["resnet26", "--stages", "4", "--input-size", "64", "-o", str(out)]
    first = runner.invoke(convert_app, args)
    assert first.exit_code == 0, first.output
    assert out.exists() and "wrote" in first.stderr
    again = runner.invoke(convert_app, args)
    assert again.exit_code == 7 and "--force" in again.output
    forced = runner.invoke(convert_app, [*args, "--force"])
    assert forced.exit_code == 0


def test_cli_reports_a_corrupt_weights_file(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"nope")
    out = tmp_path / "out.safetensors"
    result = CliRunner().invoke(
        convert_app, ["resnet26", "--weights", str(bad), "-o", str(out), "--input-size", "64"]
    )
    assert result.exit_code == 6 and "Traceback" not in result.output
    assert not out.exists()


def test_pretrained_without_network_suggests_weights(tmp_path):
    result = CliRunner().invoke(
        convert_app, ["resnet26", "--pretrained", "--input-size", "64", "-o", str(tmp_path / "x")]
    )
    assert result.exit_code == 6, result.output
    assert "--weights" in result.output


def test_a_block_that_changes_shape_fails_verification_with_exit_5(tmp_path, monkeypatch):
    from parc_surgery.blocks import registry

    # A private copy of the registry, so the broken replacement vanishes after the test.
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    name = "test_halving_block"

    @registry.register_replacement(name, accepts=("Bottleneck",))
    def halve(module, ctx):
        return torch.nn.AvgPool2d(2)  # a broken replacement: output is half the size

    rules = tmp_path / "broken.yaml"
    rules.write_text(
        f"version: 1\nstages: [4]\nrules:\n  - match: {{module: Bottleneck, index: [-1]}}\n"
        f"    replace: {{with: {name}}}\n"
    )
    out = tmp_path / "never.safetensors"
    result = CliRunner().invoke(
        convert_app,
        ["resnet26", "--rules", str(rules), "--input-size", "128", "-o", str(out)],
    )
    assert result.exit_code == 5, result.output
    assert "layer4.1" in result.output and "(1, 2048, 2, 2)" in result.output
    assert not out.exists() and list(tmp_path.iterdir()) == [rules]


def test_plan_reports_the_backend_the_converted_model_runs(family):
    from parc_surgery.ops import ParC

    _, result, _ = family
    for swap in result.plan.swaps:
        module = result.model.get_submodule(swap.path)
        run = {
            parc.resolved_impl((1, parc.in_chs, *swap.feature_size))
            for parc in module.modules()
            if isinstance(parc, ParC)
        }
        assert set(swap.impl_auto.split("+")) == run, swap.path


def test_public_api_names_stay_functions_after_their_modules_are_imported():
    import importlib
    import types

    import parc_surgery as ps

    for module in ("apply", "checkpoint", "pipeline", "plan", "official", "train.run"):
        importlib.import_module(f"parc_surgery.{module}")  # would shadow a same-named export
    for name in ps.__all__:
        if name != "__version__":
            value = getattr(ps, name)
            assert callable(value) and not isinstance(value, types.ModuleType), name


def test_unwritable_output_is_refused_before_any_work(tmp_path):
    out = tmp_path / "missing" / "dir" / "r.safetensors"
    result = CliRunner().invoke(convert_app, ["resnet26", "--input-size", "64", "-o", str(out)])
    assert result.exit_code == 7, result.output
    assert "does not exist" in result.stderr and result.stdout == ""  # no plan was printed
    assert not (tmp_path / "missing").exists()
