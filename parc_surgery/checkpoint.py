"""Checkpoints: safetensors weights plus the recipe that rebuilds the architecture.

save() writes atomically (a temporary file in the target directory, then a rename), so a
failure never leaves a partial file. load() rebuilds the model from the recipe with
timm.create_model(pretrained=False) and the same surgery, then loads weights strictly.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from parc_surgery import __version__
from parc_surgery.errors import CheckpointError, OutputError, WeightsError
from parc_surgery.plan import Plan

__all__ = [
    "CHECKPOINT_FORMAT",
    "atomic_write",
    "check_output",
    "file_sha256",
    "load",
    "load_source_weights",
    "read_recipe",
    "save",
]

CHECKPOINT_FORMAT = "parc-surgery/1"


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_output(path: str | os.PathLike, *, force: bool = False) -> Path:
    """Fail early (OutputError) if `path` exists without force or cannot be written."""
    target = Path(path)
    if target.is_dir():
        raise OutputError(f"{target} is a directory", hint="give a file path to --output")
    if target.exists() and not force:
        raise OutputError(
            f"{target} already exists", hint="pass --force to overwrite it, or choose --output"
        )
    directory = target.parent
    if not directory.is_dir():
        raise OutputError(
            f"cannot write {target}: directory {directory} does not exist",
            hint="create it first or choose another --output",
        )
    if not os.access(directory, os.W_OK | os.X_OK):
        raise OutputError(
            f"cannot write {target}: directory {directory} is not writable",
            hint="check its permissions or choose another --output",
        )
    return target


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, *, force: bool = False):
    """Yield a temporary path beside `path`; rename it over `path` only on success."""
    target = check_output(path, force=force)
    directory = target.parent
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    except OSError as err:
        raise OutputError(
            f"cannot write to {directory}: {err.strerror}",
            hint="check the directory's permissions or choose another --output",
        ) from None
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        yield tmp_name
        # After the writer: mkstemp's 0600 (which some writers recreate the file with)
        # would surprise the user; give the file the mode an ordinary open() would.
        os.chmod(tmp_name, 0o666 & ~umask)
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def save(
    model: nn.Module,
    plan: Plan,
    path: str | os.PathLike,
    *,
    force: bool = False,
    source_weights_sha256: str | None = None,
    seed: int | None = 0,
    training: dict[str, Any] | None = None,
) -> str:
    """Write the converted model and its recipe; returns the file's sha256.

    `training` (from `parc-surgery finetune`) is stored as the recipe's training record.
    """
    from safetensors.torch import save_file

    recipe = {
        "format": CHECKPOINT_FORMAT,
        "parc_surgery_version": __version__,
        "timm_version": _timm_version(),
        "plan": plan.to_dict(),
        "source_weights_sha256": source_weights_sha256,
        "seed": seed,
    }
    if training is not None:
        recipe["training"] = training
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    metadata = {"format": CHECKPOINT_FORMAT, "recipe": json.dumps(recipe)}
    with atomic_write(path, force=force) as tmp:
        try:
            save_file(tensors, tmp, metadata=metadata)
        except OSError as err:
            raise OutputError(f"writing {path} failed: {err.strerror or err}") from None
    return file_sha256(path)


def read_recipe(path: str | os.PathLike) -> dict[str, Any]:
    """The recipe stored in a parc-surgery checkpoint (CheckpointError if there is none)."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist or is not a file")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(
            f"{path} is not a readable safetensors file ({err})",
            hint="it may be truncated or corrupt: write it again with parc-convert",
        ) from None
    if metadata.get("format") != CHECKPOINT_FORMAT or "recipe" not in metadata:
        raise CheckpointError(
            f"{path} is a safetensors file but not a parc-surgery checkpoint "
            "(no parc-surgery recipe in its metadata)",
            hint="load it with safetensors directly, or convert a model with parc-convert",
        )
    try:
        return json.loads(metadata["recipe"])
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: its recipe is not valid JSON ({err})") from None


def load(path: str | os.PathLike, *, map_location: str = "cpu", compile: bool = False) -> nn.Module:
    """Rebuild a converted model from a parc-surgery checkpoint and load its weights.

    `compile=True` returns it wrapped by `parc_surgery.ops.compile_model` (torch.compile,
    inductor, weights frozen in inference; compiles on the first call).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from parc_surgery.apply import apply_plan
    from parc_surgery.models import create_model

    recipe = read_recipe(path)
    try:
        plan = Plan.from_dict(recipe["plan"])
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: its recipe is incomplete ({err})") from None
    model = create_model(plan.model, plan.model_args)
    apply_plan(model, plan, seed=None)
    try:
        state = load_file(str(path), device=map_location)
    except (SafetensorError, OSError) as err:
        raise CheckpointError(
            f"{path}: the weights cannot be read ({err})",
            hint="the file may be truncated: write it again with parc-convert",
        ) from None
    _load_strict(model, state, source=str(path), error=CheckpointError)
    if compile:
        from parc_surgery.ops import compile_model

        return compile_model(model)
    return model


def load_source_weights(model: nn.Module, path: str | os.PathLike) -> str:
    """Load a local state_dict into the unconverted model strictly; returns its sha256.

    Accepts safetensors, or a torch file holding a state_dict directly or under
    "state_dict" / "model" (a "module." prefix from DataParallel is removed).
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist", hint="check the --weights path")
    state = _read_state_dict(path)
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    _load_strict(model, state, source=str(path), error=WeightsError)
    return file_sha256(path)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as err:
            raise WeightsError(f"{path} is not a readable safetensors file ({err})") from None
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a bad file
        raise WeightsError(
            f"{path} could not be read as a torch or safetensors weights file "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})",
            hint="give a safetensors file or a torch file holding a state_dict",
        ) from None
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(
            f"{path} holds no state_dict (expected a dict of tensors, directly or under "
            "'state_dict' or 'model')"
        )
    return obj


def _load_strict(model: nn.Module, state: dict, *, source: str, error: type) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(
        k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape)
    )
    if missing or unexpected or mismatched:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected)):
            if keys:
                parts.append(f"{len(keys)} {label} keys ({_preview(keys)})")
        if mismatched:
            shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in mismatched]
            parts.append(f"{len(mismatched)} with other shapes ({_preview(shapes)})")
        raise error(
            f"{source} does not match the model: {'; '.join(parts)}",
            hint="check that the file belongs to this model, its --model-arg values and rules",
        )
    model.load_state_dict(state, strict=True)


def _preview(items: list[str], limit: int = 4) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... {len(items) - limit} more" if len(items) > limit else "")


def _timm_version() -> str:
    import timm

    return timm.__version__
