"""The published ParC networks: exact parameter counts, import-official / export-official.

The official code is not a dependency, so its forward is recomputed here from the
exported official state_dict (ParC-Net-S's `outer_frame_v1` with `gcc_ca_mf_block`s, a
ParC-MobileNetV2 `InvertedResidual_parc`), following hkzhang-git/ParC-Net, and compared
with the converted timm model.
"""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from parc_surgery.checkpoint import load, save
from parc_surgery.cli import app
from parc_surgery.cli.options import OfficialArch
from parc_surgery.official import ARCHS, _reference, load_encoder, read_official, to_official

runner = CliRunner()


def _conv_layer_params(cin, cout, k, groups=1, norm=True):
    """cvnets ConvLayer: a conv without bias, then BN (weight + bias)."""
    return cout * (cin // groups) * k * k + (2 * cout if norm else 0)


def _inverted_residual_params(cin, cout, expand=4):
    hidden = cin * expand  # make_divisible(., 8) leaves these widths as they are
    return (_conv_layer_params(cin, hidden, 1) + _conv_layer_params(hidden, hidden, 3, hidden)
            + _conv_layer_params(hidden, cout, 1))  # fmt: skip


def _gcc_ca_mf_block_params(d, k, ffn, pe):
    """gcc_ca_mf_block(dim=d/2): pre_Norm_1/2, 4 meta kernels (+ 4 pe), ffn, CA (d/16)."""
    half, r = d // 2, d // 16
    spatial = 2 * 2 * half + 4 * half * k + (4 * half * k if pe else 0)
    channel = 2 * d + (d * ffn + ffn) + (ffn * d + d)
    return spatial + channel + (d * r + 2 * r) + (r * d + 2 * d)


def _outer_frame_v1_params(c, d, n, ffn, k, fusion):
    g = math.gcd(c, d)  # dim_adaptive.0 and channel_adaptive are grouped gcd(D, C)
    total = _conv_layer_params(c, d, 3, g) + _conv_layer_params(d, d, 1, norm=False)
    total += sum(_gcc_ca_mf_block_params(d, k, ffn, j == 0) for j in range(n)) + 2 * d
    total += _conv_layer_params(d, c, 1, g)
    return total + _conv_layer_params(2 * c if fusion == "concat" else c, c, 3)


def _edgeformer_params(layers, fusion, stem=(16, 3), mv2=(32, 64), classes=1000):
    """The official edgeformer's parameter count from its config (cvnets' config/edgeformer.py:
    layer3..5 as (out_channels, cf_s_channels, cf_blocks, cf_ffn_channels), meta kernels
    32/16/8; conv_1 (channels, kernel) `stem`: 16 3x3, or 48 5x5 in scale_h; layer1 one MV2
    and layer2 three MV2 of widths `mv2`; conv_1x1_exp min(4x, 960), classifier)."""
    (first, k), (l1, l2) = stem, mv2
    total = _conv_layer_params(3, first, k) + _inverted_residual_params(first, l1)
    total += _inverted_residual_params(l1, l2) + 2 * _inverted_residual_params(l2, l2)
    prev = l2
    for (c, d, n, ffn), k in zip(layers, (32, 16, 8), strict=True):
        total += _inverted_residual_params(prev, c)
        total += _outer_frame_v1_params(c, d, n, ffn, k, fusion)
        prev = c
    exp = min(4 * prev, 960)
    return total + _conv_layer_params(prev, exp, 1) + exp * classes + classes


# Official counts (the official constructors' sum of parameters; PARC.md sections 2-3).
# edgeformer's are recomputed from the official config: scale_s (fusion concat),
# scale_xs (edgeformer_xs.yaml: fusion add) and scale_h (edgeformer_h.yaml: fusion concat,
# conv_1 a 5x5 conv to 48 channels, MV2 widths 96 and 144).
PUBLISHED = {
    "parc-resnet50": 23_737_640,
    "parc-mobilenetv2": 3_532_136,
    "parc-convnext-xt": 7_412_824,
    "parcnet-s": _edgeformer_params(
        [(96, 192, 2, 384), (128, 256, 4, 512), (160, 320, 3, 640)], "concat"
    ),
    "parcnet-xs": _edgeformer_params(
        [(96, 96, 2, 192), (128, 128, 3, 256), (160, 160, 2, 320)], "add"
    ),
    "parcnet-h": _edgeformer_params(
        [(216, 324, 3, 648), (288, 432, 9, 864), (432, 432, 3, 864)],
        "concat",
        stem=(48, 5),
        mv2=(96, 144),
    ),
}


def test_the_official_edgeformer_counts():
    assert PUBLISHED["parcnet-s"] == 5_037_088  # the paper's 5.0 M, PARC.md section 3
    assert PUBLISHED["parcnet-xs"] == 2_185_384
    assert PUBLISHED["parcnet-h"] == 20_403_940


def _randomised(arch: str) -> torch.nn.Module:
    """The arch's converted model with every tensor random (BN variances positive)."""
    model = copy.deepcopy(_reference(arch)[0])
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=g) + 0.5 if "running_var" in name
                        else torch.randn(t.shape, generator=g) * 0.1)  # fmt: skip
    return model.eval()


