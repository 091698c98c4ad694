"""The fuzzed data path: mutated images into every image reader, edited states into resume.

As in test_security_fuzz.py (YAML, checkpoints): derandomized, no example database,
bounded memory. Allowed outcomes: success, or the reader's documented error (DataError
exit 10, UsageError exit 2, CheckpointError exit 6) with one paragraph; never another
exception. A state the check accepts must also be usable: its RNG records restore and
its weights load.
"""

from __future__ import annotations

import io
import random

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st
from PIL import Image
from test_security_fuzz import (
    FLIPS,
    JSON_VALUES,
    assert_documented,
    bounded_memory,
    fuzz_settings,
    mutated,
)
from torch import nn

from parc_surgery.errors import CheckpointError, DataError, UsageError
from parc_surgery.train.data import DataConfig, batches, eval_loader, open_split


def _png(width: int = 12, height: int = 10, mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (width, height), 128).save(buffer, format="PNG")
    return buffer.getvalue()


GOOD_IMAGES = [_png(), _png(mode="L"), _png(3, 40, "RGBA")]
HEADER_SIZES = st.tuples(st.integers(0, 1 << 31), st.integers(0, 1 << 31))


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz-data")
    for name in "ab":
        (root / "val" / name).mkdir(parents=True)
        (root / "val" / name / "good.png").write_bytes(_png())
    return root


def _read_all(root) -> None:
    from timm.data import create_transform

    config = DataConfig(root=root, batch_size=2, workers=0)
    images = open_split(config, "val", num_classes=None)
    images.set_transform(create_transform(input_size=(3, 16, 16), is_training=False))
    for _ in batches(eval_loader(images, config, rank=0, world=1, device=torch.device("cpu"))):
        pass


def _with_size(data: bytes, size) -> bytes:
    """A PNG whose IHDR claims `size` (the CRC is left wrong half the time: PIL checks it)."""
    import struct
    import zlib

    out = bytearray(data)
    out[16:24] = struct.pack(">II", *size)
    if size[0] % 2:
        out[29:33] = struct.pack(">I", zlib.crc32(bytes(out[12:29])))
    return bytes(out)


@fuzz_settings(60)
@given(
    choice=st.integers(0, len(GOOD_IMAGES) - 1),
    flips=FLIPS,
    cut=st.none() | st.floats(0, 1),
    size=st.none() | HEADER_SIZES,
)
def test_fuzz_images_into_the_data_and_cam_readers(choice, flips, cut, size, tree):
    from parc_surgery.analysis.images import open_image

    data = GOOD_IMAGES[choice]
    data = _with_size(data, size) if size is not None else mutated(data, flips, cut)
    target = tree / "val" / "a" / "fuzzed.png"
    target.write_bytes(data)
    with bounded_memory(1 << 30):
        try:
            _read_all(tree)
        except DataError as err:
            assert_documented(err)
            assert "fuzzed.png" in err.message
        try:
            open_image(target, 3)
        except UsageError as err:
            assert_documented(err)


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2)


def _good_state() -> dict:
    from parc_surgery.train.loop import Measurements
    from parc_surgery.train.state import capture_rng

    student = {k: v.clone() for k, v in _Tiny().state_dict().items()}
    rng = capture_rng()
    rng["python"] = list(rng["python"][:1]) + [list(rng["python"][1]), rng["python"][2]]
    return {
        "format": "parc-surgery-train-state/1",
        "fingerprint": {},
        "position": {"phase": 1, "epoch": 1, "step": 2, "update": 3, "loss_sum": 0.5},
        "student": student,
        "phase": {"optimizer": {"state": {}, "param_groups": []}, "scheduler": {}, "ema": None},
        "measurements": Measurements().to_dict(),
        "best_key": [0.5, -1.0],
        "best_state": {k: v.clone() for k, v in student.items()},
        "rng": [rng],
    }


def _places(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _places(item, (*prefix, key))
    elif isinstance(value, list) and len(value) < 50:  # not into the 625 Mersenne words
        for number, item in enumerate(value):
            yield from _places(item, (*prefix, number))


EDIT_VALUES = JSON_VALUES | st.sampled_from(
    [torch.zeros(0), torch.zeros(2, 3), torch.zeros(5056, dtype=torch.uint8), -5, 99, [], {}]
)


@fuzz_settings(150)
@given(
    edits=st.lists(
        st.tuples(st.integers(0, 10_000), EDIT_VALUES, st.booleans()), min_size=1, max_size=3
    )
)
# Found by this test in CI: an empty tensor as the python RNG's version made `==` ambiguous.
@example(edits=[(7, torch.zeros(0), True), (884, torch.zeros(0), False)])
def test_fuzz_state_edits_into_the_resume_check(edits, tmp_path_factory):
    from parc_surgery.train.loop import Measurements
    from parc_surgery.train.state import check_state, restore_rng

    state = _good_state()
    for choice, value, delete in edits:
        places = [p for p in _places(state) if p]
        place = places[choice % len(places)]
        parent = state
        for part in place[:-1]:
            parent = parent[part]
        if delete and isinstance(parent, dict):
            del parent[place[-1]]
        else:
            parent[place[-1]] = value
    reference = _Tiny().state_dict()
    phases = [("warmstart", 1), ("finetune", 2)]
    try:
        check_state(tmp_path_factory.getbasetemp(), state, student=reference, phases=phases,
                    world_size=1)  # fmt: skip
    except CheckpointError as err:
        assert_documented(err)
        return
    # Accepted: then every part is usable as the loop uses it.
    _Tiny().load_state_dict(state["student"])
    if state["best_state"] is not None:
        _Tiny().load_state_dict(state["best_state"])
    Measurements.from_dict(state["measurements"])
    saved = random.getstate()
    with torch.random.fork_rng(devices=[]):
        restore_rng(state["rng"][0])
    random.setstate(saved)
