"""What every benchmark script shares: the models, the machine line, docs/benchmarks.md.

Each script prints its markdown section(s) and, with --write, replaces them in
docs/benchmarks.md (a section runs from its "## " heading to the next one; other
sections are kept).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
from pathlib import Path

import torch

__all__ = [
    "DOC",
    "EARLY_MODELS",
    "MODELS",
    "TARGET_SLACK",
    "add_timing_arguments",
    "has_rules",
    "round_iqr",
    "machine_line",
    "machine_name",
    "selected",
    "write_section",
]

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"

# (label, timm name, model args, rules, stages, target, official ParC's latency ratio on
# this project's CPU). target None: the issue-19 target, the converted / original MAC
# ratio at 224 (torch.utils.flop_counter) x 1.05 (TARGET_SLACK).
MODELS = [
    ("ResNet50", "resnet50", {}, None, None, None, 0.97),
    ("MobileNetV2", "mobilenetv2_100", {}, None, None, None, 1.09),
    ("ConvNeXt-XT", "convnext_tiny", {"dims": (48, 96, 192, 384)}, None, None, None, 1.06),
    # mobilevit_s's pretrained_cfg says 256; the published comparison is at 224.
    ("MobileViT-S minimal", "mobilevit_s", {}, None, None, None, None),
    # The published ParC-Net-S (PARC.md section 3), built by the `parcnet-s` rules config.
    ("ParC-Net-S", "mobilevit_s", {}, "parcnet-s", None, None, None),
    ("ViT-S/16", "vit_small_patch16_224", {}, None, None, None, None),
    ("DeiT-S/16", "deit_small_patch16_224", {}, None, None, None, None),
    ("Swin-T", "swin_tiny_patch4_window7_224", {}, None, None, None, None),
    ("EfficientFormer-L1", "efficientformer_l1", {}, None, None, None, None),
    ("MobileViTv2-0.5", "mobilevitv2_050", {}, None, None, None, None),
]
TARGET_SLACK = 1.05
# ParC in every stage, the early-stage rows of issue 13 (target: no slower than the MACs).
EARLY_MODELS = [
    ("ConvNeXt-T, stages 1-4", "convnext_tiny", {}, None, "1,2,3,4", None, None),
    ("MobileNetV2, stages 1-4", "mobilenetv2_100", {}, None, "1,2,3,4", None, None),
]


def add_timing_arguments(
    parser: argparse.ArgumentParser,
    *,
    runs: int,
    warmup: int,
    impl_help: str = "ParC backend: auto|spatial|fft|circulant",
    threads_help: str = "torch intra-op threads",
    device: bool = True,
) -> None:
    """The options every timing script takes (threads, runs, model selection, clock, write)."""
    parser.add_argument("--threads", type=int, default=2, help=threads_help)
    parser.add_argument("--runs", type=int, default=runs, help="timed runs per model")
    parser.add_argument("--warmup", type=int, default=warmup, help="untimed runs first")
    parser.add_argument("--impl", default="auto", help=impl_help)
    parser.add_argument("--only", default="", help="comma-separated labels or timm names")
    if device:
        parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall time, or the thread's CPU time (with --threads 1; steadier when busy)",
    )
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")


def selected(models: list[tuple], only: str):
    """The rows of `models` that --only names (all without it): (row, missing) pairs, where
    missing is a line saying the row's rules config is not in this build, else None."""
    wanted = {w.strip().lower() for w in only.split(",") if w.strip()}
    for row in models:
        label, name, _, rules = row[:4]
        if wanted and label.lower() not in wanted and name not in wanted:
            continue
        missing = None if has_rules(rules) else f"{label}: no `{rules}` rules config in this build"
        yield row, missing


def has_rules(name: str | None) -> bool:
    """True for None (the family's default) or a shipped rules config of that name."""
    if name is None:
        return True
    from parc_surgery.rules.loading import shipped_configs

    return name in shipped_configs() or Path(name).is_file()


def machine_name() -> str:
    """lscpu's model name, else platform's processor string."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        text = ""
    for line in text.splitlines():
        if line.lower().startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_line(threads: int, device: str = "cpu") -> str:
    """ "Measured <date> on <machine> (<cores> cores), <threads> threads, torch <version>"."""
    where = machine_name() if device == "cpu" else torch.cuda.get_device_name(device)
    return (
        f"Measured {datetime.date.today().isoformat()} on {where} ({os.cpu_count()} cores), "
        f"{threads} thread{'' if threads == 1 else 's'}, torch {torch.__version__}"
    )


def round_iqr(ratios: dict) -> str:
    """The per-round ratio's interquartile range of a bench result's `ratios`, or "-"."""
    rounds = ratios.get("latency_rounds")
    return f"{rounds['q1']:.3f}-{rounds['q3']:.3f}" if rounds else "-"


def write_section(text: str, path: Path = DOC) -> None:
    """Replace the section `text` starts with (its first line, a "## " heading) in
    `path`, or append it; every other section stays as it was."""
    heading = text.splitlines()[0]
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    start = old.find(heading + "\n")
    if start < 0:
        new = old.rstrip("\n") + "\n\n" + text
    else:
        end = old.find("\n## ", start + len(heading))
        tail = "" if end < 0 else old[end + 1 :]
        new = old[:start] + text.rstrip("\n") + "\n" + ("\n" + tail if tail else "")
    path.write_text(new)
