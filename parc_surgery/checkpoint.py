"""Checkpoints: safetensors weights plus the recipe that rebuilds the architecture.

save() writes the state_dict, the recipe and a sha256 of the tensors (metadata
`tensors_sha256`) through files.write_bytes: atomic, never over another file without
force, never over an input. load() trusts nothing in the file before it is checked:

1. the header: a regular file, a header of sane size inside the file (a truncated file
   fails here), a parc-surgery format;
2. the recipe, validated by a strict schema (recipe.py) before anything is built;
3. the architecture the recipe describes, built on the meta device (no memory, and
   under a budget of modules and parameters derived from the file), whose state_dict
   keys and shapes must equal the tensors the header lists;
4. the tensors, whose sha256 must equal the one stored at save (a flipped byte fails);
5. only then the real model: built by its timm or torchvision name with random weights
   (or the unconverted base model the caller passes as `model=`, checked against the
   recipe), the same surgery, and a strict weight load.

Any mismatch is a CheckpointError (exit 6) saying what. A 0.1 checkpoint has no
checksum: it loads with a warning.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import struct
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from parc_surgery import __version__, files
from parc_surgery.errors import (
    CheckpointError,
    ParcSurgeryError,
    ParcSurgeryWarning,
)
from parc_surgery.plan import Plan
from parc_surgery.recipe import CHECKPOINT_FORMAT, validate_recipe
from parc_surgery.weights import (
    _preview,
    compare_shapes,
    file_sha256,
    load_source_weights,
    load_strict,
)

__all__ = [
    "CHECKPOINT_FORMAT",
    "TENSORS_SHA256_KEY",
    "Header",
    "atomic_write",
    "check_output",
    "file_sha256",
    "load",
    "load_source_weights",
    "read_header",
    "read_recipe",
    "save",
    "tensors_sha256",
]

TENSORS_SHA256_KEY = "tensors_sha256"
MAX_HEADER_BYTES = 64 << 20  # a timm model's header is well under 1 MiB
_HINT_CORRUPT = "the file is corrupt, truncated or was edited: write it again with parc-convert"


def check_output(
    path: str | os.PathLike, *, force: bool = False, inputs: Iterable[Any] = ()
) -> Path:
    """files.check_output: fail early (exit 7) if `path` may not be written."""
    return files.check_output(path, force=force, inputs=inputs)


def atomic_write(path: str | os.PathLike, *, force: bool = False):
    """files.atomic_output under its 0.1 name: a temporary path, committed on success."""
    return files.atomic_output(path, force=force)


def tensors_sha256(tensors: Mapping[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in name order.

    Independent of the file layout, so save() computes it from the model's tensors and
    load() from the tensors read back.
    """
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach()
        digest.update(json.dumps([name, str(tensor.dtype), list(tensor.shape)]).encode())
        data = tensor.cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
        digest.update(memoryview(data))
    return digest.hexdigest()


def save(
    model: nn.Module,
    plan: Plan,
    path: str | os.PathLike,
    *,
    force: bool = False,
    source_weights_sha256: str | None = None,
    seed: int | None = 0,
    training: dict[str, Any] | None = None,
    inputs: Iterable[Any] = (),
) -> str:
    """Write the converted model and its recipe; returns the file's sha256.

    `training` (from `parc-surgery finetune`) is stored as the recipe's training record;
    `inputs` are files the caller read (the source weights): never overwritten.
    """
    from safetensors.torch import save as serialise

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
    metadata = {
        "format": CHECKPOINT_FORMAT,
        "recipe": json.dumps(recipe),
        TENSORS_SHA256_KEY: tensors_sha256(tensors),
    }
    data = serialise(tensors, metadata=metadata)
    files.write_bytes(path, data, force=force, inputs=inputs)
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Header:
    """What a safetensors file says about itself, read without loading a tensor."""

    path: str
    metadata: dict[str, str]
    shapes: dict[str, tuple[int, ...]]

    @property
    def numel(self) -> int:
        total = 0
        for shape in self.shapes.values():
            count = 1
            for side in shape:
                count *= side
            total += count
        return total