# The official SSD / DeepLabV3 encoders: ParC-Net-S less what those models delete from it
# (`encoder.classifier = None`, `encoder.conv_1x1_exp = None` in cvnets' ssd.py and
# enc_dec.py): the classifier Linear(640, 1000) (641,000) and conv_1x1_exp, a 1x1 conv
# 160 -> 640 without bias + BN (102,400 + 1,280).
ENCODERS = {
    "parcnet-s-ssd": PUBLISHED["parcnet-s"] - 641_000 - 103_680,  # 4,292,408
    "parcnet-s-deeplabv3": PUBLISHED["parcnet-s"] - 641_000 - 103_680,
}


def test_cli_arch_names_are_the_official_archs():
    assert [a.value for a in OfficialArch] == list(ARCHS) == [*PUBLISHED, *ENCODERS]


@pytest.mark.parametrize("arch", list(PUBLISHED))
def test_shipped_conversions_have_the_official_parameter_counts(arch):
    model, plan = _reference(arch)
    assert sum(p.numel() for p in model.parameters()) == PUBLISHED[arch]
    assert plan.rules_source == f"shipped:{ARCHS[arch].rules}"


@pytest.mark.parametrize("arch", list(ENCODERS))
def test_encoder_archs_have_the_official_encoder_parameter_counts(arch):
    model, _ = _reference(arch)
    spec = ARCHS[arch]
    names = spec.name_map(model.state_dict())
    params = dict(model.named_parameters())
    encoder = sum(params[k].numel() for k, v in names.items()
                  if k in params and not v.startswith(spec.absent))  # fmt: skip
    assert encoder == ENCODERS[arch]


@pytest.mark.parametrize("arch", ["parc-mobilenetv2", "parcnet-s", "parcnet-xs", "parcnet-h"])
def test_official_heads_carry_dropout_02_and_eval_is_unaffected(arch):
    """The official MobileNetV2 and edgeformer_s / _xs / _h classifiers have Dropout(0.2)."""
    model = copy.deepcopy(_reference(arch)[0])
    assert model.drop_rate == 0.2
    assert ARCHS[arch].model_args["drop_rate"] == 0.2  # recorded in the recipe, so kept on load
    x = torch.randn(2, 3, 64, 64)
    outputs = []
    with torch.no_grad():
        for mode in (True, True, False, False):  # train twice, eval twice
            torch.manual_seed(len(outputs))
            outputs.append(model.train(mode)(x))
    assert not torch.equal(outputs[0], outputs[1])  # dropout: train outputs vary by seed
    assert torch.equal(outputs[2], outputs[3])  # eval: deterministic, no dropout


@pytest.mark.parametrize(
    ("arch", "fc"),
    [("parc-mobilenetv2", "classifier.1"), ("parcnet-s", "classifier.fc"),
     ("parcnet-xs", "classifier.fc"), ("parcnet-h", "classifier.fc")],
)  # fmt: skip
def test_train_mode_head_matches_the_official_classifier_with_the_same_seed(arch, fc):
    """The official heads: mean pool -> Dropout(0.2) -> Linear (torchvision MobileNetV2's
    classifier, edgeformer's `classifier`); ours draws the same mask from the same seed."""
    model = _randomised(arch).train()
    official = to_official(ARCHS[arch], model.state_dict())
    features = torch.randn(4, official[f"{fc}.weight"].shape[1], 7, 7)
    torch.manual_seed(5)
    ours = model.forward_head(features)
    torch.manual_seed(5)
    pooled = F.dropout(features.mean((2, 3)), 0.2, training=True)
    theirs = F.linear(pooled, official[f"{fc}.weight"], official[f"{fc}.bias"])
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # and without the dropout they differ: the mask is really drawn
        plain = F.linear(features.mean((2, 3)), official[f"{fc}.weight"], official[f"{fc}.bias"])
    assert not torch.allclose(ours, plain, atol=1e-3)


