"""One torch thread for the adapter tests: tiny models gain nothing from a second thread, and
on a busy 2-core machine OpenMP's spinning threads make each step many times slower."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
