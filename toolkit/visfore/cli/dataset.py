"""``visfore dataset info``: episodes, frames, shapes, size, compression, env and
provenance of a dataset.

The options are :class:`visfore.data.config.DatasetInfoConfig`; the pipeline is
:func:`visfore.data.dataset_info.dataset_info`.
"""

from __future__ import annotations

import json

import typer

from visfore.cli.errors import handle_errors
from visfore.cli.options import typer_command
from visfore.data.config import DatasetInfoConfig

__all__ = ["dataset_info_command"]


@handle_errors
@typer_command(DatasetInfoConfig)
def dataset_info_command(config: DatasetInfoConfig) -> None:
    """Show episodes, frames, array shapes, size and compression, env and provenance."""
    from visfore.data.dataset_info import dataset_info, render_info

    info = dataset_info(config.path)
    if config.as_json:
        typer.echo(json.dumps(info, indent=2))
    else:
        render_info(info)
