"""``visfore train-policy``: train a TD3 or PPO policy (stable-baselines3) and evaluate it
on the nominal body.

The options are :class:`visfore.rl.config.PolicyTrainConfig`; the pipeline is
:func:`visfore.rl.train_policy.train_policy`.
"""

from __future__ import annotations

from typing import Any

from typer.core import TyperCommand

from visfore.cli.errors import handle_errors
from visfore.cli.options import typer_command
from visfore.rl.config import PolicyTrainConfig

__all__ = ["ResumePathCommand", "train_policy_command"]


class ResumePathCommand(TyperCommand):
    """Accepts the old spelling ``--resume RUN_DIR`` (a path) as ``--resume --out RUN_DIR``.

    ``--resume`` is a switch like every command's; the run directory is ``--out``. A
    value after ``--resume`` that does not start with ``-`` is taken as the run
    directory (train-policy has no positional arguments).
    """

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        fixed: list[str] = []
        i = 0
        while i < len(args):
            arg = args[i]
            if arg == "--":
                fixed.extend(args[i:])
                break
            if arg.startswith("--resume="):
                fixed += ["--resume", "--out", arg.split("=", 1)[1]]
            elif arg == "--resume" and i + 1 < len(args) and not args[i + 1].startswith("-"):
                fixed += ["--resume", "--out", args[i + 1]]
                i += 1
            else:
                fixed.append(arg)
            i += 1
        return super().parse_args(ctx, fixed)


@handle_errors
@typer_command(PolicyTrainConfig)
def train_policy_command(config: PolicyTrainConfig) -> None:
    """Train a TD3 or PPO policy with tuned RL-Zoo hyperparameters; evaluate it on the nominal body."""
    from visfore.rl.train_policy import print_metrics, train_policy

    metrics = train_policy(config)
    if config.progress:
        print_metrics(metrics)
