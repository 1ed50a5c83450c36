"""Perturbable Hopper, Walker2d, Ant and HalfCheetah (MuJoCo backend) and the
backend-choosing entry points of their ids.

At nominal scale each env reproduces gymnasium's v5 env of the same robot: the same MJCF
(``assets/locomotion/``, copied unchanged from gymnasium 1.4.0), observation, reward
terms, termination, reset noise and simulation (``mj_step``, as
``gymnasium/envs/mujoco/mujoco_env.py``), so the same seed and
actions give the same trajectory bit for bit (``tests/envs/test_locomotion.py``).

On top of v5:

* ``perturbation={"thigh.length": 1.3, "friction": 0.8}``: fixed scale factors (see
  :mod:`visfore_envs.morphology` for the keys and what each factor does);
* ``randomize=``: ranges a new perturbation is drawn from at every reset with the env's
  seeded ``np_random`` (domain randomisation): ``"random"``/``"extreme"`` (Packer et al.
  2018), ``(0.8, 1.2)``/``"0.8-1.2"`` (every part length and width), or a dict
  ``key -> (low, high)``; applied on top of ``perturbation``'s keys that it does not draw;
* ``obs_mode="pixels"`` / ``"state+pixels"``: frames from the model's tracking camera
  (``"track"``) at ``width`` x ``height``;
* ``info["perturbation"]`` (every key -> factor) and ``info["body_mass"]`` (body -> kg) at
  reset and every step.

A perturbed body starts physical (nominal bodies are v5's, untouched):

* it starts from the *standing pose* of v5's noisy reset pose (every joint clamped into
  its limits; only the ant's ankles start outside them in v5, and the snap into range
  would throw a longer, heavier ant into the air), with the root raised or lowered so the
  lowest geom keeps the gap the nominal body has with the same reset noise at its
  standing pose (the model is built with that lift, and every reset corrects for the
  drawn noise, which lowers the end of a longer body more): it never starts deeper in the
  floor than the nominal robot;
* the healthy height range (hopper, walker, ant) is scaled by the change of standing
  height (``scale_healthy_z=False`` keeps v5's absolute range), so a zero-action episode
  lives about as long as the nominal one;
* a body that cannot be built sensibly (standing height outside 0.1-10 x nominal, see
  :data:`visfore_envs.morphology.HEIGHT_RATIO_RANGE`) is refused with a ``ValueError``;
* a physics blow-up (MuJoCo's bad qpos/qvel/qacc/ctrl warnings; MuJoCo then resets the
  simulation itself) ends the episode with ``truncated=True`` and
  ``info["physics_unstable"] = True`` (False otherwise, at reset too); observations stay
  finite.

``reset`` returns the same info keys as ``step`` (the reward terms and velocities 0.0),
so recorders that need one info structure (Minari's ``record_infos``) work; observations
and rewards stay v5's bit for bit.

``gym.make("PerturbHopper-v0", backend="pybullet")`` returns the PyBullet port of the
Roboschool/pybullet_envs hopper (:mod:`visfore_envs.bullet`), driven by the same
perturbation spec; it is also registered as ``PerturbHopperBullet-v0``.

``obs_layout`` picks the state layout on either backend, so a policy trained on one
backend can be evaluated on the other: ``"v5"`` (this backend's default: gymnasium v5's
vector) or ``"roboschool"`` (the PyBullet backend's default: Roboschool's ``calc_state``,
hopper 15, walker2d 22, half_cheetah 26, ant 28 floats, computed here from the MuJoCo
state). The layout also fixes the action order: the same for both backends except the
ant's (v5's actuators start with leg 4, Roboschool's with leg 1); see
:func:`action_permutation`.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar

import mujoco
import numpy as np
from gymnasium import spaces
from gymnasium.utils import EzPickle

from visfore_envs.core.mujoco_env import ASSETS_DIR, VisforeMujocoEnv
from visfore_envs.core.options import check_choice, check_real
from visfore_envs.core.rendering import configure_fast_visuals
from visfore_envs.morphology import (
    ROBOTS,
    RobotMorphology,
    compile_mjcf,
    lowest_point,
    parse_perturbation,
    parse_ranges,
    resolve_key,
    sample_perturbation,
    scale_mjcf,
    standing_pose,
)

__all__ = [
    "BACKENDS",
    "OBS_LAYOUTS",
    "ROBOSCHOOL_JOINTS",
    "V5_ACTUATOR_JOINTS",
    "action_permutation",
    "check_obs_layout",
    "LOCOMOTION_IDS",
    "PerturbLocomotionEnv",
    "PerturbHopperEnv",
    "PerturbWalker2dEnv",
    "PerturbAntEnv",
    "PerturbHalfCheetahEnv",
    "perturbation_keys",
    "resolve_perturbation_key",
    "robot_of",
]

#: Physics backends of the Perturb* ids.
BACKENDS = ("mujoco", "pybullet")

#: Observation layouts of the Perturb* ids: gymnasium v5's vector (the MuJoCo backend's
#: default) or Roboschool's ``WalkerBase.calc_state`` (the PyBullet backend's default).
OBS_LAYOUTS = ("v5", "roboschool")

#: Actuated joints of each robot in the PyBullet port's (Roboschool's) order: the order of
#: its ``calc_state`` joint entries and of its action. Also the MJCF joint (qpos) order of
#: both backends' files.
ROBOSCHOOL_JOINTS: dict[str, tuple[str, ...]] = {
    "hopper": ("thigh_joint", "leg_joint", "foot_joint"),
    "walker2d": (
        "thigh_joint", "leg_joint", "foot_joint",
        "thigh_left_joint", "leg_left_joint", "foot_left_joint",
    ),
    "half_cheetah": ("bthigh", "bshin", "bfoot", "fthigh", "fshin", "ffoot"),
    "ant": ("hip_1", "ankle_1", "hip_2", "ankle_2", "hip_3", "ankle_3", "hip_4", "ankle_4"),
}  # fmt: skip

#: Joints driven by gymnasium v5's actuators, in actuator (action) order (the v5 MJCFs'
#: ``<actuator>``). Only the ant's differs from :data:`ROBOSCHOOL_JOINTS` (it starts with
#: leg 4).
V5_ACTUATOR_JOINTS: dict[str, tuple[str, ...]] = {
    **{r: ROBOSCHOOL_JOINTS[r] for r in ("hopper", "walker2d", "half_cheetah")},
    "ant": ("hip_4", "ankle_4", "hip_1", "ankle_1", "hip_2", "ankle_2", "hip_3", "ankle_3"),
}

#: The PyBullet port's ``foot_list`` (contacts observed by ``calc_state``, in its order) as
#: geoms of the MuJoCo v5 MJCFs (the ant's feet are unnamed bodies there; their geoms are
#: named).
ROBOSCHOOL_FEET_GEOMS: dict[str, tuple[str, ...]] = {
    "hopper": ("foot_geom",),
    "walker2d": ("foot_geom", "foot_left_geom"),
    "half_cheetah": ("ffoot", "fshin", "fthigh", "bfoot", "bshin", "bthigh"),
    # front_left_foot, front_right_foot, left_back_foot, right_back_foot
    "ant": ("left_ankle_geom", "right_ankle_geom", "third_ankle_geom", "fourth_ankle_geom"),
}

#: v5's ``rootz`` reading minus the torso frame's world height (m): 0 where the MJCF's
#: ``rootz`` has ``ref`` = the torso's height (hopper, walker2d: absolute height), -0.7 for
#: the half cheetah (no ref: height above its initial 0.7 m). Not used for the ant (free
#: joint: absolute height).
V5_ROOTZ_OFFSET: dict[str, float] = {"hopper": 0.0, "walker2d": 0.0, "half_cheetah": -0.7}


def check_obs_layout(obs_layout: str | None, default: str) -> str:
    """``obs_layout``, or ``default`` for None.

    Raises:
        ValueError: naming the value and the allowed ones (``"v5"``, ``"roboschool"``).
    """
    if obs_layout is None:
        return default
    if not isinstance(obs_layout, str) or obs_layout not in OBS_LAYOUTS:
        raise ValueError(
            f"obs_layout={obs_layout!r} is not allowed; allowed: "
            + ", ".join(repr(v) for v in OBS_LAYOUTS)
            + " (or None for the backend's default)"
        )
    return obs_layout


def action_permutation(robot: str, source: str, target: str) -> np.ndarray | None:
    """Index array ``perm`` with ``action_in_target_order = action[perm]``, where ``source``
    and ``target`` are action conventions, ``"v5"`` (:data:`V5_ACTUATOR_JOINTS`) or
    ``"roboschool"`` (:data:`ROBOSCHOOL_JOINTS`); None when the orders are the same
    (hopper, walker2d, half_cheetah). For the ant, v5 -> roboschool is
    ``[2, 3, 4, 5, 6, 7, 0, 1]``."""
    tables = {"v5": V5_ACTUATOR_JOINTS, "roboschool": ROBOSCHOOL_JOINTS}
    src, dst = tables[source][robot], tables[target][robot]
    if src == dst:
        return None
    return np.array([src.index(name) for name in dst], dtype=np.intp)


def roboschool_joint_limits(robot: str) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper) limits in rad, (n_joints,) float64 each, of the actuated joints in
    :data:`ROBOSCHOOL_JOINTS` order, read from the PyBullet port's MJCF
    (``assets/bullet/<robot>.xml``, upstream pybullet_data's limits, which differ from v5's
    for the ant and half cheetah): the limits Roboschool's ``calc_state`` normalises
    joint positions with."""
    import xml.etree.ElementTree as ET

    root = ET.parse(ASSETS_DIR / "bullet" / f"{robot}.xml").getroot()
    degrees = all(c.get("angle", "degree") == "degree" for c in root.iter("compiler"))
    ranges: dict[str, list[float]] = {}
    for j in root.iter("joint"):
        name, span = j.get("name"), j.get("range")
        if name and span:
            ranges[name] = [float(v) for v in span.split()]
    lim = np.array([ranges[n] for n in ROBOSCHOOL_JOINTS[robot]], dtype=np.float64)
    if degrees:
        lim = np.deg2rad(lim)
    return lim[:, 0].copy(), lim[:, 1].copy()


