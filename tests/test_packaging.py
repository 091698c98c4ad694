"""The package list in pyproject.toml names every subpackage, so a wheel ships all of them."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]


def test_every_subpackage_is_listed_for_the_wheel():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    on_disk = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for p in (ROOT / "parc_surgery").rglob("__init__.py")
    }
    assert on_disk <= listed, f"add to pyproject's packages: {sorted(on_disk - listed)}"
    assert config["package-dir"]["parc_surgery.configs"] == "configs"
    assert (ROOT / "configs" / "__init__.py").is_file()


def test_shipped_rules_come_from_the_top_level_configs_folder():
    from parc_surgery.rules import shipped_configs

    configs = shipped_configs()
    assert {"resnet50", "mobilenetv2", "convnext", "mobilevit", "generic"} <= set(configs)
    for path, description in configs.values():
        assert path.suffix == ".yaml" and description


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_license_is_an_spdx_expression_with_its_file_shipped():
    # A TOML-table license is deprecated by setuptools (a warning on every build); an SPDX
    # string needs setuptools >= 77 and excludes "License ::" classifiers.
    config = _project()
    project = config["project"]
    assert project["license"] == "Apache-2.0"
    assert project["license-files"] == ["LICENSE"]
    assert "Apache License" in (ROOT / "LICENSE").read_text()
    assert not [c for c in project["classifiers"] if c.startswith("License ::")]
    assert "Typing :: Typed" in project["classifiers"]
    (setuptools,) = [r for r in config["build-system"]["requires"] if r.startswith("setuptools")]
    assert int(setuptools.removeprefix("setuptools>=").split(".")[0]) >= 77
    assert project["urls"]


def test_the_package_is_marked_typed():
    assert (ROOT / "parc_surgery" / "py.typed").is_file()
    package_data = _project()["tool"]["setuptools"]["package-data"]
    assert "py.typed" in package_data["parc_surgery"]


def test_scikit_learn_is_in_the_examples_extra_and_dev():
    extras = _project()["project"]["optional-dependencies"]
    assert any(r.startswith("scikit-learn") for r in extras["examples"])
    assert any(r.startswith("scikit-learn") for r in extras["dev"])


def test_changelog_lists_every_released_version():
    import parc_surgery

    text = (ROOT / "CHANGELOG.md").read_text()
    for heading in ("## 0.1", "## 0.2", "## Unreleased"):
        assert heading in text
    assert f"## {parc_surgery.__version__}" in text


def test_dir_lists_the_lazy_public_names():
    import parc_surgery

    listed = dir(parc_surgery)
    for name in ("convert", "load", "save", "parcify_", "finetune"):
        assert name in listed


def test_the_readme_says_which_setuptools_a_no_build_isolation_install_needs():
    # pip --no-build-isolation ignores [build-system]; setuptools < 77 rejects the SPDX
    # license string with a schema error that does not say so.
    (setuptools,) = [
        r for r in _project()["build-system"]["requires"] if r.startswith("setuptools")
    ]
    quick_start = (ROOT / "README.md").read_text().split("## Quick start", 1)[1].split("\n## ")[0]
    assert "--no-build-isolation" in quick_start
    assert f'"{setuptools}"' in quick_start


_METADATA = """
import setuptools.build_meta as backend
print(backend.prepare_metadata_for_build_wheel("dist"))
"""


def test_building_the_package_metadata_prints_no_warning(tmp_path):
    # What `pip install .` runs first, offline, in a copy (no egg-info in the checkout):
    # a deprecated license table or "License ::" classifier is a warning on every build.
    import shutil
    import subprocess
    import sys

    pytest.importorskip("setuptools.build_meta", reason="no build backend")
    import setuptools

    major = int(setuptools.__version__.split(".")[0])
    if major < 77:
        pytest.skip(f"setuptools {major} cannot read the SPDX license string (needs >= 77)")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, tmp_path / name)
    for name in ("parc_surgery", "configs"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "dist").mkdir()
    done = subprocess.run(
        [sys.executable, "-W", "always", "-c", _METADATA],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert not [
        line for line in output.splitlines() if "warning" in line.lower() or "deprecat" in line
    ], output
    (info,) = (tmp_path / "dist").glob("parc_surgery-*.dist-info")
    metadata = (info / "METADATA").read_text()
    assert "License-Expression: Apache-2.0" in metadata
    assert "License-File: LICENSE" in metadata
    assert "Project-URL: timm," in metadata
