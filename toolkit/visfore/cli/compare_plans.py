"""``visfore compare-plans``: controller A against controller B on the episodes of
``visfore plan`` outputs, paired by reset seed, with one-sided Fisher and exact McNemar
tests.

The options are :class:`visfore.planning.config.ComparePlansConfig`; the pipeline is
:func:`visfore.planning.paired_comparison.compare_plans`.
"""

from __future__ import annotations

import json

import typer

from visfore.cli.errors import handle_errors
from visfore.cli.options import typer_command
from visfore.planning.config import ComparePlansConfig

__all__ = ["compare_plans_command"]


@handle_errors
@typer_command(ComparePlansConfig)
def compare_plans_command(config: ComparePlansConfig) -> None:
    """Is controller A better than B on the same episodes? Successes, discordant pairs,
    one-sided Fisher and exact McNemar p values."""
    from rich.table import Table

    from visfore.core.console import stdout_console
    from visfore.planning.paired_comparison import compare_plans

    result = compare_plans(
        config.a,
        config.b,
        a_controller=config.a_controller,
        b_controller=config.b_controller,
        threshold=config.threshold,
    )
    if config.as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    table = Table(title=f"{result.n} paired episodes, success: final distance < {result.threshold:g} m")
    for column in ("side", "controller", "successes", "only this side", "mean final distance (m)"):
        table.add_column(column)
    for side, name, wins, only, dist in (
        ("A", result.a, result.a_successes, result.only_a, result.a_mean_distance),
        ("B", result.b, result.b_successes, result.only_b, result.b_mean_distance),
    ):
        table.add_row(side, name, f"{wins}/{result.n} ({wins / result.n:.0%})", str(only), f"{dist:.3f}")
    console = stdout_console()
    console.print(table)
    console.print(
        f"A better than B, one-sided: Fisher exact p = {result.fisher_p:.3g}, exact McNemar p = {result.mcnemar_p:.3g}; "
        f"A ends closer in {result.a_closer} of {result.n}"
        + (f"; {result.unpaired} unpaired episodes left out" if result.unpaired else "")
    )
