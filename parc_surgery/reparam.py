"""timm's reparameterize_model on a converted model: a ParC has nothing to fold.

timm fuses re-parameterisable blocks (MobileOne, FastViT's RepMixer, RepGhost, RepVGG...)
by calling their `reparameterize()` / `switch_to_deploy()`, which read the conv and
BatchNorm of every branch and fold them into one conv. A branch whose conv became a ParC
pair cannot be folded into a local kernel, and those methods fail on it (AttributeError,
AssertionError). `keep_unfused(model, paths)` marks every such block above a swapped
module so that its method does nothing: the block keeps its branches (and computes the
same function), while every block without a ParC still fuses. apply_plan calls it, so a
model loaded from a checkpoint is marked too.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

__all__ = ["KEPT_UNFUSED", "REPARAM_METHODS", "keep_unfused"]

# The in-place re-parameterisation methods timm's reparameterize_model calls. (`fuse()`,
# which returns a new module, is left alone: no timm block with one holds a ParC.)
REPARAM_METHODS = ("reparameterize", "switch_to_deploy")


class _KeptUnfused:
    """Stands in for the re-parameterisation method of a block that holds a ParC."""

    def __call__(self) -> None:
        return None

    def __repr__(self) -> str:
        return "KEPT_UNFUSED"

    def __reduce__(self) -> str:  # pickled and deep-copied as the one module-level object
        return "KEPT_UNFUSED"


KEPT_UNFUSED = _KeptUnfused()


def keep_unfused(model: nn.Module, paths: Iterable[str]) -> list[str]:
    """Mark the re-parameterisable ancestors of the modules at `paths`; returns them."""
    marked = []
    for path in paths:
        parts = path.split(".")
        for depth in range(1, len(parts)):
            prefix = ".".join(parts[:depth])
            module = model.get_submodule(prefix)
            methods = [m for m in REPARAM_METHODS if callable(getattr(module, m, None))]
            for name in methods:
                object.__setattr__(module, name, KEPT_UNFUSED)
            if methods and prefix not in marked:
                marked.append(prefix)
    return marked
