"""timm-aware torch.fx tracing.

`trace` reads a model and writes nothing on it: it returns a `torch.fx.GraphModule`
whose leaves are torch.nn's own layers, timm's registered non-traceable modules, and any
class named in a rules file's `leaf:` list. timm's non-traceable functions are
auto-wrapped (recorded as single call nodes), as timm's own feature extractor does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from torch import fx, nn

from parc_surgery.errors import TraceError

__all__ = ["ParcTracer", "trace"]


def _timm_leaf_modules() -> tuple[type, ...]:
    # Importing timm.models registers every model family's notrace modules.
    import timm.models  # noqa: F401
    from timm.layers import get_notrace_modules

    return tuple(m for m in get_notrace_modules() if isinstance(m, type))


def _timm_autowrap_functions() -> tuple[Callable[..., Any], ...]:
    import timm.models  # noqa: F401
    from timm.layers import get_notrace_functions

    return tuple(f for f in get_notrace_functions() if callable(f))


class ParcTracer(fx.Tracer):
    """An fx.Tracer with timm's leaves plus leaves named by class name.

    While tracing it records the innermost non-leaf module whose forward raised
    (`failed_path`, `failed_type`), so a failure can name the module to make a leaf.
    """

    def __init__(self, leaf_classes: Iterable[str | type] = ()):
        super().__init__(autowrap_functions=_timm_autowrap_functions())
        self.leaf_types = _timm_leaf_modules() + tuple(
            c for c in leaf_classes if isinstance(c, type)
        )
        self.leaf_names = frozenset(c for c in leaf_classes if isinstance(c, str))
        self.failed_path: str | None = None
        self.failed_type: str | None = None

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if type(m).__name__ in self.leaf_names or isinstance(m, self.leaf_types):
            return True
        return super().is_leaf_module(m, module_qualified_name)

    def call_module(self, m: nn.Module, forward: Callable[..., Any], args: Any, kwargs: Any) -> Any:
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            # The innermost module sees the exception first; outer frames keep its name.
            if self.failed_type is None:
                try:
                    self.failed_path = self.path_of_module(m)
                except NameError:
                    self.failed_path = None
                self.failed_type = type(m).__name__
            raise


def trace(model: nn.Module, leaf_classes: Iterable[str | type] = ()) -> fx.GraphModule:
    """Symbolically trace `model`; raise TraceError naming the module that cannot be traced.

    `leaf_classes` are class names (as in a rules file's `leaf:`) or classes to keep opaque.
    """
    tracer = ParcTracer(leaf_classes)
    try:
        graph = tracer.trace(model)
    except Exception as exc:  # any failure inside tracing is the model's, not ours
        raise _trace_error(model, tracer, exc) from exc
    name = type(model).__name__
    return fx.GraphModule(tracer.root, graph, name)


def _trace_error(model: nn.Module, tracer: ParcTracer, exc: Exception) -> TraceError:
    reason = " ".join(str(exc).split()) or type(exc).__name__
    if len(reason) > 300:
        reason = reason[:297] + "..."
    if tracer.failed_type is not None and tracer.failed_path:
        where = f"module '{tracer.failed_path}' ({tracer.failed_type})"
        cls = tracer.failed_type
    else:
        where = f"the model's own forward ({type(model).__name__})"
        cls = tracer.failed_type or type(model).__name__
    return TraceError(
        f"cannot trace {where} with torch.fx: {type(exc).__name__}: {reason}",
        hint=(
            f"Add `leaf: [{cls}]` to the rules file so that {cls} is kept as one opaque "
            "module when tracing"
        ),
    )
