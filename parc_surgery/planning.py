"""Build a Plan from rule matches: what each swap builds, its cost, and auto's backend.

Reads the model (never modifies it), the ModelGraph and the matches; writes a Plan.
Each replacement is built once here, on a copy, so the plan's parameter and MAC counts
are those of the module apply will install.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from parc_surgery.blocks.registry import build_for_swap
from parc_surgery.costs import count_macs, count_params, model_macs
from parc_surgery.errors import NothingMatchedError
from parc_surgery.ops import ParC
from parc_surgery.plan import ModelSource, Plan, Swap

__all__ = ["build_plan", "one_line"]


def one_line(module: nn.Module, reference: nn.Module | None = None) -> str:
    """A short description: the class and the children that differ from `reference`."""
    name = type(module).__name__
    if isinstance(module, nn.Conv2d):
        k = "x".join(str(v) for v in module.kernel_size)
        return f"Conv2d({module.in_channels}->{module.out_channels}, {k}, {_kind(module)})"
    if reference is None:
        return name
    if type(reference) is not type(module):
        return _parc_summary(module)
    # The top-most submodules whose class differs ("conv_dw", or "conv.1.0" in a
    # torchvision block, where the swapped conv sits deeper).
    ref_modules = dict(reference.named_modules())
    changed: list[str] = []
    for path, child in module.named_modules():
        if not path or any(path.startswith(done + ".") for done in changed):
            continue
        if type(ref_modules.get(path)) is not type(child):
            changed.append(path)
    parts = [
        f"{path}={one_line(sub) if isinstance(sub, nn.Conv2d) else _parc_summary(sub)}"
        for path, sub in ((p, module.get_submodule(p)) for p in changed)
    ]
    return f"{name}[{', '.join(parts)}]" if parts else name


def _kind(conv: nn.Module) -> str:
    groups, chs = conv.groups, getattr(conv, "in_chs", getattr(conv, "in_channels", 0))
    return "dw" if groups == chs and groups > 1 else ("dense" if groups == 1 else f"g{groups}")


def _parc_summary(module: nn.Module) -> str:
    """E.g. 'ParCPair(128ch, k=14x14, dense, pe)' or 'ParCMobileVitBlock(8 ParC, k=8x8, dw)'."""
    parcs = [m for m in module.modules() if isinstance(m, ParC)]
    if not parcs:
        return type(module).__name__
    kh = max((p.kernel_size for p in parcs if p.direction == "H"), default=0)
    kw = max((p.kernel_size for p in parcs if p.direction == "W"), default=0)
    size = f"{parcs[0].in_chs + parcs[1].in_chs}ch" if len(parcs) == 2 else f"{len(parcs)} ParC"
    kinds = "/".join(sorted({_kind(p) for p in parcs}))
    pe = ", pe" if any(p.pe is not None for p in parcs) else ""
    return f"{type(module).__name__}({size}, k={kh}x{kw}, {kinds}{pe})"


def _auto_choice(module: nn.Module, feature_size: tuple[int, int]) -> str:
    """The backends the new ParC layers run at batch 1 and the plan's feature size."""
    choices = []
    for parc in module.modules():
        if isinstance(parc, ParC):
            impl = parc.resolved_impl((1, parc.in_chs, *feature_size), torch.float32)
            if impl not in choices:
                choices.append(impl)
    return "+".join(choices)


def build_plan(
    model: nn.Module,
    *,
    model_name: str,
    model_args: dict[str, Any],
    graph: Any,
    matches: list[Any],
    stages: list[int],
    rules_source: str,
    rules: dict[str, Any],
    warnings: list[str],
    source: ModelSource | None = None,
) -> Plan:
    """A Plan holding one Swap per match, with costs measured on the built replacements."""
    swaps = []
    for match in matches:
        info = match.info
        swap = Swap(
            path=match.path,
            module_type=info.type_name,
            stage=info.stage,
            container=info.container or "",
            index=info.index if info.index is not None else -1,
            container_len=info.container_len or 0,
            feature_size=tuple(info.feature_size),
            replacement=match.replacement,
            options=match.options,
            rule=match.rule,
            first_in_container=match.first_in_container,
            prefix_tokens=info.prefix_tokens,
        )
        original = model.get_submodule(match.path)
        if any(isinstance(m, ParC) for m in original.modules()):
            raise NothingMatchedError(
                f"{model_name} is already converted: {match.path} (selected by {match.rule}) "
                "already holds ParC layers, so there is nothing left for the rules to swap",
                hint="convert the unconverted base model, or load the converted one as it is",
            )
        new = build_for_swap(original, swap)
        swap.old_module = one_line(original, reference=new)
        swap.new_module = one_line(new, reference=original)
        swap.params_before = count_params(original)
        swap.params_after = count_params(new)
        swap.macs_before = count_macs(original, info.in_shape, info.feature_size)
        swap.macs_after = count_macs(new, info.in_shape, info.feature_size)
        swap.impl_auto = _auto_choice(new, swap.feature_size)
        swaps.append(swap)
    return Plan(
        model=model_name,
        model_args=dict(model_args),
        input_size=tuple(graph.input_size),
        stages=list(stages),
        rules_source=rules_source,
        rules=rules,
        swaps=swaps,
        warnings=list(warnings),
        params_total_before=count_params(model),
        macs_total_before=model_macs(model, tuple(graph.input_size)),
        source=source,
    )
