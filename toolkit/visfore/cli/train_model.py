"""``visfore train-model``: train an action-conditioned forward model, evaluate it open-loop.

The options are :class:`visfore.worldmodels.config.TrainConfig`; the pipeline is
:func:`visfore.worldmodels.train_model.train_model`.
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
    from visfore.worldmodels.train_model import train_model

    train_model(config)
