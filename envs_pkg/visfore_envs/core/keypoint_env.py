"""Reach a target *pose*: key points of a robot toward the key points of a target
configuration drawn in joint space.

A pose is defined by the positions of a few "key points" of the robot (MJCF sites, e.g.
elbow and fingertip). Each episode draws a random joint configuration within the joint
limits (from the env's seeded ``np_random``), computes by forward kinematics where the
key points are in that configuration (the *target key points*, the goal), and shows the
target pose in the scene as a translucent, non-colliding ghost of the robot with marker
spheres on its key points (:mod:`visfore_envs.core.ghost`).

Rewards come from the reward catalogue (:mod:`visfore_envs.core.rewards`): named terms
with weights, each reported in ``info["reward_<key>"]``. Either ``rewards=`` selects them
(``{"keypoint_distance": 1, "ctrl": 0.1}`` or ``"keypoint_distance+0.1*ctrl"``), or the
reachers' original options do, as a preset (:func:`~visfore_envs.core.rewards.legacy_spec`):

* state: ``reward_dist = -w_s * ||k - k*||_2`` where ``k`` and ``k*`` stack all key points
  and target key points (the p2-norm of the whole difference vector, metres), optionally
  plus potential-based shaping ``reward_potential = w_s * (gamma * Phi(s') - Phi(s))`` with
  ``Phi = -distance`` and ``gamma = 1`` (Ng, Harada & Russell 1999, "Policy invariance
  under reward transformations"; Roboschool's "progress" term);
* pixels: ``reward_pixels = -w_p * MSE(frame, goal_frame)`` on [0, 1] intensities, the
  goal frame being the scene rendered with the robot at the target configuration
  (rendered once per episode, on first need);
* every mode: ``reward_ctrl = -ctrl_cost_weight * ||a||^2`` (gymnasium Reacher-v5's control
  cost; Roboschool's "electricity" penalty plays the same role), ``a`` the *applied*
  action: the action clipped into the actuators' ``ctrlrange`` as MuJoCo clips the
  controls, so an action of 1e6 costs what the bound does (gymnasium's Reacher-v5 charges
  the raw action instead).

The reward is the sum of the ``reward_*`` terms present in ``info`` (grouped as
``(action terms + state terms) + pixel terms``), unless ``reward_fn`` combines them.
"""

from __future__ import annotations

import copy
import inspect
import math
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, cast

import mujoco
import numpy as np
from gymnasium import spaces
from gymnasium.envs.registration import EnvSpec
from gymnasium.utils import EzPickle

from visfore_envs.core.ghost import GHOST_GROUP, Ghost, load_model_with_ghost
from visfore_envs.core.mujoco_env import REWARD_MODES, VisforeMujocoEnv
from visfore_envs.core.options import check_choice, check_real
from visfore_envs.core.rewards import (
    REWARD_TERMS,
    RewardContext,
    RewardSpec,
    RewardTerm,
    info_values,
    legacy_spec,
    parse_rewards,
    resolve_reward_fn,
    wrap_hinge_differences,
)

__all__ = ["GoalConditionedKeypointEnv", "KeypointTargetEnv", "goal_conditioned_class"]

_RESET_OPTION_KEYS = ("target_qpos", "qpos", "qvel")
#: Values of ``init_pose``: start near home, or anywhere within the joint limits.
INIT_POSES = ("home", "random")
#: What :meth:`KeypointTargetEnv.get_sim_state` saves of MuJoCo's ``MjData``: time, qpos,
#: qvel, act, the solver's warm start, ctrl and the other user inputs (so a restored
#: simulation continues bit for bit).
_PHYSICS_STATE = int(mujoco.mjtState.mjSTATE_INTEGRATION)
_OPTION_NAMES: dict[type, tuple[str, ...]] = {}
#: Options that must be bools.
_FLAG_OPTIONS = ("goal_conditioned", "potential_shaping", "show_target", "joint_targets")
#: The reachers' reward weights (None: 1.0).
_WEIGHT_OPTIONS = ("ctrl_cost_weight", "state_reward_weight", "pixel_reward_weight")
#: Options passed on unchanged to :class:`VisforeMujocoEnv` (with ``reward_mode`` and the
#: weights, which :meth:`KeypointTargetEnv._base_options` derives).
_BASE_OPTIONS = (
    "obs_mode",
    "width",
    "height",
    "camera",
    "camera_distance",
    "camera_azimuth",
    "camera_elevation",
    "camera_lookat",
    "views",
    "frame_skip",
    "render_mode",
)
_GOAL_CLASSES: dict[type[KeypointTargetEnv], type[GoalConditionedKeypointEnv]] = {}
#: A reward term as ``step`` evaluates it: ``(info key, value function, weight)``.
_StepTerm = tuple[str, Callable[[RewardContext], float], float]
#: ``reward_fn(terms, info) -> reward`` (a float; batched arrays in ``compute_reward``).
_RewardFn = Callable[[dict, dict], Any]


def _rebuild_env(cls: type, args: tuple, kwargs: dict[str, Any]) -> KeypointTargetEnv:
    """Unpickling: a fresh env from its constructor arguments (``cls`` is the plain class;
    ``goal_conditioned=True`` picks the goal-conditioned class again)."""
    return cls(*args, **kwargs)


