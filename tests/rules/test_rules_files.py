"""Loading rules files: shipped configs, schema errors with file:line:column, YAML errors."""

from __future__ import annotations

import pytest
from rules_testkit import rules

from parc_surgery.errors import RulesError
from parc_surgery.options import SwapOptions
from parc_surgery.rules import load_rules, parse_rules, shipped_configs

GOOD = """
version: 1
stages: [3, 4]
defaults: {impl: fft, init: from_local}
leaf: [Weird]
rules:
  - name: last-half
    match: {module: Bottleneck, fraction: 0.5}
    replace: {with: parc_bottleneck, pe: first_in_container, kernel_size: 9}
  - match: {op: depthwise_conv, kernel: [3, 7], index: "-2:", name: "layer*"}
    replace: {with: parc_dwconv, impl: spatial}
"""


def test_shipped_configs_are_listed_with_descriptions():
    configs = shipped_configs()
    assert set(configs) == {
        "resnet50",
        "resnet",
        "regnet",
        "mobilenetv2",
        "convnext",
        "mobilevit",
        "mobilevitv2",
        "vit",
        "swin",
        "efficientformer",
        "parcnet-s",
        "parcnet-xs",
        "parcnet-h",
        "generic",
    } | {"convnets", "vgg", "convmixer", "cait", "twins", "coatnet", "maxvit"} | {
        "poolformer",
        "densenet",
        "inception",
        "pit",
    }
    for name, (path, description) in configs.items():
        assert path.name == f"{name}.yaml" and path.is_file()
        assert description and "\n" not in description
        assert load_rules(name).source == f"shipped:{name}"


def test_a_valid_file_and_its_resolved_options():
    ruleset = rules(GOOD)
    assert ruleset.stages == [3, 4] and ruleset.leaf == ["Weird"]
    assert ruleset.rule_lines == ["test.yaml:6", "test.yaml:9"]
    assert ruleset.rule_label(0) == "'last-half' (test.yaml:6)"
    assert ruleset.rule_label(1) == "rule 2 (test.yaml:9)"
    assert ruleset.options_for(0) == SwapOptions(
        impl="fft", pe="first_in_container", init="from_local", kernel_size=9
    )
    assert ruleset.options_for(1) == SwapOptions(impl="spatial", pe=True, init="from_local")
    assert ruleset.rules[1].match.kernel == [3, 7]
    assert ruleset.to_dict()["rules"][0]["replace"]["with"] == "parc_bottleneck"


