"""Checkpoints: atomic writes, the recipe round trip, and every bad file a user can give."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from parc_surgery.checkpoint import load, load_source_weights, read_recipe, save
from parc_surgery.errors import CheckpointError, OutputError, VerificationError, WeightsError
from parc_surgery.pipeline import convert, create_model

SMALL = dict(stages=[3, 4], input_size=(64, 64))


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "resnet26-parc.safetensors"
    result = convert("resnet26", output=str(path), **SMALL)
    return result, path


def test_load_rebuilds_the_converted_model_with_identical_outputs(converted):
    result, path = converted
    loaded = load(path)
    assert type(loaded) is type(result.model)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x), result.model.eval()(x), rtol=0, atol=0)


def test_recipe_records_model_rules_input_size_and_version(converted):
    result, path = converted
    recipe = read_recipe(path)
    assert recipe["format"] == "parc-surgery/1"
    assert recipe["plan"]["model"] == "resnet26"
    assert recipe["plan"]["input_size"] == [64, 64]
    assert [s["path"] for s in recipe["plan"]["swaps"]] == [s.path for s in result.plan.swaps]
    assert recipe["parc_surgery_version"]
    assert recipe["plan"]["rules"]


def test_checkpoint_gets_the_mode_an_ordinary_file_would(converted):
    import os

    _, path = converted
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_existing_file_survives_without_force(converted, tmp_path):
    result, _ = converted
    target = tmp_path / "keep.safetensors"
    target.write_bytes(b"precious")
    with pytest.raises(OutputError, match="already exists"):
        save(result.model, result.plan, target)
    assert target.read_bytes() == b"precious"
    save(result.model, result.plan, target, force=True)
    assert load(target) is not None


def test_failed_save_leaves_no_file_behind(converted, tmp_path, monkeypatch):
    result, _ = converted
    import safetensors.torch

    def explode(*args, **kwargs):
        raise RuntimeError("serialiser on fire")

    monkeypatch.setattr(safetensors.torch, "save", explode)
    with pytest.raises(RuntimeError):
        save(result.model, result.plan, tmp_path / "out.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_full_disk_is_exit_7_and_leaves_no_file(converted, tmp_path, monkeypatch):
    import errno
    import os

    result, _ = converted
    real_write = os.write

    def half_then_full(fd, data):
        if len(data) > 4096:
            real_write(fd, bytes(data[:4096]))  # a partial write, then the disk is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(OutputError) as info:
        save(result.model, result.plan, tmp_path / "out.safetensors")
    assert info.value.exit_code == 7
    assert "out.safetensors" in info.value.message and "ENOSPC" in info.value.message
    assert list(tmp_path.iterdir()) == []


def test_conversion_failing_halfway_leaves_no_file(tmp_path, monkeypatch):
    import parc_surgery.apply

    def failing_verify(*args, **kwargs):
        raise VerificationError("block layer3.1 changed shape")

    monkeypatch.setattr(parc_surgery.apply, "verify", failing_verify)
    out = tmp_path / "nothing.safetensors"
    with pytest.raises(VerificationError):
        convert("resnet26", output=str(out), **SMALL)
    assert list(tmp_path.iterdir()) == []


def test_output_into_missing_directory_is_refused(converted, tmp_path):
    result, _ = converted
    with pytest.raises(OutputError, match="does not exist"):
        save(result.model, result.plan, tmp_path / "no" / "such" / "dir.safetensors")


def test_truncated_checkpoint_is_a_clear_error(converted, tmp_path):
    _, path = converted
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated|corrupt|cannot be read"):
        load(cut)


def test_garbage_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "garbage.safetensors"
    bad.write_bytes(b"\x00not a checkpoint at all" * 10)
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load(bad)


def test_foreign_safetensors_file_is_named_as_such(tmp_path):
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(CheckpointError, match="not a parc-surgery checkpoint"):
        load(foreign)


def test_recipe_that_no_longer_matches_the_weights(converted, tmp_path):
    _, path = converted
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
        metadata = handle.metadata()
    recipe = json.loads(metadata["recipe"])
    recipe["plan"]["swaps"] = recipe["plan"]["swaps"][:-1]  # one swap forgotten
    tampered = tmp_path / "tampered.safetensors"
    save_file(tensors, str(tampered), metadata={**metadata, "recipe": json.dumps(recipe)})
    with pytest.raises(CheckpointError, match="does not match the model"):
        load(tampered)


@pytest.mark.parametrize("wrap", [None, "state_dict", "model"])
def test_source_weights_load_from_torch_files(tmp_path, wrap):
    source = create_model("resnet26")
    state = source.state_dict()
    path = tmp_path / "weights.pth"
    torch.save({wrap: state} if wrap else state, path)
    target = create_model("resnet26")
    digest = load_source_weights(target, path)
    assert len(digest) == 64
    torch.testing.assert_close(target.state_dict()["fc.weight"], state["fc.weight"])


def test_source_weights_with_wrong_keys_list_them(tmp_path):
    state = create_model("resnet26").state_dict()
    state["extra.weight"] = torch.zeros(1)
    del state["fc.bias"]
    path = tmp_path / "wrong.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    with pytest.raises(WeightsError) as info:
        load_source_weights(create_model("resnet26"), path)
    assert "fc.bias" in str(info.value) and "extra.weight" in str(info.value)
    assert "missing" in str(info.value) and "unexpected" in str(info.value)


def test_source_weights_that_are_not_weights(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("hello")
    with pytest.raises(WeightsError, match="could not be read"):
        load_source_weights(create_model("resnet26"), path)
