"""``visfore play-model``: drive a trained forward model as an environment (``LearnedSim-v0``).
Options: :class:`visfore.worldmodels.config.PlayModelConfig`; pipeline:
:func:`visfore.worldmodels.play_model.play_model`."""

from __future__ import annotations

import typer

from visfore.cli.errors import handle_errors
from visfore.cli.options import typer_command
from visfore.worldmodels.config import PlayModelConfig


@handle_errors
@typer_command(PlayModelConfig)
def play_model_command(config: PlayModelConfig) -> None:
    """Play a trained forward model as an environment (LearnedSim-v0): live with the keyboard
    when there is a display, else headless into a GIF."""
    from visfore.rl.policy_run import load_policy_run
    from visfore.worldmodels.play_model import play_model, result_line

    result = play_model(config, echo=None if config.quiet else typer.echo, load_policy=load_policy_run)
    if config.quiet and result.out is not None:  # --quiet: no messages, but the result line
        typer.echo(result_line(result))
