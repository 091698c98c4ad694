"""Shared pieces of the recovery tests: a small digits tree, tiny converted models, runs."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SIZE = 64


def make_digits(path: Path, *, per_class: int = 5, size: int = 32) -> Path:
    """examples/make_digits.py's tree with `per_class` images of each digit (80/20 split)."""
    spec = importlib.util.spec_from_file_location(
        "make_digits", ROOT / "examples" / "make_digits.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.write_digits(path, size=size, per_class=per_class)
    return path


def copy_tree(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def convert_tiny(
    out_dir: Path, name: str, *, rules: str | None = None, num_classes: int = 10, seed: int = 0
) -> tuple[Path, Path]:
    """(converted checkpoint, the original's weights) of timm `name` at 64x64."""
    from safetensors.torch import save_file

    import parc_surgery as ps

    torch.manual_seed(seed)
    original = ps.create_model(name, {"num_classes": num_classes})
    weights = out_dir / f"{name}-original.safetensors"
    save_file({k: v.contiguous() for k, v in original.state_dict().items()}, str(weights))
    checkpoint = out_dir / f"{name}-parc.safetensors"
    ps.convert(
        name,
        model_args={"num_classes": num_classes},
        input_size=(SIZE, SIZE),
        rules=rules,
        weights=str(weights),
        output=str(checkpoint),
    )
    return checkpoint, weights


def finetune_cli(checkpoint, data, out, *extra: str, teacher=None):
    """`parc-surgery finetune` in this process: 1 epoch, batch 8, no workers, then `extra`
    (a later repeat of an option wins); `teacher` adds --teacher-weights."""
    from typer.testing import CliRunner

    from parc_surgery.cli import app

    teacher_args = ["--teacher-weights", str(teacher)] if teacher is not None else []
    args = ["finetune", str(checkpoint), "--data", str(data), *teacher_args, "-o", str(out)]
    return CliRunner().invoke(app, [*args, "-j", "0", "-b", "8", "--epochs", "1", *extra])


def cli_env() -> dict[str, str]:
    """One thread per process (the suite shares 2 cores), no colour, no hub."""
    return {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "OMP_NUM_THREADS": "1",
        "NO_COLOR": "1",
        "HF_HUB_OFFLINE": "1",
    }


def parc_surgery(*args: str) -> list[str]:
    return [str(BIN / "parc-surgery"), *args]


def run(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, env=cli_env(), timeout=timeout)


def tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def max_difference(a: Path, b: Path) -> float:
    left, right = tensors(a), tensors(b)
    assert left.keys() == right.keys()
    return max((left[k].double() - right[k].double()).abs().max().item() for k in left)
