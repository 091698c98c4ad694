"""One spelling per option across commands, --version, completion, convert --init."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file
from typer.testing import CliRunner

import parc_surgery
from parc_surgery.checkpoint import read_recipe
from parc_surgery.cli import app

runner = CliRunner()

WRITING = ["convert", "erf", "export", "cam", "finetune"]
# Every command builds or runs a model, so takes --threads, except these, which only read
# and write files (rules list prints names; save-pretrained and export-official re-save
# a checkpoint's tensors). A new command is in neither list until someone decides.
NOT_COMPUTING = {"rules list", "save-pretrained", "export-official"}
COMPUTING = [
    "convert", "erf", "bench", "export", "batch", "cam", "inspect", "import-official",
    "eval", "finetune", "train", "rules validate",
]  # fmt: skip


def _help(command: str) -> str:
    result = runner.invoke(app, [*command.split(), "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.mark.parametrize("command", WRITING)
def test_every_command_that_writes_a_file_takes_dash_o_and_output(command):
    text = _help(command)
    assert "-o, --output" in text


def _commands() -> dict[str, object]:
    """Every leaf command by its full name ("rules validate"), as click has it."""
    import typer.main

    found = {}

    def walk(command, names):
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                walk(sub, [*names, name])
        else:
            found[" ".join(names)] = command

    walk(typer.main.get_command(app), [])
    return found


def test_every_command_is_either_computing_or_not():
    assert set(_commands()) == set(COMPUTING) | NOT_COMPUTING


@pytest.mark.parametrize("command", COMPUTING)
def test_every_command_that_computes_takes_threads(command):
    # click's real parameter, declared by the shared alias (its help text), not prose.
    from typing import get_args

    from parc_surgery.cli.options import ThreadsOpt

    params = [p for p in _commands()[command].params if "--threads" in p.opts]
    assert len(params) == 1, f"{command} has no --threads"
    assert params[0].opts == ["--threads"] and not params[0].hidden
    assert params[0].help == get_args(ThreadsOpt)[1].help
    assert "--threads" in _help(command)


def test_bench_spells_the_batch_size_as_eval_and_finetune_do():
    for command in ("bench", "eval", "finetune"):
        assert "-b, --batch-size" in _help(command), command


def _options(command: str) -> dict[str, bool]:
    """The command's real option names (click's parameter list), each with its hidden flag."""
    params = _commands()[command].params
    return {opt: getattr(p, "hidden", False) for p in params for opt in p.opts}


def test_finetune_names_the_block_wise_phase_warm_start():
    # From the parameter list, not the help text: the help's prose names the option too, so
    # a renamed option would still pass a text search.
    options = _options("finetune")
    assert options.get("--warm-start-epochs") is False  # a visible option of that name
    assert options.get("--lr-warmup-epochs") is False
    assert options.get("--warmup-epochs") is True  # the old spelling: hidden, deprecated
    assert "--warmup-epochs " not in _help("finetune")


def test_version_and_shell_completion():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"parc-surgery {parc_surgery.__version__}"
    top = runner.invoke(app, ["--help"]).stdout
    assert "--install-completion" in top and "--show-completion" in top


@pytest.mark.parametrize(
    "args",
    [
        ["convert", "resnet18", "--dry-run"],
        ["inspect", "resnet18"],
        ["batch", "jobs.yaml"],
        ["rules", "validate", "default", "--model", "resnet18"],
        ["import-official", "parc.pt", "--arch", "parcnet-s", "-o", "x.safetensors"],
    ],
)
def test_threads_below_one_is_a_usage_error(args):
    result = runner.invoke(app, [*args, "--threads", "0"])
    assert result.exit_code == 2, result.output
    assert "--threads must be at least 1" in result.output


def test_inspect_and_batch_run_on_the_threads_asked_for(monkeypatch, tmp_path):
    import torch

    asked = []
    monkeypatch.setattr(torch, "set_num_threads", asked.append)
    result = runner.invoke(app, ["inspect", "resnet18", "--input-size", "64", "--threads", "1"])
    assert result.exit_code == 0, result.output
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text("jobs:\n  - {model: test_convnext, input_size: 32}\n")
    result = runner.invoke(app, ["batch", str(jobs), "--threads", "2", "-q"])
    assert result.exit_code == 0, result.output
    assert asked == [1, 2]


def _convert(tmp_path, name: str, *extra: str):
    out = tmp_path / f"{name}.safetensors"
    args = ["convert", "resnet18", "--input-size", "64", "-o", str(out), "-q", *extra]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return out


def test_convert_init_overrides_the_rules_default(tmp_path):
    paper = _convert(tmp_path, "paper")
    local = _convert(tmp_path, "local", "--init", "from_local")
    a, b = load_file(str(paper)), load_file(str(local))
    assert a.keys() == b.keys()
    differ = [k for k in a if a[k].shape != b[k].shape or not a[k].equal(b[k])]
    assert differ  # the new ParC convs start differently; everything else is shared
    assert len(differ) < len(a) / 2
    swaps = read_recipe(local)["plan"]["swaps"]
    assert swaps and {s["options"]["init"] for s in swaps} == {"from_local"}
    assert {s["options"]["init"] for s in read_recipe(paper)["plan"]["swaps"]} == {"paper"}


def test_convert_init_rejects_an_unknown_value():
    result = runner.invoke(app, ["convert", "resnet18", "--dry-run", "--init", "zeros"])
    assert result.exit_code == 2 and "--init" in result.output


def test_the_old_out_spelling_still_writes_the_file(tmp_path):
    out = tmp_path / "old.safetensors"
    result = runner.invoke(app, ["convert", "resnet18", "--input-size", "64", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert json.dumps(read_recipe(out)["plan"]["input_size"]) == "[64, 64]"


def test_bench_takes_a_checkpoint_as_eval_and_erf_do(tmp_path):
    checkpoint = _convert(tmp_path, "bench")
    args = ["bench", str(checkpoint), "--runs", "1", "--warmup", "0", "-b", "1", "-f", "json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["model"] == str(checkpoint) and data["stages"] == [3, 4]
    assert data["input_size"] == [64, 64]  # the size the checkpoint was converted at
    assert data["original"]["params"] > data["converted"]["params"]
    assert "random init" not in result.stderr  # the weights do not change timings
    refused = runner.invoke(app, ["bench", str(checkpoint), "--stages", "4"])
    assert refused.exit_code == 2 and "cannot be used with a checkpoint" in refused.output


@pytest.mark.parametrize("model", ["resnet18", "torchvision:resnet18"])
def test_pretrained_without_network_fails_at_once_with_exit_6(monkeypatch, model):
    # No retries against an unreachable host: the weights' host is probed once, briefly,
    # and the model constructor (which would retry for ~45 s) is never reached.
    import socket

    import timm
    import torchvision

    def unreachable(address, timeout=None):
        assert timeout is not None and timeout <= 5
        raise socket.gaierror(-2, "Name or service not known")

    def must_not_run(*args, **kwargs):
        raise AssertionError("tried to download")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(socket, "create_connection", unreachable)
    monkeypatch.setattr(timm, "create_model", must_not_run)
    monkeypatch.setattr(torchvision.models, "get_model", must_not_run)
    result = runner.invoke(app, ["convert", model, "--pretrained", "--dry-run"])
    assert result.exit_code == 6, result.output
    assert "cannot be reached" in result.output and "--weights FILE" in result.output


def test_tables_in_a_file_or_pipe_have_no_padding_at_the_ends_of_the_lines():
    # rich centres a table's title over it and pads it to the table's width; piped output
    # (inspect, bench, eval, cam, batch, finetune) has none of it.
    result = runner.invoke(app, ["inspect", "resnet18", "--input-size", "64"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert any("layer4" in line for line in lines)
    assert [line for line in lines if line != line.rstrip()] == []
