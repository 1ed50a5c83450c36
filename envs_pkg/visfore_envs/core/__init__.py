"""Shared machinery of every visfore environment (one concept per module):

* :mod:`~visfore_envs.core.gl` - GL backend selection (environment variables, contexts)
* :mod:`~visfore_envs.core.options` - constructor option validation
* :mod:`~visfore_envs.core.rendering` - fast lazy offscreen rendering
* :mod:`~visfore_envs.core.ghost` - translucent target ghost (mocap bodies)
* :mod:`~visfore_envs.core.mujoco_env` - :class:`VisforeMujocoEnv`, the MuJoCo base env
* :mod:`~visfore_envs.core.keypoint_env` - :class:`KeypointTargetEnv`, pose reaching
* :mod:`~visfore_envs.core.rewards` - the reward catalogue (named terms, weights)
"""

# The GL backend must be chosen before mujoco is imported (by the modules below).
from visfore_envs.core.gl import configure_gl_environment

configure_gl_environment()

from visfore_envs.core.keypoint_env import (  # noqa: E402
    GoalConditionedKeypointEnv,
    KeypointTargetEnv,
    goal_conditioned_class,
)
from visfore_envs.core.mujoco_env import (  # noqa: E402
    OBS_MODES,
    RENDER_MODES,
    REWARD_MODES,
    VisforeMujocoEnv,
)
from visfore_envs.core.rendering import CameraSpec, FastRenderer  # noqa: E402

__all__ = [
    "OBS_MODES",
    "REWARD_MODES",
    "RENDER_MODES",
    "CameraSpec",
    "FastRenderer",
    "GoalConditionedKeypointEnv",
    "KeypointTargetEnv",
    "VisforeMujocoEnv",
    "configure_gl_environment",
    "goal_conditioned_class",
]