def test_segmentation_encoder_keeps_the_official_kernel_8_in_its_dilated_last_block():
    """output_stride=16 dilates stage 4; the official DeepLabV3 encoder keeps its kernel 8."""
    from parc_surgery.pipeline import plan_conversion

    planned = plan_conversion(
        "mobilevit_s", rules="parcnet-s", input_size=(256, 256),
        model_args={"output_stride": 16},
    )  # fmt: skip
    from parc_surgery.apply import apply_plan

    model = apply_plan(planned.model, planned.plan, seed=0)
    lengths = [model.stages[s][1].parc_blocks[0].parc1_h.weight.shape[2] for s in (2, 3, 4)]
    assert lengths == [32, 16, 8]
    assert model.stages[4][1].conv_kxk.conv.dilation == (1, 1)  # as the official dim_adaptive


@pytest.fixture(scope="module", params=list(PUBLISHED))
def round_trip(request, tmp_path_factory):
    """export-official of a random converted model, then import-official of that file."""
    arch = request.param
    folder = tmp_path_factory.mktemp(arch)
    model = _randomised(arch)
    save(model, _reference(arch)[1], folder / "ours.safetensors")
    ours, official = str(folder / "ours.safetensors"), str(folder / "official.pt")
    exported = runner.invoke(app, ["export-official", ours, "-o", official, "--format", "json"])
    assert exported.exit_code == 0, exported.output
    assert json.loads(exported.stdout)["arch"] == arch  # found from the recipe
    imported = runner.invoke(app, ["import-official", str(folder / "official.pt"), "--arch", arch,
                                   "-o", str(folder / "back.safetensors")])  # fmt: skip
    assert imported.exit_code == 0, imported.output
    assert f"{PUBLISHED[arch]:,} params" in imported.stderr
    return arch, model, folder


def test_export_then_import_gives_the_same_state_and_outputs(round_trip):
    arch, model, folder = round_trip
    back = load(folder / "back.safetensors").eval()
    # The official head dropout travels in the recipe: the rebuilt model trains with it.
    assert back.drop_rate == ARCHS[arch].model_args.get("drop_rate", 0.0)
    original, restored = model.state_dict(), back.state_dict()
    assert set(original) == set(restored)
    assert all(torch.equal(original[k], restored[k]) for k in original)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(back(x), model(x), rtol=0, atol=0)


def test_exported_file_has_the_official_names(round_trip):
    arch, model, folder = round_trip
    official = torch.load(folder / "official.pt", weights_only=True)
    sd = model.state_dict()
    theirs, ours = {
        "parc-resnet50": ("layer3.3.parc_H.gcc_conv.weight", "layer3.3.conv2.parc_h.weight"),
        "parc-mobilenetv2": ("features.9.gcc_W.pe", "blocks.3.2.conv_dw.parc_w.pe"),
        "parc-convnext-xt": (
            "stages.3.2.gcc_H.gcc_conv.bias",
            "stages.3.blocks.2.conv_dw.parc_h.bias",
        ),
        "parcnet-s": (
            "layer_4.1.spatial_global_rep.0.meta_pe_1_W",
            "stages.3.1.parc_blocks.0.pe_w.pe",
        ),
        "parcnet-xs": (
            "layer_4.1.spatial_global_rep.3.running_var",  # the BN after its 3 blocks
            "stages.3.1.norm.running_var",
        ),
        "parcnet-h": (
            "layer_4.1.spatial_global_rep.9.running_var",  # the BN after its 9 blocks
            "stages.3.1.norm.running_var",
        ),
    }[arch]
    assert torch.equal(official[theirs], sd[ours])
    if arch == "parcnet-s":
        # edgeformer's `residual` attribute repeats layer_5.0; fusion reads cat(global, shortcut).
        residual = [k for k in official if k.startswith("residual.")]
        assert len(residual) == 18
        assert all(torch.equal(official[k], official["layer_5.0." + k[9:]]) for k in residual)
        ours = sd["stages.2.1.conv_fusion.conv.weight"]
        theirs = official["layer_3.1.local_global_fusion.block.conv.weight"]
        assert torch.equal(theirs, torch.cat((ours[:, 96:], ours[:, :96]), dim=1))
    if arch == "parcnet-h":  # conv_1 is 5x5; fusion concat, as S: the halves swap
        assert official["conv_1.block.conv.weight"].shape == (48, 3, 5, 5)
        assert official["layer_3.1.dim_adaptive.0.block.conv.weight"].shape == (324, 2, 3, 3)
        ours = sd["stages.2.1.conv_fusion.conv.weight"]
        theirs = official["layer_3.1.local_global_fusion.block.conv.weight"]
        assert torch.equal(theirs, torch.cat((ours[:, 216:], ours[:, :216]), dim=1))
    if arch == "parcnet-xs":  # fusion "add": a C -> C conv, nothing to swap
        theirs = official["layer_3.1.local_global_fusion.block.conv.weight"]
        assert theirs.shape == (96, 96, 3, 3)
        assert torch.equal(theirs, sd["stages.2.1.conv_fusion.conv.weight"])


