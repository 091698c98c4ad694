"""INT8 export: onnxruntime static quantization (QDQ) calibrated on a folder of images.

`quantize_export(model, out, input_size=..., data=DIR)` exports the FP32 graph with
`export_onnx` (into a temporary folder), calibrates activations on up to `calibration`
images of DIR's train split (its val split when there is no train split; read with the
project's dataset code, the model's eval transform), writes the QDQ INT8 model to `out`
atomically, and reports top-1 of FP32 and INT8 in onnxruntime on DIR's val split when
there is one. Weights are per-channel int8, activations uint8 (onnxruntime's defaults
for CPU).

Three choices decide whether the INT8 file is faster than the FP32 one (measured on an
AVX2 CPU without VNNI, onnxruntime 1.32, 1 thread; docs/benchmarks.md):

- The FP32 graph goes through onnxruntime's quantization pre-processing first
  (`quant_pre_process`: constant folding). Without it an Identity between an initializer
  and a Conv's bias (the exporter shares equal initializers that way) kept 41 of
  ResNet50's 57 convs in FP32 between Dequantize / Quantize pairs: INT8 was 0.84x FP32.
- ParC is exported in its spatial form (`impl="auto"` means "spatial" here): its convs
  become QLinearConv, while the circulant form's matrix is the left operand of a MatMul
  that stays FP32 (and made ViT-S's calibration fail in per-channel QuantizeLinear).
  The shipped onnxruntime calibration that `auto` reads is FP32 timings and does not
  apply to INT8. MobileNetV2 converted: 1.25x with `auto`, 1.55x with spatial.
- A graph with GELU (Erf) quantizes only Conv, MatMul and Gemm, so that onnxruntime keeps
  the bias + GELU fused in FP32 instead of a Q/DQ around each of its Erf, Div and Mul
  (ViT-S/16 converted: 1.43x -> 1.49x); a graph without one quantizes every op
  onnxruntime has an INT8 kernel for (ConvNets: the residual Adds and Concats stay in
  INT8; quantizing only Conv / MatMul / Gemm made MobileNetV2 1.0x).
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import numpy as np
from torch import nn

from parc_surgery.checkpoint import atomic_write, check_output
from parc_surgery.errors import ExportError
from parc_surgery.extras import require_extra

__all__ = ["INT8_IMPL", "TRANSFORMER_OP_TYPES", "onnx_top1", "quantize_export", "quantize_qdq"]

CALIBRATION_IMAGES = 256
INT8_IMPL = "spatial"  # what impl="auto" exports for INT8 (see the module docstring)
TRANSFORMER_OP_TYPES = ("Conv", "MatMul", "Gemm")  # quantized when the graph has GELU


def _split(config, split: str, num_classes):
    from parc_surgery.train.data import open_split

    return open_split(config, split, num_classes=num_classes)


def _has_split(root: Path, split: str) -> bool:
    return (root / split).exists() or (root / f"{split}.tar").exists()


def _arrays(images, limit: int | None) -> list[tuple[np.ndarray, int]]:
    total = len(images)
    count = total if limit is None else min(limit, total)
    picks = [math.floor(i * total / count) for i in range(count)]
    out = []
    for i in picks:
        x, y = images[i]
        out.append((x.unsqueeze(0).numpy().astype(np.float32), int(y)))
    return out


def onnx_top1(path: str | Path, samples: list[tuple[np.ndarray, int]], threads=None) -> float:
    """Top-1 (percent) of the ONNX model at `path` on (image batch of 1, label) samples."""
    from parc_surgery.analysis.bench_onnx import ort_session

    session = ort_session(path, threads)
    name = session.get_inputs()[0].name
    right = sum(int(session.run(None, {name: x})[0].argmax()) == y for x, y in samples)
    return 100.0 * right / max(len(samples), 1)


def _preprocessed(fp32: Path, folder: str) -> Path:
    """`fp32` after onnxruntime's quantization pre-processing (itself if that fails)."""
    from onnxruntime.quantization import quant_pre_process

    out = Path(folder, "pre.onnx")
    try:
        # Symbolic shape inference is for transformer ops onnxruntime fuses later; the
        # exported graphs have static shapes apart from the batch.
        quant_pre_process(str(fp32), str(out), skip_symbolic_shape=True)
    except Exception:  # an optimisation only: quantize the export as it is
        return fp32
    return out


