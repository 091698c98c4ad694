"""save-pretrained: a checkpoint as a Hugging Face hub folder, and reading one back.

`save_pretrained(CHECKPOINT, DIR)` writes the layout timm's hub models have:

- `model.safetensors`: the checkpoint itself, byte for byte (state_dict, recipe, checksum);
- `config.json`: what timm's `save_for_hf` writes (architecture, num_classes,
  num_features, global_pool, pretrained_cfg with the preprocessing and the input size the
  model was converted at), with architecture `parc_recipe` (parc_surgery.timm_models),
  which rebuilds the model from the recipe, plus an informative `parc_surgery` record;
- `README.md`: a model card (source model, recipe, params, any training / eval numbers).

`timm.create_model("local-dir:DIR", pretrained=True)` loads it after `import
parc_surgery`, and so does `parc_surgery.load(DIR)`, which reads config.json as untrusted
input (`read_config`: JSON of bounded size, a strict schema, no paths, URLs or code) and
then loads model.safetensors with every check of `parc_surgery.load`. Nothing here uses
the network: push a folder with `hf upload USER/NAME DIR`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from parc_surgery import files
from parc_surgery.errors import CheckpointError, OutputError
from parc_surgery.timm_models import PUBLISHED, RECIPE_ARCH, WEIGHTS_NAME

__all__ = ["CONFIG_NAME", "CARD_NAME", "read_config", "save_pretrained", "weights_in"]

CONFIG_NAME = "config.json"
CARD_NAME = "README.md"
MAX_CONFIG_BYTES = 1 << 20
_HINT = "write the folder again with parc-surgery save-pretrained"

# pretrained_cfg keys save-pretrained writes and a folder's config may hold: preprocessing
# and description only, never a weight source (file, url, hub id, state_dict).
_Short = Annotated[str, Field(max_length=256)]
_Numbers = Annotated[list[float], Field(max_length=4)]


class _PretrainedCfg(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False)

    input_size: Annotated[list[int], Field(min_length=3, max_length=3)]
    num_classes: int | None = Field(None, ge=0, le=1 << 20)
    mean: _Numbers | None = None
    std: _Numbers | None = None
    interpolation: Annotated[str, Field(pattern=r"^[a-z]{0,16}$")] | None = None
    crop_pct: float | None = Field(None, gt=0, le=4)
    crop_mode: Annotated[str, Field(pattern=r"^[a-z_]{0,16}$")] | None = None
    fixed_input_size: bool | None = None
    first_conv: Annotated[str, Field(max_length=256, pattern=r"^[\w.]*$")] | None = None
    classifier: Annotated[str, Field(max_length=256, pattern=r"^[\w.]*$")] | None = None
    license: _Short | None = None
    description: _Short | None = None
    paper_ids: _Short | None = None
    paper_name: _Short | None = None
    origin_url: _Short | None = None
    custom_load: bool | None = None


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False)

    architecture: Annotated[str, Field(max_length=64, pattern=r"^[a-z0-9_]+$")]
    num_classes: int = Field(ge=0, le=1 << 20)
    num_features: int | None = Field(None, ge=0, le=1 << 20)
    global_pool: Annotated[str, Field(max_length=32, pattern=r"^[a-z0-9_]*$")] | None = None
    model_args: dict[str, Any] = Field(default_factory=dict, max_length=0)
    pretrained_cfg: _PretrainedCfg
    parc_surgery: dict[str, Any] | None = None  # informative: not read to build anything


def read_config(folder: str | os.PathLike) -> dict[str, Any]:
    """The validated config.json of a save-pretrained folder (CheckpointError, exit 6)."""
    path = Path(folder) / CONFIG_NAME
    shown = os.fspath(path)
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise CheckpointError(
            f"{folder} is a directory without {CONFIG_NAME}: neither a checkpoint nor a "
            "save-pretrained folder",
            hint="give the checkpoint file, or a folder written by parc-surgery save-pretrained",
        ) from None
    except OSError as err:
        raise CheckpointError(f"cannot read {shown}: {err.strerror}", hint=_HINT) from None
    if len(data) > MAX_CONFIG_BYTES:
        raise CheckpointError(f"{shown} is over {MAX_CONFIG_BYTES} bytes", hint=_HINT)
    try:
        config = _Config.model_validate_json(data)
    except ValidationError as err:
        first = err.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "the file"
        message = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
        raise CheckpointError(f"{shown} is invalid: {where}: {message}", hint=_HINT) from None
    if config.architecture not in (RECIPE_ARCH, *PUBLISHED):
        raise CheckpointError(
            f"{shown} names architecture {config.architecture!r}, not a parc-surgery model",
            hint=f"a save-pretrained folder's architecture is {RECIPE_ARCH}",
        )
    return config.model_dump(exclude_none=True)


def weights_in(folder: str | os.PathLike) -> str:
    """The checkpoint inside a save-pretrained folder, after its config.json is checked."""
    read_config(folder)
    return os.path.join(os.fspath(folder), WEIGHTS_NAME)


def _pretrained_cfg(model) -> dict[str, Any]:
    allowed = set(_PretrainedCfg.model_fields)
    cfg = {k: v for k, v in dict(getattr(model, "pretrained_cfg", {}) or {}).items()}
    cfg = {k: v for k, v in cfg.items() if k in allowed and v is not None}
    cfg["num_classes"] = int(getattr(model, "num_classes", cfg.get("num_classes", 0)) or 0)
    cfg["custom_load"] = False
    return cfg


def _config(model, recipe: dict[str, Any], plan) -> dict[str, Any]:
    from parc_surgery.models import input_channels

    cfg = _pretrained_cfg(model)
    cfg["input_size"] = [input_channels(model), *plan.input_size]
    config: dict[str, Any] = {
        "architecture": RECIPE_ARCH,
        "num_classes": cfg["num_classes"],
        "num_features": int(getattr(model, "num_features", 0) or 0),
    }
    pool = getattr(getattr(model, "global_pool", None), "pool_type", None)
    if isinstance(pool, str) and pool:
        config["global_pool"] = pool
    config["pretrained_cfg"] = cfg
    config["parc_surgery"] = {
        "format": recipe["format"],
        "version": recipe["parc_surgery_version"],
        "timm_version": recipe["timm_version"],
        "model": plan.model,
        "model_args": plan.model_args,
        "rules_source": plan.rules_source,
        "stages": list(plan.stages),
        "input_size": list(plan.input_size),
        "swaps": [s.path for s in plan.swaps],
    }
    return config


def _metric_rows(training: Any) -> list[tuple[str, dict[str, float]]]:
    """(stage, {top1, top5, loss}) of a training record's metrics; numbers only."""
    metrics = training.get("metrics") if isinstance(training, dict) else None
    if not isinstance(metrics, dict):
        return []
    rows = []
    for stage in ("original", "before", "after_warmstart", "after_finetune"):
        values = metrics.get(stage)
        if isinstance(values, dict):
            numbers = {
                k: float(values[k])
                for k in ("top1", "top5", "loss")
                if isinstance(values.get(k), (int, float)) and not isinstance(values[k], bool)
            }
            if numbers:
                rows.append((stage, numbers))
    return rows