_LOCO_DIR = ASSETS_DIR / "locomotion"

# Bound once for the per-step code. ``np.clip`` is a Python wrapper around the ``clip``
# ufunc; calling the ufunc gives the same numbers at half the cost.
try:
    from numpy._core.umath import clip as _clip  # type: ignore[attr-defined]  # not in the stubs
except ImportError:  # NumPy < 2
    _clip = np.clip
_isfinite = math.isfinite
_square = np.square
_add_reduce = np.add.reduce
_concatenate = np.concatenate
_mj_step = mujoco.mj_step
_mj_rnePostConstraint = mujoco.mj_rnePostConstraint

#: Total mass (kg) v5's MJCF set with ``<compiler settotalmass>``, which MuJoCo deprecates;
#: it is set after compiling instead (``morphology.compile_mjcf``), bit for bit the same.
V5_TOTAL_MASS: dict[str, float] = {"half_cheetah": 14.0}


@functools.lru_cache(maxsize=8)
def _nominal_model(xml_name: str) -> mujoco.MjModel:
    """The nominal model of a robot, for clearance comparisons (kinematics only)."""
    return compile_mjcf((_LOCO_DIR / xml_name).read_text())


class PerturbLocomotionEnv(VisforeMujocoEnv, EzPickle):
    """A v5 locomotion task on a perturbable MJCF (base of the four robots).

    Subclasses set :attr:`robot`, :attr:`xml_name` and :attr:`v5_defaults`, and implement
    :meth:`_v5_observation` and :meth:`_v5_step` (simulate, reward, termination, info).

    Keyword Args:
        perturbation: fixed factors ``{key: factor}`` (None = nominal).
        randomize: ranges drawn at every reset (None = fixed perturbation).
        scale_healthy_z: scale the healthy height range by the standing-height ratio.
        obs_mode: ``"state"`` (v5's float64 vector), ``"pixels"`` (uint8 (height, width, 3))
            or ``"state+pixels"`` (Dict).
        obs_layout: layout of the state vector (the ``"state"`` part of every obs_mode)
            and order of the action: ``"v5"`` (default, None: gymnasium v5's, float64,
            unbounded) or ``"roboschool"`` (the PyBullet backend's: Roboschool's
            ``WalkerBase.calc_state`` computed from the MuJoCo state, float32 in [-5, 5],
            hopper 15, walker2d 22, half_cheetah 26, ant 28; the action in the PyBullet
            port's joint order, see :meth:`_roboschool_observation`). Reward, termination
            and info stay v5's.
        width, height: frame size in pixels. camera: model camera name (default
            ``"track"``, the v5 MJCF's tracking camera) or None with free-camera options.
        render_mode: None or ``"rgb_array"``.
        reward_mode: only ``"state"`` (v5's reward).
        frame_skip and the v5 reward/termination options of the robot (e.g.
        ``ctrl_cost_weight``, ``healthy_reward``, ``healthy_z_range``,
        ``reset_noise_scale``), with v5's defaults.

    Raises:
        ValueError: on an unknown perturbation key (listing the valid ones), a factor that
            is not a positive finite number, a bad range or preset, or a bad option value.
    """

    robot: ClassVar[str] = ""
    xml_name: ClassVar[str] = ""
    #: v5 constructor defaults of the robot (gymnasium ``envs/mujoco/<robot>_v5.py``).
    v5_defaults: ClassVar[dict[str, Any]] = {}
    #: Whether observation or reward read ``data.cfrc_ext`` (the ant's contact forces).
    reads_contact_forces: ClassVar[bool] = False
    #: Leading qpos entries v5's observation leaves out (the root's x, and y for the ant).
    obs_qpos_skip: ClassVar[int] = 1

    def __init__(
        self,
        *,
        perturbation: Mapping[str, float] | None = None,
        randomize=None,
        scale_healthy_z: bool = True,
        obs_mode: str = "state",
        obs_layout: str | None = None,
        reward_mode: str = "state",
        width: int = 64,
        height: int = 64,
        camera: str | None = "track",
        camera_distance: float | None = None,
        camera_azimuth: float | None = None,
        camera_elevation: float | None = None,
        camera_lookat: tuple[float, float, float] | None = None,
        render_mode: str | None = None,
        **v5_options,
    ) -> None:
        EzPickle.__init__(
            self,
            perturbation=perturbation,
            randomize=randomize,
            scale_healthy_z=scale_healthy_z,
            obs_mode=obs_mode,
            obs_layout=obs_layout,
            reward_mode=reward_mode,
            width=width,
            height=height,
            camera=camera,
            camera_distance=camera_distance,
            camera_azimuth=camera_azimuth,
            camera_elevation=camera_elevation,
            camera_lookat=camera_lookat,
            render_mode=render_mode,
            **v5_options,
        )
        check_choice("reward_mode", reward_mode, ("state",))
        self.obs_layout = check_obs_layout(obs_layout, "v5")
        self._roboschool = self.obs_layout == "roboschool"
        # Action given in the layout's order -> ctrl in v5 actuator order (None: same order).
        self._action_perm = None if self.obs_layout == "v5" else action_permutation(self.robot, "roboschool", "v5")
        unknown = sorted(set(v5_options) - set(self.v5_defaults))
        if unknown:
            raise ValueError(
                f"unknown option {unknown[0]!r} for {type(self).__name__}; valid options: "
                + ", ".join(self.option_names())
            )
        options = {**self.v5_defaults, **v5_options}
        self.morphology: RobotMorphology = ROBOTS[self.robot]
        self._fixed = parse_perturbation(self.morphology, perturbation)
        self._ranges = None if randomize is None else parse_ranges(self.morphology, randomize)
        self.scale_healthy_z = bool(scale_healthy_z)
        self._options = options
        self._nominal_xml = (_LOCO_DIR / self.xml_name).read_text()
        self._scales = dict(self._fixed)
        self._scaled = self._scale_mjcf()
        super().__init__(
            obs_mode=obs_mode,
            reward_mode="state",
            width=width,
            height=height,
            camera=camera,
            camera_distance=camera_distance,
            camera_azimuth=camera_azimuth,
            camera_elevation=camera_elevation,
            camera_lookat=camera_lookat,
            render_mode=render_mode,
            frame_skip=options["frame_skip"],
            ctrl_cost_weight=check_real("ctrl_cost_weight", options["ctrl_cost_weight"], minimum=0.0),
        )
        # Frames are drawn from their own MjData so rendering never changes the physics
        # data the v5 rewards read (v5 reads positions as mj_step leaves them).
        self.scene_data = mujoco.MjData(self.model)
        self._after_model_change()
        self.observation_space = self._make_observation_space()
        #: ``step`` returns v5's state vector itself (no pixels, v5 layout).
        self._v5_state_only = self.obs_mode == "state" and not self._roboschool

    def _scale_mjcf(self):
        return scale_mjcf(self._nominal_xml, self.morphology, self._scales, V5_TOTAL_MASS.get(self.robot))

    @classmethod
    def option_names(cls) -> list[str]:
        """Every keyword the constructor accepts (sorted), plus ``backend`` of the ids."""
        named = [
            name
            for name, param in inspect.signature(PerturbLocomotionEnv.__init__).parameters.items()
            if param.kind is inspect.Parameter.KEYWORD_ONLY
        ]
        return sorted({*named, *cls.v5_defaults, "backend"})

    # -- model -----------------------------------------------------------------------------
    @property
    def _nominal_geometry(self) -> bool:
        return self._scaled.xml is self._nominal_xml

    def _load_model(self) -> mujoco.MjModel:
        total = V5_TOTAL_MASS.get(self.robot) if self._nominal_geometry else None
        model = compile_mjcf(self._scaled.xml, total_mass=total)
        _apply_global_factors(model, self._scales)
        return model

    def _install_model(self) -> None:
        """Swap in the model of the current :attr:`_scales` (after a randomised draw)."""
        self._scaled = self._scale_mjcf()
        self.model = self._load_model()
        self.data = mujoco.MjData(self.model)
        mujoco.mj_forward(self.model, self.data)
        configure_fast_visuals(self.model, self.width, self.height)
        self.scene_model = self.model
        self.scene_data = mujoco.MjData(self.model)
        self._renderer.set_model(self.model)
        self.init_qpos = self.data.qpos.copy()
        self.init_qvel = self.data.qvel.copy()
        self._bind_data_views()
        self._after_model_change()

    def _after_model_change(self) -> None:
        if self.obs_layout == "roboschool":
            self._setup_roboschool()
        ratio = self._scaled.height_ratio if self.scale_healthy_z else 1.0
        low, high = self._options.get("healthy_z_range", (0.0, np.inf))
        self._healthy_z = (low * ratio, high * ratio)
        self._setup_clearance()
        names = [self.model.body(i).name or f"body{i}" for i in range(1, self.model.nbody)]
        self._info_static = {
            "perturbation": dict(self._scales),
            "body_mass": {n: float(m) for n, m in zip(names, self.model.body_mass[1:])},
        }
        self._info_perturbation = self._info_static["perturbation"]
        self._info_body_mass = self._info_static["body_mass"]
        #: ``dt`` of the current model, read by every step (the property costs a lookup chain).
        self._step_dt = self.dt
        self._frame = None

    def _bind_data_views(self) -> None:
        super()._bind_data_views()
        self._qpos_obs = self._qpos[self.obs_qpos_skip :]  # v5's observed positions

    def _setup_clearance(self) -> None:
        """Where the root's height is in qpos (free joint z, or the vertical root slide), and
        the nominal model to compare clearances with (perturbed geometry only)."""
        m = self.model
        root = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, self.morphology.root_body)
        self._root_z_adr = None
        for j in range(m.body_jntnum[root]):
            joint = m.body_jntadr[root] + j
            kind = int(m.jnt_type[joint])
            if kind == int(mujoco.mjtJoint.mjJNT_FREE):
                self._root_z_adr = int(m.jnt_qposadr[joint]) + 2
            elif kind == int(mujoco.mjtJoint.mjJNT_SLIDE) and np.allclose(m.jnt_axis[joint], [0, 0, 1]):
                self._root_z_adr = int(m.jnt_qposadr[joint])
        if self._nominal_geometry:
            self._clearance_models = None
        else:
            nominal = _nominal_model(self.xml_name)
            self._clearance_models = ((nominal, mujoco.MjData(nominal)), (m, mujoco.MjData(m)))

    def _standing_lowest_point(self, which: int, qpos: np.ndarray) -> float:
        """Lowest geom z (m) of the nominal (0) or perturbed (1) model at the standing pose
        of ``qpos`` (joints clamped into their limits)."""
        models = self._clearance_models
        if models is None:
            raise RuntimeError("clearance models are built for perturbed geometry only")
        model, data = models[which]
        data.qpos[:] = standing_pose(model, qpos)
        mujoco.mj_kinematics(model, data)
        return lowest_point(model, data)

    def _keep_nominal_clearance(self, qpos: np.ndarray) -> np.ndarray:
        """A perturbed body's reset pose: the standing pose of the noisy ``qpos`` (joints in
        their limits, so no joint-limit snap throws a heavier, longer body around; only the
        ant's ankles start outside their range in v5), with the root raised or lowered so
        the lowest geom keeps the gap the nominal body has with the same reset noise once
        its joints are in range. Nominal bodies: ``qpos`` unchanged (v5's reset).

        Args:
            qpos: (nq,) float64 reset pose, ``init_qpos`` + reset noise; changed in place.
        """
        if self._clearance_models is None or self._root_z_adr is None:
            return qpos
        nominal = self._clearance_models[0][0]
        gap = self._standing_lowest_point(0, nominal.qpos0 + (qpos - self.init_qpos))
        qpos[:] = standing_pose(self.model, qpos)
        qpos[self._root_z_adr] += gap - self._standing_lowest_point(1, qpos)
        return qpos

    def _info_copy(self) -> dict[str, dict[str, float]]:
        # New dicts every call: callers keep infos (gymnasium's checker asks for it).
        static = self._info_static
        return {"perturbation": dict(static["perturbation"]), "body_mass": dict(static["body_mass"])}

    @property
    def perturbation(self) -> dict[str, float]:
        """The factors in effect (every key), a copy."""
        return dict(self._scales)

    @property
    def healthy_z_range(self) -> tuple[float, float]:
        """Healthy height range in metres after scaling (v5's range at nominal)."""
        return self._healthy_z

    # -- simulation ------------------------------------------------------------------------
    def _simulate_v5(self, action) -> None:
        """gymnasium ``MujocoEnv.do_simulation``: ctrl, ``mj_step`` x frame_skip, then
        ``mj_rnePostConstraint`` if the robot reads contact forces (it only computes
        outputs such as ``cfrc_ext``, so skipping it leaves the trajectory unchanged).
        ``step`` checks the action first (:meth:`_check_action`)."""
        perm = self._action_perm
        if perm is not None:
            action = np.asarray(action)[perm]
        self._ctrl[:] = action
        model, data = self.model, self.data
        _mj_step(model, data, nstep=self.frame_skip)
        if self.reads_contact_forces:
            # cfrc_ext (contact forces) is computed only here; nothing else reads it.
            _mj_rnePostConstraint(model, data)
        self._frame = None

    def _posed_scene(self) -> mujoco.MjData:
        sd = self.scene_data
        sd.qpos[:] = self._qpos
        mujoco.mj_kinematics(self.model, sd)
        mujoco.mj_comPos(self.model, sd)  # subtree centres of mass: the trackcom camera
        mujoco.mj_camlight(self.model, sd)
        return sd

    def _state_dim(self) -> int:
        if self.obs_layout == "roboschool":
            n_joints = len(ROBOSCHOOL_JOINTS[self.robot])
            return 8 + 2 * n_joints + len(ROBOSCHOOL_FEET_GEOMS[self.robot])
        return int(self._v5_observation().shape[0])

    def _state_obs(self) -> np.ndarray:
        if self.obs_layout == "roboschool":
            return self._rs_state.copy()
        return self._v5_observation()

    def _make_observation_space(self):
        space = super()._make_observation_space()
        if self.obs_layout != "roboschool":
            return space
        # calc_state clips to [-5, 5]; float32 as the PyBullet backend
        state = spaces.Box(-5.0, 5.0, shape=(self._state_dim(),), dtype=np.float32)
        if isinstance(space, spaces.Dict):
            return spaces.Dict({"state": state, "pixels": space["pixels"]})
        return state if self.obs_mode == "state" else space

    # -- Roboschool observation layout -------------------------------------------------------
    def _setup_roboschool(self) -> None:
        """Indices the Roboschool layout reads (after every model build)."""
        m = self.model
        names = ROBOSCHOOL_JOINTS[self.robot]
        ids = [mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, n) for n in names]
        self._rs_qadr = np.array([m.jnt_qposadr[i] for i in ids], dtype=np.intp)
        self._rs_dadr = np.array([m.jnt_dofadr[i] for i in ids], dtype=np.intp)
        lower, upper = roboschool_joint_limits(self.robot)
        self._rs_mid = 0.5 * (lower + upper)
        self._rs_span = upper - lower
        self._rs_torso = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, "torso")
        geoms = [mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, g) for g in ROBOSCHOOL_FEET_GEOMS[self.robot]]
        self._rs_foot_bodies = np.array([m.geom_bodyid[g] for g in geoms], dtype=np.intp)
        self._rs_floor = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, "floor")
        self._rs_data = mujoco.MjData(m)  # scratch: the physics data is never touched
        self._rs_vel = np.zeros(6)
        if not hasattr(self, "_rs_feet"):
            self._rs_feet = np.zeros(len(geoms), dtype=np.float32)
            self._rs_initial_z: float | None = None
            self._rs_state = np.zeros(self._state_dim(), dtype=np.float32)

    def _roboschool_observation(self) -> np.ndarray:
        """Roboschool's ``WalkerBase.calc_state`` (as :mod:`visfore_envs.bullet` computes
        it) from the MuJoCo state: (8 + 2 n_joints + n_feet,) float32 clipped to [-5, 5].

        Entries, in order: torso height minus its height at reset (m); sin and cos of the
        angle from the torso's yaw to the walk target (x = 1000 m, y = 0) seen from the mean
        x, y of the bodies' centres of mass and the floor origin; 0.3 x the torso frame's
        linear velocity (m/s) rotated into the yaw frame (x, y, z); roll and pitch (rad,
        Bullet's ``getEulerFromQuaternion`` convention, ZYX); per joint of
        :data:`ROBOSCHOOL_JOINTS` its angle scaled to [-1, 1] between the PyBullet port's
        limits (:func:`roboschool_joint_limits`) and 0.1 x its speed (rad/s); then each
        foot of :data:`ROBOSCHOOL_FEET_GEOMS`: 1.0 if a geom of the foot's body touched the
        floor at the previous step (MuJoCo contacts; 0 at reset), as upstream.

        The torso point is the torso body frame (``xpos``; PyBullet reports the torso
        link at that point for all four robots). Reads a scratch ``MjData`` (``mj_forward``
        of the current qpos/qvel); the simulation data stays as v5 leaves it.
        """
        m, d = self.model, self._rs_data
        d.qpos[:] = self.data.qpos
        d.qvel[:] = self.data.qvel
        mujoco.mj_forward(m, d)
        t = self._rs_torso
        pos = d.xpos[t]
        mujoco.mj_objectVelocity(m, d, mujoco.mjtObj.mjOBJ_XBODY, t, self._rs_vel, 0)
        speed = self._rs_vel[3:6]
        roll, pitch, yaw = _euler_from_quat_wxyz(d.xquat[t])
        # parts: every body's centre of mass and the floor (at the origin)
        n_parts = m.nbody  # bodies 1.. plus the floor
        mean_x = float(d.xipos[1:, 0].sum()) / n_parts
        mean_y = float(d.xipos[1:, 1].sum()) / n_parts
        z = float(pos[2])
        initial_z = self._rs_initial_z
        if initial_z is None:
            initial_z = self._rs_initial_z = z
        angle_to_target = np.arctan2(0.0 - mean_y, 1e3 - mean_x) - yaw
        c, s = np.cos(-yaw), np.sin(-yaw)
        vx = c * speed[0] - s * speed[1]
        vy = s * speed[0] + c * speed[1]
        vz = speed[2]
        more = np.array(
            [
                z - initial_z,
                np.sin(angle_to_target),
                np.cos(angle_to_target),
                0.3 * vx,
                0.3 * vy,
                0.3 * vz,
                roll,
                pitch,
            ],
            dtype=np.float32,
        )
        rel = np.empty(2 * len(self._rs_qadr), dtype=np.float64)
        rel[0::2] = 2 * (d.qpos[self._rs_qadr] - self._rs_mid) / self._rs_span
        rel[1::2] = 0.1 * d.qvel[self._rs_dadr]
        return np.clip(np.concatenate([more, rel.astype(np.float32), self._rs_feet]), -5, +5).astype(np.float32)

    def _roboschool_feet_contact(self) -> np.ndarray:
        """(n_feet,) float32: 1.0 where a geom of the foot's body touches the floor geom in
        the scratch data's contacts (call after :meth:`_roboschool_observation`)."""
        d, m = self._rs_data, self.model
        out = np.zeros(len(self._rs_foot_bodies), dtype=np.float32)
        floor = self._rs_floor
        for k in range(d.ncon):
            con = d.contact[k]
            g1, g2 = con.geom1, con.geom2
            if g1 == floor:
                other = g2
            elif g2 == floor:
                other = g1
            else:
                continue
            out[self._rs_foot_bodies == m.geom_bodyid[other]] = 1.0
        return out

    def _update_roboschool(self, reset: bool) -> None:
        """The Roboschool state of this reset/step; the feet contacts enter the next one."""
        if self.obs_layout != "roboschool":
            return
        if reset:
            self._rs_feet = np.zeros(len(self._rs_foot_bodies), dtype=np.float32)
            self._rs_initial_z = None
        self._rs_state = self._roboschool_observation()
        if not reset:  # as upstream: contacts are read after calc_state in step()
            self._rs_feet = self._roboschool_feet_contact()

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Reset as v5 does (``mj_resetData``, then uniform/normal noise on qpos/qvel).

        With ``randomize``, a new perturbation is drawn first (from ``np_random``) and the
        model rebuilt. Returns ``(observation, info)``; info has ``perturbation``,
        ``body_mass`` and v5's reset info.
        """
        super().reset(seed=seed)
        if self._ranges is not None:
            drawn = sample_perturbation(self.morphology, self._ranges, self.np_random)
            self._scales = {k: drawn[k] if k in self._ranges else self._fixed[k] for k in self._fixed}
            self._install_model()
        mujoco.mj_resetData(self.model, self.data)
        qpos, qvel = self._v5_reset_noise()
        self.set_state(self._keep_nominal_clearance(qpos), qvel)
        self._update_roboschool(reset=True)
        info = {**self._v5_reset_info(), **self._info_copy(), "physics_unstable": False}
        return self._observation(), info

    def step(self, action):
        """One v5 step. Returns ``(observation, reward, terminated, truncated, info)``;
        ``truncated`` is True only when the physics blew up (``info["physics_unstable"]``).

        Raises:
            ValueError: on a wrong action shape or a non-finite action (nothing changes).
        """
        # The action check fused with the control cost's sum of squares (the same numbers).
        ctrl_square_sum = self._checked_square_sum(action)
        reward, terminated, info = self._v5_step(action, ctrl_square_sum)
        if self._roboschool:
            self._update_roboschool(reset=False)
        info["perturbation"] = self._info_perturbation.copy()
        info["body_mass"] = self._info_body_mass.copy()
        unstable = self._physics_unstable()
        info["physics_unstable"] = unstable
        if self._v5_state_only:
            observation = self._v5_step_observation()
        else:
            observation = self._observation()
        if unstable:  # MuJoCo reset the data; never hand out non-finite numbers
            if isinstance(observation, dict):
                observation["state"] = np.nan_to_num(observation["state"])
            elif self.obs_mode == "state":
                observation = np.nan_to_num(observation)
            reward = float(np.nan_to_num(reward))
        return observation, reward, terminated, unstable, info

    # -- robot hooks -----------------------------------------------------------------------
    def _v5_observation(self) -> np.ndarray:
        raise NotImplementedError

    def _v5_step_observation(self) -> np.ndarray:
        """v5's observation right after :meth:`_v5_step` (may reuse what the step computed)."""
        return self._v5_observation()

    def _v5_reset_noise(self) -> tuple[np.ndarray, np.ndarray]:
        scale = self._options["reset_noise_scale"]
        qpos = self.init_qpos + self.np_random.uniform(-scale, scale, size=self.model.nq)
        qvel = self.init_qvel + self.np_random.uniform(-scale, scale, size=self.model.nv)
        return qpos, qvel

    def _v5_reset_info(self) -> dict[str, Any]:
        """v5's reset info plus the other keys of the step info, 0.0 (same structure)."""
        return {
            "x_position": self.data.qpos[0],
            "x_velocity": 0.0,
            "reward_forward": 0.0,
            "reward_ctrl": 0.0,
        }

    def _v5_step(self, action, ctrl_square_sum) -> tuple[float, bool, dict[str, Any]]:
        """Simulate ``action`` (checked) and return v5's ``(reward, terminated, info)``;
        ``ctrl_square_sum`` is v5's ``np.sum(np.square(action))``."""
        raise NotImplementedError


