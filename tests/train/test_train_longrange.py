"""The long-range benchmark's parts, by behaviour: the gated distillation term, the task's
premise (no unit of the original sees both far tiles; near tiles touch), the labels, and the
docs section bench_longrange.py renders."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from bench_testkit import load_script

from parc_surgery.errors import UsageError
from parc_surgery.train import TrainConfig
from parc_surgery.train.distill import DistillLoss


def _bench():
    return load_script("bench_longrange")


def _kl_rows(student, teacher, t):
    return F.kl_div(
        F.log_softmax(student / t, 1), F.log_softmax(teacher / t, 1), reduction="none",
        log_target=True,
    ).sum(1)  # fmt: skip


def test_the_correct_gate_distils_only_where_the_teacher_is_right():
    torch.manual_seed(0)
    student, teacher = torch.randn(6, 4), torch.randn(6, 4)
    targets = teacher.argmax(1).clone()
    targets[[1, 4]] = (targets[[1, 4]] + 1) % 4  # the teacher is wrong on images 1 and 4
    w, t = 0.5, 2.0
    ce = F.cross_entropy(student, targets)
    rows = _kl_rows(student, teacher, t)
    right = torch.tensor([1.0, 0, 1, 1, 0, 1])
    gated = DistillLoss(w, t, "correct")(student, targets, teacher)
    ungated = DistillLoss(w, t, "none")(student, targets, teacher)
    assert torch.allclose(gated, (1 - w) * ce + w * t * t * (rows * right).mean())
    assert torch.allclose(ungated, (1 - w) * ce + w * t * t * rows.mean())
    assert gated < ungated
    # A teacher wrong on every image distils nothing: the loss is the CE part alone.
    wrong = (teacher.argmax(1) + 1) % 4
    alone = DistillLoss(w, t, "correct")(student, wrong, teacher)
    assert torch.allclose(alone, (1 - w) * F.cross_entropy(student, wrong))


def test_an_unknown_gate_is_a_usage_error():
    with pytest.raises(UsageError, match="--distill-gate"):
        TrainConfig(distill_gate="sometimes")


def test_far_tiles_lie_beyond_the_originals_receptive_field_and_near_tiles_touch():
    bench = _bench()
    field = bench.receptive_field()
    assert 100 < field < 447  # the far tiles' smallest distance apart
    rng = np.random.default_rng(0)
    for task in ("far", "near"):
        labels = []
        for _ in range(200):
            pixels, label = bench.strip(rng, task)
            assert pixels.shape == (bench.H, bench.W, 3)
            columns = np.flatnonzero(pixels.max((0, 2)) > 0)
            assert len(columns) == 2 * bench.TILE  # two whole tiles, nothing else
            inner = np.diff(columns).max() - 1
            if task == "far":
                assert inner >= 447
                assert columns.min() >= 8 and columns.max() < bench.W - 8
            else:
                assert inner == 0  # side by side
            labels.append(label)
        assert 0.4 < labels.count("same") / len(labels) < 0.6


def test_the_label_is_whether_the_two_tiles_share_a_colour():
    bench = _bench()
    rng = np.random.default_rng(3)
    seen = set()
    for _ in range(50):
        pixels, label = bench.strip(rng, "near")
        columns = np.flatnonzero(pixels.max((0, 2)) > 0)
        colours = []
        for tile in (columns[: bench.TILE], columns[bench.TILE :]):
            lit = pixels[:, tile].reshape(-1, 3).max(0)
            assert lit[2] == 0 and (lit[0] == 0) != (lit[1] == 0)  # red or green, not both
            colours.append("red" if lit[0] else "green")
        assert label == ("same" if colours[0] == colours[1] else "different")
        seen.add(tuple(colours))
    assert len(seen) == 4  # every pairing occurs


def test_the_docs_section_has_mean_range_and_the_verdict_per_task():
    bench = _bench()
    rows = [
        {"task": task, "arm": arm, "seed": seed, "epochs": 8, "top1": score + seed}
        for task, base in (("far", 60.0), ("near", 95.0))
        for arm, score in (("original", base), ("recovered", base + (30 if task == "far" else 0)))
        for seed in range(3)
    ]
    rows[3]["erf50"] = {"original": 0.1, "converted": 0.3}
    text = bench.render(rows, 8, 439)
    assert "439 px" in text
    assert "| **recovered** | 91.00 (90.00-92.00) | 96.00 (95.00-97.00) | 0,1,2 |" in text
    assert "far +30.00 (above, the ranges do not overlap)" in text
    assert "near +0.00 (a tie, the ranges overlap)" in text
    assert "10.0% -> 30.0%" in text


def test_every_model_is_scored_at_the_strips_size(monkeypatch, tmp_path):
    """A timm name with --weights alone is evaluated at 224x224, squashing the strip."""
    bench = _bench()
    calls = []
    monkeypatch.setattr(bench, "cli", lambda *args: calls.append(args) or {"top1": 50.0})
    bench.top1(tmp_path / "original.safetensors", tmp_path, original=True)
    bench.top1(tmp_path / "recovered.safetensors", tmp_path)
    for args in calls:
        assert args[0] == "eval" and args[args.index("--input-size") + 1] == "32x544"
