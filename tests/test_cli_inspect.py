"""`parc-surgery inspect` and `parc-surgery rules`: what a user needs to write rules."""

from __future__ import annotations

import json

from readme_testkit import json_keys
from typer.testing import CliRunner

from parc_surgery.cli import app

runner = CliRunner()


def test_inspect_lists_stages_containers_and_shipped_matches():
    result = runner.invoke(app, ["inspect", "resnet50", "--format", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    stage3 = next(s for s in data["stages"] if s["stage"] == 3)
    assert stage3["stride"] == 16 and stage3["feature_size"] == [14, 14]
    assert stage3["containers"] == [{"path": "layer3", "blocks": 6, "types": ["Bottleneck"]}]
    assert data["shipped_rules"]["resnet50"]["matches"] == [
        "layer3.3",
        "layer3.4",
        "layer3.5",
        "layer4.2",
    ]


def test_inspect_and_rules_list_json_have_the_keys_the_readme_documents():
    result = runner.invoke(app, ["inspect", "resnet18", "--input-size", "64", "-f", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    documented = json_keys("Inspect")
    assert set(data) <= documented, set(data) - documented
    for stage in data["stages"]:
        assert set(stage) <= documented
        for container in stage["containers"]:
            assert set(container) <= documented
    for found in data["shipped_rules"].values():
        assert set(found) <= documented
    listed = json.loads(runner.invoke(app, ["rules", "list", "-f", "json"]).stdout)
    assert {key for entry in listed.values() for key in entry} <= json_keys("rules list")


def test_inspect_table_names_the_default_rules():
    result = runner.invoke(app, ["inspect", "mobilenetv2_050", "--input-size", "64"])
    assert result.exit_code == 0, result.output
    assert "mobilenetv2 (default)" in result.stdout and "blocks.3" in result.stdout


def test_rules_list_shows_every_shipped_config():
    result = runner.invoke(app, ["rules", "list"])
    assert result.exit_code == 0
    for name in ("resnet50", "mobilenetv2", "convnext", "mobilevit", "generic"):
        assert any(line.startswith(name) for line in result.stdout.splitlines())


def test_rules_validate_accepts_a_good_file_and_matches_it(tmp_path):
    rules = tmp_path / "mine.yaml"
    rules.write_text(
        "version: 1\nstages: [4]\nrules:\n"
        "  - match: {module: Bottleneck, index: [-1]}\n    replace: {with: parc_bottleneck}\n"
    )
    result = runner.invoke(
        app, ["rules", "validate", str(rules), "--model", "resnet26", "--input-size", "64"]
    )
    assert result.exit_code == 0, result.output
    assert "valid (1 rules)" in result.stdout and "would replace layer4.1" in result.stdout


def test_rules_validate_reports_position_of_a_bad_key(tmp_path):
    rules = tmp_path / "bad.yaml"
    rules.write_text(
        "version: 1\nrules:\n  - match: {module: Bottleneck}\n"
        "    replace: {with: parc_bottleneck, colour: blue}\n"
    )
    result = runner.invoke(app, ["rules", "validate", str(rules)])
    assert result.exit_code == 2
    assert "bad.yaml:4" in result.output and "colour" in result.output


def test_inspect_lists_the_attention_blocks_it_can_convert():
    args = ["img_size=64", "patch_size=8", "depth=2", "embed_dim=32", "num_heads=2"]
    options = [item for arg in args for item in ("--model-arg", arg)]
    command = ["inspect", "vit_tiny_patch16_224", "--input-size", "64", *options]
    result = runner.invoke(app, [*command, "--format", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [(a["block"], a["replacement"]) for a in data["attention"]] == [
        ("blocks.0", "parc_vit"),
        ("blocks.1", "parc_vit"),
    ]
    assert data["shipped_rules"]["vit"]["matches"] == ["blocks.0", "blocks.1"]
    assert {key for found in data["attention"] for key in found} <= json_keys("Inspect")
    table = runner.invoke(app, command)
    assert "attention (what converts it to ParC)" in table.stdout and "parc_vit" in table.stdout