def _euler_from_quat_wxyz(q) -> tuple[float, float, float]:
    """(roll, pitch, yaw) in rad of a unit quaternion (w, x, y, z), as Bullet's
    ``getEulerFromQuaternion`` (ZYX Euler angles, pitch = asin(2 (w y - x z)))."""
    w, x, y, z = (float(v) for v in q)
    sarg = max(-1.0, min(1.0, 2.0 * (w * y - x * z)))
    roll = math.atan2(2.0 * (y * z + w * x), w * w - x * x - y * y + z * z)
    pitch = math.asin(sarg)
    yaw = math.atan2(2.0 * (x * y + w * z), w * w + x * x - y * y - z * z)
    return roll, pitch, yaw


def _apply_global_factors(model: mujoco.MjModel, scales: Mapping[str, float]) -> None:
    """friction (sliding, every geom), gravity, actuator_gear, joint_damping (in place)."""
    if scales["friction"] != 1.0:
        model.geom_friction[:, 0] *= scales["friction"]
    if scales["gravity"] != 1.0:
        model.opt.gravity[:] = model.opt.gravity * scales["gravity"]
    if scales["actuator_gear"] != 1.0:
        model.actuator_gear[:, 0] *= scales["actuator_gear"]
    if scales["joint_damping"] != 1.0:
        model.dof_damping[:] = model.dof_damping * scales["joint_damping"]


