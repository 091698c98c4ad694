"""timm, torchvision and the hub: the published networks as timm models, save-pretrained
folders timm and parc_surgery.load read, the conversion size in pretrained_cfg,
torchvision's feature extractor, timm's reparameterize_model and the ONNX metadata."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

import parc_surgery as ps
from parc_surgery import hub
from parc_surgery.checkpoint import read_recipe
from parc_surgery.cli import app
from parc_surgery.errors import CheckpointError, WeightsError

SIZE = (64, 64)


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_importing_parc_surgery_registers_the_published_networks_with_timm():
    # A fresh interpreter: registration must happen on import, in either import order.
    code = (
        "import parc_surgery, timm; a = timm.list_models('parc*'); "
        "import sys; print(','.join(a)); print('timm' in sys.modules)"
    )
    for order in (code, code.replace("import parc_surgery, timm", "import timm, parc_surgery")):
        out = subprocess.run(
            [sys.executable, "-c", order], capture_output=True, text=True, check=True
        ).stdout.split()
        names = out[0].split(",")
        for name in ("parc_resnet50", "parc_mobilenetv2_100", "parc_convnext_xt", "parcnet_s",
                     "parcnet_xs", "parcnet_h", "parcnet_h_base"):  # fmt: skip
            assert name in names
    # ...and `import parc_surgery` alone still does not import timm (the CLI starts fast).
    alone = subprocess.run(
        [sys.executable, "-c", "import parc_surgery, sys; print('timm' in sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert alone.stdout.strip() == "False"


def test_a_plain_conversion_keeps_the_source_head_dropout_as_the_readme_says():
    # The official 0.2 comes with the timm parc_* models and import-official, not with a
    # conversion of timm's mobilenetv2_100 (drop_rate 0.0), unless asked for.
    from pathlib import Path

    import timm

    from parc_surgery.official import ARCHS
    from parc_surgery.pipeline import plan_conversion

    plain = plan_conversion("mobilenetv2_100", input_size=SIZE)
    assert plain.model.drop_rate == 0.0 and "drop_rate" not in plain.plan.model_args
    asked = plan_conversion("mobilenetv2_100", input_size=SIZE, model_args={"drop_rate": 0.2})
    assert asked.model.drop_rate == 0.2
    assert timm.create_model("parc_mobilenetv2_100").drop_rate == 0.2
    assert ARCHS["parc-mobilenetv2"].model_args["drop_rate"] == 0.2
    readme = " ".join((Path(__file__).parents[1] / "README.md").read_text().split())
    for said in (
        "a conversion keeps the source model's own head dropout (`parc-convert mobilenetv2_100`"
        " has timm's `drop_rate` 0.0)",
        '`timm.create_model("parc_mobilenetv2_100")`',
        "`import-official --arch`",
        "`--model-arg drop_rate=0.2`",
    ):
        assert said in readme, said


@pytest.mark.parametrize(
    "name, base, params, drop_rate, size",
    [
        ("parc_mobilenetv2_100", "mobilenetv2_100", 3_532_136, 0.2, 224),
        ("parcnet_s", "mobilevit_s", 5_037_088, 0.2, 256),
        ("parcnet_xs", "mobilevit_s", 2_185_384, 0.2, 256),
        ("parcnet_h", "parcnet_h_base", 20_403_940, 0.2, 256),
        ("parc_convnext_xt", "convnext_tiny", 7_412_824, 0.0, 224),
    ],
)
def test_published_timm_models_have_the_published_counts_cfg_and_dropout(
    name, base, params, drop_rate, size
):
    import timm

    model = timm.create_model(name)
    assert _count(model) == params
    assert model.pretrained_cfg["input_size"] == (3, size, size)
    assert model.pretrained_cfg["architecture"] == name
    # the base model's preprocessing (MobileViT's is [0, 1] inputs, as ParC-Net-S's)
    assert model.pretrained_cfg["mean"] == timm.get_pretrained_cfg(base).mean
    assert "url" not in model.pretrained_cfg and "hf_hub_id" not in model.pretrained_cfg
    assert getattr(model, "drop_rate", 0.0) == drop_rate
    # an explicit drop_rate and num_classes still win
    small = timm.create_model(name, drop_rate=0.0, num_classes=10)
    assert small.drop_rate == 0.0 and small.num_classes == 10


def test_parc_resnet50_count_and_features_only():
    import timm

    assert _count(timm.create_model("parc_resnet50")) == 23_737_640
    backbone = timm.create_model("parc_resnet50", features_only=True, out_indices=(3, 4))
    maps = backbone(torch.randn(1, 3, 96, 128))
    assert [m.shape[1] for m in maps] == [1024, 2048]
    assert backbone.feature_info.reduction() == [16, 32]


def test_parcnet_xs_features_only_reads_the_file_given_by_the_overlay(tmp_path):
    """ParC-Net-XS as a timm backbone with weights from a file: the same features as the
    classifier whose state_dict was saved, from a model whose own init differs."""
    import timm
    from safetensors.torch import save_file

    source = timm.create_model("parcnet_xs").eval()
    with torch.no_grad():  # weights no fresh model has: a skipped load would show
        for t in source.state_dict().values():
            if t.is_floating_point():
                t.add_(0.01 * torch.randn_like(t))
    plain = tmp_path / "xs.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(plain))
    backbone = timm.create_model(
        "parcnet_xs",
        pretrained=True,
        features_only=True,
        out_indices=(2, 3, 4),
        pretrained_cfg_overlay=dict(file=str(plain)),
    ).eval()
    assert backbone.feature_info.channels() == [96, 128, 640]
    assert backbone.feature_info.reduction() == [8, 16, 32]
    x = torch.randn(1, 3, *SIZE)
    with torch.no_grad():
        features = backbone(x)
        expected = source.final_conv(source.stages(source.stem(x)))
    torch.testing.assert_close(features[-1], expected, rtol=0, atol=0)
    fresh = timm.create_model("parcnet_xs", features_only=True, out_indices=(4,)).eval()
    with torch.no_grad():
        assert not torch.allclose(fresh(x)[-1], expected, atol=1e-3)


def test_parcnet_h_base_is_parcnet_h_layout_without_weights():
    """No timm model has ParC-Net-H's layout: parcnet_h_base is it (official conv_1 5x5 to
    48, MV2 widths 96/144/216/288/432, conv_1x1_exp 960), mobilevit_s's preprocessing."""
    import timm

    base = timm.create_model("parcnet_h_base")
    assert base.stem.conv.kernel_size == (5, 5) and base.stem.conv.stride == (2, 2)
    # timm's feature_info ends at final_conv (conv_1x1_exp), not stages.4
    assert [f["num_chs"] for f in base.feature_info] == [96, 144, 216, 288, 960]
    assert base.stages[4][1].conv_fusion.conv.out_channels == 432
    assert [len(base.stages[s][1].transformer) for s in (2, 3, 4)] == [3, 9, 3]
    assert timm.get_pretrained_cfg("parcnet_h_base").mean == (0.0, 0.0, 0.0)
    with pytest.raises(WeightsError, match="parcnet_h_base has no weights"):
        timm.create_model("parcnet_h_base", pretrained=True)
    x = torch.randn(1, 3, *SIZE)
    assert timm.create_model("parcnet_h", features_only=True)(x)[-1].shape == (1, 960, 2, 2)


