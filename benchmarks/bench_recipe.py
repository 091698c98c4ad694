"""The recipe check: does `finetune`'s default beat plain logit distillation on digits?

    python benchmarks/bench_recipe.py [--out-dir out/recipe] [--seeds 0,1,2]
                                      [--original-epochs 8] [--epochs 4]

MobileNetV2-0.5 trained from scratch on digits at 64 px (no augmentation), converted with
the shipped mobilenetv2 rules, then recovered with the same epoch budget five ways:
finetune's CLI defaults (timm augmentation), --no-augment, no warm start (defaults),
no warm start + --no-augment, and a plain loop (CE + T^2 KL, T=2, AdamW 5e-4, no warm
start, no augmentation, last epoch). Every variant trains on the same images (the
training split less finetune's 10% selection holdout) and is scored on the val split,
which nothing reads to choose. One thread. Results: out-dir/results.json (one line per run).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

import parc_surgery as ps
from parc_surgery.train import DataConfig, TrainConfig, evaluate_source, finetune, train_model
from parc_surgery.train.distributed import init_distributed
from parc_surgery.train.run import prepare_data

ROOT = Path(__file__).resolve().parent.parent
NAME, RULES, SIZE = "mobilenetv2_050", "mobilenetv2", 64


def digits(out: Path) -> Path:
    target = out / "digits"
    if not (target / "val").is_dir():
        spec = importlib.util.spec_from_file_location("md", ROOT / "examples/make_digits.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.write_digits(target, size=SIZE)
    return target


def plain_kd(converted: Path, teacher_weights: Path, data: DataConfig, epochs: int, seed: int):
    """CE + T^2 KL(T=2), AdamW 5e-4 constant, no warm start, no augmentation, last epoch."""
    torch.manual_seed(seed)
    student = ps.load(converted)
    teacher = ps.create_model(NAME, {"num_classes": 10})
    from safetensors.torch import load_file

    teacher.load_state_dict(load_file(str(teacher_weights)))
    teacher.eval()
    sets = prepare_data(student, data, (SIZE, SIZE), init_distributed(), seed=seed)
    opt = torch.optim.AdamW(student.parameters(), lr=5e-4, weight_decay=0.05)
    for epoch in range(epochs):
        sets.train.sampler.set_epoch(epoch)
        student.train()
        for images, targets in sets.train:
            with torch.no_grad():
                soft = F.log_softmax(teacher(images) / 2, -1)
            logits = student(images)
            kl = F.kl_div(
                F.log_softmax(logits / 2, -1), soft, log_target=True, reduction="batchmean"
            )
            loss = F.cross_entropy(logits, targets) + 4 * kl
            opt.zero_grad()
            loss.backward()
            opt.step()
    student.eval()
    correct = total = 0
    with torch.no_grad():
        for images, targets in sets.val:
            correct += int((student(images).argmax(-1) == targets).sum())
            total += len(targets)
    return 100.0 * correct / total


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out-dir", type=Path, default=ROOT / "out" / "recipe")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--original-epochs", type=int, default=8)
    p.add_argument("--epochs", type=int, default=4)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    out = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    root = digits(out)
    base = DataConfig(root=root, batch_size=32, workers=0, input_size=(SIZE, SIZE))
    plain = replace(base, augment=False)
    weights = out / "original.safetensors"
    if not weights.is_file():
        from safetensors.torch import save_file

        torch.manual_seed(0)
        model = ps.create_model(NAME, {"num_classes": 10})
        cfg = TrainConfig(epochs=args.original_epochs, warmup_epochs=0, lr=4e-3, seed=0)
        train_model(model, plain, cfg)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    original = evaluate_source(NAME, plain, weights=weights, model_args={"num_classes": 10})
    converted = out / "converted.safetensors"
    ps.convert(NAME, model_args={"num_classes": 10}, input_size=(SIZE, SIZE), rules=RULES,
               weights=str(weights), output=str(converted), force=True)  # fmt: skip
    n = args.epochs
    variants = {
        "finetune defaults (augment on)": (base, 1),
        "finetune --no-augment": (plain, 1),
        "finetune no warm start": (base, 0),
        "finetune no warm start --no-augment": (plain, 0),
    }
    results = out / "results.json"
    for seed in [int(s) for s in args.seeds.split(",")]:
        for label, (data, warm) in variants.items():
            start = time.perf_counter()
            cfg = TrainConfig(epochs=n - warm, warmup_epochs=warm, seed=seed)
            target = out / f"ft-{seed}.safetensors"
            finetune(converted, data, cfg, output=target, teacher_weights=weights, force=True)
            top1 = evaluate_source(target, plain).result.top1
            row = {"seed": seed, "variant": label, "top1": top1, "s": time.perf_counter() - start}
            print(json.dumps(row), file=sys.stderr, flush=True)
            with results.open("a") as f:
                f.write(json.dumps({**row, "original": original.result.top1}) + "\n")
        top1 = plain_kd(converted, weights, plain, n, seed)
        with results.open("a") as f:
            f.write(json.dumps({"seed": seed, "variant": "plain KD loop", "top1": top1,
                                "original": original.result.top1}) + "\n")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
