"""`parc-surgery erf | bench | export` through the typer app: outputs and exit codes."""

from __future__ import annotations

import io
import json

import pytest
from analysis_testkit import converted_pair
from PIL import Image
from rich.console import Console
from typer.testing import CliRunner

import parc_surgery.cli.analysis  # noqa: F401  (registers erf, bench, export on `app`)
from parc_surgery.analysis.erf_plot import erf_figure_pixels
from parc_surgery.analysis.render import bench_table
from parc_surgery.cli import app

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args))


def assert_clean_error(result, code: int, fragment: str) -> None:
    assert result.exit_code == code, result.output
    assert fragment in result.stderr
    assert "Traceback" not in result.output
    assert result.stdout == ""


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A converted resnet26 checkpoint at 64x64 (the shared conversion, saved)."""
    from parc_surgery.checkpoint import save

    pair = converted_pair("resnet26")
    path = tmp_path_factory.mktemp("ckpt") / "resnet26-parc.safetensors"
    save(pair.converted, pair.plan, path)
    return path


def test_erf_json_alone_on_stdout_and_png_written(tmp_path):
    png = tmp_path / "erf.png"
    result = run(
        "erf",
        "resnet26",
        "--stages",
        "3,4",
        "--input-size",
        "64",
        "--random",
        "2",
        "--out",
        str(png),
        "--format",
        "json",
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["model"] == "resnet26" and data["stages"] == [3, 4]
    assert data["input_size"] == [64, 64]
    assert data["inputs"] == {"kind": "random", "count": 2}
    assert data["output"] == str(png)
    for name in ("original", "converted"):
        assert set(data[name]["area_ratio"]) == {"20", "50", "90"}
        ratios = list(data[name]["area_ratio"].values())
        assert ratios == sorted(ratios) and ratios[0] > 0 and ratios[-1] <= 1
    # timm's ResNet zeroes each block's last BN (zero_init_last): the swapped convs do
    # not reach the output, so both ERFs are the same and the command says so.
    assert data["converted"]["area_ratio"] == data["original"]["area_ratio"]
    assert "the two ERFs are the same" in result.stderr
    with Image.open(png) as image:
        assert image.size == erf_figure_pixels()


def test_erf_table_and_images(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for index, colour in enumerate([(200, 10, 10), (10, 200, 10)]):
        Image.new("RGB", (80, 70), colour).save(folder / f"{index}.png")
    png = tmp_path / "erf.png"
    result = run(
        "erf", "resnet26", "--input-size", "64", "--images", str(folder), "--out", str(png)
    )
    assert result.exit_code == 0, result.output
    assert "50% mass" in result.stdout and "converted / original" in result.stdout
    assert "2 image inputs" in result.stdout
    assert f"wrote {png}" in result.stderr


def test_erf_errors_have_exit_codes_and_no_traceback(tmp_path):
    png = tmp_path / "erf.png"
    png.write_bytes(b"old")
    assert_clean_error(run("erf", "resnet26", "--out", str(png)), 7, "already exists")
    assert png.read_bytes() == b"old"
    other = tmp_path / "new.png"
    assert_clean_error(
        run("erf", "resnet26", "--random", "2", "--images", str(tmp_path), "--out", str(other)),
        2,
        "not both",
    )
    assert_clean_error(
        run("erf", "resnet26", "--format", "yaml", "--out", str(other)), 2, "--format"
    )
    assert_clean_error(
        run(
            "erf",
            "resnet26",
            "--images",
            str(tmp_path / "none"),
            "--input-size",
            "64",
            "--out",
            str(other),
        ),
        2,
        "not a directory",
    )
    assert_clean_error(run("erf", "resnet_nope", "--out", str(other)), 2, "unknown timm model")
    assert not other.exists()


def test_bench_json_holds_both_models_and_ratios():
    result = run(
        "bench",
        "resnet26",
        "--stages",
        "3,4",
        "--input-size",
        "64",
        "--runs",
        "2",
        "--warmup",
        "1",
        "--threads",
        "1",
        "--impl",
        "spatial",
        "--format",
        "json",
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["model"] == "resnet26" and data["swaps"] > 0
    assert data["impl"] == "spatial" and data["threads"] == 1 and data["runs"] == 2
    orig, conv, ratios = data["original"], data["converted"], data["ratios"]
    assert ratios["params"] == pytest.approx(conv["params"] / orig["params"])
    assert ratios["macs"] == pytest.approx(conv["macs"] / orig["macs"])
    assert ratios["latency"] == pytest.approx(
        conv["latency_ms"]["median"] / orig["latency_ms"]["median"]
    )


def test_bench_table_and_errors():
    def figures(params, macs, median):
        latency = {
            "median": median,
            "min": median - 1,
            "max": median + 1,
            "q1": median,
            "q3": median,
            "runs": 3,
        }
        return {"params": params, "macs": macs, "latency_ms": latency}

    data = {
        "model": "m",
        "stages": "3,4",
        "input_size": [64, 64],
        "batch": 1,
        "threads": 2,
        "impl": "auto",
        "runs": 3,
        "original": figures(1000, 5000, 24.0),
        "converted": figures(900, 4000, 25.0),
        "ratios": {"params": 0.9, "macs": 0.8, "latency": 25 / 24, "latency_min": 1.0},
    }
    console = Console(file=io.StringIO(), width=200)
    console.print(bench_table(data))
    text = console.file.getvalue()
    assert "latency median (ms)" in text and "converted / original" in text
    assert "1.042" in text  # the latency ratio, to three places
    assert_clean_error(run("bench", "resnet26", "--impl", "winograd"), 2, "--impl")
    assert_clean_error(run("bench", "resnet26", "--runs", "0"), 2, "--runs")
    assert_clean_error(run("bench", "resnet26", "--stages", "x"), 2, "--stages")


def test_export_checkpoint_checks_with_onnxruntime(tmp_path, checkpoint):
    import onnx

    from parc_surgery.analysis.export import onnx_op_types

    target = tmp_path / "model.onnx"
    result = run("export", str(checkpoint), "--out", str(target), "--format", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["ok"] and data["output"] == str(target) and data["opset"] >= 17
    assert data["input_size"] == [64, 64] and data["max_abs_diff"] <= 1e-4
    assert "DFT" not in onnx_op_types(onnx.load(str(target)))
    again = run(
        "export",
        str(checkpoint),
        "--out",
        str(target),
        "--input-size",
        "96",
        "--impl",
        "circulant",
        "--force",
    )
    assert again.exit_code == 0, again.output
    assert "96x96" in again.stderr and "ok" in again.stderr


def test_export_errors_have_exit_codes_and_no_traceback(tmp_path, checkpoint):
    target = tmp_path / "model.onnx"
    assert_clean_error(
        run("export", str(tmp_path / "missing.safetensors"), "--out", str(target)),
        6,
        "does not exist",
    )
    foreign = tmp_path / "foreign.safetensors"
    foreign.write_bytes(b"\x00" * 16)
    assert_clean_error(run("export", str(foreign), "--out", str(target)), 6, "safetensors")
    assert_clean_error(
        run("export", str(checkpoint), "--out", str(target), "--impl", "fft"), 2, "--impl"
    )
    target.write_bytes(b"old")
    assert_clean_error(run("export", str(checkpoint), "--out", str(target)), 7, "already exists")
    assert target.read_bytes() == b"old"


def test_help_says_the_export_resolution_is_fixed():
    result = run("export", "--help")
    assert result.exit_code == 0
    assert "batch axis is dynamic" in result.stdout
