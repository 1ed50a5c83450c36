"""User errors on the command line: one red line, exit code 2, no traceback.

Only :class:`~visfore.core.errors.VisforeError` is reported this way; any other
exception is a bug and keeps its traceback. Ctrl-C exits with 130 after one line.
"""

from __future__ import annotations

import functools
import sys
from typing import Any, Callable, TypeVar

import typer

from visfore.core.errors import EXIT_BAD_INPUT, VisforeError

F = TypeVar("F", bound=Callable[..., Any])

__all__ = ["fail", "handle_errors"]


def fail(message: str) -> None:
    """Print ``error: message`` to stderr and exit with :data:`EXIT_BAD_INPUT`."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(EXIT_BAD_INPUT)


def handle_errors(func: F) -> F:
    """Decorate a Typer command so :class:`VisforeError` becomes one line and exit 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except VisforeError as exc:
            fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        except KeyboardInterrupt:
            typer.secho("interrupted", fg=typer.colors.YELLOW, err=True)
            sys.exit(130)

    return wrapper  # type: ignore[return-value]