class _PlanarWalker(PerturbLocomotionEnv):
    """Hopper and Walker2d: planar, forward reward from qpos[0], healthy z and angle."""

    def _v5_observation(self) -> np.ndarray:
        # v5: concatenate((qpos.flatten()[1:], np.clip(qvel.flatten(), -10, 10))).ravel()
        return _concatenate((self._qpos_obs, _clip(self._qvel, -10.0, 10.0)))

    _v5_step_observation = _v5_observation  # nothing of the step to reuse: skip a call

    def _is_healthy(self) -> bool:
        qpos = self._qpos
        z, angle = qpos[1], qpos[2]
        min_z, max_z = self._healthy_z
        min_angle, max_angle = self._options["healthy_angle_range"]
        if not (min_z < z < max_z and min_angle < angle < max_angle):
            return False
        state_range = self._options.get("healthy_state_range")  # hopper only
        if state_range is None:
            return True
        # v5: all(low < state < high) over (qpos, qvel)[2:]; min/max propagate NaN (unhealthy)
        state = _concatenate((qpos[2:], self._qvel))
        low, high = state_range
        return bool(low < state.min() and state.max() < high)

    def _v5_step(self, action, ctrl_square_sum):
        o = self._options
        qpos = self._qpos
        x_before = qpos[0]
        self._simulate_v5(action)
        x_after = qpos[0]
        x_velocity = (x_after - x_before) / self._step_dt
        healthy = self._is_healthy()
        forward = o["forward_reward_weight"] * x_velocity
        survive = healthy * o["healthy_reward"]
        ctrl_cost = o["ctrl_cost_weight"] * ctrl_square_sum
        reward = forward + survive - ctrl_cost
        terminated = (not healthy) and o["terminate_when_unhealthy"]
        info = {
            "x_position": x_after,
            "z_distance_from_origin": qpos[1] - self.init_qpos[1],
            "x_velocity": x_velocity,
            "reward_forward": forward,
            "reward_ctrl": -ctrl_cost,
            "reward_survive": survive,
        }
        return reward, terminated, info

    def _v5_reset_info(self):
        return {
            "x_position": self.data.qpos[0],
            "z_distance_from_origin": self.data.qpos[1] - self.init_qpos[1],
            "x_velocity": 0.0,
            "reward_forward": 0.0,
            "reward_ctrl": 0.0,
            "reward_survive": 0.0,
        }


