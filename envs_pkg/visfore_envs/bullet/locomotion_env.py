"""Perturbable PyBullet locomotion: the Roboschool/pybullet_envs walkers on Gymnasium 1.x.

A port of pybullet 3.2.7's ``pybullet_envs`` (``gym_locomotion_envs.py``
``WalkerBaseBulletEnv``, ``env_bases.py`` ``MJCFBaseBulletEnv``, ``robot_bases.py``
``MJCFBasedRobot``/``BodyPart``/``Joint``, ``robot_locomotors.py`` ``WalkerBase``,
``scene_stadium.py``/``scene_abstract.py``), without importing it (it needs the old
``gym``). Each env owns one PyBullet ``DIRECT`` client. What is upstream's:

* scene: ``plane_stadium.sdf`` (lateral friction 0.8, restitution 0.5), gravity 9.8,
  default contact ERP 0.9, 5 solver iterations, ``fixedTimeStep`` 0.0165 s split into
  ``frame_skip`` = 4 sub-steps (``dt`` = 0.0165 s), ``deterministicOverlappingPairs``;
* robot: ``loadMJCF`` with self-collision (excluding parents); every joint's default motor
  disabled; joints named ``ignore*`` (planar root) and fixed joints are not actuated;
  torque = ``power * power_coef * clip(a, -1, 1)`` (:mod:`visfore_envs.bullet.robots`);
* reset: every actuated joint at a uniform offset in [-0.1, 0.1] rad (drawn from the env's
  ``np_random``, one draw per joint in joint order), velocities zero;
* observation (``WalkerBase.calc_state``), float32, clipped to [-5, 5]: torso height above
  its initial height, sin and cos of the angle to the walk target (1 km ahead on x), 0.3 x
  the torso velocity in the yaw frame, roll, pitch; per actuated joint its position scaled
  to [-1, 1] between its limits and 0.1 x its speed; then the feet's ground contacts (as
  of the previous step, as upstream);
* reward (``WalkerBaseBulletEnv.step``), the sum of, in this order: ``reward_alive`` (+1 /
  -1, the robot's rule), ``reward_progress`` (potential difference, potential = -distance
  to the target / dt, the distance from the mean x, y of all links, the floor included,
  as upstream), ``reward_electricity`` (-2 mean|a * joint speed| - 0.1 mean a^2, ``a`` as
  passed), ``reward_joints_at_limit`` (-0.1 per joint within 1% of a limit) and
  ``reward_feet_collision`` (always 0, as upstream);
* termination when alive < 0 (never for the half cheetah) or the state is not finite.
  Gymnasium's ``TimeLimit`` (1000 steps) truncates.

``obs_layout="v5"`` replaces the observation (not the reward) with gymnasium v5's of the
same robot computed from the PyBullet state (the ant's 78 contact-force entries are zeros)
and takes the action in v5's actuator order (permuted for the ant), so a policy trained on
the MuJoCo backend runs here; see ``BulletLocomotionEnv._v5_state``.

What is new: the perturbation (:mod:`visfore_envs.morphology`, the spec the MuJoCo backend
uses): body-part length/width/mass factors edit the MJCF before loading; the global
factors act on the loaded world:

* ``friction``: every link's and the floor's lateral friction x sqrt(factor) (Bullet
  multiplies the two frictions of a contact, so each contact's friction scales by the factor);
* ``gravity``: ``setGravity(0, 0, -9.8 * factor)``;
* ``actuator_gear``: ``power`` x factor;
* ``joint_damping``: PyBullet's ``loadMJCF`` drops the MJCF joint damping, so pybullet_envs
  runs undamped. Nominal stays undamped; a factor s > 1 adds ``(s - 1) x`` the MJCF damping
  of each actuated joint (the damping the MuJoCo backend adds for the same factor);
  s < 1 cannot go below zero and leaves the joints undamped (warned once).
* masses: PyBullet computes a link's mass from its geoms (density 1000, whatever the MJCF
  says, except an explicit ``<inertial mass>``), so a scaled part's mass follows its
  volume; the env then sets each link to its nominal PyBullet mass x the part's mass
  ratio from :func:`~visfore_envs.morphology.scale_mjcf` (the ``mass`` factor, or the
  volume ratio), inertia scaled alike. ``info["body_mass"]`` reads them back.
* with ``scale_healthy_z`` the alive height threshold scales with the torso's initial
  height over its nominal one.
"""

from __future__ import annotations

import inspect
import math
import os
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.utils import EzPickle

from visfore_envs.bullet.quiet_import import quiet_c_output
from visfore_envs.bullet.robots import BULLET_ROBOTS, BulletRobot
from visfore_envs.core.options import check_choice, check_int
from visfore_envs.locomotion import (
    V5_ROOTZ_OFFSET,
    action_permutation,
    check_obs_layout,
)
from visfore_envs.morphology import (
    ROBOTS,
    RobotMorphology,
    geom_masses,
    parse_perturbation,
    parse_ranges,
    sample_perturbation,
    scale_mjcf,
)

# pybullet's C code prints "pybullet build time: ..." on import (to fd 1 or 2, past
# sys.stdout): imported with both descriptors pointed at os.devnull, so a command's output
# stays its own
with quiet_c_output():
    import pybullet
    import pybullet_data
    from pybullet_utils import bullet_client

__all__ = [
    "BULLET_ASSETS_DIR",
    "BulletLocomotionEnv",
    "BulletHopperEnv",
    "BulletWalker2dEnv",
    "BulletAntEnv",
    "BulletHalfCheetahEnv",
]

#: Directory of the PyBullet MJCFs (local-coordinate conversions of pybullet_data's).
BULLET_ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets" / "bullet"