def _bn(sd, p, x):
    return F.batch_norm(x, sd[f"{p}.running_mean"], sd[f"{p}.running_var"],
                        sd[f"{p}.weight"], sd[f"{p}.bias"], False, 0.0, 1e-5)  # fmt: skip


def _conv_layer(sd, p, x, groups=1, norm=True, act=True):
    """cvnets ConvLayer: conv ('same' padding, no bias) -> BN -> swish."""
    w = sd[f"{p}.block.conv.weight"]
    x = F.conv2d(x, w, padding=w.shape[-1] // 2, groups=groups)
    x = _bn(sd, f"{p}.block.norm", x) if norm else x
    return F.silu(x) if act else x


def _gcc(x, w, bias, direction):
    """The official global circular conv: circular extension, then a valid conv."""
    ext = torch.cat((x, x[:, :, :-1]), 2) if direction == "H" else torch.cat((x, x[..., :-1]), 3)
    return F.conv2d(ext, w, bias, groups=x.shape[1])


def _gcc_ca_mf_block(sd, p, x):
    x1, x2 = x.chunk(2, dim=1)
    r1, r2 = x1, x2
    pe = f"{p}.meta_pe_1_H" in sd
    if pe:
        x1, x2 = x1 + sd[f"{p}.meta_pe_1_H"], x2 + sd[f"{p}.meta_pe_1_W"]
    x1, x2 = _bn(sd, f"{p}.pre_Norm_1", x1), _bn(sd, f"{p}.pre_Norm_2", x2)
    y1, y2 = (
        _gcc(x1, sd[f"{p}.meta_kernel_1_H"], None, "H"),
        _gcc(x2, sd[f"{p}.meta_kernel_1_W"], None, "W"),
    )
    if pe:
        y1, y2 = y1 + sd[f"{p}.meta_pe_2_W"], y2 + sd[f"{p}.meta_pe_2_H"]
    z1, z2 = (
        _gcc(y1, sd[f"{p}.meta_kernel_2_W"], None, "W"),
        _gcc(y2, sd[f"{p}.meta_kernel_2_H"], None, "H"),
    )
    x = torch.cat((r1 + z1, r2 + z2), dim=1)
    f = _bn(sd, f"{p}.ffn.0", x)
    f = F.conv2d(F.hardswish(F.conv2d(f, sd[f"{p}.ffn.1.weight"], sd[f"{p}.ffn.1.bias"])),
                 sd[f"{p}.ffn.4.weight"], sd[f"{p}.ffn.4.bias"])  # fmt: skip
    a = _bn(sd, f"{p}.ca.fc.1", F.conv2d(f.mean((2, 3), keepdim=True), sd[f"{p}.ca.fc.0.weight"]))
    a = _bn(sd, f"{p}.ca.fc.4", F.conv2d(F.hardswish(a), sd[f"{p}.ca.fc.3.weight"]))
    return x + f * F.hardsigmoid(a)


def _outer_frame_v1(sd, p, x, n, d, fusion="concat"):
    c = x.shape[1]
    g = math.gcd(d, c)  # np.gcd(cf_s_channels, in_channels): C in S and XS, not in H
    res = x
    x = _conv_layer(sd, f"{p}.dim_adaptive.0", x, groups=g)
    x = F.conv2d(x, sd[f"{p}.dim_adaptive.1.block.conv.weight"])
    for j in range(n):
        x = _gcc_ca_mf_block(sd, f"{p}.spatial_global_rep.{j}", x)
    x = _bn(sd, f"{p}.spatial_global_rep.{n}", x)
    x = _conv_layer(sd, f"{p}.channel_adaptive", x, groups=g)
    fused = res + x if fusion == "add" else torch.cat((x, res), dim=1)
    return _conv_layer(sd, f"{p}.local_global_fusion", fused)


@pytest.mark.parametrize(
    ("arch", "stage", "n", "d", "size"),
    [("parcnet-s", 2, 2, 192, 32), ("parcnet-s", 3, 4, 256, 16), ("parcnet-s", 4, 3, 320, 8),
     ("parcnet-xs", 2, 2, 96, 32), ("parcnet-xs", 3, 3, 128, 16), ("parcnet-xs", 4, 2, 160, 8),
     ("parcnet-h", 2, 3, 324, 32), ("parcnet-h", 3, 9, 432, 16), ("parcnet-h", 4, 3, 432, 8)],
)  # fmt: skip
def test_parcnet_blocks_compute_the_official_outer_frame(arch, stage, n, d, size):
    """S, XS and H (cf_s_channels d, cf_blocks n of the official config) at 256 px."""
    model = _randomised(arch)
    official = to_official(ARCHS[arch], model.state_dict())
    assert f"layer_{stage + 1}.1.spatial_global_rep.{n}.running_mean" in official  # n blocks
    assert official[f"layer_{stage + 1}.1.dim_adaptive.1.block.conv.weight"].shape[0] == d
    block = model.stages[stage][1]
    x = torch.randn(2, block.conv_kxk.conv.in_channels, size, size)
    with torch.no_grad():
        fusion = "add" if arch == "parcnet-xs" else "concat"
        expected = _outer_frame_v1(official, f"layer_{stage + 1}.1", x, n, d, fusion)
        torch.testing.assert_close(block(x), expected, rtol=1e-4, atol=1e-4)


def test_deeplabv3_encoder_last_block_computes_the_official_outer_frame():
    """The official DeepLabV3 encoder (output stride 16) builds layer_5's outer_frame_v1
    without its dilation argument: dim_adaptive.0 is a plain 3x3 conv, kernels 8."""
    model = _randomised("parcnet-s-deeplabv3")
    official = to_official(ARCHS["parcnet-s"], model.state_dict())
    x = torch.randn(2, 160, 8, 8)
    with torch.no_grad():
        expected = _outer_frame_v1(official, "layer_5.1", x, 3, 320)
        torch.testing.assert_close(model.stages[4][1](x), expected, rtol=1e-4, atol=1e-4)


def test_parc_mobilenetv2_block_computes_the_official_one():
    model = _randomised("parc-mobilenetv2")
    sd = to_official(ARCHS["parc-mobilenetv2"], model.state_dict())
    x = torch.randn(2, 64, 14, 14)
    with torch.no_grad():
        h = F.relu6(
            _bn(sd, "features.9.pw_expand.1", F.conv2d(x, sd["features.9.pw_expand.0.weight"]))
        )
        h1, h2 = h.chunk(2, dim=1)
        h1 = _gcc(h1 + sd["features.9.gcc_H.pe"], sd["features.9.gcc_H.gcc_conv.weight"],
                  sd["features.9.gcc_H.gcc_conv.bias"], "H")  # fmt: skip
        h2 = _gcc(h2 + sd["features.9.gcc_W.pe"], sd["features.9.gcc_W.gcc_conv.weight"],
                  sd["features.9.gcc_W.gcc_conv.bias"], "W")  # fmt: skip
        h = F.relu6(_bn(sd, "features.9.bn", torch.cat((h1, h2), dim=1)))
        expected = x + _bn(
            sd, "features.9.pw_linear.1", F.conv2d(h, sd["features.9.pw_linear.0.weight"])
        )
        torch.testing.assert_close(model.blocks[3][2](x), expected, rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def convnext_official():
    """A valid official ParC-ConvNeXt-XT state_dict (the cheapest arch to build)."""
    return to_official(ARCHS["parc-convnext-xt"], _randomised("parc-convnext-xt").state_dict())


def _import(tmp_path, obj, *extra):
    path = tmp_path / "official.pth"
    if isinstance(obj, bytes):
        path.write_bytes(obj)
    else:
        torch.save(obj, path)
    out = tmp_path / "out.safetensors"
    result = runner.invoke(
        app, ["import-official", str(path), "--arch", "parc-convnext-xt", "-o", str(out), *extra]
    )
    return result, out


def test_import_accepts_nesting_and_a_module_prefix(tmp_path, convnext_official):
    nested = {"epoch": 3, "model": {f"module.{k}": v for k, v in convnext_official.items()}}
    result, out = _import(tmp_path, nested)
    assert result.exit_code == 0, result.output
    restored = load(out).state_dict()
    assert torch.equal(
        restored["stages.2.blocks.6.conv_dw.parc_w.pe"], convnext_official["stages.2.6.gcc_W.pe"]
    )
    assert read_official(tmp_path / "official.pth").keys() == convnext_official.keys()


def _edited(official, drop=(), add=None, reshape=None):
    out = {k: v for k, v in official.items() if k not in drop}
    out.update(add or {})
    for key, shape in (reshape or {}).items():
        out[key] = torch.zeros(shape)
    return out


PE, EXTRA, KERNEL = (
    "stages.2.6.gcc_H.pe",
    "stages.2.6.gcc_H.extra",
    "stages.2.7.gcc_W.gcc_conv.weight",
)


@pytest.mark.parametrize(
    ("edit", "listed"),
    [
        (dict(drop=[PE, "head.bias"]), ["2 missing keys", PE, "head.bias"]),
        (dict(add={EXTRA: torch.zeros(1)}), ["1 unexpected keys", EXTRA]),
        (
            dict(reshape={KERNEL: (96, 1, 1, 7)}),
            [f"{KERNEL} (96, 1, 1, 7), expected (96, 1, 1, 14)"],
        ),
    ],
    ids=["missing", "extra", "shape"],
)
def test_import_refuses_a_mismatched_state_dict_and_lists_the_keys(
    tmp_path, convnext_official, edit, listed
):
    result, out = _import(tmp_path, _edited(convnext_official, **edit))
    assert result.exit_code == 6, result.output
    for text in listed:
        assert text in result.stderr
    assert "Traceback" not in result.output and not out.exists()


class _Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ([torch.zeros(1)], "holds no state_dict"),
        ({"state_dict": {"a": 1}}, "holds no state_dict"),
        (b"\x00\x01 not a torch file", "could not be read"),
        ({"w": _Payload()}, "could not be read"),
    ],
    ids=["list", "not-tensors", "garbage", "pickled-object"],
)
def test_import_refuses_files_that_are_not_state_dicts(tmp_path, obj, message):
    result, out = _import(tmp_path, obj)  # torch.save pickles the payload's __reduce__
    assert result.exit_code == 6, result.output
    assert message in result.stderr and "this must never run" not in result.output
    assert not out.exists()


