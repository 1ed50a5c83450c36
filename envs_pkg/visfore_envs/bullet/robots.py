"""The four PyBullet locomotors: model file, feet, motor power and "alive" rule of each.

Ported from pybullet 3.2.7's ``pybullet_envs/robot_locomotors.py`` (classes ``Hopper``,
``Walker2D``, ``HalfCheetah``, ``Ant``, on ``WalkerBase``), which pybullet_envs took from
OpenAI Roboschool. pybullet_envs itself is not imported (it needs the old ``gym``).

Differences, all for perturbed morphologies only (nominal values are upstream's):

* the height threshold of the alive rule is multiplied by ``z_scale``, the ratio of the
  torso's initial height to its nominal height (``scale_healthy_z=True`` in the env; 1.0
  at nominal), so a robot with shorter legs is not "dead" from its first step;
* ``power`` is multiplied by the ``actuator_gear`` factor (in the env).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["BulletRobot", "BULLET_ROBOTS"]


def _hopper_alive(z: float, pitch: float, feet_contact: Sequence[float], z_scale: float) -> float:
    # robot_locomotors.py Hopper.alive_bonus (and Walker2D.alive_bonus, the same rule)
    return +1 if z > 0.8 * z_scale and abs(pitch) < 1.0 else -1


def _half_cheetah_alive(z: float, pitch: float, feet_contact: Sequence[float], z_scale: float) -> float:
    # robot_locomotors.py HalfCheetah.alive_bonus: "Use contact other than feet to terminate
    # episode: due to a lot of strange walks using knees" (fshin, fthigh, bshin, bthigh).
    return (
        +1
        if np.abs(pitch) < 1.0
        and not feet_contact[1]
        and not feet_contact[2]
        and not feet_contact[4]
        and not feet_contact[5]
        else -1
    )


def _ant_alive(z: float, pitch: float, feet_contact: Sequence[float], z_scale: float) -> float:
    # robot_locomotors.py Ant.alive_bonus: "0.25 is central sphere rad, die if it scrapes
    # the ground"
    return +1 if z > 0.26 * z_scale else -1


@dataclass(frozen=True)
class BulletRobot:
    """One locomotor of pybullet_envs.

    Attributes:
        name: robot name, a key of :data:`visfore_envs.morphology.ROBOTS`.
        xml_file: MJCF in ``visfore_envs/assets/bullet``.
        robot_name: the link whose pose is the robot's (``WalkerBase(fn, robot_name, ...)``).
        foot_list: links whose ground contact is observed (``foot_list``).
        power: torque scale (``WalkerBase(..., power=...)``); torque =
            ``power * power_coef * clip(a, -1, 1)``.
        power_coefs: per-joint ``power_coef`` set by ``robot_specific_reset`` (others keep
            ``robot_bases.py``'s 100).
        action_dim, obs_dim: upstream's ``action_dim`` and ``obs_dim`` (8 + 2 * joints + feet).
        alive_bonus: ``(z, pitch, feet_contact, z_scale) -> +1 or -1``.
        terminates: whether ``alive < 0`` ends the episode (``HalfCheetahBulletEnv._isDone``
            returns False: the cheetah only loses the alive bonus).
        root_joints_at_origin: the file's root joints sit at the world origin, as in the
            original global-coordinate MJCF (hopper, walker); kept there after scaling.
        camera_distance, camera_yaw, camera_pitch: the tracking camera of
            ``env_bases.py`` (``_cam_dist``, ``_cam_yaw``, ``_cam_pitch``: 3, 0, -30 for
            every robot), in metres and degrees, looking at the torso.
    """

    name: str
    xml_file: str
    foot_list: tuple[str, ...]
    power: float
    action_dim: int
    obs_dim: int
    alive_bonus: Callable[[float, float, Sequence[float], float], float]
    power_coefs: Mapping[str, float] = field(default_factory=dict)
    robot_name: str = "torso"
    terminates: bool = True
    root_joints_at_origin: bool = False
    camera_distance: float = 3.0
    camera_yaw: float = 0.0
    camera_pitch: float = -30.0


#: robot name -> :class:`BulletRobot`, with upstream's constants.
BULLET_ROBOTS: dict[str, BulletRobot] = {
    "hopper": BulletRobot(
        name="hopper",
        xml_file="hopper.xml",
        foot_list=("foot",),
        power=0.75,
        action_dim=3,
        obs_dim=15,
        alive_bonus=_hopper_alive,
        root_joints_at_origin=True,
    ),
    "walker2d": BulletRobot(
        name="walker2d",
        xml_file="walker2d.xml",
        foot_list=("foot", "foot_left"),
        power=0.40,
        action_dim=6,
        obs_dim=22,
        alive_bonus=_hopper_alive,
        power_coefs={"foot_joint": 30.0, "foot_left_joint": 30.0},
        root_joints_at_origin=True,
    ),
    "half_cheetah": BulletRobot(
        name="half_cheetah",
        xml_file="half_cheetah.xml",
        # track these contacts with ground
        foot_list=("ffoot", "fshin", "fthigh", "bfoot", "bshin", "bthigh"),
        power=0.90,
        action_dim=6,
        obs_dim=26,
        alive_bonus=_half_cheetah_alive,
        power_coefs={
            "bthigh": 120.0,
            "bshin": 90.0,
            "bfoot": 60.0,
            "fthigh": 140.0,
            "fshin": 60.0,
            "ffoot": 30.0,
        },
        terminates=False,
    ),
    "ant": BulletRobot(
        name="ant",
        xml_file="ant.xml",
        foot_list=("front_left_foot", "front_right_foot", "left_back_foot", "right_back_foot"),
        power=2.5,
        action_dim=8,
        obs_dim=28,
        alive_bonus=_ant_alive,
    ),
}
