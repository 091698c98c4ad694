"""Resumable training state: one file per run, replaced atomically.

`DIR/state.pt` holds the model, optimizer, scheduler and EMA state, every rank's RNG
states, the position (phase, epoch, step) and what was measured so far. It is written
to a temporary file beside it and renamed over it (checkpoint.atomic_write), so a kill
at any moment leaves either the previous state or the new one, never half of one.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, ValidationError

from parc_surgery.errors import CheckpointError, UsageError
from parc_surgery.files import os_error

__all__ = [
    "STATE_FORMAT",
    "STATE_NAME",
    "capture_rng",
    "check_state",
    "read_state",
    "restore_rng",
    "write_state",
]

STATE_FORMAT = "parc-surgery-train-state/1"
STATE_NAME = "state.pt"


def capture_rng() -> dict[str, Any]:
    """This process's RNG states: torch (CPU and CUDA), Python's random, numpy's."""
    import numpy as np

    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
        # numpy's state as plain data, so the file loads with weights_only=True
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
    }


def restore_rng(state: dict[str, Any]) -> None:
    """Put back what capture_rng() returned."""
    import numpy as np

    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))


def write_state(directory: Path, state: dict[str, Any]) -> Path:
    """Write `state` to DIR/state.pt atomically (the previous state stays until the rename)."""
    from parc_surgery.checkpoint import atomic_write

    target = Path(directory) / STATE_NAME
    _unlink_planted_link(target)
    with atomic_write(target, force=True) as tmp, open(tmp, "wb") as handle:
        sink = _Sink(handle)
        try:
            torch.save({"format": STATE_FORMAT, **state}, sink)
        except RuntimeError:
            # torch's zip writer turns a failed write (full disk, file too large) into a
            # RuntimeError about positions; the OSError it swallowed is the real reason
            if sink.error is None:
                raise
            raise sink.error from None
    return target


class _Sink:
    """A file torch.save writes into that remembers the OSError of a failed write."""

    def __init__(self, handle) -> None:
        self.handle = handle
        self.error: OSError | None = None

    def write(self, data) -> int:
        try:
            return self.handle.write(data)
        except OSError as err:
            self.error = err
            raise

    def flush(self) -> None:
        self.handle.flush()


def _unlink_planted_link(target: Path) -> None:
    """A link at DIR/state.pt (dangling or not) is removed, never followed: the state is a
    regular file inside the folder, whatever the link points at."""
    if target.is_symlink():
        try:
            target.unlink()
        except OSError as err:
            raise os_error(target, err, doing="replace the link") from None


