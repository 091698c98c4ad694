"""`parc-convert MODEL --dry-run`: the plan a reviewer reads, in three formats, and errors."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from parc_surgery.cli import convert_app
from parc_surgery.plan import Plan

runner = CliRunner()

PUBLISHED = {
    "resnet50": (["--stages", "3,4"], ["layer3.3", "layer3.4", "layer3.5", "layer4.2"]),
    "mobilenetv2_100": ([], ["blocks.3.2", "blocks.3.3", "blocks.4.2", "blocks.5.2"]),
    "convnext_tiny": (
        ["--model-arg", "dims=[48,96,192,384]"],
        ["stages.2.blocks.6", "stages.2.blocks.7", "stages.2.blocks.8", "stages.3.blocks.2"],
    ),
}


def run(*args: str):
    return runner.invoke(convert_app, list(args))


def plan_json(*args: str) -> Plan:
    result = run(*args, "--dry-run", "--format", "json")
    assert result.exit_code == 0, result.output
    return Plan.from_json(result.stdout)


@pytest.mark.parametrize("model", sorted(PUBLISHED))
def test_dry_run_selects_the_published_placement(model):
    extra, expected = PUBLISHED[model]
    plan = plan_json(model, *extra)
    assert [s.path for s in plan.swaps] == expected


def test_mobilenetv2_pe_only_on_the_first_replaced_block_of_each_container():
    plan = plan_json("mobilenetv2_100")
    assert {s.path: s.options.pe for s in plan.swaps} == {
        "blocks.3.2": True,
        "blocks.3.3": False,
        "blocks.4.2": True,
        "blocks.5.2": True,
    }


def test_mobilevit_converts_every_mobilevit_block():
    plan = plan_json("mobilevit_s", "--input-size", "256")
    assert [s.path for s in plan.swaps] == ["stages.2.1", "stages.3.1", "stages.4.1"]
    assert {s.replacement for s in plan.swaps} == {"parc_mobilevit"}


def test_efficientnet_uses_the_generic_depthwise_rule():
    plan = plan_json("efficientnet_b0", "--input-size", "128")
    assert plan.swaps and {s.replacement for s in plan.swaps} == {"parc_dwconv"}
    assert all(s.path.endswith("conv_dw") and s.stage in (3, 4) for s in plan.swaps)


def test_plain_vit_refuses_stages_and_says_how_to_select_blocks():
    result = run("vit_small_patch16_224", "--stages", "3", "--dry-run")
    assert result.exit_code == 2, result.output
    assert "plain ViT" in result.output and "index" in result.output
    assert "Traceback" not in result.output


def test_json_is_alone_on_stdout_and_round_trips():
    result = run("resnet50", "--stages", "3,4", "--dry-run", "--format", "json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    plan = Plan.from_dict(data)
    assert Plan.from_json(plan.to_json()) == plan
    assert data["swaps"][0]["params_before"] > 0 and data["swaps"][0]["macs_after"] > 0
    # the human notes, with the rules chosen for the family, went to stderr
    assert "rules: shipped:resnet (chosen for the model's family" in result.stderr


def test_table_shows_each_swap_and_the_totals():
    result = run("resnet50", "--stages", "3,4", "--dry-run")
    assert result.exit_code == 0, result.output
    for path in ("layer3.3", "layer3.4", "layer3.5", "layer4.2"):
        assert path in result.stdout
    assert "4 swaps; params" in result.stdout and "MACs" in result.stdout
    assert "\x1b[" not in result.output  # no colour when not on a terminal


def test_diff_lists_old_and_new_module_per_swap():
    result = run("resnet50", "--stages", "3,4", "--dry-run", "--format", "diff")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert any(line.startswith("-layer3.3: Bottleneck") for line in lines)
    assert any(line.startswith("+layer3.3: Bottleneck[conv2=ParCPair") for line in lines)


def test_more_stages_convert_more_blocks_by_the_same_rule():
    plan = plan_json("resnet50", "--stages", "2,3,4", "--input-size", "128")
    assert [s.path for s in plan.swaps][:2] == ["layer2.2", "layer2.3"]


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["resnet5O", "--dry-run"], 2, "did you mean"),
        (["resnet50", "--stages", "7", "--dry-run"], 2, "its stages are"),
        (["resnet50", "--stages", "three", "--dry-run"], 2, "--stages"),
        (["resnet50", "--input-size", "16", "--dry-run"], 2, "input size"),
        (["resnet50", "--rules", "no/such/rules.yaml", "--dry-run"], 2, "no/such/rules.yaml"),
        (["resnet50", "--model-arg", "nonsense", "--dry-run"], 2, "KEY=VALUE"),
        (["resnet50", "--format", "xml", "--dry-run"], 2, "--format"),
    ],
)
def test_bad_input_ends_in_a_message_and_exit_code(args, code, needle):
    result = run(*args)
    assert result.exit_code == code, result.output
    assert needle.lower() in result.output.lower()
    assert "Traceback" not in result.output


def test_bad_yaml_names_the_line(tmp_path):
    rules = tmp_path / "bad.yaml"
    rules.write_text("version: 1\nrules:\n  - match: {module: Bottleneck\n")
    result = run("resnet50", "--rules", str(rules), "--dry-run")
    assert result.exit_code == 2
    assert "bad.yaml:" in result.output and "Traceback" not in result.output


def test_strict_fails_when_a_rule_matches_nothing(tmp_path):
    rules = tmp_path / "nomatch.yaml"
    rules.write_text(
        "version: 1\nstages: [3]\nrules:\n"
        "  - match: {module: ConvNeXtBlock}\n    replace: {with: parc_convnext}\n"
    )
    loose = run("resnet50", "--rules", str(rules), "--dry-run")
    assert loose.exit_code == 0 and "match" in loose.output
    strict = run("resnet50", "--rules", str(rules), "--dry-run", "--strict")
    assert strict.exit_code == 3, strict.output