class PerturbHopperEnv(_PlanarWalker):
    """Perturbable Hopper (``PerturbHopper-v0``); gymnasium ``hopper_v5.py`` at nominal.

    Observation ``"state"``: Box(-inf, inf, (11,), float64): qpos[1:] (z in m, torso
    angle, thigh/leg/foot angles in rad) and qvel clipped to [-10, 10]. Action: Box(-1, 1,
    (3,), float32), torques of thigh, leg and foot (gear 200). Reward: forward velocity
    (m/s) + 1 when healthy - 1e-3 ``|a|^2``; terminates when unhealthy (z <= 0.7 m x height
    ratio, ``|torso angle|`` >= 0.2 rad, or any state beyond +-100). ``dt`` = 0.008 s.
    Parts: ``torso``, ``thigh``, ``leg``, ``foot`` (the short aliases Ltorso..Wfoot: L = length, W = width, M = mass).
    """

    robot = "hopper"
    xml_name = "hopper.xml"
    v5_defaults = {
        "frame_skip": 4,
        "forward_reward_weight": 1.0,
        "ctrl_cost_weight": 1e-3,
        "healthy_reward": 1.0,
        "terminate_when_unhealthy": True,
        "healthy_state_range": (-100.0, 100.0),
        "healthy_z_range": (0.7, float("inf")),
        "healthy_angle_range": (-0.2, 0.2),
        "reset_noise_scale": 5e-3,
    }


