"""parcify_ and load(model=...): converting a model object the caller holds, in place."""

from __future__ import annotations

import copy

import pytest
import timm
import torch
from api_testkit import CUSTOM_RULES, MyBlock, OtherNet, TinyNet

import parc_surgery as ps
from parc_surgery.blocks import get_replacement, register_replacement
from parc_surgery.errors import CheckpointError, UsageError
from parc_surgery.ops import ParCPair
from parc_surgery.plan import Plan

SIZE = (64, 96)


@register_replacement("test_parc_myblock", accepts=("api_testkit.MyBlock",), level="block")
def _build_parc_myblock(module, ctx):
    """A user's own builder, registered for their own block class (qualified name)."""
    new = copy.deepcopy(module)
    new.dw = ParCPair(module.dw.out_channels, ctx.feature_size, use_pe=ctx.pe)
    return new.train(module.training)


@pytest.fixture
def rules_file(tmp_path):
    path = tmp_path / "my-rules.yaml"
    path.write_text(CUSTOM_RULES)
    return str(path)


def _net(seed: int = 0) -> TinyNet:
    torch.manual_seed(seed)
    return TinyNet()


def test_parcify_converts_a_hand_written_model_in_place(rules_file):
    model = _net().train()
    model.stem.eval()  # a mixed state: each module's own flag must survive
    same = model
    plan = ps.parcify_(model, rules_file, input_size=SIZE)
    assert same is model and isinstance(plan, Plan)
    assert [(s.path, s.options.pe) for s in plan.swaps] == [
        ("stages.2.1.dw", True),
        ("stages.2.2.dw", False),
        ("stages.3.1.dw", True),
    ]
    for swap in plan.swaps:
        assert isinstance(model.get_submodule(swap.path), ParCPair)
    assert model.training and not model.stem.training and model.stages.training
    assert plan.source.to_dict() == {
        "kind": "custom",
        "name": None,
        "class": "api_testkit.TinyNet",
    }
    assert plan.model == "TinyNet"
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 80, 112)).shape == (2, 10)


def test_default_rules_for_a_custom_model_come_from_its_classes():
    plan = ps.parcify_(_net(), input_size=SIZE)
    assert plan.rules_source == "shipped:generic"
    assert plan.swaps and all(s.replacement == "parc_dwconv" for s in plan.swaps)


def test_filter_fn_narrows_what_the_rules_select(rules_file):
    seen = []

    def keep(module, path):
        seen.append((type(module).__name__, path))
        return path != "stages.2.1.dw"

    model = _net()
    plan = ps.parcify_(model, rules_file, input_size=SIZE, filter_fn=keep)
    assert [s.path for s in plan.swaps] == ["stages.2.2.dw", "stages.3.1.dw"]
    # The filter decides before first_in_container is counted: 2.2 is now the first.
    assert [s.options.pe for s in plan.swaps] == [True, True]
    assert isinstance(model.stages[2][1].dw, torch.nn.Conv2d)
    assert ("Conv2d", "stages.2.1.dw") in seen


def test_a_module_class_rule_uses_the_builder_registered_for_that_class(tmp_path):
    rules = tmp_path / "blocks.yaml"
    rules.write_text(
        "version: 1\nstages: [3]\nrules:\n"
        "  - match: {module: MyBlock, index: '1:'}\n"
        "    replace: {with: test_parc_myblock}\n"
    )
    model = _net()
    plan = ps.parcify_(model, str(rules), input_size=SIZE)
    assert [s.path for s in plan.swaps] == ["stages.2.1", "stages.2.2"]
    assert isinstance(model.stages[2][1], MyBlock)
    assert isinstance(model.stages[2][1].dw, ParCPair)
    assert get_replacement("test_parc_myblock").can_replace(MyBlock(2, 2))


def test_custom_checkpoint_reloads_onto_the_callers_base_model(rules_file, tmp_path):
    model = _net(seed=1)
    plan = ps.parcify_(model, rules_file, input_size=SIZE)
    path = tmp_path / "tiny-parc.safetensors"
    ps.save(model, plan, path)
    base = _net(seed=2)  # other random weights: all of them must come from the file
    loaded = ps.load(path, model=base)
    assert loaded is base
    x = torch.randn(2, 3, *SIZE)
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x), model.eval()(x), rtol=0, atol=0)


def test_custom_checkpoint_without_model_says_to_pass_one(rules_file, tmp_path):
    model = _net()
    path = tmp_path / "tiny-parc.safetensors"
    ps.save(model, ps.parcify_(model, rules_file, input_size=SIZE), path)
    with pytest.raises(UsageError, match=r"custom model \(api_testkit.TinyNet\).*model=") as err:
        ps.load(path)
    assert err.value.exit_code == 2
    with pytest.raises(CheckpointError, match="converted from a api_testkit.TinyNet"):
        ps.load(path, model=OtherNet())
    with pytest.raises(CheckpointError, match="does not have the recipe's architecture"):
        ps.load(path, model=TinyNet(depths=(2, 2, 2, 1)))
    with pytest.raises(UsageError, match="already converted"):
        ps.load(path, model=model)


def test_a_timm_model_object_plans_as_its_name_does():
    by_name = ps.plan_conversion("resnet26", stages=[3, 4], input_size=SIZE).plan
    by_object = ps.plan_conversion(
        timm.create_model("resnet26"), stages=[3, 4], input_size=SIZE
    ).plan
    assert by_object.model == by_name.model == "resnet26"
    assert by_object.source == by_name.source
    assert by_object.source.to_dict()["kind"] == "timm"
    strip = ("rule",)
    assert [{k: v for k, v in s.to_dict().items() if k not in strip} for s in by_object.swaps] == [
        {k: v for k, v in s.to_dict().items() if k not in strip} for s in by_name.swaps
    ]


def test_a_parcified_timm_model_reloads_without_model(tmp_path):
    model = timm.create_model("resnet26")
    plan = ps.parcify_(model, stages=[4], input_size=SIZE)
    path = tmp_path / "r26.safetensors"
    ps.save(model, plan, path)
    loaded = ps.load(path)  # rebuilt by timm name from the recipe's source
    x = torch.randn(1, 3, *SIZE)
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x), model.eval()(x), rtol=0, atol=0)


def test_arguments_that_need_a_name_are_refused_for_a_model_object():
    with pytest.raises(UsageError, match="model object"):
        ps.plan_conversion(_net(), model_args={"num_classes": 3})
    with pytest.raises(UsageError, match="in place"):
        ps.parcify_("resnet26")


def test_recipes_without_a_source_still_read_as_timm_models():
    plan = ps.plan_conversion("resnet26", stages=[4], input_size=SIZE).plan
    data = plan.to_dict()
    assert data["source"] == {
        "kind": "timm",
        "name": "resnet26",
        "class": "timm.models.resnet.ResNet",
    }
    del data["source"]  # as a 0.1 recipe
    assert Plan.from_dict(data).source is None
    data["source"] = {"kind": "alien", "name": None, "class": "x.Y"}
    with pytest.raises(ValueError, match="kind"):
        Plan.from_dict(data)
