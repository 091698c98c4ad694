"""ONNX export of a converted model, checked against PyTorch with onnxruntime.

Every ParC is exported as the spatial (Conv) or the circulant (MatMul) backend, so the
graph holds ordinary ops and no DFT, which many runtimes lack. `impl="auto"` picks per
layer the one onnxruntime ran faster at the nearest shape of a shipped table
(`parc_surgery/ops/onnx_calibration.json`, written by `benchmarks/bench_onnx.py
--write-calibration`); "spatial" or "circulant" force one for every layer. It uses the
TorchScript-based exporter (torch.onnx.export(dynamo=False)): it needs no onnxscript
and handles the ParC modules as they are. Tracing records one input resolution: each
ParC's kernel and position encoding are resampled for that resolution before the trace
(on a copy of the model), so the file runs only at that height and width. The batch axis
stays dynamic.
"""

from __future__ import annotations

import contextlib
import copy
import os
import warnings
from collections import Counter
from pathlib import Path

import torch
from torch import nn

from parc_surgery.checkpoint import atomic_write, check_output
from parc_surgery.errors import ExportError
from parc_surgery.extras import require_extra
from parc_surgery.models import eval_mode, input_channels
from parc_surgery.ops import ParC, forced_impl, resample_kernel
from parc_surgery.ops.dispatch import choose_from_table, load_calibration

__all__ = [
    "EXPORTABLE_BACKENDS",
    "EXPORT_IMPLS",
    "EXPORT_OPSET",
    "baked_for_size",
    "choose_export_impls",
    "export_onnx",
    "onnx_op_types",
    "parc_input_shapes",
    "trace_to_onnx",
]

EXPORT_OPSET = 17
EXPORTABLE_BACKENDS = ("spatial", "circulant")
EXPORT_IMPLS = ("auto", *EXPORTABLE_BACKENDS)
ONNX_CALIBRATION = "onnx_calibration.json"
_CHECK_BATCH = 2  # not the traced batch of 1, so the check also proves the batch is dynamic


def onnx_op_types(model_proto) -> set[str]:
    """Every op type in an ONNX model, including subgraphs and local functions."""
    found: set[str] = set()

    def visit(graph) -> None:
        for node in graph.node:
            found.add(node.op_type)
            for attr in node.attribute:
                if attr.g is not None and attr.g.node:
                    visit(attr.g)
                for sub in attr.graphs:
                    visit(sub)

    visit(model_proto.graph)
    for function in model_proto.functions:
        for node in function.node:
            found.add(node.op_type)
    return found


def baked_for_size(model: nn.Module, input_size: tuple[int, int]) -> nn.Module:
    """A copy of `model` whose ParC kernels and pe are resampled to their lengths at input_size.

    ParC resamples inside forward when the runtime length differs from the built one;
    doing it once here puts plain constant kernels in the graph instead of interpolation
    ops (which also do not all translate to ONNX).
    """
    baked = copy.deepcopy(model).eval()
    lengths = {
        module: shape[2 if module.direction == "H" else 3]
        for module, shape in parc_input_shapes(baked, input_size).items()
    }
    with torch.no_grad():
        for module, length in lengths.items():
            if length == module.kernel_size:
                continue
            axis = 2 if module.direction == "H" else 3
            module.weight = nn.Parameter(resample_kernel(module.weight, length, axis))
            if module.pe is not None:
                module.pe = nn.Parameter(resample_kernel(module.pe, length, axis))
            module.kernel_size = length
            module.train(False)  # drops kernel forms cached for the old parameters
    return baked


def parc_input_shapes(model: nn.Module, input_size: tuple[int, int]) -> dict[ParC, tuple]:
    """The input shape each ParC of `model` sees in one batch-1 forward at input_size."""
    shapes: dict[ParC, tuple] = {}

    def record(module: ParC, args: tuple) -> None:
        shapes[module] = tuple(int(n) for n in args[0].shape)

    hooks = [m.register_forward_pre_hook(record) for m in model.modules() if isinstance(m, ParC)]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, input_channels(model), *input_size))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return shapes