def read_state(directory: Path, fingerprint: dict[str, Any]) -> dict[str, Any]:
    """DIR/state.pt, checked to belong to a run with the same `fingerprint`."""
    path = Path(directory) / STATE_NAME
    if not path.is_file():
        raise UsageError(
            f"--resume: {path} does not exist",
            hint="start without --resume (the first run writes it), or check --checkpoint-dir",
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a damaged file
        raise CheckpointError(
            f"{path} could not be read ({type(err).__name__})",
            hint="delete it and start again without --resume",
        ) from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{path} is not a parc-surgery training state")
    saved = state.get("fingerprint", {})
    if not isinstance(saved, dict):
        raise CheckpointError(f"{path}: 'fingerprint' is not a record", hint=_DELETE)
    changed = sorted(_differences(saved, fingerprint))
    if changed:
        shown = ", ".join(changed[:8]) + (
            f" and {len(changed) - 8} more" if len(changed) > 8 else ""
        )
        raise UsageError(
            f"--resume: {path} belongs to a run with other settings: {shown} differ",
            hint="resume with the options of the interrupted run, or start a new --checkpoint-dir",
        )
    return state


_DELETE = "the file was edited or damaged: delete it and start again without --resume"
_KEYS = {"format", "fingerprint", "position", "student", "phase", "measurements"}
_KEYS |= {"best_key", "best_state", "rng"}
_POSITION = {"phase": int, "epoch": int, "step": int, "update": int}
_POSITION_OPTIONAL = {"loss_sum": (int, float), "loss_steps": int}


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class _EvalRecord(_Record):  # train.evaluate.EvalResult
    top1: float
    top5: float
    loss: float
    images: int
    seconds: float
    images_per_s: float
    topk: int = 5


class _EpochRecord(_Record):  # train.loop.EpochRecord
    phase: str
    epoch: int
    train_loss: float
    lr: float
    seconds: float
    val: _EvalRecord
    select: _EvalRecord | None = None


class _Measurements(_Record):  # train.loop.Measurements
    original: _EvalRecord | None = None
    before: _EvalRecord | None = None
    after_warmstart: _EvalRecord | None = None
    after_finetune: _EvalRecord | None = None
    best_epoch: int | None = None
    selected_on: Literal["holdout", "last"] = "last"
    written: Literal["finetune", "warmstart"] | None = None
    block_nmse_before: dict[str, float] | None = None
    block_nmse_after: dict[str, float] | None = None
    history: list[_EpochRecord] = []


def _first_problem(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    return f"{where}: {first['msg']}" if where else first["msg"]


def _differences(saved: Any, now: Any, prefix: str = "") -> list[str]:
    """Dotted names of the fingerprint entries that differ (nested records compared by key)."""
    if isinstance(saved, dict) and isinstance(now, dict):
        found = []
        for key in sorted(set(saved) | set(now), key=str):
            found += _differences(saved.get(key), now.get(key), f"{prefix}{key}.")
        return found
    return [] if saved == now else [prefix.rstrip(".") or "fingerprint"]


def _weights_problem(value: Any, reference: dict[str, torch.Tensor]) -> str | None:
    if not isinstance(value, dict):
        return "is not a record of tensors"
    missing = sorted(set(reference) - set(value))
    extra = sorted(set(value) - set(reference), key=str)
    if missing or extra:
        return f"lacks {missing[:3]}, has unknown {extra[:3]}"
    for name, tensor in reference.items():
        entry = value[name]
        if not isinstance(entry, torch.Tensor):
            return f"entry {name!r} is not a tensor"
        if entry.shape != tensor.shape or entry.dtype != tensor.dtype:
            return (
                f"entry {name!r} is {entry.dtype} {tuple(entry.shape)}, the model's "
                f"{tensor.dtype} {tuple(tensor.shape)}"
            )
    return None


def _rng_problem(rng: Any) -> str | None:
    if not isinstance(rng, dict) or set(rng) != {"torch", "cuda", "python", "numpy"}:
        return "is not a record of torch, cuda, python and numpy states"
    reference = torch.get_rng_state()
    state = rng["torch"]
    if (
        not isinstance(state, torch.Tensor)
        or state.dtype != torch.uint8
        or state.shape != reference.shape
    ):
        return "'torch' is not a CPU generator state"
    if not isinstance(rng["cuda"], list) or not all(
        isinstance(t, torch.Tensor) and t.dtype == torch.uint8 for t in rng["cuda"]
    ):
        return "'cuda' is not a list of generator states"
    python = rng["python"]
    if not (
        isinstance(python, (tuple, list))
        and len(python) == 3
        and type(python[0]) is int  # a tensor here would make == ambiguous
        and python[0] == random.getstate()[0]
        and isinstance(python[1], (tuple, list))
        and len(python[1]) == len(random.getstate()[1])
        and all(type(v) is int and 0 <= v < 2**32 for v in python[1][:-1])
        and type(python[1][-1]) is int
        and 0 <= python[1][-1] <= len(python[1]) - 1
        and (python[2] is None or isinstance(python[2], float))
    ):
        return "'python' is not a random.getstate() record"
    numpy = rng["numpy"]
    if not (
        isinstance(numpy, (tuple, list))
        and len(numpy) == 5
        and type(numpy[0]) is str
        and numpy[0] == "MT19937"
        and isinstance(numpy[1], torch.Tensor)
        and numpy[1].shape == (624,)
        and not numpy[1].is_floating_point()
        and type(numpy[2]) is int
        and 0 <= numpy[2] <= 624
        and type(numpy[3]) is int
        and isinstance(numpy[4], (int, float))
    ):
        return "'numpy' is not a numpy MT19937 state"
    if bool(((numpy[1] < 0) | (numpy[1] >= 2**32)).any()):
        return "'numpy' keys lie outside 32 bits"
    return None


def check_state(
    path: Path,
    state: dict[str, Any],
    *,
    student: dict[str, torch.Tensor],
    phases: list[tuple[str, int]],
    world_size: int,
) -> None:
    """Refuse (CheckpointError, exit 6, naming the key) a state this run cannot use.

    Everything is checked before any of it is used: the keys, the position's fields and
    ranges (phase within the run's phases, epoch within that phase's epochs), the student
    and best weights against the model's names, shapes and dtypes, the RNG records, and
    the measurements' and phase records' shapes.
    """

    def bad(key: str, why: str) -> CheckpointError:
        return CheckpointError(f"{path}: {key!r} {why}", hint=_DELETE)

    keys = set(state)
    if keys != _KEYS:
        missing, extra = sorted(_KEYS - keys), sorted(keys - _KEYS, key=str)
        key = (missing or extra)[0]
        raise bad(key, "is missing" if missing else "is not a training state key")
    position = state["position"]
    if not isinstance(position, dict):
        raise bad("position", "is not a record")
    for name in position:
        if name not in _POSITION and name not in _POSITION_OPTIONAL:
            raise bad(f"position.{name}", "is not a position field")
    for name, kind in {**_POSITION, **_POSITION_OPTIONAL}.items():
        if name not in position:
            if name in _POSITION:
                raise bad(f"position.{name}", "is missing")
            continue
        value = position[name]
        if isinstance(value, bool) or not isinstance(value, kind) or value < 0:
            raise bad(f"position.{name}", f"is {value!r}, not a non-negative number")
    if position["phase"] > len(phases):
        raise bad("position.phase", f"is {position['phase']}; this run has {len(phases)} phases")
    if position["phase"] < len(phases):
        name, epochs = phases[position["phase"]]
        if position["epoch"] > epochs:
            raise bad("position.epoch", f"is {position['epoch']}; {name} has {epochs} epochs")
    problem = _weights_problem(state["student"], student)
    if problem:
        raise bad("student", problem)
    if state["best_state"] is not None:
        problem = _weights_problem(state["best_state"], student)
        if problem:
            raise bad("best_state", problem)
    best_key = state["best_key"]
    if best_key is not None and not (
        isinstance(best_key, list)
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in best_key)
    ):
        raise bad("best_key", "is not a list of numbers")
    if (best_key is None) != (state["best_state"] is None):
        raise bad("best_state", "and 'best_key' must be both set or both empty")
    rng = state["rng"]
    if not isinstance(rng, list) or len(rng) not in {1, world_size} or not rng:
        raise bad("rng", f"is not a list of 1 or {world_size} RNG records")
    for index, record in enumerate(rng):
        problem = _rng_problem(record)
        if problem:
            raise bad(f"rng[{index}]", problem)
    try:
        _Measurements.model_validate(state["measurements"])
    except ValidationError as err:
        raise bad("measurements", f"does not fit the record ({_first_problem(err)})") from None
    phase = state["phase"]
    if phase is not None and not (
        isinstance(phase, dict)
        and {"optimizer", "scheduler", "ema"} <= set(phase)
        and isinstance(phase["optimizer"], dict)
        and isinstance(phase["scheduler"], dict)
    ):
        raise bad("phase", "is not an optimizer / scheduler / ema record")
