"""Shared test setup: no network, no colour, and one intra-op thread.

One thread because a 2-core machine is often shared with another test run, and two
spinning OpenMP threads per process then make small forwards many times slower; the
suite's models are small enough that one thread costs little when the machine is idle.
"""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a hub access fails at once instead of hanging
os.environ.setdefault("NO_COLOR", "1")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
