"""``visfore train-through-model``: a goal-reaching policy trained by backpropagating the
goal cost through a learned forward model, evaluated in the real env.

The options are :class:`visfore.planning.config.ThroughModelConfig`; the pipeline is
:func:`visfore.planning.through_model.train_through_model`. The old spelling
``visfore train-policy --through-model RUN ...`` is forwarded here by :mod:`visfore.cli.app`
(``--through-model RUN`` becomes ``--model RUN``; the other options keep their names).

``--resume`` is a switch, as in train-model and train-policy: ``--resume --out RUN_DIR``
(or ``--resume --name NAME``) continues a run; the old ``--resume RUN_DIR`` still works
(:class:`visfore.cli.options.ResumePathCommand`).
"""

from __future__ import annotations

from visfore.cli.errors import handle_errors
from visfore.cli.options import typer_command
from visfore.planning.config import ThroughModelConfig


@handle_errors
@typer_command(ThroughModelConfig)
def train_through_model_command(config: ThroughModelConfig) -> None:
    """Train a goal-reaching policy through the forward model of a train-model run (--model RUN)
    and evaluate it in the real env (success rate, final distance, time per step)."""
    from visfore.core.console import stdout_console
    from visfore.planning.through_model import train_through_model
    from visfore.planning.through_model_evaluation import print_summary

    metrics = train_through_model(config)
    if config.progress:
        print_summary(metrics, stdout_console(highlight=False))