_OBS_MODES = ("state", "pixels", "state+pixels")
_MAX_IMAGE_SIZE = 4096

# scene_stadium.py / scene_abstract.py / gym_locomotion_envs.py constants
_GRAVITY = 9.8
_TIMESTEP = 0.0165 / 4
_SOLVER_ITERATIONS = 5
_CONTACT_ERP = 0.9
_GROUND_FRICTION = 0.8
_GROUND_RESTITUTION = 0.5
_WALK_TARGET_X = 1e3  # "kilometer away"
_WALK_TARGET_Y = 0.0
_ELECTRICITY_COST = -2.0
_STALL_TORQUE_COST = -0.1
_JOINTS_AT_LIMIT_COST = -0.1
_DEFAULT_POWER_COEF = 100.0  # robot_bases.py addToScene
#: gymnasium v5 observation sizes (obs_layout="v5")
_V5_DIMS = {"hopper": 11, "walker2d": 17, "half_cheetah": 17, "ant": 105}
_LOAD_FLAGS = (
    pybullet.URDF_USE_SELF_COLLISION
    | pybullet.URDF_USE_SELF_COLLISION_EXCLUDE_ALL_PARENTS
    | pybullet.URDF_GOOGLEY_UNDEFINED_COLORS
)


def _connect() -> bullet_client.BulletClient:
    """A new DIRECT client, without the ``argv[0]=`` line PyBullet prints on stdout
    (:func:`~visfore_envs.bullet.quiet_import.quiet_c_output`, which also flushes C's
    buffered stdout before restoring it: a bare ``dup2`` let the line out at exit when
    stdout was a pipe)."""
    with quiet_c_output():
        return bullet_client.BulletClient(connection_mode=pybullet.DIRECT)


def _worldbody(root: ET.Element) -> ET.Element:
    worldbody = root.find("worldbody")
    if worldbody is None:
        raise ValueError("the MJCF has no <worldbody>")
    return worldbody


def _body_geoms(xml_text: str) -> dict[str, list[str]]:
    """Body name (or ``"@geom"`` of an unnamed body) -> keys of its geoms, as
    :func:`visfore_envs.morphology.geom_masses` names them."""
    root = ET.fromstring(xml_text)
    out: dict[str, list[str]] = {}
    index = 0
    for body in _worldbody(root).iter("body"):
        keys = []
        for geom in body.findall("geom"):
            keys.append(geom.get("name") or f"geom{index}")
            index += 1
        name = body.get("name") or (f"@{keys[0]}" if keys else "")
        out[name] = keys
    return out


def _joint_damping(xml_text: str) -> dict[str, float]:
    """Joint name -> MJCF damping (explicit, else the default class's, else 0)."""
    root = ET.fromstring(xml_text)
    default = root.find("default/joint")
    base = float(default.get("damping", 0.0)) if default is not None else 0.0
    damping: dict[str, float] = {}
    for j in _worldbody(root).iter("joint"):
        name = j.get("name")
        if name:
            damping[name] = float(j.get("damping", base))
    return damping


#: robot -> (link name -> mass, torso height) of the nominal robot as PyBullet loads it
#: (filled on first use, see ``_nominal_model``).
_NOMINAL: dict[str, tuple[dict[str, float], float]] = {}


def _nominal_model(client, robot: str) -> tuple[dict[str, float], float]:
    """(link name -> mass in kg, torso height in m) of the nominal robot as PyBullet loads
    it. Loads the nominal file into ``client`` on first use (the caller resets the
    simulation afterwards)."""
    if robot not in _NOMINAL:
        spec = BULLET_ROBOTS[robot]
        body = client.loadMJCF(str(BULLET_ASSETS_DIR / spec.xml_file), flags=_LOAD_FLAGS)[0]
        links = _link_indices(client, body)
        masses = {name: float(client.getDynamicsInfo(body, i)[0]) for name, i in links.items()}
        torso = links[spec.robot_name]
        if torso == -1:
            z = client.getBasePositionAndOrientation(body)[0][2]
        else:
            z = client.getLinkState(body, torso)[0][2]
        client.removeBody(body)
        _NOMINAL[robot] = (masses, float(z))
    return _NOMINAL[robot]


def _link_indices(client, body: int) -> dict[str, int]:
    """Link name -> link index (-1 for the base) of a loaded body."""
    links = {client.getBodyInfo(body)[0].decode("utf8"): -1}
    for j in range(client.getNumJoints(body)):
        links[client.getJointInfo(body, j)[12].decode("utf8")] = j
    return links


