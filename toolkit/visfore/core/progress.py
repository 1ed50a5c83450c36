"""The rich progress bar of the episode-based pipelines (collect, evaluate)."""

from __future__ import annotations

from typing import Any


def episode_progress(enabled: bool, unit: str = "episodes") -> Any:
    """A ``rich.progress.Progress`` on stderr: description, bar, done/total, ``unit``,
    elapsed and remaining time. ``unit`` is a rich format string and may name task fields
    (e.g. ``"episodes {task.fields[fps]:>6.0f} frames/s"``). Disabled when not ``enabled``."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(bar_width=20),
        MofNCompleteColumn(),
        TextColumn(unit),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not enabled,
    )
