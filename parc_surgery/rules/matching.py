"""Matching rules to a model's modules.

`match` reads a RuleSet, a ModelGraph and the model (for conv attributes) and writes
nothing; it returns every selected module with its rule, replacement, resolved options
and `first_in_container`, plus warnings (rules that matched nothing, stride-2 modules
a rule would have selected, a file's default stages the model lacks). Conflicting rules
raise RulesError; requested stages the model does not have raise UsageError.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from parc_surgery.errors import RulesError, UsageError
from parc_surgery.graph.model_graph import ModelGraph, ModuleInfo
from parc_surgery.options import SwapOptions
from parc_surgery.rules.loading import RuleSet
from parc_surgery.rules.schema import MatchSpec
from parc_surgery.rules.validation import kernel_misfit

__all__ = ["FilterFn", "Match", "MatchResult", "choose_stages", "is_depthwise_conv", "match"]

# filter_fn(module, path) -> bool: False keeps a module a rule selected out of the plan.
FilterFn = Callable[[nn.Module, str], bool]


@dataclass(frozen=True)
class Match:
    """One module selected by one rule."""

    path: str  # qualified module name, e.g. "layer3.3"
    rule: str  # how messages name the rule: "'name' (file:line)" or "rule 2 (file:line)"
    rule_index: int  # 0-based position of the rule in the file
    rule_name: str | None
    location: str  # "file:line" of the rule
    replacement: str  # registered replacement name
    level: str  # "block" (match: module) or "op" (match: op)
    options: SwapOptions  # resolved: pe is a bool
    first_in_container: bool  # first selected block of its container
    info: ModuleInfo


@dataclass
class MatchResult:
    matches: list[Match]  # in model order
    warnings: list[str]
    stages: list[int]  # the stages matching used
    unmatched_rules: list[str] = field(default_factory=list)  # rule labels; --strict fails on them


def is_depthwise_conv(module: nn.Module) -> bool:
    """An nn.Conv2d with groups == in_channels == out_channels (a channel multiplier of 1)."""
    return (
        isinstance(module, nn.Conv2d)
        and module.groups == module.in_channels == module.out_channels
        and module.in_channels > 1
    )


def choose_stages(
    requested: list[int] | tuple[int, ...] | None, ruleset: RuleSet, graph: ModelGraph
) -> tuple[list[int], list[str]]:
    """(stages, notes): --stages if given, else the file's `stages`, else every stage.

    Requested stages must exist (UsageError listing the model's). The file's `stages`
    are a default written for a four-stage ConvNet, so they adapt: stages the model lacks
    are dropped, and if none is left the model's deepest stages (as many as the file
    names) are used instead; a note says so. A plain ViT has one stage (its token grid),
    so --stages is refused there: its blocks are selected by index or fraction.
    """
    if not graph.has_spatial_stages:
        raise UsageError(graph.no_spatial_reason or f"{graph.model_name} has no spatial stages")
    available = sorted(graph.stages)
    if requested and graph.is_plain_vit:
        raise UsageError(
            f"{graph.model_name} is a plain ViT: all its blocks run on one "
            f"{'x'.join(map(str, graph.stages[available[0]].feature_size))} token grid, so "
            f"there are no stages to choose (--stages {','.join(map(str, requested))})",
            hint="Drop --stages; select blocks by position with `index` or `fraction` in the "
            "rules, e.g. `index: '6:'` for the last half of a 12-block ViT",
        )
    if requested:
        chosen = sorted(set(requested))
        missing = [s for s in chosen if s not in graph.stages]
        if missing:
            have = ", ".join(f"{s} (stride {graph.stages[s].stride})" for s in available)
            raise UsageError(
                f"{graph.model_name} has no stage {', '.join(map(str, missing))} (requested); "
                f"its stages are {have}",
                hint="Choose stages from that list with --stages",
            )
        return chosen, []
    if not ruleset.stages:
        return available, []
    wanted = sorted(set(ruleset.stages))
    chosen = [s for s in wanted if s in graph.stages] or available[-len(wanted) :]
    if chosen == wanted:
        return chosen, []
    lacking = [s for s in wanted if s not in graph.stages]
    note = (
        f"{graph.model_name} has no stage {', '.join(map(str, lacking))} (from "
        f"{ruleset.label}'s `stages`: {', '.join(map(str, wanted))}); using its stages "
        f"{', '.join(map(str, chosen))} instead (its stages: {', '.join(map(str, available))})"
    )
    return chosen, [note]


def _positioned(spec: MatchSpec, info: ModuleInfo) -> bool:
    if spec.index is None and spec.fraction is None:
        return True
    if info.index is None or info.container_len is None:
        return False
    return info.index in spec.select(info.container_len)


def _is_candidate(spec: MatchSpec, info: ModuleInfo, module: nn.Module, stages: set[int]) -> bool:
    if info.stage not in stages or info.out_shape is None:
        return False
    if spec.module is not None:
        return info.type_name in spec.module
    if not is_depthwise_conv(module):
        return False
    kh, kw = module.kernel_size
    return kh == kw and (spec.kernel is None or kh in spec.kernel)


def _strided(info: ModuleInfo, module: nn.Module) -> bool:
    stride = getattr(module, "stride", 1) if isinstance(module, nn.Conv2d) else 1
    return info.downsamples or stride not in (1, (1, 1))


def _inside(path: str, ancestors: set[str]) -> str | None:
    parts = path.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        prefix = ".".join(parts[:cut])
        if prefix in ancestors:
            return prefix
    return None


def _select(
    ruleset: RuleSet,
    i: int,
    graph: ModelGraph,
    modules: dict[str, nn.Module],
    stages: list[int],
    filter_fn: FilterFn | None = None,
    placed: dict[str, ModuleInfo] | None = None,
) -> tuple[list[str], list[str]]:
    """(selected paths, stride-2 paths skipped) of rule i, in model order; `placed` gets
    each selected module's info with its position (per stage outside block containers)."""
    spec = ruleset.rules[i].match
    allowed = set(stages) & set(spec.stages) if spec.stages else set(stages)
    selected: list[str] = []
    chosen: set[str] = set()
    strided: list[str] = []
    candidates = {
        path: info
        for path, info in graph.modules.items()
        if path in modules and _is_candidate(spec, info, modules[path], allowed)
    }
    for path, info in _per_stage_positions(candidates, graph).items():
        module = modules[path]
        if not _positioned(spec, info):
            continue
        if spec.name is not None and not fnmatch.fnmatchcase(path, spec.name):
            continue
        if filter_fn is not None and not filter_fn(module, path):
            continue
        if _inside(path, chosen):
            continue  # an ancestor is already replaced whole by this rule
        if _strided(info, module):
            strided.append(path)
        else:
            selected.append(path)
            chosen.add(path)
            if placed is not None:
                placed[path] = info
    return selected, strided


