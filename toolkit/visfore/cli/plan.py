"""``visfore plan``: visual MPC with CEM or MPPI on a learned forward model (pixel or
latent), against the same optimizer on the true simulator and a random policy.

The options are :class:`visfore.planning.config.PlanConfig`; the pipeline is
:func:`visfore.planning.plan.plan`.
"""

from __future__ import annotations

from visfore.cli.errors import handle_errors
from visfore.cli.options import typer_command
from visfore.planning.config import PlanConfig


@handle_errors
@typer_command(PlanConfig)
def plan_command(config: PlanConfig) -> None:
    """Visual MPC: CEM or MPPI over action sequences on a learned forward model (pixels
    or latent features), against the same optimizer on the true simulator and a random
    policy; writes a report with success rates, seconds per step and GIFs."""
    from visfore.planning.plan import plan
    from visfore.planning.plan_report import print_summary

    print_summary(plan(config))
