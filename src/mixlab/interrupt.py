"""Stop on ``kill`` as on Ctrl-C, and let a training stop only between steps.

:func:`terminate_as_interrupt` raises SIGTERM as :class:`KeyboardInterrupt`;
:class:`GracefulStop` defers the first Ctrl-C/SIGTERM of a training to the end of the step.


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

import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

logger = logging.getLogger(__name__)


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


class GracefulStop:
    """Ctrl-C or SIGTERM during training: finish the current step, checkpoint, then stop.

    A signal that lands in the middle of a step (while the sampler has drawn the next batch but
    the model has not trained on it, or between the optimiser step and the policy update)
    would leave a checkpoint whose parts belong to different steps, and the resumed run would
    skip or repeat a batch. Inside :meth:`installed` a first SIGINT/SIGTERM only records the
    request; the loop calls :meth:`check` where the state is whole (between steps, after an
    eval or checkpoint) and stops there with a checkpoint that resumes exactly. A second
    Ctrl-C (SIGINT) stops at once (``KeyboardInterrupt`` wherever it lands), for a user who
    will not wait; the loop then keeps its last whole checkpoint instead of writing a torn one.
    Another SIGTERM only repeats the request: launchers and ``mixlab compare`` send SIGTERM
    after a grace period to runs that already saw Ctrl-C, and those must still stop cleanly.

    Like :func:`terminate_as_interrupt`, it is not installed off the main thread or under
    multi-rank torchrun (ranks would stop at different steps and wait on each other forever).
    """

    def __init__(self) -> None:
        self.signal: int | None = None

    @property
    def requested(self) -> bool:
        return self.signal is not None

    @contextmanager
    def installed(self) -> Iterator[bool]:
        """Within the block the first signal is deferred; yields whether it is on."""
        on_main = threading.current_thread() is threading.main_thread()
        if not on_main or int(os.environ.get("WORLD_SIZE", "1")) > 1:
            yield False
            return

        def handler(signum: int, frame: FrameType | None) -> None:
            if self.signal is not None:
                if signum == signal.SIGINT:
                    raise KeyboardInterrupt  # Ctrl-C again: stop now
                return
            self.signal = signum
            logger.warning(
                "%s: stopping after this step with a checkpoint (Ctrl-C again to stop at once)",
                signal.Signals(signum).name,
            )

        previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield True
        finally:
            for s, h in previous.items():
                signal.signal(s, h)

    def check(self) -> None:
        """Raise ``KeyboardInterrupt`` if a stop was requested (call where the state is whole)."""
        if self.signal is not None:
            raise KeyboardInterrupt
