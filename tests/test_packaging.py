"""The package list in pyproject.toml names every subpackage, so a wheel ships all of them."""

from __future__ import annotations

from pathlib import Path

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
