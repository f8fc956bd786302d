"""Shared test configuration: one torch thread per xdist worker."""

import pytest
import torch as th

# The suite runs with `pytest -n 2` on small machines: one intra-op thread per worker.
th.set_num_threads(1)


@pytest.fixture(autouse=True, scope="session")
def _single_torch_thread() -> None:
    th.set_num_threads(1)