def choose_export_impls(model: nn.Module, input_size: tuple[int, int]) -> dict[ParC, str]:
    """Per ParC, the exportable backend onnxruntime runs fastest at its batch-1 shape."""
    table = load_calibration(name=ONNX_CALIBRATION)
    chosen = {}
    for module, (batch, channels, h, w) in parc_input_shapes(model, input_size).items():
        length, other = (h, w) if module.direction == "H" else (w, h)
        chosen[module] = choose_from_table(
            table,
            EXPORTABLE_BACKENDS,
            length,
            channels,
            module.groups,
            batch,
            other,
            module.direction,
        )
    return chosen


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0] if text else 'no detail'}"


def trace_to_onnx(
    model: nn.Module, path: str | os.PathLike, example: torch.Tensor, opset: int = EXPORT_OPSET
) -> None:
    """torch.onnx.export (TorchScript tracer) of `model` on `example`, batch axis dynamic."""
    x = example
    with warnings.catch_warnings():
        # The tracer warns about every Python-int shape it records and the legacy
        # exporter about its deprecation; both are expected here and only confuse users.
        warnings.simplefilter("ignore")
        # Grad stays enabled on purpose: without grad ParC takes cached, inference-only
        # fast paths (in-place adds into preallocated outputs) that do not trace to ONNX.
        with torch.enable_grad():
            torch.onnx.export(
                model,
                (x,),
                path,
                dynamo=False,
                opset_version=opset,
                input_names=["input"],
                output_names=["output"],
                dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
                do_constant_folding=True,
            )


def _check_with_onnxruntime(
    model: nn.Module, path: str, input_size: tuple[int, int], seed: int
) -> tuple[float, float]:
    """(max abs diff, max |reference|) between onnxruntime and PyTorch on a seeded batch."""
    import onnxruntime

    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(_CHECK_BATCH, input_channels(model), *input_size, generator=generator)
    with torch.inference_mode():
        reference = model(x)
    options = onnxruntime.SessionOptions()
    # Fatal only: a failing run is reported once, as an ExportError, not also as a log line.
    options.log_severity_level = 4
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    (result,) = session.run(["output"], {"input": x.numpy()})
    got = torch.from_numpy(result)
    if tuple(got.shape) != tuple(reference.shape):
        raise ExportError(
            f"onnxruntime returned shape {tuple(got.shape)}, PyTorch {tuple(reference.shape)}"
        )
    return float((got - reference).abs().max()), float(reference.abs().max())


def onnx_metadata(model: nn.Module, input_size, recipe: dict | None = None) -> dict[str, str]:
    """The metadata_props an export carries: preprocessing from the model's pretrained_cfg
    (timm's defaults where it has none) and the recipe, each value JSON."""
    import json

    cfg = getattr(model, "pretrained_cfg", None) or {}
    cfg = cfg if isinstance(cfg, dict) else {}
    meta = {
        "mean": list(cfg.get("mean", (0.485, 0.456, 0.406))),
        "std": list(cfg.get("std", (0.229, 0.224, 0.225))),
        "input_size": [input_channels(model), *map(int, input_size)],
        "interpolation": cfg.get("interpolation", "bilinear"),
        "crop_pct": cfg.get("crop_pct", 0.875),
    }
    if recipe is not None:
        meta["parc_surgery_recipe"] = recipe
    return {key: json.dumps(value) for key, value in meta.items()}


