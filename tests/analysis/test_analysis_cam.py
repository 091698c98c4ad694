"""CAM numbers on maps with known answers, and torchcam's maps through parc-surgery."""

from __future__ import annotations

import math
import sys

import pytest
import torch
from torch import nn

from parc_surgery.analysis.cam import (
    CAM_METHODS,
    cam_maps,
    cam_summary,
    check_target_layer,
    compare_cam,
    default_target_layer,
    normalised_entropy,
    region_iou,
    require_extra,
    top_region,
)
from parc_surgery.errors import UsageError

SIDE = 10  # 100 pixels: shares of the area are whole pixels


def ramp(first_column: int) -> torch.Tensor:
    """Columns ranked from `first_column` rightwards (wrapping): top-20% = two columns."""
    columns = (torch.arange(SIDE) - first_column) % SIDE
    return (SIDE - columns).float().expand(SIDE, SIDE).clone()


def test_a_flat_map_spreads_its_mass_over_the_whole_area():
    flat = torch.ones(SIDE, SIDE)
    summary = cam_summary(flat)
    assert summary["area_ratio"] == {"50": 0.5, "90": 0.9}
    assert summary["entropy"] == pytest.approx(1.0)
    assert top_region(flat).all()  # every pixel ties at the threshold
    assert region_iou(flat, 3 * flat) == 1.0


def test_a_single_hot_pixel_has_zero_entropy_and_one_pixel_of_area():
    hot = torch.zeros(SIDE, SIDE)
    hot[4, 7] = 2.5
    summary = cam_summary(hot)
    assert summary["area_ratio"] == {"50": 0.01, "90": 0.01}
    assert summary["entropy"] == 0.0


def test_half_the_map_holds_all_the_mass():
    half = torch.zeros(SIDE, SIDE)
    half[:, : SIDE // 2] = 1.0
    summary = cam_summary(half)
    assert summary["area_ratio"] == {"50": 0.25, "90": 0.45}
    assert summary["entropy"] == pytest.approx(math.log(50) / math.log(100))


def test_top_region_is_the_highest_fifth_of_the_pixels():
    region = top_region(ramp(0))
    assert region.sum() == 20
    assert region[:, :2].all() and not region[:, 2:].any()


def test_iou_of_top_regions_counts_the_shared_pixels():
    assert region_iou(ramp(0), ramp(0)) == 1.0
    assert region_iou(ramp(0), ramp(1)) == pytest.approx(10 / 30)  # columns 0-1 vs 1-2
    assert region_iou(ramp(0), ramp(5)) == 0.0
    with pytest.raises(ValueError, match="differ in shape"):
        region_iou(ramp(0), torch.ones(4, 4))


def test_an_empty_map_has_no_numbers():
    empty = torch.zeros(SIDE, SIDE)
    summary = cam_summary(empty)
    assert all(math.isnan(v) for v in summary["area_ratio"].values())
    assert math.isnan(summary["entropy"]) and math.isnan(normalised_entropy(empty))
    assert top_region(empty) is None
    assert math.isnan(region_iou(empty, ramp(0)))


class RolledIdentity(nn.Conv2d):
    """A 1x1 identity conv whose output is rolled down `shift` rows."""

    def __init__(self, shift: int):
        super().__init__(1, 1, 1, bias=False)
        self.shift = shift
        with torch.no_grad():
            self.weight.fill_(1.0)

    def forward(self, x):
        return super().forward(x).roll(self.shift, dims=2)


class SquareNet(nn.Module):
    """Feature map = the input (rolled down `shift` rows); head = mean -> scores [+1, -1].

    Its Grad-CAM for class 0 is relu(feature map), for class 1 relu(-feature map): zero
    on a non-negative input. Defined here so every number below is known by hand.
    """

    def __init__(self, shift: int = 0):
        super().__init__()
        self.features = RolledIdentity(shift)
        self.head = nn.Linear(1, 2, bias=False)
        with torch.no_grad():
            self.head.weight.copy_(torch.tensor([[1.0], [-1.0]]))

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))


def square_input() -> torch.Tensor:
    x = torch.zeros(1, 1, SIDE, SIDE)
    x[..., :2, :] = 1.0  # two rows: 20 pixels, 20% of the area
    return x


