"""Base class of every visfore MuJoCo environment: model, simulation, observation modes,
reward-mode bookkeeping and fast lazy rendering.

Robot- and task-specific classes (e.g. :class:`visfore_envs.core.KeypointTargetEnv`, and
through it the reachers) subclass :class:`VisforeMujocoEnv` like gymnasium's
``reacher_v5.ReacherEnv`` subclasses ``mujoco_env.MujocoEnv``. Differences from
gymnasium's ``MujocoEnv`` that matter for speed and pixels:

* ``step`` calls ``mj_step(model, data, nstep=frame_skip)`` then ``mj_kinematics`` (so
  positions, key points and frames all match the state after the step), and no
  ``mj_rnePostConstraint`` (no robot here reads contact forces);
* frames come from :class:`visfore_envs.core.rendering.FastRenderer`, created on first
  use, rendered at most once per state (observation, pixel reward and ``render()`` share
  one frame).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium import spaces

from visfore_envs.core.options import check_choice, check_int, check_real, check_vector
from visfore_envs.core.rendering import CameraSpec, FastRenderer, configure_fast_visuals

__all__ = ["OBS_MODES", "REWARD_MODES", "RENDER_MODES", "ASSETS_DIR", "DEFAULT_VIEW", "VisforeMujocoEnv", "parse_views"]

#: Observation modes: a float64 state vector, an RGB frame, or both in a Dict.
OBS_MODES = ("state", "pixels", "state+pixels")
#: Reward modes: from the state, from the pixels, or a weighted sum of both.
REWARD_MODES = ("state", "pixels", "state+pixels")
#: Render modes accepted by the constructor.
RENDER_MODES = (None, "rgb_array")
#: Directory of the bundled MJCF files.
ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets"

_MAX_IMAGE_SIZE = 4096
#: The view name of the env's own camera (the one ``camera``/``camera_*`` or the class
#: default give) in ``views``.
DEFAULT_VIEW = "default"


def parse_views(views: Any, allowed: Sequence[str] | None = None, owner: str = "") -> tuple[str, ...] | None:
    """The view names of a ``views`` option: None, a sequence of names, or one string of
    names joined by ``"+"`` (``"default+side"``, what ``--env-kwargs views=default+side``
    gives).

    Args:
        views: the option value.
        allowed: the valid names (None: any non-empty names).
        owner: who offers them (e.g. the env class name), for the error message.

    Returns:
        None for None, else a non-empty tuple of distinct names, in order.

    Raises:
        ValueError: one line naming the bad value (not a string or sequence of strings,
            empty, a name twice, or a name not in ``allowed``, which it lists).
    """
    if views is None:
        return None
    if isinstance(views, str):
        names: Any = tuple(v.strip() for v in views.split("+"))
    elif isinstance(views, (list, tuple)):
        names = tuple(views)
    else:
        raise ValueError(f"views={views!r} is not None, a sequence of view names or a '+'-joined string of them")
    bad = [v for v in names if not isinstance(v, str) or not v]
    if not names or bad:
        raise ValueError(f"views={views!r} is not a non-empty sequence of view names (strings)")
    if allowed is not None:
        unknown = [v for v in names if v not in allowed]
        if unknown:
            choices = ", ".join(repr(a) for a in allowed)
            whose = f" (the views of {owner})" if owner else ""
            raise ValueError(f"view {unknown[0]!r} of views={views!r} is not one of {choices}{whose}")
    twice = [v for i, v in enumerate(names) if v in names[:i]]
    if twice:
        raise ValueError(f"views={views!r} names view {twice[0]!r} twice")
    return names


# Bound once: the per-step checks call these (module-global lookups are cheaper).
_isfinite = math.isfinite
_square = np.square
_add_reduce = np.add.reduce
_mj_step = mujoco.mj_step
_mj_kinematics = mujoco.mj_kinematics

#: MuJoCo warnings that mean the simulation blew up (MuJoCo then resets ``MjData`` to
#: ``qpos0`` by itself, so the state stays finite but is no longer the episode's).
_INSTABILITY_WARNINGS = tuple(
    int(getattr(mujoco.mjtWarning, name))
    for name in ("mjWARN_BADQPOS", "mjWARN_BADQVEL", "mjWARN_BADQACC", "mjWARN_BADCTRL")
)


class VisforeMujocoEnv(gym.Env):
    """Shared MuJoCo machinery: simulation, spaces, observation modes, rendering.

    Subclasses set :attr:`xml_file` and :attr:`default_camera`, implement
    :meth:`_state_dim` / :meth:`_state_obs`, set ``observation_space`` (e.g. from
    :meth:`_make_observation_space`) once their dimensions are known, and write their own
    ``step``/``reset`` (using :meth:`_simulate`, :meth:`_observation` and
    :meth:`_current_frame`). Pickling is left to the concrete class (``EzPickle``).

    Keyword-only and validated: a bad value raises ``ValueError`` naming it.

    Keyword Args:
        obs_mode: ``"state"`` (Box float64 (S,)), ``"pixels"`` (Box uint8 (height, width, 3);
            with ``views`` (height, len(views) * width, 3)),
            or ``"state+pixels"`` (Dict ``{"state", "pixels"}``).
        reward_mode: ``"state"``, ``"pixels"`` or ``"state+pixels"`` (interpreted by subclasses).
        width, height: frame size in pixels, integers in [1, 4096].
        camera: name of a camera in the model; or None for the free camera given by
            ``camera_distance`` (metres, > 0), ``camera_azimuth`` and ``camera_elevation``
            (degrees) and ``camera_lookat`` (3 numbers, metres); each None takes the class
            default (:attr:`default_camera`). Free-camera values cannot be combined with a name.
        views: None (default): one view, the camera above, frames (height, width, 3).
            Or view names (a sequence, or one string joined by ``"+"``:
            ``"default+side"``), from :meth:`view_names`: ``"default"`` (the camera above)
            and the class's :attr:`named_views`. Each view is rendered at ``width`` x
            ``height`` by the one renderer (switching cameras) and the views are put side
            by side, left to right: frames, pixel observations and ``render()`` are uint8
            (height, len(views) * width, 3). ``views=("default",)`` gives exactly the
            frames of ``views=None``. A bad name: ValueError naming it and listing the
            valid ones; ``len(views) * width`` must be <= 4096.
        render_mode: None or ``"rgb_array"`` (``render()`` returns the (height, frame width, 3)
            uint8 frame, the same image as the pixel observation).
        frame_skip: MuJoCo steps per ``step()``, integer >= 1; ``dt = timestep * frame_skip``.
        ctrl_cost_weight, state_reward_weight, pixel_reward_weight: finite numbers >= 0.
    """

    # an instance attribute on gym.Env (each env sets its own render_fps from dt)
    metadata: dict[str, Any] = {"render_modes": ["rgb_array"], "render_fps": 50}

    #: MJCF file: a name in ``visfore_envs/assets`` or an absolute path.
    xml_file: ClassVar[str] = ""
    #: Free camera used when no camera options are given.
    default_camera: ClassVar[CameraSpec] = CameraSpec()
    #: Geom groups drawn by the renderer.
    render_geom_groups: ClassVar[tuple[int, ...]] = (0, 1, 2)
    #: Named free cameras of the ``views`` option, besides ``"default"``.
    named_views: ClassVar[Mapping[str, CameraSpec]] = {}

    def __init__(
        self,
        *,
        obs_mode: str = "state",
        reward_mode: str = "state",
        width: int = 64,
        height: int = 64,
        camera: str | None = None,
        camera_distance: float | None = None,
        camera_azimuth: float | None = None,
        camera_elevation: float | None = None,
        camera_lookat: tuple[float, float, float] | None = None,
        views: Sequence[str] | str | None = None,
        render_mode: str | None = None,
        frame_skip: int = 2,
        ctrl_cost_weight: float = 1.0,
        state_reward_weight: float = 1.0,
        pixel_reward_weight: float = 1.0,
    ) -> None:
        self.obs_mode = check_choice("obs_mode", obs_mode, OBS_MODES)
        self.reward_mode = check_choice("reward_mode", reward_mode, REWARD_MODES)
        self.render_mode = check_choice("render_mode", render_mode, RENDER_MODES)
        self.width = check_int("width", width, minimum=1, maximum=_MAX_IMAGE_SIZE)
        self.height = check_int("height", height, minimum=1, maximum=_MAX_IMAGE_SIZE)
        self.frame_skip = check_int("frame_skip", frame_skip, minimum=1)
        self.ctrl_cost_weight = check_real("ctrl_cost_weight", ctrl_cost_weight, minimum=0.0)
        self.state_reward_weight = check_real("state_reward_weight", state_reward_weight, minimum=0.0)
        self.pixel_reward_weight = check_real("pixel_reward_weight", pixel_reward_weight, minimum=0.0)
        camera_spec = self._camera_spec(camera, camera_distance, camera_azimuth, camera_elevation, camera_lookat)
        #: The view names (a tuple), or None for the one camera of ``views=None``.
        self.views = parse_views(views, self.view_names(), type(self).__name__)
        view_cameras = (camera_spec,) if self.views is None else self._view_cameras(self.views, camera_spec, camera)
        #: Number of views side by side in a frame (1 for ``views=None``).
        self.n_views = len(view_cameras)
        #: Width of a whole frame in pixels: ``n_views * width``.
        self.frame_width = self.n_views * self.width
        if self.frame_width > _MAX_IMAGE_SIZE:
            raise ValueError(
                f"views={views!r} with width={self.width} makes frames {self.frame_width} pixels wide "
                f"(more than {_MAX_IMAGE_SIZE})"
            )

        #: Physics model and data (what ``step`` simulates).
        self.model = self._load_model()
        self.data = mujoco.MjData(self.model)
        mujoco.mj_forward(self.model, self.data)
        #: Rendering model: the physics model, or a copy with extra visual-only bodies
        #: (same nq and ids); frames are drawn from ``scene_data`` posed from ``data.qpos``.
        self.scene_model = self._load_scene_model()
        configure_fast_visuals(self.scene_model, self.width, self.height)
        if self.scene_model is self.model:
            self.scene_data = self.data
        else:
            self.scene_data = mujoco.MjData(self.scene_model)
        self.init_qpos = self.data.qpos.copy()
        self.init_qvel = self.data.qvel.copy()
        # Views into MjData's buffers (they never move); reused on every step.
        self._bind_data_views()

        low, high = self.model.actuator_ctrlrange.astype(np.float32).T
        self.action_space = spaces.Box(low=low, high=high, dtype=np.float32)
        self._action_shape = (self.model.nu,)
        #: Number of actuators (length of an action).
        self.action_dim = int(self.model.nu)

        self._obs_id = OBS_MODES.index(self.obs_mode)
        self._reward_uses_state = self.reward_mode in ("state", "state+pixels")
        self._reward_uses_pixels = self.reward_mode in ("pixels", "state+pixels")
        self._renderer = FastRenderer(self.scene_model, self.width, self.height, view_cameras, self.render_geom_groups)
        self._frame: np.ndarray | None = None
        self._render_copy: np.ndarray | None = None
        self.metadata = {
            "render_modes": ["rgb_array"],
            "render_fps": int(np.round(1.0 / self.dt)),
        }

    def _bind_data_views(self) -> None:
        """Cache views into ``self.data`` (call again after replacing ``self.data``)."""
        self._ctrl = self.data.ctrl
        self._qpos = self.data.qpos
        self._qvel = self.data.qvel
        self._warning_counts = self.data.warning.number  # (mjNWARNING,) int32, live view
        # The same counters read as Python ints (indexing a memoryview is ~2x cheaper).
        self._warning_view = memoryview(self._warning_counts)

    # -- construction hooks ---------------------------------------------------------------
    @classmethod
    def model_path(cls) -> Path:
        """Absolute path of :attr:`xml_file`."""
        path = Path(cls.xml_file)
        return path if path.is_absolute() else ASSETS_DIR / path

    def _load_model(self) -> mujoco.MjModel:
        """Compile the physics model from :attr:`xml_file`."""
        return mujoco.MjModel.from_xml_path(str(self.model_path()))

    def _load_scene_model(self) -> mujoco.MjModel:
        """The model frames are rendered from (default: the physics model itself).

        Override to add visual-only bodies (e.g. a target ghost); the result must have the
        physics model's ``nq`` and body/site ids (append new bodies after the robot's)."""
        return self.model

    def _camera_spec(self, name, distance, azimuth, elevation, lookat) -> CameraSpec:
        free = {
            "camera_distance": distance,
            "camera_azimuth": azimuth,
            "camera_elevation": elevation,
            "camera_lookat": lookat,
        }
        if name is not None:
            if not isinstance(name, str):
                raise ValueError(f"camera={name!r} is not a camera name (str) or None")
            given = [k for k, v in free.items() if v is not None]
            if given:
                raise ValueError(f"{given[0]}={free[given[0]]!r} cannot be combined with camera={name!r}")
            return CameraSpec(name=name)
        d = self.default_camera
        if lookat is not None:
            x, y, z = check_vector("camera_lookat", lookat, 3)
            lookat = (x, y, z)
        return CameraSpec(
            name=None,
            distance=d.distance
            if distance is None
            else check_real("camera_distance", distance, minimum=0.0, strict=True),
            azimuth=d.azimuth if azimuth is None else check_real("camera_azimuth", azimuth),
            elevation=d.elevation if elevation is None else check_real("camera_elevation", elevation),
            lookat=d.lookat if lookat is None else lookat,
        )

    @classmethod
    def view_names(cls) -> tuple[str, ...]:
        """The names the ``views`` option accepts: ``"default"`` and :attr:`named_views`."""
        return (DEFAULT_VIEW, *cls.named_views)

    def _view_cameras(self, views: tuple[str, ...], default: CameraSpec, camera: Any) -> tuple[CameraSpec, ...]:
        """The camera of each view name (validated): ``default`` (the camera options'
        camera) for ``"default"``, else :attr:`named_views`. ``camera`` is the ``camera``
        option as given (subclasses may map views by it)."""
        return tuple(default if v == DEFAULT_VIEW else self.named_views[v] for v in views)

    # -- state observation hooks ------------------------------------------------------------
    def _state_dim(self) -> int:
        """Length of the state observation vector."""
        raise NotImplementedError

    def _state_obs(self) -> np.ndarray:
        """A new float64 state vector of length :meth:`_state_dim`."""
        raise NotImplementedError

    def _make_observation_space(self) -> spaces.Space:
        state = spaces.Box(-np.inf, np.inf, shape=(self._state_dim(),), dtype=np.float64)
        pixels = spaces.Box(0, 255, shape=(self.height, self.frame_width, 3), dtype=np.uint8)
        if self.obs_mode == "state":
            return state
        if self.obs_mode == "pixels":
            return pixels
        return spaces.Dict({"state": state, "pixels": pixels})

    # -- simulation --------------------------------------------------------------------------
    @property
    def dt(self) -> float:
        """Seconds of simulated time per ``step()`` (``timestep * frame_skip``)."""
        return float(self.model.opt.timestep) * self.frame_skip

    def _check_action(self, action) -> None:
        """Refuse an action before anything changes: wrong shape, NaN or infinity.

        Call it first in ``step`` where ``step`` changes state before :meth:`_simulate`
        (which calls it too). MuJoCo would otherwise zero a non-finite control, warn, and
        the reward would be NaN.

        Raises:
            ValueError: naming the action, if its shape is not ``(nu,)`` or it is not finite.
        """
        # Fast path (the state step is ~20 us): a float array of the right shape whose sum
        # (in Python floats, so float32 values cannot overflow) is finite has no NaN or
        # infinity; everything else takes the exact check.
        if (
            type(action) is np.ndarray
            and action.shape == self._action_shape
            and action.dtype.kind == "f"
            and _isfinite(sum(action.tolist()))
        ):
            return
        self._check_action_exact(action)

    def _check_action_exact(self, action) -> None:
        """:meth:`_check_action` without its fast path (any array-like)."""
        if np.shape(action) != self._action_shape:
            raise ValueError(f"action shape {np.shape(action)} is not the action space shape {self._action_shape}")
        if not np.isfinite(action).all():
            raise ValueError(f"action {np.asarray(action)!r} is not finite (NaN or infinity)")

    def _checked_square_sum(self, action) -> Any:
        """:meth:`_check_action`, fused with the control cost's sum of squares: returns
        ``np.sum(np.square(action))`` (the same reduction, so the same bits as gymnasium's
        ``control_cost``; a NumPy scalar of the action's float type).

        Raises:
            ValueError: as :meth:`_check_action` (nothing changes).
        """
        if type(action) is np.ndarray and action.shape == self._action_shape and action.dtype.kind == "f":
            total = _add_reduce(_square(action), axis=None)
            if _isfinite(total):  # NaN and infinity propagate into the sum
                return total
        self._check_action_exact(action)  # raises, unless the squares merely overflowed
        return np.sum(np.square(action))

    def _physics_unstable(self) -> bool:
        """True when MuJoCo flagged a blow-up (bad qpos, qvel, qacc or ctrl) since the last
        reset of ``self.data`` (MuJoCo then resets the data to ``qpos0``)."""
        c = self._warning_view
        q, v, a, u = _INSTABILITY_WARNINGS  # unrolled: this runs on every locomotion step
        return bool(c[q] or c[v] or c[a] or c[u])

    def _simulate(self, action) -> None:
        """Apply ``action`` (shape (nu,)) for ``frame_skip`` MuJoCo steps.

        Raises:
            ValueError: if the action has the wrong shape or is not finite (nothing changes).
        """
        self._check_action(action)
        self._ctrl[:] = action
        model, data = self.model, self.data
        _mj_step(model, data, nstep=self.frame_skip)
        _mj_kinematics(model, data)
        self._frame = None

    def set_state(self, qpos, qvel) -> None:
        """Set joint positions (nq,) and velocities (nv,) and recompute derived quantities.

        Raises:
            ValueError: on a wrong shape.
        """
        qpos = np.asarray(qpos, dtype=np.float64)
        qvel = np.asarray(qvel, dtype=np.float64)
        if qpos.shape != (self.model.nq,) or qvel.shape != (self.model.nv,):
            raise ValueError(
                f"qpos/qvel shapes {qpos.shape}/{qvel.shape} are not {(self.model.nq,)}/{(self.model.nv,)}"
            )
        self._qpos[:] = qpos
        self._qvel[:] = qvel
        mujoco.mj_forward(self.model, self.data)
        self._frame = None

    # -- observations and frames -------------------------------------------------------------
    def _current_frame(self) -> np.ndarray:
        """The frame of the current state, (height, frame_width, 3) uint8 (the views side
        by side), rendered at most once per state. A new array per state that the pixel observation hands to the caller;
        internal readers (pixel rewards) must not modify it and read it before ``step``
        returns."""
        frame = self._frame
        if frame is None:
            frame = self._frame = self._renderer.render(self._posed_scene())
            if self._obs_id and self.render_mode is not None:
                # The observation hands this frame to the caller; render() returns this copy.
                self._render_copy = frame.copy()
        return frame

    def _posed_scene(self) -> mujoco.MjData:
        """``scene_data`` posed at the current ``qpos`` (cameras and lights updated)."""
        sd = self.scene_data
        if sd is not self.data:
            sd.qpos[:] = self._qpos
            mujoco.mj_kinematics(self.scene_model, sd)
        mujoco.mj_camlight(self.scene_model, sd)
        return sd

    def _observation(self):
        """The observation in :attr:`obs_mode` (new arrays)."""
        obs_id = self._obs_id
        if obs_id == 0:
            return self._state_obs()
        if obs_id == 1:
            return self._current_frame()
        return {"state": self._state_obs(), "pixels": self._current_frame()}

    def render(self) -> np.ndarray | None:
        """Return the current frame, (height, frame_width, 3) uint8 (``frame_width =
        n_views * width``, the views side by side), if ``render_mode="rgb_array"``.

        A new array, the same image as the pixel observation, never shared with it (the
        caller may modify either): with pixel observations and a render mode, each new
        frame is copied once when it is drawn and ``render()`` hands out that copy (one
        draw and one copy per step; without a render mode the observation is the drawn
        frame itself, no copy). With ``render_mode=None`` this warns and returns None
        (gymnasium convention).
        """
        if self.render_mode is None:
            gym.logger.warn(
                "render() was called without a render_mode; pass render_mode='rgb_array' "
                "to the constructor (gym.make(..., render_mode='rgb_array'))."
            )
            return None
        if not self._obs_id:
            return self._current_frame().copy()
        self._current_frame()
        out, self._render_copy = self._render_copy, None
        if out is None:  # a second render() of one state: its copy was handed out already
            out = self._renderer.render(self._posed_scene())
        return out

    def close(self) -> None:
        """Free the GL context (if any was made). The env can still step; rendering again
        creates a new context."""
        self._renderer.close()
        self._frame = None
