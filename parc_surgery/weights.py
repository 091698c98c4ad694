"""Weights files: a local state_dict (--weights) and the strict, explained weight load.

`load_source_weights` reads a safetensors or torch file (torch with `weights_only=True`:
no pickled code runs) and loads it into the unconverted model. `compare_shapes` and
`load_strict` say which keys are missing, unexpected or of another shape; checkpoint.py
uses them for its own checks. Nothing here writes a file.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from parc_surgery.errors import WeightsError
from parc_surgery.files import note_inputs

__all__ = [
    "check_zip_size",
    "compare_shapes",
    "file_sha256",
    "load_source_weights",
    "load_strict",
    "torch_load",
]

# torch.save stores its tensors uncompressed, so a genuine file unpacks to about its own size;
# a deflated "zip bomb" of a few MB asks torch.load for gigabytes before any key is checked.
_ZIP_SLACK_BYTES = 1 << 20
_ZIP_RATIO = 1.5


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_source_weights(model: nn.Module, path: str | os.PathLike) -> str:
    """Load a local state_dict into the unconverted model strictly; returns its sha256.

    Accepts safetensors, or a torch file holding a state_dict directly or under
    "state_dict" / "model" (a "module." prefix from DataParallel is removed).
    """
    path = Path(path)
    if path.is_dir():
        raise WeightsError(f"weights file {path} is a directory", hint="give the file inside it")
    if not path.is_file():
        what = "is not a regular file" if path.exists() else "does not exist"
        raise WeightsError(f"weights file {path} {what}", hint="check the --weights path")
    note_inputs(path)
    state = _read_state_dict(path)
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    load_strict(model, state, source=str(path), error=WeightsError)
    return file_sha256(path)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as err:  # SafetensorError, OSError, and whatever a corrupt file gives
            detail = " ".join(str(err).split())[:200]
            raise WeightsError(
                f"{path} is not a readable safetensors file ({detail})",
                hint="it may be truncated or corrupt: download or export it again",
            ) from None
    obj = torch_load(path)
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


def check_zip_size(path: str | os.PathLike, *, error: type = WeightsError) -> None:
    """`error` (exit 6) if the torch zip file at `path` unpacks to more than it can hold.

    The sizes come from the zip central directory (nothing is decompressed); a file that is
    not a zip (the legacy torch format) passes unchanged.
    """
    try:
        if not zipfile.is_zipfile(path):
            return
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
    except (OSError, zipfile.BadZipFile, ValueError):
        return  # torch.load reports the damage itself
    size = os.path.getsize(path)
    unpacked = sum(max(entry.file_size, 0) for entry in entries)
    limit = int(size * _ZIP_RATIO) + _ZIP_SLACK_BYTES
    if unpacked > limit:
        raise error(
            f"{os.fspath(path)} is a {size}-byte torch file whose zip directory says it unpacks "
            f"to {unpacked} bytes (more than {limit}): refused before loading, as a zip bomb",
            hint="torch.save writes tensors uncompressed: save the state_dict again with "
            "torch.save, or as safetensors",
        )


def torch_load(path: str | os.PathLike, *, error: type = WeightsError) -> object:
    """torch.load with weights_only=True, after check_zip_size; `error` for a bad file."""
    check_zip_size(path, error=error)
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a bad file
        lines = str(err).strip().splitlines() or [""]
        raise error(
            f"{os.fspath(path)} could not be read as a torch or safetensors weights file "
            f"({type(err).__name__}: {lines[0][:200]})",
            hint="give a safetensors file or a torch file holding a state_dict",
        ) from None


def compare_shapes(
    own: Mapping[str, tuple[int, ...]],
    given: Mapping[str, tuple[int, ...]],
    *,
    source: str,
    error: type,
) -> None:
    """`error` listing missing, unexpected and reshaped keys of `given` against `own`."""
    missing = sorted(set(own) - set(given))
    unexpected = sorted(set(given) - set(own))
    mismatched = sorted(k for k in set(own) & set(given) if tuple(own[k]) != tuple(given[k]))
    if missing or unexpected or mismatched:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected)):
            if keys:
                parts.append(f"{len(keys)} {label} keys ({_preview(keys)})")
        if mismatched:
            shapes = [f"{k} {tuple(given[k])} vs {tuple(own[k])}" for k in mismatched]
            parts.append(f"{len(mismatched)} with other shapes ({_preview(shapes)})")
        raise error(
            f"{source} does not match the model: {'; '.join(parts)}",
            hint="check that the file belongs to this model, its --model-arg values and rules",
        )


def load_strict(model: nn.Module, state: dict, *, source: str, error: type) -> None:
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    compare_shapes(own, {k: tuple(v.shape) for k, v in state.items()}, source=source, error=error)
    model.load_state_dict(state, strict=True)


def _preview(items: list[str], limit: int = 4) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... {len(items) - limit} more" if len(items) > limit else "")
