"""The rich console the commands print their tables to."""

from __future__ import annotations

import sys
from typing import Any

#: Width used when stdout is not a terminal (a log file, a pipe, CI): rich would otherwise
#: cut tables to 80 columns and truncate their headings.
PIPED_WIDTH = 160


def stdout_console(**kwargs: Any) -> Any:
    """A ``rich.console.Console`` on stdout: the terminal's width, or :data:`PIPED_WIDTH`
    columns when stdout is not a terminal. ``kwargs`` go to ``Console``."""
    from rich.console import Console  # lazy: the CLI imports this module at start-up

    if "width" not in kwargs and not sys.stdout.isatty():
        kwargs["width"] = PIPED_WIDTH
    return Console(**kwargs)
