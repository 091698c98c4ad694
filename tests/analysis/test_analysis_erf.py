"""ERF maps, high-contribution area ratios, inputs and the figure."""

from __future__ import annotations

import json

import pytest
import torch
from analysis_testkit import TINY_SIZE, tiny_pair
from PIL import Image

from parc_surgery.analysis.erf import (
    area_ratios,
    compare_erf,
    erf_map,
    image_inputs,
    normalisation_of,
    random_inputs,
)
from parc_surgery.analysis.erf_plot import erf_figure_pixels, write_erf_png
from parc_surgery.errors import OutputError, UsageError


def test_area_ratios_of_a_uniform_map_equal_the_mass_share():
    ratios = area_ratios(torch.ones(10, 10))
    assert ratios == {"20": 0.2, "50": 0.5, "90": 0.9}


def test_area_ratios_of_a_single_hot_pixel_are_one_pixel():
    erf = torch.zeros(8, 8)
    erf[3, 4] = 5.0
    assert area_ratios(erf) == {"20": 1 / 64, "50": 1 / 64, "90": 1 / 64}


def test_area_ratios_count_the_largest_pixels_first():
    # 60% of the mass in one pixel, the rest spread over three of the other 99.
    erf = torch.zeros(10, 10)
    erf[0, 0] = 6.0
    erf[5, 5] = erf[6, 6] = erf[7, 7] = 4.0 / 3
    ratios = area_ratios(erf)
    assert ratios["50"] == pytest.approx(0.01)
    assert ratios["90"] == pytest.approx(0.04)


def test_area_ratios_of_an_empty_map_are_nan():
    assert all(r != r for r in area_ratios(torch.zeros(4, 4)).values())


def test_erf_of_a_single_conv_is_its_kernel_footprint():
    conv = torch.nn.Conv2d(3, 4, 3, padding=1).eval()
    erf = erf_map(conv, random_inputs(2, (9, 9)))
    assert erf.shape == (9, 9)
    assert (erf[3:6, 3:6] > 0).all()
    assert erf.sum() == pytest.approx(erf[3:6, 3:6].sum())


def test_erf_does_not_leave_the_model_in_train_mode_or_change_it():
    original, _ = tiny_pair()
    before = {k: v.clone() for k, v in original.state_dict().items()}
    erf_map(original, random_inputs(2, TINY_SIZE))
    assert not original.training
    after = original.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN stats untouched


def test_parc_widens_the_erf():
    original, converted = tiny_pair()
    result = compare_erf(original, converted, random_inputs(4, TINY_SIZE))
    assert result["converted"]["area_ratio"]["50"] > result["original"]["area_ratio"]["50"]
    assert result["converted"]["area_ratio"]["90"] > result["original"]["area_ratio"]["90"]
    assert result["area_ratio_gain"]["50"] > 1
    assert result["maps"]["original"].shape == TINY_SIZE


def test_random_inputs_are_seeded():
    assert torch.equal(random_inputs(2, (8, 8), seed=3), random_inputs(2, (8, 8), seed=3))
    assert not torch.equal(random_inputs(2, (8, 8), seed=3), random_inputs(2, (8, 8), seed=4))
    with pytest.raises(UsageError):
        random_inputs(0, (8, 8))


def test_image_inputs_are_resized_and_normalised(tmp_path):
    Image.new("RGB", (40, 30), (255, 0, 0)).save(tmp_path / "b.png")
    Image.new("L", (10, 10), 0).save(tmp_path / "a.jpg")
    (tmp_path / "notes.txt").write_text("not an image")
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    batch = image_inputs(tmp_path, (16, 20), mean, std)
    assert batch.shape == (2, 3, 16, 20)
    assert torch.allclose(batch[0], torch.full_like(batch[0], -2.0))  # black a.jpg first
    assert torch.allclose(batch[1, 0], torch.full((16, 20), 2.0))  # red channel of b.png
    assert torch.allclose(batch[1, 1], torch.full((16, 20), -2.0))


def test_image_inputs_errors(tmp_path):
    with pytest.raises(UsageError, match="not a directory"):
        image_inputs(tmp_path / "missing", (8, 8))
    with pytest.raises(UsageError, match="no images"):
        image_inputs(tmp_path, (8, 8))
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(UsageError, match="not a readable image"):
        image_inputs(tmp_path, (8, 8))


def test_normalisation_falls_back_to_imagenet():
    mean, std = normalisation_of(torch.nn.Identity())
    assert mean == pytest.approx((0.485, 0.456, 0.406))
    assert std == pytest.approx((0.229, 0.224, 0.225))


