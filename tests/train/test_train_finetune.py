"""finetune: the warm start teaches each swapped block its original, fine-tuning lowers the
loss, and the output is a parc-surgery checkpoint carrying its training record."""

from __future__ import annotations

import json

import torch
from train_testkit import finetune_cli, tensors

import parc_surgery as ps
from parc_surgery.checkpoint import file_sha256, read_recipe
from parc_surgery.train import DataConfig, TrainConfig, finetune


def _data(root, **kwargs) -> DataConfig:
    return DataConfig(root=root, **{"batch_size": 8, "workers": 0, **kwargs})


def test_the_warm_start_lowers_every_swapped_blocks_error_and_moves_nothing_else(
    mobilenet, digits, tmp_path
):
    checkpoint, weights = mobilenet
    out = tmp_path / "warm.safetensors"
    result = finetune(
        checkpoint,
        _data(digits, batch_size=4),
        TrainConfig(epochs=0, warmup_epochs=1, block_lr=2e-3),
        output=out,
        teacher_weights=weights,
    )
    m = result.measurements
    swapped = [swap.path for swap in ps.Plan.from_dict(read_recipe(checkpoint)["plan"]).swaps]
    assert sorted(m.block_nmse_before) == sorted(swapped) and len(swapped) == 4
    for path in swapped:
        assert m.block_nmse_after[path] < m.block_nmse_before[path], path
    # Only the swapped blocks trained: every other tensor, BatchNorm statistics included.
    before, after = tensors(checkpoint), tensors(out)
    outside = [k for k in before if not any(k.startswith(p + ".") for p in swapped)]
    assert outside and all(torch.equal(before[k], after[k]) for k in outside)
    inside = [k for k in before if k not in outside and before[k].is_floating_point()]
    assert any(not torch.equal(before[k], after[k]) for k in inside)
    assert [r.phase for r in m.history] == ["warmstart"] and m.after_warmstart is not None


def test_fine_tuning_lowers_the_loss_on_the_images_it_trains_on(convnext, digits, tmp_path):
    checkpoint, weights = convnext
    data = _data(digits, val_split="train", augment=False)  # measured on its own images
    result = finetune(
        checkpoint,
        data,
        TrainConfig(epochs=3, warmup_epochs=0, lr=3e-3, lr_warmup_epochs=0),
        output=tmp_path / "ft.safetensors",
        teacher_weights=weights,
    )
    m = result.measurements
    assert m.after_finetune.loss < m.before.loss - 0.05
    assert [r.phase for r in m.history] == ["finetune"] * 3
    assert m.history[-1].train_loss < m.history[0].train_loss
    # The epoch is chosen on the selection holdout, and the val numbers are reported for it.
    best = max(m.history, key=lambda r: (r.select.top1, -r.select.loss))
    assert m.best_epoch == best.epoch and m.after_finetune == best.val


def test_the_output_loads_and_carries_its_training_record(convnext, digits, tmp_path):
    checkpoint, weights = convnext
    out = tmp_path / "recovered.safetensors"
    result = finetune_cli(
        checkpoint,
        digits,
        out,
        "--seed",
        "3",
        "--format",
        "json",
        "--warm-start-epochs",
        "1",
        teacher=weights,
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)  # one JSON document alone on stdout
    assert report["output"] == str(out) and report["output_sha256"] == file_sha256(out)
    stages = [row["stage"] for row in report["summary"]]
    assert stages[:3] == ["original", "converted, before training", "after warm start"]
    assert stages[3].startswith("after fine-tune (best epoch 1") and len(stages) == 4
    model = ps.load(out)  # rebuilt from the recipe, weights loaded strictly
    assert not any(k.startswith("module.") for k in model.state_dict())
    recipe = read_recipe(out)
    record = recipe["training"]
    assert recipe["plan"] == read_recipe(checkpoint)["plan"]
    assert record == report["training"]
    assert record["teacher"]["weights_sha256"] == file_sha256(weights)
    assert record["checkpoint_sha256"] == file_sha256(checkpoint)
    assert record["data"]["splits"] == {
        "train": {"images": 36, "classes": 10},
        "selection_holdout": {"images": 4, "classes": 10},
        "val": {"images": 10, "classes": 10},
    }
    assert record["seed"] == 3 and record["world_size"] == 1
    assert record["hyper_parameters"]["epochs"] == 1
    assert record["hyper_parameters"]["global_batch_size"] == 8
    metrics = record["metrics"]
    for stage in ("original", "before", "after_warmstart", "after_finetune"):
        assert set(metrics[stage]) >= {"top1", "top5", "loss", "images"}
    assert metrics["best_epoch"] == 1 and len(metrics["history"]) == 2
    assert metrics["selected_on"] == "holdout" and metrics["written"] in ("finetune", "warmstart")
    assert not (tmp_path / "recovered.safetensors.tmp").exists()


