"""parc-surgery: convert vision models (timm, torchvision, your own) to ParC / Fast-ParC.

import parc_surgery as ps
plan = ps.parcify_(model)                                 # any nn.Module, in place
ps.save(model, plan, "parc.safetensors")
model = ps.load("parc.safetensors", model=base)           # base: the unconverted model
planned = ps.plan_conversion("resnet50", stages=[3, 4])   # by name; changes nothing
result = ps.convert("resnet50", stages=[3, 4], output="r50-parc.safetensors")
backbone = ps.load("r50-parc.safetensors", features_only=True, out_indices=(3, 4))
ps.finetune(...)  /  ps.evaluate_source(...)             # recovery (parc_surgery.train)
ps.import_official(...)  /  ps.export_official(...)       # official ParC-Net weights
"""

from __future__ import annotations

from typing import Any

__version__ = "0.2.0"

__all__ = [
    "Plan",
    "Swap",
    "__version__",
    "apply_plan",
    "compile_model",
    "convert",
    "create_model",
    "evaluate_source",
    "fuse",
    "export_official",
    "finetune",
    "import_official",
    "load",
    "parcify_",
    "plan_conversion",
    "save",
    "verify",
]

# Lazy, so `import parc_surgery` stays cheap and the CLI starts fast.
_EXPORTS = {
    "Plan": "parc_surgery.plan",
    "Swap": "parc_surgery.plan",
    "apply_plan": "parc_surgery.apply",
    "verify": "parc_surgery.apply",
    "convert": "parc_surgery.pipeline",
    "create_model": "parc_surgery.models",
    "compile_model": "parc_surgery.ops",
    "evaluate_source": "parc_surgery.train.run",
    "finetune": "parc_surgery.train.run",
    "import_official": "parc_surgery.official",
    "export_official": "parc_surgery.official",
    "parcify_": "parc_surgery.pipeline",
    "plan_conversion": "parc_surgery.pipeline",
    "load": "parc_surgery.checkpoint",
    "fuse": "parc_surgery.fusing",
    "save": "parc_surgery.checkpoint",
}


def __dir__() -> list[str]:
    """The lazy public names too, so dir(parc_surgery) and completion show them."""
    return sorted(set(globals()) | set(__all__))


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'parc_surgery' has no attribute {name!r}")


def _register_with_timm() -> None:
    """Register the published ParC networks with timm (parc_surgery.timm_models) as soon
    as timm is imported: now if it already is, else right after its import finishes, so
    `import parc_surgery` itself stays cheap (timm takes seconds to import)."""
    import sys

    timm = sys.modules.get("timm")
    if timm is not None and hasattr(timm, "create_model"):
        from parc_surgery.timm_models import register

        register()
        return
    if not any(isinstance(f, _TimmImportHook) for f in sys.meta_path):
        sys.meta_path.insert(0, _TimmImportHook())


class _TimmImportHook:
    """A meta path finder that lets the real finder import timm, then registers."""

    def find_spec(self, fullname, path=None, target=None):
        import sys

        if fullname != "timm":
            return None
        sys.meta_path[:] = [f for f in sys.meta_path if f is not self]
        import importlib.util

        spec = importlib.util.find_spec("timm")
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_register(module):
            exec_module(module)
            from parc_surgery.timm_models import register

            register()

        spec.loader.exec_module = exec_then_register
        return spec


_register_with_timm()
