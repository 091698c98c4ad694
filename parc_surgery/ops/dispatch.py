"""Choosing a backend: `choose_impl` (what "auto" runs) and `forced_impl` (override all).

How "auto" decides, in order:

1. Inside ``forced_impl(name)`` every ParC runs backend ``name``, whatever its ``impl``.
2. L <= 2 runs spatial: a kernel of two taps leaves nothing to gain.
3. A backend that cannot run well is ruled out: circulant when its L x L matrices would
   hold more than ``CIRCULANT_MAX_ELEMENTS`` numbers (dense convs at large L).
4. The shipped calibration table (``calibration.json``, written by
   ``benchmarks/bench_ops.py --write-calibration``) holds median times of each backend at
   a grid of shapes, separately for depthwise (one input channel per group) and dense /
   grouped convs, per direction ('H' and 'W' differ: oneDNN and pocketfft are faster
   along the contiguous W axis) and per mode: "eval" entries time the forward in
   inference, "train" entries forward + backward (with grad enabled the backward decides:
   at batch 32 the spatial form's backward made a MobileNetV2 pair 2x slower than
   circulant's, while its forward alone was as fast). ``auto`` takes the entry of the
   same kind, device type and mode (and direction, when known) nearest in (log2 L, half
   of log2 of the lines per call, where lines = batch * channels * other_len) and picks
   the backend that was fastest there.
5. Without a table (or with no entry of that kind) a rough analytic cost model decides:
   spatial costs L MACs per output, circulant the same at BLAS speed, fft O(log L) per
   output plus the per-frequency channel contraction.

`dtype` is accepted so callers can pass it, but the table is measured in float32 and
used for every dtype. Entries carry the device type they were measured on ("cpu" when
absent); on a device type without entries (CUDA unless a GPU calibration was written)
the analytic model for that device type decides. Choices are memoised per argument
tuple (the shapes of a model repeat), so "auto" costs a dict lookup per call.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator
from importlib import resources

import torch

from parc_surgery.options import BACKENDS

__all__ = [
    "CIRCULANT_MAX_ELEMENTS",
    "IMPLS",
    "choose_from_table",
    "choose_impl",
    "current_forced_impl",
    "forced_impl",
    "load_calibration",
]

# The one list of backend names (kept torch-free in parc_surgery.options for the CLI).
IMPLS = BACKENDS
# 2**24 fp32 numbers = 64 MiB of circulant matrices; beyond that memory traffic dominates.
CIRCULANT_MAX_ELEMENTS = 1 << 24

_forced: list[str] = []


@contextlib.contextmanager
def forced_impl(name: str) -> Iterator[None]:
    """Make every ParC inside the block use backend `name` (e.g. "spatial" for export)."""
    if name not in IMPLS:
        raise ValueError(f"forced_impl expects one of {IMPLS}, got {name!r}")
    _forced.append(name)
    try:
        yield
    finally:
        _forced.pop()


def current_forced_impl() -> str | None:
    """The backend forced by the innermost `forced_impl`, or None."""
    return _forced[-1] if _forced else None


_calibration: dict | None = None
_other_tables: dict[str, dict] = {}


def load_calibration(reload: bool = False, name: str = "calibration.json") -> dict:
    """A shipped calibration table (read once), or an empty one when the file is missing.

    `name` "calibration.json" is PyTorch's (what `auto` reads); "onnx_calibration.json"
    holds onnxruntime timings of the exportable backends (what `export --impl auto` reads).
    """
    global _calibration
    if name == "calibration.json" and _calibration is not None and not reload:
        return _calibration
    if name != "calibration.json" and name in _other_tables and not reload:
        return _other_tables[name]
    try:
        table = json.loads(resources.files("parc_surgery.ops").joinpath(name).read_text())
    except (FileNotFoundError, OSError, json.JSONDecodeError):
        table = {"entries": []}
    if name == "calibration.json":
        _calibration = table
    else:
        _other_tables[name] = table
    return table


def _kind(channels: int, groups: int) -> str:
    return "depthwise" if channels == groups else "dense"


def _model_costs(
    length: int, channels: int, groups: int, lines: int, device_type: str = "cpu"
) -> dict[str, float]:
    """Rough seconds per backend, fitted by eye to 2-core AVX-512 CPU measurements.

    spatial and circulant both do L MACs per output (oneDNN runs long depthwise kernels
    far below BLAS speed; circulant also streams its O*Cg*L*L matrix); fft does
    O(log L) work per output plus a Cg-long contraction per frequency. On a GPU (not
    calibrated here) launches dominate small maps and batched GEMMs run near peak:
    circulant while its matrices stay small, fft beyond.
    """
    cg = max(channels // max(groups, 1), 1)
    macs = lines * cg * length * length
    matrix_bytes = channels * cg * length * length * 4
    if device_type != "cpu":
        return {
            "spatial": 10e-6 + macs / (2e12 if cg == 1 else 20e12),
            "circulant": 10e-6 + macs / 10e12 + matrix_bytes / 1e12,
            "fft": 30e-6 + lines * length * (2e-12 * math.log2(length) + 1e-12 * cg),
        }
    return {
        "spatial": 30e-6 + macs / (20e9 if cg == 1 else 150e9),
        "circulant": 20e-6 + macs / 40e9 + matrix_bytes / 10e9,
        "fft": 50e-6 + lines * length * (0.15e-9 * math.log2(length) + 0.1e-9 * cg),
    }


def choose_impl(
    length: int,
    channels: int,
    groups: int,
    batch: int,
    other_len: int,
    dtype: torch.dtype = torch.float32,
    direction: str | None = None,
    device: torch.device | str = "cpu",
    mode: str = "eval",
) -> str:
    """The backend "auto" uses for a ParC over `length` on (batch, channels, other_len).

    `direction` ('H' / 'W'), when given, prefers calibration entries of that direction;
    `device` picks the entries measured on its device type; `mode` "train" prefers the
    entries timed forward + backward (what a training step pays), "eval" forward only.
    """
    forced = current_forced_impl()
    if forced is not None:
        return forced
    table = load_calibration()
    memo = table.setdefault("memo", {})  # lives and dies with the table it was read from
    device_type = torch.device(device).type
    key = (length, channels, groups, batch, other_len, direction, device_type, mode)
    choice = memo.get(key)
    if choice is None:
        lines = batch * channels * other_len
        choice = memo[key] = _choose(
            table, length, channels, groups, lines, direction, device_type, mode
        )
    return choice


def choose_from_table(
    table: dict,
    impls: tuple[str, ...],
    length: int,
    channels: int,
    groups: int,
    batch: int,
    other_len: int,
    direction: str | None = None,
) -> str:
    """The fastest of `impls` at the nearest entry of another table (onnxruntime's);
    the first of `impls` when the table has no entry of that kind or L <= 2."""
    lines = batch * channels * other_len
    return _choose(table, length, channels, groups, lines, direction, impls=impls)


def _choose(
    table: dict,
    length: int,
    channels: int,
    groups: int,
    lines: int,
    direction,
    device_type: str = "cpu",
    mode: str = "eval",
    impls: tuple[str, ...] | None = None,
) -> str:
    if length <= 2:
        return "spatial"  # nothing to gain: the kernel has at most two taps
    cg = max(channels // max(groups, 1), 1)
    allowed = set(IMPLS if impls is None else impls)
    if channels * cg * length * length > CIRCULANT_MAX_ELEMENTS:
        allowed.discard("circulant")
    kind = _kind(channels, groups)
    entries = [
        e
        for e in table.get("entries", [])
        if e["kind"] == kind and e.get("device", "cpu") == device_type
    ]
    if any(e.get("mode", "eval") == mode for e in entries):
        entries = [e for e in entries if e.get("mode", "eval") == mode]
    else:  # e.g. no training entries: the forward timings are the next best guide
        entries = [e for e in entries if e.get("mode", "eval") == "eval"]
    if direction is not None and any(e.get("direction") == direction for e in entries):
        entries = [e for e in entries if e.get("direction") == direction]
    if entries:

        def distance(e: dict) -> float:
            d_len = abs(math.log2(e["length"]) - math.log2(length))
            d_lines = abs(math.log2(e["lines"]) - math.log2(lines))
            return d_len + 0.5 * d_lines

        # Without a direction both directions' entries tie: their times are summed.
        best = min(distance(e) for e in entries)
        nearest = [e for e in entries if distance(e) == best]
        times = {k: sum(e["times"][k] for e in nearest) for k in allowed}
    elif impls is not None:
        return impls[0]  # another runtime's table without this kind: no cost model for it
    else:
        times = {
            k: v
            for k, v in _model_costs(length, channels, groups, lines, device_type).items()
            if k in allowed
        }
    return min(times, key=times.get)
