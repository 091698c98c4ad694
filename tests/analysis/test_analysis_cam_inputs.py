"""What cam reads: image files for a model (timm's eval transform), and a checkpoint pair."""

from __future__ import annotations

import pytest
import timm
import torch
from cam_testkit import digit_images, sample_photos, write_pair
from PIL import Image
from safetensors.torch import load_file, save_file

from parc_surgery.analysis.images import check_image_paths, load_images
from parc_surgery.analysis.pair import checkpoint_pair, is_checkpoint_path
from parc_surgery.errors import CheckpointError, UsageError, WeightsError


@pytest.fixture(scope="module")
def rgb_model():
    return timm.create_model("resnet26", pretrained=False)


@pytest.fixture(scope="module")
def pair_files(tmp_path_factory):
    return write_pair(tmp_path_factory.mktemp("pair"))


def test_sample_photos_become_a_normalised_batch_and_the_pixels_the_model_saw(tmp_path, rgb_model):
    batch = load_images(sample_photos(tmp_path), rgb_model, (48, 64))
    assert batch.inputs.shape == (2, 3, 48, 64)
    assert batch.pixels.shape == (2, 48, 64, 3)
    assert batch.pixels.min() >= 0 and batch.pixels.max() <= 1
    mean = torch.tensor((0.485, 0.456, 0.406))
    std = torch.tensor((0.229, 0.224, 0.225))
    # The pixels shown are the inputs de-normalised: the picture the model saw.
    assert torch.allclose(batch.inputs.permute(0, 2, 3, 1), (batch.pixels - mean) / std, atol=1e-5)
    # The centre crop of the flower photo is the flower: warm, red above blue.
    centre = batch.pixels[1, 16:32, 24:40].mean(dim=(0, 1))
    assert centre[0] > centre[2] + 0.2


def test_a_solid_colour_is_normalised_with_the_model_statistics(tmp_path, rgb_model):
    path = tmp_path / "red.png"
    Image.new("RGB", (50, 80), (200, 10, 10)).save(path)
    batch = load_images([path], rgb_model, (32, 32))
    colour = torch.tensor((200, 10, 10)) / 255.0
    assert torch.allclose(batch.pixels[0], colour.expand(32, 32, 3), atol=1e-6)
    mean = torch.tensor((0.485, 0.456, 0.406))
    std = torch.tensor((0.229, 0.224, 0.225))
    expected = ((colour - mean) / std).view(3, 1, 1).expand(3, 32, 32)
    assert torch.allclose(batch.inputs[0], expected, atol=1e-5)


def test_a_grayscale_model_reads_grayscale_digits(tmp_path):
    model = timm.create_model("resnet26", pretrained=False, in_chans=1)
    paths = []
    for path in digit_images(tmp_path, count=2):
        gray = path.with_suffix(".gray.png")
        Image.open(path).convert("L").save(gray)
        paths.append(gray)
    batch = load_images(paths, model, (32, 32), channels=1)
    assert batch.inputs.shape == (2, 1, 32, 32) and batch.pixels.shape == (2, 32, 32, 1)
    # ImageNet statistics averaged over the colour channels for one channel.
    mean, std = sum((0.485, 0.456, 0.406)) / 3, sum((0.229, 0.224, 0.225)) / 3
    assert torch.allclose(batch.inputs, (batch.pixels.permute(0, 3, 1, 2) - mean) / std, atol=1e-5)


@pytest.mark.parametrize(
    ("mode", "channels", "message"),
    [
        ("L", 3, r"has 1 channels \(L\), but the model takes 3 \(RGB\)"),
        ("RGBA", 3, r"has 4 channels \(RGBA\)"),
        ("RGB", 1, r"has 3 channels \(RGB\), but the model takes 1 \(grayscale\)"),
    ],
)
def test_a_picture_with_other_channels_is_refused(tmp_path, rgb_model, mode, channels, message):
    path = tmp_path / f"{mode}.png"
    Image.new(mode, (16, 16)).save(path)
    with pytest.raises(UsageError, match=message) as caught:
        load_images([path], rgb_model, (16, 16), channels=channels)
    assert "convert(" in caught.value.message


def test_a_palette_picture_counts_as_rgb(tmp_path, rgb_model):
    path = tmp_path / "palette.png"
    Image.new("RGB", (16, 16), (0, 120, 255)).convert("P").save(path)
    assert load_images([path], rgb_model, (16, 16)).inputs.shape == (1, 3, 16, 16)


def test_unreadable_missing_and_folder_paths_are_usage_errors(tmp_path, rgb_model):
    text = tmp_path / "notes.png"
    text.write_text("not a picture")
    with pytest.raises(UsageError, match="not an image PIL can read"):
        load_images([text], rgb_model, (16, 16))
    truncated = tmp_path / "cut.png"
    Image.new("RGB", (64, 64), (1, 2, 3)).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:60])
    with pytest.raises(UsageError, match="not an image PIL can read"):
        load_images([truncated], rgb_model, (16, 16))
    with pytest.raises(UsageError, match="does not exist"):
        check_image_paths([tmp_path / "missing.jpg"])
    with pytest.raises(UsageError, match="is a directory"):
        check_image_paths([tmp_path])
    with pytest.raises(UsageError, match="no images"):
        check_image_paths([])


def test_checkpoint_pair_loads_the_original_weights_strictly(pair_files):
    checkpoint, weights = pair_files
    pair = checkpoint_pair(checkpoint, original_weights=weights)
    assert pair.original_weights == str(weights) and pair.checkpoint == str(checkpoint)
    assert pair.warnings == []  # the recipe records no source weights to compare with
    expected = load_file(str(weights))
    assert all(torch.equal(v, expected[k]) for k, v in pair.original.state_dict().items())
    stored = load_file(str(checkpoint))
    assert all(torch.equal(v, stored[k]) for k, v in pair.converted.state_dict().items())
    assert not pair.original.training and not pair.converted.training
    assert pair.input_size == (64, 64)


def test_checkpoint_pair_without_weights_needs_to_be_asked_for(pair_files):
    checkpoint, weights = pair_files
    with pytest.raises(UsageError, match="--random-original"):
        checkpoint_pair(checkpoint)
    with pytest.raises(UsageError, match="not both"):
        checkpoint_pair(checkpoint, original_weights=weights, random_original=True)
    pair = checkpoint_pair(checkpoint, random_original=True)
    assert pair.original_weights == "random init"
    assert any("random initialisation" in w for w in pair.warnings)


def test_checkpoint_pair_refuses_weights_of_another_model(tmp_path, pair_files):
    checkpoint, _ = pair_files
    other = tmp_path / "other.safetensors"
    save_file({"fc.weight": torch.zeros(2, 2)}, str(other))
    with pytest.raises(WeightsError, match="does not match the model") as caught:
        checkpoint_pair(checkpoint, original_weights=other)
    assert caught.value.exit_code == 6
    with pytest.raises(CheckpointError, match="does not exist"):
        checkpoint_pair(tmp_path / "none.safetensors", random_original=True)


def test_checkpoint_paths_are_told_from_model_names(tmp_path):
    assert not is_checkpoint_path("resnet26")
    assert is_checkpoint_path("missing/resnet26-parc.safetensors")
    existing = tmp_path / "model.bin"
    existing.write_bytes(b"")
    assert is_checkpoint_path(existing)
