"""Reachers that move their key points (elbow, fingertip) onto a target pose.

* :class:`ReacherPlaneEnv` (``ReacherPlane-v0``): gymnasium's planar two-link Reacher arm
  (model, actuators and control cost from gymnasium ``envs/mujoco/reacher_v5.py`` and
  ``assets/reacher.xml``) with a target *pose* instead of a target point.
* :class:`Reacher3DEnv` (``Reacher3D-v0``): a three-joint arm (shoulder yaw and pitch,
  elbow) reaching poses in 3D.

Both are :class:`visfore_envs.core.KeypointTargetEnv` subclasses; see that class for the
constructor options, reward terms and ``info`` keys, and :class:`ReacherPlaneEnv` /
:class:`Reacher3DEnv` for the exact observation layouts.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import ClassVar

import numpy as np

from visfore_envs.core.keypoint_env import KeypointTargetEnv
from visfore_envs.core.rendering import CameraSpec

__all__ = ["ReacherPlaneEnv", "Reacher3DEnv", "REACHER_3D_VIEWS"]

#: Named views of ``Reacher3D-v0``'s ``views=`` besides ``"default"`` (free cameras, 45
#: degree field of view), each framing the whole reach sphere: over random poses within
#: the joint limits, the elbow and fingertip key points stay at least 10% of the frame
#: inside its edges (tested):
#:
#: * ``"side"``: 90 degrees in azimuth from the default (azimuth 45), elevation -10,
#:   0.8 m from (0, 0, 0.3) m;
#: * ``"top"``: straight down (elevation -90) from 0.8 m above (0, 0, 0.3) m.
REACHER_3D_VIEWS: Mapping[str, CameraSpec] = MappingProxyType(
    {
        "side": CameraSpec(distance=0.8, azimuth=45.0, elevation=-10.0, lookat=(0.0, 0.0, 0.3)),
        "top": CameraSpec(distance=0.8, azimuth=180.0, elevation=-90.0, lookat=(0.0, 0.0, 0.3)),
    }
)


class _HingeArm(KeypointTargetEnv):
    """An arm whose joints are all hinges: proprio = ``[cos q, sin q, dq/dt]`` (3 * nq,)."""

    def _proprio_dim(self) -> int:
        return 3 * self.model.nq

    def _write_proprio(self, out: np.ndarray) -> None:
        n = self.model.nq
        q = self._qpos
        np.cos(q, out=out[:n])
        np.sin(q, out=out[n : 2 * n])
        out[2 * n :] = self._qvel

    @classmethod
    def _qpos_from_proprio(cls, proprio: np.ndarray) -> np.ndarray:
        """``q = atan2(sin q, cos q)`` (..., nq) rad in [-pi, pi] from ``[cos q, sin q, dq/dt]``
        (..., 3 nq) (see :meth:`KeypointTargetEnv.decode_state`)."""
        p = proprio.shape[-1]
        if p % 3:
            raise ValueError(f"{cls.__name__} proprio length {p} is not 3 * nq ([cos q, sin q, dq/dt])")
        n = p // 3
        return np.arctan2(proprio[..., n : 2 * n], proprio[..., :n])

    @classmethod
    def _qvel_from_proprio(cls, proprio: np.ndarray) -> np.ndarray:
        """``dq/dt`` (..., nq) rad/s, the last third of ``[cos q, sin q, dq/dt]``."""
        p = proprio.shape[-1]
        if p % 3:
            raise ValueError(f"{cls.__name__} proprio length {p} is not 3 * nq ([cos q, sin q, dq/dt])")
        n = p // 3
        return proprio[..., 2 * n :].copy()


class ReacherPlaneEnv(_HingeArm):
    """Planar two-link arm reaching a target pose (``ReacherPlane-v0``).

    Model: gymnasium's Reacher arm (``reacher_v5.py``, ``assets/reacher.xml``): links of
    0.1 m, fingertip 0.11 m past the elbow, hinge ``joint0`` unlimited (targets drawn in
    [-pi, pi]) and ``joint1`` in [-3, 3] rad, motors with gear 200 and controls in [-1, 1],
    RK4 with a 0.01 s time step, ``frame_skip=2`` (``dt = 0.02`` s). The target slide
    joints of Reacher-v5 are gone (nq = nv = 2): the target is a random joint
    configuration, drawn as a translucent ghost arm with red markers on its key points.
    Key points: ``elbow`` and ``fingertip``, (x, y) only (the arm moves in the plane
    z = 0.01 m), so G = 4. Default view: straight down on the whole reach. ``views``
    accepts only ``"default"`` (another view of a planar arm shows nothing new; any other
    name is a ValueError listing the valid one).

    Observation ``"state"``: Box(-inf, inf, (14,), float64)

    ======  ====================================================  ========
    slice   content                                               unit
    ======  ====================================================  ========
    0:2     cos(joint0), cos(joint1)                              -
    2:4     sin(joint0), sin(joint1)                              -
    4:6     joint velocities                                      rad/s
    6:10    k - k*: (elbow_x, elbow_y, tip_x, tip_y) - target     m
    10:14   k*: target (elbow_x, elbow_y, tip_x, tip_y)           m
    ======  ====================================================  ========

    ``"pixels"``: Box(0, 255, (height, width, 3), uint8). Goal-conditioned: observation =
    slice 0:6 (or the frame), ``achieved_goal`` = k (4,), ``desired_goal`` = k* (4,).
    Action: Box(-1, 1, (2,), float32), torques (times gear 200, N m) on joint0, joint1.
    Reward and options: :class:`visfore_envs.core.KeypointTargetEnv`
    (``ctrl_cost_weight`` defaults to 1.0, what Reacher-v5 actually uses).
    """

    xml_file: ClassVar[str] = "reacher_plane.xml"
    keypoint_sites: ClassVar[tuple[str, ...]] = ("elbow", "fingertip")
    keypoint_axes: ClassVar[tuple[int, ...]] = (0, 1)
    default_success_threshold: ClassVar[float] = 0.02
    default_camera: ClassVar[CameraSpec] = CameraSpec(
        distance=0.58, azimuth=90.0, elevation=-90.0, lookat=(0.0, 0.0, 0.0)
    )


class Reacher3DEnv(_HingeArm):
    """Three-joint arm reaching a target pose in 3D (``Reacher3D-v0``).

    Model (``assets/reacher_3d.xml``): shoulder 0.3 m above the ground on a pedestal,
    hinges ``shoulder_yaw`` (about z, [-pi, pi] rad), ``shoulder_pitch`` (about the rotated
    horizontal axis, [-1.4, 1.4] rad, positive lifts the arm) and ``elbow`` (parallel to the
    pitch axis, [-2.6, 2.6] rad); upper arm 0.12 m, fingertip 0.12 m past the elbow.
    Joints, motors (gear 200, controls in [-1, 1]), RK4 at 0.01 s and ``frame_skip=2``
    follow gymnasium's Reacher. Key points: ``elbow`` and ``fingertip`` in (x, y, z), G = 6.
    Default view: an oblique free camera on the whole reach sphere. ``views`` also
    offers ``"side"`` and ``"top"`` (:data:`REACHER_3D_VIEWS`), e.g.
    ``views=("default", "side")``: frames (height, 2 * width, 3).

    Observation ``"state"``: Box(-inf, inf, (21,), float64)

    ======  ================================================================  ========
    slice   content                                                           unit
    ======  ================================================================  ========
    0:3     cos(shoulder_yaw, shoulder_pitch, elbow)                          -
    3:6     sin(shoulder_yaw, shoulder_pitch, elbow)                          -
    6:9     joint velocities                                                  rad/s
    9:15    k - k*: (elbow_xyz, tip_xyz) - target                             m
    15:21   k*: target (elbow_xyz, tip_xyz)                                   m
    ======  ================================================================  ========

    ``"pixels"``: Box(0, 255, (height, width, 3), uint8). Goal-conditioned: observation =
    slice 0:9 (or the frame), ``achieved_goal`` = k (6,), ``desired_goal`` = k* (6,).
    Action: Box(-1, 1, (3,), float32), torques (times gear 200, N m) on the three hinges.
    """

    xml_file: ClassVar[str] = "reacher_3d.xml"
    keypoint_sites: ClassVar[tuple[str, ...]] = ("elbow", "fingertip")
    keypoint_axes: ClassVar[tuple[int, ...]] = (0, 1, 2)
    default_success_threshold: ClassVar[float] = 0.02
    default_camera: ClassVar[CameraSpec] = CameraSpec(
        distance=0.72, azimuth=135.0, elevation=-30.0, lookat=(0.0, 0.0, 0.28)
    )
    #: Views of the ``views`` option besides ``"default"`` (:data:`REACHER_3D_VIEWS`).
    named_views: ClassVar[Mapping[str, CameraSpec]] = REACHER_3D_VIEWS