def test_no_teacher_fine_tunes_on_labels_and_skips_the_warm_start(convnext, digits, tmp_path):
    checkpoint, _ = convnext
    out = tmp_path / "plain.safetensors"
    result = finetune_cli(checkpoint, digits, out, "--no-teacher", "--warm-start-epochs", "1")
    assert result.exit_code == 0, result.output
    assert "no warm start" in result.stderr
    assert "━" not in result.stderr  # no progress bar off a terminal, epoch lines instead
    assert "finetune epoch 1:" in result.stderr and "warmstart epoch" not in result.stderr
    assert "after fine-tune" in result.stdout and "original" not in result.stdout
    record = read_recipe(out)["training"]
    assert record["teacher"] is None and record["metrics"]["after_warmstart"] is None


def test_a_teacher_other_than_the_converted_weights_is_warned_about(convnext, digits, tmp_path):
    from safetensors.torch import save_file

    checkpoint, _ = convnext
    other = ps.create_model("test_convnext", {"num_classes": 10})
    weights = tmp_path / "other.safetensors"
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(weights))
    result = finetune_cli(
        checkpoint,
        digits,
        tmp_path / "o.safetensors",
        "--epochs",
        "0",
        "--warm-start-epochs",
        "1",
        teacher=weights,
    )
    assert result.exit_code == 0, result.output
    assert "warning: the checkpoint was converted from weights with sha256" in result.stderr


def test_with_ema_the_saved_weights_are_the_averaged_ones(convnext, digits, tmp_path):
    checkpoint, weights = convnext
    data = _data(digits, augment=False)
    outputs = {}
    for name, decay in (("plain", None), ("ema", 0.5)):
        outputs[name] = tmp_path / f"{name}.safetensors"
        result = finetune(
            checkpoint,
            data,
            TrainConfig(epochs=1, warmup_epochs=0, lr=1e-3, ema_decay=decay),
            output=outputs[name],
            teacher_weights=weights,
        )
        assert result.record["hyper_parameters"]["ema_decay"] == decay
    plain, ema, start = tensors(outputs["plain"]), tensors(outputs["ema"]), tensors(checkpoint)
    moved = [k for k in start if not torch.equal(plain[k], start[k])]
    assert moved
    # The same run (same seed) with an EMA kept saves the average, not the last weights.
    assert not all(torch.equal(plain[k], ema[k]) for k in moved)


def test_selection_never_reads_the_reported_split(convnext, digits, tmp_path, monkeypatch):
    """The epoch is chosen on held-out training images: whatever the val split scores,
    the written epoch is the holdout's best, and the val loader is only ever evaluated
    for reporting (the holdout images are not among the training batches either)."""
    from parc_surgery.train import loop

    checkpoint, weights = convnext
    seen: list[str] = []
    real = loop.evaluate

    def spy(model, loader, info, **kw):
        seen.append(type(loader.dataset).__name__)
        result = real(model, loader, info, **kw)
        if seen[-1] != "HeldOut":  # the reported split: make later epochs look ever better
            result.top1, result.loss = float(len(seen)), 1.0 / len(seen)
        return result

    monkeypatch.setattr(loop, "evaluate", spy)
    result = finetune(
        checkpoint,
        _data(digits, augment=False, holdout=0.25),
        TrainConfig(epochs=3, warmup_epochs=0, lr=3e-3, lr_warmup_epochs=0),
        output=tmp_path / "sel.safetensors",
        teacher_weights=weights,
    )
    m = result.measurements
    assert m.selected_on == "holdout" and "HeldOut" in seen
    chosen = max(m.history, key=lambda r: (r.select.top1, -r.select.loss))
    assert m.best_epoch == chosen.epoch
    if chosen.epoch != 3:  # reading val would have picked the last epoch
        assert m.after_finetune.top1 < m.history[-1].val.top1
    for r in m.history:
        assert r.select is not None and r.select.images == 10  # 25% of the 40 train images


def test_holdout_0_keeps_the_last_epoch_and_says_so(convnext, digits, tmp_path):
    checkpoint, weights = convnext
    result = finetune(
        checkpoint,
        _data(digits, augment=False, holdout=0.0),
        TrainConfig(epochs=2, warmup_epochs=0, lr=3e-3, lr_warmup_epochs=0),
        output=tmp_path / "last.safetensors",
        teacher_weights=weights,
    )
    m = result.measurements
    assert m.selected_on == "last" and m.best_epoch == 2 and m.written == "finetune"
    assert m.after_finetune == m.history[-1].val
    assert all(r.select is None for r in m.history)
