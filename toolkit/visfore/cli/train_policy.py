"""``visfore train-policy``: train a TD3, SAC or PPO policy (stable-baselines3) and evaluate it
on the nominal body.

The options are :class:`visfore.rl.config.PolicyTrainConfig`; the pipeline is
:func:`visfore.rl.train_policy.train_policy`.
"""

from __future__ import annotations

from visfore.cli.errors import handle_errors
from visfore.cli.options import ResumePathCommand, typer_command
from visfore.rl.config import PolicyTrainConfig

__all__ = ["ResumePathCommand", "train_policy_command"]  # ResumePathCommand: re-exported from its former home


@handle_errors
@typer_command(PolicyTrainConfig)
def train_policy_command(config: PolicyTrainConfig) -> None:
    """Train a TD3, SAC or PPO policy with tuned hyperparameters (RL-Zoo or visfore's own); evaluate it on the nominal body."""
    from visfore.rl.train_policy import print_metrics, train_policy

    metrics = train_policy(config)
    if config.progress:
        print_metrics(metrics)
