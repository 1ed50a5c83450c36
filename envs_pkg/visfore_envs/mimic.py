"""Mimic pairs: two robots face each other; the follower (the agent) copies the leader's
pose as in a mirror.

* :class:`MimicReacherEnv` (``MimicReacher-v0``): two planar reacher arms
  (``ReacherPlane-v0``'s arm) in the same plane, bases :attr:`~MimicReacherEnv.leader_distance`
  = 0.5 m apart on the x axis, the leader's turned 180 degrees about z to face the follower.
* :class:`MimicHumanoidEnv` (``MimicHumanoid-v0``): two fixed-torso humanoids
  (``TargetHumanoid-v0``'s robot) 3 m apart on the x axis, facing each other.

The **follower** is the robot of the single-robot env, at the same place (the world
origin), simulated as there; the action drives it. The **leader** is kinematic: not an
agent and not simulated. Its joint configuration is set directly each step by a *leader
process* and drawn by a visual-only copy of the robot (MuJoCo mocap bodies in the
rendering model only, opaque, in the robot's own colours), so it exerts no force on the
follower and costs nothing in ``mj_step``. Leader processes (``leader=``), all randomness
from the env's seeded ``np_random``, ``t`` the step index (0 at ``reset``):

* ``"hold"`` (default): random poses ``q_0, q_1, ...`` drawn uniformly within the joint
  limits (unlimited hinges in [-pi, pi]); segment ``k = t // hold_steps``. Segment 0 holds
  ``q_0``; in segment ``k >= 1`` the leader moves from ``q_{k-1}`` to ``q_k`` along the
  smoothstep ``s^2 (3 - 2 s)``, ``s = min(1, (j + 1) / move_steps)`` at the segment's
  ``j``-th step (it reaches ``q_k`` at ``j = move_steps - 1``; ``move_steps=0`` jumps), then
  holds ``q_k`` to the end of the segment. A new pose is drawn when a segment starts.
* ``"trajectory"``: a smooth random trajectory, per joint a sum of
  :attr:`~MimicEnv.trajectory_components` sinusoids with frequencies uniform in
  :attr:`~MimicEnv.trajectory_frequencies` (Hz), phases uniform in [0, 2 pi) and amplitudes
  uniform in [0.5, 1], normalised by the sum of the amplitudes and scaled to the joint's
  half-range around its mid-range: ``q_j(t) = c_j + h_j sum_m a_m sin(2 pi f_m t dt +
  phi_m) / sum_m a_m``, so it never leaves the limits (all drawn at ``reset``).
* a callable ``leader(t, rng) -> qpos`` (nq,) given by the user (``rng`` is the env's
  ``np_random``): the returned pose is clipped into the limits of the limited joints;
  ValueError if it has the wrong shape or is not finite.

The leader's joint velocities are ``(q_t - q_{t-1}) / dt`` (0 at ``reset``). On ``step``
the leader advances first, then the follower's physics runs; observation, reward,
``distance`` and ``is_success`` all compare the follower's new state with the leader's
new pose (the follower sees ``q_t`` and must match ``q_{t+1}``, as DeepMimic's reward
compares the character with the reference at the next time step).

**The mirror.** The reflection plane is ``x = D / 2``, halfway between the bases (``D`` =
:attr:`~MimicEnv.leader_distance`): a point ``(x, y, z)`` of the leader is reflected to
``(D - x, y, z)``. Because the leader is the follower turned by 180 degrees about z and
moved by ``D`` along x, the reflected leader is the leader's own configuration reflected
through its sagittal plane (``y -> -y``), which for these robots is again a configuration
of the robot: :data:`REACHER_MIRROR` / :data:`HUMANOID_MIRROR` give it as a joint map
``q_follower[i] = sign[i] * q_leader[source[i]]`` (the *mirror pose*, see
:meth:`MimicEnv.mirror_pose`) and a key-point map (follower key point ``i`` is the
reflection of leader key point ``keypoint_source[i]``, :meth:`MimicEnv.mirror_keypoints`).
The follower at the mirror pose has its key points exactly on the reflected leader's key
points (tested). As in a real mirror, when the leader raises its right arm the follower
raises its left one.

The follower's target is the mirror pose (it changes every step the leader moves): the
target key points ``k*`` are the reflected leader key points, and the rewards are the
reward catalogue's (:mod:`visfore_envs.core.rewards`) as in the reachers, with these
meanings: ``keypoint_distance`` and ``end_effector`` against the reflected leader key
points, ``joint_distance``/``pose`` against the mirror pose, ``velocity`` (DeepMimic's
velocity term) against the mirrored leader velocity; ``potential`` is ``Phi(s', L') -
Phi(s, L)`` with ``Phi = -||k - mirror(L)||`` on the state augmented with the leader's pose
``L`` (still potential-based shaping, Ng et al. 1999, on that state); ``pixel_mse``
compares the frame with the *goal frame*: the same camera with the follower at the mirror
pose and the leader where it is (rendered again each step the leader moves).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium.error import ResetNeeded
from gymnasium.utils import EzPickle

from visfore_envs.core.keypoint_env import KeypointTargetEnv
from visfore_envs.core.mujoco_env import DEFAULT_VIEW
from visfore_envs.core.options import check_int
from visfore_envs.core.rendering import CameraSpec
from visfore_envs.humanoid import TargetHumanoidEnv
from visfore_envs.reacher import ReacherPlaneEnv

__all__ = [
    "HUMANOID_MIRROR",
    "LEADER_MODES",
    "LEADER_PREFIX",
    "MIMIC_VIEWS",
    "MimicEnv",
    "MimicHumanoidEnv",
    "MimicReacherEnv",
    "MirrorMap",
    "REACHER_MIRROR",
]

#: Built-in leader processes (``leader=`` also accepts a callable ``fn(t, rng) -> qpos``).
LEADER_MODES = ("hold", "trajectory")
#: Name prefix of the leader's bodies, geoms and sites in the rendering model.
LEADER_PREFIX = "leader/"
#: Camera names of the mimic views (``camera=``), besides the model's own cameras.
MIMIC_VIEWS = ("pair", "leader", "follower")
_RESET_OPTION_KEYS = ("qpos", "qvel")


@dataclass(frozen=True)
class MirrorMap:
    """The mirror map of one robot: which leader joint/key point each follower joint/key
    point copies, and with which sign.

    Attributes:
        joint_source: (nq,) follower joint ``i`` copies leader joint ``joint_source[i]``.
        joint_sign: (nq,) and multiplies it by ``joint_sign[i]`` (+1 or -1).
        keypoint_source: (K,) follower key point ``i`` is the reflection of leader key
            point ``keypoint_source[i]`` through the mirror plane.

    The map is an involution (mirroring twice gives the pose back).
    """

    joint_source: tuple[int, ...]
    joint_sign: tuple[float, ...]
    keypoint_source: tuple[int, ...]

    def pose(self, leader_qpos) -> np.ndarray:
        """Follower target configuration(s) from leader configuration(s).

        Args:
            leader_qpos: (..., nq) joint positions (rad).

        Returns:
            (..., nq) float64 ``sign * leader_qpos[..., source]`` (also maps velocities).
        """
        q = np.asarray(leader_qpos, dtype=np.float64)
        return q[..., list(self.joint_source)] * np.asarray(self.joint_sign)


#: ``MimicReacher-v0``: joint0 -> -joint0, joint1 -> -joint1; elbow -> elbow,
#: fingertip -> fingertip (a planar arm reflected through its x axis).
REACHER_MIRROR = MirrorMap(joint_source=(0, 1), joint_sign=(-1.0, -1.0), keypoint_source=(0, 1))

#: ``MimicHumanoid-v0``: right and left limbs swap; legs and elbows keep their angles,
#: the shoulders' angles change sign (their axes are mirrored axial vectors; compare
#: ``target_humanoid.xml``: ``right_shoulder1`` axis (2, 1, 1), ``left_shoulder1`` (2, -1, 1)).
HUMANOID_MIRROR = MirrorMap(
    joint_source=(4, 5, 6, 7, 0, 1, 2, 3, 11, 12, 13, 8, 9, 10),
    joint_sign=(1.0,) * 8 + (-1.0, -1.0, 1.0, -1.0, -1.0, 1.0),
    keypoint_source=(2, 3, 0, 1, 6, 7, 4, 5),
)


# -- leader processes ------------------------------------------------------------------------
def _leader_state(leader: Any) -> dict[str, Any]:
    """A copy of a leader process's attributes (its state; not the user's callable)."""
    return {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in vars(leader).items() if not callable(v)}


def _restore_leader(leader: Any, state: dict[str, Any]) -> None:
    """Write a :func:`_leader_state` snapshot back into a leader process (copies)."""
    leader.__dict__.update({k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in state.items()})


class _Leader(Protocol):
    """A leader process: ``start`` at reset, then one ``pose`` (nq,) per step index."""

    def start(self, rng: np.random.Generator, low: np.ndarray, high: np.ndarray, dt: float) -> None: ...

    def pose(self, t: int, rng: np.random.Generator) -> np.ndarray: ...


class _HoldLeader:
    """Random poses held ``hold_steps`` steps, reached by a smoothstep over ``move_steps``."""

    def __init__(self, hold_steps: int, move_steps: int) -> None:
        self.hold_steps = hold_steps
        self.move_steps = move_steps

    def start(self, rng: np.random.Generator, low: np.ndarray, high: np.ndarray, dt: float) -> None:
        self._low, self._high = low, high
        self._segment = 0
        self._prev = self._next = rng.uniform(low, high)

    def pose(self, t: int, rng: np.random.Generator) -> np.ndarray:
        k, j = divmod(t, self.hold_steps)
        while self._segment < k:  # steps come one at a time; a loop keeps it exact anyway
            self._prev = self._next
            self._next = rng.uniform(self._low, self._high)
            self._segment += 1
        if k == 0:
            return self._next.copy()
        if j + 1 >= self.move_steps:
            return self._next.copy()
        s = (j + 1) / self.move_steps
        s = s * s * (3.0 - 2.0 * s)
        return self._prev + s * (self._next - self._prev)


class _TrajectoryLeader:
    """Per joint a normalised sum of sinusoids scaled to the joint's range."""

    def __init__(self, frequencies: tuple[float, float], components: int) -> None:
        self.frequencies = frequencies
        self.components = components

    def start(self, rng: np.random.Generator, low: np.ndarray, high: np.ndarray, dt: float) -> None:
        n, m = low.shape[0], self.components
        self._dt = dt
        self._centre = 0.5 * (low + high)
        self._half = 0.5 * (high - low)
        self._omega = 2.0 * math.pi * rng.uniform(*self.frequencies, size=(n, m))
        self._phase = rng.uniform(0.0, 2.0 * math.pi, size=(n, m))
        amp = rng.uniform(0.5, 1.0, size=(n, m))
        self._amp = amp / amp.sum(axis=1, keepdims=True)

    def pose(self, t: int, rng: np.random.Generator) -> np.ndarray:
        wave = np.sum(self._amp * np.sin(self._omega * (t * self._dt) + self._phase), axis=1)
        return self._centre + self._half * wave


