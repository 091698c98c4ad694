"""Tables and JSON-ready dicts for the erf, cam, bench and export results."""

from __future__ import annotations

import math
from typing import Any

from rich.table import Table

from parc_surgery.report import human_count

__all__ = ["bench_table", "cam_table", "erf_table", "export_lines", "json_ready"]

_MIN_WIDTH = 96  # wide enough that titles and captions stay on one or two lines


def json_ready(data: Any) -> Any:
    """A copy with NaN / inf floats as None (JSON has no NaN) and tuples as lists."""
    if isinstance(data, dict):
        return {str(k): json_ready(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [json_ready(v) for v in data]
    if isinstance(data, float) and not math.isfinite(data):
        return None
    return data


def _pct(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value * 100:.1f}%"


def _times(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.2f}x"


def _table(title: str, caption: str, columns: list[tuple[str, str]]) -> Table:
    """A result table: title and caption left-aligned, `columns` as (header, justify)."""
    table = Table(
        title=title,
        caption=caption,
        title_justify="left",
        caption_justify="left",
        min_width=_MIN_WIDTH,
    )
    for column, justify in columns:
        table.add_column(column, justify=justify)
    return table


def erf_table(result: dict) -> Table:
    """One row per model: the share of the input area holding 20/50/90% of the ERF mass."""
    keys = list(result["original"]["area_ratio"])
    table = _table(
        f"ERF of {result['model']} (stages {','.join(map(str, result['stages']))}), "
        f"{result['input_size'][0]}x{result['input_size'][1]}, "
        f"{result['inputs']['count']} {result['inputs']['kind']} inputs",
        "high-contribution area ratio: the smallest share of the input area that "
        "holds that share of the gradient mass (larger = wider ERF)",
        [("model", "left"), *((f"{key}% mass", "right") for key in keys)],
    )
    for name in ("original", "converted"):
        ratios = result[name]["area_ratio"]
        table.add_row(name, *(_pct(ratios[k]) for k in keys))
    table.add_row("converted / original", *(_times(result["area_ratio_gain"][k]) for k in keys))
    return table


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


def _spread(stats: dict) -> str:
    return f"{stats['min']:.2f}-{stats['max']:.2f} (IQR {stats['q1']:.2f}-{stats['q3']:.2f})"


_MEASURES = {
    # result["measure"] -> (key of the timings, row label, what was timed)
    "latency": ("latency_ms", "latency", "eval forward"),
    "train_step": ("step_ms", "training step", "forward + backward + SGD step"),
    "onnxruntime": ("latency_ms", "onnxruntime latency", "ONNX export in onnxruntime"),
}


def bench_table(result: dict) -> Table:
    """Rows params, MACs, time and its spread; columns original, converted, ratio."""
    orig, conv, ratios = result["original"], result["converted"], result["ratios"]
    key, label, timed = _MEASURES[result.get("measure", "latency")]
    size = result["input_size"]
    how = f"ParC impl {result['impl']}"
    if result.get("impls"):
        how += " (" + ", ".join(f"{n} {k}" for k, n in result["impls"].items()) + ")"
    where = result.get("device", "cpu") + (", compiled" if result.get("compiled") else "")
    table = _table(
        f"{result['model']} (stages {','.join(map(str, result['stages']))}): {size[0]}x{size[1]}, "
        f"batch {result['batch']}, {_plural(result['threads'] or 1, 'thread')}, {where}, "
        f"{how}, {timed}, median of {result['runs']} runs",
        "MACs at batch 1 with ParC counted as its spatial form; timings are "
        "wall-clock on this machine and vary with its load",
        [
            ("", "left"),
            ("original", "right"),
            ("converted", "right"),
            ("converted / original", "right"),
        ],
    )
    table.add_row(
        "params",
        human_count(orig["params"]),
        human_count(conv["params"]),
        f"{ratios['params']:.3f}",
    )
    table.add_row(
        "MACs", human_count(orig["macs"]), human_count(conv["macs"]), f"{ratios['macs']:.3f}"
    )
    table.add_row(
        f"{label} median (ms)",
        f"{orig[key]['median']:.2f}",
        f"{conv[key]['median']:.2f}",
        f"{ratios['latency']:.3f}",
    )
    table.add_row(
        f"{label} min-max (ms)",
        _spread(orig[key]),
        _spread(conv[key]),
        f"{ratios['latency_min']:.3f} (of the minima)",
    )
    rounds = ratios.get("latency_rounds")
    if rounds:
        # Each round times both back to back: the spread of its ratio is the run-to-run
        # spread of the measurement itself.
        table.add_row(
            f"per-round ratio ({rounds['runs']} rounds)",
            "",
            "",
            f"IQR {rounds['q1']:.3f}-{rounds['q3']:.3f}, "
            f"range {rounds['min']:.3f}-{rounds['max']:.3f}",
        )
    return table


def export_lines(result: dict) -> list[str]:
    """A few lines for people: where the file is, what it holds, how well it matched."""
    size = result["input_size"]
    impls = result.get("impls") or {}
    per_layer = " (" + ", ".join(f"{n} {k}" for k, n in impls.items()) + ")" if impls else ""
    return [
        f"exported {result['output']} (opset {result['opset']}, ParC as {result['impl']}"
        f"{per_layer}, {result['nodes']} nodes, {human_count(result['bytes'])}B)",
        f"input 'input' (batch, 3, {size[0]}, {size[1]}): the batch is dynamic, the "
        f"resolution is fixed at {size[0]}x{size[1]}",
        f"onnxruntime vs PyTorch on a seeded batch of {result['check_batch']}: max abs "
        f"difference {result['max_abs_diff']:.2e} (tolerance {result['tolerance']:.0e}): "
        f"{'ok' if result['ok'] else 'FAILED'}",
    ]


def _fixed(value: float | None, places: int = 3) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{places}f}"


def _class(index: int, name: str | None) -> str:
    """A class index with its name (escaped for the terminal and rich markup) when known."""
    from rich.markup import escape

    from parc_surgery.analysis.cam_labels import shown_name

    return f"{index} {escape(shown_name(name))}" if name else str(index)


def cam_table(result: dict) -> Table:
    """Per image, one row per model: its class, where the map's mass lies, and the IoU."""
    size = result["input_size"]
    table = _table(
        f"{result['method']} of {result['model']} at {result['target_layer']} "
        f"({size[0]}x{size[1]}; original weights: {result['original_weights']})",
        "mass 50% / 90%: the smallest share of the image area holding that share "
        "of the map; entropy: of the map, 1 = flat, 0 = one pixel; IoU: of the two models' "
        "top-20% regions",
        [
            ("image", "left"),
            ("model", "left"),
            ("top-1 (p)", "right"),
            ("map of", "right"),
            ("mass 50%", "right"),
            ("mass 90%", "right"),
            ("entropy", "right"),
            ("IoU top-20%", "right"),
        ],
    )
    for entry in result["images"]:
        for name in ("original", "converted"):
            model = entry[name]
            table.add_row(
                entry["image"] if name == "original" else "",
                name,
                f"{_class(model['predicted_class'], model.get('predicted_name'))} "
                f"({model['probability']:.2f})",
                _class(model["explained_class"], model.get("explained_name")),
                _pct(model["area_ratio"]["50"]),
                _pct(model["area_ratio"]["90"]),
                _fixed(model["entropy"]),
                _pct(entry["iou_top20"]) if name == "converted" else "",
            )
    if len(result["images"]) > 1:
        mean = result["mean"]
        for name in ("original", "converted"):
            table.add_row(
                "mean" if name == "original" else "",
                name,
                "",
                "",
                _pct(mean[name]["area_ratio"]["50"]),
                _pct(mean[name]["area_ratio"]["90"]),
                _fixed(mean[name]["entropy"]),
                _pct(mean["iou_top20"]) if name == "converted" else "",
            )
    return table
