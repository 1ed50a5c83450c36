"""Gymnasium ids of visfore_envs, registered when :mod:`visfore_envs` is imported."""

from __future__ import annotations

import gymnasium as gym

__all__ = ["ENV_IDS", "register_envs"]

# id -> (entry point, max_episode_steps)
_SPECS: dict[str, tuple[str, int]] = {
    "ReacherPlane-v0": ("visfore_envs.reacher:ReacherPlaneEnv", 50),
    "Reacher3D-v0": ("visfore_envs.reacher:Reacher3DEnv", 50),
}

#: Every registered id, in a stable order.
ENV_IDS: tuple[str, ...] = tuple(_SPECS)


def register_envs() -> None:
    """Register every id in :data:`ENV_IDS` with gymnasium (skips ids already registered)."""
    for env_id, (entry_point, max_steps) in _SPECS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=entry_point, max_episode_steps=max_steps)