class PerturbWalker2dEnv(_PlanarWalker):
    """Perturbable Walker2d (``PerturbWalker2d-v0``); gymnasium ``walker2d_v5.py`` at nominal.

    Observation ``"state"``: Box(-inf, inf, (17,), float64): qpos[1:] and qvel clipped to
    [-10, 10]. Action: Box(-1, 1, (6,), float32) (gear 100). Reward: forward velocity + 1
    when healthy - 1e-3 ``|a|^2``; terminates when z leaves (0.8, 2.0) m (x height ratio) or
    ``|torso angle|`` >= 1 rad. Parts: ``torso``, ``thigh``, ``leg``, ``foot`` (both legs).
    """

    robot = "walker2d"
    xml_name = "walker2d.xml"
    v5_defaults = {
        "frame_skip": 4,
        "forward_reward_weight": 1.0,
        "ctrl_cost_weight": 1e-3,
        "healthy_reward": 1.0,
        "terminate_when_unhealthy": True,
        "healthy_z_range": (0.8, 2.0),
        "healthy_angle_range": (-1.0, 1.0),
        "reset_noise_scale": 5e-3,
    }


class PerturbAntEnv(PerturbLocomotionEnv):
    """Perturbable Ant (``PerturbAnt-v0``); gymnasium ``ant_v5.py`` at nominal.

    Observation ``"state"``: Box(-inf, inf, (105,), float64): qpos[2:] (13), qvel (14) and
    the external contact forces ``cfrc_ext[1:]`` clipped to [-1, 1] (78). Action: Box(-1,
    1, (8,), float32) (gear 150). Reward: torso x velocity + 1 when healthy - 0.5 ``|a|^2`` -
    5e-4 ``|cfrc_ext|^2``; terminates when the torso z leaves [0.2, 1.0] m (x height ratio).
    Parts: ``torso`` (width, mass), ``hip``, ``thigh``, ``shin`` (all four legs).
    """

    robot = "ant"
    xml_name = "ant.xml"
    reads_contact_forces = True
    obs_qpos_skip = 2
    v5_defaults = {
        "frame_skip": 5,
        "forward_reward_weight": 1.0,
        "ctrl_cost_weight": 0.5,
        "contact_cost_weight": 5e-4,
        "healthy_reward": 1.0,
        "terminate_when_unhealthy": True,
        "healthy_z_range": (0.2, 1.0),
        "contact_force_range": (-1.0, 1.0),
        "reset_noise_scale": 0.1,
    }

    def _contact_forces(self) -> np.ndarray:
        """v5's ``contact_forces``: ``cfrc_ext`` clipped to ``contact_force_range``, (nbody, 6)."""
        low, high = self._options["contact_force_range"]
        return _clip(self.data.cfrc_ext, low, high)

    def _v5_observation(self) -> np.ndarray:
        return self._ant_observation(self._contact_forces())

    def _ant_observation(self, contact_forces: np.ndarray) -> np.ndarray:
        # v5: concatenate((qpos.flatten()[2:], qvel.flatten(), contact_forces[1:].flatten()))
        return _concatenate((self._qpos_obs, self._qvel, contact_forces[1:].ravel()))

    def _v5_step_observation(self) -> np.ndarray:
        return self._ant_observation(self._step_contact_forces)  # clipped by this step

    def _is_healthy(self) -> bool:
        qpos, qvel = self._qpos, self._qvel
        # v5: isfinite((qpos, qvel)).all(); a finite sum of the values (Python floats) rules
        # out NaN and infinity, the exact test settles an overflowing sum.
        if not _isfinite(sum(qpos.tolist()) + sum(qvel.tolist())) and not (
            np.isfinite(qpos).all() and np.isfinite(qvel).all()
        ):
            return False
        min_z, max_z = self._healthy_z
        return bool(min_z <= qpos[2] <= max_z)

    def _v5_reset_noise(self):
        scale = self._options["reset_noise_scale"]
        qpos = self.init_qpos + self.np_random.uniform(-scale, scale, size=self.model.nq)
        qvel = self.init_qvel + scale * self.np_random.standard_normal(self.model.nv)
        return qpos, qvel

    def _v5_reset_info(self):
        return {
            "x_position": self.data.qpos[0],
            "y_position": self.data.qpos[1],
            "distance_from_origin": np.linalg.norm(self.data.qpos[0:2], ord=2),
            "x_velocity": 0.0,
            "y_velocity": 0.0,
            "reward_forward": 0.0,
            "reward_ctrl": 0.0,
            "reward_contact": 0.0,
            "reward_survive": 0.0,
        }

    def _v5_step(self, action, ctrl_square_sum):
        o = self._options
        xpos = self.data.xpos
        xy_before = xpos[1, :2].copy()  # v5's main_body = 1 (torso)
        self._simulate_v5(action)
        xy_after = xpos[1, :2].copy()
        x_velocity, y_velocity = (xy_after - xy_before) / self._step_dt
        healthy = self._is_healthy()
        forward = x_velocity * o["forward_reward_weight"]
        survive = healthy * o["healthy_reward"]
        ctrl_cost = o["ctrl_cost_weight"] * ctrl_square_sum
        # computed once per step (v5 clips twice): the reward's and the observation's
        self._step_contact_forces = contact_forces = self._contact_forces()
        contact_cost = o["contact_cost_weight"] * _add_reduce(_square(contact_forces), axis=None)
        reward = forward + survive - (ctrl_cost + contact_cost)
        terminated = (not healthy) and o["terminate_when_unhealthy"]
        qpos = self._qpos
        info = {
            "x_position": qpos[0],
            "y_position": qpos[1],
            "distance_from_origin": np.linalg.norm(qpos[0:2], ord=2),
            "x_velocity": x_velocity,
            "y_velocity": y_velocity,
            "reward_forward": forward,
            "reward_ctrl": -ctrl_cost,
            "reward_contact": -contact_cost,
            "reward_survive": survive,
        }
        return reward, terminated, info