class _CallableLeader:
    """The user's ``fn(t, rng) -> qpos``, checked and clipped into the limited joints' ranges."""

    def __init__(self, fn: Callable[[int, np.random.Generator], Any], limited: np.ndarray) -> None:
        self.fn = fn
        self._limited = limited

    def start(self, rng: np.random.Generator, low: np.ndarray, high: np.ndarray, dt: float) -> None:
        self._low = np.where(self._limited, low, -np.inf)
        self._high = np.where(self._limited, high, np.inf)

    def pose(self, t: int, rng: np.random.Generator) -> np.ndarray:
        raw = self.fn(t, rng)
        n = self._low.shape[0]
        try:
            q = np.asarray(raw, dtype=np.float64)
        except (TypeError, ValueError):
            q = None
        if q is None or q.shape != (n,) or not np.all(np.isfinite(q)):
            shape = None if q is None else q.shape
            raise ValueError(
                f"leader({t}, rng) returned {raw!r} (shape {shape}); it must return {n} finite joint positions (nq,)"
            )
        return np.clip(q, self._low, self._high)


# -- the env ---------------------------------------------------------------------------------
class MimicEnv(KeypointTargetEnv):
    """Base class of the mimic pairs: a kinematic leader robot faces the follower (the
    agent), whose target is the leader's mirror pose (see the module docstring).

    A robot subclass mixes this class in front of the single-robot env class
    (``class MimicReacherEnv(MimicEnv, ReacherPlaneEnv)``) and sets :attr:`mirror`,
    :attr:`leader_distance`, :attr:`robot_camera`, :attr:`default_camera` (the view of the
    pair), the hold defaults, and :meth:`_write_leader_proprio`.

    Keyword-only, besides those of :class:`~visfore_envs.core.KeypointTargetEnv`, all
    accepted: ``obs_mode``, ``reward_mode``, ``rewards``, ``reward_fn``,
    ``goal_conditioned``, ``potential_shaping``, weights, ``success_threshold``, ``width``,
    ``height``, ``camera`` and the free-camera values, ``frame_skip``, ``render_mode``.

    Keyword Args:
        leader: ``"hold"`` (default), ``"trajectory"`` or a callable ``fn(t, rng) -> qpos``
            (module docstring). Anything else: ValueError.
        hold_steps: steps per held pose of ``leader="hold"`` (integer >= 1; None: the class
            default :attr:`default_hold_steps`).
        move_steps: steps of the smooth move to a new pose (integer in [0, hold_steps];
            None: :attr:`default_move_steps`, at most ``hold_steps``). Giving
            ``hold_steps``/``move_steps`` with another leader is a ValueError.
        show_target: draw the translucent ghost of the follower's target (the mirror pose)
            on the follower; default False here (the leader itself shows the target).
        camera: besides the model's cameras, the mimic views (:data:`MIMIC_VIEWS`):
            ``"pair"`` (the default free camera, both robots), ``"leader"`` (the leader seen
            exactly as the single-robot env's default camera sees its robot: the same
            framing, so a frame-to-pose model trained on the single-robot env reads the
            leader's pose from it) and ``"follower"`` (the single-robot env's default view
            of the follower).
        views: as in the single-robot env (None, or names from its
            :meth:`~visfore_envs.core.VisforeMujocoEnv.view_names`, e.g.
            ``("default", "side")`` or ``"default+side"``; frames (height, len(views) *
            width, 3) uint8, views left to right). With ``camera="leader"`` view ``v`` is the
            single-robot env's view ``v`` turned with the leader (:meth:`leader_view`:
            lookat reflected through the leader's base, azimuth + 180 degrees), so the
            leader's frame has the layout of the single-robot env's frames with the same
            ``views`` (a translator trained on those reads it); with ``camera="follower"``
            the single-robot env's views as they are. With any other camera only
            ``"default"`` (that camera) is allowed (ValueError otherwise).

    With ``goal_conditioned=True`` the ``potential`` term (``potential_shaping``) is not
    allowed (ValueError): the target moves with the leader, so ``compute_reward`` cannot
    recompute the previous step's potential from the goals.

    Observations (P = the robot's proprio length, G = goal length; metres, rad, rad/s):

    * ``"state"``: float64 (2P + 2G,) = ``[follower proprio (P), leader proprio (P),
      k - k* (G), k* (G)]``: the follower's and the leader's states in the robot's proprio
      layout, then the follower's key points minus their targets and the targets (the
      reflected leader key points, follower key-point order).
    * ``"pixels"``: uint8 (height, width, 3), the frame of ``camera`` (default ``"pair"``:
      both robots, so the image shows the leader and the follower).
    * ``"state+pixels"``: ``{"state": follower proprio (P,), "pixels": frame}``: the
      follower's own state plus an image showing the leader (no leader state, no target:
      the pose to copy is only in the image).
    * goal-conditioned: ``{"observation", "achieved_goal": k (G,), "desired_goal": k*
      (G,)}`` with ``observation`` the follower proprio (P,), the frame, or
      ``{"state": follower proprio, "pixels": frame}``.

    ``info`` holds what the reachers' does (every ``reward_<key>``, ``distance``,
    ``is_success``) plus ``leader_qpos`` (nq,) float64, the leader's configuration;
    ``reset`` returns the same keys (reward terms 0.0).
    ``reset(options=...)`` accepts ``qpos`` (nq,) and ``qvel`` (nv,), the follower's initial
    state (ValueError on another key or shape). Registered ids truncate episodes.

    ``step`` before the first ``reset`` raises gymnasium's ``ResetNeeded`` (the leader
    process starts at ``reset``). :meth:`get_sim_state` adds the leader (step index, pose,
    velocity, the process's drawn poses or trajectory) to the follower's snapshot; a
    user callable leader's own internal state, if it keeps any, is not saved.
    """

    #: The robot's mirror map.
    mirror: ClassVar[MirrorMap]
    #: Distance D between the two robots' bases along x (metres); mirror plane x = D / 2.
    leader_distance: ClassVar[float] = 1.0
    #: The single-robot env's default camera (the ``"follower"`` view).
    robot_camera: ClassVar[CameraSpec] = CameraSpec()
    #: ``hold_steps`` and ``move_steps`` when None is given.
    default_hold_steps: ClassVar[int] = 25
    default_move_steps: ClassVar[int] = 5
    #: ``leader="trajectory"``: frequency range (Hz) and number of sinusoids per joint.
    trajectory_frequencies: ClassVar[tuple[float, float]] = (0.1, 0.5)
    trajectory_components: ClassVar[int] = 3

    def __init__(
        self,
        *,
        leader: str | Callable[[int, np.random.Generator], Any] = "hold",
        hold_steps: int | None = None,
        move_steps: int | None = None,
        show_target: bool = False,
        **kwargs: Any,
    ) -> None:
        mode, hold, move = self._check_leader_options(leader, hold_steps, move_steps, kwargs)
        self.leader_mode = mode
        self.hold_steps, self.move_steps = hold, move
        super().__init__(show_target=show_target, **kwargs)
        EzPickle.__init__(
            self,
            leader=leader,
            hold_steps=hold_steps,
            move_steps=move_steps,
            show_target=show_target,
            **kwargs,
        )
        if self.goal_conditioned and "potential" in self.reward_spec.names:
            raise ValueError(
                "the 'potential' reward term (potential_shaping=True) is not allowed with "
                "goal_conditioned=True in a mimic env: the target moves with the leader, so "
                "compute_reward cannot recompute it from the goals"
            )

        m, sm = self.model, self.scene_model
        if kwargs.get("camera") == "leader":
            self._turn_lights_with_leader()
        self._leader_data = mujoco.MjData(m)
        bodies = range(1, m.nbody)
        self._leader_mocap = np.array(
            [sm.body_mocapid[sm.body(LEADER_PREFIX + self._body_name(m, b)).id] for b in bodies],
            dtype=np.intp,
        )
        self._leader_site_ids = np.array([m.site(s).id for s in self.keypoint_sites], dtype=np.intp)
        self._mirror_axis = list(self.keypoint_axes).index(0)
        self._leader_qpos = self.init_qpos.copy()
        self._leader_qvel = np.zeros(m.nv)
        self._leader: _Leader = self._make_leader(leader, hold, move)
        self._t = 0
        #: Whether reset has started the leader process (step needs it).
        self._leader_started = False
        self._apply_leader(self.init_qpos, np.zeros(m.nv))
        self._update_keypoints()

    @classmethod
    def _check_leader_options(
        cls,
        leader: str | Callable[[int, np.random.Generator], Any],
        hold_steps: int | None,
        move_steps: int | None,
        kwargs: dict[str, Any],
    ) -> tuple[str, int, int]:
        """The leader mode (``"hold"``, ``"trajectory"`` or ``"callable"``) and the hold and
        move step counts (the class defaults for None).

        Raises:
            ValueError: a bad ``leader``, ``hold_steps`` or ``move_steps``, the step counts
                with a leader other than ``"hold"``, or ``joint_targets=True``.
        """
        if callable(leader):
            mode = "callable"
        elif isinstance(leader, str) and leader in LEADER_MODES:
            mode = leader
        else:
            raise ValueError(f"leader={leader!r} is not one of 'hold', 'trajectory' or a callable fn(t, rng) -> qpos")
        if mode != "hold":
            pairs = (("hold_steps", hold_steps), ("move_steps", move_steps))
            given = [f"{k}={v!r}" for k, v in pairs if v is not None]
            if given:
                raise ValueError(f"{given[0]} only applies to leader='hold', not leader={leader!r}")
        if hold_steps is None:
            hold = cls.default_hold_steps
        else:
            hold = check_int("hold_steps", hold_steps, minimum=1)
        if move_steps is None:
            move = min(cls.default_move_steps, hold)
        else:
            move = check_int("move_steps", move_steps, minimum=0, maximum=hold)
        if kwargs.get("joint_targets"):
            raise ValueError(
                "joint_targets=True is not available in mimic envs (their state holds the "
                "leader's joint angles); visfore mimic builds a joint-space policy's input itself"
            )
        return mode, hold, move

    def _make_leader(self, leader: str | Callable[[int, np.random.Generator], Any], hold: int, move: int) -> _Leader:
        """The leader process of a validated ``leader`` option (a callable is clipped into
        the limited joints' ranges)."""
        if callable(leader):
            m = self.model
            limited = np.zeros(m.nq, dtype=bool)
            for j in range(m.njnt):
                limited[m.jnt_qposadr[j]] = bool(m.jnt_limited[j])
            return _CallableLeader(leader, limited)
        if leader == "trajectory":
            return _TrajectoryLeader(self.trajectory_frequencies, self.trajectory_components)
        return _HoldLeader(hold, move)

    # -- the mirror ------------------------------------------------------------------------
    def mirror_pose(self, leader_qpos) -> np.ndarray:
        """The follower's target configuration for a leader configuration.

        Args:
            leader_qpos: (..., nq) leader joint positions (rad).

        Returns:
            (..., nq) float64 ``mirror.joint_sign * leader_qpos[..., mirror.joint_source]``.
        """
        return self.mirror.pose(leader_qpos)

    def reflect_points(self, points) -> np.ndarray:
        """Reflect world points through the mirror plane ``x = D / 2``: ``(D - x, y, z)``.

        Args:
            points: (..., 3) positions (metres).

        Returns:
            (..., 3) float64 reflected positions.
        """
        p = np.array(points, dtype=np.float64)
        p[..., 0] = self.leader_distance - p[..., 0]
        return p

    def mirror_keypoints(self, leader_keypoints) -> np.ndarray:
        """The follower's target key points from the leader's world key points: each
        reflected through the mirror plane and reordered by ``mirror.keypoint_source``.

        Args:
            leader_keypoints: (..., G) leader key points in world coordinates, flat in the
                key-point layout (``keypoint_axes`` per point, leader key-point order).

        Returns:
            (..., G) float64, the follower's target key points ``k*``.
        """
        kp = np.array(leader_keypoints, dtype=np.float64)
        k, a = self.n_keypoints, len(self.keypoint_axes)
        pts = kp.reshape(kp.shape[:-1] + (k, a))
        pts[..., self._mirror_axis] = self.leader_distance - pts[..., self._mirror_axis]
        return pts[..., list(self.mirror.keypoint_source), :].reshape(kp.shape)

    @property
    def leader_qpos(self) -> np.ndarray:
        """The leader's joint configuration (nq,) float64 (a copy)."""
        return self._leader_qpos.copy()

    @property
    def leader_qvel(self) -> np.ndarray:
        """The leader's joint velocities (nv,) float64, finite differences (a copy)."""
        return self._leader_qvel.copy()

    @property
    def leader_keypoints(self) -> np.ndarray:
        """The leader's key points in world coordinates, (G,) float64 (leader order)."""
        xpos = self._leader_data.site_xpos[self._leader_site_ids]
        world = self._to_world(xpos)
        return world[:, list(self.keypoint_axes)].reshape(-1)

    @classmethod
    def camera_views(cls) -> dict[str, CameraSpec]:
        """The mimic views (:data:`MIMIC_VIEWS`) as free cameras: ``pair`` (both robots),
        ``leader`` (the robot's default view turned with the leader, :meth:`leader_view`)
        and ``follower`` (the robot's default view)."""
        r = cls.robot_camera
        return {"pair": cls.default_camera, "leader": cls.leader_view(r), "follower": r}

    @classmethod
    def leader_view(cls, camera: CameraSpec) -> CameraSpec:
        """A free camera of the single-robot env turned with the leader: it sees the leader
        as ``camera`` sees the robot in the single-robot env (the leader is the robot turned
        180 degrees about z and moved by ``D`` along x): lookat ``(x, y, z)`` becomes
        ``(D - x, -y, z)`` (metres), azimuth + 180 degrees (mod 360); distance and
        elevation are kept.

        Raises:
            ValueError: ``camera`` is a model camera (``name`` set), not a free camera.
        """
        if camera.name is not None:
            raise ValueError(f"leader_view needs a free camera, not the model camera {camera.name!r}")
        d = cls.leader_distance
        return CameraSpec(
            distance=camera.distance,
            azimuth=(camera.azimuth + 180.0) % 360.0,
            elevation=camera.elevation,
            lookat=(d - camera.lookat[0], -camera.lookat[1], camera.lookat[2]),
        )

    def _view_cameras(self, views: tuple[str, ...], default: CameraSpec, camera: Any) -> tuple[CameraSpec, ...]:
        """``camera="leader"``: the single-robot env's views turned with the leader;
        ``"follower"``: those views as they are; any other camera: ``"default"`` only.

        Raises:
            ValueError: a view other than ``"default"`` with another camera.
        """
        if camera in ("leader", "follower"):
            robot = {DEFAULT_VIEW: self.robot_camera, **self.named_views}
            cams = tuple(robot[v] for v in views)
            return tuple(self.leader_view(c) for c in cams) if camera == "leader" else cams
        others = [v for v in views if v != DEFAULT_VIEW]
        if others:
            raise ValueError(
                f"view {others[0]!r} of views={views!r} needs camera='leader' or camera='follower' "
                f"in {type(self).__name__}; with camera={camera!r} the only view is 'default'"
            )
        return super()._view_cameras(views, default, camera)

    # -- leader ----------------------------------------------------------------------------
    def _to_world(self, local: np.ndarray) -> np.ndarray:
        """Leader-frame positions (..., 3) -> world: turned 180 degrees about z, moved by D."""
        out = local * np.array([-1.0, -1.0, 1.0])
        out[..., 0] += self.leader_distance
        return out

    def _apply_leader(self, qpos: np.ndarray, qvel: np.ndarray) -> None:
        """Pose the leader at ``qpos`` (nq,), record ``qvel`` (nv,), retarget the follower."""
        m, ld = self.model, self._leader_data
        ld.qpos[:] = qpos
        mujoco.mj_kinematics(m, ld)
        pos = self._to_world(ld.xpos[1:])
        q = ld.xquat[1:]
        # (0, 0, 0, 1) * (w, x, y, z) = (-z, -y, x, w): a half turn about z.
        quat = np.stack([-q[:, 3], -q[:, 2], q[:, 1], q[:, 0]], axis=1)
        for data in (self.scene_data, self._goal_data):
            data.mocap_pos[self._leader_mocap] = pos
            data.mocap_quat[self._leader_mocap] = quat
        self._leader_qpos[:] = qpos
        self._leader_qvel[:] = qvel
        self._reward_ctx.target_qvel[:] = self.mirror.pose(qvel)
        self._set_target(self.mirror.pose(qpos))
        self._frame = None

    def _leader_pose(self, t: int) -> np.ndarray:
        if t == 0:
            self._leader.start(self.np_random, self._target_low, self._target_high, self.dt)
        return np.asarray(self._leader.pose(t, self.np_random), dtype=np.float64)

    # -- scene -----------------------------------------------------------------------------
    @staticmethod
    def _body_name(model: mujoco.MjModel, b: int) -> str:
        return model.body(b).name or f"body{b}"

    def _edit_scene_spec(self, spec: mujoco.MjSpec, model: mujoco.MjModel) -> None:
        """Add the leader (mocap copies of every robot body, the robot's colours, key-point
        sites ``leader/<site>``; the world's non-plane geoms on a static body at the leader's
        base) and stretch the floor planes over both robots."""
        d = self.leader_distance
        for g in spec.worldbody.geoms:
            if g.type == mujoco.mjtGeom.mjGEOM_PLANE and g.size[0] > 0:
                g.pos = [g.pos[0] + d / 2, g.pos[1], g.pos[2]]
                g.size = [g.size[0] + d / 2, g.size[1], g.size[2]]
        world = spec.worldbody.add_body(name=LEADER_PREFIX + "world", pos=[d, 0, 0], quat=[0, 0, 0, 1])
        parents = {0: world}
        for b in range(1, model.nbody):
            name = LEADER_PREFIX + self._body_name(model, b)
            parents[b] = spec.worldbody.add_body(name=name, mocap=True)
        for g in range(model.ngeom):
            b = int(model.geom_bodyid[g])
            gtype = int(model.geom_type[g])
            invisible = model.geom_group[g] > 2 or model.geom_rgba[g, 3] == 0
            if invisible or gtype == int(mujoco.mjtGeom.mjGEOM_PLANE):
                continue
            kwargs: dict[str, Any] = dict(
                type=mujoco.mjtGeom(gtype),
                size=model.geom_size[g].copy(),
                pos=model.geom_pos[g].copy(),
                quat=model.geom_quat[g].copy(),
            )
            if gtype == int(mujoco.mjtGeom.mjGEOM_MESH):
                src = spec.geom(model.geom(g).name) if model.geom(g).name else None
                if src is None:
                    continue
                kwargs = dict(type=src.type, meshname=src.meshname, pos=src.pos, quat=src.quat)
            parents[b].add_geom(
                name=f"{LEADER_PREFIX}geom{g}",
                rgba=model.geom_rgba[g].copy(),
                group=int(model.geom_group[g]),
                contype=0,
                conaffinity=0,
                density=0,
                mass=0,
                **kwargs,
            )
        for s in self.keypoint_sites:
            site = model.site(s)
            parents[int(site.bodyid[0])].add_site(
                name=LEADER_PREFIX + s, pos=site.pos.copy(), group=3, size=[0.005, 0, 0]
            )

    def _turn_lights_with_leader(self) -> None:
        """Light the scene as the single-robot env lights its robot, seen from the leader.

        ``camera="leader"`` shows the leader as the robot's own camera shows the robot, but
        the world's lights stay put while the leader is turned 180 degrees about z and moved
        ``leader_distance`` along x: its limbs were shaded from the other side (a mean
        difference of 1.1/255 per pixel on ``MimicHumanoid-v0``, enough to raise a
        translator's stacked key-point error from 6.4 to 9.3 cm). The lights are turned and
        moved with the leader instead (the headlight follows the camera anyway). Only the
        leader is in that view, so nothing else it shows changes."""
        sm, d = self.scene_model, self.leader_distance
        sm.light_dir[:, :2] *= -1.0
        sm.light_pos[:, :2] *= -1.0
        sm.light_pos[:, 0] += d

    def _camera_spec(self, name, distance, azimuth, elevation, lookat) -> CameraSpec:
        if isinstance(name, str) and name in MIMIC_VIEWS:
            free = {
                "camera_distance": distance,
                "camera_azimuth": azimuth,
                "camera_elevation": elevation,
                "camera_lookat": lookat,
            }
            given = [k for k, v in free.items() if v is not None]
            if given:
                raise ValueError(f"{given[0]}={free[given[0]]!r} cannot be combined with camera={name!r}")
            return self.camera_views()[name]
        if isinstance(name, str):
            robot = mujoco.MjModel.from_xml_path(str(self.model_path()))
            names = [robot.camera(i).name for i in range(robot.ncam)]
            if name not in names:
                allowed = ", ".join(repr(n) for n in (*MIMIC_VIEWS, *names))
                raise ValueError(f"camera={name!r} is not one of {allowed}")
        return super()._camera_spec(name, distance, azimuth, elevation, lookat)

    # -- observations ------------------------------------------------------------------------
    @property
    def _leader_in_state(self) -> bool:
        return self.obs_mode == "state" and not self.goal_conditioned

    def _proprio_dim(self) -> int:
        self._robot_proprio_len = p = super()._proprio_dim()
        return 2 * p if self._leader_in_state else p

    def _write_proprio(self, out: np.ndarray) -> None:
        p = self._robot_proprio_len
        super()._write_proprio(out[:p])
        if out.shape[0] > p:
            self._write_leader_proprio(out[p:])

    def _write_leader_proprio(self, out: np.ndarray) -> None:
        """Write the leader's state (from ``_leader_qpos``/``_leader_qvel``) into ``out``
        (P,) in the robot's proprio layout."""
        raise NotImplementedError

    def _state_dim(self) -> int:
        if self.obs_mode == "state+pixels":
            return self._proprio_len
        return super()._state_dim()

    def _state_obs(self) -> np.ndarray:
        if self.obs_mode == "state+pixels":
            self._write_proprio(self._proprio_view)
            return self._proprio_view.copy()
        return super()._state_obs()

    @classmethod
    def decode_state(cls, state: Any) -> dict[str, np.ndarray]:
        """Joint angles and key points held in ``"state"`` observations of a mimic env
        (layout ``[follower proprio (P), leader proprio (P), k - k* (G), k* (G)]``),
        vectorised over leading axes, without creating an env.

        Returns:
            ``{"qpos": (..., nq) follower, "leader_qpos": (..., nq), "keypoints": (..., G),
            "target_keypoints": (..., G)}`` float64 (rad, metres).

        Raises:
            ValueError: the last axis does not fit the layout.
        """
        state = np.asarray(state, dtype=np.float64)
        g = len(cls.keypoint_sites) * len(cls.keypoint_axes)
        rest = state.shape[-1] - 2 * g if state.ndim else -1
        if rest <= 0 or rest % 2:
            raise ValueError(
                f"{cls.__name__}.decode_state needs (..., 2P + 2G) states with G = {g}, got shape {state.shape}"
            )
        p = rest // 2
        follower = np.concatenate([state[..., :p], state[..., 2 * p :]], axis=-1)
        out = super().decode_state(follower)
        out["leader_qpos"] = np.asarray(cls._qpos_from_proprio(state[..., p : 2 * p]), dtype=np.float64)
        return out

    # -- gymnasium API -------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Start an episode: start the leader process, then draw the follower's initial state.

        Returns:
            ``(observation, info)``; ``info`` has ``distance``, ``is_success`` and
            ``leader_qpos``.

        Raises:
            ValueError: unknown option key, an option array of the wrong shape, or a user
                leader returning a bad pose.
        """
        gym.Env.reset(self, seed=seed)
        opts = dict(options or {})
        unknown = [k for k in opts if k not in _RESET_OPTION_KEYS]
        if unknown:
            allowed = ", ".join(repr(k) for k in _RESET_OPTION_KEYS)
            raise ValueError(f"reset option {unknown[0]!r} is not one of {allowed} in a mimic env")
        self._t = 0
        self._apply_leader(self._leader_pose(0), np.zeros(self.model.nv))
        self._leader_started = True
        opts["target_qpos"] = self._target_qpos
        obs, info = super().reset(options=opts)
        info["leader_qpos"] = self._leader_qpos.copy()
        return obs, info

    def step(self, action):
        """Advance the leader one step, then the follower's physics (see the class doc).

        Returns:
            ``(observation, reward, terminated=False, truncated=False, info)``.

        Raises:
            ResetNeeded: before the first ``reset`` (e.g. on a fresh unpickled copy).
            ValueError: the action has the wrong shape or is not finite (the leader does
                not move then), or a user leader returns a bad pose.
        """
        if not self._leader_started:
            raise ResetNeeded(
                f"Cannot call {type(self).__name__}.step() before calling reset() (the leader process starts at reset)"
            )
        # Checked before the leader moves, so a refused action leaves everything as it was.
        self._check_action(action)
        t = self._t + 1
        qpos = self._leader_pose(t)
        self._t = t
        if np.array_equal(qpos, self._leader_qpos):
            # A held pose (most steps of leader="hold"): target, ghost, goal frame unchanged.
            self._leader_qvel[:] = 0.0
            self._reward_ctx.target_qvel[:] = 0.0
        else:
            self._apply_leader(qpos, (qpos - self._leader_qpos) / self.dt)
        obs, reward, terminated, truncated, info = super().step(action)
        info["leader_qpos"] = self._leader_qpos.copy()
        return obs, reward, terminated, truncated, info

    def get_sim_state(self) -> dict[str, Any]:
        """The follower's snapshot (:meth:`KeypointTargetEnv.get_sim_state`) plus the
        leader's: ``"leader_t"`` (step index), ``"leader_qpos"`` (nq,), ``"leader_qvel"``
        (nv,), ``"leader_started"`` and ``"leader_process"`` (the process's state)."""
        state = super().get_sim_state()
        state.update(
            leader_t=int(self._t),
            leader_qpos=self._leader_qpos.copy(),
            leader_qvel=self._leader_qvel.copy(),
            leader_started=bool(self._leader_started),
            leader_process=_leader_state(self._leader),
        )
        return state

    def set_sim_state(self, state: Any) -> None:
        """Restore a :meth:`get_sim_state` snapshot, leader included (see
        :meth:`KeypointTargetEnv.set_sim_state`).

        Raises:
            ValueError: missing or unknown keys, or arrays of the wrong size.
        """
        qpos = np.array(state.get("leader_qpos", ()), dtype=np.float64)
        qvel = np.array(state.get("leader_qvel", ()), dtype=np.float64)
        if qpos.shape != (self.model.nq,) or qvel.shape != (self.model.nv,):
            raise ValueError(
                f"set_sim_state: leader_qpos/leader_qvel shapes {qpos.shape}/{qvel.shape} are "
                f"not ({self.model.nq},)/({self.model.nv},)"
            )
        super().set_sim_state(state)
        _restore_leader(self._leader, state["leader_process"])
        self._t = int(state["leader_t"])
        self._leader_started = bool(state["leader_started"])
        # Poses the leader's mocap bodies and sets the target (the mirror pose) and the
        # target velocity exactly as the step that made the snapshot left them.
        self._apply_leader(qpos, qvel)
        self._update_keypoints()


class MimicReacherEnv(MimicEnv, ReacherPlaneEnv):
    """Two planar reacher arms facing each other; the follower mirrors the leader
    (``MimicReacher-v0``).

    Both arms are ``ReacherPlane-v0``'s (:class:`~visfore_envs.reacher.ReacherPlaneEnv`),
    in the same plane z = 0.01 m: the follower's base at the origin (its zero pose points
    along +x), the leader's at (0.5, 0) turned 180 degrees (its zero pose points at the
    follower). Reach 0.21 m each, so the arms never overlap. Mirror plane x = 0.25 m;
    mirror map :data:`REACHER_MIRROR`:

    ==============  =================  =====
    follower        leader             sign
    ==============  =================  =====
    joint0          joint0             -1
    joint1          joint1             -1
    elbow (kp)      elbow              reflected
    fingertip (kp)  fingertip          reflected
    ==============  =================  =====

    Observation ``"state"``: Box(-inf, inf, (20,), float64)

    ======  ====================================================  ========
    slice   content                                               unit
    ======  ====================================================  ========
    0:6     follower cos(q0, q1), sin(q0, q1), dq/dt              -, rad/s
    6:12    leader cos(q0, q1), sin(q0, q1), dq/dt                -, rad/s
    12:16   k - k*: follower (elbow, tip) (x, y) - targets        m
    16:20   k*: reflected leader (elbow, tip) (x, y)              m
    ======  ====================================================  ========

    ``"state+pixels"``: ``{"state": slice 0:6, "pixels": frame}``; goal-conditioned
    observation: slice 0:6 (or the frame), goals (4,). Action: as ``ReacherPlane-v0``.
    Default view ``"pair"``: straight down on both reaches (x from -0.21 to 0.71 m).
    Leader: ``hold_steps=25``, ``move_steps=5`` by default; ``MimicReacher-v0`` truncates
    after 100 steps (2 s), so a default episode shows four held poses.
    """

    mirror: ClassVar[MirrorMap] = REACHER_MIRROR
    leader_distance: ClassVar[float] = 0.5
    robot_camera: ClassVar[CameraSpec] = ReacherPlaneEnv.default_camera
    default_camera: ClassVar[CameraSpec] = CameraSpec(
        distance=1.2, azimuth=90.0, elevation=-90.0, lookat=(0.25, 0.0, 0.0)
    )
    default_hold_steps: ClassVar[int] = 25
    default_move_steps: ClassVar[int] = 5

    def _write_leader_proprio(self, out: np.ndarray) -> None:
        n = self.model.nq
        q = self._leader_qpos
        np.cos(q, out=out[:n])
        np.sin(q, out=out[n : 2 * n])
        out[2 * n :] = self._leader_qvel


class MimicHumanoidEnv(MimicEnv, TargetHumanoidEnv):
    """Two fixed-torso humanoids facing each other; the follower mirrors the leader
    (``MimicHumanoid-v0``).

    Both are ``TargetHumanoid-v0``'s robot (:class:`~visfore_envs.humanoid.TargetHumanoidEnv`):
    the follower's torso at (0, 0, 1.4) m facing +x, the leader's at (3, 0, 1.4) m facing
    -x. Mirror plane x = 1.5 m; mirror map :data:`HUMANOID_MIRROR` (right and left swap;
    legs and elbows keep their angles, shoulders change sign):

    =====================================  =====================================  ====
    follower joint                         leader joint                           sign
    =====================================  =====================================  ====
    right_hip_x, right_hip_z, right_hip_y  left_hip_x, left_hip_z, left_hip_y     +1
    right_knee                             left_knee                              +1
    left_hip_x, left_hip_z, left_hip_y     right_hip_x, right_hip_z, right_hip_y  +1
    left_knee                              right_knee                             +1
    right_shoulder1, right_shoulder2       left_shoulder1, left_shoulder2         -1
    right_elbow                            left_elbow                             +1
    left_shoulder1, left_shoulder2         right_shoulder1, right_shoulder2       -1
    left_elbow                             right_elbow                            +1
    =====================================  =====================================  ====

    Key points (follower <- reflected leader): right knee/foot/elbow/hand <- left
    knee/foot/elbow/hand and the other way round.

    Observation ``"state"``: Box(-inf, inf, (104,), float64)

    =======  ==============================================================  ========
    slice    content                                                         unit
    =======  ==============================================================  ========
    0:14     follower joint angles q (:data:`HUMANOID_JOINTS` order)         rad
    14:28    follower joint velocities                                       rad/s
    28:42    leader joint angles                                             rad
    42:56    leader joint velocities (finite differences)                    rad/s
    56:80    k - k*: follower key points minus the reflected leader's        m
    80:104   k*: reflected leader key points, follower key-point order       m
    =======  ==============================================================  ========

    ``"state+pixels"``: ``{"state": slice 0:28, "pixels": frame}``; goal-conditioned
    observation: slice 0:28 (or the frame), goals (24,). Action: as ``TargetHumanoid-v0``.
    Default view ``"pair"``: from the side, a little above, both humanoids whole.
    Leader: ``hold_steps=50``, ``move_steps=10`` by default (a move of 0.2 s, within what
    the follower's servo-like joints can follow in 9-31 steps per range); ``MimicHumanoid-v0``
    truncates after 200 steps (4 s): four held poses.
    """

    mirror: ClassVar[MirrorMap] = HUMANOID_MIRROR
    leader_distance: ClassVar[float] = 3.0
    robot_camera: ClassVar[CameraSpec] = TargetHumanoidEnv.default_camera
    default_camera: ClassVar[CameraSpec] = CameraSpec(
        distance=4.9, azimuth=90.0, elevation=-10.0, lookat=(1.5, 0.0, 0.95)
    )
    default_hold_steps: ClassVar[int] = 50
    default_move_steps: ClassVar[int] = 10

    def _write_leader_proprio(self, out: np.ndarray) -> None:
        n = self.model.nq
        out[:n] = self._leader_qpos
        out[n:] = self._leader_qvel
