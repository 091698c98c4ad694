"""Fixtures of the recovery tests: built once per session, copied when a test damages them."""

from __future__ import annotations

import pytest
import torch
from train_testkit import convert_tiny, make_digits


@pytest.fixture(scope="session")
def digits(tmp_path_factory):
    """40 train / 10 val digits at 32x32, one folder per class."""
    return make_digits(tmp_path_factory.mktemp("digits") / "digits")


@pytest.fixture(scope="session")
def convnext(tmp_path_factory):
    """test_convnext (LayerNorm only) converted by the generic rules: (checkpoint, weights)."""
    with torch.random.fork_rng(devices=[]):
        return convert_tiny(tmp_path_factory.mktemp("convnext"), "test_convnext")


@pytest.fixture(scope="session")
def mobilenet(tmp_path_factory):
    """mobilenetv2_050 (BatchNorm) converted by its shipped rules: (checkpoint, weights)."""
    with torch.random.fork_rng(devices=[]):
        return convert_tiny(tmp_path_factory.mktemp("mobilenet"), "mobilenetv2_050")
