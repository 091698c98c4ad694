"""Resumable training state: one file per run, replaced atomically.

`DIR/state.pt` holds the model, optimizer, scheduler and EMA state, every rank's RNG
states, the position (phase, epoch, step) and what was measured so far. It is written
to a temporary file beside it and renamed over it (checkpoint.atomic_write), so a kill
at any moment leaves either the previous state or the new one, never half of one.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch

from parc_surgery.errors import CheckpointError, UsageError
from parc_surgery.files import os_error

__all__ = ["STATE_FORMAT", "STATE_NAME", "capture_rng", "read_state", "restore_rng", "write_state"]

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
    changed = sorted(k for k in set(saved) | set(fingerprint) if saved.get(k) != fingerprint.get(k))
    if changed:
        details = "; ".join(
            f"{k}: {saved.get(k)!r} then, {fingerprint.get(k)!r} now" for k in changed
        )
        raise UsageError(
            f"--resume: {path} belongs to a run with other settings ({details})",
            hint="resume with the options of the interrupted run, or start a new --checkpoint-dir",
        )
    return state
