"""The attention families of the zoo: their default rules plan ParC where the papers would
(the last part of the deep stages), and a small instance of each converts soundly."""

from __future__ import annotations

import pytest
import timm
import torch
from zoo_testkit import check_readme_row

import parc_surgery as ps
from parc_surgery.blocks import ParCSpatialMixer, ReplacementError, build_replacement
from parc_surgery.blocks.registry import ReplacementContext
from parc_surgery.pipeline import plan_conversion


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _blocks(prefix: str, indices) -> list[str]:
    return [f"{prefix}{i}" for i in indices]


# model -> (shipped config picked by default, input size of the dry run, planned swaps)
PLACEMENTS = {
    # 24 self-attention blocks on one 14x14 grid: the last half; class attention kept.
    "cait_xxs24_224": ("cait", None, _blocks("blocks.", range(12, 24))),
    # depths 3-4-6-3: last half of stage 3 (blocks.2) and of stage 4 (blocks.3).
    "twins_pcpvt_small": (
        "twins",
        (64, 64),
        ["blocks.2.3", "blocks.2.4", "blocks.2.5", "blocks.3.2"],
    ),
    # depths 2-3-7-2, transformer stages 3 and 4: their last half.
    "coatnet_0_rw_224": (
        "coatnet",
        None,
        _blocks("stages.2.blocks.", (4, 5, 6)) + ["stages.3.blocks.1"],
    ),
    # depths 2-2-5-2: last half of stages 3 and 4.
    "maxvit_tiny_tf_224": (
        "maxvit",
        None,
        ["stages.2.blocks.3", "stages.2.blocks.4", "stages.3.blocks.1"],
    ),
}


@pytest.mark.parametrize("name", sorted(PLACEMENTS))
def test_default_rules_place_parc_in_the_last_part_of_the_deep_stages(name):
    config, size, expected = PLACEMENTS[name]
    model = timm.create_model(name)
    planned = plan_conversion(model, input_size=size) if size else plan_conversion(model)
    assert planned.plan.rules_source == f"shipped:{config}"
    assert [s.path for s in planned.plan.swaps] == expected
    assert all(s.stage >= 3 and s.index > 0 for s in planned.plan.swaps)
    # pe on the first converted block of each container only
    firsts = {s.container: s.path for s in reversed(planned.plan.swaps)}
    for swap in planned.plan.swaps:
        assert swap.options.pe == (firsts[swap.container] == swap.path), swap.path
    assert planned.plan.params_total_after < planned.plan.params_total_before
    if size is None:  # the README's row is the dry run at the default size
        check_readme_row(name, planned.plan)


# Small instances: model args, the sizes they run at (CaiT's learned position embedding
# is fixed to its img_size: one size), and a per-size preparation.
SMALL = {
    "cait_xxs24_224": (
        dict(img_size=64, patch_size=8, depth=4, depth_token_only=1, embed_dim=32, num_heads=2),
        [(64, 64)],
    ),
    "twins_pcpvt_small": (
        dict(
            embed_dims=(16, 32, 48, 64),
            depths=(1, 1, 2, 2),
            num_heads=(1, 1, 2, 2),
            mlp_ratios=(2, 2, 2, 2),
        ),
        [(64, 64), (96, 128)],
    ),
    # CoAtNet's stride-2 transformer blocks keep their attention: timm's set_input_size
    # rebuilds their position tables for the second size.
    "coatnet_0_rw_224": (
        dict(img_size=64, embed_dim=(16, 32, 64, 64), depths=(1, 1, 2, 2)),
        [(64, 64), (128, 128)],
    ),
    "maxvit_tiny_tf_224": (
        dict(img_size=64, embed_dim=(32, 32, 64, 64), depths=(1, 1, 2, 2)),
        [(64, 64), (128, 128)],
    ),
}


