"""Class activation maps (Grad-CAM and kin) of an original and a converted model, with numbers.

The maps come from torchcam (`torchcam.methods`: GradCAM, GradCAMpp, LayerCAM), in the
`analysis` extra: pure PyTorch hooks and `torch.autograd.grad`, nothing else to install
(pytorch-grad-cam, which computes the same maps, brings opencv, scipy, scikit-learn,
ttach and tqdm). The map of an image explains one class score at one layer; by default
the model's own top-1 class at the deepest feature map timm lists in `feature_info`
(the last stage's output), a path a converted model keeps.

Every number is computed on the map as drawn: the CAM after its ReLU, upsampled
bilinearly to the input size, not min-max normalised. Read as a distribution of "mass":

- `area_ratio` {"50", "90"}: the smallest share of the image area that holds 50% / 90%
  of the map's mass (the `erf` command's high-contribution area ratio). Larger means
  the evidence is spread over more of the image.
- `entropy`: the Shannon entropy of the map divided by log(number of pixels): 1 for a
  flat map, 0 for a single pixel.
- `iou_top20`: intersection over union of the two models' top-20% regions (the 20% of
  pixels with the highest values; ties at the threshold are all included): 1 when both
  models look at the same place.
A map with no mass (all zero) has NaN numbers (null in JSON).
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import math
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from parc_surgery.analysis.erf import area_ratios
from parc_surgery.analysis.images import ImageBatch
from parc_surgery.errors import UsageError

__all__ = [
    "CAM_METHODS",
    "MASS_SHARES",
    "TOP_AREA",
    "cam_maps",
    "cam_of_pair",
    "cam_summary",
    "compare_cam",
    "default_target_layer",
    "normalised_entropy",
    "region_iou",
    "require_extra",
    "top_region",
]

# Our method names -> torchcam.methods class names.
CAM_METHODS = {"gradcam": "GradCAM", "gradcam++": "GradCAMpp", "layercam": "LayerCAM"}
MASS_SHARES = (0.5, 0.9)
TOP_AREA = 0.2
_EXTRA_MODULES = ("torchcam", "matplotlib")


def require_extra(command: str, modules: Sequence[str] = _EXTRA_MODULES) -> None:
    """UsageError naming the pip command when a module of the `analysis` extra is missing."""
    missing = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise UsageError(
            f"{command} needs {' and '.join(missing)}, from parc-surgery's 'analysis' extra",
            hint="install it with: pip install 'parc-surgery[analysis]'",
        )


def default_target_layer(model: nn.Module) -> str:
    """The module path of the deepest feature map in timm's `feature_info`."""
    info = getattr(model, "feature_info", None)
    modules = dict(model.named_modules())
    entries = info if isinstance(info, (list, tuple)) else getattr(info, "info", None)
    for entry in reversed(entries or []):
        path = entry.get("module") if isinstance(entry, dict) else None
        if path in modules:
            return path
    raise UsageError(
        f"{type(model).__name__} has no timm feature_info to find its last stage from",
        hint="pass --target-layer with a module path (see model.named_modules())",
    )


