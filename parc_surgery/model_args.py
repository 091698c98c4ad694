"""Which keyword arguments may reach `timm.create_model`: one policy for the CLI, jobs and recipes.

A jobs file or a checkpoint's recipe comes from someone else, and timm.create_model does
more than build an architecture with some of its keywords: `checkpoint_path` loads any file,
`pretrained_cfg` / `pretrained_cfg_overlay` (a `file`, `url` or `hf_hub_id` inside) and
`cache_dir` load or download weights, `pruned` reads a pruning file, `model_cfg` and
`pretrained_model_args` replace the architecture's own configuration.

Denylist, not allowlist: the keywords that reach files or the network are all consumed by
timm's factory and builder (`create_model`, `build_model_with_cfg`), a small closed set
that tests compare with timm's signatures, while the keywords a model's constructor takes
(`dims`, `depths`, `layers`, `channel_multiplier`, `drop_path_rate`, `act_layer`...) are
open-ended, differ per model and only shape the architecture; an allowlist would refuse
most of them. Values are restricted too: plain numbers, booleans, short names (an
activation or norm layer such as "gelu"), and lists or small mappings of those; no paths,
URLs or long strings. The size of what the arguments build is bounded elsewhere: by the
tensors actually present when a checkpoint is loaded (checkpoint.py).
"""

from __future__ import annotations

import math
import re
from typing import Any

from parc_surgery.errors import UsageError

__all__ = ["FORBIDDEN_MODEL_ARGS", "check_model_args"]

# timm's factory/builder keywords that load files, reach the network or replace the config.
FORBIDDEN_MODEL_ARGS = frozenset(
    {
        "pretrained",
        "pretrained_cfg",
        "pretrained_cfg_overlay",
        "pretrained_strict",
        "pretrained_filter_fn",
        "pretrained_model_args",
        "checkpoint_path",
        "cache_dir",
        "model_cfg",
        "kwargs_filter",
        "pruned",
    }
)
# ...and any keyword that by its name points at a file, a folder, a URL or the hub: one with
# a word below (`pretrained_window_sizes`, `hub_id`) or ending in one of `_ENDINGS`
# (`weights_path`, `config_file`, `ckpt_url`; `drop_path_rate` stays allowed).
# "weights": torchvision's builders download them (`weights="DEFAULT"`, `weights_backbone`).
_WORDS = frozenset(
    {"pretrained", "checkpoint", "ckpt", "cache", "hub", "download", "url", "weights"}
)
_ENDINGS = frozenset({"path", "paths", "file", "files", "filename", "dir", "folder", "uri"})
_NAME = re.compile(r"^[A-Za-z0-9_.+-]{1,64}$")
_MAX_KEYS = 32
_MAX_ITEMS = 64
_MAX_DEPTH = 3
_MAX_INT = 1 << 20
_MAX_FLOAT = 1e6


def _refuse(where: str, key: str, why: str) -> UsageError:
    return UsageError(
        f"{where} {key}: {why}",
        hint="model arguments may only shape the architecture (numbers, booleans, short "
        "names and lists of them); load weights with --weights, not through timm",
    )


def _check_key(where: str, key: Any) -> str:
    if not isinstance(key, str) or not key.isidentifier():
        raise _refuse(where, repr(key)[:40], "a model argument's name must be an identifier")
    words = key.lower().split("_")
    if key in FORBIDDEN_MODEL_ARGS or _WORDS & set(words) or words[-1] in _ENDINGS:
        raise _refuse(where, key, "not allowed: it can make timm load a file or reach the network")
    return key


def _check_value(where: str, key: str, value: Any, depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise _refuse(where, key, f"nested deeper than {_MAX_DEPTH} levels")
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        if abs(value) > _MAX_INT:
            raise _refuse(where, key, f"{value} is out of range (at most {_MAX_INT} in size)")
        return
    if isinstance(value, float):
        if not math.isfinite(value) or abs(value) > _MAX_FLOAT:
            raise _refuse(where, key, f"{value} is out of range (a finite number up to 1e6)")
        return
    if isinstance(value, str):
        if not _NAME.match(value):
            shown = repr(value[:40]) + ("..." if len(value) > 40 else "")
            raise _refuse(
                where,
                key,
                f"string {shown} is not a short name (letters, digits, '_', '.', '+', '-'; "
                "no paths or URLs)",
            )
        return
    if isinstance(value, (list, tuple)):
        if len(value) > _MAX_ITEMS:
            raise _refuse(where, key, f"a list of {len(value)} items (at most {_MAX_ITEMS})")
        for item in value:
            _check_value(where, key, item, depth + 1)
        return
    if isinstance(value, dict):
        if len(value) > _MAX_KEYS:
            raise _refuse(where, key, f"a mapping of {len(value)} keys (at most {_MAX_KEYS})")
        for inner_key, item in value.items():
            _check_value(where, f"{key}.{_check_key(where, inner_key)}", item, depth + 1)
        return
    raise _refuse(where, key, f"a {type(value).__name__} is not a plain value")


def check_model_args(model_args: Any, *, where: str = "model argument") -> dict[str, Any]:
    """`model_args` if every key and value passes the policy above; UsageError (exit 2) if not."""
    if model_args is None:
        return {}
    if not isinstance(model_args, dict):
        raise UsageError(f"{where}s must be a mapping of names to values")
    if len(model_args) > _MAX_KEYS:
        raise UsageError(f"{len(model_args)} {where}s: at most {_MAX_KEYS} are accepted")
    for key, value in model_args.items():
        _check_value(where, _check_key(where, key), value, 1)
    return dict(model_args)