@pytest.mark.parametrize("method", sorted(CAM_METHODS))
def test_each_method_finds_the_square_the_class_score_reads(method):
    run = cam_maps(SquareNet(), square_input(), method=method, target_layer="features")
    assert run["feature_size"] == [SIDE, SIDE]
    assert run["predicted_class"] == [0] and run["explained_class"] == [0]
    assert run["probability"][0] == pytest.approx(torch.tensor([0.2, -0.2]).softmax(0)[0].item())
    cam = run["maps"][0]
    assert cam.shape == (SIDE, SIDE)
    assert torch.equal(cam > 0, square_input()[0, 0] > 0)
    summary = cam_summary(cam)
    assert summary["area_ratio"] == {"50": 0.1, "90": 0.18}
    assert summary["entropy"] == pytest.approx(math.log(20) / math.log(100))


def test_a_given_class_is_explained_even_when_not_predicted():
    run = cam_maps(SquareNet(), square_input(), target_layer="features", class_index=1)
    assert run["predicted_class"] == [0] and run["explained_class"] == [1]
    assert run["explained_probability"][0] < run["probability"][0]
    assert run["maps"].sum() == 0  # class 1 reads -input: nothing positive to show


def test_compare_cam_reports_both_models_and_their_overlap():
    result = compare_cam(SquareNet(0), SquareNet(1), square_input(), target_layer="features")
    assert result["target_layer"] == "features" and result["method"] == "gradcam"
    (image,) = result["images"]
    # The converted twin reads the square one row lower: rows 0-1 vs 1-2.
    assert image["iou_top20"] == pytest.approx(10 / 30)
    assert image["original"]["area_ratio"] == image["converted"]["area_ratio"]
    assert result["mean"]["iou_top20"] == image["iou_top20"]
    assert result["mean"]["original"]["entropy"] == image["original"]["entropy"]
    assert set(result["maps"]) == {"original", "converted"}


def test_user_errors_name_the_fix():
    with pytest.raises(UsageError, match=r"--class 2 is out of range: .* 2 classes \(0-1\)"):
        cam_maps(SquareNet(), square_input(), target_layer="features", class_index=2)
    with pytest.raises(UsageError, match="(?i)close names: features"):
        cam_maps(SquareNet(), square_input(), target_layer="featurez")
    with pytest.raises(UsageError, match=r"does not output a \(B, C, H, W\)"):
        cam_maps(SquareNet(), square_input(), target_layer="head")
    with pytest.raises(UsageError, match="has no classifier"):
        cam_maps(nn.Sequential(nn.Conv2d(1, 2, 1)), square_input(), target_layer="0")
    with pytest.raises(UsageError, match="--method"):
        cam_maps(SquareNet(), square_input(), target_layer="features", method="scorecam")
    with pytest.raises(UsageError, match="--target-layer"):
        default_target_layer(SquareNet())


def test_a_layer_inside_a_swapped_block_is_refused_with_the_reason():
    original = nn.Sequential(nn.Sequential(nn.Conv2d(1, 1, 3)))
    converted = nn.Sequential(nn.Identity())
    with pytest.raises(UsageError, match="not a module of the converted model.*swapped block"):
        check_target_layer({"original": original, "converted": converted}, "0.0")


def test_default_target_layer_is_the_last_stage_of_feature_info():
    import timm

    model = timm.create_model("resnet26", pretrained=False)
    assert default_target_layer(model) == "layer4"


def test_a_missing_extra_names_the_pip_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchcam", None)  # import torchcam now fails
    with pytest.raises(UsageError) as caught:
        require_extra("parc-surgery cam")
    message = caught.value.message
    assert "torchcam" in message and "pip install 'parc-surgery[analysis]'" in message
    assert "\n" not in message and caught.value.exit_code == 2
    require_extra("parc-surgery cam", modules=("math",))  # present: no error


def test_inputs_are_explained_in_chunks_with_the_same_result():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(4, 3),
    )  # fmt: skip
    inputs = torch.randn(5, 3, 8, 8)
    whole = cam_maps(model, inputs, target_layer="1", chunk=8)
    chunked = cam_maps(model, inputs, target_layer="1", chunk=2)
    assert torch.allclose(whole["maps"], chunked["maps"], atol=1e-6)
    assert whole["predicted_class"] == chunked["predicted_class"]
    assert whole["maps"].shape == (5, 8, 8)