def check_target_layer(models: dict[str, nn.Module], path: str) -> None:
    """UsageError unless `path` names a module in every model, with close names if not."""
    for label, model in models.items():
        names = [name for name, _ in model.named_modules() if name]
        if path in names:
            continue
        close = difflib.get_close_matches(path, names, n=5, cutoff=0.5)
        others = [other for other, m in models.items() if path in dict(m.named_modules())]
        where = f"the {label} model" + (f" (it is in the {others[0]} one)" if others else "")
        raise UsageError(
            f"--target-layer {path!r} is not a module of {where}",
            hint=(f"close names: {', '.join(close)}" if close else "see model.named_modules()")
            + (
                "; a swapped block's inner layers are replaced, so choose a layer outside it"
                if others
                else ""
            ),
        )


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def cam_maps(
    model: nn.Module,
    inputs: torch.Tensor,
    *,
    method: str = "gradcam",
    target_layer: str,
    class_index: int | None = None,
    chunk: int = 8,
) -> dict:
    """One CAM per input of `model` at `target_layer`, upsampled to the input size.

    Explains `class_index` when given, else each input's top-1 class. Returns "maps"
    (N, H, W) float tensor and per input "predicted_class", "probability",
    "explained_class", "explained_probability"; "feature_size" is the layer's (h, w).
    Runs `chunk` inputs at a time, so many images do not hold every activation at once.
    """
    import torchcam.methods

    if method not in CAM_METHODS:
        raise UsageError(f"--method {method!r} is not one of {', '.join(CAM_METHODS)}")
    check_target_layer({"given": model}, target_layer)
    extractor_type = getattr(torchcam.methods, CAM_METHODS[method])
    parts = []
    with (
        _eval_mode(model),
        torch.enable_grad(),
        extractor_type(model, target_layer, input_shape=tuple(inputs.shape[1:])) as extractor,
    ):
        for batch in inputs.split(chunk):
            parts.append(_cam_batch(model, extractor, batch, target_layer, class_index))
    raw = torch.cat([part[0] for part in parts])
    probs = torch.cat([part[1] for part in parts])
    explained = [c for part in parts for c in part[2]]
    predicted = probs.argmax(dim=1).tolist()
    maps = (
        F.interpolate(
            raw.float().unsqueeze(1),
            size=inputs.shape[-2:],
            mode="bilinear",
            align_corners=False,
        )
        .squeeze(1)
        .clamp_min(0)
    )
    rows = torch.arange(len(predicted))
    return {
        "maps": maps,
        "feature_size": list(raw.shape[-2:]),
        "predicted_class": predicted,
        "probability": probs[rows, predicted].tolist(),
        "explained_class": explained,
        "explained_probability": probs[rows, explained].tolist(),
    }


def _cam_batch(model, extractor, batch, target_layer: str, class_index: int | None):
    """(raw CAMs (n, h, w), softmax (n, classes), explained classes) of one forward."""
    scores = model(batch)
    if not isinstance(scores, torch.Tensor) or scores.dim() != 2:
        raise UsageError(
            "the model's output is not (batch, classes) scores: it has no classifier",
            hint="Grad-CAM explains a class score; use a model with a classification head",
        )
    activation = extractor.hook_a[0]
    if activation is None or activation.dim() != 4:
        shape = None if activation is None else tuple(activation.shape)
        raise UsageError(
            f"--target-layer {target_layer!r} does not output a (B, C, H, W) feature map "
            f"(got {shape})",
            hint="choose a convolutional stage, e.g. the default (the last stage)",
        )
    classes = scores.shape[1]
    if class_index is not None and not 0 <= class_index < classes:
        raise UsageError(
            f"--class {class_index} is out of range: the model has {classes} classes "
            f"(0-{classes - 1})"
        )
    probs = scores.detach().softmax(dim=1)
    explained = probs.argmax(dim=1).tolist() if class_index is None else [class_index] * len(batch)
    raw = extractor(explained, scores, normalized=False)[0]
    return raw.detach(), probs, explained


def normalised_entropy(cam: torch.Tensor) -> float:
    """Entropy of the map as a distribution over its pixels / log(pixels): 1 flat, 0 one pixel."""
    values = cam.flatten().double().clamp_min(0)
    mass = values.sum()
    if values.numel() < 2 or not torch.isfinite(mass) or mass <= 0:
        return float("nan")
    p = values[values > 0] / mass
    return float(-(p * p.log()).sum() / math.log(values.numel()))


def top_region(cam: torch.Tensor, area: float = TOP_AREA) -> torch.Tensor | None:
    """Boolean mask of the ceil(area * pixels) highest pixels (ties at the edge included)."""
    values = cam.flatten()
    if not torch.isfinite(values).all() or values.clamp_min(0).sum() <= 0:
        return None
    count = max(1, math.ceil(area * values.numel() - 1e-9))
    threshold = values.topk(count).values[-1]
    return cam >= threshold


