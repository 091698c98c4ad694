"""`parc-surgery eval`: numbers checked on cases whose answer is known by construction."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from typer.testing import CliRunner

import parc_surgery as ps
from parc_surgery.cli import app

runner = CliRunner()


def _eval(*args: str):
    return runner.invoke(app, ["eval", *args, "--workers", "0", "--format", "json"])


def _labels(root, split="val") -> list[int]:
    return [int(p.parent.name) for p in sorted((root / split).glob("*/*.png"))]


def test_a_head_that_ignores_the_image_gives_the_counts_of_its_classes(tmp_path, digits):
    # Zero weights and bias 0..9: every image's logits are the bias, so the prediction is
    # 9, the top five are 5..9 and the loss is logsumexp(bias) - bias[label], exactly.
    model = ps.create_model("test_convnext", {"num_classes": 10})
    with torch.no_grad():
        model.head.fc.weight.zero_()
        model.head.fc.bias.copy_(torch.arange(10.0))
    weights = tmp_path / "bias.safetensors"
    save_file(model.state_dict(), str(weights))
    result = _eval(
        "test_convnext",
        "--weights",
        str(weights),
        "--model-arg",
        "num_classes=10",
        "--data",
        str(digits),
        "--input-size",
        "64",
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    labels = _labels(digits)
    bias = torch.arange(10.0, dtype=torch.float64)
    assert report["images"] == len(labels) == 10
    assert report["top1"] == pytest.approx(100.0 * labels.count(9) / len(labels))
    assert report["top5"] == pytest.approx(100.0 * sum(y >= 5 for y in labels) / len(labels))
    expected = (torch.logsumexp(bias, 0) - bias[labels]).mean().item()
    assert abs(report["loss"] - expected) < 1e-5
    assert report["source"] == "timm" and report["input_size"] == [64, 64]


def _self_labelled(tmp_path, digits, *, flip: bool):
    """A 2-class model and a tree whose labels are its own argmax (or the other class)."""
    from PIL import Image
    from timm.data import create_transform, resolve_data_config

    torch.manual_seed(0)
    model = ps.create_model("test_convnext", {"num_classes": 2}).eval()
    transform = create_transform(
        **resolve_data_config(args={"input_size": (3, 64, 64)}, model=model)
    )
    files = sorted((digits / "train").glob("*/*.png"))[:24]
    batch = torch.stack([transform(Image.open(f).convert("RGB")) for f in files])
    with torch.no_grad():
        logits = model(batch)
        # Shift class 1's bias to the middle of the logit gaps: both classes get images.
        gaps = (logits[:, 1] - logits[:, 0]).sort().values
        model.head.fc.bias[1] -= (gaps[11] + gaps[12]) / 2
        logits = model(batch)
    predicted = logits.argmax(1)
    labels = 1 - predicted if flip else predicted
    root = tmp_path / "labelled"
    for index, (path, label) in enumerate(zip(files, labels.tolist(), strict=True)):
        folder = root / "val" / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{index:03d}.png").write_bytes(path.read_bytes())
    weights = tmp_path / "two.safetensors"
    save_file(model.state_dict(), str(weights))
    # The loader reads files sorted by name: the same order as `files`.
    loss = F.cross_entropy(logits, labels).item()
    return root, weights, loss


def _eval_two_classes(root, weights, *extra):
    return _eval(
        "test_convnext",
        "--weights",
        str(weights),
        "--model-arg",
        "num_classes=2",
        "--data",
        str(root),
        "--input-size",
        "64",
        *extra,
    )


def test_images_labelled_by_the_model_itself_score_100_percent(tmp_path, digits):
    root, weights, loss = _self_labelled(tmp_path, digits, flip=False)
    result = _eval_two_classes(root, weights, "--batch-size", "5")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["top1"] == 100.0 and report["images"] == 24
    assert report["topk"] == 2 and report["top5"] == 100.0  # top-k of a 2-class head
    assert abs(report["loss"] - loss) < 1e-4


def test_labels_swapped_against_the_model_score_0_percent(tmp_path, digits):
    root, weights, loss = _self_labelled(tmp_path, digits, flip=True)
    result = _eval_two_classes(root, weights)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["top1"] == 0.0 and abs(report["loss"] - loss) < 1e-4


def test_limit_evaluates_that_many_images_and_a_checkpoint_needs_no_weights(convnext, digits):
    checkpoint, _ = convnext
    result = _eval(str(checkpoint), "--data", str(digits), "--split", "train", "--limit", "7")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["images"] == 7 and report["source"] == "checkpoint"
    assert report["split"] == "train" and report["input_size"] == [64, 64]  # conversion size
    assert report["images_per_s"] > 0


def test_the_table_names_the_model_the_split_and_the_metrics(convnext, digits):
    checkpoint, _ = convnext
    result = runner.invoke(app, ["eval", str(checkpoint), "--data", str(digits), "-j", "0"])
    assert result.exit_code == 0, result.output
    assert "test_convnext (checkpoint)" in result.stdout and "[val]" in result.stdout
    assert "top-1" in result.stdout and "images/s" in result.stdout


def test_weights_with_a_checkpoint_is_a_usage_error(convnext, digits):
    checkpoint, weights = convnext
    result = _eval(str(checkpoint), "--data", str(digits), "--weights", str(weights))
    assert result.exit_code == 2 and "holds its weights" in result.stderr


def test_a_split_in_a_tar_file_gives_the_numbers_of_the_folder(convnext, digits, tmp_path):
    import tarfile

    checkpoint, _ = convnext
    packed = tmp_path / "packed"
    packed.mkdir()
    with tarfile.open(packed / "val.tar", "w") as tar:
        for folder in sorted((digits / "val").iterdir()):
            tar.add(folder, arcname=folder.name)
    from_folder = _eval(str(checkpoint), "--data", str(digits))
    from_tar = _eval(str(checkpoint), "--data", str(packed))
    assert from_folder.exit_code == 0 and from_tar.exit_code == 0, from_tar.output
    a, b = json.loads(from_folder.stdout), json.loads(from_tar.stdout)
    assert (a["images"], a["top1"], a["top5"]) == (b["images"], b["top1"], b["top5"])
    assert abs(a["loss"] - b["loss"]) < 1e-6


def test_eval_applies_timms_validation_transform_and_crop_pct_changes_it(tmp_path, digits):
    """eval's images are exactly timm's validation transform of the pretrained_cfg (what
    it applied is in the JSON and on stderr); --crop-pct 1.0 resizes without cropping."""
    from timm.data import create_transform, resolve_data_config

    from parc_surgery.train.data import DataConfig, transform_for

    model = ps.create_model("test_convnext", {"num_classes": 10})
    weights = tmp_path / "w.safetensors"
    save_file(model.state_dict(), str(weights))
    base = ["test_convnext", "--weights", str(weights), "--model-arg", "num_classes=10"]
    base += ["--data", str(digits), "--input-size", "64"]
    default, whole = _eval(*base), _eval(*base, "--crop-pct", "1.0")
    assert default.exit_code == 0 and whole.exit_code == 0, default.output + whole.output
    cfg = resolve_data_config(args={"input_size": (3, 64, 64)}, model=model)
    applied = json.loads(default.stdout)["preprocessing"]
    assert (
        applied["crop_pct"] == cfg["crop_pct"] and applied["interpolation"] == cfg["interpolation"]
    )
    assert json.loads(whole.stdout)["preprocessing"]["crop_pct"] == 1.0
    assert "crop_pct 1" in whole.stderr and "preprocessing:" in default.stderr
    # The transform used is timm's, image for image.
    from PIL import Image

    picture = Image.open(sorted((digits / "val").glob("*/*.png"))[0]).convert("RGB")
    ours = transform_for(model, DataConfig(root=digits), (64, 64), training=False)(picture)
    assert torch.equal(ours, create_transform(**cfg, is_training=False)(picture))
    cropped = transform_for(model, DataConfig(root=digits, crop_pct=1.0), (64, 64), training=False)
    assert not torch.equal(cropped(picture), ours)


def test_a_crop_pct_outside_0_1_is_a_usage_error(tmp_path, digits):
    result = _eval("test_convnext", "--data", str(digits), "--crop-pct", "1.5")
    assert result.exit_code == 2 and "--crop-pct 1.5" in result.output


def test_the_digits_example_keeps_each_digit_inside_the_eval_crop(tmp_path):
    """No ink in the border timm's 0.875 centre crop removes (the digit stays whole)."""
    import numpy as np
    from PIL import Image

    from examples.make_digits import write_digits

    write_digits(tmp_path / "d", size=64, per_class=4, val_fraction=0.5)
    for path in sorted((tmp_path / "d").glob("*/*/*.png")):
        grey = np.asarray(Image.open(path).convert("L"), dtype=np.float64)
        border = 4  # 64 * (1 - 0.875) / 2
        inner = grey[border:-border, border:-border].sum()
        assert grey.sum() - inner < 0.01 * grey.sum(), path