def test_import_never_overwrites_without_force(tmp_path, convnext_official):
    (tmp_path / "out.safetensors").write_text("keep me")
    result, out = _import(tmp_path, convnext_official)
    assert result.exit_code == 7 and out.read_text() == "keep me"
    result, out = _import(tmp_path, convnext_official, "--force")
    assert result.exit_code == 0 and load(out) is not None


def test_import_needs_an_arch(tmp_path):
    result = runner.invoke(
        app, ["import-official", str(tmp_path / "x.pt"), "-o", str(tmp_path / "o")]
    )
    assert result.exit_code == 2 and "--arch" in result.stderr


def test_export_refuses_a_conversion_that_is_not_the_published_one(tmp_path):
    from parc_surgery.pipeline import convert

    # ConvNeXt-XT converted at 64 px: kernels of 4 and 2, not the official 14 and 7.
    small = tmp_path / "small.safetensors"
    convert(
        "convnext_tiny",
        model_args={"dims": (48, 96, 192, 384)},
        input_size=(64, 64),
        output=str(small),
    )
    result = runner.invoke(app, ["export-official", str(small), "-o", str(tmp_path / "o.pt")])
    assert result.exit_code == 6, result.output
    assert "not the published ParC-ConvNeXt-XT" in result.stderr
    assert (
        "stages.2.blocks.6.conv_dw.parc_h.weight (96, 1, 4, 1), published (96, 1, 14, 1)"
        in result.stderr
    )
    assert not (tmp_path / "o.pt").exists()
    # A model that is no published network at all.
    other = tmp_path / "other.safetensors"
    convert("convnext_atto", input_size=(64, 64), output=str(other))
    result = runner.invoke(app, ["export-official", str(other), "-o", str(tmp_path / "o.pt")])
    assert result.exit_code == 6 and "none of the published ParC networks" in result.stderr