class BulletLocomotionEnv(gym.Env, EzPickle):
    """A pybullet_envs walker (hopper, walker2d, ant, half_cheetah) on a perturbable MJCF.

    Args:
        robot: ``"hopper"``, ``"walker2d"``, ``"ant"`` or ``"half_cheetah"``.

    Keyword Args:
        perturbation: fixed factors ``{key: factor}`` (None = nominal); the keys of
            :meth:`visfore_envs.morphology.RobotMorphology.keys` or their aliases.
        randomize: ranges a new perturbation is drawn from at every reset with the env's
            ``np_random`` (a preset ``"random"``/``"extreme"``, ``(low, high)``,
            ``"LOW-HIGH"`` or a dict ``key -> (low, high)``; see
            :func:`~visfore_envs.morphology.parse_ranges`); keys it does not draw keep
            ``perturbation``'s factor. The world is rebuilt when the draw changes it.
        scale_healthy_z: scale the alive rule's height threshold with the torso's initial
            height (ratio to nominal; 1 at nominal).
        obs_mode: ``"state"`` (Box float32 (obs_dim,) in [-5, 5]), ``"pixels"`` (Box uint8
            (height, width, 3)) or ``"state+pixels"`` (Dict ``state``, ``pixels``).
        obs_layout: layout of the state vector (the ``"state"`` part of every obs_mode)
            and order of the action: ``"roboschool"`` (default, None: upstream's
            ``calc_state``, float32 in [-5, 5]; action in joint order) or ``"v5"``
            (gymnasium v5's observation of the same robot from the PyBullet state, float64,
            unbounded, see :meth:`_v5_state`; action in v5's actuator order, which for the
            ant is ``hip_4, ankle_4, hip_1, ankle_1, ..., ankle_3`` and is permuted to the
            joint order here). Reward and termination stay upstream's.
        reward_mode: only ``"state"`` (upstream's reward), accepted for parity with the
            MuJoCo backend.
        width, height: frame size in pixels (1..4096).
        render_mode: None or ``"rgb_array"`` (``render()`` returns the current frame).
        frame_skip: physics sub-steps per ``step()`` of 0.0165 / 4 s each (4: upstream's).

    Raises:
        ValueError: on an unknown robot, perturbation key (listing the valid ones), a
            factor that is not a positive finite number, a bad range or option value.

    ``info`` at reset and every step: ``perturbation`` (every key -> factor),
    ``body_mass`` (MJCF body name -> kg, as loaded), ``reward_alive``, ``reward_progress``,
    ``reward_electricity``, ``reward_joints_at_limit``, ``reward_feet_collision`` (0.0 at
    reset), ``x_position`` (torso x, m).
    """

    # an instance attribute on gym.Env (each env sets its own render_fps from dt)
    metadata: dict[str, Any] = {"render_modes": ["rgb_array"], "render_fps": 61}

    def __init__(
        self,
        robot: str,
        *,
        perturbation: Mapping[str, float] | None = None,
        randomize=None,
        scale_healthy_z: bool = True,
        obs_mode: str = "state",
        obs_layout: str | None = None,
        reward_mode: str = "state",
        width: int = 64,
        height: int = 64,
        render_mode: str | None = None,
        frame_skip: int = 4,
    ) -> None:
        EzPickle.__init__(
            self,
            robot,
            perturbation=perturbation,
            randomize=randomize,
            scale_healthy_z=scale_healthy_z,
            obs_mode=obs_mode,
            obs_layout=obs_layout,
            reward_mode=reward_mode,
            width=width,
            height=height,
            render_mode=render_mode,
            frame_skip=frame_skip,
        )
        check_choice("robot", robot, tuple(BULLET_ROBOTS))
        self.obs_mode = check_choice("obs_mode", obs_mode, _OBS_MODES)
        self.obs_layout = check_obs_layout(obs_layout, "roboschool")
        self.reward_mode = check_choice("reward_mode", reward_mode, ("state",))
        self.render_mode = check_choice("render_mode", render_mode, (None, "rgb_array"))
        self.width = check_int("width", width, minimum=1, maximum=_MAX_IMAGE_SIZE)
        self.height = check_int("height", height, minimum=1, maximum=_MAX_IMAGE_SIZE)
        self.frame_skip = check_int("frame_skip", frame_skip, minimum=1)
        self.scale_healthy_z = bool(scale_healthy_z)

        self.robot: BulletRobot = BULLET_ROBOTS[robot]
        self.morphology: RobotMorphology = ROBOTS[robot]
        self._fixed = parse_perturbation(self.morphology, perturbation)
        self._ranges = None if randomize is None else parse_ranges(self.morphology, randomize)
        self._scales = dict(self._fixed)

        self.xml_path = BULLET_ASSETS_DIR / self.robot.xml_file
        self._nominal_xml = self.xml_path.read_text()
        self._nominal_geom_masses = geom_masses(self._nominal_xml)
        self._body_geoms = _body_geoms(self._nominal_xml)
        self._mjcf_damping = _joint_damping(self._nominal_xml)

        #: Seconds of simulated time per ``step()`` (scene ``dt``: timestep * frame_skip).
        self.timestep = _TIMESTEP
        self.dt = self.timestep * self.frame_skip
        self.metadata = {"render_modes": ["rgb_array"], "render_fps": int(round(1.0 / self.dt))}

        high = np.ones(self.robot.action_dim, dtype=np.float32)
        self.action_space = spaces.Box(-high, high, dtype=np.float32)
        state: spaces.Box
        if self.obs_layout == "roboschool":
            # calc_state clips to [-5, 5] (upstream declares -inf..inf)
            state = spaces.Box(-5.0, 5.0, shape=(self.robot.obs_dim,), dtype=np.float32)
            self._action_perm = None
        else:
            state = spaces.Box(-np.inf, np.inf, shape=(_V5_DIMS[robot],), dtype=np.float64)
            # action in v5 actuator order -> joint (Roboschool) order
            self._action_perm = action_permutation(robot, "v5", "roboschool")
        pixels = spaces.Box(0, 255, shape=(self.height, self.width, 3), dtype=np.uint8)
        if self.obs_mode == "state":
            self.observation_space = state
        elif self.obs_mode == "pixels":
            self.observation_space = pixels
        else:
            self.observation_space = spaces.Dict({"state": state, "pixels": pixels})
        self._action_shape = (self.robot.action_dim,)

        # Created on the first reset (as pybullet_envs), so a new env is cheap and picklable.
        self._p: bullet_client.BulletClient | None = None
        self._initial_z: float | None = None  # torso height at reset (set by _calc_state)
        self._loaded_scales: dict[str, float] | None = None
        self._state_id = -1
        self._needs_reset = True
        self._warned_damping = False
        self._frame: np.ndarray | None = None
        self._proj_matrix = None

    @property
    def _client(self) -> bullet_client.BulletClient:
        """The connected PyBullet client (made by the first reset)."""
        client = self._p
        if client is None:
            raise RuntimeError("the PyBullet client is not connected; call reset() first")
        return client

    # -- world construction -------------------------------------------------------------------
    def _scene_parameters(self) -> None:
        """scene_abstract.py ``World.clean_everything`` (gravity x the gravity factor)."""
        p = self._client
        p.setGravity(0, 0, -_GRAVITY * self._scales["gravity"])
        p.setDefaultContactERP(_CONTACT_ERP)
        p.setPhysicsEngineParameter(
            fixedTimeStep=self.timestep * self.frame_skip,
            numSolverIterations=_SOLVER_ITERATIONS,
            numSubSteps=self.frame_skip,
        )

    def _scaled_xml(self) -> tuple[str | None, Mapping[str, float]]:
        """(MJCF text to load, or None for the nominal file; geom masses as scaled)."""
        part_keys = [k for k in self._scales if "." in k]
        if all(self._scales[k] == 1.0 for k in part_keys):
            return None, self._nominal_geom_masses
        root_joints = []
        text = self._nominal_xml
        if self.robot.root_joints_at_origin:
            # morphology.scale_mjcf stretches a body about its first hinge: put the root's
            # pitch hinge at the torso frame (the hips) for scaling, and every root joint
            # back at the world origin (where the original global-coordinate file has them)
            # afterwards.
            tree = ET.fromstring(text)
            torso = self._find_body(tree, self.morphology.root_body)
            for joint in torso.findall("joint"):
                joint.set("pos", "0 0 0")
                root_joints.append(joint.get("name"))
            text = ET.tostring(tree, encoding="unicode")
        scaled = scale_mjcf(text, self.morphology, self._scales)
        text = scaled.xml
        if root_joints:
            tree = ET.fromstring(text)
            torso = self._find_body(tree, self.morphology.root_body)
            pos = np.array([float(v) for v in torso.get("pos", "0 0 0").split()])
            for joint in torso.findall("joint"):
                if joint.get("name") in root_joints:
                    joint.set("pos", " ".join(repr(float(-v)) for v in pos))
            text = ET.tostring(tree, encoding="unicode")
        return text, scaled.geom_masses

    @staticmethod
    def _find_body(tree: ET.Element, name: str) -> ET.Element:
        for body in _worldbody(tree).iter("body"):
            if body.get("name") == name:
                return body
        raise ValueError(f"the MJCF has no body {name!r}")

    def _load_world(self) -> None:
        """Build the scene and robot of the current perturbation (``resetSimulation``)."""
        if self._p is None:
            self._p = _connect()
        p = self._client
        if self._state_id >= 0:
            p.removeState(self._state_id)
            self._state_id = -1
        self._loaded_scales = None
        if self.robot.name not in _NOMINAL:
            p.resetSimulation()
            _nominal_model(p, self.robot.name)
        p.resetSimulation()
        p.setPhysicsEngineParameter(deterministicOverlappingPairs=1)
        self._scene_parameters()

        # scene_stadium.py StadiumScene.episode_restart
        friction_root = math.sqrt(self._scales["friction"])
        ground = p.loadSDF(os.path.join(pybullet_data.getDataPath(), "plane_stadium.sdf"))
        for i in ground:
            p.changeDynamics(
                i,
                -1,
                lateralFriction=_GROUND_FRICTION * friction_root,
                restitution=_GROUND_RESTITUTION,
            )
            p.changeVisualShape(i, -1, rgbaColor=[1, 1, 1, 0.8])

        # robot_bases.py MJCFBasedRobot.reset (loadMJCF with self-collision)
        xml, scaled_masses = self._scaled_xml()
        if xml is None:
            bodies = p.loadMJCF(str(self.xml_path), flags=_LOAD_FLAGS)
        else:
            fd, path = tempfile.mkstemp(prefix="visfore_bullet_", suffix=".xml")
            try:
                with os.fdopen(fd, "w") as f:
                    f.write(xml)
                bodies = p.loadMJCF(path, flags=_LOAD_FLAGS)
            finally:
                os.unlink(path)
        if len(bodies) != 1:
            raise RuntimeError(f"{self.xml_path.name} loaded as {len(bodies)} bodies, not 1")
        self._robot_id = body = bodies[0]
        self._add_robot_to_scene(body)
        # gym_locomotion_envs.py WalkerBaseBulletEnv.reset: the floor joins the parts
        # (addToScene(ground)), so it counts in the mean position of calc_state.
        self._ground_id = ground[0]
        for i in ground:
            name = p.getBodyInfo(i)[0].decode("utf8")
            self._parts[name] = (i, -1)

        self._apply_perturbation(scaled_masses)
        self._cache_part_indices()
        self._state_id = p.saveState()
        self._loaded_scales = dict(self._scales)

    def _add_robot_to_scene(self, body: int) -> None:
        """robot_bases.py ``XmlBasedRobot.addToScene`` for one body: parts (link name ->
        (body, link)) in upstream's order, the robot's own link, the actuated joints."""
        p = self._client
        robot_name = self.robot.robot_name
        parts: dict[str, tuple[int, int]] = {}
        robot_body = None
        joints: list[int] = []
        names: list[str] = []
        limits: list[tuple[float, float]] = []
        for j in range(p.getNumJoints(body)):
            p.setJointMotorControl2(body, j, pybullet.POSITION_CONTROL, positionGain=0.1, velocityGain=0.1, force=0)
            info = p.getJointInfo(body, j)
            joint_name = info[1].decode("utf8")
            part_name = info[12].decode("utf8")
            parts[part_name] = (body, j)
            if part_name == robot_name:
                robot_body = (body, j)
            if j == 0 and robot_body is None:
                parts[robot_name] = (body, -1)
                robot_body = (body, -1)
            if joint_name[:6] == "ignore":
                self._disable_motor(body, j)
                continue
            if joint_name[:8] != "jointfix":
                joints.append(j)
                names.append(joint_name)
                limits.append((info[8], info[9]))
        if robot_body is None:  # no joints: the base is the robot's part (as upstream)
            robot_body = parts.setdefault(robot_name, (body, -1))
        self._parts = parts
        self._robot_body = robot_body
        self._joint_ids = joints
        self.joint_names = tuple(names)
        lower = np.array([lo for lo, _ in limits], dtype=np.float64)
        upper = np.array([hi for _, hi in limits], dtype=np.float64)
        self._joint_mid = 0.5 * (lower + upper)
        self._joint_span = upper - lower
        coefs = [self.robot.power_coefs.get(n, _DEFAULT_POWER_COEF) for n in names]
        self._power_coefs = np.array(coefs, dtype=np.float64)
        links = _link_indices(p, body)
        self._foot_links = [links[f] for f in self.robot.foot_list]
        self._links = links
        if len(joints) != self.robot.action_dim:
            raise RuntimeError(f"{self.xml_path.name} has {len(joints)} actuated joints, not {self.robot.action_dim}")

    def _disable_motor(self, body: int, joint: int) -> None:
        """robot_bases.py ``Joint.disable_motor``."""
        self._client.setJointMotorControl2(
            body,
            joint,
            controlMode=pybullet.POSITION_CONTROL,
            targetPosition=0,
            targetVelocity=0,
            positionGain=0.1,
            velocityGain=0.1,
            force=0,
        )

    def _apply_perturbation(self, scaled_masses: Mapping[str, float]) -> None:
        """Masses, friction and joint damping of the loaded robot; body masses for info."""
        p, body, s = self._client, self._robot_id, self._scales
        nominal_mass, nominal_z = _nominal_model(p, self.robot.name)
        body_mass: dict[str, float] = {}
        for name, geoms in self._body_geoms.items():
            link = self._links.get(name)
            if link is None or not geoms:
                continue
            old = sum(self._nominal_geom_masses[g] for g in geoms)
            new = sum(scaled_masses[g] for g in geoms)
            info = p.getDynamicsInfo(body, link)
            loaded = float(info[0])
            target = nominal_mass[name] * (new / old) if old > 0 else loaded
            if abs(target - loaded) > 1e-6 * max(target, 1e-12):
                ratio = target / loaded
                p.changeDynamics(
                    body,
                    link,
                    mass=target,
                    localInertiaDiagonal=[float(v) * ratio for v in info[2]],
                )
            body_mass[name] = float(p.getDynamicsInfo(body, link)[0])
        self._body_mass = body_mass

        if s["friction"] != 1.0:
            root = math.sqrt(s["friction"])
            for link in [-1, *range(p.getNumJoints(body))]:
                friction = p.getDynamicsInfo(body, link)[1]
                p.changeDynamics(body, link, lateralFriction=friction * root)
        damping = s["joint_damping"]
        if damping != 1.0:
            if damping < 1.0 and not self._warned_damping:
                gym.logger.warn(
                    f"joint_damping={damping}: the PyBullet backend runs undamped at nominal "
                    "(as pybullet_envs) and cannot lower the damping; joint_damping < 1 "
                    "leaves it at zero"
                )
                self._warned_damping = True
            extra = max(0.0, damping - 1.0)
            for j, name in zip(self._joint_ids, self.joint_names):
                p.changeDynamics(body, j, jointDamping=extra * self._mjcf_damping.get(name, 0.0))

        # Torso height at the initial pose (before the joint noise) over the nominal one.
        z = self._position(self._robot_body)[2]
        self.height_ratio = float(z / nominal_z) if nominal_z > 0 else 1.0
        self._z_scale = self.height_ratio if self.scale_healthy_z else 1.0
        self._power = self.robot.power * s["actuator_gear"]

    def _cache_part_indices(self) -> None:
        parts = list(self._parts.values())
        self._part_links = [link for b, link in parts if b == self._robot_id and link >= 0]
        # where each part's position comes from: ("link", k) -> k-th of getLinkStates,
        # ("base", body) -> getBasePositionAndOrientation(body)
        self._part_sources = []
        k = 0
        for b, link in parts:
            if b == self._robot_id and link >= 0:
                self._part_sources.append((True, k))
                k += 1
            else:
                self._part_sources.append((False, b))

    # -- reading the world ----------------------------------------------------------------
    def _position(self, part: tuple[int, int]):
        body, link = part
        if link == -1:
            return self._client.getBasePositionAndOrientation(body)[0]
        return self._client.getLinkState(body, link)[0]

    def _calc_state(self) -> np.ndarray:
        """robot_locomotors.py ``WalkerBase.calc_state`` (same arithmetic, same order)."""
        p, body = self._client, self._robot_id
        states = p.getJointStates(body, self._joint_ids)
        pos = np.array([s[0] for s in states], dtype=np.float64)
        vel = np.array([s[1] for s in states], dtype=np.float64)
        rel = np.empty(2 * len(states), dtype=np.float64)
        rel[0::2] = 2 * (pos - self._joint_mid) / self._joint_span
        rel[1::2] = 0.1 * vel
        j = rel.astype(np.float32)
        # even elements [0::2] position, scaled to -1..+1 between limits
        # odd elements  [1::2] angular speed, scaled to show -1..+1
        self._joint_speeds = j[1::2]
        self._joints_at_limit = np.count_nonzero(np.abs(j[0::2]) > 0.99)

        link_states = p.getLinkStates(body, self._part_links) if self._part_links else []
        xyz = []
        for from_link, src in self._part_sources:
            if from_link:
                xyz.append(link_states[src][0])
            else:
                xyz.append(p.getBasePositionAndOrientation(src)[0])
        parts_xyz = np.array(xyz).flatten()

        rb_body, rb_link = self._robot_body
        if rb_link == -1:
            body_pos, body_orn = p.getBasePositionAndOrientation(rb_body)
            speed = p.getBaseVelocity(rb_body)[0]
        else:
            state = p.getLinkState(rb_body, rb_link, computeLinkVelocity=1)
            body_pos, body_orn, speed = state[0], state[1], state[6]
        body_real_xyz = np.array(body_pos)
        self.body_xyz = (parts_xyz[0::3].mean(), parts_xyz[1::3].mean(), body_real_xyz[2])
        # torso z is more informative than mean z
        self.body_real_xyz = body_real_xyz
        self.body_rpy = pybullet.getEulerFromQuaternion(body_orn)
        z = self.body_xyz[2]
        initial_z = self._initial_z
        if initial_z is None:
            initial_z = self._initial_z = z
        r, pitch, yaw = self.body_rpy
        walk_target_theta = np.arctan2(_WALK_TARGET_Y - self.body_xyz[1], _WALK_TARGET_X - self.body_xyz[0])
        self._walk_target_dist = np.linalg.norm([_WALK_TARGET_Y - self.body_xyz[1], _WALK_TARGET_X - self.body_xyz[0]])
        angle_to_target = walk_target_theta - yaw
        rot_speed = np.array(
            [
                [np.cos(-yaw), -np.sin(-yaw), 0],
                [np.sin(-yaw), np.cos(-yaw), 0],
                [0, 0, 1],
            ]
        )
        # rotate speed back to body point of view
        vx, vy, vz = np.dot(rot_speed, np.array([speed[0], speed[1], speed[2]]))
        more = np.array(
            [
                z - initial_z,
                np.sin(angle_to_target),
                np.cos(angle_to_target),
                0.3 * vx,
                0.3 * vy,
                0.3 * vz,  # 0.3 is just scaling typical speed into -1..+1
                r,
                pitch,
            ],
            dtype=np.float32,
        )
        return np.clip(np.concatenate([more] + [j] + [self._feet_contact]), -5, +5)

    def _v5_state(self) -> np.ndarray:
        """gymnasium v5's observation of the robot from the PyBullet state, float64.

        * hopper (11), walker2d (17), half_cheetah (17): ``[z, pitch, joint angles]`` then
          ``[vx, vz, pitch rate, joint speeds]`` (the second half clipped to [-10, 10] for
          hopper and walker2d, as v5). ``z``: the torso point's height as v5's ``rootz``
          reads it (m; absolute for hopper/walker2d, minus the 0.7 m initial height for the
          half cheetah, see :data:`~visfore_envs.locomotion.V5_ROOTZ_OFFSET`); pitch: the
          torso's rotation about +y (``rooty``) in (-pi, pi] (v5's hinge is not wrapped,
          so they agree modulo 2 pi); vx, vz (m/s), pitch rate (rad/s) of the torso link;
          joints in MJCF order (= v5's qpos order, same axes and signs), rad and rad/s.
        * ant (105): ``qpos[2:]``: torso z (m), quaternion (w, x, y, z), 8 joint angles;
          ``qvel``: torso linear velocity (world frame, m/s), angular velocity in the torso
          frame (rad/s, as MuJoCo's free joint), 8 joint speeds; then v5's 78 clipped
          contact forces ``cfrc_ext[1:]``, which are all **zeros** here: PyBullet has no
          ``cfrc_ext`` (per-body external contact wrenches).

        The torso point is PyBullet's torso link position, which at nominal scale sits
        where the MuJoCo torso frame does (1.25 m hopper/walker2d, 0.7 m cheetah, 0.75 m
        ant); its velocity is the link's linear velocity.
        """
        p, body = self._client, self._robot_id
        states = p.getJointStates(body, self._joint_ids)
        qj = np.array([s[0] for s in states], dtype=np.float64)
        vj = np.array([s[1] for s in states], dtype=np.float64)
        rb_body, rb_link = self._robot_body
        if rb_link == -1:
            pos, orn = p.getBasePositionAndOrientation(rb_body)
            lin, ang = p.getBaseVelocity(rb_body)
        else:
            st = p.getLinkState(rb_body, rb_link, computeLinkVelocity=1)
            pos, orn, lin, ang = st[0], st[1], st[6], st[7]
        if self.robot.name == "ant":
            x, y, z, w = orn
            rot = np.array(p.getMatrixFromQuaternion(orn), dtype=np.float64).reshape(3, 3)
            ang_local = rot.T @ np.asarray(ang, dtype=np.float64)
            return np.concatenate(
                (
                    [pos[2], w, x, y, z],
                    qj,
                    np.asarray(lin, dtype=np.float64),
                    ang_local,
                    vj,
                    np.zeros(78),
                )
            )
        rot = np.array(p.getMatrixFromQuaternion(orn), dtype=np.float64).reshape(3, 3)
        pitch = math.atan2(rot[0, 2], rot[0, 0])  # R_y(theta) = [[c, 0, s], [0, 1, 0], ...]
        position = np.concatenate(([pos[2] + V5_ROOTZ_OFFSET[self.robot.name], pitch], qj))
        velocity = np.concatenate(([lin[0], lin[2], ang[1]], vj))
        if self.robot.name != "half_cheetah":
            velocity = np.clip(velocity, -10, 10)
        return np.concatenate((position, velocity))

    def _layout_state(self) -> np.ndarray:
        """The state vector in :attr:`obs_layout` (a new array)."""
        if self.obs_layout == "v5":
            return self._v5_state()
        return self._state.copy()

    def _calc_potential(self) -> float:
        """``WalkerBase.calc_potential``: -distance to the target / dt."""
        return float(-self._walk_target_dist / self.dt)

    # -- gymnasium API ----------------------------------------------------------------------
    @property
    def perturbation(self) -> dict[str, float]:
        """The factors in effect (every key), a copy."""
        return dict(self._scales)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Start an episode: draw a perturbation (with ``randomize``), rebuild the world if
        it changed (else restore the saved initial state), then upstream's reset.

        Returns ``(observation, info)``.
        """
        super().reset(seed=seed)
        if self._ranges is not None:
            drawn = sample_perturbation(self.morphology, self._ranges, self.np_random)
            self._scales = {k: drawn[k] if k in self._ranges else self._fixed[k] for k in self._fixed}
        if self._p is None or self._loaded_scales != self._scales:
            self._load_world()
        else:
            self._p.restoreState(self._state_id)
            self._scene_parameters()
        p, body = self._client, self._robot_id
        # robot_locomotors.py WalkerBase.robot_specific_reset
        for j in self._joint_ids:
            p.resetJointState(body, j, targetValue=self.np_random.uniform(low=-0.1, high=0.1), targetVelocity=0)
            self._disable_motor(body, j)
        self._feet_contact = np.array([0.0 for _ in self.robot.foot_list], dtype=np.float32)
        self._initial_z = None
        state = self._calc_state()
        self._potential = self._calc_potential()
        self._state = state
        self._frame = None
        self._needs_reset = False
        info = self._info(0.0, 0.0, 0.0, 0.0, 0.0)
        return self._observation(), info

    def step(self, action):
        """Apply ``action`` (clipped to [-1, 1]) as torques for ``dt`` and score the step.

        Returns ``(observation, reward, terminated, False, info)``.

        Raises:
            ValueError: on a wrong action shape or non-finite values.
            RuntimeError: if called before ``reset()``.
        """
        if self._needs_reset or self._p is None:
            raise RuntimeError("call reset() before step()")
        a = np.asarray(action)
        if a.shape != self._action_shape:
            raise ValueError(f"action shape {a.shape} is not the action space shape {self._action_shape}")
        if not np.isfinite(a).all():
            raise ValueError(f"action {a!r} is not finite")
        if self._action_perm is not None:
            a = a[self._action_perm]  # v5 actuator order -> joint order
        p, body = self._client, self._robot_id
        # WalkerBase.apply_action then scene.global_step
        torques = [self._power * coef * float(np.clip(a[n], -1, +1)) for n, coef in enumerate(self._power_coefs)]
        p.setJointMotorControlArray(body, self._joint_ids, pybullet.TORQUE_CONTROL, forces=torques)
        p.stepSimulation()
        self._frame = None

        state = self._calc_state()  # also calculates self._joints_at_limit
        initial_z = self._initial_z
        assert initial_z is not None  # set by _calc_state
        # state[0] is body height above ground, body_rpy[1] is pitch
        alive = float(self.robot.alive_bonus(state[0] + initial_z, self.body_rpy[1], self._feet_contact, self._z_scale))
        done = alive < 0 if self.robot.terminates else False
        if not np.isfinite(state).all():
            done = True

        potential_old = self._potential
        self._potential = self._calc_potential()
        progress = float(self._potential - potential_old)

        feet_collision_cost = 0.0
        touching = {c[3] for c in p.getContactPoints(bodyA=body, bodyB=self._ground_id)}
        for i, link in enumerate(self._foot_links):
            self._feet_contact[i] = 1.0 if link in touching else 0.0

        # let's assume we have DC motor with controller, and reverse current braking
        electricity_cost = _ELECTRICITY_COST * float(np.abs(a * self._joint_speeds).mean())
        electricity_cost += _STALL_TORQUE_COST * float(np.square(a).mean())
        joints_at_limit_cost = float(_JOINTS_AT_LIMIT_COST * self._joints_at_limit)

        rewards = [alive, progress, electricity_cost, joints_at_limit_cost, feet_collision_cost]
        reward = sum(rewards)
        self._state = state
        info = self._info(alive, progress, electricity_cost, joints_at_limit_cost, 0.0)
        return self._observation(), reward, bool(done), False, info

    def _info(self, alive, progress, electricity, at_limit, collision) -> dict[str, Any]:
        return {
            "perturbation": dict(self._scales),
            "body_mass": dict(self._body_mass),
            "reward_alive": alive,
            "reward_progress": progress,
            "reward_electricity": electricity,
            "reward_joints_at_limit": at_limit,
            "reward_feet_collision": collision,
            "x_position": float(self.body_real_xyz[0]),
        }

    # -- pixels -----------------------------------------------------------------------------
    def _observation(self):
        if self.obs_mode == "state":
            return self._layout_state()
        if self.obs_mode == "pixels":
            return self._current_frame().copy()
        return {"state": self._layout_state(), "pixels": self._current_frame().copy()}

    def _current_frame(self) -> np.ndarray:
        """The frame of the current state (rendered at most once per state)."""
        if self._frame is None:
            self._frame = self._render_frame()
        return self._frame

    def _render_frame(self) -> np.ndarray:
        """env_bases.py ``render("rgb_array")``: a camera at the robot class's distance,
        yaw and pitch looking at the torso, FOV 60, TinyRenderer."""
        p = self._client
        view = p.computeViewMatrixFromYawPitchRoll(
            cameraTargetPosition=[float(v) for v in self.body_real_xyz],
            distance=self.robot.camera_distance,
            yaw=self.robot.camera_yaw,
            pitch=self.robot.camera_pitch,
            roll=0,
            upAxisIndex=2,
        )
        if self._proj_matrix is None:
            self._proj_matrix = p.computeProjectionMatrixFOV(
                fov=60, aspect=float(self.width) / self.height, nearVal=0.1, farVal=100.0
            )
        _, _, px, _, _ = p.getCameraImage(
            width=self.width,
            height=self.height,
            viewMatrix=view,
            projectionMatrix=self._proj_matrix,
            renderer=pybullet.ER_TINY_RENDERER,
            flags=pybullet.ER_NO_SEGMENTATION_MASK,
        )
        rgba = np.asarray(px, dtype=np.uint8).reshape(self.height, self.width, -1)
        return np.ascontiguousarray(rgba[:, :, :3])

    def render(self) -> np.ndarray | None:
        """The current frame, (height, width, 3) uint8, with ``render_mode="rgb_array"``."""
        if self.render_mode is None:
            gym.logger.warn(
                "render() was called without a render_mode; pass render_mode='rgb_array' "
                "to the constructor (gym.make(..., render_mode='rgb_array'))."
            )
            return None
        if self._p is None:
            raise RuntimeError("call reset() before render()")
        return self._current_frame().copy()

    def close(self) -> None:
        """Disconnect the PyBullet client (idempotent); a later reset() reconnects."""
        if self._p is not None:
            try:
                self._p.disconnect()
            except pybullet.error:
                pass
        self._p = None
        self._loaded_scales = None
        self._state_id = -1
        self._needs_reset = True
        self._frame = None
        self._proj_matrix = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


def _check_options(cls: type, kwargs: Mapping[str, Any]) -> None:
    """Refuse unknown keywords as the MuJoCo ids do (ValueError, not Python's TypeError).

    Raises:
        ValueError: naming the first unknown keyword and listing the valid ones.
    """
    params = inspect.signature(BulletLocomotionEnv.__init__).parameters
    valid = sorted(n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY)
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown option {unknown[0]!r} for {cls.__name__}; valid options: " + ", ".join([*valid, "backend"])
        )


class BulletHopperEnv(BulletLocomotionEnv):
    """PyBullet Hopper (``PerturbHopperBullet-v0``): pybullet_envs' HopperBulletEnv.

    Observation 15 floats, action 3 (thigh, leg, foot; power 0.75 x 100); alive while the
    torso is above 0.8 m (x height ratio) and ``|pitch|`` < 1 rad, else the episode ends.
    Parts: torso, thigh, leg, foot. See :class:`BulletLocomotionEnv` for the arguments.
    """

    def __init__(self, **kwargs) -> None:
        _check_options(type(self), kwargs)
        BulletLocomotionEnv.__init__(self, "hopper", **kwargs)
        EzPickle.__init__(self, **kwargs)


class BulletWalker2dEnv(BulletLocomotionEnv):
    """PyBullet Walker2d (``PerturbWalker2dBullet-v0``): pybullet_envs' Walker2DBulletEnv.

    Observation 22 floats, action 6 (power 0.40 x 100, feet x 30); alive while the torso
    is above 0.8 m (x height ratio) and ``|pitch|`` < 1 rad. Parts: torso, thigh, leg, foot
    (both legs). See :class:`BulletLocomotionEnv` for the arguments.
    """

    def __init__(self, **kwargs) -> None:
        _check_options(type(self), kwargs)
        BulletLocomotionEnv.__init__(self, "walker2d", **kwargs)
        EzPickle.__init__(self, **kwargs)


class BulletAntEnv(BulletLocomotionEnv):
    """PyBullet Ant (``PerturbAntBullet-v0``): pybullet_envs' AntBulletEnv.

    Observation 28 floats, action 8 (hips and ankles in joint order, power 2.5 x 100);
    alive while the torso is above 0.26 m (x height ratio). Parts: torso (width, mass),
    hip, thigh, shin (all four legs). See :class:`BulletLocomotionEnv` for the arguments.
    """

    def __init__(self, **kwargs) -> None:
        _check_options(type(self), kwargs)
        BulletLocomotionEnv.__init__(self, "ant", **kwargs)
        EzPickle.__init__(self, **kwargs)


class BulletHalfCheetahEnv(BulletLocomotionEnv):
    """PyBullet HalfCheetah (``PerturbHalfCheetahBullet-v0``): pybullet_envs'
    HalfCheetahBulletEnv.

    Observation 26 floats (6 contacts: ffoot, fshin, fthigh, bfoot, bshin, bthigh), action
    6 (power 0.90 x 120/90/60/140/60/30); alive (+1) while ``|pitch|`` < 1 rad and no shin or
    thigh touches the ground, else -1; never terminates. Parts: torso, bthigh, bshin,
    bfoot, fthigh, fshin, ffoot. See :class:`BulletLocomotionEnv` for the arguments.
    """

    def __init__(self, **kwargs) -> None:
        _check_options(type(self), kwargs)
        BulletLocomotionEnv.__init__(self, "half_cheetah", **kwargs)
        EzPickle.__init__(self, **kwargs)