def test_erf_png_is_written_atomically_with_the_expected_size(tmp_path):
    original, converted = tiny_pair()
    result = compare_erf(original, converted, random_inputs(2, TINY_SIZE))
    target = tmp_path / "erf.png"
    maps = result["maps"]
    write_erf_png(maps["original"], maps["converted"], target, title="tiny")
    with Image.open(target) as image:
        assert image.format == "PNG"
        assert image.size == erf_figure_pixels()
    assert [p.name for p in tmp_path.iterdir()] == ["erf.png"]  # no temporary left
    with pytest.raises(OutputError, match="already exists"):
        write_erf_png(maps["original"], maps["converted"], target, title="tiny")
    write_erf_png(maps["original"], maps["converted"], target, title="again", force=True)


def test_erf_needs_a_spatial_feature_map():
    class Tokens(torch.nn.Module):
        def forward_features(self, x):
            return x.flatten(2).transpose(1, 2)  # (B, N, C), as a ViT returns

    with pytest.raises(UsageError, match=r"\(B, C, H, W\) feature map"):
        erf_map(Tokens(), random_inputs(1, (8, 8)))


# `erf CHECKPOINT`: a converted checkpoint against its original rebuilt from the recipe.


@pytest.fixture(scope="module")
def weighted_checkpoint(tmp_path_factory):
    """resnet26 converted at 64x64 from a weights file (zero_init_last off, so the
    swapped blocks reach the output), and that weights file."""
    import timm
    from safetensors.torch import save_file

    from parc_surgery.pipeline import convert

    folder = tmp_path_factory.mktemp("erf-ckpt")
    weights = folder / "original.safetensors"
    original = timm.create_model("resnet26", pretrained=False, zero_init_last=False)
    save_file({k: v.contiguous() for k, v in original.state_dict().items()}, str(weights))
    checkpoint = folder / "resnet26-parc.safetensors"
    convert(
        "resnet26",
        weights=str(weights),
        model_args={"zero_init_last": False},
        input_size=(64, 64),
        output=str(checkpoint),
    )
    return checkpoint, weights


def _erf_json(*args):
    from typer.testing import CliRunner

    from parc_surgery.cli import app

    result = CliRunner().invoke(app, ["erf", *map(str, args), "--random", "2", "-f", "json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout), result.stderr


def test_erf_of_a_checkpoint_equals_erf_of_the_same_conversion_by_name(
    tmp_path, weighted_checkpoint
):
    checkpoint, weights = weighted_checkpoint
    by_checkpoint, stderr = _erf_json(
        checkpoint, "--original-weights", weights, "-o", tmp_path / "a.png"
    )
    by_name, _ = _erf_json(
        "resnet26", "--weights", weights, "--model-arg", "zero_init_last=false",
        "--input-size", "64", "-o", tmp_path / "b.png",
    )  # fmt: skip
    assert by_checkpoint["checkpoint"] == str(checkpoint) and by_name["checkpoint"] is None
    assert by_checkpoint["original_weights"] == str(weights)
    assert by_checkpoint["model"] == by_name["model"] == "resnet26"
    assert by_checkpoint["input_size"] == by_name["input_size"] == [64, 64]
    for name in ("original", "converted"):
        assert by_checkpoint[name]["area_ratio"] == by_name[name]["area_ratio"]
    assert "warning" not in stderr  # the recipe's source weights are these weights
    assert (tmp_path / "a.png").is_file()


def test_erf_of_a_checkpoint_warns_about_weights_it_was_not_converted_from(
    tmp_path, weighted_checkpoint
):
    from safetensors.torch import load_file

    checkpoint, weights = weighted_checkpoint
    other = tmp_path / "same-tensors.pth"
    torch.save(load_file(str(weights)), other)  # same tensors, another file: another sha256
    data, stderr = _erf_json(checkpoint, "--original-weights", other, "-o", tmp_path / "e.png")
    assert "is not the weights file" in stderr
    assert data["original_weights"] == str(other)


def test_erf_options_that_do_not_fit_the_kind_of_model_are_refused(tmp_path, weighted_checkpoint):
    from typer.testing import CliRunner

    from parc_surgery.cli import app

    checkpoint, weights = weighted_checkpoint
    png = tmp_path / "erf.png"
    cases = [
        ([checkpoint, "--stages", "3"], "--stages cannot be used with a checkpoint"),
        ([checkpoint, "--weights", weights], "--original-weights FILE"),
        ([checkpoint], "--random-original"),
        (["resnet26", "--original-weights", weights], "apply to a checkpoint only"),
    ]
    for args, fragment in cases:
        result = CliRunner().invoke(app, ["erf", *map(str, args), "-o", str(png)])
        assert result.exit_code == 2, result.output
        assert fragment in result.stderr and "Traceback" not in result.output
    assert not png.exists()