def test_pretrained_reads_the_file_given_by_the_overlay(tmp_path):
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(1)
    source = timm.create_model("parc_mobilenetv2_100", num_classes=10).eval()
    plain = tmp_path / "plain.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(plain))
    loaded = timm.create_model(
        "parc_mobilenetv2_100",
        pretrained=True,
        num_classes=10,
        pretrained_cfg_overlay=dict(file=str(plain)),
    ).eval()
    x = torch.randn(1, 3, *SIZE)
    assert torch.equal(loaded(x), source(x))
    # no file: a clear WeightsError, never a download
    with pytest.raises(WeightsError, match="fetches none"):
        timm.create_model("parc_mobilenetv2_100", pretrained=True)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hub")
    path = folder / "r18.safetensors"
    ps.convert("resnet18", model_args={"num_classes": 10}, input_size=SIZE, output=str(path))
    return path


def test_a_checkpoint_pretrained_cfg_records_its_conversion_size(converted):
    model = ps.load(converted)
    assert model.pretrained_cfg["input_size"] == (3, *SIZE)
    from timm.data import resolve_data_config

    assert resolve_data_config(model=model)["input_size"] == (3, *SIZE)


def test_save_pretrained_folder_loads_in_timm_and_parc_surgery(converted, tmp_path):
    import timm

    folder = tmp_path / "hub-r18"
    result = CliRunner().invoke(app, ["save-pretrained", str(converted), str(folder)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
    ]
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "parc_recipe"
    assert config["num_classes"] == 10
    assert config["pretrained_cfg"]["input_size"] == [3, *SIZE]
    card = (folder / "README.md").read_text()
    assert "library_name: timm" in card and "resnet18" in card and "layer4.1" in card

    ref = ps.load(converted).eval()
    x = torch.randn(2, 3, *SIZE)
    via_timm = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    via_ps = ps.load(folder).eval()
    assert torch.equal(via_timm(x), ref(x)) and torch.equal(via_ps(x), ref(x))
    assert via_timm.pretrained_cfg["input_size"] == (3, *SIZE)
    # without pretrained=True timm builds the architecture only, as for any hub model
    bare = timm.create_model(f"local-dir:{folder}")
    assert _count(bare) == _count(ref) and not torch.equal(bare.eval()(x), ref(x))

    # a second write needs --force (exit 7) and leaves the folder as it was
    again = CliRunner().invoke(app, ["save-pretrained", str(converted), str(folder)])
    assert again.exit_code == 7
    assert json.loads((folder / "config.json").read_text()) == config


def test_save_pretrained_card_shows_training_numbers(converted, tmp_path):
    from parc_surgery.plan import Plan

    model = ps.load(converted)
    plan = Plan.from_dict(read_recipe(converted)["plan"])
    training = {"metrics": {"after_finetune": {"top1": 99.44, "top5": 100.0, "loss": 0.02}}}
    tuned = tmp_path / "tuned.safetensors"
    ps.save(model, plan, tuned, training=training)
    summary = hub.save_pretrained(tuned, tmp_path / "tuned")  # save-pretrained's JSON
    from readme_testkit import json_keys

    assert set(summary) <= json_keys("save-pretrained")
    assert sorted(summary["files"]) == ["README.md", "config.json", "model.safetensors"]
    card = (tmp_path / "tuned" / "README.md").read_text()
    assert "| after_finetune | 99.44% | 100.00% | 0.0200 |" in card


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c.update(architecture="resnet50"), "not a parc-surgery model"),
        (lambda c: c["pretrained_cfg"].update(file="/etc/passwd"), "unknown key"),
        (lambda c: c["pretrained_cfg"].update(url="https://x"), "unknown key"),
        (lambda c: c.update(model_args={"checkpoint_path": "/x"}), "model_args"),
    ],
)
def test_a_hostile_folder_config_is_refused(converted, tmp_path, edit, message):
    folder = tmp_path / "hostile"
    hub.save_pretrained(converted, folder)
    config = json.loads((folder / "config.json").read_text())
    edit(config)
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=message):
        ps.load(folder)
    result = CliRunner().invoke(app, ["export", str(folder), "-o", str(tmp_path / "x.onnx")])
    assert result.exit_code in (2, 6) and "Traceback" not in result.output


