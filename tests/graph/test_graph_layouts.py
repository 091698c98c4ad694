"""Layouts: NHWC maps (Swin) and patch tokens on a grid (ViT, DeiT, EfficientFormer's last
stage) are stages like NCHW maps, with their grid size, channels and prefix tokens."""

from __future__ import annotations

from functools import cache

import pytest
import timm

from parc_surgery.graph import analyze
from parc_surgery.graph.layouts import NCHW, NHWC, map_layout

SIZE = (64, 64)


@cache
def analyzed(name: str, size=SIZE, **kwargs):
    model = timm.create_model(name, pretrained=False, **kwargs)
    return model, analyze(model, size)


def tiny_vit(**kwargs):
    return analyzed("vit_tiny_patch16_224", img_size=64, patch_size=8, depth=3, **kwargs)


def test_vit_patch_tokens_are_one_stage_on_the_patch_grid():
    _, graph = tiny_vit()
    # Stride-8 patches are stage 2 by stride; the grid is 8x8 at 64x64.
    assert sorted(graph.stages) == [2] and graph.is_plain_vit
    stage = graph.stages[2]
    assert (stage.feature_size, stage.channels, stage.layout) == ((8, 8), 192, "NLC")
    assert stage.containers == [("blocks", 3)]
    block = graph.modules["blocks.1"]
    assert (block.layout, block.prefix_tokens, block.feature_size) == ("NLC", 1, (8, 8))
    assert block.out_shape == (1, 65, 192) and not block.downsamples
    # The patch embedding's conv is the map the tokens come from; the head is off the grid.
    assert graph.modules["patch_embed.proj"].layout == "NCHW"
    assert graph.modules["head"].stride is None


@pytest.mark.parametrize(
    ("name", "kwargs", "prefix"),
    [
        ("deit_tiny_distilled_patch16_224", {}, 2),  # class + distillation token
        ("vit_tiny_patch16_224", {"reg_tokens": 4}, 5),  # class + 4 register tokens
        ("vit_tiny_patch16_224", {"class_token": False, "global_pool": "avg"}, 0),
    ],
)
def test_prefix_tokens_come_from_the_model(name, kwargs, prefix):
    _, graph = analyzed(name, img_size=64, depth=1, **kwargs)
    assert graph.modules["blocks.0"].prefix_tokens == prefix
    assert graph.modules["blocks.0"].feature_size == (4, 4)


def test_dynamic_size_vit_is_probed_and_keeps_its_grid():
    _, graph = tiny_vit(dynamic_img_size=True)
    assert graph.is_plain_vit and graph.modules["blocks.0"].stride == 8


def test_swin_stages_are_nhwc_maps():
    _, graph = analyzed(
        "swin_tiny_patch4_window7_224",
        img_size=64,
        embed_dim=32,
        depths=(1, 1, 2, 1),
        num_heads=(1, 2, 2, 4),
        window_size=4,
    )
    assert sorted(graph.stages) == [1, 2, 3, 4] and not graph.is_plain_vit
    stage = graph.stages[3]
    assert (stage.feature_size, stage.channels, stage.layout) == ((4, 4), 128, "NHWC")
    assert stage.containers == [("layers.2.blocks", 2)]
    assert graph.modules["layers.1.blocks.0"].feature_size == (8, 8)
    # PatchMerging halves the NHWC map: the first layer of a stage downsamples.
    assert graph.modules["layers.1.downsample"].downsamples


def test_efficientformer_last_stage_holds_maps_flatten_and_tokens():
    _, graph = analyzed(
        "efficientformer_l1", size=(224, 224), depths=(1, 1, 1, 2), embed_dims=(16, 16, 32, 64)
    )
    assert graph.stages[4].containers == [("stages.3.blocks", 3)]
    layouts = [graph.modules[f"stages.3.blocks.{i}"].layout for i in range(3)]
    assert layouts == ["NCHW", "NLC", "NLC"]  # MetaBlock2d, Flat, MetaBlock1d
    attention = graph.modules["stages.3.blocks.2"]
    assert (attention.stage, attention.feature_size, attention.prefix_tokens) == (4, (7, 7), 0)


def test_map_layout_prefers_nchw_and_reads_nhwc():
    assert map_layout((1, 96, 14, 14), (224, 224), 16) == NCHW
    assert map_layout((1, 14, 14, 96), (224, 224), 16) == NHWC
    assert map_layout((1, 14, 14, 14), (224, 224), 16) == NCHW  # either way: NCHW
    assert map_layout((1, 6, 197, 197), (224, 224), 1) is None


def test_a_vit_built_for_another_size_is_analysed_at_it():
    # Its pretrained_cfg still says 224, but the patch embedding accepts 64x64 only.
    _, graph = analyzed("vit_tiny_patch16_224", size=None, img_size=64, depth=1)
    assert graph.input_size == (64, 64) and graph.modules["blocks.0"].feature_size == (4, 4)


def test_patches_of_14_pixels_are_a_grid_too():
    # 14 is no power of two (DINOv2, EVA-02): the exact ratio gives the stride. (At a
    # size as small as 56, 4x4 would pass for stride 16 as well: the same stage.)
    _, graph = analyzed("vit_tiny_patch16_224", size=(224, 224), patch_size=14, depth=1)
    block = graph.modules["blocks.0"]
    assert (block.stride, block.stage, block.feature_size) == (14, 3, (16, 16))


def test_tokens_without_the_models_prefix_are_still_on_the_grid():
    # CaiT's class token joins only in its last blocks: the patch blocks have no prefix.
    _, graph = analyzed("cait_xxs24_224", img_size=64, depth=1, depth_token_only=1)
    assert graph.modules["blocks.0"].prefix_tokens == 0
    assert graph.modules["blocks.0"].feature_size == (4, 4)
