"""A humanoid whose torso is fixed to the world, moving its limbs onto a target pose.

:class:`TargetHumanoidEnv` (``TargetHumanoid-v0``) is a
:class:`visfore_envs.core.KeypointTargetEnv`: each episode draws a target configuration of
the 14 limb joints uniformly within their limits, the goal is where the 8 key points
(knees, feet, elbows, hands) are in that configuration, and the target pose is drawn as a
translucent ghost with red markers on its key points (``show_target=False`` hides it).
See that class for the constructor options, the reward catalogue (``rewards=``,
``reward_fn=``) and the ``info`` keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import ClassVar

import mujoco
import numpy as np

from visfore_envs.core.keypoint_env import KeypointTargetEnv
from visfore_envs.core.rendering import CameraSpec

__all__ = ["TargetHumanoidEnv", "HUMANOID_JOINTS", "HUMANOID_KEYPOINTS", "HUMANOID_VIEWS"]

#: Joint names in ``qpos``/``qvel``/action order.
HUMANOID_JOINTS: tuple[str, ...] = (
    "right_hip_x",
    "right_hip_z",
    "right_hip_y",
    "right_knee",
    "left_hip_x",
    "left_hip_z",
    "left_hip_y",
    "left_knee",
    "right_shoulder1",
    "right_shoulder2",
    "right_elbow",
    "left_shoulder1",
    "left_shoulder2",
    "left_elbow",
)
#: Key-point site names in goal order (3 coordinates each).
HUMANOID_KEYPOINTS: tuple[str, ...] = (
    "right_knee",
    "right_foot",
    "left_knee",
    "left_foot",
    "right_elbow",
    "right_hand",
    "left_elbow",
    "left_hand",
)

#: Named views of ``views=`` (besides ``"default"``, the default camera: azimuth 155,
#: 25 degrees off the front toward the humanoid's right), free cameras with the model's
#: 45 degree field of view, each framing the whole reach of all four limbs: over random
#: poses within the joint limits, the hand and foot key points stay at least 10% of the
#: frame inside its edges (tested):
#:
#: * ``"side"``: 90 degrees in azimuth from the default (azimuth 245: from the
#:   humanoid's left, 25 degrees in front of it), elevation -8, 3.0 m from (0.05, 0, 1.1);
#: * ``"top"``: straight down (elevation -90) from 3.0 m above (0.1, 0, 1.0) m, the
#:   humanoid's front at the bottom of the frame and its left on the right.
HUMANOID_VIEWS: Mapping[str, CameraSpec] = MappingProxyType(
    {
        "side": CameraSpec(distance=3.0, azimuth=245.0, elevation=-8.0, lookat=(0.05, 0.0, 1.1)),
        "top": CameraSpec(distance=3.0, azimuth=180.0, elevation=-90.0, lookat=(0.1, 0.0, 1.0)),
    }
)


class TargetHumanoidEnv(KeypointTargetEnv):
    """Fixed-torso humanoid reaching a target pose with arms and legs (``TargetHumanoid-v0``).

    Model (``assets/target_humanoid.xml``): gymnasium's Humanoid (``humanoid_v5.py``,
    ``assets/humanoid.xml``: body geometry, joint axes, ranges and armatures) with the
    torso welded to the world 1.4 m above the floor and the abdomen joints removed (the
    pose is set by the limbs alone, and each leg's key points depend on that leg only).
    14 hinge joints (:data:`HUMANOID_JOINTS`): per leg ``hip_x``, ``hip_z``, ``hip_y``
    (3 DoF) and ``knee``; per arm ``shoulder1``, ``shoulder2`` (2 DoF) and ``elbow``.
    Gravity is off, the joint springs are removed and contacts are disabled, so any pose
    within the limits is held at zero torque (as pybullet_envs' ReacherBulletEnv runs
    without gravity); damping and gears make each joint a first-order velocity servo: a
    control of 1 drives it at up to about 5 rad/s, time constants 0.015-0.1 s, every joint
    crosses its range in 9-31 steps. MuJoCo's ``implicitfast`` integrator at 0.01 s,
    ``frame_skip=2``: ``dt = 0.02`` s; ``TargetHumanoid-v0`` truncates after 100 steps (2 s).
    Limbs do not collide with each other or the floor (targets can intersect too).
    The home pose stands straight with the knees bent 0.1 rad; initial states add
    ``U(-0.1, 0.1)`` rad per joint, clipped into the joint limits.

    Key points (:data:`HUMANOID_KEYPOINTS`): right knee, right foot, left knee, left foot,
    right elbow, right hand, left elbow, left hand, (x, y, z) each, G = 24, in metres in
    the world frame (x forward, the humanoid faces +x; y to its left; z up). Knees and
    elbows are the joint centres, feet and hands the centres of their spheres. End
    effectors (the ``end_effector`` reward term): hands and feet. ``success_threshold``
    defaults to 0.1 m on the stacked distance (about 3.5 cm per key point). Right limbs
    are blue, left limbs green. Default view: a free camera in front of the humanoid,
    25 degrees to its left, framing the whole reach; ``camera="front"`` is straight ahead.
    ``views=("default", "side")`` (or ``"default+side"``; also ``"top"``,
    :data:`HUMANOID_VIEWS`) puts the default view and others side by side in each frame:
    (height, len(views) * width, 3) uint8, e.g. to triangulate the limbs' depth.

    Observation ``"state"``: Box(-inf, inf, (76,), float64)

    ======  ==============================================================  ========
    slice   content                                                         unit
    ======  ==============================================================  ========
    0:14    joint angles q, :data:`HUMANOID_JOINTS` order                   rad
    14:28   joint velocities dq/dt                                          rad/s
    28:52   k - k*: key points minus their targets, point by point          m
    52:76   k*: target key points                                           m
    ======  ==============================================================  ========

    (The joints are all limited to less than a turn, so angles are given as they are, not
    as cos/sin like the reachers.) ``"pixels"``: Box(0, 255, (height, width, 3), uint8);
    with ``views``: Box(0, 255, (height, len(views) * width, 3), uint8).
    Goal-conditioned: observation = slice 0:28 (or the frame), ``achieved_goal`` = k (24,),
    ``desired_goal`` = k* (24,). Action: Box(-1, 1, (14,), float32), motor controls in
    :data:`HUMANOID_JOINTS` order (torque = gear x control: hips 100/25/100, knees 20,
    shoulders 10, elbows 5 N m).
    """

    xml_file: ClassVar[str] = "target_humanoid.xml"
    keypoint_sites: ClassVar[tuple[str, ...]] = HUMANOID_KEYPOINTS
    keypoint_axes: ClassVar[tuple[int, ...]] = (0, 1, 2)
    end_effector_sites: ClassVar[tuple[str, ...]] = ("right_foot", "left_foot", "right_hand", "left_hand")
    default_success_threshold: ClassVar[float] = 0.1
    ghost_marker_radius: ClassVar[float] = 0.05
    init_qpos_noise: ClassVar[float] = 0.1
    init_qvel_noise: ClassVar[float] = 0.005
    #: Home pose: joints at 0 except these (rad); 0 is outside the knees' range [-160, -2] deg.
    home_qpos: ClassVar[dict[str, float]] = {"right_knee": -0.1, "left_knee": -0.1}
    default_camera: ClassVar[CameraSpec] = CameraSpec(
        distance=2.7, azimuth=155.0, elevation=-8.0, lookat=(0.1, 0.0, 1.02)
    )
    #: Views of the ``views`` option besides ``"default"`` (:data:`HUMANOID_VIEWS`).
    named_views: ClassVar[Mapping[str, CameraSpec]] = HUMANOID_VIEWS

    def _load_model(self) -> mujoco.MjModel:
        model = super()._load_model()
        for m in (model, self._ghost_scene_model):
            for name, value in self.home_qpos.items():
                m.qpos0[m.jnt_qposadr[m.joint(name).id]] = value
        return model

    def _proprio_dim(self) -> int:
        return self.model.nq + self.model.nv

    def _write_proprio(self, out: np.ndarray) -> None:
        n = self.model.nq
        out[:n] = self._qpos
        out[n:] = self._qvel

    @classmethod
    def _qpos_from_proprio(cls, proprio: np.ndarray) -> np.ndarray:
        """Joint angles q (..., 14) rad from ``[q, dq/dt]`` (..., 28) (see
        :meth:`KeypointTargetEnv.decode_state`)."""
        p, n = proprio.shape[-1], len(HUMANOID_JOINTS)
        if p != 2 * n:
            raise ValueError(f"{cls.__name__} proprio length {p} is not 2 * {n} ([q, dq/dt])")
        return proprio[..., :n].copy()

    @classmethod
    def _qvel_from_proprio(cls, proprio: np.ndarray) -> np.ndarray:
        """Joint velocities dq/dt (..., 14) rad/s from ``[q, dq/dt]`` (..., 28)."""
        p, n = proprio.shape[-1], len(HUMANOID_JOINTS)
        if p != 2 * n:
            raise ValueError(f"{cls.__name__} proprio length {p} is not 2 * {n} ([q, dq/dt])")
        return proprio[..., n:].copy()

    def _sample_initial_qpos(self) -> np.ndarray:
        qpos = super()._sample_initial_qpos()
        return np.clip(qpos, self._target_low, self._target_high)
