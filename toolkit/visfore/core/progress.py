"""Progress bars of the pipelines: one rich bar factory and one no-op stand-in.

- :func:`progress_bar`: a ``rich.progress.Progress`` on stderr (description, bar,
  done/total, a unit text, elapsed and remaining time), or a :class:`NoProgress` when
  disabled (``--quiet``);
- :func:`episode_progress`: the same for the episode pipelines (collect, evaluate, mimic);
- :func:`step_progress`: the same counting control steps (``plan``: episodes x steps,
  so the remaining time is known while an episode runs);
- :class:`NoProgress`: the part of ``rich.progress.Progress``'s interface the pipelines
  use (``add_task``, ``update``, ``advance``, ``start``, ``stop``, context manager), doing
  nothing, so a pipeline has no ``if progress:`` around every update.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

__all__ = ["NoProgress", "episode_progress", "progress_bar", "step_progress"]


class NoProgress:
    """A disabled progress bar with ``rich.progress.Progress``'s interface.

    Args:
        console: kept as ``self.console`` (pipelines print through ``progress.console``).
    """

    def __init__(self, console: Any = None) -> None:
        self.console = console

    def add_task(self, *args: Any, **kwargs: Any) -> int:
        """A task id (always 0)."""
        return 0

    def update(self, *args: Any, **kwargs: Any) -> None:
        """Nothing."""

    def advance(self, *args: Any, **kwargs: Any) -> None:
        """Nothing."""

    def start(self) -> None:
        """Nothing."""

    def stop(self) -> None:
        """Nothing."""

    def __enter__(self) -> NoProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass


def progress_bar(*columns: Any, enabled: bool = True, console: Any = None, unit: str = "") -> Any:
    """A ``rich.progress.Progress`` on ``console`` (default: a stderr console), or a
    :class:`NoProgress` when not ``enabled``.

    Args:
        columns: rich columns or format strings; default: description, bar, done/total,
            ``unit``, elapsed and remaining time.
        enabled: False gives a :class:`NoProgress` (nothing drawn).
        console: a ``rich.console.Console``.
        unit: a rich format string after done/total (may name task fields, e.g.
            ``"episodes {task.fields[fps]:>6.0f} frames/s"``); only with the default
            columns.
    """
    if not enabled:
        return NoProgress(console)
    if not columns:
        columns = (
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=20),
            MofNCompleteColumn(),
            TextColumn(unit),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
    return Progress(*columns, console=console if console is not None else Console(stderr=True))


def episode_progress(enabled: bool, unit: str = "episodes") -> Any:
    """The episode pipelines' bar (see :func:`progress_bar`): a ``rich.progress.Progress``
    on stderr, or a :class:`NoProgress` when not ``enabled``."""
    return progress_bar(enabled=enabled, unit=unit)


def step_progress(enabled: bool, unit: str = "steps") -> Any:
    """A bar counting control steps (see :func:`progress_bar`): the task's total is every
    step of every episode, its description names the current episode (the caller updates
    it), and the remaining time is estimated per step; a :class:`NoProgress` when not
    ``enabled``."""
    return progress_bar(enabled=enabled, unit=unit)
