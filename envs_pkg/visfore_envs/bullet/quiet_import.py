"""Import ``pybullet`` without its build-time banner.

pybullet's C extension prints ``pybullet build time: <date> <time>`` when it is imported,
from C (``printf``/``fprintf``: to file descriptor 1 in some builds, 2 in others), so
neither ``contextlib.redirect_stdout`` nor pytest's ``capsys`` can catch it; on a command
whose standard output is data (a table, JSON, CSV) it is a stray line.
:func:`quiet_c_output` points both descriptors at ``os.devnull`` at the OS level for the
``with`` block, flushes C's stdio buffers when it starts (what was written before goes
out) and before restoring them (a banner still buffered in C's ``stdout`` would
otherwise come out later, on the real descriptor), and restores them however the block
ends. :mod:`visfore_envs.bullet.locomotion_env` imports pybullet
inside it.

It is meant for short blocks (an import): while it is active, whatever any thread of the
process writes to descriptors 1 and 2 is discarded. A Python exception raised inside
propagates unchanged (its traceback is printed after the descriptors are back).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from typing import Iterator

__all__ = ["quiet_c_output"]


def _flush_c_stdio() -> None:
    """``fflush(NULL)``: write out every C stdio buffer (a no-op where libc is not found)."""
    try:
        libc = ctypes.CDLL(None) if os.name != "nt" else ctypes.cdll.msvcrt
        libc.fflush(None)
    except (OSError, AttributeError, TypeError):
        pass


def _flush_python_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):  # closed or detached
            pass


@contextlib.contextmanager
def quiet_c_output() -> Iterator[None]:
    """Discard what is written to file descriptors 1 and 2 (from C too) inside the block.

    A descriptor that cannot be duplicated (not open, e.g. a daemon without stdout) is
    left as it is; without ``os.devnull`` the block runs unchanged.
    """
    _flush_python_streams()  # what Python and C already buffered is written out first
    _flush_c_stdio()
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
    except OSError:
        yield
        return
    saved: list[tuple[int, int]] = []
    try:
        for fd in (1, 2):
            try:
                copy = os.dup(fd)
            except OSError:
                continue
            os.dup2(devnull, fd)
            saved.append((fd, copy))
        yield
    finally:
        _flush_python_streams()
        _flush_c_stdio()
        for fd, copy in saved:
            os.dup2(copy, fd)
            os.close(copy)
        os.close(devnull)
