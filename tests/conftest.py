"""Fixtures shared across the test suite."""

import pytest
import torch


@pytest.fixture
def one_thread():
    """One intra-op thread: small convolutions ran up to 100x slower with two threads on a
    shared 2-core machine, and one thread is fairer to whatever else runs there."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
