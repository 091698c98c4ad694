"""torchrun: two processes (gloo, CPU) give the weights of one process with the same global
batch; only rank 0 prints and writes; metrics are all-reduced.

Why they can agree: EpochSampler gives step t of one process exactly the union of step
t's batches of two; the model has no BatchNorm (test_convnext: LayerNorm), so a batch's
loss is the mean of per-image terms on any split of it (phase 1's block errors are
normalised per image for this reason); DDP averages the two ranks' gradients; and
--no-augment removes the per-rank random draws.
"""

from __future__ import annotations

import json
import sys

from train_testkit import BIN, max_difference, run
from typer.testing import CliRunner

from parc_surgery.checkpoint import read_recipe
from parc_surgery.cli import app


def _args(convnext, digits, out, batch):
    checkpoint, weights = convnext
    return [
        "finetune", str(checkpoint), "--data", str(digits), "--teacher-weights", str(weights),
        "-o", str(out), "--workers", "0", "-b", str(batch), "--warm-start-epochs", "1",
        "--epochs", "2", "--no-augment", "--lr", "1e-3", "--seed", "5", "--device", "cpu",
    ]  # fmt: skip


def test_two_processes_under_torchrun_match_one_with_the_same_global_batch(
    convnext, digits, tmp_path
):
    single = tmp_path / "single.safetensors"
    one = CliRunner().invoke(app, [*_args(convnext, digits, single, 16), "-q"])
    assert one.exit_code == 0, one.output

    double = tmp_path / "double.safetensors"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    two = run(
        [*launcher, "--nproc_per_node=2", str(BIN / "parc-surgery"),
         *_args(convnext, digits, double, 8), "--format", "json"],
        timeout=240,
    )  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    report = json.loads(two.stdout)  # rank 0 alone printed: one JSON document
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "double.safetensors",
        "single.safetensors",
    ]
    assert max_difference(single, double) <= 1e-5

    record, reference = report["training"], read_recipe(single)["training"]
    assert record["world_size"] == 2 and record["hyper_parameters"]["global_batch_size"] == 16
    # Every val image counted once over both ranks, and the same numbers as one process.
    for stage in ("before", "after_warmstart", "after_finetune"):
        assert record["metrics"][stage]["images"] == 10
        assert abs(record["metrics"][stage]["loss"] - reference["metrics"][stage]["loss"]) < 1e-4
    assert two.stderr.count("finetune epoch 2:") == 1  # rank 0 alone printed progress
