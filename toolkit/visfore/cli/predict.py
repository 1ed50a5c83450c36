"""``visfore predict``: open-loop rollout of a trained model on one episode (animation and
per-step PSNR). Options: :class:`visfore.worldmodels.config.PredictConfig`; pipeline:
:func:`visfore.worldmodels.predict.predict`."""

from __future__ import annotations

import typer

from visfore.cli.errors import handle_errors
from visfore.cli.options import typer_command
from visfore.worldmodels.config import PredictConfig


@handle_errors
@typer_command(PredictConfig)
def predict_command(config: PredictConfig) -> None:
    """Open-loop rollout of a trained model on one episode, with the episode's true actions:
    writes truth | prediction | absolute difference side by side and prints the PSNR per step."""
    from visfore.worldmodels.predict import predict

    predict(config, echo=None if config.quiet else typer.echo)
