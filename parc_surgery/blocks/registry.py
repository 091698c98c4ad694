"""The replacement registry: a name in a rule file -> a builder of the new module.

A builder receives the original module and a ReplacementContext and returns the new
module with every kept weight copied from the original. It never modifies the original.

One replacement may hold several builders, one per kind of module it converts: a rule's
`with: parc_inverted_residual` converts timm's InvertedResidual and torchvision's, whose
insides differ. Each builder is registered with the classes it accepts, by bare class
name ("InvertedResidual") or qualified by module
("torchvision.models.mobilenetv2.InvertedResidual"); a module gets the builder of its
most specific entry (qualified, then bare, then "*").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from parc_surgery.errors import RulesError
from parc_surgery.models import class_path
from parc_surgery.options import SwapOptions
from parc_surgery.plan import Swap

__all__ = [
    "Replacement",
    "ReplacementContext",
    "ReplacementError",
    "build_for_swap",
    "build_replacement",
    "get_replacement",
    "register_builder",
    "register_replacement",
    "replacement_names",
]


@dataclass
class ReplacementContext:
    """What a builder knows about the place it builds for."""

    path: str  # qualified name of the module being replaced
    feature_size: tuple[int, int]  # (H, W) at the plan's input size: the global kernel lengths
    stage: int
    index: int  # position inside its container
    first_in_container: bool  # True for the first *selected* block of its container
    options: SwapOptions = field(default_factory=SwapOptions)  # resolved: pe is a bool
    prefix_tokens: int = 0  # patch-token blocks: class / register tokens before the grid

    @classmethod
    def for_swap(cls, swap: Swap) -> ReplacementContext:
        """The context a swap's builder receives."""
        return cls(
            path=swap.path,
            feature_size=tuple(swap.feature_size),
            stage=swap.stage,
            index=swap.index,
            first_in_container=swap.first_in_container,
            options=swap.options,
            prefix_tokens=swap.prefix_tokens,
        )

    @property
    def impl(self) -> str:
        return self.options.impl

    @property
    def pe(self) -> bool:
        return bool(self.options.pe)

    @property
    def init(self) -> str:
        return self.options.init


class ReplacementError(RulesError, ValueError):
    """A rule selected a module its replacement cannot convert (stride 2, wrong type...).

    A RulesError because the fix is in the rules (select other blocks); also a ValueError
    so code that builds replacements directly can catch it without knowing our errors.
    """


Builder = Callable[[nn.Module, ReplacementContext], nn.Module]


@dataclass(frozen=True)
class Replacement:
    name: str
    builders: tuple[tuple[str, Builder], ...]  # (accepts entry, builder), in registration order
    level: str  # "block" (replaces a whole block) or "op" (replaces a conv)
    description: str

    @property
    def accepts(self) -> tuple[str, ...]:
        """Every class it can replace: bare or module-qualified class names ("*" = any)."""
        return tuple(entry for entry, _ in self.builders)

    @property
    def builder(self) -> Builder:
        """The builder registered with the replacement (the family's own)."""
        return self.builders[0][1]

    def builder_for(self, module: nn.Module) -> Builder | None:
        """The builder for `module`'s class: a qualified entry, else a bare one, else "*"."""
        found = dict(self.builders)
        for entry in (class_path(module), type(module).__name__, "*"):
            if entry in found:
                return found[entry]
        return None

    def can_replace(self, module: nn.Module) -> bool:
        return self.builder_for(module) is not None


_REGISTRY: dict[str, Replacement] = {}


def register_replacement(
    name: str, *, accepts: tuple[str, ...], level: str = "block", description: str = ""
) -> Callable[[Builder], Builder]:
    """Decorator: register `builder` under `name` for the classes in `accepts`."""

    def decorate(builder: Builder) -> Builder:
        if name in _REGISTRY:
            raise ValueError(f"replacement {name!r} is already registered")
        doc = description or (builder.__doc__ or "").strip().splitlines()[0:1]
        desc = doc if isinstance(doc, str) else (doc[0] if doc else "")
        _REGISTRY[name] = Replacement(name, tuple((a, builder) for a in accepts), level, desc)
        return builder

    return decorate


def register_builder(name: str, *, accepts: tuple[str, ...]) -> Callable[[Builder], Builder]:
    """Decorator: add `builder` to the registered replacement `name` for more classes.

    For a family whose modules another library implements differently (torchvision's
    blocks beside timm's); `accepts` entries are usually module-qualified class names.
    """

    def decorate(builder: Builder) -> Builder:
        replacement = _REGISTRY[name]
        taken = set(replacement.accepts) & set(accepts)
        if taken:
            raise ValueError(f"replacement {name!r} already has a builder for {sorted(taken)}")
        added = replacement.builders + tuple((a, builder) for a in accepts)
        _REGISTRY[name] = dataclasses.replace(replacement, builders=added)
        return builder

    return decorate


def get_replacement(name: str) -> Replacement:
    """The registered replacement `name`; KeyError lists the registered names."""
    _load_builtin_blocks()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(
            f"unknown replacement {name!r}; registered: {', '.join(replacement_names())}"
        ) from None


def build_replacement(name: str, module: nn.Module, ctx: ReplacementContext) -> nn.Module:
    """Build replacement `name` for `module`, refusing module types it does not accept."""
    replacement = get_replacement(name)
    builder = replacement.builder_for(module)
    if builder is None:
        raise ReplacementError(
            f"replacement {name!r} cannot replace a {type(module).__name__}",
            where=ctx.path,
            hint=f"it accepts {', '.join(replacement.accepts)}",
        )
    return builder(module, ctx)


def build_for_swap(module: nn.Module, swap: Swap) -> nn.Module:
    """Build the module that replaces `module` for `swap` (errors name the rule)."""
    try:
        return build_replacement(swap.replacement, module, ReplacementContext.for_swap(swap))
    except ReplacementError as err:
        err.where = f"{swap.rule}: {err.where}" if err.where else swap.rule
        raise


def replacement_names() -> list[str]:
    _load_builtin_blocks()
    return sorted(_REGISTRY)


def _load_builtin_blocks() -> None:
    # Importing the package registers the built-in replacements (one file per family).
    import parc_surgery.blocks  # noqa: F401
