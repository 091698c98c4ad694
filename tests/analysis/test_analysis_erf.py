"""ERF maps, high-contribution area ratios, inputs and the figure."""

from __future__ import annotations

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
