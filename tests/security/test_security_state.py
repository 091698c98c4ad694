"""Edited training states (`finetune --resume`): each is exit 6 naming the wrong key.

A `state.pt` is written by a real one-epoch run of a tiny converted model, then edited
inside (it stays a valid weights-only pickle) and resumed. Before the schema check each
of these ended in a KeyError, TypeError, IndexError or load_state_dict traceback, or was
accepted silently (a forged position).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))
from train_testkit import convert_tiny, finetune_cli, make_digits  # noqa: E402

from parc_surgery.train.state import STATE_NAME  # noqa: E402

EXTRA = ["--warmup-epochs", "1", "--epochs", "1", "--seed", "3"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(checkpoint, teacher weights, data, a state folder after a finished run)."""
    root = tmp_path_factory.mktemp("state")
    data = make_digits(root / "digits", per_class=5)
    with torch.random.fork_rng(devices=[]):
        checkpoint, weights = convert_tiny(root, "test_convnext")
    state_dir = root / "state"
    first = finetune_cli(
        checkpoint, data, root / "out.safetensors", "-b", "4", "--checkpoint-dir",
        str(state_dir), *EXTRA, teacher=weights,
    )  # fmt: skip
    assert first.exit_code == 0, first.output
    return checkpoint, weights, data, state_dir


def _resume_edited(run, tmp_path, edit):
    checkpoint, weights, data, state_dir = run
    copy = tmp_path / "state"
    shutil.copytree(state_dir, copy)
    state = torch.load(copy / STATE_NAME, weights_only=True)
    edit(state)
    torch.save(state, copy / STATE_NAME)
    return finetune_cli(
        checkpoint, data, tmp_path / "out.safetensors", "-b", "4", "--checkpoint-dir",
        str(copy), "--resume", *EXTRA, teacher=weights,
    )  # fmt: skip


def _first_weight(state):
    return next(iter(state["student"]))


def _set(path, value):
    def edit(state):
        *parents, last = path
        target = state
        for key in parents:
            target = target[key]
        if value is _DELETE:
            del target[last]
        else:
            target[last] = value(target[last]) if callable(value) else value

    return edit


_DELETE = object()

CASES = {
    "missing student": (_set(["student"], _DELETE), "'student' is missing"),
    "unknown key": (lambda s: s.update(extra=1), "'extra' is not a training state key"),
    "position field": (_set(["position", "bogus"], 1), "position.bogus"),
    "negative epoch": (_set(["position", "epoch"], -5), "position.epoch"),
    "phase 99": (_set(["position", "phase"], 99), "position.phase"),
    "epoch past the phase": (_set(["position", "epoch"], 7), "position.epoch"),
    "measurements field": (_set(["measurements", "bogus"], 1), "'measurements'"),
    "empty rng": (_set(["rng"], []), "'rng'"),
    "garbage torch rng": (_set(["rng", 0, "torch"], torch.zeros(3, dtype=torch.uint8)), "rng[0]"),
    "garbage python rng": (_set(["rng", 0, "python"], (3, (1, 2), None)), "rng[0]"),
    "extra weight": (lambda s: s["student"].update(bogus=torch.zeros(1)), "'student'"),
    "missing weight": (lambda s: s["student"].pop(_first_weight(s)), "'student'"),
    "mis-shaped weight": (
        lambda s: s["student"].update({_first_weight(s): torch.zeros(1, 2, 3)}),
        "'student'",
    ),
    "non-tensor weight": (lambda s: s["student"].update({_first_weight(s): 3}), "'student'"),
    "best state misfit": (_set(["best_state"], {"x": torch.zeros(1)}), "'best_state'"),
    "phase record": (_set(["phase"], {"optimizer": 1}), "'phase'"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_an_edited_state_is_exit_6_naming_the_key(run, tmp_path, case):
    edit, named = CASES[case]
    result = _resume_edited(run, tmp_path, edit)
    assert result.exit_code == 6, result.output
    assert named in result.stderr, result.stderr
    assert "Traceback" not in result.output


def test_an_unedited_state_still_resumes(run, tmp_path):
    result = _resume_edited(run, tmp_path, lambda state: None)
    assert result.exit_code == 0, result.output


def test_a_temporary_state_left_by_kill_9_is_cleaned_by_the_next_run(run, tmp_path):
    """A kill -9 during the first state write leaves `.state.pt.<host>-<pid>-<token>.parc-tmp`
    of a process that is gone: the next write removes it and says so."""
    from parc_surgery.files import _host_tag

    checkpoint, weights, data, _ = run
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    left = state_dir / f".{STATE_NAME}.{_host_tag()}-999999999-abcd1234.parc-tmp"
    left.write_bytes(b"half a state")
    result = finetune_cli(
        checkpoint, data, tmp_path / "out.safetensors", "-b", "4", "--checkpoint-dir",
        str(state_dir), *EXTRA, teacher=weights,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert not left.exists()
    assert "temporary file" in result.stderr


def test_the_state_schema_knows_every_field_of_the_records_it_checks():
    """state.pt's strict schema mirrors train's dataclasses: a field added to a record
    and not to the schema would make every state written after it unresumable (exit 6)."""
    import dataclasses

    from parc_surgery.train import state
    from parc_surgery.train.evaluate import EvalResult
    from parc_surgery.train.loop import EpochRecord, Measurements

    for schema, record in [
        (state._EvalRecord, EvalResult),
        (state._EpochRecord, EpochRecord),
        (state._Measurements, Measurements),
    ]:
        fields = {field.name for field in dataclasses.fields(record)}
        assert set(schema.model_fields) == fields, (schema.__name__, record.__name__)