def region_iou(a: torch.Tensor, b: torch.Tensor, area: float = TOP_AREA) -> float:
    """IoU of the top-`area` regions of two maps of the same shape (NaN if one is empty)."""
    if a.shape != b.shape:
        raise ValueError(f"maps differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    region_a, region_b = top_region(a, area), top_region(b, area)
    if region_a is None or region_b is None:
        return float("nan")
    return float((region_a & region_b).sum() / (region_a | region_b).sum())


def cam_summary(cam: torch.Tensor) -> dict:
    """The numbers of one map: area_ratio {"50", "90"} and entropy (see the module doc)."""
    return {"area_ratio": area_ratios(cam, MASS_SHARES), "entropy": normalised_entropy(cam)}


def _mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else float("nan")


def compare_cam(
    original: nn.Module,
    converted: nn.Module,
    inputs: torch.Tensor,
    *,
    method: str = "gradcam",
    target_layer: str | None = None,
    class_index: int | None = None,
) -> dict:
    """Both models' CAMs on `inputs`, per image and averaged over the images.

    Returns "method", "target_layer", "feature_size", "images" (per input: "original"
    and "converted" with their classes, probabilities and numbers, and "iou_top20"),
    "mean" (the numbers averaged over the inputs) and "maps" {name: (N, H, W)}.
    """
    models = {"original": original, "converted": converted}
    layer = target_layer or default_target_layer(original)
    check_target_layer(models, layer)
    runs = {
        name: cam_maps(m, inputs, method=method, target_layer=layer, class_index=class_index)
        for name, m in models.items()
    }
    images = []
    for i in range(inputs.shape[0]):
        entry: dict = {}
        for name, run in runs.items():
            entry[name] = {
                key: run[key][i]
                for key in (
                    "predicted_class",
                    "probability",
                    "explained_class",
                    "explained_probability",
                )
            } | cam_summary(run["maps"][i])
        entry["iou_top20"] = region_iou(runs["original"]["maps"][i], runs["converted"]["maps"][i])
        images.append(entry)
    mean: dict = {
        name: {
            "area_ratio": {
                key: _mean([img[name]["area_ratio"][key] for img in images])
                for key in images[0][name]["area_ratio"]
            },
            "entropy": _mean([img[name]["entropy"] for img in images]),
        }
        for name in models
    }
    mean["iou_top20"] = _mean([img["iou_top20"] for img in images])
    return {
        "method": method,
        "target_layer": layer,
        "feature_size": runs["original"]["feature_size"],
        "images": images,
        "mean": mean,
        "maps": {name: run["maps"] for name, run in runs.items()},
    }


def cam_of_pair(
    pair,
    paths: Sequence,
    *,
    method: str = "gradcam",
    target_layer: str | None = None,
    class_index: int | None = None,
    input_size: tuple[int, int] | None = None,
    class_names: Sequence[str] | None = None,
) -> tuple[dict, ImageBatch, dict[str, torch.Tensor]]:
    """compare_cam on image files for a ModelPair: (result, the image batch, the maps).

    The images go through the original's timm eval transform at `input_size` (default:
    the pair's). The result is what `parc-surgery cam --format json` prints, less "output".
    Classes are named by `class_names`, else by the images' ImageFolder class folders when
    they fit the model's head (see cam_labels); an image's folder is its true label.
    """
    from parc_surgery.analysis.cam_labels import add_labels, image_classes
    from parc_surgery.analysis.images import load_images
    from parc_surgery.models import input_channels
    from parc_surgery.train.data import head_classes

    classes = head_classes(pair.converted)
    if class_names is not None and classes is not None and len(class_names) != classes:
        raise UsageError(
            f"--class-names gives {len(class_names)} names but the model predicts "
            f"{classes} classes",
            hint="give one name a line, in the model's class order",
        )

    size = tuple(input_size or pair.input_size)
    batch = load_images(paths, pair.original, size, channels=input_channels(pair.original))
    result = compare_cam(
        pair.original,
        pair.converted,
        batch.inputs,
        method=method,
        target_layer=target_layer,
        class_index=class_index,
    )
    maps = result.pop("maps")
    for path, entry in zip(batch.paths, result["images"], strict=True):
        entry["image"] = path
    names = list(class_names) if class_names is not None else image_classes(paths, classes)
    add_labels(result, paths, names)
    result = {
        "checkpoint": pair.checkpoint,
        "model": pair.plan.model,
        "stages": list(pair.plan.stages),
        "input_size": list(size),
        "original_weights": pair.original_weights,
        "class": class_index,
        **result,
    }
    return result, batch, maps
