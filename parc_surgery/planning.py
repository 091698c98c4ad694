"""Build a Plan from rule matches: what each swap builds, its cost, and auto's backend.

Reads the model (never modifies it), the ModelGraph and the matches; writes a Plan.
Each replacement is built once here, on a copy, so the plan's parameter and MAC counts
are those of the module apply will install.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from parc_surgery.blocks.registry import build_for_swap
from parc_surgery.ops import ParC, forced_impl
from parc_surgery.plan import Plan, Swap

__all__ = ["build_plan", "count_macs", "counting_form", "one_line"]


@contextlib.contextmanager
def counting_form(module: nn.Module) -> Iterator[None]:
    """`module` as MACs are counted: eval mode, ParC in its spatial form, fused attention
    (scaled_dot_product_attention) as its matmuls (torch's flop counter counts no fused CPU
    kernel), and no parameter requiring grad (the counter's module tracker fails on a
    parameter passed straight to a submodule: PiT's and CaiT's class tokens)."""
    was_training = module.training
    grads = [(p, p.requires_grad) for p in module.parameters()]
    module.eval()
    for p, _ in grads:
        p.requires_grad_(False)
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(forced_impl("spatial"))
            try:
                from torch.nn.attention import SDPBackend, sdpa_kernel
            except ImportError:  # torch < 2.3 has no sdpa_kernel
                pass
            else:
                stack.enter_context(sdpa_kernel(SDPBackend.MATH))
            yield
    finally:
        for p, flag in grads:
            p.requires_grad_(flag)
        module.train(was_training)


def count_macs(module: nn.Module, in_shape: Iterable[int]) -> int:
    """Multiply-accumulates of one forward at batch 1, ParC counted in its spatial form."""
    x = torch.zeros(tuple(in_shape))
    with counting_form(module), torch.no_grad(), FlopCounterMode(display=False) as fc:
        module(x)
    return int(fc.get_total_flops() // 2)


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
    ref_children = dict(reference.named_children())
    changed = [
        f"{child_name}={one_line(child) if isinstance(child, nn.Conv2d) else _parc_summary(child)}"
        for child_name, child in module.named_children()
        if type(ref_children.get(child_name)) is not type(child)
    ]
    return f"{name}[{', '.join(changed)}]" if changed else name


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
        new = build_for_swap(original, swap)
        swap.old_module = one_line(original, reference=new)
        swap.new_module = one_line(new, reference=original)
        swap.params_before = _params(original)
        swap.params_after = _params(new)
        swap.macs_before = count_macs(original, info.in_shape)
        swap.macs_after = count_macs(new, info.in_shape)
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
        params_total_before=_params(model),
        macs_total_before=count_macs(model, (1, 3, *graph.input_size)),
    )


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
