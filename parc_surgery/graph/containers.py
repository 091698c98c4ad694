"""Block containers: the Sequentials / ModuleLists that hold a stage's blocks.

`find_containers` reads the module tree and the per-module stages and writes nothing;
it returns every container (with its children's names) and the subset that are *block
containers*: all children are composite modules (not all containers themselves; a
parameter-free layer such as a flatten may sit between them) of one spatial stage, and
no ancestor is a block container (so `layer3.0.downsample` is not one, `layer3` is).
`enclosing_block` maps any path to (container, index, length) of the block it is in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from torch import nn

__all__ = ["Containers", "enclosing_block", "find_containers", "is_container"]

_NUMBERED = re.compile(r"^([A-Za-z_]*?)(\d+)$")


def is_container(module: nn.Module) -> bool:
    """Sequential, ModuleList, or a stage-like module whose children are b1, b2, ... of one class.

    The last form covers timm's RegStage (regnet) and similar numbered stages.
    """
    if isinstance(module, (nn.Sequential, nn.ModuleList)):
        return True
    children = list(module.named_children())
    if not children:
        return False
    prefixes = set()
    for name, _ in children:
        found = _NUMBERED.match(name)
        if found is None:
            return False
        prefixes.add(found.group(1))
    return len(prefixes) == 1 and len({type(c) for _, c in children}) == 1


@dataclass
class Containers:
    """All containers, and the block containers with their stage."""

    children: dict[str, list[str]]  # container path -> child names, in order
    block: dict[str, int]  # block container path -> stage of its blocks


def _join(parent: str, child: str) -> str:
    return f"{parent}.{child}" if parent else child


def _is_block_or_reshape(module: nn.Module) -> bool:
    """A composite module, or a layer without parameters (EfficientFormer's Flat between
    its blocks); a leaf with weights (a stem's conv or norm) is neither."""
    has_children = next(module.children(), None) is not None
    return has_children or next(module.parameters(), None) is None


def find_containers(model: nn.Module, stage_of: dict[str, int | None]) -> Containers:
    """Find containers; a block container's ran children all share one non-None stage."""
    children: dict[str, list[str]] = {}
    for path, module in model.named_modules():
        if is_container(module):
            children[path] = [name for name, _ in module.named_children()]
    modules = dict(model.named_modules())
    block: dict[str, int] = {}
    for path, names in children.items():
        if any(b == "" or path.startswith(b + ".") for b in block):
            continue  # nested inside a block of an outer block container
        kids = [modules[_join(path, n)] for n in names]
        composite = [k for k in kids if next(k.children(), None) is not None]
        if not composite or not all(_is_block_or_reshape(k) for k in kids):
            continue  # plain layers (a stem's conv + norm) are not blocks
        if all(is_container(k) for k in kids):
            continue  # a stack of stacks: the blocks are one level down
        stages = {stage_of.get(_join(path, n)) for n in names} - {None}
        ran = [n for n in names if _join(path, n) in stage_of]
        if ran and len(stages) == 1 and all(stage_of[_join(path, n)] is not None for n in ran):
            block[path] = stages.pop()
    return Containers(children, block)


def enclosing_block(path: str, containers: Containers) -> tuple[str, int, int] | None:
    """(container, index, length) of the block that holds `path` (or is `path`).

    A block container wins over nearer plain containers (an op in `layer3.0.downsample`
    belongs to block 0 of `layer3`); without one, the nearest container is used.
    """
    parts = path.split(".")
    nearest = None
    for cut in range(len(parts) - 1, -1, -1):
        parent, child = ".".join(parts[:cut]), parts[cut]
        names = containers.children.get(parent)
        if names is None or child not in names:
            continue
        found = (parent, names.index(child), len(names))
        if parent in containers.block:
            return found
        if nearest is None:
            nearest = found
    return nearest
