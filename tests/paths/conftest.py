"""Small nets throughout: every test here runs on one intra-op thread."""

import pytest


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield
