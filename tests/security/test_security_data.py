"""Hostile data folders, tar splits and images: every one ends in a documented exit.

Each fixture (bombs, FIFOs, loops, tars, caches) is generated here, in a temporary folder.
A case that used to hang runs in a subprocess with a timeout, so a regression fails the
test instead of stalling the suite.
"""

from __future__ import annotations

import io
import os
import pickle
import struct
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from parc_surgery.cli import app

runner = CliRunner()
BIN = Path(sys.executable).parent


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims width x height over a few bytes of data (a bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def _tree(root: Path, split: str = "val") -> Path:
    for name in "ab":
        (root / split / name).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (16, 16), (i * 90, 40, 0)).save(root / split / name / f"{i}.png")
    return root


def _eval(data: Path, *extra: str):
    args = ["eval", "test_convnext", "--model-arg", "num_classes=2", "--data", str(data)]
    return runner.invoke(app, [*args, "-j", "0", "-b", "2", "--input-size", "32", *extra])


def _eval_subprocess(data: Path, timeout: float = 90) -> subprocess.CompletedProcess:
    args = [str(BIN / "parc-surgery"), "eval", "test_convnext", "--model-arg", "num_classes=2"]
    args += ["--data", str(data), "-j", "0", "-b", "2", "--input-size", "32"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.mark.parametrize("workers", ["0", "1"])
def test_a_decompression_bomb_in_a_data_folder_is_a_data_error(tmp_path, workers):
    data = _tree(tmp_path / "data")
    _png_header_only(data / "val" / "a" / "bomb.png", 30000, 30000)
    result = _eval(data, "-j", workers)
    assert result.exit_code == 10, result.output
    assert "bomb.png" in result.stderr and "limit" in result.stderr
    assert "Traceback" not in result.output


def test_a_very_wide_image_is_refused_not_an_overflow(tmp_path):
    data = _tree(tmp_path / "data")
    Image.new("L", (3_000_000, 1)).save(data / "val" / "b" / "wide.png")
    result = _eval(data)
    assert result.exit_code == 10, result.output
    assert "wide.png" in result.stderr and "times the other" in result.stderr


def test_every_reader_shares_the_pixel_limit(tmp_path):
    from parc_surgery.analysis.images import PIXEL_LIMIT, ImageTooLarge, open_bounded

    bomb = tmp_path / "bomb.png"
    _png_header_only(bomb, 20000, PIXEL_LIMIT // 20000 + 1)  # just over: PIL only warns here
    with pytest.raises(ImageTooLarge), open_bounded(bomb):
        pass
    folder = tmp_path / "images"
    folder.mkdir()
    bomb.rename(folder / "bomb.png")
    result = runner.invoke(
        app, ["erf", "test_convnext", "--images", str(folder), "--input-size", "32"]
    )
    assert result.exit_code == 2, result.output
    assert "bomb.png" in result.stderr and "Traceback" not in result.output


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_garbage_or_truncated_tar_split_is_a_data_error(tmp_path, damage):
    data = tmp_path / "data"
    data.mkdir()
    tar = data / "val.tar"
    if damage == "garbage":
        tar.write_bytes(b"not a tar at all " * 200)
    else:
        _write_tar(tar)
        tar.write_bytes(tar.read_bytes()[:1300])  # cut inside the second member
    result = _eval(data)
    assert result.exit_code == 10, result.output
    assert "val.tar" in result.stderr and "Traceback" not in result.output


def _write_tar(path: Path) -> None:
    with tarfile.open(path, "w") as archive:
        for name in "ab":
            for i in range(2):
                buffer = io.BytesIO()
                Image.new("RGB", (16, 16), (i * 90, 0, 0)).save(buffer, format="PNG")
                info = tarfile.TarInfo(f"{name}/{i}.png")
                info.size = buffer.tell()
                buffer.seek(0)
                archive.addfile(info, buffer)


class _Payload:
    """Unpickling this object writes a marker file: what a hostile cache would run."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_timms_tar_info_cache_is_never_read_nor_written(tmp_path, monkeypatch):
    import timm.data.readers.reader_image_in_tar as timm_tar

    data = tmp_path / "data"
    data.mkdir()
    _write_tar(data / "val.tar")
    cache = data / "_val_tarinfos.pickle"
    marker = tmp_path / "payload-ran"
    cache.write_bytes(pickle.dumps({"tartrees": [_Payload(str(marker))]}))
    real_getsize = os.path.getsize

    def huge(path):  # timm reads (and writes) the cache on its own above 10 GB of tars
        return 11 * 1024**3 if str(path).endswith(".tar") else real_getsize(path)

    monkeypatch.setattr(timm_tar.os.path, "getsize", huge)
    result = _eval(data)
    assert result.exit_code == 0, result.output
    assert not marker.exists()
    cache.unlink()
    result = _eval(data)
    assert result.exit_code == 0, result.output
    assert not cache.exists(), "eval wrote timm's cache into the data folder"


def test_a_fifo_named_like_an_image_is_refused_before_reading(tmp_path):
    data = _tree(tmp_path / "data")
    os.mkfifo(data / "val" / "a" / "blocked.png")
    result = _eval_subprocess(data)
    assert result.returncode == 10, result.stderr
    assert "blocked.png" in result.stderr and "not a regular file" in result.stderr


def test_a_fifo_split_tar_is_refused(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    os.mkfifo(data / "val.tar")
    result = _eval_subprocess(data)
    assert result.returncode == 10, result.stderr
    assert "val.tar" in result.stderr


def test_a_symlink_loop_in_a_data_folder_is_refused(tmp_path):
    data = _tree(tmp_path / "data")
    (data / "val" / "a" / "again").symlink_to(data / "val")
    result = _eval_subprocess(data)
    assert result.returncode == 10, result.stderr
    assert "again" in result.stderr and "cycle" in result.stderr


def test_a_self_referencing_symlink_is_refused(tmp_path):
    data = _tree(tmp_path / "data")
    (data / "val" / "a" / "self.png").symlink_to(data / "val" / "a" / "self.png")
    result = _eval_subprocess(data)
    assert result.returncode == 10, result.stderr
    assert "self.png" in result.stderr


def test_symlinks_outside_the_data_folder_need_allow_outside(tmp_path):
    data = _tree(tmp_path / "data")
    elsewhere = _tree(tmp_path / "elsewhere", "pool")
    (data / "val" / "a" / "linked.png").symlink_to(elsewhere / "pool" / "a" / "0.png")
    refused = _eval(data)
    assert refused.exit_code == 10, refused.output
    assert "linked.png" in refused.stderr and "outside" in refused.stderr
    assert "--allow-outside" in refused.stderr
    allowed = _eval(data, "--allow-outside")
    assert allowed.exit_code == 0, allowed.output
    assert "5" in allowed.stdout  # the linked image was read: 5 images


def test_symlinks_inside_the_data_folder_are_followed(tmp_path):
    data = _tree(tmp_path / "data")
    (data / "val" / "b" / "twin.png").symlink_to(data / "val" / "a" / "0.png")
    result = _eval(data)
    assert result.exit_code == 0, result.output


def test_the_timm_floor_is_the_tested_version():
    """pyproject's timm floor is the version these tests ran on, not an older one whose
    tar reader unpickles a planted cache (1.0.26) or that cannot import parc_surgery."""
    from importlib.metadata import version

    from packaging.version import Version

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    (floor,) = [d for d in project["project"]["dependencies"] if d.startswith("timm")]
    assert floor.startswith("timm>=")
    assert Version(floor.removeprefix("timm>=")) >= Version("1.0.31")
    assert Version(version("timm")) >= Version(floor.removeprefix("timm>="))


@pytest.mark.parametrize("command", ["eval", "erf"])
def test_a_huge_input_size_is_exit_2_with_a_size_that_fits(tmp_path, command):
    """An allocation that fails (here under a 1 GiB address-space cap) is a usage error."""
    from test_security_fuzz import bounded_memory

    data = _tree(tmp_path / "data")
    args = {
        "eval": [
            "eval",
            "test_convnext",
            "--model-arg",
            "num_classes=2",
            "--data",
            str(data),
            "-j0",
        ],
        "erf": ["erf", "test_convnext", "--random", "1"],
    }[command]
    with bounded_memory(1 << 30):
        result = runner.invoke(app, [*args, "--input-size", "4096"])
    assert result.exit_code == 2, (result.output, result.exception)
    assert "memory" in result.stderr.lower() and "input size" in result.stderr.replace("-", " ")
    assert "Traceback" not in result.output
