"""Stop on ``kill`` as on Ctrl-C: SIGTERM raised as :class:`KeyboardInterrupt`.

A training that gets Ctrl-C saves a checkpoint before it exits (``--resume`` continues it);
``mixlab compare`` passes the interrupt on to its runs. ``kill`` sends SIGTERM, which by
default ends a process at once, checkpoint lost. Inside :func:`terminate_as_interrupt`
SIGTERM raises ``KeyboardInterrupt`` in the main thread instead, so both take the same path.
Runs started in the background (``nohup``, ``&``) ignore SIGINT, so SIGTERM is the only way
to stop them cleanly.

The handler is not installed (the block runs with the previous one):

* off the main thread: Python delivers signals to the main thread only;
* under torchrun with several ranks (``WORLD_SIZE`` > 1): there SIGTERM is how the launcher
  stops the other ranks when one failed, and a checkpoint would wait on the dead rank.

``on_terminate`` runs before the interrupt is raised: ``mixlab compare`` notes that the suite
alone was signalled, so it stops its runs at once instead of waiting for them to see Ctrl-C.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType


@contextmanager
def terminate_as_interrupt(on_terminate: Callable[[], None] | None = None) -> Iterator[bool]:
    """Within the block SIGTERM raises KeyboardInterrupt; yields whether the handler is on.

    The previous handler is restored when the block ends.
    """
    on_main = threading.current_thread() is threading.main_thread()
    if not on_main or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        yield False
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        if on_terminate is not None:
            on_terminate()
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield True
    finally:
        signal.signal(signal.SIGTERM, previous)
