"""visfore_envs: Gymnasium environments for visual-foresight robot learning (MuJoCo).

Importing the package registers :data:`ENV_IDS` (``ReacherPlane-v0``, ``Reacher3D-v0``,
``TargetHumanoid-v0``, the mimic pairs ``MimicReacher-v0`` and ``MimicHumanoid-v0``, the perturbable ``PerturbHopper-v0``, ``PerturbWalker2d-v0``, ``PerturbAnt-v0``,
``PerturbHalfCheetah-v0`` and their ``...Bullet-v0`` PyBullet twins),
so ``gym.make("ReacherPlane-v0")`` works after ``import visfore_envs`` and
``gym.make("visfore_envs:Reacher3D-v0")`` works without it.

Before anything imports ``mujoco``, the GL backend is chosen: ``MUJOCO_GL=egl`` when it is
unset and there is no display (not on macOS), and ``LP_NUM_THREADS=0`` when unset (Mesa
llvmpipe threads hang after ``fork``). See :mod:`visfore_envs.core.gl`.
"""

# First: pick the GL backend (environment variables) before mujoco is imported.
from visfore_envs.core.gl import configure_gl_environment

configure_gl_environment()

from visfore_envs.core import (  # noqa: E402
    GoalConditionedKeypointEnv,
    KeypointTargetEnv,
    VisforeMujocoEnv,
    goal_conditioned_class,
)
from visfore_envs.core.rewards import PRESETS as REWARD_PRESETS  # noqa: E402
from visfore_envs.core.rewards import (  # noqa: E402
    REWARD_TERMS,
    RewardSpec,
    RewardTerm,
    parse_rewards,
)
from visfore_envs.humanoid import TargetHumanoidEnv  # noqa: E402
from visfore_envs.locomotion import (  # noqa: E402
    LOCOMOTION_IDS,
    PerturbAntEnv,
    PerturbHalfCheetahEnv,
    PerturbHopperEnv,
    PerturbWalker2dEnv,
    perturbation_keys,
    resolve_perturbation_key,
)
from visfore_envs.mimic import MimicEnv, MimicHumanoidEnv, MimicReacherEnv, MirrorMap  # noqa: E402
from visfore_envs.reacher import Reacher3DEnv, ReacherPlaneEnv  # noqa: E402
from visfore_envs.registration import (  # noqa: E402
    ENV_IDS,
    HUMANOID_IDS,
    KEYPOINT_IDS,
    MIMIC_IDS,
    REACHER_IDS,
    register_envs,
)

register_envs()

__version__ = "0.1.0"

__all__ = [
    "ENV_IDS",
    "HUMANOID_IDS",
    "KEYPOINT_IDS",
    "LOCOMOTION_IDS",
    "MIMIC_IDS",
    "REACHER_IDS",
    "REWARD_PRESETS",
    "REWARD_TERMS",
    "RewardSpec",
    "RewardTerm",
    "parse_rewards",
    "PerturbAntEnv",
    "PerturbHalfCheetahEnv",
    "PerturbHopperEnv",
    "PerturbWalker2dEnv",
    "perturbation_keys",
    "resolve_perturbation_key",
    "GoalConditionedKeypointEnv",
    "KeypointTargetEnv",
    "MimicEnv",
    "MimicHumanoidEnv",
    "MimicReacherEnv",
    "MirrorMap",
    "Reacher3DEnv",
    "ReacherPlaneEnv",
    "TargetHumanoidEnv",
    "VisforeMujocoEnv",
    "goal_conditioned_class",
    "register_envs",
]
