"""Privileged labels of a dataset's rows: the robot's key points and joint angles.

A visfore dataset stores each row's ``state`` observation next to its frame. The env class
that wrote it decodes that state into joint angles ``q`` (radians) and key points ``k``
(metres) with its ``decode_state`` classmethod
(:meth:`visfore_envs.core.KeypointTargetEnv.decode_state`; the class is found through the
env id's registered entry point, so a new robot brings its own decoding). These are the
labels ``train-translator`` learns to read off frames and that ``train-model --probe
keypoints`` trains a latent model's read-out probe on -- the only use of privileged
(non-pixel) information in the toolkit; anything trained on them is *state-supervised*.

* :func:`env_class_for`, :func:`decode_dataset_states`, :func:`keypoint_names_for`,
  :func:`joint_names_for`: the decoding steps (moved here from
  :mod:`visfore.perception.train_translator`, which uses them unchanged);
* :func:`dataset_state_labels`: every row's labels of an opened dataset as
  :class:`StateLabels`;
* :class:`ProbeLayout`: what each output of a key-point probe is (name, quantity, unit),
  JSON-plain for ``config.yaml`` (:meth:`ProbeLayout.to_dict` / :meth:`ProbeLayout.from_dict`).

Probe vector layout (``P = G + nq (+ nv)``): the ``G`` key-point coordinates first, point
by point (``[p0_x, p0_y(, p0_z), p1_x, ...]``, metres, world frame, the env's
``keypoint_axes``), then the ``nq`` joint angles in ``qpos`` order (radians, in ``[-pi,
pi]`` when the state stores ``cos q, sin q`` as the reachers do), then, for the
``keypoints+velocities`` kind only, the ``nv`` joint velocities (rad/s; the decoded
state's ``qvel``). Velocities make the latent carry the arm's momentum, which a planner
needs to stop on a goal instead of swinging through it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, cast

import numpy as np

from visfore.core.errors import VisforeError
from visfore.data.envs import visfore_env_ids

__all__ = [
    "PROBE_KINDS",
    "DecodableEnvClass",
    "ProbeLayout",
    "StateLabels",
    "dataset_state_labels",
    "decode_dataset_states",
    "env_class_for",
    "joint_names_for",
    "keypoint_names_for",
]

#: Values of ``train-model --probe``: no probe, key points + joint angles, or key points +
#: joint angles + joint velocities.
PROBE_KINDS = ("none", "keypoints", "keypoints+velocities")
_AXIS_NAMES = ("x", "y", "z")


class DecodableEnvClass(Protocol):
    """An env class with a ``decode_state`` classmethod (what :func:`env_class_for` returns;
    ``keypoint_sites``, ``keypoint_axes`` and ``model_path()`` are optional, read with
    ``getattr``)."""

    __name__: str

    def decode_state(self, state: np.ndarray) -> Mapping[str, Any]: ...


def env_class_for(env_id: str) -> DecodableEnvClass:
    """The env class registered for ``env_id`` that has a ``decode_state`` classmethod.

    The class comes from the id's registered entry point
    (``gymnasium.envs.registration.load_env_creator``), so any registered robot class
    that defines ``decode_state(state) -> {"qpos", "keypoints"}`` works.

    Raises:
        VisforeError: the id is not registered, its entry point cannot be imported, or the
            class has no ``decode_state`` (the message lists the ids that have one).
    """
    import gymnasium as gym  # lazy: the data configs import this package at CLI start-up
    from gymnasium.envs.registration import load_env_creator

    visfore_env_ids()  # imports visfore_envs, which registers its ids
    try:
        spec = gym.spec(env_id)
    except Exception:  # gymnasium raises NameNotFound / VersionNotFound / Error subclasses
        raise VisforeError(f"the dataset's env {env_id!r} is not a registered Gymnasium id") from None
    entry = spec.entry_point
    try:
        creator = load_env_creator(entry) if isinstance(entry, str) else entry
    except Exception as exc:
        raise VisforeError(
            f"cannot import the entry point {entry!r} of env {env_id} ({type(exc).__name__}: {exc})".splitlines()[0]
        ) from None
    if not (isinstance(creator, type) and callable(getattr(creator, "decode_state", None))):
        raise VisforeError(
            f"env {env_id} ({entry}) has no decode_state classmethod, so its joint angles and key "
            f"points cannot be read from the dataset's states; decodable ids: {', '.join(_decodable_ids()) or 'none'}"
        )
    return cast(DecodableEnvClass, creator)  # checked above: a class with a callable decode_state


def _decodable_ids() -> list[str]:
    import gymnasium as gym
    from gymnasium.envs.registration import load_env_creator

    ids = []
    for env_id in visfore_env_ids():
        entry = gym.spec(env_id).entry_point
        if not isinstance(entry, str) or not entry.startswith("visfore_envs"):
            continue
        try:
            creator = load_env_creator(entry)
        except Exception:
            continue
        if isinstance(creator, type) and callable(getattr(creator, "decode_state", None)):
            ids.append(env_id)
    return ids


def decode_dataset_states(
    env_cls: DecodableEnvClass, state: np.ndarray, *, env_id: str = ""
) -> tuple[np.ndarray, np.ndarray]:
    """Joint angles and key points of every row: ``env_cls.decode_state(state)``.

    Args:
        env_cls: the env class (:func:`env_class_for`); state: (N, S) float32.

    Returns:
        ``(qpos (N, nq) float32 rad, keypoints (N, G) float32 m)``.

    Raises:
        VisforeError: the class cannot decode states of this width (its ValueError or
            NotImplementedError, one line), or the result is not finite / of bad shape.
    """
    qpos, kp, _ = _decode_rows(env_cls, state, env_id, velocities=False)
    return qpos, kp


def _decode_rows(
    env_cls: DecodableEnvClass, state: np.ndarray, env_id: str, *, velocities: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """One ``decode_state`` pass over every row: ``(qpos (N, nq), keypoints (N, G), qvel
    (N, nv) or None)`` float32, ``qvel`` only when ``velocities`` (rad/s).

    Raises:
        VisforeError: as :func:`decode_dataset_states`, and with ``velocities`` when the
            env's states hold no joint velocities or they are bad.
    """
    try:
        decoded = env_cls.decode_state(state)
    except (ValueError, NotImplementedError) as exc:
        raise VisforeError(
            f"cannot decode the states of env {env_id or env_cls.__name__}: {exc}".splitlines()[0]
        ) from None
    qpos = np.asarray(decoded.get("qpos"), dtype=np.float32)
    kp = np.asarray(decoded.get("keypoints"), dtype=np.float32)
    n = state.shape[0]
    if qpos.ndim != 2 or kp.ndim != 2 or qpos.shape[0] != n or kp.shape[0] != n or 0 in qpos.shape + kp.shape:
        raise VisforeError(
            f"{env_cls.__name__}.decode_state returned qpos {qpos.shape} and keypoints {kp.shape}; "
            f"expected ({n}, nq) and ({n}, G)"
        )
    if not (np.isfinite(qpos).all() and np.isfinite(kp).all()):
        raise VisforeError(f"the dataset's states decode to non-finite joint angles or key points ({env_cls.__name__})")
    if not velocities:
        return qpos, kp, None
    if decoded.get("qvel") is None:
        raise VisforeError(
            f"--probe keypoints+velocities: the states of env {env_id or env_cls.__name__} hold no joint "
            "velocities (its decode_state returns no 'qvel'); use --probe keypoints"
        )
    qvel = np.asarray(decoded["qvel"], dtype=np.float32)
    if qvel.ndim != 2 or qvel.shape[0] != n or not np.isfinite(qvel).all():
        raise VisforeError(f"{env_cls.__name__}.decode_state returned bad or non-finite qvel {qvel.shape}")
    return qpos, kp, qvel


def keypoint_names_for(env_cls: DecodableEnvClass, goal_dim: int) -> tuple[list[str], int]:
    """Key-point names and the axes per key point: ``(names, D)`` with ``G = len(names) * D``.

    Uses the class's ``keypoint_sites`` / ``keypoint_axes`` when they fit ``goal_dim``,
    otherwise ``kp0, kp1, ...`` with D = 3 (or 1 when G is not a multiple of 3).
    """
    sites = tuple(getattr(env_cls, "keypoint_sites", ()) or ())
    axes = tuple(getattr(env_cls, "keypoint_axes", ()) or ())
    if sites and axes and len(sites) * len(axes) == goal_dim:
        return list(sites), len(axes)
    d = 3 if goal_dim % 3 == 0 else 1
    return [f"kp{i}" for i in range(goal_dim // d)], d


def _axis_names_for(env_cls: DecodableEnvClass, axes_per_keypoint: int) -> list[str]:
    """Names of the coordinates of one key point: ``x``, ``y`` (, ``z``) from the class's
    ``keypoint_axes`` when they fit, else ``c0, c1, ...``."""
    axes = tuple(getattr(env_cls, "keypoint_axes", ()) or ())
    if len(axes) == axes_per_keypoint and all(isinstance(a, int) and 0 <= a < 3 for a in axes):
        return [_AXIS_NAMES[a] for a in axes]
    return [f"c{j}" for j in range(axes_per_keypoint)]


def joint_names_for(env_cls: DecodableEnvClass, nq: int) -> list[str]:
    """Joint names in ``qpos`` order from the class's MJCF model (``model_path()``), when
    it has ``nq`` single-coordinate joints; else ``q0, q1, ...``."""
    model_path = getattr(env_cls, "model_path", None)  # optional (see DecodableEnvClass)
    try:
        import mujoco  # lazy: see env_class_for

        if not callable(model_path):
            raise AttributeError("model_path")
        model = mujoco.MjModel.from_xml_path(str(model_path()))
        if model.nq == nq and model.njnt == nq:
            order = np.argsort(model.jnt_qposadr)
            return [mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_JOINT, int(j)) or f"q{j}" for j in order]
    except Exception:  # no model_path, not MuJoCo, unreadable: fall back to numbers
        pass
    return [f"q{i}" for i in range(nq)]


# ---------------------------------------------------------------------------------------
# the probe's labels and their layout
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProbeLayout:
    """What each output of a key-point probe is (the layout in the module docstring).

    Attributes:
        kind: ``"keypoints"`` or ``"keypoints+velocities"`` (:data:`PROBE_KINDS`).
        env_id: the env whose states gave the labels.
        keypoint_names: the ``G / D`` key points (e.g. ``("elbow", "fingertip")``).
        axis_names: the ``D`` coordinates of each (e.g. ``("x", "y")``), metres.
        joint_names: the ``nq`` joints, radians.
        velocity_names: the ``nv`` joint velocities, rad/s (empty for ``"keypoints"``).
    """

    kind: str
    env_id: str
    keypoint_names: tuple[str, ...]
    axis_names: tuple[str, ...]
    joint_names: tuple[str, ...]
    velocity_names: tuple[str, ...] = ()

    @property
    def axes_per_keypoint(self) -> int:
        """``D``, coordinates per key point."""
        return len(self.axis_names)

    @property
    def keypoint_coords(self) -> int:
        """``G``, the key-point coordinates (the first ``G`` outputs)."""
        return len(self.keypoint_names) * len(self.axis_names)

    @property
    def num_joints(self) -> int:
        """``nq``, the joint angles (the last ``nq`` outputs)."""
        return len(self.joint_names)

    @property
    def num_velocities(self) -> int:
        """``nv``, the joint velocities (the last ``nv`` outputs; 0 without them)."""
        return len(self.velocity_names)

    @property
    def dim(self) -> int:
        """``P = G + nq + nv``, the probe's output size (the model's ``probe_dim``)."""
        return self.keypoint_coords + self.num_joints + self.num_velocities

    @property
    def keypoint_slice(self) -> slice:
        """The key-point coordinates, metres: ``out[..., keypoint_slice]``."""
        return slice(0, self.keypoint_coords)

    @property
    def joint_slice(self) -> slice:
        """The joint angles, radians: ``out[..., joint_slice]``."""
        return slice(self.keypoint_coords, self.keypoint_coords + self.num_joints)

    @property
    def velocity_slice(self) -> slice:
        """The joint velocities, rad/s: ``out[..., velocity_slice]`` (empty without them)."""
        return slice(self.keypoint_coords + self.num_joints, self.dim)

    def outputs(self) -> list[dict[str, str]]:
        """One entry per output, in order: ``{"name", "quantity", "unit"}`` (``elbow_x``,
        ``keypoint``, ``m``; ``joint0``, ``joint_angle``, ``rad``)."""
        out = [
            {"name": f"{kp}_{ax}", "quantity": "keypoint", "unit": "m"}
            for kp in self.keypoint_names
            for ax in self.axis_names
        ]
        out += [{"name": j, "quantity": "joint_angle", "unit": "rad"} for j in self.joint_names]
        out += [{"name": v, "quantity": "joint_velocity", "unit": "rad/s"} for v in self.velocity_names]
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-plain (``config.yaml``'s ``probe`` section); :meth:`from_dict` reads it back."""
        return {
            "kind": self.kind,
            "env_id": self.env_id,
            "dim": self.dim,
            "keypoint_names": list(self.keypoint_names),
            "axis_names": list(self.axis_names),
            "joint_names": list(self.joint_names),
            "velocity_names": list(self.velocity_names),
            "keypoint_slice": [0, self.keypoint_coords],
            "joint_slice": [self.joint_slice.start, self.joint_slice.stop],
            "velocity_slice": [self.velocity_slice.start, self.velocity_slice.stop],
            "outputs": self.outputs(),
            "note": "state-supervised: the probe is trained on the dataset's states (key points in "
            "metres, joint angles in radians, joint velocities in rad/s when listed); with probe_weight 0 on detached latent features (it "
            "never shapes the latent), above 0 also through the encoder and the predictor",
        }

    @classmethod
    def from_dict(cls, mapping: Mapping[str, Any]) -> ProbeLayout:
        """Inverse of :meth:`to_dict`.

        Raises:
            VisforeError: a missing or malformed entry (one line naming it).
        """
        try:
            layout = cls(
                kind=str(mapping["kind"]),
                env_id=str(mapping["env_id"]),
                keypoint_names=tuple(str(n) for n in mapping["keypoint_names"]),
                axis_names=tuple(str(n) for n in mapping["axis_names"]),
                joint_names=tuple(str(n) for n in mapping["joint_names"]),
                # runs from before the velocity kind have no entry: no velocities
                velocity_names=tuple(str(n) for n in mapping.get("velocity_names", ())),
            )
        except (KeyError, TypeError) as exc:
            raise VisforeError(f"malformed probe layout: missing or bad entry {exc}") from None
        if layout.kind not in PROBE_KINDS[1:]:
            raise VisforeError(f"malformed probe layout: kind {layout.kind!r}; valid: {', '.join(PROBE_KINDS[1:])}")
        if (layout.kind == "keypoints+velocities") != bool(layout.velocity_names):
            raise VisforeError(
                f"malformed probe layout: kind {layout.kind!r} with {layout.num_velocities} velocity outputs"
            )
        if "dim" in mapping and mapping["dim"] != layout.dim:
            raise VisforeError(f"malformed probe layout: dim {mapping['dim']!r} != {layout.dim} outputs")
        return layout


