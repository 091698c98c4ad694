"""Every option two or more commands share, declared once as an `Annotated` alias.

A command writes `stages: StagesOpt = None`; the help text, the flag names and the type
live here only (the habit of huggingface_hub's `cli/_cli_utils.py`). Output formats are
Enums, so typer validates them and `--help` lists the choices.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

__all__ = [
    "CheckpointArg",
    "DataFormat",
    "DeviceOpt",
    "FormatOpt",
    "ForceOpt",
    "ImplOpt",
    "InputSizeOpt",
    "ModelArg",
    "ModelArgsOpt",
    "PlanFormat",
    "PlanFormatOpt",
    "QuietOpt",
    "RulesOpt",
    "SeedOpt",
    "StagesOpt",
    "WeightsOpt",
]


class DataFormat(str, Enum):
    """How a command prints its result: a table for people, JSON (alone on stdout) for programs."""

    table = "table"
    json = "json"


class PlanFormat(str, Enum):
    """How a plan is printed: table, a diff of the swapped modules, or JSON."""

    table = "table"
    diff = "diff"
    json = "json"


ModelArg = Annotated[
    str, typer.Argument(help="timm model name, e.g. resnet50.", show_default=False)
]
CheckpointArg = Annotated[
    Path, typer.Argument(help="A parc-surgery checkpoint (.safetensors).", show_default=False)
]
StagesOpt = Annotated[
    str | None,
    typer.Option(
        "--stages",
        help="Stages to convert, e.g. 3,4 (stage k = output stride 2^(k+1)). "
        "Default: the rules file's stages.",
    ),
]
RulesOpt = Annotated[
    str | None,
    typer.Option(
        "--rules",
        help="Rules YAML file or shipped config name. Default: chosen from the model's family.",
    ),
]
InputSizeOpt = Annotated[
    str | None,
    typer.Option("--input-size", help="224 or 224x288 (HxW). Default: the model's pretrained_cfg."),
]
ModelArgsOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--model-arg", help="KEY=VALUE passed to timm.create_model (VALUE is YAML); repeatable."
    ),
]
WeightsOpt = Annotated[
    Path | None,
    typer.Option(
        "--weights", help="Local state_dict of the original model (safetensors or torch) to load."
    ),
]
FormatOpt = Annotated[
    DataFormat, typer.Option("--format", "-f", help="Output format.", case_sensitive=False)
]
PlanFormatOpt = Annotated[
    PlanFormat, typer.Option("--format", "-f", help="Output format.", case_sensitive=False)
]
QuietOpt = Annotated[
    bool, typer.Option("--quiet", "-q", help="Print only errors (and --format json).")
]
ForceOpt = Annotated[bool, typer.Option("--force", help="Overwrite an existing output file.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed for new parameters and inputs.")]
ImplOpt = Annotated[
    str,
    typer.Option("--impl", help="ParC backend: auto | spatial | fft | circulant."),
]
DeviceOpt = Annotated[
    str,
    typer.Option(
        "--device", help="torch device to run on: cpu, cuda or cuda:N (CUDA needs a GPU)."
    ),
]
