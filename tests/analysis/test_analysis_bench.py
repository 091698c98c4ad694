"""Params, MACs and the latency summary of bench_pair (no timing asserts)."""

from __future__ import annotations

import pytest
import torch
from analysis_testkit import TINY_SIZE, tiny_pair

from parc_surgery.analysis.bench import bench_pair, latency_stats, time_models, using_threads
from parc_surgery.costs import count_params, model_macs
from parc_surgery.ops import ParCPair


def test_macs_of_a_conv_are_its_multiply_accumulates():
    conv = torch.nn.Conv2d(3, 8, 3, padding=1, bias=False)
    assert model_macs(conv, (10, 12)) == 8 * 3 * 9 * 10 * 12


def test_parc_macs_are_counted_as_the_spatial_form_whatever_the_backend():
    # depthwise pair on 8 + 8 channels of a 16x16 map: each output takes 16 taps
    pair = ParCPair(16, 16, impl="fft").eval()
    wrapped = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 1, bias=False), pair)
    assert model_macs(wrapped, (16, 16)) == 3 * 16 * 256 + 16 * 256 * 16


def test_params_count_every_parameter():
    assert count_params(torch.nn.Linear(4, 3)) == 15


def test_latency_stats_in_milliseconds():
    stats = latency_stats([0.004, 0.001, 0.002, 0.003, 0.005])
    assert stats["median"] == pytest.approx(3.0)
    assert stats["min"] == pytest.approx(1.0) and stats["max"] == pytest.approx(5.0)
    assert stats["q1"] == pytest.approx(2.0) and stats["q3"] == pytest.approx(4.0)
    assert stats["runs"] == 5
    assert latency_stats([0.002])["q1"] == pytest.approx(2.0)


def test_the_ratio_spread_is_of_each_round_not_of_the_medians():
    # Round i times both models back to back: its ratio is converted_i / original_i.
    from parc_surgery.analysis.bench import pair_ratios

    times = {"original": [1.0, 2.0, 4.0, 1.0], "converted": [0.5, 1.0, 4.0, 2.0]}
    figures = {name: {"params": 1, "macs": 1, "latency_ms": latency_stats(t)}
               for name, t in times.items()}  # fmt: skip
    rounds = pair_ratios(figures, times=times)["latency_rounds"]
    assert rounds["runs"] == 4 and rounds["min"] == 0.5 and rounds["max"] == 2.0
    assert rounds["median"] == pytest.approx(0.75)  # of (0.5, 0.5, 1, 2)
    assert pair_ratios(figures)["latency"] == pytest.approx(1.5 / 1.5)
    assert "latency_rounds" not in pair_ratios(figures)


def test_time_models_runs_each_model_the_requested_times():
    calls = {"a": 0, "b": 0}

    class Counting(torch.nn.Module):
        def __init__(self, name):
            super().__init__()
            self.name = name

        def forward(self, x):
            calls[self.name] += 1
            return x

    times = time_models({"a": Counting("a"), "b": Counting("b")}, torch.zeros(1), runs=4, warmup=2)
    assert calls == {"a": 6, "b": 6}
    assert [len(t) for t in times.values()] == [4, 4]


def test_using_threads_restores_the_thread_count():
    before = torch.get_num_threads()
    with using_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("impl", ["auto", "circulant"])
def test_bench_pair_reports_both_models_and_consistent_ratios(impl):
    original, converted = tiny_pair()
    result = bench_pair(original, converted, TINY_SIZE, threads=1, impl=impl, runs=3, warmup=1)
    assert result["impl"] == impl and result["threads"] == 1 and result["batch"] == 1
    for name in ("original", "converted"):
        figures = result[name]
        assert figures["params"] > 0 and figures["macs"] > 0
        latency = figures["latency_ms"]
        assert latency["min"] <= latency["median"] <= latency["max"]
        assert latency["runs"] == 3
    ratios = result["ratios"]
    assert ratios["params"] == pytest.approx(
        result["converted"]["params"] / result["original"]["params"]
    )
    assert ratios["macs"] == pytest.approx(result["converted"]["macs"] / result["original"]["macs"])
    assert ratios["latency"] == pytest.approx(
        result["converted"]["latency_ms"]["median"] / result["original"]["latency_ms"]["median"]
    )
    assert ratios["latency_min"] == pytest.approx(
        result["converted"]["latency_ms"]["min"] / result["original"]["latency_ms"]["min"]
    )
    assert result["original"]["params"] == count_params(original)


def test_bench_pair_rejects_unknown_backends():
    original, converted = tiny_pair()
    with pytest.raises(ValueError, match="impl"):
        bench_pair(original, converted, TINY_SIZE, impl="winograd")
