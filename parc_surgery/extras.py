"""Optional extras: what each needs, and one clear error when it is not installed.

`parc-surgery[analysis]` brings matplotlib (erf's PNG, and the CAM library of `cam`);
`parc-surgery[onnx]` brings onnx and onnxruntime (`export`, `--export-onnx`). A command
that needs one calls `require_extra` before any slow work, so a plain install fails at
once with the pip command to run (exit 2), not with an ImportError halfway.
"""

from __future__ import annotations

import importlib.util

from parc_surgery.errors import UsageError

__all__ = ["EXTRAS", "MissingExtraError", "require_extra"]

# The import names each extra provides (pyproject.toml's [project.optional-dependencies]).
EXTRAS: dict[str, tuple[str, ...]] = {
    "analysis": ("matplotlib",),
    "onnx": ("onnx", "onnxruntime"),
}


class MissingExtraError(UsageError):
    """A feature needs an optional extra that is not installed."""


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing, or a broken entry
        return False


def require_extra(extra: str, *modules: str) -> None:
    """Raise MissingExtraError unless every module (default: the extra's) can be imported."""
    missing = [m for m in modules or EXTRAS[extra] if not _installed(m)]
    if missing:
        raise MissingExtraError(
            f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not installed; "
            f"this needs the parc-surgery[{extra}] extra",
            hint=f"install it with: pip install 'parc-surgery[{extra}]'",
        )