def _prepare(model, size):
    if hasattr(model, "set_input_size") and "coatnet" in model.default_cfg["architecture"]:
        model.set_input_size(img_size=size)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_small_instance_converts_reloads_runs_and_trains(name, tmp_path):
    args, sizes = SMALL[name]
    out = tmp_path / f"{name}.safetensors"
    torch.manual_seed(0)
    result = ps.convert(name, model_args=args, input_size=sizes[0], output=str(out))
    swaps = result.plan.swaps
    assert len(swaps) == 2 and result.verification.blocks_checked == 2
    model = result.model.eval()
    for swap in swaps:  # the converted blocks hold no attention any more
        block = model.get_submodule(swap.path)
        assert not [m for m in block.modules() if "attn" in type(m).__name__.lower()]
        assert any(isinstance(m, ParCSpatialMixer) for m in block.modules())
    loaded = ps.load(out).eval()
    x = torch.randn(2, 3, *sizes[0])
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    parc = {
        n: p
        for n, p in model.named_parameters()
        if any(n.startswith(f"{s.path}.") and ".mixer." in f".{n}" for s in swaps)
    }
    assert parc
    for size in sizes:
        _prepare(model, size)
        x = torch.randn(2, 3, *size)
        with torch.no_grad():
            y = model.eval()(x)
        assert y.shape == (2, 1000) and torch.isfinite(y).all(), size
        model.train()
        model(x).square().mean().backward()
        for n, p in parc.items():
            assert p.grad is not None and torch.isfinite(p.grad).all(), (size, n)
            assert p.grad.abs().sum() > 0, (size, n)
        model.zero_grad(set_to_none=True)


def _ctx(path, size, **kw):
    return ReplacementContext(
        path=path, feature_size=size, stage=3, index=1, first_in_container=True, **kw
    )


def test_converted_blocks_keep_all_but_the_attention():
    torch.manual_seed(0)
    cases = [
        ("cait_xxs24_224", SMALL["cait_xxs24_224"][0], "blocks.1", "parc_cait", (8, 8), "attn"),
        (
            "twins_pcpvt_small",
            SMALL["twins_pcpvt_small"][0],
            "blocks.2.1",
            "parc_twins",
            (4, 4),
            "attn",
        ),
        (
            "coatnet_0_rw_224",
            SMALL["coatnet_0_rw_224"][0],
            "stages.2.blocks.1",
            "parc_coatnet",
            (4, 4),
            "attn",
        ),
        (
            "maxvit_tiny_tf_224",
            SMALL["maxvit_tiny_tf_224"][0],
            "stages.2.blocks.1",
            "parc_maxvit",
            (4, 4),
            "attn",
        ),
    ]
    for name, args, path, replacement, size, dropped in cases:
        block = timm.create_model(name, **args).get_submodule(path)
        new = build_replacement(replacement, block, _ctx(path, size))
        old_sd, new_sd = block.state_dict(), new.state_dict()
        kept = {k for k in old_sd if f".{dropped}." not in f".{k}"}
        assert kept and kept <= set(new_sd), (name, sorted(kept - set(new_sd))[:3])
        for key in kept:
            assert torch.equal(old_sd[key], new_sd[key]), (name, key)
        assert all(".mixer." in f".{k}" for k in set(new_sd) - kept), name


def test_coatnet_stride_two_block_is_refused():
    model = timm.create_model("coatnet_0_rw_224", **SMALL["coatnet_0_rw_224"][0])
    with pytest.raises(ReplacementError, match="stride"):
        build_replacement(
            "parc_coatnet", model.stages[2].blocks[0], _ctx("stages.2.blocks.0", (4, 4))
        )


def test_maxvit_block_has_no_partition_left_and_pe_on_the_window_mixer_only():
    model = timm.create_model("maxvit_tiny_tf_224", **SMALL["maxvit_tiny_tf_224"][0])
    new = build_replacement(
        "parc_maxvit", model.stages[2].blocks[1], _ctx("stages.2.blocks.1", (4, 4))
    )
    assert new.attn_block.mixer.has_pe and not new.attn_grid.mixer.has_pe
    # a 6x6 map is no multiple of the 2x2 partition the block was built for: ParC runs
    y = new(torch.randn(1, 64, 6, 6))
    assert y.shape == (1, 64, 6, 6)
