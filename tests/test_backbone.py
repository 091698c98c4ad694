"""A converted checkpoint as a features_only backbone (timm's FX feature extraction)."""

from __future__ import annotations

import pytest
import torch
from api_testkit import CUSTOM_RULES, TinyNet
from timm.layers import create_feature_extractor, is_notrace_module

import parc_surgery as ps
from parc_surgery.blocks import ParCMobileVitBlock
from parc_surgery.errors import UsageError
from parc_surgery.ops import ParC, ParCPair

# A narrow resnet26 (Bottlenecks, stages 3 and 4 converted): cheap at detection sizes.
NARROW = {"channels": (16, 32, 64, 128), "stem_width": 16}


@pytest.fixture(scope="module")
def resnet_ckpt(tmp_path_factory):
    out = tmp_path_factory.mktemp("bb") / "r26.safetensors"
    result = ps.convert(
        "resnet26", stages=[3, 4], input_size=(64, 64), model_args=NARROW, output=str(out)
    )
    return out, result.model.eval()


def _layer_outputs(model, names, x):
    """The outputs of the named submodules in one forward, by forward hooks."""
    found = {}
    handles = [
        model.get_submodule(n).register_forward_hook(
            lambda _m, _i, out, n=n: found.__setitem__(n, out)
        )
        for n in names
    ]
    with torch.no_grad():
        model(x)
    for handle in handles:
        handle.remove()
    return [found[n] for n in names]


def test_parc_modules_are_timm_notrace_leaves():
    assert is_notrace_module(ParC) and is_notrace_module(ParCPair)
    assert is_notrace_module(ParCMobileVitBlock)


def test_features_only_returns_the_converted_stages_at_a_non_square_size(resnet_ckpt):
    path, model = resnet_ckpt
    backbone = ps.load(path, features_only=True, out_indices=(3, 4)).eval()
    assert backbone.feature_info.reduction() == [16, 32]
    assert backbone.feature_info.channels() == [256, 512]
    assert backbone.feature_info.module_name() == ["layer3", "layer4"]
    x = torch.randn(2, 3, 96, 160)
    with torch.no_grad():
        maps = backbone(x)
    assert [tuple(m.shape) for m in maps] == [(2, 256, 6, 10), (2, 512, 3, 5)]
    # The same numbers as the converted model's own stages: the weights were loaded.
    for got, want in zip(maps, _layer_outputs(model, ["layer3", "layer4"], x), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_the_backbone_traces_parc_as_leaves(resnet_ckpt):
    path, _ = resnet_ckpt
    backbone = ps.load(path, features_only=True, out_indices=(4,))
    called = {n.target for n in backbone.graph_module.graph.nodes if n.op == "call_module"}
    assert "layer4.1.conv2" in called  # the ParC pair, one opaque call
    assert not any(t.startswith("layer4.1.conv2.") for t in called)


def test_backbone_runs_at_a_detection_size(resnet_ckpt):
    path, _ = resnet_ckpt
    backbone = ps.load(path, features_only=True, out_indices=(3, 4)).eval()
    with torch.no_grad():
        maps = backbone(torch.randn(1, 3, 800, 1344))
    assert [tuple(m.shape) for m in maps] == [(1, 256, 50, 84), (1, 512, 25, 42)]
    assert all(torch.isfinite(m).all() for m in maps)


def test_timms_fx_feature_extraction_traces_a_converted_mobilevit():
    model = ps.convert("mobilevit_xxs", input_size=(64, 64)).model.eval()
    blocks = [s.path for s in ps.plan_conversion("mobilevit_xxs", input_size=(64, 64)).plan.swaps]
    extractor = create_feature_extractor(model, return_nodes={b: b for b in blocks})
    called = {n.target for n in extractor.graph.nodes if n.op == "call_module"}
    assert set(blocks) <= called  # each ParC MobileViT block is one leaf call
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        got = extractor(x)
    for name, want in zip(blocks, _layer_outputs(model, blocks, x), strict=True):
        torch.testing.assert_close(got[name], want, rtol=1e-5, atol=1e-5)


def test_out_indices_outside_the_features_are_refused_with_the_choices(resnet_ckpt):
    path, _ = resnet_ckpt
    with pytest.raises(UsageError, match=r"out_indices \(5,\).*4: layer4 \(512 ch, stride 32\)"):
        ps.load(path, features_only=True, out_indices=(5,))


def test_a_custom_model_backbone_has_one_feature_per_stage(tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(CUSTOM_RULES)
    model = TinyNet()
    plan = ps.parcify_(model, str(rules), input_size=(64, 64))
    path = tmp_path / "tiny.safetensors"
    ps.save(model, plan, path)
    backbone = ps.load(path, model=TinyNet(), features_only=True).eval()
    assert backbone.feature_info.reduction() == [4, 8, 16, 32]
    assert backbone.feature_info.module_name() == ["stages.0", "stages.1", "stages.2", "stages.3"]
    x = torch.randn(1, 3, 96, 64)
    with torch.no_grad():
        maps = backbone(x)
    assert [tuple(m.shape[1:]) for m in maps] == [(16, 24, 16), (24, 12, 8), (32, 6, 4), (48, 3, 2)]
    want = _layer_outputs(model.eval(), ["stages.2", "stages.3"], x)
    torch.testing.assert_close(maps[2:], want, rtol=1e-5, atol=1e-5)
