"""``visfore train-model``: train an action-conditioned forward model, evaluate it open-loop.

The options are :class:`visfore.worldmodels.config.TrainConfig`; the pipeline is
:func:`visfore.worldmodels.training.train_model`; this command prints its results table.
"""

from __future__ import annotations

from visfore.cli.errors import handle_errors
from visfore.cli.options import typer_command
from visfore.worldmodels.config import TrainConfig


@handle_errors
@typer_command(TrainConfig)
def train_model_command(config: TrainConfig) -> None:
    """Train an action-conditioned forward model and evaluate it open-loop on held-out episodes.

    Runs under `torchrun --nproc-per-node N` as well (DistributedDataParallel; rank 0 writes the run).
    """
    from visfore.core.console import stdout_console
    from visfore.worldmodels.report import print_metrics_table, summary_line
    from visfore.worldmodels.training import train_model

    metrics = train_model(config)
    if "model" not in metrics:  # not rank 0 of a torchrun job
        return
    if config.progress:
        print_metrics_table(metrics, stdout_console(highlight=False))
    else:  # --quiet: only the final summary (as its help says)
        stdout_console(highlight=False).print(summary_line(metrics), markup=False, soft_wrap=True)
