"""PyBullet backend of the perturbable locomotion envs: pybullet_envs' Hopper, Walker2D,
Ant and HalfCheetah (Roboschool's walkers) on Gymnasium 1.x, driven by the perturbation
spec of :mod:`visfore_envs.morphology`.

Reached as ``gym.make("PerturbHopper-v0", backend="pybullet")`` or
``gym.make("PerturbHopperBullet-v0")`` (likewise Walker2d, Ant, HalfCheetah). Importing
this package imports ``pybullet``; the rest of visfore_envs does not.
"""

from visfore_envs.bullet.locomotion_env import (
    BULLET_ASSETS_DIR,
    BulletAntEnv,
    BulletHalfCheetahEnv,
    BulletHopperEnv,
    BulletLocomotionEnv,
    BulletWalker2dEnv,
)
from visfore_envs.bullet.robots import BULLET_ROBOTS, BulletRobot

#: robot name -> env class (what ``locomotion.make_locomotion_env`` builds for "pybullet").
BULLET_CLASSES: dict[str, type[BulletLocomotionEnv]] = {
    "hopper": BulletHopperEnv,
    "walker2d": BulletWalker2dEnv,
    "ant": BulletAntEnv,
    "half_cheetah": BulletHalfCheetahEnv,
}

__all__ = [
    "BULLET_ASSETS_DIR",
    "BULLET_CLASSES",
    "BULLET_ROBOTS",
    "BulletAntEnv",
    "BulletHalfCheetahEnv",
    "BulletHopperEnv",
    "BulletLocomotionEnv",
    "BulletRobot",
    "BulletWalker2dEnv",
]
