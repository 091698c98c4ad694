"""The parts of finetune's recipe, each by its behaviour: one augmented view for teacher and
student, the feature-distillation term, the new blocks' own learning rate, the defaults,
`train`'s epoch chosen on the holdout, and bench_recipe.py's docs section."""

from __future__ import annotations

import json

import pytest
import torch
from bench_testkit import load_script

import parc_surgery as ps
from parc_surgery.checkpoint import read_recipe
from parc_surgery.errors import UsageError
from parc_surgery.train import DataConfig, TrainConfig, finetune
from parc_surgery.train.distill import build_teacher
from parc_surgery.train.distributed import init_distributed
from parc_surgery.train.features import FeatureCapture
from parc_surgery.train.phases import finetune_phase


def _models(pair):
    checkpoint, weights = pair
    plan = ps.Plan.from_dict(read_recipe(checkpoint)["plan"])
    teacher, _ = build_teacher(plan, weights)
    return ps.load(checkpoint), teacher, [swap.path for swap in plan.swaps]


def _block_error(student, teacher, paths, x) -> float:
    """The swapped blocks' normalised MSE to the teacher's, each on its own model's input."""
    student.eval()
    with torch.no_grad(), FeatureCapture(teacher, paths) as t, FeatureCapture(student, paths) as s:
        teacher(x)
        student(x)
        return float(s.loss(t.outputs))


def test_the_feature_term_pulls_the_swapped_blocks_towards_the_teachers(convnext):
    torch.manual_seed(0)
    x = torch.randn(8, 3, 64, 64)
    y = torch.randint(0, 10, (8,))
    after = {}
    for weight in (0.0, 5.0):
        student, teacher, paths = _models(convnext)
        assert paths
        # The converted block starts as its original (and ConvNeXt's layer scale is 1e-6):
        # move it off first, so there is an error to lower.
        torch.manual_seed(2)
        with torch.no_grad():
            for path in paths:
                for param in student.get_submodule(path).parameters():
                    param.add_((0.5 * param.abs().mean() + 0.1) * torch.randn_like(param))
        start = _block_error(student, teacher, paths, x)
        config = TrainConfig(epochs=1, lr=2e-3, lr_warmup_epochs=0, feature_distill_weight=weight)
        phase = finetune_phase(student, teacher, config, init_distributed("cpu"), 12, paths)
        torch.manual_seed(1)
        for update in range(1, 13):
            phase.step(x, y, update)
            phase.scheduler.step_update(update)
        after[weight] = _block_error(student, teacher, paths, x)
    # The same steps, the same images: with the term on, the blocks' error falls further.
    assert start > 0.05 and after[5.0] < 0.5 * start and after[5.0] < 0.5 * after[0.0], (
        start,
        after,
    )


def test_teacher_and_student_see_the_same_augmented_view(convnext, digits, tmp_path, monkeypatch):
    """Every training forward of the student is on exactly the batch the teacher just saw
    (one augmented view, not two draws), and augmentation did change the images."""
    from parc_surgery import checkpoint as checkpoint_module
    from parc_surgery.train import distill

    calls: list[tuple[str, bool, torch.Tensor]] = []

    def spied(who, model):
        def record(module, args):
            calls.append((who, module.training, args[0].detach().clone()))

        model.register_forward_pre_hook(record)
        return model

    real_load, real_teacher = checkpoint_module.load, distill.build_teacher
    monkeypatch.setattr(checkpoint_module, "load", lambda p: spied("student", real_load(p)))
    monkeypatch.setattr(
        distill, "build_teacher", lambda *a: (spied("teacher", real_teacher(*a)[0]), "sha")
    )
    data = DataConfig(root=digits, batch_size=8, workers=0, augment=True, scale=0.3, hflip=0.5)
    finetune(
        convnext[0],
        data,
        TrainConfig(epochs=1, warmup_epochs=0, lr_warmup_epochs=0),
        output=tmp_path / "view.safetensors",
        teacher_weights=convnext[1],
    )
    training = [i for i, (who, mode, _) in enumerate(calls) if who == "student" and mode]
    assert len(training) == 4  # 36 training images, full batches of 8
    for i in training:
        assert calls[i - 1][0] == "teacher" and torch.equal(calls[i - 1][2], calls[i][2])
    # The eval-transform views (the evaluations) never equal a training batch's images.
    evals = [t for who, mode, t in calls if who == "student" and not mode]
    assert not any(t.shape == calls[i][2].shape and torch.equal(t, calls[i][2])
                   for t in evals for i in training)  # fmt: skip


