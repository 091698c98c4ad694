"""Checkpoints from strangers: nothing in the file is trusted before it is checked (exit 6)."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from typer.testing import CliRunner

import parc_surgery as ps
from parc_surgery import checkpoint
from parc_surgery.cli import app
from parc_surgery.errors import CheckpointError, ParcSurgeryWarning, WeightsError

runner = CliRunner()
MODEL = "test_convnext"  # timm's tiny test model: 3 swaps, a 1 MB checkpoint


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    path = tmp_path_factory.mktemp("good") / "tc.safetensors"
    ps.convert(MODEL, input_size=(64, 64), output=str(path))
    return path


def tensors_and_metadata(path):
    with safe_open(str(path), framework="pt") as handle:
        return {k: handle.get_tensor(k) for k in handle.keys()}, handle.metadata()  # noqa: SIM118


def with_recipe(good, tmp_path, edit, name="edited.safetensors"):
    """A copy of `good` whose recipe went through `edit(recipe)`; its tensors untouched."""
    tensors, metadata = tensors_and_metadata(good)
    recipe = json.loads(metadata["recipe"])
    edit(recipe)
    target = tmp_path / name
    save_file(tensors, str(target), metadata={**metadata, "recipe": json.dumps(recipe)})
    return target


def data_offset(path) -> int:
    with open(path, "rb") as handle:
        return 8 + struct.unpack("<Q", handle.read(8))[0]


def test_the_checksum_is_stored_and_a_clean_file_loads_silently(good, recwarn):
    _, metadata = tensors_and_metadata(good)
    assert len(metadata[checkpoint.TENSORS_SHA256_KEY]) == 64
    ps.load(good)
    assert not [w for w in recwarn if issubclass(w.category, ParcSurgeryWarning)]


@pytest.mark.parametrize("where", [0.0, 0.5, 1.0])
def test_a_flipped_byte_in_the_tensors_is_exit_6(good, tmp_path, where):
    data = bytearray(good.read_bytes())
    start = data_offset(good)
    position = min(start + int((len(data) - start) * where), len(data) - 1)
    data[position] ^= 0x10
    flipped = tmp_path / "flipped.safetensors"
    flipped.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="does not match the checksum") as info:
        ps.load(flipped)
    assert info.value.exit_code == 6


@pytest.mark.parametrize("keep", [0, 5, 8, 100, "header", "half", -1])
def test_a_truncated_file_is_exit_6(good, tmp_path, keep):
    data = good.read_bytes()
    cut = {"header": data_offset(good) - 3, "half": len(data) // 2, -1: len(data) - 1}.get(
        keep, keep
    )
    truncated = tmp_path / "cut.safetensors"
    truncated.write_bytes(data[:cut])
    with pytest.raises(CheckpointError, match="not a readable safetensors file|truncated"):
        ps.load(truncated)


def test_export_and_the_cli_check_the_checksum_and_write_nothing(good, tmp_path):
    data = bytearray(good.read_bytes())
    data[-10] ^= 0xFF
    flipped = tmp_path / "flipped.safetensors"
    flipped.write_bytes(bytes(data))
    out = tmp_path / "out.onnx"
    result = runner.invoke(app, ["export", str(flipped), "-o", str(out)])
    assert result.exit_code == 6 and "does not match the checksum" in result.stderr
    assert not out.exists()


def spy_builds(monkeypatch) -> list:
    devices = []
    real = checkpoint._build

    def spy(plan, header, *, device, base=None):
        devices.append(device)
        return real(plan, header, device=device, base=base)

    monkeypatch.setattr(checkpoint, "_build", spy)
    return devices


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda r: r["plan"]["model_args"].update(checkpoint_path="/etc/passwd"), "not allowed"),
        (
            lambda r: r["plan"]["model_args"].update(pretrained_cfg_overlay={"file": "/x"}),
            "not allowed",
        ),
        (lambda r: r["plan"]["model_args"].update(cache_dir="tmp"), "not allowed"),
        (lambda r: r["plan"]["model_args"].update(act_layer="../../x.py"), "not a short name"),
        (lambda r: r["plan"].update(model="hf-hub:timm/resnet50"), "plan.model"),
        (lambda r: r["plan"].update(input_size=[100000, 100000]), "plan.input_size"),
        (lambda r: r["plan"].update(swaps="x"), "plan.swaps"),
        (lambda r: r["plan"]["swaps"][0].update(feature_size=[1 << 40, 2]), "feature_size"),
        (lambda r: r["plan"]["swaps"][0]["options"].update(kernel_size=1000), "longer than"),
        (lambda r: r["plan"]["swaps"][0].update(surprise=1), "surprise: unknown key"),
        (lambda r: r.update(extra_key=1), "extra_key: unknown key"),
        (lambda r: r.pop("plan"), "plan: Field required"),
        (lambda r: r["plan"].update(format_version=99), "format_version"),
    ],
)
def test_recipe_edits_are_refused_before_anything_is_built(
    good, tmp_path, monkeypatch, edit, message
):
    import timm

    def never(*args, **kwargs):
        raise AssertionError("timm was asked to build or load something")

    monkeypatch.setattr(timm, "create_model", never)
    target = with_recipe(good, tmp_path, edit)
    with pytest.raises(CheckpointError, match="its recipe is invalid") as info:
        ps.load(target)
    assert message in info.value.message and info.value.exit_code == 6


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda r: r["plan"]["model_args"].update(num_classes=7), "other shapes"),
        (lambda r: r["plan"]["model_args"].update(num_classes=1 << 20), "far more parameters"),
        (lambda r: r["plan"]["model_args"].update(dims=[1024] * 4), "far more parameters"),
        (lambda r: r["plan"]["model_args"].update(depths=[100_000] * 4), "far more modules"),
        (lambda r: r["plan"]["swaps"].pop(), "does not match the model"),
        (lambda r: r["plan"]["swaps"][0].update(path="stages.9.blocks.0"), "cannot be rebuilt"),
        (lambda r: r["plan"]["swaps"][0].update(replacement="nope"), "unknown replacement"),
        (lambda r: r["plan"]["swaps"].append(dict(r["plan"]["swaps"][0])), "cannot be rebuilt"),
        (lambda r: r["plan"].update(model="test_resnet"), "ResNet has no attribute"),
        (lambda r: r["plan"].update(model="resnet50"), "far more parameters"),
    ],
)
def test_recipes_that_build_something_else_fail_on_the_meta_device(
    good, tmp_path, monkeypatch, edit, message
):
    builds = spy_builds(monkeypatch)
    target = with_recipe(good, tmp_path, edit)
    with pytest.raises(CheckpointError, match=message) as info:
        ps.load(target)
    assert info.value.exit_code == 6
    assert builds == ["meta"]  # no real memory was allocated for the model


def test_a_recipe_that_is_not_json_is_exit_6(good, tmp_path):
    tensors, metadata = tensors_and_metadata(good)
    target = tmp_path / "nojson.safetensors"
    save_file(tensors, str(target), metadata={**metadata, "recipe": "{" * 100_000})
    with pytest.raises(CheckpointError, match="recipe is invalid"):
        ps.load(target)


def test_an_old_checkpoint_without_checksum_loads_with_a_warning(good, tmp_path):
    tensors, metadata = tensors_and_metadata(good)
    del metadata[checkpoint.TENSORS_SHA256_KEY]
    old = tmp_path / "old.safetensors"
    save_file(tensors, str(old), metadata=metadata)
    with pytest.warns(ParcSurgeryWarning, match="has no tensor checksum"):
        model = ps.load(old)
    assert isinstance(model, torch.nn.Module)
    result = runner.invoke(app, ["export", str(old), "-o", str(tmp_path / "old.onnx")])
    assert result.exit_code == 0, result.output
    assert "warning: " in result.stderr and "has no tensor checksum" in result.stderr


def test_a_directory_is_not_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="is a directory"):
        ps.load(tmp_path)


def test_flipped_weights_file_is_exit_6_not_a_traceback(tmp_path):
    from parc_surgery.models import create_model

    path = tmp_path / "w.safetensors"
    save_file(create_model(MODEL).state_dict(), str(path))
    data = bytearray(path.read_bytes())
    data[20] ^= 0x41  # inside the JSON header
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsError):
        checkpoint.load_source_weights(create_model(MODEL), path)


def test_the_recipe_schema_knows_every_field_a_plan_writes():
    # A field added to Plan / Swap without the schema would make every new checkpoint
    # unloadable (exit 6): the schema and the dataclasses must name the same keys.
    from dataclasses import fields

    from parc_surgery.plan import Plan, Swap
    from parc_surgery.recipe import PlanSpec, SwapSpec

    def spec_keys(spec):
        return {f.alias or name for name, f in spec.model_fields.items()}

    assert {f.name for f in fields(Swap)} == spec_keys(SwapSpec)
    plan_keys = {f.name for f in fields(Plan)} | {"params_total_after", "macs_total_after"}
    assert plan_keys == spec_keys(PlanSpec)
