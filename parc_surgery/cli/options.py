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

from parc_surgery.options import IMPL_CHOICES

__all__ = [
    "ArchOpt",
    "ExportImpl",
    "ExportImplOpt",
    "Impl",
    "AllowEmptyOpt",
    "AllowOutsideOpt",
    "BatchSizeOpt",
    "CheckpointArg",
    "DataFormat",
    "CheckpointSizeOpt",
    "DataOpt",
    "DatasetOpt",
    "DeviceOpt",
    "FormatOpt",
    "ForceOpt",
    "ImplOpt",
    "Init",
    "InitOpt",
    "InputSizeOpt",
    "ModelArg",
    "ModelArgsOpt",
    "ModelOrCheckpointArg",
    "OfficialArch",
    "OriginalWeightsOpt",
    "OutputFileOpt",
    "PlanFormat",
    "PlanFormatOpt",
    "QuietOpt",
    "RandomOriginalOpt",
    "RulesOpt",
    "SeedOpt",
    "StagesOpt",
    "StrictOpt",
    "ThreadsOpt",
    "WeightsOpt",
    "WorkersOpt",
]


class DataFormat(str, Enum):
    """How a command prints its result: a table for people, JSON (alone on stdout) for programs."""

    table = "table"
    json = "json"


class DistillGate(str, Enum):
    """finetune --distill-gate: the images the KL term to the teacher uses."""

    none = "none"
    correct = "correct"


class PlanFormat(str, Enum):
    """How a plan is printed: table (what fits 80 columns), wide (every column), a diff of
    the swapped modules, or JSON."""

    table = "table"
    wide = "wide"
    diff = "diff"
    json = "json"


class OfficialArch(str, Enum):
    """The published ParC networks import-official / export-official know (official.ARCHS)."""

    parc_resnet50 = "parc-resnet50"
    parc_mobilenetv2 = "parc-mobilenetv2"
    parc_convnext_xt = "parc-convnext-xt"
    parcnet_s = "parcnet-s"
    parcnet_xs = "parcnet-xs"
    parcnet_h = "parcnet-h"
    parcnet_s_ssd = "parcnet-s-ssd"
    parcnet_s_deeplabv3 = "parcnet-s-deeplabv3"


# The ParC backends (options.IMPL_CHOICES), as an Enum so --help lists them.
Impl = Enum("Impl", {name: name for name in IMPL_CHOICES}, type=str)
Impl.__doc__ = "A ParC backend, or auto (chosen per shape)."


class Init(str, Enum):
    """How the new ParC convs start (options.SwapOptions.init)."""

    paper = "paper"
    from_local = "from_local"


InitOpt = Annotated[
    Init | None,
    typer.Option(
        "--init",
        help="Init of the new ParC convs for every rule: paper (the family's official init) "
        "or from_local (derived from the replaced local kernel). Default: the rules file's.",
        case_sensitive=False,
    ),
]


class ExportImpl(str, Enum):
    """The backends with a portable ONNX form (FFT has none), or auto (per layer)."""

    auto = "auto"
    spatial = "spatial"
    circulant = "circulant"


ModelArg = Annotated[
    str,
    typer.Argument(
        help="timm model name (resnet50) or torchvision:NAME (torchvision:resnet50).",
        show_default=False,
    ),
]
CheckpointArg = Annotated[
    Path, typer.Argument(help="A parc-surgery checkpoint (.safetensors).", show_default=False)
]
ModelOrCheckpointArg = Annotated[
    str,
    typer.Argument(
        help="timm model name (converted now), or a parc-surgery checkpoint (.safetensors).",
        show_default=False,
    ),
]
OriginalWeightsOpt = Annotated[
    Path | None,
    typer.Option(
        "--original-weights",
        help="With a checkpoint: state_dict of the original model (safetensors or torch), "
        "loaded strictly into the model rebuilt from the checkpoint's recipe.",
    ),
]
RandomOriginalOpt = Annotated[
    bool,
    typer.Option(
        "--random-original",
        help="With a checkpoint and no --original-weights: compare against an original at "
        "random initialisation (it shares no weights with the checkpoint).",
    ),
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
        "--model-arg",
        help="KEY=VALUE passed to the model's constructor (VALUE is YAML); repeatable.",
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
    Impl,
    typer.Option("--impl", help="ParC backend (auto: chosen per shape).", case_sensitive=False),
]
ExportImplOpt = Annotated[
    ExportImpl,
    typer.Option(
        "--impl",
        help="ParC backend to export: auto (per layer, whichever onnxruntime runs faster), "
        "spatial (Conv) or circulant (MatMul).",
        case_sensitive=False,
    ),
]
StrictOpt = Annotated[
    bool, typer.Option("--strict", help="Fail (exit 3) when a rule matches nothing.")
]
ArchOpt = Annotated[
    OfficialArch | None,
    typer.Option("--arch", help="The published ParC network.", case_sensitive=False),
]
OutputFileOpt = Annotated[
    Path,
    typer.Option(
        "--output", "-o", "--out", help="File to write (--out: old spelling).", show_default=False
    ),
]
ThreadsOpt = Annotated[
    int | None,
    typer.Option("--threads", help="torch intra-op threads. Default: torch's."),
]
AllowEmptyOpt = Annotated[
    bool,
    typer.Option(
        "--allow-empty",
        help="Write the checkpoint even when no rule selects anything (otherwise exit 3).",
    ),
]
AllowOutsideOpt = Annotated[
    bool,
    typer.Option(
        "--allow-outside",
        help="Let jobs write outside --output-dir and read rules / weights outside the "
        "jobs file's folder (absolute paths, '..', symlinks). Off: such a job fails.",
    ),
]

# Data options of `eval` and `finetune`.
DataOpt = Annotated[
    Path,
    typer.Option(
        "--data",
        help="Data set root: an ImageFolder tree (train/<class>/*.png, val/<class>/...), "
        "a folder of split .tar files, or the root of a --dataset.",
        show_default=False,
    ),
]
AllowOutsideDataOpt = Annotated[
    bool,
    typer.Option(
        "--allow-outside",
        help="Follow symlinks in --data that point outside it. Off: such a link is refused.",
    ),
]
DatasetOpt = Annotated[
    str,
    typer.Option(
        "--dataset",
        help="timm create_dataset name (e.g. torch/cifar10, hfds/NAME); default: folder or tar.",
    ),
]
CheckpointSizeOpt = Annotated[
    str | None,
    typer.Option(
        "--input-size",
        help="224 or 224x288 (HxW). Default: the size a checkpoint was converted at (a "
        "timm model: its pretrained_cfg's).",
    ),
]
BatchSizeOpt = Annotated[
    int, typer.Option("--batch-size", "-b", help="Images per batch per process.")
]
WorkersOpt = Annotated[
    int, typer.Option("--workers", "-j", help="Data loading worker processes per process.")
]
DeviceOpt = Annotated[
    str,
    typer.Option(
        "--device",
        help="auto, cpu, cuda or cuda:N (auto: CUDA when available; under torchrun, "
        "one device per rank).",
    ),
]