def _card(model, recipe: dict[str, Any], plan, checkpoint: str) -> str:
    from parc_surgery.report import human_count

    params = sum(p.numel() for p in model.parameters())
    stages = ", ".join(map(str, plan.stages)) or "-"
    args = json.dumps(plan.model_args) if plan.model_args else "none"
    size = "x".join(map(str, plan.input_size))
    lines = [
        "---",
        "library_name: timm",
        "license: apache-2.0",
        "tags:",
        "- image-classification",
        "- timm",
        "- parc-surgery",
        "---",
        f"# {plan.model} converted to ParC",
        "",
        f"`{plan.model}` (model arguments: `{args}`) with its spatial mixing swapped for ParC "
        f"(position-aware circular convolution) by parc-surgery {recipe['parc_surgery_version']}"
        f" (timm {recipe['timm_version']}), converted at {size}: {human_count(params)} "
        f"parameters ({params:,}).",
        "",
        "## Recipe",
        "",
        f"- rules: `{plan.rules_source}`; stages: {stages}; seed: {recipe.get('seed')}",
        f"- source weights sha256: `{recipe.get('source_weights_sha256') or 'none (random)'}`",
        "",
        "| module | replacement | feature size | params before -> after |",
        "|---|---|---|---|",
    ]
    for s in plan.swaps:
        fs = "x".join(map(str, s.feature_size))
        lines.append(
            f"| `{s.path}` | {s.replacement} | {fs} | "
            f"{human_count(s.params_before)} -> {human_count(s.params_after)} |"
        )
    rows = _metric_rows(recipe.get("training"))
    lines += ["", "## Training and evaluation", ""]
    if rows:
        lines += ["| stage | top-1 | top-5 | loss |", "|---|---|---|---|"]
        for stage, numbers in rows:
            cells = [
                f"{numbers[k]:.2f}%" if k in numbers and k != "loss" else f"{numbers.get(k, 0):.4f}"
                for k in ("top1", "top5", "loss")
            ]
            lines.append(f"| {stage} | " + " | ".join(cells) + " |")
        lines += ["", "Numbers from the checkpoint's training record (parc-surgery finetune)."]
    else:
        lines.append(
            "None recorded: this checkpoint was not fine-tuned after conversion, so it "
            "computes a new, untrained function (recover it with `parc-surgery finetune`)."
        )
    lines += [
        "",
        "## Use",
        "",
        "```python",
        "import parc_surgery, timm  # importing parc_surgery registers its timm models",
        'model = timm.create_model("local-dir:THIS_FOLDER", pretrained=True)',
        'model = parc_surgery.load("THIS_FOLDER")  # the same model, checked the same way',
        "```",
        "",
        f"Written from `{os.path.basename(checkpoint)}` by `parc-surgery save-pretrained`.",
        "",
    ]
    return "\n".join(lines)


