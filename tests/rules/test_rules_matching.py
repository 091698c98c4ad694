"""match(): positions, stages, stride-2 and no-match warnings, conflicts, leaves."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rules_testkit import analyzed, rules
from torch import nn

from parc_surgery.errors import RulesError, UsageError
from parc_surgery.graph import analyze
from parc_surgery.options import SwapOptions
from parc_surgery.rules import MatchSpec, match


def run(text, name="resnet50", stages=None):
    model, graph = analyzed(name)
    return match(rules(text), graph, model, stages)


def paths(result):
    return [m.path for m in result.matches]


BOTTLENECK = """
version: 1
stages: [3, 4]
rules:
  - name: r
    match: {{module: Bottleneck, {filters}}}
    replace: {{with: parc_bottleneck}}
"""


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ("index: [3, 4, 5]", ["layer3.3", "layer3.4", "layer3.5"]),
        ("index: -1", ["layer3.5", "layer4.2"]),
        ("index: '-2:'", ["layer3.4", "layer3.5", "layer4.1", "layer4.2"]),
        ("index: '4:'", ["layer3.4", "layer3.5"]),
        ("fraction: 0.34", ["layer3.4", "layer3.5", "layer4.2"]),
        ("fraction: 0.5, name: 'layer4.*'", ["layer4.2"]),
        ("fraction: 0.5, stages: [4, 5]", ["layer4.2"]),
    ],
)
def test_positional_filters(filters, expected):
    assert paths(run(BOTTLENECK.format(filters=filters))) == expected


def test_requested_stages_override_the_file():
    result = run(BOTTLENECK.format(filters="fraction: 0.5"), stages=[2])
    assert paths(result) == ["layer2.2", "layer2.3"] and result.stages == [2]


def test_stage_the_model_lacks_lists_the_available_ones():
    with pytest.raises(UsageError) as err:
        run(BOTTLENECK.format(filters="fraction: 0.5"), stages=[5])
    message = str(err.value)
    assert "resnet50 has no stage 5" in message
    assert "1 (stride 4), 2 (stride 8), 3 (stride 16), 4 (stride 32)" in message


def test_default_stages_the_model_lacks_fall_back_to_those_it_has():
    # A file's `stages` are a default: missing ones are dropped, with a note.
    text = BOTTLENECK.format(filters="fraction: 0.5").replace("stages: [3, 4]", "stages: [4, 5]")
    result = run(text)
    assert result.stages == [4] and paths(result) == ["layer4.2"]
    assert "resnet50 has no stage 5 (from test.yaml's `stages`: 4, 5)" in result.warnings[0]
    # None of them left: the model's deepest stages, as many as the file names.
    result = run(text.replace("stages: [4, 5]", "stages: [5, 6]"))
    assert result.stages == [3, 4] and paths(result) == [
        "layer3.3",
        "layer3.4",
        "layer3.5",
        "layer4.2",
    ]
    assert "using its stages 3, 4 instead" in result.warnings[0]
    # Stages the model has give no note.
    assert run(BOTTLENECK.format(filters="fraction: 0.5")).warnings == []


def test_without_stages_every_stage_is_chosen():
    text = BOTTLENECK.format(filters="index: 1").replace("stages: [3, 4]\n", "")
    result = run(text)
    assert result.stages == [1, 2, 3, 4]
    assert paths(result) == ["layer1.1", "layer2.1", "layer3.1", "layer4.1"]


def test_stride_2_blocks_are_skipped_with_a_warning():
    result = run(BOTTLENECK.format(filters="index: [0, 1]"))
    assert paths(result) == ["layer3.1", "layer4.1"]
    assert len(result.warnings) == 1
    warning = result.warnings[0]
    assert "'r' (test.yaml:4)" in warning and "layer3.0, layer4.0" in warning
    assert "stride 2" in warning and result.unmatched_rules == []


def test_stride_2_convs_are_skipped_with_a_warning():
    text = """
    version: 1
    stages: [3]
    rules:
      - match: {op: depthwise_conv, index: 0}
        replace: {with: parc_dwconv}
    """
    result = run(text, name="mobilenetv2_100")
    assert paths(result) == ["blocks.4.0.conv_dw"]  # blocks.3.0 downsamples
    assert "blocks.3.0.conv_dw" in result.warnings[0] and "stride 2" in result.warnings[0]


def test_rule_that_matches_nothing_warns():
    text = """
    version: 1
    rules:
      - name: nothing
        match: {module: NoSuchBlock}
        replace: {with: parc_bottleneck}
      - match: {module: Bottleneck, stages: [4], index: 2}
        replace: {with: parc_bottleneck}
    """
    result = run(text, stages=[3, 4])
    assert paths(result) == ["layer4.2"]
    assert result.warnings == ["'nothing' (test.yaml:3) matched nothing in stages 3, 4"]
    assert result.unmatched_rules == ["'nothing' (test.yaml:3)"]


def test_a_module_matched_by_two_rules_names_both():
    text = """
    version: 1
    stages: [3]
    rules:
      - name: first
        match: {module: Bottleneck, index: [3, 4]}
        replace: {with: parc_bottleneck}
      - name: second
        match: {module: Bottleneck, index: [4, 5]}
        replace: {with: parc_bottleneck}
    """
    with pytest.raises(RulesError) as err:
        run(text)
    message = str(err.value)
    assert "layer3.4 is matched by two rules" in message
    assert "'first' (test.yaml:4)" in message and "'second' (test.yaml:7)" in message


def test_nested_selection_by_another_rule_is_an_error():
    text = """
    version: 1
    stages: [3]
    rules:
      - name: blocks
        match: {module: ConvNeXtBlock, index: 8}
        replace: {with: parc_convnext}
      - name: convs
        match: {op: depthwise_conv}
        replace: {with: parc_dwconv}
    """
    with pytest.raises(RulesError, match=r"stages.2.blocks.8.conv_dw, which is inside "):
        run(text, name="convnext_tiny")


def test_a_replacement_refuses_classes_it_does_not_accept():
    text = """
    version: 1
    stages: [3]
    rules:
      - match: {module: Bottleneck, index: -1}
        replace: {with: parc_convnext}
    """
    with pytest.raises(RulesError, match=r"layer3.5 \(Bottleneck\).*replaces only ConvNeXtBlock"):
        run(text)


def test_nested_matches_of_one_rule_keep_the_outer_module():
    text = """
    version: 1
    stages: [4]
    rules:
      - match: {module: [MobileVitBlock, ConvNormAct], name: "stages.4.1*"}
        replace: {with: parc_mobilevit}
    """
    # conv_kxk, conv_1x1... are ConvNormActs inside stages.4.1: only the block is selected.
    assert paths(run(text, name="mobilevit_s")) == ["stages.4.1"]


def test_first_in_container_and_pe_policy():
    text = """
    version: 1
    stages: [3, 4]
    defaults: {pe: first_in_container, impl: fft}
    rules:
      - match: {module: Bottleneck, fraction: 0.5}
        replace: {with: parc_bottleneck, kernel_size: 2}  # at most the 2x2 map of stage 4
    """
    result = run(text)
    firsts = {m.path: m.first_in_container for m in result.matches}
    assert firsts == {"layer3.3": True, "layer3.4": False, "layer3.5": False, "layer4.2": True}
    assert [m.options.pe for m in result.matches] == [True, False, False, True]
    match0 = result.matches[0]
    assert match0.options == SwapOptions(impl="fft", pe=True, init="paper", kernel_size=2)
    assert match0.location == "test.yaml:5" and match0.rule == "rule 1 (test.yaml:5)"
    assert match0.info.container == "layer3" and match0.level == "block"


def test_op_kernel_filter():
    text = """
    version: 1
    stages: [3, 4]
    rules:
      - match: {op: depthwise_conv, kernel: 5, fraction: 0.5}
        replace: {with: parc_dwconv}
    """
    result = run(text, name="efficientnet_b0")
    assert paths(result) == ["blocks.4.2.conv_dw", "blocks.5.2.conv_dw", "blocks.5.3.conv_dw"]


class Odd(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, groups=channels)

    def forward(self, x):
        y = self.conv(x)
        return y if y.sum() > 0 else -y  # data-dependent: needs `leaf: [Odd]`


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=4, padding=1)
        self.stages = nn.Sequential(nn.Sequential(Odd(8), Odd(8)))

    def forward(self, x):
        return self.stages(self.stem(x))


def test_leaf_classes_from_a_rules_file():
    ruleset = rules(
        """
        version: 1
        leaf: [Odd]
        rules:
          - match: {module: Odd, index: 1}
            replace: {with: parc_dwconv}
        """
    )
    model = Net()
    graph = analyze(model, (32, 32), leaf_classes=ruleset.leaf)
    assert graph.stages[1].containers == [("stages.0", 2)]
    text = ruleset.to_dict()
    assert text["leaf"] == ["Odd"]
    with pytest.raises(RulesError, match="replaces only Conv2d"):
        match(ruleset, graph, model)


@given(
    n=st.integers(1, 12),
    fraction=st.floats(0.01, 1.0),
)
def test_fraction_selects_the_last_floor_n_f_blocks(n, fraction):
    chosen = MatchSpec(module=["X"], fraction=fraction).select(n)
    count = int(n * fraction + 1e-9)
    assert chosen == set(range(n - count, n))


@given(n=st.integers(1, 12), start=st.integers(-14, 14))
def test_index_slices_follow_python(n, start):
    spec = MatchSpec.model_validate({"module": "X", "index": f"{start}:"})
    assert spec.select(n) == set(range(n)[start:])