def test_torchvision_feature_extractor_works_without_arguments(converted):
    from torchvision.models.feature_extraction import (
        create_feature_extractor,
        get_graph_node_names,
    )

    model = ps.load(converted).eval()
    nodes = get_graph_node_names(model)[1]
    extractor = create_feature_extractor(model, return_nodes={nodes[-1]: "out", "layer3": "c4"})
    x = torch.randn(1, 3, 80, 96)  # another size: the ParC modules resample at run time
    out = extractor(x)
    assert torch.allclose(out["out"], model(x), atol=1e-5)
    assert out["c4"].shape == (1, 256, 5, 6)


@pytest.mark.parametrize("name", ["fastvit_t8", "mobileone_s0", "repghostnet_050"])
def test_timm_reparameterize_model_fuses_the_rest(name):
    from timm.utils.model import reparameterize_model

    from parc_surgery.ops import ParC

    model = ps.convert(name, input_size=SIZE).model.eval()
    parcs = sum(isinstance(m, ParC) for m in model.modules())
    x = torch.randn(1, 3, *SIZE)
    y = model(x)
    fused = reparameterize_model(model)
    assert sum(isinstance(m, ParC) for m in fused.modules()) == parcs
    # blocks without ParC were fused: fewer parameters tensors than before
    assert len(list(fused.parameters())) < len(list(model.parameters()))
    assert ((fused(x) - y).abs().max() / y.abs().max()) < 1e-4


def test_export_writes_preprocessing_and_recipe_into_onnx_metadata(converted, tmp_path):
    pytest.importorskip("onnxruntime")
    import onnx

    out = tmp_path / "r18.onnx"
    result = CliRunner().invoke(app, ["export", str(converted), "-o", str(out)])
    assert result.exit_code == 0, result.output
    meta = {p.key: json.loads(p.value) for p in onnx.load(str(out)).metadata_props}
    assert meta["input_size"] == [3, *SIZE]
    assert meta["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert meta["std"] == pytest.approx([0.229, 0.224, 0.225])
    assert meta["interpolation"] == "bicubic"
    assert meta["parc_surgery_recipe"]["plan"]["model"] == "resnet18"
