"""``visfore dataset info``: episodes, frames, shapes, size, compression, env and
provenance of a dataset; ``visfore dataset verify``: is every chunk there, readable and
unchanged.

The options are :class:`visfore.data.config.DatasetInfoConfig` and
:class:`visfore.data.config.DatasetVerifyConfig`; the pipelines are
:func:`visfore.data.dataset_info.dataset_info` and :func:`visfore.data.verify.verify_dataset`.
"""

from __future__ import annotations

import json

import typer

from visfore.cli.errors import handle_errors
from visfore.cli.options import typer_command
from visfore.data.config import DatasetInfoConfig, DatasetVerifyConfig

__all__ = ["EXIT_DAMAGED", "dataset_info_command", "dataset_verify_command"]

#: Exit code of ``dataset verify`` for a damaged dataset (bad input stays 2).
EXIT_DAMAGED = 1


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


@handle_errors
@typer_command(DatasetVerifyConfig)
def dataset_verify_command(config: DatasetVerifyConfig) -> None:
    """Check every chunk (stored, decodes) and every episode's checksums; exit 1 if damaged."""
    from visfore.data.verify import verify_dataset

    report = verify_dataset(config.path, progress=config.progress and not config.as_json)
    if config.as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        for problem in report.problems:
            typer.echo(problem.describe())
        typer.echo(report.summary_line())
    if not report.ok:
        raise typer.Exit(EXIT_DAMAGED)
