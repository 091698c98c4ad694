"""Hostile outputs: an output that is an input, planted links, zip bombs, failing writes,
non-finite training, terminal escapes, batch under SIGTERM."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))
from train_testkit import convert_tiny, finetune_cli, make_digits  # noqa: E402

from parc_surgery.cli import app  # noqa: E402


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(converted checkpoint, original weights, digits folder) for a tiny model."""
    folder = tmp_path_factory.mktemp("tiny")
    with torch.random.fork_rng(devices=[]):
        checkpoint, weights = convert_tiny(folder, "test_convnext")
    return checkpoint, weights, make_digits(folder / "digits", per_class=5)


@pytest.mark.parametrize("which", ["teacher", "checkpoint"])
def test_finetune_never_writes_over_its_inputs_even_with_force(tiny, which):
    checkpoint, weights, digits = tiny
    victim = weights if which == "teacher" else checkpoint
    before = _sha(victim)
    result = finetune_cli(checkpoint, digits, victim, "--force", teacher=weights)
    assert result.exit_code == 7, result.output
    assert "is the input file" in result.output
    assert _sha(victim) == before


def test_cam_never_writes_its_png_over_the_checkpoint(tiny):
    pytest.importorskip("matplotlib")
    checkpoint, _, digits = tiny
    image = next(p for p in sorted(digits.rglob("*.png")))
    before = _sha(checkpoint)
    args = ["cam", str(checkpoint), str(image), "--random-original", "-o", str(checkpoint)]
    result = CliRunner().invoke(app, [*args, "--force"])
    assert result.exit_code == 7, result.output
    assert "is the input file" in result.output
    assert _sha(checkpoint) == before


def test_convert_output_through_a_link_to_its_weights_is_refused(tiny, tmp_path):
    checkpoint, weights, _ = tiny
    link = tmp_path / "out.safetensors"
    link.symlink_to(weights)
    before = _sha(weights)
    args = ["test_convnext", "--model-arg", "num_classes=10", "--input-size", "64"]
    result = CliRunner().invoke(
        app, ["convert", *args, "--weights", str(weights), "-o", str(link), "--force"]
    )
    assert result.exit_code == 7, result.output
    assert _sha(weights) == before


def _bomb(path: Path, floats: int = 4_000_000) -> Path:
    """A torch.save file whose entries are re-packed deflated: tiny on disk, big unpacked."""
    import zipfile

    plain = path.with_suffix(".plain")
    torch.save({"w": torch.zeros(floats)}, plain)
    with zipfile.ZipFile(plain) as source, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as out:
        for entry in source.infolist():
            out.writestr(entry.filename, source.read(entry.filename))
    plain.unlink()
    return path


def test_a_zip_bomb_weights_file_is_refused_from_its_directory(tmp_path):
    bomb = _bomb(tmp_path / "bomb.pth")
    assert bomb.stat().st_size < 1_000_000  # 16 MB of tensor data
    args = ["convert", "test_convnext", "--input-size", "64", "--weights", str(bomb)]
    result = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "out.safetensors")])
    assert result.exit_code == 6, result.output
    assert "unpacks" in result.output and "zip bomb" in result.output
    assert not (tmp_path / "out.safetensors").exists()


def test_a_genuine_torch_weights_file_passes_the_zip_bound(tmp_path):
    from parc_surgery.weights import check_zip_size

    genuine = tmp_path / "w.pth"
    torch.save({"w": torch.zeros(4_000_000), "b": torch.ones(3)}, genuine)
    check_zip_size(genuine)  # no error


def test_import_official_refuses_a_zip_bomb(tmp_path):
    bomb = _bomb(tmp_path / "bomb.pth")
    args = ["import-official", str(bomb), "-o", str(tmp_path / "o.safetensors")]
    result = CliRunner().invoke(app, [*args, "--arch", "parc-resnet50"])
    assert result.exit_code == 6, result.output
    assert "zip bomb" in result.output


@pytest.mark.parametrize("dangling", [False, True])
def test_a_planted_state_link_is_replaced_never_followed(tiny, tmp_path, dangling):
    checkpoint, weights, digits = tiny
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    outside = tmp_path / "outside.txt"
    if not dangling:
        outside.write_text("precious")
    (state_dir / "state.pt").symlink_to(outside)
    out = tmp_path / "ft.safetensors"
    extra = ["--checkpoint-dir", str(state_dir), "--warmup-epochs", "0"]
    result = finetune_cli(checkpoint, digits, out, *extra, teacher=weights)
    assert result.exit_code == 0, result.output
    state = state_dir / "state.pt"
    assert not state.is_symlink() and state.is_file()
    if dangling:
        assert not outside.exists()
    else:
        assert outside.read_text() == "precious"


