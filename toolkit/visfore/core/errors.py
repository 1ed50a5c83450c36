"""User-facing errors: one clear line, a non-zero exit, no traceback.

Pipelines raise :class:`VisforeError` for bad input (unknown names, bad paths, bad sizes);
:func:`handle_errors` turns it into ``error: <message>`` on stderr and exit code 2, both
for the installed ``visfore`` script and for ``typer.testing.CliRunner``.
"""

from __future__ import annotations

import functools
import sys
from typing import Callable, TypeVar

import typer

F = TypeVar("F", bound=Callable)

#: Exit code for bad input (the same code click uses for usage errors).
EXIT_BAD_INPUT = 2


class VisforeError(Exception):
    """Bad input or a state the user must fix; the message is a single line."""


def fail(message: str) -> None:
    """Print ``error: message`` to stderr and exit with :data:`EXIT_BAD_INPUT`."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(EXIT_BAD_INPUT)


def handle_errors(func: F) -> F:
    """Decorate a Typer command so :class:`VisforeError` becomes one line and exit 2.

    ``ValueError`` raised by ``visfore_envs`` / ``visfore_models`` constructors for bad
    options is reported the same way: those messages are written for users.
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except (VisforeError, ValueError) as exc:
            fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        except KeyboardInterrupt:
            typer.secho("interrupted", fg=typer.colors.YELLOW, err=True)
            sys.exit(130)

    return wrapper  # type: ignore[return-value]
