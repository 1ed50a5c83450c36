"""Gymnasium ids of visfore_envs, registered when :mod:`visfore_envs` is imported."""

from __future__ import annotations

import warnings

import gymnasium as gym

__all__ = ["ENV_IDS", "HUMANOID_IDS", "KEYPOINT_IDS", "MIMIC_IDS", "REACHER_IDS", "register_envs"]

# id -> (entry point, max_episode_steps)
_SPECS: dict[str, tuple[str, int]] = {
    "ReacherPlane-v0": ("visfore_envs.reacher:ReacherPlaneEnv", 50),
    "Reacher3D-v0": ("visfore_envs.reacher:Reacher3DEnv", 50),
    # Fixed-torso humanoid, 14 limb joints, 8 key points; dt = 0.02 s, so 100 steps = 2 s.
    "TargetHumanoid-v0": ("visfore_envs.humanoid:TargetHumanoidEnv", 100),
    # Mimic pairs: a kinematic leader, the follower copies it as in a mirror (dt = 0.02 s;
    # 100 steps = 2 s = four held poses of the reacher leader, 200 = 4 s for the humanoid).
    "MimicReacher-v0": ("visfore_envs.mimic:MimicReacherEnv", 100),
    "MimicHumanoid-v0": ("visfore_envs.mimic:MimicHumanoidEnv", 200),
    # Perturbable locomotion: backend="mujoco" (default) or "pybullet"; 1000 steps as v5.
    "PerturbHopper-v0": ("visfore_envs.locomotion:make_perturb_hopper", 1000),
    "PerturbWalker2d-v0": ("visfore_envs.locomotion:make_perturb_walker2d", 1000),
    "PerturbAnt-v0": ("visfore_envs.locomotion:make_perturb_ant", 1000),
    "PerturbHalfCheetah-v0": ("visfore_envs.locomotion:make_perturb_half_cheetah", 1000),
    # The PyBullet backend under its own ids (pybullet_envs' walkers, 1000 steps as upstream).
    "PerturbHopperBullet-v0": ("visfore_envs.bullet:BulletHopperEnv", 1000),
    "PerturbWalker2dBullet-v0": ("visfore_envs.bullet:BulletWalker2dEnv", 1000),
    "PerturbAntBullet-v0": ("visfore_envs.bullet:BulletAntEnv", 1000),
    "PerturbHalfCheetahBullet-v0": ("visfore_envs.bullet:BulletHalfCheetahEnv", 1000),
    # LearnedSim-v0 (frames of a learned model) is registered by the `visfore` distribution
    # (visfore.worldmodels.learned_sim:register, its gymnasium.envs entry point), not here.
}

#: Every registered id, in a stable order.
ENV_IDS: tuple[str, ...] = tuple(_SPECS)
#: The reacher ids (key-point targets, pixel rewards, goal-conditioned observations).
REACHER_IDS: tuple[str, ...] = ("ReacherPlane-v0", "Reacher3D-v0")
#: The humanoid ids (a fixed-torso humanoid reaching target poses with its limbs).
HUMANOID_IDS: tuple[str, ...] = ("TargetHumanoid-v0",)
#: Every key-point target id (:class:`visfore_envs.core.KeypointTargetEnv`: target poses,
#: pixel rewards, goal-conditioned observations, the reward catalogue).
KEYPOINT_IDS: tuple[str, ...] = REACHER_IDS + HUMANOID_IDS
#: The mimic pairs (:class:`visfore_envs.mimic.MimicEnv`: a leader robot moves, the follower
#: copies its mirror pose; key-point targets that change over time). Not in KEYPOINT_IDS.
MIMIC_IDS: tuple[str, ...] = ("MimicReacher-v0", "MimicHumanoid-v0")


#: Entry-point group whose functions register more ids (gymnasium < 1.0 ran it on import).
PLUGIN_GROUP = "gymnasium.envs"


def register_envs() -> None:
    """Register every id in :data:`ENV_IDS` with gymnasium (skips ids already registered),
    then those of installed plugins (:func:`register_plugin_envs`)."""
    for env_id, (entry_point, max_steps) in _SPECS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=entry_point, max_episode_steps=max_steps)
    register_plugin_envs()


def register_plugin_envs() -> None:
    """Run the :data:`PLUGIN_GROUP` entry points of the installed distributions.

    Gymnasium before 1.0 ran these on import; 1.x no longer does. Running them here keeps
    ``import visfore_envs`` enough for ids that other distributions register this way,
    such as ``LearnedSim-v0`` of the ``visfore`` toolkit (whose code this package never
    imports by name). A plugin that fails to load is skipped with a warning.
    """
    from importlib.metadata import entry_points

    for ep in entry_points(group=PLUGIN_GROUP):
        try:
            fn = ep.load()
            if callable(fn):
                fn()
        except Exception as exc:  # a broken third-party plugin must not break our ids
            warnings.warn(f"{PLUGIN_GROUP} entry point {ep.name!r} ({ep.value}) failed: {exc}", stacklevel=2)
