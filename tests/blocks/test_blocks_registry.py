"""The replacement registry: names, type checks, errors a rules author can hit."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from blocks_testkit import context
from torch import nn

from parc_surgery.blocks import (
    ReplacementError,
    build_replacement,
    get_replacement,
    register_replacement,
    replacement_names,
)
from parc_surgery.errors import RulesError, UsageError
from parc_surgery.options import SwapOptions
from parc_surgery.rules.schema import KNOWN_REPLACEMENTS


def test_builtin_replacements_registered():
    names = set(replacement_names())
    assert {
        "parc_bottleneck",
        "parc_inverted_residual",
        "parc_convnext",
        "parc_mobilevit",
        "parc_dwconv",
    } <= names
    r = get_replacement("parc_inverted_residual")
    assert r.level == "block" and r.description
    assert r.can_replace(type("InvertedResidual", (nn.Module,), {})())
    assert not r.can_replace(nn.Conv2d(2, 2, 1))


def test_known_replacements_are_exactly_the_builtin_registered_ones():
    # Tests may register their own replacements: the built-in ones are those whose
    # builders live in the package.
    builtin = {
        name
        for name in replacement_names()
        if any(b.__module__.startswith("parc_surgery.") for _, b in get_replacement(name).builders)
    }
    assert sorted(KNOWN_REPLACEMENTS) == sorted(builtin)
    assert len(set(KNOWN_REPLACEMENTS)) == len(KNOWN_REPLACEMENTS)
    # and the README's rules reference names each
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    reference = readme.split("## Rules reference", 1)[1].split("\n## ", 1)[0]
    paragraph = reference.split("Replacements: ", 1)[1].split("\n\n", 1)[0]
    assert [n for n in KNOWN_REPLACEMENTS if f"`{n}`" not in paragraph] == []


def test_unknown_replacement_lists_names():
    with pytest.raises(KeyError, match="parc_convnext"):
        get_replacement("parc_nope")


def test_duplicate_registration_refused():
    with pytest.raises(ValueError, match="already registered"):
        register_replacement("parc_dwconv", accepts=("Conv2d",))(lambda m, c: m)


def test_unknown_module_type_refused_with_path():
    with pytest.raises(ReplacementError) as err:
        build_replacement(
            "parc_convnext", nn.ReLU(), context("stages.1.act", torch.zeros(1, 2, 3, 3))
        )
    msg = str(err.value)
    assert "stages.1.act" in msg and "ReLU" in msg and "ConvNeXtBlock" in msg
    # A rules problem for the CLI (exit code 2), a ValueError for library callers.
    assert isinstance(err.value, RulesError) and isinstance(err.value, UsageError)
    assert isinstance(err.value, ValueError) and err.value.exit_code == 2


@pytest.mark.parametrize("bad", [0, (3,), (3, 0), "big", 2.5, True])
def test_bad_kernel_size_option_refused_by_the_options_type(bad):
    with pytest.raises(ValueError, match="expected a length"):
        SwapOptions(kernel_size=bad)


def test_kernel_size_option_overrides_feature_size():
    conv = nn.Conv2d(4, 4, 3, padding=1, groups=4)
    ctx = context("m.conv", torch.zeros(1, 4, 4, 4), options={"kernel_size": 9})
    pair = build_replacement("parc_dwconv", conv, ctx)
    assert pair.parc_h.kernel_size == pair.parc_w.kernel_size == 9