def save_pretrained(
    checkpoint: str | os.PathLike, folder: str | os.PathLike, *, force: bool = False
) -> dict[str, Any]:
    """Write CHECKPOINT as a hub folder (model.safetensors, config.json, README.md).

    The checkpoint is loaded with every check first; each file is written atomically and
    an existing one replaced only with `force`; if one fails, those written by this call
    are removed. Returns a summary (`output`, `files`, `model`, `params`).
    """
    from parc_surgery.checkpoint import load, read_header, read_recipe
    from parc_surgery.plan import Plan

    checkpoint = os.fspath(checkpoint)
    model = load(checkpoint)
    recipe = read_recipe(checkpoint)
    plan = Plan.from_dict(recipe["plan"])
    read_header(checkpoint)
    with open(checkpoint, "rb") as handle:
        weights = handle.read()
    target = Path(folder)
    if target.exists() and not target.is_dir():
        raise OutputError(
            f"{folder} exists and is not a folder", hint="give a folder for the hub layout"
        )
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise files.os_error(folder, err, doing="create") from None
    config = json.dumps(_config(model, recipe, plan), indent=2) + "\n"
    outputs = {
        WEIGHTS_NAME: weights,
        CONFIG_NAME: config.encode(),
        CARD_NAME: _card(model, recipe, plan, checkpoint).encode(),
    }
    for name in outputs:
        files.check_output(target / name, force=force, inputs=[checkpoint])
    written: list[Path] = []
    try:
        for name, data in outputs.items():
            files.write_bytes(target / name, data, force=force, inputs=[checkpoint])
            written.append(target / name)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return {
        "output": os.fspath(target),
        "files": list(outputs),
        "model": plan.model,
        "params": sum(p.numel() for p in model.parameters()),
    }