def _write_metadata(proto, path: str, metadata: dict[str, str]) -> None:
    import onnx

    del proto.metadata_props[:]
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, path)


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    input_size: tuple[int, int],
    force: bool = False,
    impl: str = "auto",
    opset: int = EXPORT_OPSET,
    atol: float = 1e-4,
    seed: int = 0,
    fuse: bool = False,
    recipe: dict | None = None,
) -> dict:
    """Export `model` to ONNX at `input_size`, check it with onnxruntime; a dict of results.

    The ONNX model's metadata_props hold the preprocessing (`mean`, `std`, `input_size`
    [C, H, W] at the export size, `interpolation`, `crop_pct`, from the model's
    pretrained_cfg; JSON) and, when given, the checkpoint's `recipe` (`parc_surgery_recipe`).

    `impl` "auto" exports each ParC as the backend onnxruntime runs fastest at its shape
    (`choose_export_impls`); "spatial" / "circulant" export every ParC that way. The
    file is written atomically and only when the check passes; an existing file is
    kept unless `force`. Raises ExportError when export fails, the graph holds a DFT op,
    or onnxruntime's output differs from PyTorch's by more than `atol` (relative to the
    output's magnitude when that exceeds 1). `fuse` exports the inference form
    (`parc_surgery.fuse` of a copy: BatchNorms folded into adjacent convs and ParCs).
    """
    require_extra("onnx", "onnx", "onnxruntime")
    import onnx

    if impl not in EXPORT_IMPLS:
        raise ExportError(
            f"cannot export with the {impl!r} backend",
            hint=f"use one of {', '.join(EXPORT_IMPLS)} (FFT has no portable ONNX form)",
        )
    if opset < EXPORT_OPSET:
        raise ExportError(f"opset {opset} is too old", hint=f"use {EXPORT_OPSET} or newer")
    input_size = (int(input_size[0]), int(input_size[1]))
    target = check_output(path, force=force)  # fail before the slow part, not after
    with eval_mode(model):
        baked = baked_for_size(model, input_size)
        if fuse:
            from parc_surgery.fusing import fuse as fuse_model

            baked = fuse_model(baked, input_size)
        if impl == "auto":
            chosen = choose_export_impls(baked, input_size)
            for module, name in chosen.items():
                module.set_impl(name)
            forcing = contextlib.nullcontext()
        else:
            chosen = {m: impl for m in baked.modules() if isinstance(m, ParC)}
            forcing = forced_impl(impl)
        with atomic_write(target, force=force) as tmp, forcing:
            try:
                example = torch.zeros(1, input_channels(model), *input_size)
                trace_to_onnx(baked, tmp, example, opset)
            except Exception as err:  # the exporter raises many types; all mean "failed"
                raise ExportError(
                    f"ONNX export of {type(model).__name__} failed ({_first_line(err)})",
                    hint="rerun with another --impl (spatial or circulant), or report it "
                    "with the traceback from the Python API",
                ) from None
            proto = onnx.load(tmp)
            ops = onnx_op_types(proto)
            if "DFT" in ops:
                raise ExportError("the exported graph holds a DFT op although FFT was off")
            try:
                diff, scale = _check_with_onnxruntime(model, tmp, input_size, seed)
            except ExportError:
                raise
            except Exception as err:
                other = "circulant" if impl == "spatial" else "spatial"
                if impl == "auto":
                    other = "spatial or --impl circulant"
                raise ExportError(
                    f"onnxruntime cannot run the export at batch {_CHECK_BATCH} "
                    f"({_first_line(err)})",
                    hint=f"the file was not written; try --impl {other}",
                ) from None
            tolerance = atol * max(1.0, scale)
            if not diff <= tolerance:  # also catches NaN
                raise ExportError(
                    f"onnxruntime's output differs from PyTorch's by {diff:.3g} "
                    f"(tolerance {tolerance:.3g})",
                    hint="try the other --impl; the file was not written",
                )
            _write_metadata(proto, tmp, onnx_metadata(model, input_size, recipe))
            size_bytes = Path(tmp).stat().st_size
    return {
        "output": str(target),
        "opset": opset,
        "impl": impl,
        "fused": bool(fuse),
        "impls": dict(sorted(Counter(chosen.values()).items())),
        "input_size": list(input_size),
        "dynamic_axes": {"input": [0], "output": [0]},
        "max_abs_diff": diff,
        "tolerance": tolerance,
        "ok": True,
        "check_batch": _CHECK_BATCH,
        "ops": sorted(ops),
        "nodes": len(proto.graph.node),
        "bytes": size_bytes,
    }