class PerturbHalfCheetahEnv(PerturbLocomotionEnv):
    """Perturbable HalfCheetah (``PerturbHalfCheetah-v0``); gymnasium ``half_cheetah_v5.py``
    at nominal.

    Observation ``"state"``: Box(-inf, inf, (17,), float64): qpos[1:] and qvel. Action:
    Box(-1, 1, (6,), float32). Reward: forward velocity - 0.1 ``|a|^2``; never terminates.
    Parts: ``torso`` (with the head), ``bthigh``, ``bshin``, ``bfoot``, ``fthigh``,
    ``fshin``, ``ffoot``. (v5's total mass of 14 kg holds at nominal, set after compiling,
    :data:`V5_TOTAL_MASS`; a perturbed cheetah keeps the nominal densities instead, so its
    mass follows its geometry.)
    """

    robot = "half_cheetah"
    xml_name = "half_cheetah.xml"
    v5_defaults = {
        "frame_skip": 5,
        "forward_reward_weight": 1.0,
        "ctrl_cost_weight": 0.1,
        "reset_noise_scale": 0.1,
    }

    def _v5_observation(self) -> np.ndarray:
        # v5: concatenate((qpos.flatten()[1:], qvel.flatten())).ravel()
        return _concatenate((self._qpos_obs, self._qvel))

    _v5_step_observation = _v5_observation  # nothing of the step to reuse: skip a call

    def _v5_reset_noise(self):
        scale = self._options["reset_noise_scale"]
        qpos = self.init_qpos + self.np_random.uniform(-scale, scale, size=self.model.nq)
        qvel = self.init_qvel + scale * self.np_random.standard_normal(self.model.nv)
        return qpos, qvel

    def _v5_step(self, action, ctrl_square_sum):
        o = self._options
        qpos = self._qpos
        x_before = qpos[0]
        self._simulate_v5(action)
        x_after = qpos[0]
        x_velocity = (x_after - x_before) / self._step_dt
        forward = o["forward_reward_weight"] * x_velocity
        ctrl_cost = o["ctrl_cost_weight"] * ctrl_square_sum
        info = {
            "x_position": x_after,
            "x_velocity": x_velocity,
            "reward_forward": forward,
            "reward_ctrl": -ctrl_cost,
        }
        return forward - ctrl_cost, False, info