def test_parc_lr_scale_gives_the_swapped_blocks_their_own_optimizer_groups(convnext):
    student, teacher, paths = _models(convnext)
    config = TrainConfig(epochs=2, lr=1e-3, lr_warmup_epochs=0, parc_lr_scale=3.0)
    phase = finetune_phase(student, teacher, config, init_distributed("cpu"), 4, paths)
    phase.scheduler.step_update(2)
    new = {id(p) for path in paths for p in student.get_submodule(path).parameters()}
    groups = phase.optimizer.param_groups
    every = [id(p) for g in groups for p in g["params"]]
    assert sorted(every) == sorted(id(p) for p in student.parameters())  # each exactly once
    base = groups[0]["lr"]
    for group in groups:
        ids = {id(p) for p in group["params"]}
        assert ids <= new or not ids & new  # a group is all new blocks or none
        scale = 3.0 if ids <= new else 1.0
        assert group["lr_scale"] == scale and group["lr"] == pytest.approx(scale * base)
        if any(p.ndim <= 1 for p in group["params"]):
            assert all(p.ndim <= 1 for p in group["params"]) and group["weight_decay"] == 0.0
    assert {g["lr_scale"] for g in groups} == {1.0, 3.0}
    # Without a scale: timm's usual two groups, nothing scaled.
    plain = finetune_phase(student, teacher, TrainConfig(epochs=2), init_distributed("cpu"), 4)
    assert len(plain.optimizer.param_groups) == 2
    with pytest.raises(UsageError, match="--parc-lr-scale"):
        TrainConfig(parc_lr_scale=0.0)
    with pytest.raises(UsageError, match="--feature-distill-weight"):
        TrainConfig(feature_distill_weight=-1.0)


def test_finetune_defaults_are_the_measured_recipe():
    import typer.main

    from parc_surgery.cli import app

    command = typer.main.get_command(app).commands["finetune"]
    defaults = {opt: p.default for p in command.params for opt in p.opts}
    assert defaults["--scale"] == 0.5 and defaults["--hflip"] == 0.0
    assert defaults["--warm-start-epochs"] == 0 and defaults["--augment"] is True
    assert defaults["--feature-distill-weight"] == 0.0 and defaults["--parc-lr-scale"] == 3.0


def test_train_picks_its_epoch_on_the_holdout_and_says_train(digits, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from parc_surgery.cli import app
    from parc_surgery.train import loop

    real = loop.evaluate
    count = [0]

    def rigged(model, loader, info, **kw):
        result = real(model, loader, info, **kw)
        if type(loader.dataset).__name__ != "HeldOut":  # val: later epochs look ever better
            count[0] += 1
            result.top1, result.loss = float(count[0]), 1.0 / count[0]
        return result

    monkeypatch.setattr(loop, "evaluate", rigged)
    out = tmp_path / "t.safetensors"
    args = ["train", "test_convnext", "--model-arg", "num_classes=10", "--data", str(digits),
            "--input-size", "32", "--epochs", "3", "-b", "8", "-j", "0", "--holdout", "0.25",
            "-o", str(out), "--format", "json"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "train epoch 1:" in result.stderr and "finetune epoch" not in result.stderr
    report = json.loads(result.stdout)
    history = report["history"]
    assert [r["phase"] for r in history] == ["train"] * 3
    assert all(r["select"]["images"] == 10 for r in history)  # 25% of 40
    chosen = max(history, key=lambda r: (r["select"]["top1"], -r["select"]["loss"]))
    assert report["best_epoch"] == chosen["epoch"]  # the holdout's best, not val's (epoch 3)


def _bench():
    return load_script("bench_recipe")


def test_bench_recipe_renders_mean_and_range_and_marks_the_defaults(tmp_path, monkeypatch):
    bench = _bench()
    defaults = {flag: 0 for flag in bench.TRACKED}
    settings = bench.settings_of({}, defaults)
    rows = [
        {"arm": "warm start 0", "seed": s, "epochs": 4, "top1": v, "original": 89.7,
         "settings": settings}
        for s, v in enumerate((90.0, 91.0, 92.0))
    ] + [
        {"arm": bench.PLAIN, "seed": s, "epochs": 4, "top1": v, "original": 89.7, "settings": None}
        for s, v in enumerate((85.0, 86.0, 87.0))
    ]  # fmt: skip
    section = bench.render(rows, 4, defaults)
    assert "| **finetune defaults** | 0,1,2 | 91.00 (90.00-92.00) | +5.00 |" in section
    # A configuration is named by how it differs from the defaults of the day.
    other = {**defaults, "--parc-lr-scale": 3.0}
    assert "| --parc-lr-scale 0 | 0,1,2 | 91.00" in bench.render(rows, 4, other)
    assert f"| {bench.PLAIN} | 0,1,2 | 86.00 (85.00-87.00) | +0.00 |" in section
    assert "- vs plain KD loop: 91.00 vs 86.00 (+5.00), above (the ranges" in section
    doc = tmp_path / "recovery.md"
    doc.write_text(f"# t\n\n{section.splitlines()[0]}\n\nold text\n\n## Next\n\nkept\n")
    bench.write_section(section, doc)
    text = doc.read_text()
    assert "old text" not in text and text.endswith("## Next\n\nkept\n") and section in text
    assert bench.flags_of(settings, 4)[:2] == ["--epochs", "4"]
