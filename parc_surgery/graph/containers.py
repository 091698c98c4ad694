"""Block containers: the Sequentials / ModuleLists that hold a stage's blocks.

`find_containers` reads the module tree and the per-module stages and writes nothing;
it returns every container (with its children's names) and the subset that are *block
containers*: all children are composite modules (not all containers themselves; a
parameter-free layer such as a flatten may sit between them) of one spatial stage, and
no ancestor is a block container (so `layer3.0.downsample` is not one, `layer3` is).
`enclosing_block` maps any path to (container, index, length) of the block it is in.
A block container's plain layers (a stage that opens with a plain 1x1 conv, a
ConvNormAct or a Sequential(conv, norm) to downsample, beside at least two blocks of
another class) are no block positions: a positional rule counts the stage's blocks only
(`Containers.plain`), and the stage is its blocks' (an opening conv may still run at the
stride before).

A flat Sequential that holds a whole network (torchvision's `mobilenet_v2().features`:
stem, 17 InvertedResiduals, head) has no block container; its blocks are grouped into
*runs* instead: consecutive children of one class, stage and width, named like a slice
(`features[7:11]` holds features.7 .. features.10). A run is what timm makes a
Sequential of its own (mobilenetv2_100's blocks.3), so positional rules select the same
blocks in both.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from torch import nn

__all__ = ["Containers", "container_blocks", "enclosing_block", "find_containers", "is_container"]

_NUMBERED = re.compile(r"^([A-Za-z_]*?)(\d+)$")
_RUN = re.compile(r"^(.*)\[(\d+):(\d+)\]$")


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
    block: dict[str, int]  # block container path (or run name) -> stage of its blocks
    runs: dict[str, tuple[str, int, int]] = field(default_factory=dict)  # block -> its run
    plain: set[str] = field(default_factory=set)  # plain layers in block containers

    def positions(self, container: str) -> list[str]:
        """The child names of `container` that are block positions (no plain layers)."""
        names = self.children.get(container, [])
        return [n for n in names if _join(container, n) not in self.plain]


def _join(parent: str, child: str) -> str:
    return f"{parent}.{child}" if parent else child


def _is_block_or_reshape(module: nn.Module) -> bool:
    """A composite module, or a layer without parameters (EfficientFormer's Flat between
    its blocks); a leaf with weights (a stem's conv or norm) is neither."""
    has_children = next(module.children(), None) is not None
    return has_children or next(module.parameters(), None) is None


def find_containers(
    model: nn.Module,
    stage_of: dict[str, int | None],
    channels_of: dict[str, int] | None = None,
) -> Containers:
    """Find containers; a block container's ran children all share one non-None stage.

    With `channels_of` (output channels per path), a container whose children span
    several stages and that holds no block container is split into runs.
    """
    children: dict[str, list[str]] = {}
    for path, module in model.named_modules():
        if is_container(module):
            children[path] = [name for name, _ in module.named_children()]
    modules = dict(model.named_modules())
    inner = _block_internals(children, modules, stage_of)
    block: dict[str, int] = {}
    for path, names in children.items():
        outer = [b for b in block if b == "" or path.startswith(b + ".")]
        if outer and not _parallel_branch(path, names, block[outer[-1]], stage_of):
            continue  # nested inside a block of an outer block container
        if any(path.startswith(b + ".") for b in inner):
            continue  # a block's own Sequential (torchvision's `block`, Xception's `stack`)
        kids = [modules[_join(path, n)] for n in names]
        composite = [k for k in kids if next(k.children(), None) is not None]
        layers = {n for n, k in zip(names, kids, strict=True) if not _is_block_or_reshape(k)}
        if not composite or (layers and _main_class(kids) is None):
            continue  # plain layers (a stem's conv + norm) are not blocks
        if all(is_container(k) for k in kids):
            continue  # a stack of stacks: the blocks are one level down
        # A stage's own plain layers (a 1x1 conv opening it) may run at the stage
        # before; the stage is its blocks'.
        counted = [n for n in names if n not in layers]
        stages = {stage_of.get(_join(path, n)) for n in counted} - {None}
        ran = [n for n in counted if _join(path, n) in stage_of]
        if ran and len(stages) == 1 and all(stage_of[_join(path, n)] is not None for n in ran):
            block[path] = stages.pop()
    runs: dict[str, tuple[str, int, int]] = {}
    if channels_of is not None:
        for path, names in children.items():
            taken = [*block, *runs]
            if not any(t == "" or _related(path, t) for t in taken):
                runs.update(_runs(path, names, modules, stage_of, channels_of))
        block.update({run: stage_of[member] for member, (run, _, _) in runs.items()})
    plain = {
        p
        for path in block
        if path in children
        for p in _plain_layers(path, children[path], modules)
    }
    return Containers(children, block, runs, plain)


def _main_class(kids: list[nn.Module]) -> type | None:
    """The class of at least two composite children (the blocks), the commonest one;
    beside them a layer with weights (a plain conv or norm opening a stage) is one of the
    stage's plain layers."""
    counts: dict[type, int] = {}
    for kid in kids:
        if next(kid.children(), None) is not None:
            counts[type(kid)] = counts.get(type(kid), 0) + 1
    main, most = max(counts.items(), key=lambda item: item[1], default=(None, 0))
    return main if most >= 2 else None


def _plain_layers(path: str, names: list[str], modules: dict[str, nn.Module]) -> set[str]:
    """Children of a block container beside at least two blocks of one other class that
    are one conv with its norm / activation (a ConvNormAct, a Sequential(conv, norm)) or a
    single layer with weights (a plain 1x1 conv, a norm)."""
    kids = {_join(path, n): modules[_join(path, n)] for n in names}
    main = _main_class(list(kids.values()))
    if main is None:
        return set()
    found = set()
    for child, kid in kids.items():
        if type(kid) is main:
            continue
        if next(kid.children(), None) is None:
            if not _is_block_or_reshape(kid):
                found.add(child)
        elif sum(isinstance(m, nn.Conv2d) for m in kid.modules()) == 1:
            found.add(child)
    return found


def _parallel_branch(
    path: str, names: list[str], outer_stage: int, stage_of: dict[str, int | None]
) -> bool:
    """A container inside a block whose children all run at one other stage: a branch of a
    multi-resolution block (HRNet's `stage3.0.branches.2` at stride 16 inside a module
    that outputs stride 4), so its blocks are that stage's blocks."""
    stages = {stage_of.get(_join(path, n)) for n in names}
    return len(stages) == 1 and None not in stages and stages != {outer_stage}


def _block_internals(
    children: dict[str, list[str]],
    modules: dict[str, nn.Module],
    stage_of: dict[str, int | None],
) -> set[str]:
    """Paths of blocks whose inner containers are not stages.

    A container's composite (non-container) children of one class are blocks when two of
    them run at one stage (torchvision's InvertedResiduals in `features`, Xception's
    middle-flow Blocks); a ConvNeXtStage, one per stage, is not, so its `blocks` stays a
    block container. Every child of such a class is a block, whatever its stage.
    """
    found: set[str] = set()
    for path, names in children.items():
        seen: dict[tuple[type, int], int] = {}
        kinds: dict[type, list[str]] = {}
        for name in names:
            child = _join(path, name)
            module = modules[child]
            if next(module.children(), None) is None or is_container(module):
                continue
            kinds.setdefault(type(module), []).append(child)
            stage = stage_of.get(child)
            if stage is not None:
                seen[(type(module), stage)] = seen.get((type(module), stage), 0) + 1
        for kind, paths in kinds.items():
            if any(count >= 2 for (k, _), count in seen.items() if k is kind):
                found.update(paths)
    return found


def _related(path: str, other: str) -> bool:
    """One path is the other or inside it (either way round)."""
    return path == other or path.startswith(other + ".") or other.startswith(path + ".")


def _runs(
    path: str,
    names: list[str],
    modules: dict[str, nn.Module],
    stage_of: dict[str, int | None],
    channels_of: dict[str, int],
) -> dict[str, tuple[str, int, int]]:
    """{block path: (run name, index, length)} for the runs among a container's children.

    Nothing when a child is a plain layer (a transition's conv: not a stack of blocks).
    When runs of one width average under two blocks (every block its own width, as in
    RexNet or DPN), runs are one per class and stage; nothing if those are still short.
    """
    if any(next(modules[_join(path, n)].children(), None) is None for n in names):
        return {}
    groups = _grouped(path, names, modules, stage_of, channels_of)
    if not groups or sum(map(len, groups)) < 2 * len(groups):
        # Every block its own width (RexNet, DPN): one run per stage instead, so
        # positional rules count per stage, never over the whole container.
        groups = _grouped(path, names, modules, stage_of, None)
    if not groups or sum(map(len, groups)) < 2 * len(groups):
        return {}
    found = {}
    for group in groups:
        run = f"{path}[{group[0]}:{group[-1] + 1}]" if path else f"[{group[0]}:{group[-1] + 1}]"
        for index, i in enumerate(group):
            found[_join(path, names[i])] = (run, index, len(group))
    return found


def _grouped(
    path: str,
    names: list[str],
    modules: dict[str, nn.Module],
    stage_of: dict[str, int | None],
    channels_of: dict[str, int] | None,
) -> list[list[int]]:
    """Indices of consecutive composite children of one class, stage (and width)."""
    groups: list[list[int]] = []
    last_key = None
    for i, name in enumerate(names):
        child = _join(path, name)
        module = modules[child]
        composite = next(module.children(), None) is not None and not is_container(module)
        width = channels_of.get(child) if channels_of is not None else 0
        key = (type(module), stage_of.get(child), width) if composite else None
        if key is None or key[1] is None or key[2] is None:
            last_key = None
            continue
        if key != last_key:
            groups.append([])
        groups[-1].append(i)
        last_key = key
    return groups


def container_blocks(model: nn.Module, container: str) -> list[nn.Module]:
    """The blocks of a container path, or of a run (`features[7:11]`)."""
    run = _RUN.match(container)
    if run is None:
        return list(model.get_submodule(container).children())
    parent = model.get_submodule(run.group(1)) if run.group(1) else model
    return list(parent.children())[int(run.group(2)) : int(run.group(3))]


def enclosing_block(path: str, containers: Containers) -> tuple[str, int | None, int] | None:
    """(container, index, length) of the block that holds `path` (or is `path`); index
    None for a block container's plain layer (it is no block position).

    A block container wins over nearer plain containers (an op in `layer3.0.downsample`
    belongs to block 0 of `layer3`); without one, the nearest container is used.
    """
    parts = path.split(".")
    nearest = None
    for cut in range(len(parts) - 1, -1, -1):
        run = containers.runs.get(".".join(parts[: cut + 1]))
        if run is not None:
            return run
        parent, child = ".".join(parts[:cut]), parts[cut]
        names = containers.children.get(parent)
        if names is None or child not in names:
            continue
        found = (parent, names.index(child), len(names))
        if parent in containers.block:
            if containers.plain:
                kept = containers.positions(parent)
                index = kept.index(child) if child in kept else None
                return (parent, index, len(kept))
            return found
        if nearest is None:
            nearest = found
    return nearest