# -- ids and backends --------------------------------------------------------------------
_MUJOCO_CLASSES: dict[str, type[PerturbLocomotionEnv]] = {
    "hopper": PerturbHopperEnv,
    "walker2d": PerturbWalker2dEnv,
    "ant": PerturbAntEnv,
    "half_cheetah": PerturbHalfCheetahEnv,
}

#: Perturbable ids -> robot (both backends' ids).
_ID_ROBOTS: dict[str, str] = {
    "PerturbHopper-v0": "hopper",
    "PerturbWalker2d-v0": "walker2d",
    "PerturbAnt-v0": "ant",
    "PerturbHalfCheetah-v0": "half_cheetah",
    "PerturbHopperBullet-v0": "hopper",
    "PerturbWalker2dBullet-v0": "walker2d",
    "PerturbAntBullet-v0": "ant",
    "PerturbHalfCheetahBullet-v0": "half_cheetah",
}

#: The backend-choosing ids (``backend="mujoco"`` default, or ``"pybullet"``).
LOCOMOTION_IDS = (
    "PerturbHopper-v0",
    "PerturbWalker2d-v0",
    "PerturbAnt-v0",
    "PerturbHalfCheetah-v0",
)


def robot_of(env_id: str) -> str:
    """Robot name (``"hopper"``...) of a perturbable id (``visfore_envs:`` prefix allowed).

    Raises:
        ValueError: if the id is not a perturbable env, listing those that are.
    """
    name = env_id.split(":", 1)[-1] if isinstance(env_id, str) else env_id
    if name not in _ID_ROBOTS:
        raise ValueError(f"{env_id!r} is not a perturbable env; perturbable ids: {', '.join(_ID_ROBOTS)}")
    return _ID_ROBOTS[name]


def perturbation_keys(env_id: str) -> tuple[str, ...]:
    """Every valid perturbation key of a perturbable id (``"torso.length"``, ...,
    ``"friction"``, ``"gravity"``, ``"actuator_gear"``, ``"joint_damping"``)."""
    return ROBOTS[robot_of(env_id)].keys()


def resolve_perturbation_key(env_id: str, key: str) -> str:
    """Canonical key for ``key`` or a short alias (``"Lthigh"`` -> ``"thigh.length"``).

    Raises:
        ValueError: naming the key and listing the valid ones.
    """
    return resolve_key(ROBOTS[robot_of(env_id)], key)


def make_locomotion_env(robot: str, backend: str = "mujoco", **kwargs):
    """Build the perturbable ``robot`` on ``backend`` (``"mujoco"`` or ``"pybullet"``).

    Raises:
        ValueError: on an unknown backend (listing both).
    """
    check_choice("backend", backend, BACKENDS)
    if backend == "mujoco":
        return _MUJOCO_CLASSES[robot](**kwargs)
    from visfore_envs.bullet import BULLET_CLASSES  # pybullet is imported only when asked

    return BULLET_CLASSES[robot](**kwargs)


def _factory_metadata(render_fps: int) -> dict[str, Any]:
    # gym.make reads the entry point's metadata to wrap "rgb_array_list" (RenderCollection)
    # and "human" (HumanRendering) around an "rgb_array" env; a factory needs it too.
    return {"render_modes": ["rgb_array"], "render_fps": render_fps}


_Factory = TypeVar("_Factory", bound=Callable[..., Any])


def _with_metadata(render_fps: int) -> Callable[[_Factory], _Factory]:
    """Decorator: sets the entry point's ``metadata`` (:func:`_factory_metadata`); both
    backends render ``"rgb_array"``, which is what ``gym.make`` reads."""

    def decorate(factory: _Factory) -> _Factory:
        factory.__dict__["metadata"] = _factory_metadata(render_fps)
        return factory

    return decorate


# v5's frame rates (1 / dt)
@_with_metadata(125)
def make_perturb_hopper(backend: str = "mujoco", **kwargs):
    """Entry point of ``PerturbHopper-v0``: see :func:`make_locomotion_env`."""
    return make_locomotion_env("hopper", backend, **kwargs)


@_with_metadata(125)
def make_perturb_walker2d(backend: str = "mujoco", **kwargs):
    """Entry point of ``PerturbWalker2d-v0``: see :func:`make_locomotion_env`."""
    return make_locomotion_env("walker2d", backend, **kwargs)


@_with_metadata(20)
def make_perturb_ant(backend: str = "mujoco", **kwargs):
    """Entry point of ``PerturbAnt-v0``: see :func:`make_locomotion_env`."""
    return make_locomotion_env("ant", backend, **kwargs)


@_with_metadata(20)
def make_perturb_half_cheetah(backend: str = "mujoco", **kwargs):
    """Entry point of ``PerturbHalfCheetah-v0``: see :func:`make_locomotion_env`."""
    return make_locomotion_env("half_cheetah", backend, **kwargs)
