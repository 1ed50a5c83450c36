"""The toolkit's exception types for user errors.

Pipelines raise :class:`VisforeError` (or a subclass) for bad input: unknown names, bad
paths, bad sizes, a damaged run. The message is one line that names the bad value and
what is allowed. The command line (:mod:`visfore.cli.errors`) turns exactly these into
``error: <message>`` and exit code :data:`EXIT_BAD_INPUT`; any other exception is a bug
and keeps its traceback.

Libraries below the toolkit (``visfore_envs``, ``visfore_models``, gymnasium) report bad
options with ``ValueError``; the toolkit code that passes user input to them converts
those with :func:`user_errors`.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

__all__ = ["EXIT_BAD_INPUT", "VisforeError", "user_errors"]

#: Exit code for bad input (the same code click uses for usage errors).
EXIT_BAD_INPUT = 2


class VisforeError(Exception):
    """Bad input or a state the user must fix; the message is a single line."""


def _catchable(types: tuple[type[BaseException], ...]) -> tuple[type[BaseException], ...]:
    return types or (ValueError,)


@contextlib.contextmanager
def user_errors(*types: type[BaseException], prefix: str = "") -> Iterator[None]:
    """Re-raise the given exception types (default ``ValueError``) as :class:`VisforeError`.

    Use around a call that hands user input to a library whose ``ValueError`` messages
    are written for users (an env or model constructor), so the CLI shows them as one
    line while a ``ValueError`` elsewhere stays a bug with a traceback.

    Args:
        types: exception types to convert (default ``(ValueError,)``).
        prefix: text put before the message (``"--env-kwargs: "``).
    """
    try:
        yield
    except VisforeError:
        raise
    except _catchable(types) as exc:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise VisforeError(prefix + text) from exc