def _per_stage_positions(
    candidates: dict[str, ModuleInfo], graph: ModelGraph
) -> dict[str, ModuleInfo]:
    """The candidates, each placed in its block container; a candidate in none (VGG's
    convs, DLA's tree of blocks, DPN's flat `features`, ConvMixer's nested Sequentials) is
    placed among the rule's other such candidates of its stage, in model order, so
    `index` and `fraction` count per stage there too, never over the whole model."""
    blocks = {c for stage in graph.stages.values() for c, _ in stage.containers}
    loose: dict[int, list[str]] = {}
    for path, info in candidates.items():
        if info.container in blocks or info.stage is None:
            continue
        if _inside(path, set(loose.get(info.stage, []))) is None:
            loose.setdefault(info.stage, []).append(path)
    placed = dict(candidates)
    for stage, paths in loose.items():
        for index, path in enumerate(paths):
            placed[path] = dataclasses.replace(
                candidates[path], container=f"_stage{stage}", index=index, container_len=len(paths)
            )
    return placed


def _check_accepts(
    ruleset: RuleSet, i: int, paths: list[str], modules: dict[str, nn.Module]
) -> None:
    from parc_surgery.blocks.registry import get_replacement, replacement_names

    name = ruleset.rules[i].replace.with_
    if name not in replacement_names():
        return  # not registered yet: validated against the built-in names only
    replacement = get_replacement(name)
    for path in paths:
        if not replacement.can_replace(modules[path]):
            raise RulesError(
                f"{ruleset.rule_label(i)} selects {path} ({type(modules[path]).__name__}), "
                f"but replacement {name!r} replaces only {', '.join(replacement.accepts)}",
                hint="Narrow the match, or choose a replacement made for that class",
            )


