"""``visfore collect``: run a policy in an env and write whole episodes to a Zarr dataset.

The options are :class:`visfore.data.config.CollectConfig`; the pipeline is
:func:`visfore.data.collect.collect`. Register with ``cls=RayCommand`` (a bare ``--ray``
means ``--ray local``).
"""

from __future__ import annotations

from visfore.cli.errors import handle_errors
from visfore.cli.options import typer_command
from visfore.core.console import stdout_console
from visfore.data.config import CollectConfig

__all__ = ["collect_command"]


@handle_errors
@typer_command(CollectConfig)
def collect_command(config: CollectConfig) -> None:
    """Collect episodes from an env into a Zarr dataset; rerun the same command to resume."""
    from visfore.data.collect import collect

    summary = collect(config)
    console = stdout_console(highlight=False)
    if summary["already_complete"]:
        console.print(
            f"{summary['path']} already holds {summary['episodes']} episodes "
            f"(requested {summary['episodes_requested']}); nothing to do"
        )
        return
    resumed = f" (resumed after {summary['resumed_from']})" if summary["resumed_from"] else ""
    console.print(
        f"collected {summary['new_episodes']} episodes{resumed}, {summary['frames']} frames "
        f"in {summary['seconds']:.1f} s ({summary['frames_per_s']:.0f} frames/s) -> "
        f"{summary['path']} ({summary['episodes']} episodes)"
    )
