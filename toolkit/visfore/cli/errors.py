"""User errors on the command line: one red line, exit code 2, no traceback.

Only :class:`~visfore.core.errors.VisforeError` is reported this way; any other
exception is a bug and keeps its traceback. Ctrl-C exits with 130 after one line:
``interrupted``, or ``interrupted; NOTE`` when the :class:`KeyboardInterrupt` carries a
message (what was saved and how to continue, e.g. the training loop's
``saved RUN/checkpoints/last.pt; continue with --resume --out RUN``), so a command that
wants to say more raises ``KeyboardInterrupt(note)`` instead of logging its own line.
"""

from __future__ import annotations

import functools
import sys
from typing import Callable, NoReturn, ParamSpec, TypeVar

import typer

from visfore.core.errors import EXIT_BAD_INPUT, VisforeError

P = ParamSpec("P")
R = TypeVar("R")

__all__ = ["fail", "handle_errors", "interrupted_line"]


def fail(message: str) -> NoReturn:
    """Print ``error: message`` to stderr and exit with :data:`EXIT_BAD_INPUT`."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(EXIT_BAD_INPUT)


def interrupted_line(exc: KeyboardInterrupt) -> str:
    """The one line printed after Ctrl-C: ``interrupted``, plus ``; NOTE`` when ``exc``
    carries a message (its first line)."""
    note = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"interrupted; {note}" if note else "interrupted"


def handle_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Decorate a Typer command so :class:`VisforeError` becomes one line and exit 2."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except VisforeError as exc:
            fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        except KeyboardInterrupt as exc:
            typer.secho(interrupted_line(exc), fg=typer.colors.YELLOW, err=True)
            sys.exit(130)

    return wrapper