@dataclass(frozen=True)
class StateLabels:
    """Every row's labels of a dataset (rows as in ``data/state``).

    Attributes:
        layout: what each column of :attr:`values` is.
        values: ``(N, P)`` float32: key points (metres), joint angles (radians), then joint
            velocities (rad/s) when the layout has them.
    """

    layout: ProbeLayout
    values: np.ndarray

    @property
    def keypoints(self) -> np.ndarray:
        """``(N, G)`` float32 metres."""
        return self.values[:, self.layout.keypoint_slice]

    @property
    def qpos(self) -> np.ndarray:
        """``(N, nq)`` float32 radians."""
        return self.values[:, self.layout.joint_slice]


def dataset_state_labels(ds: Any, kind: str = "keypoints") -> StateLabels:
    """The probe labels of every row of the opened dataset ``ds`` (a
    :class:`visfore.data.dataset.Dataset`): its ``data/state`` decoded by the env class of
    ``attrs["env_id"]`` (:func:`env_class_for`, :func:`decode_dataset_states`), exactly the
    labels of ``train-translator``, and for ``kind="keypoints+velocities"`` also the
    decoded ``qvel``.

    Returns:
        :class:`StateLabels` with ``values`` ``(N, G + nq)`` float32 (``(N, G + nq + nv)``
        with velocities).

    Raises:
        VisforeError: ``kind`` is not one of :data:`PROBE_KINDS` (but ``"none"``), the
            dataset records no env id, the env cannot decode its states (one line naming
            the env and the decodable ids), or velocities were asked of an env whose
            states do not hold them.
    """
    if kind not in PROBE_KINDS[1:]:
        raise VisforeError(f"unknown probe kind {kind!r}; valid: {', '.join(PROBE_KINDS[1:])}")
    env_id = ds.attrs.get("env_id")
    if not isinstance(env_id, str):
        raise VisforeError(f"{ds.path} does not record its env id (attrs['env_id']), so it has no state labels")
    env_cls = env_class_for(env_id)
    with_velocities = kind == "keypoints+velocities"
    qpos, kp, qvel = _decode_rows(env_cls, ds.read("state"), env_id, velocities=with_velocities)
    columns = [kp, qpos]
    velocity_names: tuple[str, ...] = ()
    if qvel is not None:
        velocity_names = tuple(f"{j}_velocity" for j in joint_names_for(env_cls, qvel.shape[1]))
        columns.append(qvel)
    names, d = keypoint_names_for(env_cls, kp.shape[1])
    layout = ProbeLayout(
        kind=kind,
        env_id=env_id,
        keypoint_names=tuple(names),
        axis_names=tuple(_axis_names_for(env_cls, d)),
        joint_names=tuple(joint_names_for(env_cls, qpos.shape[1])),
        velocity_names=velocity_names,
    )
    values = np.ascontiguousarray(np.concatenate(columns, axis=1), dtype=np.float32)
    return StateLabels(layout=layout, values=values)
