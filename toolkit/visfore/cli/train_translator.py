"""``visfore train-translator``: learn to read joint angles and key points off frames.

The options are :class:`visfore.perception.config.TranslatorConfig`; the pipeline is
:func:`visfore.perception.train_translator.train_translator`.
"""

from __future__ import annotations

from visfore.cli.errors import handle_errors
from visfore.cli.options import typer_command
from visfore.perception.config import TranslatorConfig


@handle_errors
@typer_command(TranslatorConfig)
def train_translator_command(config: TranslatorConfig) -> None:
    """Train a CNN (optionally ConvLSTM) translating frames to joint angles and key points; report
    per-joint degrees and key-point centimetres on held-out episodes next to the mean predictor."""
    from visfore.core.console import stdout_console
    from visfore.perception.train_translator import print_translator_table, train_translator

    metrics = train_translator(config)
    if config.progress:
        print_translator_table(metrics, stdout_console(highlight=False))
