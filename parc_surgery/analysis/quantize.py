"""INT8 export: onnxruntime static quantization (QDQ) calibrated on a folder of images.

`quantize_export(model, out, input_size=..., data=DIR)` exports the FP32 graph with
`export_onnx` (into a temporary folder), calibrates activations on up to `calibration`
images of DIR's train split (its val split when there is no train split; read with the
project's dataset code, the model's eval transform), writes the QDQ INT8 model to `out`
atomically, and reports top-1 of FP32 and INT8 in onnxruntime on DIR's val split when
there is one. Weights are per-channel int8, activations uint8 (onnxruntime's defaults
for CPU).
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

__all__ = ["onnx_top1", "quantize_export", "quantize_qdq"]

CALIBRATION_IMAGES = 256


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


def quantize_qdq(fp32: str | Path, out: str | Path, inputs: list, input_name: str) -> None:
    """Static QDQ INT8 of the ONNX file `fp32` into `out`, calibrated on `inputs` (arrays).

    Per-channel int8 weights, uint8 activations (MinMax calibration): onnxruntime's CPU
    recipe.
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

    quantize_static(
        str(fp32),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
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
            model, fp32, input_size=input_size, impl=impl, fuse=fuse, recipe=recipe
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