def _check_conflicts(ruleset: RuleSet, owner: dict[str, int], path: str, i: int) -> None:
    if path in owner:
        raise RulesError(
            f"{path} is matched by two rules: {ruleset.rule_label(owner[path])} and "
            f"{ruleset.rule_label(i)}",
            hint="Narrow one of them with stages, index, fraction or name",
        )
    outer = _inside(path, set(owner))
    inner = next((p for p in owner if p.startswith(path + ".")), None)
    if outer is not None or inner is not None:
        a, b = (outer, path) if outer is not None else (path, inner)
        first = owner[outer] if outer is not None else i
        second = i if outer is not None else owner[inner]
        raise RulesError(
            f"{ruleset.rule_label(second)} selects {b}, which is inside {a}, selected by "
            f"{ruleset.rule_label(first)}",
            hint="A module is replaced whole or not at all: narrow one of the rules",
        )


def match(
    ruleset: RuleSet,
    graph: ModelGraph,
    model: nn.Module,
    stages: list[int] | tuple[int, ...] | None = None,
    filter_fn: FilterFn | None = None,
) -> MatchResult:
    """Select the modules each rule replaces in the chosen stages.

    `filter_fn(module, path)` narrows the selection: a module it returns False for is
    not selected (and `first_in_container` counts only the modules that are).
    """
    chosen, notes = choose_stages(stages, ruleset, graph)
    modules = dict(model.named_modules())
    owner: dict[str, int] = {}
    warnings: list[str] = list(notes)
    unmatched: list[str] = []
    placed: dict[str, ModuleInfo] = {}
    stage_text = ", ".join(map(str, chosen))
    for i in range(len(ruleset.rules)):
        selected, strided = _select(ruleset, i, graph, modules, chosen, filter_fn, placed)
        if strided:
            warnings.append(
                f"{ruleset.rule_label(i)} skipped {', '.join(strided)}: stride 2 (ParC is "
                "stride 1, so downsampling blocks and convs are never replaced)"
            )
        if not selected:
            unmatched.append(ruleset.rule_label(i))
            warnings.append(f"{ruleset.rule_label(i)} matched nothing in stages {stage_text}")
        _check_accepts(ruleset, i, selected, modules)
        for path in selected:
            _check_conflicts(ruleset, owner, path, i)
            owner[path] = i
    order = {path: n for n, path in enumerate(graph.modules)}
    paths = sorted(owner, key=order.__getitem__)
    firsts = _first_in_container(paths, placed)
    matches = [_make_match(ruleset, owner[p], placed[p], p in firsts) for p in paths]
    return MatchResult(matches=matches, warnings=warnings, stages=chosen, unmatched_rules=unmatched)


def _first_in_container(paths: list[str], placed: dict[str, ModuleInfo]) -> set[str]:
    first: dict[str, tuple[int, str]] = {}
    for path in paths:
        info = placed[path]
        key = info.container if info.container is not None else path
        position = (info.index if info.index is not None else 0, path)
        if key not in first or position < first[key]:
            first[key] = position
    return {path for _, path in first.values()}


def _make_match(ruleset: RuleSet, i: int, info: ModuleInfo, first: bool) -> Match:
    rule = ruleset.rules[i]
    options = ruleset.options_for(i)
    if options.pe == "first_in_container":
        options = ruleset.options_for(i, pe=first)
    misfit = kernel_misfit(options.kernel_size, info.feature_size)
    if misfit:
        raise RulesError(
            f"{ruleset.rule_label(i)} selects {info.path}, but its {misfit}",
            hint="Drop kernel_size (the default is the feature map's size), give at most "
            "the map's size, or convert at a larger --input-size",
        )
    return Match(
        path=info.path,
        rule=ruleset.rule_label(i),
        rule_index=i,
        rule_name=rule.name,
        location=ruleset.rule_lines[i],
        replacement=rule.replace.with_,
        level=rule.match.level,
        options=options,
        first_in_container=first,
        info=info,
    )
