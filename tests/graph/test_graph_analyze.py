"""analyze(): input sizes, leaving the model untouched, and input sizes that are too small."""

from __future__ import annotations

import pytest
import torch
from graph_testkit import analyzed, build

from parc_surgery.errors import UsageError
from parc_surgery.graph import analyze, default_input_size, parse_input_size, resolve_input_size


@pytest.mark.parametrize(
    ("text", "size"), [("224", (224, 224)), ("224x288", (224, 288)), (" 96X64 ", (96, 64))]
)
def test_parse_input_size(text, size):
    assert parse_input_size(text) == size


@pytest.mark.parametrize("text", ["", "abc", "224x", "x224", "0", "224x0", "-3"])
def test_bad_input_size_is_a_usage_error(text):
    with pytest.raises(UsageError, match="input size"):
        parse_input_size(text)


def test_default_input_size_comes_from_pretrained_cfg():
    assert default_input_size(build("mobilevit_s")) == (256, 256)
    assert default_input_size(torch.nn.Conv2d(3, 3, 1)) == (224, 224)
    assert resolve_input_size(None, build("resnet50")) == (224, 224)
    assert resolve_input_size(128, build("resnet50")) == (128, 128)
    assert resolve_input_size((96, 128), build("resnet50")) == (96, 128)


def test_analyze_uses_the_default_size_and_keeps_the_trace():
    _, graph = analyzed("mobilevit_s")
    assert graph.input_size == (256, 256)
    assert graph.model_name == "mobilevit_s"
    assert graph.graph_module is not None
    assert graph.stages[3].feature_size == (16, 16)


def test_analyze_does_not_modify_the_model():
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, stride=2, padding=1),
        torch.nn.BatchNorm2d(8),
        torch.nn.Sequential(torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.Dropout(0.5)),
    )
    model.train()
    model[2].eval()  # mixed modes must come back as they were
    before = {k: v.clone() for k, v in model.state_dict().items()}
    hooks_before = [len(m._forward_hooks) for m in model.modules()]
    analyze(model, (32, 32))
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN stats untouched too
    assert model.training and model[1].training and not model[2].training
    assert [len(m._forward_hooks) for m in model.modules()] == hooks_before


def test_too_small_input_size_names_the_minimum():
    model = build("resnet50")
    with pytest.raises(UsageError, match=r"at least 32x32") as err:
        analyze(model, (16, 16))
    assert "stride 32" in str(err.value)


def test_input_size_that_breaks_the_forward_gives_the_minimum():
    model = build("convnext_tiny")  # a 4x4 stride-4 stem conv cannot run on a 2x2 input
    with pytest.raises(UsageError, match=r"at least 32x32"):
        analyze(model, (2, 2))


def test_model_that_only_runs_at_its_own_size():
    with pytest.raises(UsageError, match="does not run at input size 256x256"):
        analyze(build("vit_small_patch16_224"), (256, 256))
