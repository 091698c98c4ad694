"""trace(): timm leaves, leaf classes by name, and untraceable modules named by path."""

from __future__ import annotations

import pytest
import torch
from graph_testkit import build
from torch import nn

from parc_surgery.errors import TraceError
from parc_surgery.graph import analyze, trace


class DataDependent(nn.Module):
    """Control flow on a tensor value: torch.fx cannot trace it."""

    def forward(self, x):
        if x.sum() > 0:
            return x * 2
        return x


class Wrapper(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.gate = DataDependent()

    def forward(self, x):
        return self.gate(self.conv(x))


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=4, padding=1)
        self.body = nn.Sequential(nn.Sequential(nn.ReLU()), Wrapper())

    def forward(self, x):
        return self.body(self.stem(x))


def test_timm_models_trace_with_timm_leaves():
    model = build("mobilevit_s")
    graph_module = trace(model)
    targets = {n.target for n in graph_module.graph.nodes if n.op == "call_module"}
    assert "stages.3.1" in targets  # MobileVitBlock is one of timm's notrace leaves
    model.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(graph_module(x), model(x))


def test_untraceable_module_is_named_by_path_with_a_leaf_hint():
    with pytest.raises(TraceError) as err:
        trace(TinyNet())
    message = str(err.value)
    assert "'body.1.gate'" in message and "(DataDependent)" in message
    assert "leaf: [DataDependent]" in message
    assert err.value.exit_code == 4


def test_leaf_class_by_name_makes_it_traceable():
    graph_module = trace(TinyNet(), leaf_classes=["DataDependent"])
    targets = {n.target for n in graph_module.graph.nodes if n.op == "call_module"}
    assert "body.1.gate" in targets


def test_analyze_reports_untraceable_models_and_accepts_leaves():
    with pytest.raises(TraceError, match="body.1.gate"):
        analyze(TinyNet(), (32, 32))
    graph = analyze(TinyNet(), (32, 32), leaf_classes=["DataDependent"])
    assert graph.leaf_classes == ("DataDependent",)
    assert graph.modules["body.1.gate"].stride == 4


def test_failure_in_the_root_forward_names_the_model():
    class Root(nn.Module):
        def forward(self, x):
            return x if x.mean() > 0 else -x

    with pytest.raises(TraceError, match=r"the model's own forward \(Root\)"):
        trace(Root())
