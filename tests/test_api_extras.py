"""Optional extras: a command whose extra is missing fails at once, in one line, exit 2."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import tomllib
from typer.testing import CliRunner

from parc_surgery.cli import app, convert_app
from parc_surgery.errors import UsageError
from parc_surgery.extras import EXTRAS, MissingExtraError, require_extra

ROOT = Path(__file__).resolve().parents[1]


def _missing(monkeypatch, *modules: str) -> None:
    """Simulate a plain install: importing these modules fails (find_spec finds nothing)."""
    for module in modules:
        monkeypatch.setitem(sys.modules, module, None)


def test_the_extras_install_what_the_code_requires():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    for extra, modules in EXTRAS.items():
        listed = {r.split(">")[0].split("=")[0].split("[")[0] for r in extras[extra]}
        assert set(modules) <= listed, extra
        assert set(extras[extra]) <= set(extras["dev"]), f"dev must pull [{extra}]"


def test_require_extra_names_the_pip_command(monkeypatch):
    require_extra("onnx", "onnx", "onnxruntime")  # installed here: no error
    _missing(monkeypatch, "onnxruntime")
    with pytest.raises(MissingExtraError) as err:
        require_extra("onnx", "onnx", "onnxruntime")
    assert isinstance(err.value, UsageError) and err.value.exit_code == 2
    assert err.value.message == (
        "onnxruntime is not installed; this needs the parc-surgery[onnx] extra. "
        "Install it with: pip install 'parc-surgery[onnx]'."
    )


@pytest.mark.parametrize(
    "missing, app_, args, extra",
    [
        (("matplotlib",), app, ["erf", "resnet26"], "analysis"),
        (("onnx",), app, ["export", "nothing.safetensors", "--out", "x.onnx"], "onnx"),
        (("onnxruntime",), convert_app, ["resnet26", "--export-onnx", "x.onnx"], "onnx"),
    ],
)
def test_a_command_without_its_extra_fails_in_one_line(
    monkeypatch, tmp_path, missing, app_, args, extra
):
    monkeypatch.chdir(tmp_path)
    _missing(monkeypatch, *missing)
    result = CliRunner().invoke(app_, args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert f"pip install 'parc-surgery[{extra}]'" in lines[0]
    assert "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []  # failed before any work: nothing written
