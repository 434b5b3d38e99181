"""SIGTERM inside terminate_as_interrupt is a KeyboardInterrupt; outside, the old handler."""

from __future__ import annotations

import signal
import threading

import pytest

from mixlab.interrupt import terminate_as_interrupt


def test_sigterm_raises_keyboard_interrupt_and_the_old_handler_comes_back() -> None:
    seen: list[str] = []
    before = signal.getsignal(signal.SIGTERM)
    on_terminate = lambda: seen.append("term")  # noqa: E731
    with pytest.raises(KeyboardInterrupt), terminate_as_interrupt(on_terminate) as on:
        assert on
        signal.raise_signal(signal.SIGTERM)  # the Python handler runs before this returns
        pytest.fail("SIGTERM did not interrupt the block")
    assert seen == ["term"]
    assert signal.getsignal(signal.SIGTERM) is before


def test_not_installed_off_the_main_thread_or_under_several_ranks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    before = signal.getsignal(signal.SIGTERM)
    result: list[bool] = []

    def worker() -> None:
        with terminate_as_interrupt() as on:
            result.append(on)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert result == [False]
    monkeypatch.setenv("WORLD_SIZE", "2")
    with terminate_as_interrupt() as on:
        assert not on and signal.getsignal(signal.SIGTERM) is before
