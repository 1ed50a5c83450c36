"""``visfore train-eval-all``: train and evaluate every configuration of a sweep, then
write the comparison report. Options: :class:`visfore.worldmodels.config.TrainEvalAllConfig`
(``--out-dir`` and ``--continue`` are the deprecated spellings of ``--out`` and
``--resume``); pipeline: :func:`visfore.worldmodels.train_eval_all.train_eval_all`."""

from __future__ import annotations

import shlex
import sys
from typing import Optional

import typer

from visfore.cli.errors import handle_errors
from visfore.cli.options import typer_command
from visfore.cli.ray import ray_parameter
from visfore.worldmodels.config import TrainEvalAllConfig


@handle_errors
@typer_command(TrainEvalAllConfig, extra=[ray_parameter()])
def train_eval_all_command(config: TrainEvalAllConfig, ray: Optional[str] = None) -> None:
    """Train and evaluate every configuration of a sweep (models x hyperparameters x seeds),
    then write a comparison report (CSV, JSON, Markdown, HTML, plots)."""
    from visfore.worldmodels.train_eval_all import COMMAND, train_eval_all

    argv = " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv else ""
    result = train_eval_all(
        config.config,
        out_dir=config.out,
        name=config.name,
        data=config.data,
        wandb=config.wandb,
        dry_run=config.dry_run,
        resume=config.resume,
        progress=not config.quiet,
        command=f"visfore {argv}" if argv.startswith(COMMAND) else None,
        ray=ray,
    )
    if result["interrupted"]:
        typer.secho("interrupted; the report holds the runs finished so far", fg=typer.colors.YELLOW, err=True)
        raise typer.Exit(130)
    if result["failed"]:
        raise typer.Exit(1)