def read_header(path: str | os.PathLike, *, error: type = CheckpointError) -> Header:
    """The header of a safetensors file; `error` (exit 6) if it is not a sound one."""
    from safetensors import safe_open

    shown = os.fspath(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise error(f"{shown} does not exist", hint="check the path") from None
    except OSError as err:
        raise error(f"cannot read {shown}: {err.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        raise error(f"{shown} is a directory, not a checkpoint", hint="give the file inside it")
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{shown} is not a regular file", hint="give a .safetensors file")
    files.note_inputs(path)
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
    except OSError as err:
        raise error(f"cannot read {shown}: {err.strerror}") from None
    size = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
    if size < 2 or size > MAX_HEADER_BYTES or 8 + size > st.st_size:
        raise error(
            f"{shown} is not a readable safetensors file ({st.st_size} bytes; "
            f"its header length field says {size})",
            hint=_HINT_CORRUPT,
        )
    try:
        with safe_open(shown, framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
            shapes = {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()}  # noqa: SIM118
    except Exception as err:  # safetensors raises SafetensorError, OSError, ValueError...
        raise error(
            f"{shown} is not a readable safetensors file ({' '.join(str(err).split())[:200]})",
            hint=_HINT_CORRUPT,
        ) from None
    return Header(shown, metadata, shapes)


def _recipe_of(header: Header) -> tuple[dict[str, Any], Plan]:
    metadata = header.metadata
    if metadata.get("format") != CHECKPOINT_FORMAT or "recipe" not in metadata:
        raise CheckpointError(
            f"{header.path} is a safetensors file but not a parc-surgery checkpoint "
            "(no parc-surgery recipe in its metadata)",
            hint="load it with safetensors directly, or convert a model with parc-convert",
        )
    return validate_recipe(metadata["recipe"], header.path)


def read_recipe(path: str | os.PathLike) -> dict[str, Any]:
    """The validated recipe of a parc-surgery checkpoint (CheckpointError if there is none)."""
    return _recipe_of(read_header(path))[0]


def load(
    path: str | os.PathLike,
    *,
    model: nn.Module | None = None,
    features_only: bool = False,
    out_indices: tuple[int, ...] | None = None,
    map_location: str = "cpu",
    compile: bool = False,
    fuse: bool = False,
) -> nn.Module:
    """Rebuild a converted model from a parc-surgery checkpoint, checked step by step.

    `path` is a checkpoint file or a folder written by `save-pretrained` (parc_surgery.hub).

    The base model is built from the recipe (timm, or torchvision by name) unless given
    as `model` (needed for a custom nn.Module): it must be the unconverted architecture
    the checkpoint was made from; it is converted in place and returned. With
    `features_only`, returns a feature extractor (`parc_surgery.backbone.features_only`)
    giving the maps at `out_indices`, with `feature_info`. `compile=True` returns the
    model wrapped by `parc_surgery.ops.compile_model` (torch.compile, inductor, weights
    frozen in inference; compiles on the first call). `fuse=True` returns the model in
    eval mode and in its inference form (`parc_surgery.fuse`: BatchNorms folded; no
    training), traced at the recipe's input size.
    """
    if os.path.isdir(path):  # a save-pretrained folder: its config.json is checked first
        from parc_surgery.hub import weights_in

        path = weights_in(path)
    header = read_header(path)
    _, plan = _recipe_of(header)
    if model is None:
        _base_name(plan, header.path)  # a custom model cannot be built: say so first
        _check_architecture(plan, header)
    state = _read_tensors(header, map_location)
    _check_tensors(header, state)
    model = _build(plan, header, device=None, base=model)
    load_strict(model, state, source=header.path, error=CheckpointError)
    if features_only:
        from parc_surgery.backbone import features_only as backbone

        leaf = plan.rules.get("leaf", []) if isinstance(plan.rules, dict) else []
        return backbone(model, out_indices, input_size=plan.input_size, leaf_classes=leaf)
    if fuse:
        from parc_surgery.fusing import fuse as fuse_model

        size = tuple(plan.input_size) if plan.input_size else None
        model = fuse_model(model.eval(), input_size=size)
    if compile:
        from parc_surgery.ops import compile_model

        return compile_model(model)
    return model


def _base_name(plan: Plan, path) -> str:
    """The name the recipe's base model is built by; UsageError for a custom model."""
    from parc_surgery.errors import UsageError

    source = plan.source
    # plan.model is the name it was created by (0.1 recipes have no source); a source
    # without a name (a custom class, a model object) cannot be rebuilt here.
    name = plan.model if source is None or source.model_name is not None else None
    if name is None:
        raise UsageError(
            f"{path} holds a converted {source.kind} model ({source.class_path}) that "
            "parc-surgery cannot build by itself",
            hint=f"build the unconverted {source.class_path.rpartition('.')[2]} in Python "
            "and pass it: parc_surgery.load(path, model=...)",
        )
    return name


def _model_for_recipe(plan: Plan, model: nn.Module | None, path) -> nn.Module:
    """The unconverted base model the recipe's plan applies to: built, or checked."""
    from parc_surgery.errors import UsageError
    from parc_surgery.models import class_path, create_model
    from parc_surgery.ops import ParC

    source = plan.source
    if model is None:
        return create_model(_base_name(plan, path), plan.model_args)
    if any(isinstance(m, ParC) for m in model.modules()):
        raise UsageError(
            f"the model passed to load {path} is already converted",
            hint="pass the unconverted base model: load() applies the recipe to it",
        )
    if source is not None and class_path(model) != source.class_path:
        raise CheckpointError(
            f"{path} was converted from a {source.class_path}, not a {class_path(model)}",
            hint="pass the architecture the checkpoint was made from",
        )
    modules = dict(model.named_modules())
    wrong = [
        f"{s.path} ({type(modules[s.path]).__name__ if s.path in modules else 'missing'}, "
        f"recipe: {s.module_type})"
        for s in plan.swaps
        if s.path not in modules or type(modules[s.path]).__name__ != s.module_type
    ]
    if wrong:
        raise CheckpointError(
            f"the model passed to load {path} does not have the recipe's architecture: "
            f"{_preview(wrong)}",
            hint="build it with the arguments the checkpoint was made with",
        )
    return model


class _Budget:
    """Refuse to build more modules or parameters than a checkpoint's tensors justify.

    Global registration hooks count what the recipe's model registers while it is built;
    crossing the budget raises CheckpointError at once, so a recipe that asks for a
    thousand stages stops after a few thousand modules, not after memory runs out.
    """

    def __init__(self, header: Header):
        self.header = header
        # The unconverted model may be larger than the converted one (ParC has fewer
        # parameters than what it replaces), and modules without tensors exist.
        self.numel_left = 4 * header.numel + 10_000_000
        self.modules_left = 16 * len(header.shapes) + 1000

    def _exceeded(self, what: str) -> CheckpointError:
        return CheckpointError(
            f"{self.header.path}: its recipe builds far more {what} than the "
            f"{len(self.header.shapes)} tensors ({self.header.numel} values) in the file",
            hint=_HINT_CORRUPT,
        )

    def _on_module(self, module, name, submodule):
        self.modules_left -= 1
        if self.modules_left < 0:
            raise self._exceeded("modules")

    def _on_parameter(self, module, name, param):
        if param is not None:
            self.numel_left -= param.numel()
            if self.numel_left < 0:
                raise self._exceeded("parameters")

    @contextlib.contextmanager
    def watching(self) -> Iterator[None]:
        from torch.nn.modules import module as torch_module

        handles = [
            torch_module.register_module_module_registration_hook(self._on_module),
            torch_module.register_module_parameter_registration_hook(self._on_parameter),
            torch_module.register_module_buffer_registration_hook(self._on_parameter),
        ]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()


def _build(
    plan: Plan, header: Header, *, device: str | None, base: nn.Module | None = None
) -> nn.Module:
    """The recipe's model (on `device`, e.g. "meta"), within the header's budget; with
    `base`, the caller's unconverted model, checked against the recipe and converted."""
    from parc_surgery.apply import apply_plan
    from parc_surgery.blocks.registry import get_replacement

    if base is not None:
        base = _model_for_recipe(plan, base, header.path)  # errors of the caller's model
    cant = f"{header.path}: its recipe cannot be rebuilt"
    budget = _Budget(header)
    place = torch.device(device) if device else contextlib.nullcontext()
    try:
        with budget.watching(), place:
            model = base if base is not None else _model_for_recipe(plan, None, header.path)
            for swap in plan.swaps:
                try:
                    model.get_submodule(swap.path)
                    get_replacement(swap.replacement)
                except (AttributeError, KeyError) as err:
                    raise CheckpointError(
                        f"{cant}: {' '.join(str(err).split())[:200]}", hint=_HINT_CORRUPT
                    ) from None
            apply_plan(model, plan, seed=None)
    except CheckpointError:
        raise
    except ParcSurgeryError as err:
        raise CheckpointError(f"{cant}: {err.message}", hint=_HINT_CORRUPT) from None
    return model


def _check_architecture(plan: Plan, header: Header) -> None:
    """The recipe's model, built on the meta device, has exactly the header's tensors."""
    try:
        meta = _build(plan, header, device="meta")
    except ParcSurgeryError:
        raise
    except Exception:
        return  # a module that cannot be built on meta: the real build keeps its budget
    shapes = {k: tuple(v.shape) for k, v in meta.state_dict().items()}
    compare_shapes(shapes, header.shapes, source=header.path, error=CheckpointError)


def _read_tensors(header: Header, map_location: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(header.path, device=map_location)
    except Exception as err:  # SafetensorError, OSError, RuntimeError for a bad device
        raise CheckpointError(
            f"{header.path}: the weights cannot be read ({' '.join(str(err).split())[:200]})",
            hint=_HINT_CORRUPT,
        ) from None


def _check_tensors(header: Header, state: Mapping[str, torch.Tensor]) -> None:
    stored = header.metadata.get(TENSORS_SHA256_KEY)
    if stored is None:
        warnings.warn(
            f"{header.path} has no tensor checksum (written by parc-surgery 0.1): its "
            "weights are loaded without checking them; save it again to add one",
            ParcSurgeryWarning,
            stacklevel=3,
        )
        return
    found = tensors_sha256(state)
    if found != stored:
        raise CheckpointError(
            f"{header.path}: its tensor data does not match the checksum stored when it was "
            f"saved (sha256 {stored[:16]}... stored, {found[:16]}... found): bytes were "
            "changed after it was written",
            hint="the file is corrupt or was edited: fetch it again or convert the model again",
        )


def _timm_version() -> str:
    import timm

    return timm.__version__