def quantize_op_types(path: str | Path) -> list[str] | None:
    """The op types to quantize in the ONNX file at `path` (None: every one onnxruntime can)."""
    import onnx

    from parc_surgery.analysis.export import onnx_op_types

    ops = onnx_op_types(onnx.load(str(path), load_external_data=False))
    return list(TRANSFORMER_OP_TYPES) if ops & {"Erf", "Gelu", "BiasGelu"} else None


def quantize_qdq(
    fp32: str | Path,
    out: str | Path,
    inputs: list,
    input_name: str,
    *,
    op_types: list[str] | None = None,
    preprocess: bool = True,
) -> None:
    """Static QDQ INT8 of the ONNX file `fp32` into `out`, calibrated on `inputs` (arrays).

    Per-channel int8 weights, uint8 activations (MinMax calibration): onnxruntime's CPU
    recipe, after its pre-processing (`preprocess`), quantizing `op_types` (None: as
    `quantize_op_types` picks for the graph; see the module docstring).
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter(inputs)

        def get_next(self):
            item = next(self.items, None)
            return None if item is None else {input_name: item}

    with tempfile.TemporaryDirectory(prefix="parc-qdq-") as folder:
        source = _preprocessed(Path(fp32), folder) if preprocess else Path(fp32)
        chosen = quantize_op_types(source) if op_types is None else list(op_types)
        extra = {} if chosen is None else {"op_types_to_quantize": chosen}
        quantize_static(
            str(source),
            str(out),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            **extra,
        )


def quantize_export(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    input_size: tuple[int, int],
    data: str | os.PathLike,
    calibration: int = CALIBRATION_IMAGES,
    impl: str = "auto",
    fuse: bool = True,
    force: bool = False,
    recipe: dict | None = None,
    train_split: str = "train",
    val_split: str = "val",
) -> dict:
    """Export `model` as an INT8 QDQ ONNX file at `path`; a dict of results (see module)."""
    require_extra("onnx", "onnx", "onnxruntime")
    from parc_surgery.analysis.export import export_onnx
    from parc_surgery.train.data import DataConfig, head_classes, transform_for

    if calibration < 1:
        raise ExportError(f"--calibration-images must be at least 1, got {calibration}")
    target = check_output(path, force=force)
    root = Path(data)
    config = DataConfig(root=root, train_split=train_split, val_split=val_split)
    classes = head_classes(model)
    has_val = root.is_dir() and _has_split(root, val_split)
    calib_split = train_split if root.is_dir() and _has_split(root, train_split) else val_split
    images = _split(config, calib_split, classes)  # DataError when DIR or the split is missing
    transform = transform_for(model, config, input_size, training=False)
    calib = _arrays(images.set_transform(transform), calibration)
    val = None
    if has_val:
        val_images = _split(config, val_split, classes).set_transform(transform)
        val = _arrays(val_images, None)

    with tempfile.TemporaryDirectory(prefix="parc-int8-") as folder:
        fp32 = Path(folder, "fp32.onnx")
        exported = export_onnx(
            model,
            fp32,
            input_size=input_size,
            impl=INT8_IMPL if impl == "auto" else impl,
            fuse=fuse,
            recipe=recipe,
        )
        from parc_surgery.analysis.bench_onnx import ort_session

        input_name = ort_session(fp32).get_inputs()[0].name
        with atomic_write(target, force=force) as tmp:
            try:
                quantize_qdq(fp32, tmp, [x for x, _ in calib], input_name)
            except Exception as err:  # onnxruntime raises plain exceptions
                detail = str(err).splitlines()[0] if str(err) else type(err).__name__
                raise ExportError(
                    f"onnxruntime could not quantize the export ({detail})",
                    hint="export FP32 without --quantize, or try another --impl",
                ) from None
            ort_session(tmp)  # it loads, or the file is not written
        result = {
            "output": str(target),
            "quantize": "int8",
            "format": "QDQ",
            "calibration_split": calib_split,
            "calibration_images": len(calib),
            "input_size": list(input_size),
            "impls": exported["impls"],
            "fused": bool(fuse),
            "bytes": target.stat().st_size,
            "fp32_bytes": fp32.stat().st_size,
        }
        if val is not None:
            result["val_images"] = len(val)
            result["fp32_top1"] = onnx_top1(fp32, val)
            result["int8_top1"] = onnx_top1(target, val)
    return result
