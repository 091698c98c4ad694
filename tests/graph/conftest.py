"""One intra-op thread for these tests: the 2 cores are shared with other test runs, and
two spinning OpenMP threads per process then make small forwards many times slower."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