def test_load_rules_from_a_path(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(GOOD.lstrip("\n"))
    ruleset = load_rules(path)
    assert ruleset.source == str(path)
    assert ruleset.rule_lines[0] == f"{path}:6"


def test_nonexistent_file_says_so_and_lists_shipped_configs(tmp_path):
    with pytest.raises(RulesError, match="does not exist") as err:
        load_rules(tmp_path / "nope.yaml")
    assert "resnet50" in str(err.value)
    assert err.value.exit_code == 2


def error_of(text: str) -> str:
    with pytest.raises(RulesError) as err:
        rules(text)
    return str(err.value)


def test_unknown_key_points_at_the_key_and_lists_the_expected_ones():
    message = error_of(
        """
        version: 1
        rules:
          - match:
              module: Bottleneck
              fractoin: 0.5
            replace: {with: parc_bottleneck}
        """
    )
    assert message.startswith("test.yaml:5:7: unknown key 'fractoin' in rules[0].match")
    assert "expected one of: module, op, kernel, stride, stages, index, fraction, name" in message


def test_unknown_top_level_key():
    message = error_of(
        "version: 1\nrulez: []\nrules:\n  - match: {module: X}\n    replace: {with: parc_dwconv}\n"
    )
    assert message.startswith("test.yaml:2:1: unknown key 'rulez' in the file")


def test_bad_type_says_what_was_expected_and_found():
    message = error_of(
        """
        version: 1
        rules:
          - match: {module: Bottleneck, fraction: half}
            replace: {with: parc_bottleneck}
        """
    )
    assert message.startswith("test.yaml:3:43: rules[0].match.fraction: expected a valid number")
    assert "found 'half'" in message


@pytest.mark.parametrize(
    ("snippet", "where", "words"),
    [
        ("match: {module: X, index: 'a:'}", "3:31", "expected an int, a list of ints or a slice"),
        ("match: {module: X, fraction: 1.5}", "3:34", "less than or equal to 1"),
        ("match: {module: X, op: depthwise_conv}", "3:12", "exactly one of 'module'"),
        ("match: {module: X, index: 1, fraction: 0.5}", "3:12", "'index' or 'fraction'"),
        ("match: {op: depthwise_conv, stride: 2}", "3:41", "expected 1 (ParC convs are stride 1)"),
        ("match: {module: 3}", "3:21", "a class name or a list of class names"),
        ("match: {op: conv}", "3:17", "expected 'depthwise_conv'"),
    ],
)
def test_match_errors(snippet, where, words):
    message = error_of(f"version: 1\nrules:\n  - {snippet}\n    replace: {{with: parc_dwconv}}\n")
    assert message.startswith(f"test.yaml:{where}: rules[0].match")
    assert words in message


def test_bad_option_values():
    message = error_of(
        """
        version: 1
        defaults: {pe: sometimes, impl: gpu}
        rules:
          - match: {module: X}
            replace: {with: parc_dwconv}
        """
    )
    assert message.startswith("test.yaml:2:16: defaults.pe: expected true, false or first_in")
    assert "test.yaml:2:33: defaults.impl: expected 'auto', 'spatial', 'fft' or 'circulant'" in (
        message
    )


def test_unknown_replacement_lists_the_registered_ones():
    message = error_of(
        """
        version: 1
        rules:
          - match: {module: Bottleneck}
            replace: {with: parc_botleneck}
        """
    )
    assert message.startswith("test.yaml:4:21: rules[0].replace.with: unknown replacement")
    for name in (
        "parc_bottleneck",
        "parc_inverted_residual",
        "parc_convnext",
        "parc_mobilevit",
        "parc_dwconv",
    ):
        assert name in message


def test_missing_keys_and_version():
    assert "missing key 'with' in rules[0].replace" in error_of(
        "version: 1\nrules:\n  - match: {module: X}\n    replace: {pe: true}\n"
    )
    assert error_of(
        "version: 2\nrules:\n  - match: {module: X}\n    replace: {with: parc_dwconv}\n"
    ).startswith("test.yaml:1:10: version: expected 1; found 2")
    assert "missing key 'rules'" in error_of("version: 1\n")
    assert "found an empty file" in error_of("")
    assert "found list" in error_of("- a\n- b\n")


def test_yaml_syntax_error_shows_its_line():
    message = error_of(
        """
        version: 1
        rules:
          - match: {module: Bottleneck
            replace: {with: parc_bottleneck}
        """
    )
    assert message.startswith("test.yaml:4:12: YAML syntax error")
    assert "starts at line 3" in message


def test_duplicate_key_is_an_error():
    assert error_of("version: 1\nversion: 1\n").startswith(
        "test.yaml:2:1: key 'version' is given twice"
    )


def test_stage_zero_is_rejected():
    text = "version: 1\nstages: [0]\nrules:\n  - match: {module: X}\n    replace: {with: a}\n"
    assert error_of(text).startswith("test.yaml:2:9: stages: stages are numbered from 1")


def test_errors_from_a_file_carry_its_path(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("version: 1\nrules:\n  - match: {module: X}\n    replace: {with: nope}\n")
    with pytest.raises(RulesError, match=rf"^{path}:4:21: "):
        load_rules(str(path))


def test_parse_rules_label_defaults_to_source():
    assert parse_rules(GOOD, source="s").label == "s"
