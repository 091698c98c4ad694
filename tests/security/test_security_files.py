"""files.py: the one write path refuses what it must, never loses a file, never leaves a temp."""

from __future__ import annotations

import errno
import multiprocessing
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from parc_surgery import files
from parc_surgery.errors import OutputError, ParcSurgeryWarning


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(files.TEMP_SUFFIX))


def test_write_creates_the_file_with_an_ordinary_mode(tmp_path):
    target = tmp_path / "out.bin"
    files.write_bytes(target, b"x" * 100_000)
    assert target.read_bytes() == b"x" * 100_000
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
    assert _leftovers(tmp_path) == []


def test_trailing_slash_names_a_directory_and_writes_nothing(tmp_path):
    with pytest.raises(OutputError, match="ends with '/', so it names a directory") as info:
        files.write_bytes(f"{tmp_path}/newdir/", b"x")
    assert info.value.exit_code == 7
    assert list(tmp_path.iterdir()) == []


def test_a_directory_is_refused_even_with_force(tmp_path):
    with pytest.raises(OutputError, match="is a directory"):
        files.write_bytes(tmp_path, b"x", force=True)


@pytest.mark.skipif(not os.path.exists("/dev/null"), reason="needs /dev/null")
def test_a_device_is_never_replaced_even_with_force(tmp_path):
    link = tmp_path / "null-link"
    link.symlink_to("/dev/null")
    for target in ("/dev/null", link):
        with pytest.raises(OutputError, match="character device"):
            files.write_bytes(target, b"x", force=True)
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_a_fifo_is_refused(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(OutputError, match="FIFO"):
        files.write_bytes(fifo, b"x", force=True)


def test_an_input_file_is_never_overwritten_even_through_a_link(tmp_path):
    source = tmp_path / "weights.pth"
    source.write_bytes(b"precious")
    alias = tmp_path / "alias.pth"
    os.link(source, alias)  # another name for the same file
    for target in (source, alias):
        with pytest.raises(OutputError, match="is the input file"):
            files.write_bytes(target, b"new", force=True, inputs=[source])
    assert source.read_bytes() == b"precious"


def test_an_existing_file_needs_force(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(OutputError, match="already exists"):
        files.write_bytes(target, b"new")
    files.write_bytes(target, b"new", force=True)
    assert target.read_bytes() == b"new"


def test_a_file_appearing_during_the_write_is_kept_and_the_loser_exits_7(tmp_path, monkeypatch):
    target = tmp_path / "out.bin"
    real_link = os.link

    def racing_link(src, dst, *args, **kwargs):
        Path(dst).write_bytes(b"the other run's file")  # another run finished first
        return real_link(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "link", racing_link)
    with pytest.raises(OutputError, match="another process wrote it"):
        files.write_bytes(target, b"mine")
    assert target.read_bytes() == b"the other run's file"
    assert _leftovers(tmp_path) == []


def _race(target: str, payload: bytes, barrier, results) -> None:
    barrier.wait()
    try:
        files.write_bytes(target, payload * 200_000)
        results.put("ok")
    except OutputError:
        results.put("refused")


def test_simultaneous_runs_without_force_one_wins_the_others_exit_7(tmp_path):
    target = str(tmp_path / "out.bin")
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(4), context.Queue()
    workers = [
        context.Process(target=_race, args=(target, bytes([65 + n]), barrier, results))
        for n in range(4)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    outcomes = sorted(results.get(timeout=5) for _ in workers)
    assert outcomes == ["ok", "refused", "refused", "refused"]
    data = Path(target).read_bytes()
    assert len(data) == 200_000 and len(set(data)) == 1  # one whole file, not a mixture
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize(
    ("where", "code", "reason"),
    [
        ("write", errno.ENOSPC, "ENOSPC"),
        ("write", errno.EDQUOT, "EDQUOT"),
        ("link", errno.EACCES, "EACCES"),
        ("link", errno.EROFS, "EROFS"),
        ("replace", errno.EISDIR, "EISDIR"),
    ],
)
def test_os_errors_are_exit_7_with_path_and_reason_and_leave_nothing(
    tmp_path, monkeypatch, where, code, reason
):
    target = tmp_path / "out.bin"
    force = where == "replace"
    if force:
        target.write_bytes(b"old")

    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, where, fail)
    with pytest.raises(OutputError) as info:
        files.write_bytes(target, b"x" * 10_000, force=force)
    assert info.value.exit_code == 7
    assert str(target) in info.value.message and reason in info.value.message
    assert _leftovers(tmp_path) == []
    assert target.read_bytes() == b"old" if force else not target.exists()


def test_a_name_too_long_is_exit_7_before_anything_is_written(tmp_path):
    with pytest.raises(OutputError, match="File name too long") as info:
        files.write_bytes(tmp_path / ("x" * 300), b"x")
    assert "ENAMETOOLONG" in info.value.message
    assert list(tmp_path.iterdir()) == []


def test_a_long_name_that_fits_still_gets_a_temporary_file_that_fits(tmp_path):
    target = tmp_path / ("y" * 250)
    files.write_bytes(target, b"x")
    assert target.read_bytes() == b"x"


def test_an_interrupted_writer_leaves_no_temporary_file(tmp_path):
    with pytest.raises(KeyboardInterrupt), files.atomic_output(tmp_path / "o.bin") as tmp:
        Path(tmp).write_bytes(b"half")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_temporary_files_of_killed_runs_are_removed_or_reported(tmp_path):
    target = tmp_path / "model.safetensors"
    # A run killed with -9 while writing: start one that writes its temp file and hangs.
    code = (
        "import os, sys, time; from parc_surgery import files\n"
        "with files.atomic_output(sys.argv[1]) as tmp:\n"
        "    open(tmp, 'wb').write(b'half'); print(tmp, flush=True); time.sleep(60)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(target)], stdout=subprocess.PIPE, text=True
    )
    left = Path(proc.stdout.readline().strip())
    proc.kill()
    proc.wait()
    assert left.exists() and left.name.endswith(files.TEMP_SUFFIX)
    foreign = tmp_path / f".other.0123abcd-1-89abcdef{files.TEMP_SUFFIX}"  # another host's
    foreign.write_bytes(b"?")
    os.utime(foreign, (1, 1))
    with pytest.warns(ParcSurgeryWarning) as caught:
        files.write_bytes(target, b"whole")
    messages = " ".join(str(w.message) for w in caught)
    assert "removed 1 temporary file" in messages and left.name in messages
    assert "may be left by killed runs" in messages and foreign.name in messages
    assert not left.exists() and foreign.exists()  # only the provably dead one is removed
    assert target.read_bytes() == b"whole"


def test_a_temporary_file_of_a_live_run_is_left_alone(tmp_path):
    live = tmp_path / f".x.{files._host_tag()}-{os.getpid()}-00000000{files.TEMP_SUFFIX}"
    live.write_bytes(b"being written")
    files.write_bytes(tmp_path / "y", b"y")
    assert live.exists()


def test_a_symlink_target_is_written_through(tmp_path):
    real = tmp_path / "real.bin"
    real.write_bytes(b"old")
    link = tmp_path / "link.bin"
    link.symlink_to(real)
    files.write_bytes(link, b"new", force=True)
    assert link.is_symlink() and real.read_bytes() == b"new"


def test_a_missing_folder_is_named(tmp_path):
    with pytest.raises(OutputError, match="folder .* does not exist"):
        files.write_bytes(tmp_path / "no" / "such" / "x.bin", b"x")


def test_ctrl_c_during_a_conversion_exits_130_and_writes_nothing(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from parc_surgery.cli import app

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "write", interrupted)  # Ctrl-C while the checkpoint is written
    out = tmp_path / "x.safetensors"
    args = ["convert", "test_convnext", "--input-size", "64", "-o", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 130 and "interrupted" in result.stderr
    assert list(tmp_path.iterdir()) == []
