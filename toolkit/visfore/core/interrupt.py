"""Ctrl-C as a flag: long loops stop at a consistent point instead of mid-update.

:class:`StopFlag` turns the first SIGINT (Ctrl-C) inside :meth:`StopFlag.catch_sigint` into
``flag.requested = True``, which the loop checks after each step (then it checkpoints and
raises :class:`KeyboardInterrupt`); a second Ctrl-C raises :class:`KeyboardInterrupt` at once.
Outside the main thread (where signal handlers cannot be set) it does nothing.
:class:`visfore.core.trainer.StopOnInterrupt` is its callback for the training loop.
"""

from __future__ import annotations

import contextlib
import signal
from typing import Any, Iterator

__all__ = ["StopFlag"]


class StopFlag:
    """The first Ctrl-C sets :attr:`requested`; a second one interrupts at once.

    Attributes:
        requested: a stop was asked for (set by the handler, or by a test).
    """

    def __init__(self) -> None:
        self.requested = False

    @contextlib.contextmanager
    def catch_sigint(self) -> Iterator[None]:
        """Install the handler for the ``with`` block (the previous one is restored)."""
        try:
            previous = signal.getsignal(signal.SIGINT)
            signal.signal(signal.SIGINT, self._handler)
        except ValueError:  # not the main thread
            yield
            return
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def _handler(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