def _jsonable(value: Any) -> Any:
    """``value`` with numpy arrays and scalars turned into lists and Python numbers (what
    ``json.dumps`` can write); everything else unchanged."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if type(value) in (list, tuple):
        return type(value)(_jsonable(v) for v in value)
    if type(value) is dict:
        return {k: _jsonable(v) for k, v in value.items()}
    return value


class KeypointTargetEnv(VisforeMujocoEnv, EzPickle):
    """Goal-reaching MuJoCo env: move the robot's key points onto a target pose's key points.

    A robot subclass provides :attr:`xml_file` (MJCF), :attr:`keypoint_sites` (site names),
    :attr:`keypoint_axes` (which world coordinates of a key point count: ``(0, 1)`` for a
    planar robot, ``(0, 1, 2)`` in 3D), :attr:`default_camera`, its proprioceptive state
    (:meth:`_proprio_dim`, :meth:`_write_proprio`) and, if the default is not right, the
    target sampler :meth:`sample_target_qpos` (uniform within the joint limits, unlimited
    hinges in [-pi, pi]).

    Keyword-only, plus those of :class:`VisforeMujocoEnv`: ``obs_mode``,
    ``width``, ``height``, ``camera``, ``camera_distance``, ``camera_azimuth``,
    ``camera_elevation``, ``camera_lookat``, ``views``, ``render_mode``, ``frame_skip``.
    With ``views`` (e.g. ``("default", "side")`` or ``"default+side"``, names from
    :meth:`~VisforeMujocoEnv.view_names`) every frame shows the robot from each view, each
    ``width`` x ``height``, side by side left to right: frames are (height, len(views) *
    width, 3); the goal frame of the pixel reward (and :meth:`render_goal`) has the same
    views, and the pixel MSE averages over all of them.

    Keyword Args:
        rewards: the reward terms and weights from the catalogue
            (:mod:`visfore_envs.core.rewards`): a dict ``{name: weight}``, a string
            ``"keypoint_distance+0.1*ctrl"`` (a bare name takes its default weight), a
            preset name (``"deepmimic"``, ...) or a ``RewardSpec``. None (default): the
            terms given by the options below. Cannot be combined with ``reward_mode``,
            ``potential_shaping=True`` or the three weights (ValueError).
        reward_fn: None, a callable ``reward_fn(terms, info) -> float`` or a
            ``"package.module:function"`` path to one. ``terms`` maps each active term
            name to its weighted value (the ``info["reward_<key>"]`` numbers) and the
            return value is the reward. With ``goal_conditioned`` it is also called by
            :meth:`compute_reward` with batched arrays as values, so write it with numpy
            operations.
        reward_mode: ``"state"`` (default), ``"pixels"`` or ``"state+pixels"``: the
            reachers' reward options (see the module docstring); with ``rewards`` the
            attribute ``reward_mode`` is derived from the terms.
        potential_shaping: add ``reward_potential`` (see the module docstring).
        ctrl_cost_weight, state_reward_weight, pixel_reward_weight: finite numbers >= 0
            (default 1.0 each).
        goal_conditioned: return ``{"observation", "achieved_goal", "desired_goal"}`` dicts
            (gymnasium-robotics convention). The reward must be recomputable by
            :meth:`compute_reward` from goals: ``reward_mode="state"``, or ``rewards``
            without ``joint_distance``, ``pose`` and ``pixel_mse`` (otherwise ValueError).
        show_target: draw the target ghost and key-point markers in the frames.
        success_threshold: ``info["is_success"]`` is ``distance < success_threshold``
            (metres, > 0; None: the class default :attr:`default_success_threshold`).
        init_pose: ``"home"`` (default): each episode starts near the home configuration,
            ``init_qpos + U(-init_qpos_noise, init_qpos_noise)`` rad; ``"random"``: it
            starts in a configuration drawn like the targets, uniformly within the joint
            limits (unlimited hinges in [-pi, pi]), so a dataset of short episodes covers
            the whole configuration space (e.g. to train ``visfore train-translator``).
        joint_targets: append ``q* - q`` (nq,), the target joint configuration minus the
            current one (radians; hinge differences wrapped into [-pi, pi)), to the ``state``
            vector, for *joint-space* reaching policies (targets are drawn in joint
            space; ``visfore mimic`` feeds them the translator's joint angles). Needs
            ``goal_conditioned=False`` and a state observation (ValueError otherwise).

    Observations (G = number of key points * len(keypoint_axes), P = proprio length):

    * ``"state"``: float64 (P + 2G,) = ``[proprio (P), k - k* (G), k* (G)]``, key points
      flattened point by point (``[p0_x, p0_y(, p0_z), p1_x, ...]``), metres; with
      ``joint_targets=True`` float64 (P + 2G + nq,) = ``[..., q* - q (nq)]`` (radians).
    * ``"pixels"``: uint8 (height, width, 3), the current frame; with ``views``
      (height, len(views) * width, 3).
    * ``"state+pixels"``: ``{"state": ..., "pixels": ...}``.
    * goal-conditioned: ``{"observation": O, "achieved_goal": k (G,), "desired_goal": k* (G,)}``
      where O holds no goal information from the state: ``proprio`` (P,) for ``"state"``,
      the frame for ``"pixels"``, ``{"state": proprio, "pixels": frame}`` for
      ``"state+pixels"``. Frames still show the ghost when ``show_target=True``; pass
      ``show_target=False`` for goal-free images.

    ``info`` after ``step`` (floats unless said): ``reward_<key>`` for every active term
    (see :mod:`visfore_envs.core.rewards`), ``distance`` (``||k - k*||``, metres) and
    ``is_success`` (bool); with a pixel term also ``pixel_mse``; goal-conditioned with the
    ``potential`` term also ``prev_achieved_goal`` (G,). With the reachers' options:
    always ``reward_ctrl``; with a state reward also ``reward_dist`` and
    ``reward_potential`` (0.0 without shaping); with a pixel reward also ``reward_pixels``
    and ``pixel_mse``. ``reset`` returns the same keys with the same types and shapes
    (one structure, e.g. for Minari's ``record_infos``): every ``reward_<key>`` is 0.0,
    ``distance``, ``is_success`` and ``pixel_mse`` are those of the initial state and
    ``prev_achieved_goal`` is the initial key points.

    ``goal_conditioned=True`` makes the env an instance of the goal-conditioned subclass
    (:func:`goal_conditioned_class`, a :class:`GoalConditionedKeypointEnv`), the only one
    with ``compute_reward``: stable-baselines3 and gymnasium-robotics take an env with
    that method for a goal env, so the plain env must not have it.

    Unknown keyword arguments raise ``ValueError`` naming them and listing the valid ones
    (:meth:`option_names`). Options survive gymnasium's ``EnvSpec.to_json`` /
    ``from_json`` (numpy values are stored as lists and numbers in ``env.spec``; a
    ``RewardSpec`` comes back in its dict form, which ``rewards=`` accepts), except
    callables (give ``reward_fn`` as a ``"package.module:function"`` string instead).

    :meth:`get_sim_state` / :meth:`set_sim_state` save and restore the whole simulation
    (MuJoCo state, target, shaping memory, random generator): restoring and stepping with
    the same actions gives the same observations and rewards bit for bit.
    ``copy.deepcopy`` makes an independent env in the same state (a new simulation and
    renderer, :meth:`set_sim_state` of the original's); pickling (vector envs) rebuilds a
    fresh env from the constructor arguments (``EzPickle``).

    ``reset(options=...)`` accepts ``target_qpos`` (nq,), ``qpos`` (nq,) and ``qvel`` (nv,)
    to fix the target configuration or the initial state (ValueError on a bad shape or key).
    Episodes never terminate; registered ids truncate them (``max_episode_steps``).
    """

    #: Site names of the key points, in observation order.
    keypoint_sites: ClassVar[tuple[str, ...]] = ()
    #: World axes of a key point that count (x=0, y=1, z=2).
    keypoint_axes: ClassVar[tuple[int, ...]] = (0, 1, 2)
    #: ``success_threshold`` when None is given (metres).
    default_success_threshold: ClassVar[float] = 0.02
    #: Initial joint positions: ``init_qpos + U(-init_qpos_noise, init_qpos_noise)`` (rad).
    init_qpos_noise: ClassVar[float] = 0.1
    #: Initial joint velocities: ``U(-init_qvel_noise, init_qvel_noise)`` (rad/s).
    init_qvel_noise: ClassVar[float] = 0.005
    #: Key points that are end effectors (the ``end_effector`` reward term); () means all.
    end_effector_sites: ClassVar[tuple[str, ...]] = ()
    #: Radius of the ghost's key-point marker spheres (metres).
    ghost_marker_radius: ClassVar[float] = 0.015
    render_geom_groups: ClassVar[tuple[int, ...]] = (0, 1, 2, GHOST_GROUP)

    def __new__(cls, *args: Any, **kwargs: Any):
        # Before __init__: refuse unknown options with a ValueError (not Python's
        # TypeError), and pick the goal-conditioned class, the only one that has
        # compute_reward (SB3/gymnasium-robotics detect goal envs by that method).
        cls._check_option_names(kwargs)
        is_goal = issubclass(cls, GoalConditionedKeypointEnv)
        gc = kwargs.get("goal_conditioned", is_goal)
        if not is_goal and isinstance(gc, (bool, np.bool_)) and bool(gc):
            cls = goal_conditioned_class(cls)
        return super().__new__(cls)

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        """The keyword arguments the constructor accepts, in signature order (those of
        every ``__init__`` along the MRO that passes ``**kwargs`` on)."""
        names = _OPTION_NAMES.get(cls)
        if names is None:
            found: list[str] = []
            for klass in cls.__mro__:
                init = klass.__dict__.get("__init__")
                if init is None:
                    continue
                passes_on = False
                for p in inspect.signature(init).parameters.values():
                    if p.kind is inspect.Parameter.VAR_KEYWORD:
                        passes_on = True
                    elif (
                        p.name != "self"
                        and p.kind
                        in (
                            inspect.Parameter.KEYWORD_ONLY,
                            inspect.Parameter.POSITIONAL_OR_KEYWORD,
                        )
                        and p.name not in found
                    ):
                        found.append(p.name)
                if not passes_on:
                    break
            names = _OPTION_NAMES[cls] = tuple(found)
        return names

    @classmethod
    def _check_option_names(cls, kwargs: Mapping[str, Any]) -> None:
        """Raises: ValueError naming the unknown keys and listing the valid ones."""
        valid = cls.option_names()
        unknown = [k for k in kwargs if k not in valid]
        if unknown:
            bad = ", ".join(f"{k}={kwargs[k]!r}" for k in unknown)
            raise ValueError(f"{cls.__name__} got unknown option(s) {bad}; valid options are: " + ", ".join(valid))

    def __init__(
        self,
        *,
        obs_mode: str = "state",
        reward_mode: str | None = None,
        goal_conditioned: bool = False,
        potential_shaping: bool = False,
        show_target: bool = True,
        success_threshold: float | None = None,
        init_pose: str = "home",
        joint_targets: bool = False,
        ctrl_cost_weight: float | None = None,
        state_reward_weight: float | None = None,
        pixel_reward_weight: float | None = None,
        rewards: str | Mapping[str, float] | RewardSpec | None = None,
        reward_fn: Any = None,
        width: int = 64,
        height: int = 64,
        camera: str | None = None,
        camera_distance: float | None = None,
        camera_azimuth: float | None = None,
        camera_elevation: float | None = None,
        camera_lookat: tuple[float, float, float] | None = None,
        views: Sequence[str] | str | None = None,
        frame_skip: int = 2,
        render_mode: str | None = None,
    ) -> None:
        """Build the env in named steps (options -> physics and scene -> key points and
        target -> state buffer -> episode memory and applied controls -> rewards ->
        observation space); the options are documented in the class docstring."""
        options: dict[str, Any] = dict(
            obs_mode=obs_mode,
            reward_mode=reward_mode,
            goal_conditioned=goal_conditioned,
            potential_shaping=potential_shaping,
            show_target=show_target,
            success_threshold=success_threshold,
            init_pose=init_pose,
            joint_targets=joint_targets,
            ctrl_cost_weight=ctrl_cost_weight,
            state_reward_weight=state_reward_weight,
            pixel_reward_weight=pixel_reward_weight,
            rewards=rewards,
            reward_fn=reward_fn,
            width=width,
            height=height,
            camera=camera,
            camera_distance=camera_distance,
            camera_azimuth=camera_azimuth,
            camera_elevation=camera_elevation,
            camera_lookat=camera_lookat,
            views=views,
            frame_skip=frame_skip,
            render_mode=render_mode,
        )
        EzPickle.__init__(self, **options)
        self._init_options(options)
        # Physics model, ghost scene model, renderer and action space.
        super().__init__(**self._base_options(options))
        self._init_keypoints()
        self._init_target()
        self._init_state_buffer()
        self._init_episode_memory()
        self._init_applied_ctrl()
        self._init_rewards()
        self.observation_space = self._make_observation_space()
        # A valid state before the first reset (target at the initial configuration).
        self._set_target(self._target_qpos)
        self._update_keypoints()

    # -- construction steps ------------------------------------------------------------------
    def _init_options(self, options: Mapping[str, Any]) -> None:
        """Validate and store this class's own options: the flags, ``init_pose``,
        ``success_threshold``, the reward terms and ``reward_fn``; drop the ghost's geom
        group from the drawn groups when ``show_target=False``.

        Raises:
            ValueError: a flag that is not a bool, a bad ``init_pose`` or
                ``success_threshold``, ``joint_targets`` without a plain state observation,
                or bad reward options (:meth:`_resolve_reward_spec`).
        """
        for name in _FLAG_OPTIONS:
            if not isinstance(options[name], (bool, np.bool_)):
                raise ValueError(f"{name}={options[name]!r} is not one of True, False")
        self.goal_conditioned = bool(options["goal_conditioned"])
        #: ``"home"`` or ``"random"``: where episodes start (see the class doc).
        self.init_pose = check_choice("init_pose", options["init_pose"], INIT_POSES)
        #: Whether the state vector ends with ``q* - q`` (see the class doc).
        self.joint_targets = bool(options["joint_targets"])
        obs_mode = options["obs_mode"]
        if self.joint_targets and (self.goal_conditioned or obs_mode == "pixels"):
            raise ValueError(
                f"joint_targets=True needs a state observation without goal_conditioned, "
                f"not obs_mode={obs_mode!r}, goal_conditioned={options['goal_conditioned']!r}"
            )
        self.show_target = bool(options["show_target"])
        threshold = options["success_threshold"]
        self.success_threshold = (
            float(self.default_success_threshold)
            if threshold is None
            else check_real("success_threshold", threshold, minimum=0.0, strict=True)
        )
        #: The reward terms and weights (:class:`visfore_envs.core.rewards.RewardSpec`).
        self.reward_spec = self._resolve_reward_spec(options)
        self._reward_fn = resolve_reward_fn(options["reward_fn"])
        self.potential_shaping = "potential" in self.reward_spec.names
        if not self.show_target:
            # Per instance: the class default draws the ghost (VisforeMujocoEnv declares
            # the attribute a ClassVar, though the renderer reads it from the instance).
            self.render_geom_groups = tuple(  # type: ignore[misc]
                g for g in self.render_geom_groups if g != GHOST_GROUP
            )

    def _base_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """The keyword arguments of :class:`VisforeMujocoEnv` (validated there): the
        rendering and simulation options as given, ``reward_mode`` derived from the reward
        terms, and the three reachers' weights (1.0 when None)."""
        base = {name: options[name] for name in _BASE_OPTIONS}
        base["reward_mode"] = self.reward_spec.reward_mode
        for name in _WEIGHT_OPTIONS:
            base[name] = 1.0 if options[name] is None else options[name]
        return base

    def _init_keypoints(self) -> None:
        """Key-point bookkeeping: ``n_keypoints``, ``goal_dim`` and where each step reads
        the key points from ``MjData.site_xpos`` (a live view when the sites are
        consecutive and the axes contiguous, else a gather into a scratch buffer)."""
        # Scene-model data at the target configuration: target key points, goal frame.
        self._goal_data = mujoco.MjData(self.scene_model)
        self._ghost = Ghost(self._ghost_pairs)
        site_ids = [mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_SITE, s) for s in self.keypoint_sites]
        axes = tuple(self.keypoint_axes)
        #: Number of key points and goal length G.
        self.n_keypoints = k = len(site_ids)
        a = len(axes)
        self.goal_dim = k * a
        self._kp_index = np.array([3 * s + ax for s in site_ids for ax in axes], dtype=np.intp)
        self._goal_site_xpos_flat = self._goal_data.site_xpos.reshape(-1)
        consecutive = site_ids == list(range(site_ids[0], site_ids[0] + k)) if k else False
        contiguous_axes = axes == tuple(range(axes[0], axes[0] + a)) if a else False
        self._kp_src: np.ndarray | None
        if consecutive and contiguous_axes:
            # Live (K, A) view of MjData.site_xpos: no gather needed on each step.
            self._kp_src = self.data.site_xpos[site_ids[0] : site_ids[0] + k, axes[0] : axes[0] + a]
        else:
            self._kp_src = None
            self._site_xpos_flat = self.data.site_xpos.reshape(-1)  # view of MjData memory
            self._kp_gather = np.zeros((k, a))

    def _init_target(self) -> None:
        """The target key points k* (flat and (K, A) views of one buffer), the target
        configuration (the initial one until a reset draws another) and the sampler's
        joint bounds."""
        self._target_kp = np.zeros(self.goal_dim)
        self._target_kp2 = self._target_kp.reshape(self.n_keypoints, len(self.keypoint_axes))
        self._target_qpos = self.init_qpos.copy()
        self._target_low, self._target_high = self._joint_sampling_bounds()
        self._target_unsupported = bool(np.isnan(self._target_low).any())

    def _init_state_buffer(self) -> None:
        """The preallocated state vector ``[proprio | k - k* | k* (| q* - q)]`` and the views
        that write into it in place, and :attr:`angle_mask`."""
        m = self.model
        p, g = self._proprio_dim(), self.goal_dim
        self._proprio_len = p
        nj = m.nq if self.joint_targets else 0
        self._obs_buf = np.zeros(p + 2 * g + nj)
        self._proprio_view = self._obs_buf[:p]
        self._diff = self._obs_buf[p : p + g]
        self._diff2 = self._diff.reshape(self.n_keypoints, len(self.keypoint_axes))
        self._target_view = self._obs_buf[p + g : p + 2 * g]
        self._joint_diff_view = self._obs_buf[p + 2 * g :]
        #: (nq,) bool, True for hinge coordinates: their differences wrap into [-pi, pi)
        #: (the ``joint_targets`` tail, the joint-space reward terms).
        self.angle_mask = np.zeros(m.nq, dtype=bool)
        self.angle_mask[m.jnt_qposadr[m.jnt_type == mujoco.mjtJoint.mjJNT_HINGE]] = True

    def _init_episode_memory(self) -> None:
        """What steps remember: distances and key points for shaping, the goal frame
        (rendered on first need) and the pixel MSE's scale."""
        self._distance = 0.0
        self._prev_distance = 0.0
        self._prev_kp = np.zeros(self.goal_dim)
        self._goal_frame: np.ndarray | None = None
        self._goal_frame_f: np.ndarray | None = None
        self._mse_scale = 1.0 / (255.0 * 255.0 * self.height * self.frame_width * 3)
        self._gc_shaping = self.goal_conditioned and self.potential_shaping

    def _init_applied_ctrl(self) -> None:
        """Bounds of the controls MuJoCo applies: the action clipped into each actuator's
        ctrlrange (MuJoCo clamps ``data.ctrl`` itself, but leaves the raw values there); the
        control costs read the applied controls, so they follow the physics and not the
        raw action."""
        m = self.model
        clamp = m.actuator_ctrllimited.astype(bool) & (
            not m.opt.disableflags & int(mujoco.mjtDisableBit.mjDSBL_CLAMPCTRL)
        )
        self._ctrl_low = np.where(clamp, m.actuator_ctrlrange[:, 0], -np.inf)
        self._ctrl_high = np.where(clamp, m.actuator_ctrlrange[:, 1], np.inf)
        self._applied_ctrl = np.zeros(m.nu)

    # -- rewards -------------------------------------------------------------------------
    def _resolve_reward_spec(self, options: Mapping[str, Any]) -> RewardSpec:
        """The :class:`RewardSpec` from ``rewards`` or from the reachers' options.

        Raises:
            ValueError: bad options, ``rewards`` combined with the reachers' reward
                options, or terms that ``compute_reward`` cannot recompute from goals when
                ``goal_conditioned``.
        """
        if options["rewards"] is None:
            return self._legacy_reward_spec(options)
        return self._catalogue_reward_spec(options)

    def _legacy_reward_spec(self, options: Mapping[str, Any]) -> RewardSpec:
        """The preset of the reachers' options ``reward_mode``, ``potential_shaping`` and
        the three weights (:func:`~visfore_envs.core.rewards.legacy_spec`)."""
        reward_mode = check_choice(
            "reward_mode",
            "state" if options["reward_mode"] is None else options["reward_mode"],
            REWARD_MODES,
        )
        weights = {}
        for name in _WEIGHT_OPTIONS:
            value = 1.0 if options[name] is None else options[name]
            weights[name] = check_real(name, value, minimum=0.0)
        if self.goal_conditioned and reward_mode != "state":
            raise ValueError(
                f"reward_mode={reward_mode!r} is not one of 'state' when "
                "goal_conditioned=True (compute_reward must recompute the reward from "
                "the goals)"
            )
        return legacy_spec(reward_mode, bool(options["potential_shaping"]), **weights)

    def _catalogue_reward_spec(self, options: Mapping[str, Any]) -> RewardSpec:
        """The terms of ``rewards`` (:func:`~visfore_envs.core.rewards.parse_rewards`),
        refusing the reachers' reward options beside it."""
        rewards = options["rewards"]
        clash = [f"{name}={options[name]!r}" for name in ("reward_mode", *_WEIGHT_OPTIONS) if options[name] is not None]
        if options["potential_shaping"]:
            clash.append("potential_shaping=True")
        if clash:
            raise ValueError(
                f"{clash[0]} cannot be combined with rewards={rewards!r}: put every term "
                "and weight in rewards (e.g. 'keypoint_distance+potential+0.1*ctrl')"
            )
        spec = parse_rewards(rewards)
        if self.goal_conditioned:
            bad = [t.name for t, _ in spec.terms() if t.goal_source == "none"]
            if bad:
                raise ValueError(
                    f"rewards term {bad[0]!r} cannot be recomputed from goals, so it is not "
                    "allowed with goal_conditioned=True (joint_distance, pose and pixel_mse "
                    "need the target configuration or the goal frame)"
                )
        return spec

    def _init_rewards(self) -> None:
        """Build the :class:`RewardContext` and the per-group term lists."""
        self._reward_ctx = self._make_reward_context()
        groups: dict[str, list[_StepTerm]] = {"action": [], "state": [], "pixels": []}
        full: dict[str, list[tuple[RewardTerm, float]]] = {"action": [], "state": [], "pixels": []}
        for term, weight in self.reward_spec.terms():
            groups[term.kind].append((term.info_key, term.value, weight))
            full[term.kind].append((term, weight))
        self._action_terms = groups["action"]
        self._state_terms = groups["state"]
        self._pixel_terms = groups["pixels"]
        self._goal_groups = (full["action"], full["state"])
        self._zero_keys = tuple("reward_" + REWARD_TERMS[name].key for name in self.reward_spec.zero_keys)
        self._term_keys = [(t.name, t.info_key) for t, _ in self.reward_spec.terms()]

    def _make_reward_context(self) -> RewardContext:
        """The :class:`RewardContext` the terms read: live views of the applied controls,
        ``qpos``, ``qvel`` and the key-point error, the target configuration, each
        actuator's dof (0 for non-joint transmissions), the hinge mask and the end
        effectors' key-point indices.

        Raises:
            ValueError: an :attr:`end_effector_sites` entry that is not a key-point site.
        """
        m = self.model
        if self.end_effector_sites:
            missing = [s for s in self.end_effector_sites if s not in self.keypoint_sites]
            if missing:
                raise ValueError(f"end-effector site {missing[0]!r} is not a key-point site")
            ee = [self.keypoint_sites.index(s) for s in self.end_effector_sites]
        else:
            ee = list(range(self.n_keypoints))
        trn = m.actuator_trnid[:, 0]
        actuator_dofs = np.where(m.actuator_trntype == int(mujoco.mjtTrn.mjTRN_JOINT), m.jnt_dofadr[trn], 0)
        return RewardContext(
            action=self._applied_ctrl,
            qpos=self._qpos,
            qvel=self._qvel,
            target_qpos=self._target_qpos,
            actuator_dofs=actuator_dofs,
            angle_mask=self.angle_mask,
            keypoint_error=self._diff2,
            end_effectors=np.array(ee, dtype=np.intp),
        )

    @staticmethod
    def _eval_group(group: list[_StepTerm], ctx: RewardContext, info: dict[str, Any]) -> float | None:
        """Weighted values of one group into ``info``; their left-to-right sum (None if empty)."""
        total = None
        for key, value_fn, weight in group:
            value = weight * value_fn(ctx)
            info[key] = value
            total = value if total is None else total + value
        return total

    def _call_reward_fn(self, reward_fn: _RewardFn, info: dict[str, Any]) -> float:
        """``reward_fn(terms, info)`` of a step, checked to be a finite number.

        Raises:
            ValueError: ``reward_fn`` returned something else.
        """
        terms = {name: info[key] for name, key in self._term_keys}
        result = reward_fn(terms, info)
        try:
            reward = float(result)
        except (TypeError, ValueError):
            raise ValueError(f"reward_fn returned {result!r}, not a number") from None
        if not math.isfinite(reward):
            raise ValueError(f"reward_fn returned {reward!r}; it must return a finite number")
        return reward

    # -- robot hooks ---------------------------------------------------------------------
    def _proprio_dim(self) -> int:
        """Length P of the robot's proprioceptive state (no goal information)."""
        raise NotImplementedError

    def _write_proprio(self, out: np.ndarray) -> None:
        """Write the proprioceptive state of ``self.data`` into ``out`` (P,) float64."""
        raise NotImplementedError

    def sample_target_qpos(self) -> np.ndarray:
        """A random target joint configuration (nq,), from ``self.np_random``.

        Default: each hinge/slide coordinate uniform within its joint range; unlimited
        hinges uniform in [-pi, pi] (radians/metres).
        """
        if self._target_unsupported:
            raise NotImplementedError(
                f"{type(self).__name__} has free, ball or unlimited slide joints; override sample_target_qpos"
            )
        return self.np_random.uniform(self._target_low, self._target_high)

    def _joint_sampling_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        m = self.model
        low = np.zeros(m.nq)
        high = np.zeros(m.nq)
        for j in range(m.njnt):
            adr = m.jnt_qposadr[j]
            jtype = int(m.jnt_type[j])
            if jtype not in (int(mujoco.mjtJoint.mjJNT_HINGE), int(mujoco.mjtJoint.mjJNT_SLIDE)):
                # Free/ball joints: the robot subclass must override sample_target_qpos.
                size = 7 if jtype == int(mujoco.mjtJoint.mjJNT_FREE) else 4
                low[adr : adr + size] = np.nan
                continue
            if m.jnt_limited[j]:
                low[adr], high[adr] = m.jnt_range[j]
            elif jtype == int(mujoco.mjtJoint.mjJNT_HINGE):
                low[adr], high[adr] = -math.pi, math.pi
            else:
                low[adr] = np.nan
        return low, high

    # -- model ---------------------------------------------------------------------------
    def _load_model(self) -> mujoco.MjModel:
        model, self._ghost_scene_model, self._ghost_pairs = load_model_with_ghost(
            str(self.model_path()),
            self.keypoint_sites,
            marker_radius=self.ghost_marker_radius,
            edit_scene=self._edit_scene_spec,
        )
        return model

    def _edit_scene_spec(self, spec: mujoco.MjSpec, model: mujoco.MjModel) -> None:
        """Hook: add visual-only bodies to the scene model's ``spec`` (ghost already in it)
        before it is compiled; ``model`` is the compiled physics model. Default: nothing.
        Append bodies without joints (see :func:`~visfore_envs.core.ghost.load_model_with_ghost`)."""

    def _load_scene_model(self) -> mujoco.MjModel:
        return self._ghost_scene_model

    # -- observation space -----------------------------------------------------------------
    def _state_dim(self) -> int:
        return self._proprio_len + 2 * self.goal_dim + self._joint_diff_view.size

    def _make_observation_space(self) -> spaces.Space:
        if not self.goal_conditioned:
            return super()._make_observation_space()
        proprio = spaces.Box(-np.inf, np.inf, shape=(self._proprio_len,), dtype=np.float64)
        pixels = spaces.Box(0, 255, shape=(self.height, self.frame_width, 3), dtype=np.uint8)
        observation: spaces.Space
        if self.obs_mode == "state":
            observation = proprio
        elif self.obs_mode == "pixels":
            observation = pixels
        else:
            observation = spaces.Dict({"state": proprio, "pixels": pixels})
        goal = spaces.Box(-np.inf, np.inf, shape=(self.goal_dim,), dtype=np.float64)
        return spaces.Dict({"observation": observation, "achieved_goal": goal, "desired_goal": goal})

    def _state_obs(self) -> np.ndarray:
        self._write_proprio(self._proprio_view)
        if self.joint_targets:
            self._write_joint_diff()
        return self._obs_buf.copy()

    def _write_joint_diff(self) -> None:
        """``q* - q`` into the state buffer, hinge differences wrapped into [-pi, pi)."""
        np.subtract(self._target_qpos, self._qpos, out=self._joint_diff_view)
        wrap_hinge_differences(self._joint_diff_view, self.angle_mask)

    def _observation(self):
        if not self.goal_conditioned:
            if self._obs_id == 0:  # the hot path of state-only training
                self._write_proprio(self._proprio_view)
                if self.joint_targets:
                    self._write_joint_diff()
                return self._obs_buf.copy()
            return super()._observation()
        if self._obs_id == 0:
            self._write_proprio(self._proprio_view)
            observation = self._proprio_view.copy()
        elif self._obs_id == 1:
            observation = self._current_frame()
        else:
            self._write_proprio(self._proprio_view)
            observation = {"state": self._proprio_view.copy(), "pixels": self._current_frame()}
        return {
            "observation": observation,
            "achieved_goal": self._keypoints_copy(),
            "desired_goal": self._target_kp.copy(),
        }

    # -- targets and key points -------------------------------------------------------------
    def _set_target(self, target_qpos: np.ndarray) -> None:
        sm, gd = self.scene_model, self._goal_data
        gd.qpos[:] = target_qpos
        gd.qvel[:] = 0.0
        mujoco.mj_kinematics(sm, gd)
        self._ghost.pose_from(gd, self.scene_data, gd)
        mujoco.mj_kinematics(sm, gd)
        mujoco.mj_camlight(sm, gd)
        np.take(self._goal_site_xpos_flat, self._kp_index, out=self._target_kp)
        self._target_view[:] = self._target_kp
        self._target_qpos = np.array(target_qpos, dtype=np.float64)
        ctx = getattr(self, "_reward_ctx", None)
        if ctx is not None:
            ctx.target_qpos = self._target_qpos
        self._goal_frame = None
        self._goal_frame_f = None

    def _update_keypoints(self) -> float:
        """Write ``k - k*`` into the state buffer; return and store the distance."""
        src = self._kp_src
        if src is None:
            src = self._kp_gather
            np.take(self._site_xpos_flat, self._kp_index, out=src.reshape(-1))
        np.subtract(src, self._target_kp2, out=self._diff2)
        diff = self._diff
        # keypoint_distances' formula (compute_reward's), inlined for the hot path on the
        # contiguous (G,) buffer, so step and compute_reward rewards are bit-equal.
        self._distance = distance = math.sqrt(np.vecdot(diff, diff))
        return distance

    def _keypoints_copy(self) -> np.ndarray:
        if self._kp_src is None:
            return np.take(self._site_xpos_flat, self._kp_index)
        return self._kp_src.flatten()

    # -- decoding stored state observations ----------------------------------------------------
    @classmethod
    def decode_state(cls, state: Any) -> dict[str, np.ndarray]:
        """Joint angles and key points held in ``"state"`` observations (e.g. a dataset's
        ``data/state``), without creating an env: a classmethod, vectorised over leading axes.

        The state layout is ``[proprio (P), k - k* (G), k* (G)]`` (class docstring), so the
        key points are ``k = (k - k*) + k*``; the joint angles come from ``proprio`` by the
        robot's :meth:`_qpos_from_proprio` (the reachers store ``cos q, sin q``, the humanoid
        ``q`` itself). G = ``len(keypoint_sites) * len(keypoint_axes)``, points flattened
        point by point (``[p0_x, p0_y(, p0_z), p1_x, ...]``).

        Args:
            state: (..., S) array-like of state observations (float32 or float64).

        Returns:
            ``{"qpos": (..., nq) float64 rad, "keypoints": (..., G) float64 m,
            "target_keypoints": (..., G) float64 m}``, and ``"qvel": (..., nv) float64
            rad/s`` when the robot stores its joint velocities in the state (both reachers
            and the humanoid do; :meth:`_qvel_from_proprio`). Angles decoded from cos/sin
            are in [-pi, pi]; float32 states give key points to about 1e-7 m.

        Raises:
            ValueError: ``state`` has no last axis or its length does not fit the robot's
                layout (the message names the allowed lengths when it can).
            NotImplementedError: the robot subclass does not define
                :meth:`_qpos_from_proprio`.
        """
        state = np.asarray(state, dtype=np.float64)
        g = len(cls.keypoint_sites) * len(cls.keypoint_axes)
        if g == 0:
            raise NotImplementedError(f"{cls.__name__} defines no keypoint_sites to decode")
        if state.ndim < 1 or state.shape[-1] <= 2 * g:
            raise ValueError(
                f"{cls.__name__}.decode_state needs (..., S) states with S > 2G = {2 * g}, got shape {state.shape}"
            )
        proprio = state[..., : -2 * g]
        diff, target = state[..., -2 * g : -g], state[..., -g:]
        qpos = np.asarray(cls._qpos_from_proprio(proprio), dtype=np.float64)
        out = {"qpos": qpos, "keypoints": diff + target, "target_keypoints": target.copy()}
        qvel = cls._qvel_from_proprio(proprio)
        if qvel is not None:
            out["qvel"] = np.asarray(qvel, dtype=np.float64)
        return out

    @classmethod
    def _qpos_from_proprio(cls, proprio: np.ndarray) -> np.ndarray:
        """Joint positions (..., nq) from proprioceptive states (..., P) (robot hook of
        :meth:`decode_state`); raise ValueError when P does not fit the robot."""
        raise NotImplementedError(
            f"{cls.__name__} does not say how its joint angles are stored in the state; override _qpos_from_proprio"
        )

    @classmethod
    def _qvel_from_proprio(cls, proprio: np.ndarray) -> np.ndarray | None:
        """Joint velocities (..., nv) rad/s from proprioceptive states (..., P) (robot hook of
        :meth:`decode_state`), or None when the robot does not store them (the default)."""
        return None

    @property
    def keypoints(self) -> np.ndarray:
        """Current key points k, flat (G,) float64, metres (a copy)."""
        return self._keypoints_copy()

    @property
    def target_keypoints(self) -> np.ndarray:
        """Target key points k*, flat (G,) float64, metres (a copy)."""
        return self._target_kp.copy()

    @property
    def target_qpos(self) -> np.ndarray:
        """Target joint configuration (nq,) float64 (a copy)."""
        return self._target_qpos.copy()

    @property
    def distance(self) -> float:
        """``||k - k*||_2`` of the current state, metres."""
        return self._distance

    def set_state(self, qpos, qvel) -> None:
        """Set the robot state (see :meth:`VisforeMujocoEnv.set_state`); the shaping
        potential continues from the new state."""
        super().set_state(qpos, qvel)
        self._prev_distance = self._update_keypoints()
        self._prev_kp = self._keypoints_copy()

    # -- frames ----------------------------------------------------------------------------
    def render_goal(self) -> np.ndarray:
        """The goal frame: the scene with the robot at the target configuration.

        Returns:
            (height, frame_width, 3) uint8 (the same views as the observation), rendered
            once per episode (a copy).
        """
        return self._goal_frame_uint8().copy()

    def _goal_frame_uint8(self) -> np.ndarray:
        """The goal frame (height, frame_width, 3) uint8, rendered on first need (not a copy)."""
        if self._goal_frame is None:
            return self._render_goal_frame()[0]
        return self._goal_frame

    def _render_goal_frame(self) -> tuple[np.ndarray, np.ndarray]:
        """Render the goal frame and store it as uint8 (height, frame_width, 3) and as flat float64
        intensities (the pixel MSE's operand); return both."""
        frame = self._goal_frame = self._renderer.render(self._goal_data)
        flat = self._goal_frame_f = frame.astype(np.float64).reshape(-1)
        return frame, flat

    def _pixel_mse(self) -> float:
        goal = self._goal_frame_f
        if goal is None:
            goal = self._render_goal_frame()[1]
        diff = self._current_frame().reshape(-1).astype(np.float64)
        diff -= goal
        return float(diff @ diff) * self._mse_scale

    # -- gymnasium API -----------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Start an episode: draw a target configuration, then the initial state.

        Returns:
            ``(observation, info)``; ``info`` has the keys of ``step``'s (class doc): the
            reward terms 0.0, ``distance`` (metres), ``is_success`` of the initial state.

        Raises:
            ValueError: unknown option key or an option array of the wrong shape.
        """
        super().reset(seed=seed)
        m, d = self.model, self.data
        opts = dict(options or {})
        unknown = [k for k in opts if k not in _RESET_OPTION_KEYS]
        if unknown:
            allowed = ", ".join(repr(k) for k in _RESET_OPTION_KEYS)
            raise ValueError(f"reset option {unknown[0]!r} is not one of {allowed}")
        mujoco.mj_resetData(m, d)
        if opts.get("target_qpos") is not None:
            target = self._option_array(opts, "target_qpos", m.nq)
        else:
            target = np.asarray(self.sample_target_qpos(), dtype=np.float64)
        self._set_target(target)
        if opts.get("qpos") is not None:
            qpos = self._option_array(opts, "qpos", m.nq)
        elif self.init_pose == "random":
            qpos = np.asarray(self.sample_target_qpos(), dtype=np.float64)
        else:
            qpos = self._sample_initial_qpos()
        if opts.get("qvel") is not None:
            qvel = self._option_array(opts, "qvel", m.nv)
        else:
            qvel = self.init_qvel + self.np_random.uniform(-self.init_qvel_noise, self.init_qvel_noise, size=m.nv)
        d.qpos[:] = qpos
        d.qvel[:] = qvel
        mujoco.mj_forward(m, d)
        self._frame = None
        self._applied_ctrl[:] = 0.0
        distance = self._update_keypoints()
        self._prev_distance = distance
        self._prev_kp = self._keypoints_copy()
        return self._observation(), self._reset_info(distance)

    def _reset_info(self, distance: float) -> dict[str, Any]:
        """``info`` of ``reset``: the keys, order and types of ``step``'s, reward terms 0.0."""
        info: dict[str, Any] = {key: 0.0 for key, _, _ in self._action_terms}
        info["distance"] = distance
        info["is_success"] = distance < self.success_threshold
        for key, _, _ in self._state_terms:
            info[key] = 0.0
        for key in self._zero_keys:
            info[key] = 0.0
        if self._gc_shaping:
            info["prev_achieved_goal"] = self._prev_kp.copy()
        if self._pixel_terms:
            for key, _, _ in self._pixel_terms:
                info[key] = 0.0
            self._reward_ctx.pixel_mse = info["pixel_mse"] = self._pixel_mse()
        return info

    def _sample_initial_qpos(self) -> np.ndarray:
        """Initial joint positions (nq,): ``init_qpos + U(-init_qpos_noise, init_qpos_noise)``
        from ``self.np_random`` (robots may override, e.g. to clip into the joint limits)."""
        return self.init_qpos + self.np_random.uniform(-self.init_qpos_noise, self.init_qpos_noise, size=self.model.nq)

    @staticmethod
    def _option_array(opts: dict, key: str, n: int) -> np.ndarray:
        value = np.asarray(opts[key], dtype=np.float64)
        if value.shape != (n,):
            raise ValueError(f"reset option {key!r} has shape {value.shape}, expected ({n},)")
        return value.copy()

    def step(self, action):
        """Apply ``action`` (torques in [-1, 1] per actuator, float32 (nu,)) for ``frame_skip``
        MuJoCo steps. MuJoCo clips the controls into the actuators' ``ctrlrange``; the
        control-cost terms (``ctrl``, ``electricity``) charge that applied action.

        Returns:
            ``(observation, reward, terminated=False, truncated=False, info)`` (see class doc).

        Raises:
            ValueError: if the action has the wrong shape or is not finite.
        """
        self._simulate(action)
        applied = self._applied_ctrl  # the control costs' a: what MuJoCo applied
        np.minimum(np.maximum(self._ctrl, self._ctrl_low, out=applied), self._ctrl_high, out=applied)
        distance = self._update_keypoints()
        ctx = self._reward_ctx
        ctx.distance = distance
        ctx.prev_distance = self._prev_distance
        # Info order and the sum's grouping are those of the reachers before the catalogue:
        # (action terms + state terms) + pixel terms, each group left to right.
        info: dict[str, Any] = {}
        reward = self._eval_group(self._action_terms, ctx, info)
        info["distance"] = distance
        info["is_success"] = distance < self.success_threshold
        state = self._eval_group(self._state_terms, ctx, info)
        for key in self._zero_keys:
            info[key] = 0.0
        if state is not None:
            reward = state if reward is None else reward + state
        self._prev_distance = distance
        if self._gc_shaping:
            info["prev_achieved_goal"] = self._prev_kp
            self._prev_kp = self._keypoints_copy()
        if self._pixel_terms:
            ctx.pixel_mse = mse = self._pixel_mse()
            pixels = self._eval_group(self._pixel_terms, ctx, info)
            info["pixel_mse"] = mse
            reward = pixels if reward is None else reward + pixels
        if self._reward_fn is not None:
            reward = self._call_reward_fn(self._reward_fn, info)
        elif reward is None:
            reward = 0.0
        return self._observation(), reward, False, False, info

    # -- saving and restoring the simulation ---------------------------------------------------
    def get_sim_state(self) -> dict[str, Any]:
        """A snapshot of everything the next steps depend on (new arrays, picklable).

        Returns:
            ``{"physics": (S,) float64`` MuJoCo's ``mj_getState`` with
            ``mjSTATE_INTEGRATION`` (time, qpos, qvel, act, warm start, ctrl and the other
            user inputs), ``"target_qpos": (nq,) float64`` (rad), ``"prev_distance":
            float`` and ``"prev_keypoints": (G,) float64`` (the shaping memory, metres),
            ``"np_random"``: a copy of the env's ``np.random.Generator`` (None before it is
            first used) and ``"np_random_seed"}``; subclasses add their own keys (e.g. the
            mimic leader). The ``TimeLimit`` wrapper's step count is the wrapper's own.
        """
        physics = np.empty(mujoco.mj_stateSize(self.model, _PHYSICS_STATE))
        mujoco.mj_getState(self.model, self.data, physics, _PHYSICS_STATE)
        return {
            "physics": physics,
            "target_qpos": self._target_qpos.copy(),
            "prev_distance": float(self._prev_distance),
            "prev_keypoints": np.array(self._prev_kp, dtype=np.float64),
            "np_random": copy.deepcopy(self._np_random),
            "np_random_seed": self._np_random_seed,
        }

    def set_sim_state(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`get_sim_state` snapshot (of this env or another one made with
        the same robot): stepping then with the same actions gives the same observations,
        rewards and ``info`` bit for bit as after the snapshot. Frames are rendered again
        on demand (the target ghost and goal frame follow the restored target).

        Raises:
            ValueError: missing or unknown keys, or arrays of the wrong size.
        """
        expected = set(self.get_sim_state())
        given = set(state)
        if given != expected:
            missing, extra = sorted(expected - given), sorted(given - expected)
            raise ValueError(
                f"set_sim_state: missing keys {missing}, unknown keys {extra} (expected {sorted(expected)})"
            )
        m, d = self.model, self.data
        physics = np.asarray(state["physics"], dtype=np.float64)
        size = mujoco.mj_stateSize(m, _PHYSICS_STATE)
        if physics.shape != (size,):
            raise ValueError(
                f"set_sim_state: 'physics' has shape {physics.shape}, expected ({size},) (a snapshot of another robot?)"
            )
        target = np.asarray(state["target_qpos"], dtype=np.float64)
        prev_kp = np.array(state["prev_keypoints"], dtype=np.float64)
        if target.shape != (m.nq,) or prev_kp.shape != (self.goal_dim,):
            raise ValueError(
                f"set_sim_state: target_qpos/prev_keypoints shapes {target.shape}/"
                f"{prev_kp.shape} are not ({m.nq},)/({self.goal_dim},)"
            )
        mujoco.mj_setState(m, d, physics, _PHYSICS_STATE)
        mujoco.mj_forward(m, d)
        self._set_target(target)
        self._frame = None
        np.clip(self._ctrl, self._ctrl_low, self._ctrl_high, out=self._applied_ctrl)
        self._update_keypoints()
        self._prev_distance = float(state["prev_distance"])
        self._prev_kp = prev_kp
        self._np_random = copy.deepcopy(state["np_random"])
        self._np_random_seed = state["np_random_seed"]

    # -- copies, pickling and the env spec -----------------------------------------------------
    def __reduce__(self):
        # Pickle as the constructor arguments (EzPickle's contract: vector envs get fresh
        # envs), via the plain class so the goal-conditioned class need not be importable.
        cls = type(self).__dict__.get("_plain_class", type(self))
        return (_rebuild_env, (cls, self._ezpickle_args, self._ezpickle_kwargs))

    def _copy(self, args: tuple, kwargs: dict[str, Any], spec: EnvSpec | None) -> KeypointTargetEnv:
        new = type(self)(*args, **kwargs)
        new.set_sim_state(self.get_sim_state())
        new.spec = spec
        return new

    def __copy__(self) -> KeypointTargetEnv:
        # An env shares nothing with a copy (its own MjData and renderer), so copy = deepcopy.
        return self.__deepcopy__({})

    def __deepcopy__(self, memo: dict[int, Any]) -> KeypointTargetEnv:
        """A new env from deep copies of the constructor arguments, in this env's state
        (:meth:`set_sim_state`): it steps on exactly like the original would."""
        new = self._copy(
            copy.deepcopy(self._ezpickle_args, memo),
            copy.deepcopy(self._ezpickle_kwargs, memo),
            copy.deepcopy(self.spec, memo),
        )
        memo[id(self)] = new
        return new

    @property
    def spec(self) -> EnvSpec | None:
        """The gymnasium ``EnvSpec`` that made this env (set by ``gym.make``), or None.

        Its ``kwargs`` are stored JSON-ready (numpy arrays as lists, numpy scalars as
        Python numbers), so ``EnvSpec.from_json(env.spec.to_json())`` makes an equal env."""
        return self.__dict__.get("_spec")

    @spec.setter
    def spec(self, value: EnvSpec | None) -> None:
        if value is not None and value.kwargs:
            value = copy.copy(value)
            value.kwargs = _jsonable(dict(value.kwargs))
        self.__dict__["_spec"] = value


class GoalConditionedKeypointEnv(KeypointTargetEnv):
    """The goal-conditioned version of a key-point env: the only one with
    :meth:`compute_reward` (gymnasium-robotics convention).

    Not instantiated directly: ``gym.make(id, goal_conditioned=True)`` (or the robot class
    with ``goal_conditioned=True``) makes an instance of :func:`goal_conditioned_class` of
    the robot class, a subclass of both; ``env.unwrapped`` is that instance,
    ``isinstance(env.unwrapped, ReacherPlaneEnv)`` still holds.
    """

    def __init__(self, **kwargs: Any) -> None:
        if not kwargs.setdefault("goal_conditioned", True):
            raise ValueError(
                f"{type(self).__name__} is goal-conditioned; goal_conditioned="
                f"{kwargs['goal_conditioned']!r} needs the plain class"
            )
        super().__init__(**kwargs)

    def compute_reward(self, achieved_goal, desired_goal, info) -> np.ndarray | float:
        """Recompute the reward from goals, vectorised over leading batch axes.

        Terms that depend on the goal (``keypoint_distance``, ``potential``,
        ``end_effector``) are recomputed from ``achieved_goal``/``desired_goal``; the
        others (``ctrl``, ``electricity``, ``velocity``) do not depend on the goal and are
        read back from ``info["reward_<key>"]`` (0 when absent). They are summed as in
        :meth:`step` (action terms, then state terms), or given to ``reward_fn``.

        Args:
            achieved_goal, desired_goal: (..., G) key points k and targets k* (metres).
            info: the step info (a dict, a dict of batched arrays, or a sequence/array of
                info dicts); with the ``potential`` term (``potential_shaping``),
                ``prev_achieved_goal`` (..., G) is required.

        Returns:
            (...,) float64 rewards (a float for unbatched input), equal (``==``) to the
            step rewards: the goal terms use the functions ``step`` uses
            (:func:`~visfore_envs.core.rewards.keypoint_distances`,
            :func:`~visfore_envs.core.rewards.end_effector_values`), summed in the same order.

        Raises:
            KeyError: ``prev_achieved_goal`` missing while the ``potential`` term is on.
        """
        ag = np.asarray(achieved_goal, dtype=np.float64)
        dg = np.asarray(desired_goal, dtype=np.float64)
        ctx = self._reward_ctx
        values: dict[str, Any] = {}
        reward = None
        for group in self._goal_groups:
            total = None
            for term, weight in group:
                if term.goal_source == "goals":
                    assert term.from_goals is not None  # RewardTerm checks it for "goals" terms
                    value = weight * term.from_goals(ag, dg, info, ctx)
                else:
                    value = info_values(info, term.info_key, default=0.0)
                values[term.name] = value
                total = value if total is None else total + value
            if total is not None:
                reward = total if reward is None else reward + total
        if self._reward_fn is not None:
            reward = np.asarray(self._reward_fn(values, info), dtype=np.float64)
        elif reward is None:
            reward = np.zeros(np.broadcast_shapes(ag.shape, dg.shape)[:-1])
        if np.ndim(reward) == 0:
            return float(reward)
        return np.asarray(reward, dtype=np.float64)


def goal_conditioned_class(cls: type[KeypointTargetEnv]) -> type[GoalConditionedKeypointEnv]:
    """The goal-conditioned subclass of a key-point env class (made once per class):
    ``class GoalConditioned<Name>(GoalConditionedKeypointEnv, cls)``, which adds
    :meth:`~GoalConditionedKeypointEnv.compute_reward`.

    ``cls(goal_conditioned=True, ...)`` returns an instance of it; pickles rebuild it from
    ``cls`` (it need not be importable).
    """
    if issubclass(cls, GoalConditionedKeypointEnv):
        return cls
    goal = _GOAL_CLASSES.get(cls)
    if goal is None:
        name = "GoalConditioned" + cls.__name__
        namespace = {
            "__module__": cls.__module__,
            "__qualname__": name,
            "__doc__": f"{cls.__name__} with goal_conditioned=True (see "
            "GoalConditionedKeypointEnv): Dict observations and compute_reward.",
            "_plain_class": cls,
        }
        goal = cast(
            "type[GoalConditionedKeypointEnv]",
            types.new_class(name, (GoalConditionedKeypointEnv, cls), exec_body=lambda ns: ns.update(namespace)),
        )
        _GOAL_CLASSES[cls] = goal
    return goal