def test_checkpoint_dir_that_is_a_file_or_cannot_be_created_is_exit_7(tiny, tmp_path):
    checkpoint, weights, digits = tiny
    a_file = tmp_path / "file"
    a_file.write_text("x")
    for folder in (a_file, Path("/sys/parc-surgery-test/state")):
        if folder.parent.name == "parc-surgery-test" and not Path("/sys").is_dir():
            continue
        extra = ["--checkpoint-dir", str(folder)]
        out = tmp_path / "ft.safetensors"
        result = finetune_cli(checkpoint, digits, out, *extra, teacher=weights)
        assert result.exit_code == 7, result.output
        assert str(folder) in result.output
        assert "Traceback" not in result.output


def _limited(limit: int):
    import resource

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_a_full_disk_while_writing_the_state_is_exit_7(tiny, tmp_path):
    import subprocess

    from train_testkit import cli_env, parc_surgery

    checkpoint, weights, digits = tiny
    state_dir = tmp_path / "state"
    args = ["finetune", str(checkpoint), "--data", str(digits), "--teacher-weights", str(weights)]
    args += ["-o", str(tmp_path / "ft.safetensors"), "-j", "0", "-b", "8", "--epochs", "1"]
    args += ["--warmup-epochs", "0", "--checkpoint-dir", str(state_dir)]
    # a file may grow to 1.5 checkpoints: the state (model, AdamW moments, best) cannot
    limit = int(checkpoint.stat().st_size * 1.5)
    done = subprocess.run(
        parc_surgery(*args),
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=300,
        preexec_fn=_limited(limit),
    )
    assert done.returncode == 7, done.stderr
    assert str(state_dir / "state.pt") in done.stderr
    assert "Traceback" not in done.stderr
    assert [p.name for p in state_dir.iterdir()] == []  # no temporary file left


def test_json_to_a_full_disk_is_exit_7_with_the_path():
    import subprocess

    from train_testkit import cli_env, parc_surgery

    if not Path("/dev/full").exists():
        pytest.skip("needs /dev/full")
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            parc_surgery("rules", "list", "--format", "json"),
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            env=cli_env(),
            timeout=120,
        )
    assert done.returncode == 7, done.stderr
    assert "/dev/full" in done.stderr and "Traceback" not in done.stderr


def test_a_diverged_run_stops_with_exit_11_and_saves_no_nan_model(tiny, tmp_path):
    checkpoint, _, digits = tiny
    out, state_dir = tmp_path / "ft.safetensors", tmp_path / "state"
    extra = ["--no-teacher", "--warmup-epochs", "0", "--lr", "1e30", "--clip-grad", "0"]
    result = finetune_cli(checkpoint, digits, out, *extra, "--checkpoint-dir", str(state_dir))
    assert result.exit_code == 11, result.output
    assert "diverged" in result.output and "non-finite weight" in result.output
    assert not out.exists()
    assert not (state_dir / "state.pt").exists()  # the NaN state never replaces a finite one


def test_a_sigterm_during_a_batch_prints_the_summary_and_a_complete_json(tmp_path):
    import json
    import signal
    import subprocess

    from train_testkit import cli_env, parc_surgery

    jobs = tmp_path / "jobs.yaml"
    jobs.write_text(
        "jobs:\n  - {name: quick, model: test_convnext, input_size: 64}\n"
        "  - {name: slow, model: resnet50, input_size: 448, stages: [2, 3, 4]}\n"
        "  - {name: never, model: test_convnext, input_size: 64, output: n.safetensors}\n"
    )
    proc = subprocess.Popen(
        parc_surgery("batch", str(jobs), "--format", "json"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
    )
    for line in proc.stderr:
        if "[2] converting slow" in line:
            break
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr
    report = json.loads(stdout)
    assert report["interrupted"] and report["skipped"] == 1
    assert report["jobs"][0]["ok"] and report["jobs"][1]["exit_code"] == 143
    assert "stopped by SIGTERM: 1 jobs finished, 1 stopped, 1 not started" in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "jobs.yaml",
        "test_convnext-parc.safetensors",
    ]


def test_control_bytes_in_job_names_are_printed_escaped(tmp_path):
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text(
        'jobs:\n  - {name: "evil\\e]0;pwned\\a\\e[2J[bold]x", model: no_such_model_xyz}\n'
    )
    result = CliRunner().invoke(app, ["batch", str(jobs)])
    assert result.exit_code == 8, result.output
    assert "\x1b" not in result.output and "\x07" not in result.output
    assert "[1] converting evil\\x1b]0;pwned\\x07\\x1b[2J[bold]x" in result.output
    assert "evil\\x1b" in result.output.split("batch summary", 1)[1]


def test_control_bytes_in_data_file_names_are_printed_escaped(tiny, tmp_path):
    import shutil

    checkpoint, _, digits = tiny
    data = tmp_path / "data"
    shutil.copytree(digits, data)
    bad = data / "val" / sorted(p.name for p in (data / "val").iterdir())[0]
    (bad / "\x1b[2Jbroken.png").write_bytes(b"not a png")
    result = CliRunner().invoke(app, ["eval", str(checkpoint), "--data", str(data), "-j", "0"])
    assert result.exit_code == 10, result.output
    assert "\x1b" not in result.output
    assert "\\x1b[2Jbroken.png" in result.output