def test_import_takes_the_ema_weights_of_a_training_checkpoint(tmp_path, convnext_official):
    """The official trainer's checkpoint.pt: model_state_dict + ema_state_dict."""
    ema = {k: v + 1 if v.is_floating_point() else v for k, v in convnext_official.items()}
    full = {"epoch": 300, "model_state_dict": convnext_official, "ema_state_dict": ema,
            "best_metric": 78.3}  # fmt: skip
    key, ours = "stages.2.6.gcc_W.pe", "stages.2.blocks.6.conv_dw.parc_w.pe"
    result, out = _import(tmp_path, full)
    assert result.exit_code == 0, result.output
    assert "took the EMA weights (ema_state_dict)" in result.stderr
    assert torch.equal(load(out).state_dict()[ours], ema[key])
    result, out = _import(tmp_path, full, "--no-ema", "--force", "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["weights"] == "model_state_dict"
    assert torch.equal(load(out).state_dict()[ours], convnext_official[key])
    # A file with raw weights only: those, and said so.
    result, out = _import(tmp_path, {"model_state_dict": convnext_official}, "--force")
    assert result.exit_code == 0
    assert "raw weights (model_state_dict); the file has no ema_state_dict" in result.stderr


def _official_encoder_file(tmp_path, arch, heads):
    """An official SSD / DeepLabV3 state_dict: `encoder.` + edgeformer less its head, + heads."""
    model = _randomised(arch)
    official = to_official(ARCHS["parcnet-s"], model.state_dict())
    encoder = {f"encoder.{k}": v for k, v in official.items()
               if not k.startswith(("classifier.", "conv_1x1_exp."))}  # fmt: skip
    path = tmp_path / f"{arch}.pt"
    torch.save({"model_state_dict": {**encoder, **heads}}, path)
    return model, path


@pytest.mark.parametrize(
    ("arch", "heads"),
    [
        (
            "parcnet-s-ssd",  # names from cvnets' ssd.py (SSDHead, SeparableConv extra layers)
            {"ssd_heads.0.loc_cls_layer.block.conv.weight": torch.zeros(42, 128, 3, 3),
             "extra_layers.os_64.dw_conv.block.conv.weight": torch.zeros(160, 1, 3, 3)},
        ),
        (
            "parcnet-s-deeplabv3",  # enc_dec.py's seg_head (DeepLabV3 ASPP)
            {"seg_head.aspp.aspp_layer.convs.0.block.conv.weight": torch.zeros(256, 160, 1, 1)},
        ),
    ],
)  # fmt: skip
def test_import_of_the_official_detection_and_segmentation_encoders(tmp_path, arch, heads):
    model, path = _official_encoder_file(tmp_path, arch, heads)
    out = tmp_path / "encoder.safetensors"
    result = runner.invoke(app, ["import-official", str(path), "--arch", arch, "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "not imported: the official head" in result.stderr
    assert "final_conv, head keep their initialisation" in result.stderr
    restored = load(out).state_dict()
    original = model.state_dict()
    stages = [k for k in original if k.startswith(("stem.", "stages."))]
    assert len(stages) > 300 and all(torch.equal(restored[k], original[k]) for k in stages)
    assert not torch.equal(restored["head.fc.weight"], original["head.fc.weight"])
    # The official end points out_l3, out_l4, out_l5 (what the SSD / DeepLabV3 heads read).
    backbone = load_encoder(out, out_indices=(2, 3, 4)).eval()
    assert backbone.feature_info.channels() == [96, 128, 160]
    stride = 16 if arch.endswith("deeplabv3") else 32
    assert backbone.feature_info.reduction() == [8, 16, stride]
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        features = backbone(x)
        expected = model.stages(model.stem(x))
    assert features[-1].shape[-1] == 64 // stride
    torch.testing.assert_close(features[-1], expected, rtol=0, atol=0)
    # The encoder cannot be written back: its head is theirs.
    again = runner.invoke(
        app, ["export-official", str(out), "--arch", arch, "-o", str(tmp_path / "o.pt")]
    )
    assert again.exit_code == 2 and "features_only" in again.stderr


def test_import_of_an_encoder_refuses_a_classification_file(tmp_path):
    official = to_official(ARCHS["parcnet-s"], _randomised("parcnet-s").state_dict())
    torch.save(official, tmp_path / "cls.pt")
    out = str(tmp_path / "o.safetensors")
    args = ["import-official", str(tmp_path / "cls.pt"), "--arch", "parcnet-s-ssd", "-o", out]
    result = runner.invoke(app, args)
    assert result.exit_code == 6 and "no encoder.* keys" in result.stderr


@pytest.mark.parametrize(
    "args", [{}, {"drop_rate": 0.2}, {"drop_rate": 0.0, "drop_path_rate": 0.1}]
)
def test_export_finds_the_network_whatever_its_training_only_args(args):
    """Head dropout and drop path change no weight: a checkpoint with or without them is
    the published network (export-official must not refuse drop_rate=0.2)."""
    from parc_surgery.official import _arch_of

    recipe = {"plan": {"model": "mobilevit_s", "model_args": args}}
    assert _arch_of(recipe, "x.safetensors").name == "parcnet-s"
    recipe = {"plan": {"model": "mobilevit_s", "model_args": {**args, "output_stride": 16}}}
    assert _arch_of(recipe, "x.safetensors").name == "parcnet-s-deeplabv3"


def test_parcnet_xs_block_refuses_a_stage_without_an_official_depth():
    import timm

    from parc_surgery.blocks.parcnet_s import XS_DEPTHS, build_parcnet_xs_block
    from parc_surgery.blocks.registry import ReplacementContext, ReplacementError

    block = timm.create_model("mobilevit_s").stages[2][1]
    ctx = ReplacementContext(path="stages.1.1", feature_size=(64, 64), stage=1, index=1,
                             first_in_container=False)  # fmt: skip
    with pytest.raises(ReplacementError, match="stage 1, where ParC-Net-XS has no block"):
        build_parcnet_xs_block(block, ctx)
    ctx.stage = 3  # the official depth there is 3, not timm's 4 transformer blocks
    assert len(build_parcnet_xs_block(block, ctx).parc_blocks) == XS_DEPTHS[3] == 3


def test_parcnet_h_block_refuses_a_block_without_the_official_widths():
    """parcnet_h_block converts parcnet_h_base, not mobilevit_s (C 96 where H has 216)."""
    import timm

    from parc_surgery.blocks.parcnet_s import H_STAGES, build_parcnet_h_block
    from parc_surgery.blocks.registry import ReplacementContext, ReplacementError

    ctx = ReplacementContext(path="stages.2.1", feature_size=(32, 32), stage=2, index=1,
                             first_in_container=False)  # fmt: skip
    block = timm.create_model("mobilevit_s").stages[2][1]
    with pytest.raises(ReplacementError, match="96 channels in stage 2; ParC-Net-H's have 216"):
        build_parcnet_h_block(block, ctx)
    base = timm.create_model("parcnet_h_base")
    assert base.stem.conv.kernel_size == (5, 5) and base.stem.conv.out_channels == 48
    new = build_parcnet_h_block(base.stages[2][1], ctx)
    assert len(new.parc_blocks) == H_STAGES[2][2] == 3
    assert new.conv_kxk.conv.groups == new.conv_proj.conv.groups == 108  # gcd(324, 216)


def test_readme_says_what_is_imported_from_which_file_for_every_arch():
    """The official-weights table has a row per --arch, naming its official source."""
    from pathlib import Path

    text = (Path(__file__).parents[1] / "README.md").read_text()
    section = text.split("## Official ParC-Net weights", 1)[1].split("\n## ", 1)[0]
    rows = {line.split("|")[1].strip(" `"): line for line in section.splitlines()
            if line.startswith("| `") and not line.startswith("| `--arch`")}  # fmt: skip
    assert list(rows) == list(ARCHS)
    for name, spec in ARCHS.items():
        assert f"`{spec.model}`" in rows[name]  # what it is imported into
    assert "edgeformer_h.yaml" in rows["parcnet-h"] and "scale_h" in rows["parcnet-h"]
