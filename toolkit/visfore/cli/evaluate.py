"""``visfore evaluate``: evaluate a trained policy under body-part perturbations (or on the
nominal env only) and write a robustness report.

The options are :class:`visfore.rl.config.EvaluateConfig`; the pipeline is
:func:`visfore.rl.evaluate.evaluate`. The body-part shortcuts ``--Ltorso 1.2`` ... (one per
key of :data:`visfore.rl.config.BODY_PART_SHORTCUTS`) are extra CLI options that add to
``--set``. Register with ``cls=RayCommand`` (a bare ``--ray`` means ``--ray local``).
"""

from __future__ import annotations

import inspect
from typing import Any, Optional

import typer

from visfore.cli.errors import handle_errors
from visfore.cli.options import typer_command
from visfore.core.errors import VisforeError
from visfore.rl.config import BODY_PART_SHORTCUTS, EvaluateConfig, positive_scale

__all__ = ["evaluate_command"]


def _shortcut(option: str, key: str) -> inspect.Parameter:
    return inspect.Parameter(
        option.lower(),
        inspect.Parameter.KEYWORD_ONLY,
        annotation=Optional[float],
        default=typer.Option(
            None, f"--{option}", help=f"Fixed scale of {key} (same as --set {key}=SCALE).", metavar="SCALE"
        ),
    )


SHORTCUTS = [_shortcut(option, key) for option, key in BODY_PART_SHORTCUTS.items()]


def with_shortcuts(config: EvaluateConfig, values: dict[str, Any]) -> EvaluateConfig:
    """``config`` with the shortcut options (``--Ltorso 1.2`` ...) added to ``fixed``.

    Raises:
        VisforeError: a shortcut and ``--set`` give the same key, or a bad scale.
    """
    fixed = dict(config.fixed)
    for option, key in BODY_PART_SHORTCUTS.items():
        value = values.get(option.lower())
        if value is None:
            continue
        if key in fixed:
            raise VisforeError(f"--{option} and --set both give {key}")
        fixed[key] = positive_scale(f"--{option}", value)
    return config.replace(fixed=fixed)


@handle_errors
@typer_command(EvaluateConfig, extra=SHORTCUTS)
def evaluate_command(config: EvaluateConfig, **shortcuts: Any) -> None:
    """Evaluate a trained policy under body-part perturbations, or on the nominal env only
    (no perturbation option), and write a report (CSV, JSON, Markdown, HTML, plots)."""
    from visfore.rl.evaluate import evaluate, print_summary

    print_summary(evaluate(with_shortcuts(config, shortcuts)))
