"""The reward catalogue: named, documented reward terms with weights, shared by every robot.

A reward is a weighted sum of *terms*. Each term is a :class:`RewardTerm`: a name (the
keyword that selects it), a formula, a unit, a default weight and a source. An env holds a
:class:`RewardSpec` (which terms, which weights) and, each step, reports every active term
as ``info["reward_<key>"] = weight * value`` and returns their sum, or what the user's own
``reward_fn(terms, info)`` makes of them.

Notation: ``k``/``k*`` the stacked key points and their targets (metres), ``q``/``q*`` the
joint positions and the target configuration (radians for hinges), ``dq/dt`` the joint
velocities (rad/s), ``a`` the *applied* action (the controls MuJoCo used: the action
clipped into each actuator's ``ctrlrange``, [-1, 1] for every robot here, so a 1e6 action
costs what an action of 1 does), ``x ⊖ y`` the difference of joint coordinates with hinge
angles wrapped into [-pi, pi).

=================  =====================  ==================================================  ======
name               info key               value of one step                                   weight
=================  =====================  ==================================================  ======
keypoint_distance  reward_dist            -||k - k*||_2 (m)                                   1
potential          reward_potential       Phi(s') - Phi(s), Phi = -||k - k*||_2 (m)           1
joint_distance     reward_joint_distance  -||q ⊖ q*||_2 (rad)                                 1
ctrl               reward_ctrl            -||a||^2                                            1
electricity        reward_electricity     -(2.0 mean abs(a_i 0.1 dq_i/dt) + 0.1 mean a_i^2)   1
pose               reward_pose            exp(-2 sum_j (q*_j ⊖ q_j)^2)                        0.65
velocity           reward_velocity        exp(-0.1 sum_j (dq*_j/dt - dq_j/dt)^2), dq*/dt = 0  0.1
end_effector       reward_end_effector    exp(-40 sum_e ||p*_e - p_e||^2), end effectors e    0.15
pixel_mse          reward_pixels          -MSE(frame, goal frame), intensities in [0, 1]      1
=================  =====================  ==================================================  ======

Sources: ``keypoint_distance`` and ``pixel_mse`` are the project's starting point (seed
001; Reacher-v5's ``reward_dist``); ``potential``: Ng, Harada & Russell 1999 and
Roboschool's "progress" (pybullet_envs ``gym_manipulator_envs.py``); ``joint_distance``:
the joint-space analogue of the key-point distance; ``ctrl``: gymnasium
``envs/mujoco/reacher_v5.py`` ``_get_rew``; ``electricity``: pybullet_envs
``gym_locomotion_envs.py``; ``pose``, ``velocity``, ``end_effector``: Peng et al. 2018
(DeepMimic), Sec. 5, Eq. 6, 7, 8 with the weights of Eq. 5. Each :class:`RewardTerm`
carries its formula, unit and source.

Notes on the sources:

* DeepMimic (X. B. Peng, P. Abbeel, S. Levine, M. van de Panne, "DeepMimic: Example-Guided
  Deep Reinforcement Learning of Physics-Based Character Skills", ACM TOG 37(4), SIGGRAPH
  2018), Sec. 5 "Reward": the imitation reward ``r^I = w^p r^p + w^v r^v + w^e r^e +
  w^c r^c`` (Eq. 5) with ``w^p = 0.65, w^v = 0.1, w^e = 0.15, w^c = 0.1`` and the terms of
  Eq. 6-9 with scales 2, 0.1, 40 and 10. Here the characters' roots are fixed to the world,
  so the centre-of-mass term ``r^c`` (Eq. 9) is left out and the other weights are not
  renormalised; DeepMimic's joints are spherical and compare quaternions, here every joint
  is a hinge, so a joint's orientation difference is the wrapped angle difference; the
  targets are static poses, so the target velocity is 0. The published code (ported in
  ``pybullet_envs/deep_mimic/env/humanoid_stable_pd.py``, ``getReward``, "not values from
  the paper, but from the published code") uses the same scales with weights
  0.5 / 0.05 / 0.15 plus a root term 0.2 and a COM term 0.1, normalised to sum to 1.
  The scales suit tracking a reference the character is already near: at the start of a
  ``TargetHumanoid-v0`` episode (random target, median key-point distance 1.15 m) the
  median ``pose`` value is about 2e-10 and ``end_effector`` about 2e-16, so on their own
  they give no learning signal far from the target; add ``keypoint_distance`` or
  ``potential`` for that.
* electricity: pybullet_envs' ``WalkerBaseBulletEnv.step`` (Roboschool's walkers) adds
  ``electricity_cost * mean(|a * joint_speeds|) + stall_torque_cost * mean(a^2)`` with
  ``electricity_cost = -2.0``, ``stall_torque_cost = -0.1`` and ``joint_speeds = 0.1 *
  dq/dt`` (``robot_bases.Joint.current_relative_position``). The term uses exactly that,
  with ``dq/dt`` the velocity of each actuator's joint after the step. (Roboschool's
  reacher uses ``-0.1 sum |a_i dq_i/dt| - 0.01 sum |a_i|`` instead.)
* potential: shaping ``F = gamma Phi(s') - Phi(s)`` with ``gamma = 1`` leaves the optimal
  policies unchanged (Ng et al. 1999, "Policy invariance under reward transformations");
  Roboschool calls the difference of potentials between consecutive steps "progress".
  The sum over an episode telescopes to ``Phi(s_T) - Phi(s_0)``.

Selection: :func:`parse_rewards` accepts a dict ``{name: weight}``, a string
``"keypoint_distance+0.1*ctrl"`` (a bare name takes its default weight; the aliases
``dist`` and ``pixels`` name ``keypoint_distance`` and ``pixel_mse``), the name of a
preset in :data:`PRESETS`, a :class:`RewardSpec`, or a spec's JSON form
(:meth:`RewardSpec.to_dict`).

The sum: terms are grouped by what they read, ``R = (R_action + R(s)) + R(obs)``:
action terms (``ctrl``, ``electricity``), state terms (the key-point, joint and DeepMimic
terms) and pixel terms (``pixel_mse``), each group added left to right in selection order.

Goal-conditioned recomputation (``compute_reward(achieved_goal, desired_goal, info)``):
``keypoint_distance``, ``potential`` (from ``info["prev_achieved_goal"]``) and
``end_effector`` are recomputed from the goals by the same functions ``step`` uses
(:func:`keypoint_distances`, :func:`end_effector_values`), so the recomputed reward equals
the step reward bit for bit (``==``), for one transition or a batch of any shape;
``ctrl``, ``electricity`` and ``velocity`` do not depend on the goal and are read back
from ``info["reward_<key>"]``;
``joint_distance``, ``pose`` and ``pixel_mse`` need the target configuration or the goal
frame, which relabelled goals do not carry, so a goal-conditioned env refuses them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "PRESETS",
    "REWARD_TERMS",
    "RewardContext",
    "RewardSpec",
    "RewardTerm",
    "end_effector_values",
    "info_values",
    "keypoint_distances",
    "legacy_spec",
    "parse_rewards",
    "resolve_reward_fn",
    "term_names",
    "wrap_hinge_differences",
]

#: Term kinds, in the order their groups are summed: the action, the state, the pixels.
TERM_KINDS = ("action", "state", "pixels")
#: How ``compute_reward`` obtains a term: recomputed from the goals, read back from
#: ``info`` (the term does not depend on the goal), or not at all (needs the target state
#: or the goal frame).
GOAL_SOURCES = ("goals", "info", "none")


class RewardContext:
    """What reward terms read: live views of the simulation plus a few per-step numbers.

    An env builds one context and keeps it current; the arrays below are views into the
    env's buffers (MuJoCo's ``MjData``), so they follow the simulation without copies.

    Attributes:
        action: (nu,) float64, the last *applied* action: the controls clipped into the
            actuators' ``ctrlrange`` (what MuJoCo simulated), not the raw action.
        qpos: (nq,) float64 joint positions (rad for hinges, m for slides).
        qvel: (nv,) float64 joint velocities (rad/s, m/s).
        target_qpos: (nq,) float64 target configuration (replaced when the target changes).
        target_qvel: (nv,) float64 target velocities (zeros for a static pose).
        actuator_dofs: (nu,) intp, the ``qvel`` index of each actuator's joint.
        angle_mask: (nq,) bool, True for hinge coordinates (their differences are wrapped).
        keypoint_error: (K, A) float64, ``k - k*`` per key point (metres).
        keypoint_shape: ``(K, A)``: key points and coordinates per key point.
        end_effectors: (E,) intp, rows of ``keypoint_error`` that are end effectors.
        distance: ``||k - k*||_2`` after the step (metres).
        prev_distance: the same before the step (metres).
        pixel_mse: ``MSE(frame, goal frame)`` of the step on [0, 1] (set only when a pixel
            term is active).
    """

    __slots__ = (
        "action",
        "qpos",
        "qvel",
        "target_qpos",
        "target_qvel",
        "actuator_dofs",
        "angle_mask",
        "keypoint_error",
        "keypoint_shape",
        "end_effectors",
        "distance",
        "prev_distance",
        "pixel_mse",
    )

    def __init__(
        self,
        *,
        action: np.ndarray,
        qpos: np.ndarray,
        qvel: np.ndarray,
        target_qpos: np.ndarray,
        actuator_dofs: np.ndarray,
        angle_mask: np.ndarray,
        keypoint_error: np.ndarray,
        end_effectors: np.ndarray,
        target_qvel: np.ndarray | None = None,
    ) -> None:
        self.action = action
        self.qpos = qpos
        self.qvel = qvel
        self.target_qpos = target_qpos
        self.target_qvel = np.zeros_like(qvel) if target_qvel is None else target_qvel
        self.actuator_dofs = np.asarray(actuator_dofs, dtype=np.intp)
        self.angle_mask = np.asarray(angle_mask, dtype=bool)
        self.keypoint_error = keypoint_error
        self.keypoint_shape = tuple(keypoint_error.shape)
        self.end_effectors = np.asarray(end_effectors, dtype=np.intp)
        self.distance = 0.0
        self.prev_distance = 0.0
        self.pixel_mse = 0.0


def wrap_hinge_differences(diff: np.ndarray, angle_mask: np.ndarray) -> np.ndarray:
    """Wrap the hinge entries of a joint-space difference into [-pi, pi), in place.

    Args:
        diff: (nq,) float64 difference of two configurations (rad for hinges, m for
            slides); modified in place.
        angle_mask: (nq,) bool, True for hinge coordinates
            (:attr:`visfore_envs.core.KeypointTargetEnv.angle_mask`).

    Returns:
        ``diff`` itself.
    """
    diff[angle_mask] = np.remainder(diff[angle_mask] + math.pi, 2.0 * math.pi) - math.pi
    return diff


def _wrapped_joint_error(ctx: RewardContext) -> np.ndarray:
    """``q - q*`` with hinge differences wrapped into [-pi, pi) (nq,) float64."""
    return wrap_hinge_differences(ctx.qpos - ctx.target_qpos, ctx.angle_mask)


# -- goal primitives shared by step and compute_reward ---------------------------------------
def keypoint_distances(error) -> np.ndarray:
    """``||e||_2`` over the last axis: the key-point distance of ``step`` and of
    ``compute_reward`` (one formula, so the two agree bit for bit).

    The squared norm is ``np.vecdot`` over a contiguous last axis: it runs the same dot
    kernel (BLAS ``ddot``, what ``ndarray.dot`` calls) on a single (G,) vector as on each
    row of a (..., G) batch, so a batch of any shape rounds exactly like one step (a sum
    of squares by ``einsum`` or over a strided axis would not), and the step reward is what
    it was with ``diff.dot(diff)``.

    Args:
        error: (..., G) key points minus their targets ``k - k*`` (metres).

    Returns:
        (...,) float64 distances (a 0-d float64 for a (G,) input), metres.
    """
    e = np.ascontiguousarray(error, dtype=np.float64)
    return np.sqrt(np.vecdot(e, e))


def end_effector_values(error, end_effectors) -> np.ndarray:
    """DeepMimic's end-effector value ``exp(-40 sum_e ||p*_e - p_e||^2)``, unweighted, for
    ``step`` and ``compute_reward`` alike (one formula, bit-equal for any batch shape).

    The sum of squares is ``np.add.reduce`` over the contiguous (..., E * A) values (the
    same pairwise sum for one step and for every row of a batch) and the exponential is
    ``np.exp`` (``math.exp`` rounds differently from numpy's vectorised ``exp``).

    Args:
        error: (..., K, A) key points minus their targets (metres).
        end_effectors: (E,) intp, the key-point rows that are end effectors.

    Returns:
        (...,) float64 values in (0, 1].
    """
    e = np.asarray(error, dtype=np.float64)[..., end_effectors, :]
    sq = np.ascontiguousarray(e * e).reshape(e.shape[:-2] + (-1,))
    return np.exp(-END_EFFECTOR_SCALE * np.add.reduce(sq, axis=-1))


# -- term values (one step, unweighted) ------------------------------------------------------
def _keypoint_distance(ctx: RewardContext) -> float:
    return -ctx.distance


def _potential(ctx: RewardContext) -> float:
    # Phi(s') - Phi(s) with Phi = -distance.
    return ctx.prev_distance - ctx.distance


def _joint_distance(ctx: RewardContext) -> float:
    err = _wrapped_joint_error(ctx)
    return -math.sqrt(float(err.dot(err)))


def _ctrl(ctx: RewardContext) -> float:
    # ctx.action is the applied (clipped) control, so out-of-range actions cost no more
    # than the bound the physics actually used.
    a = ctx.action
    return -float(a.dot(a))


ELECTRICITY_COST = -2.0
STALL_TORQUE_COST = -0.1
JOINT_SPEED_SCALE = 0.1


def _electricity(ctx: RewardContext) -> float:
    a = ctx.action  # applied (clipped) control, as in _ctrl
    speeds = JOINT_SPEED_SCALE * ctx.qvel[ctx.actuator_dofs]
    return ELECTRICITY_COST * float(np.abs(a * speeds).mean()) + STALL_TORQUE_COST * float(np.square(a).mean())


POSE_SCALE = 2.0
VELOCITY_SCALE = 0.1
END_EFFECTOR_SCALE = 40.0


def _pose(ctx: RewardContext) -> float:
    err = _wrapped_joint_error(ctx)
    return math.exp(-POSE_SCALE * float(err.dot(err)))


def _velocity(ctx: RewardContext) -> float:
    err = ctx.qvel - ctx.target_qvel
    return math.exp(-VELOCITY_SCALE * float(err.dot(err)))


def _end_effector(ctx: RewardContext) -> float:
    return float(end_effector_values(ctx.keypoint_error, ctx.end_effectors))


def _pixel_mse(ctx: RewardContext) -> float:
    return -ctx.pixel_mse


# -- the same from goals, vectorised over leading axes -------------------------------------
def info_values(info, key: str, default=None) -> np.ndarray:
    """``info[key]`` as an array, for one info dict, a dict of batched arrays, or a
    sequence/array of info dicts (as replay buffers pass them).

    Raises:
        KeyError: ``key`` is missing and no ``default`` is given.
    """
    if info is None:
        if default is None:
            raise KeyError(key)
        return np.asarray(default)
    if isinstance(info, Mapping):
        if key in info:
            return np.asarray(info[key], dtype=np.float64)
        if default is None:
            raise KeyError(key)
        return np.asarray(default)
    items = list(np.asarray(info, dtype=object).ravel()) if not isinstance(info, list) else info
    if items and all(isinstance(i, Mapping) for i in items):
        if all(key in i for i in items):
            vals = np.array([np.asarray(i[key], dtype=np.float64) for i in items])
            shape = np.shape(info) if not isinstance(info, list) else (len(info),)
            return vals.reshape(shape + vals.shape[1:])
    if default is None:
        raise KeyError(key)
    return np.asarray(default)


def _goals_keypoint_distance(ag, dg, info, ctx) -> np.ndarray:
    return -keypoint_distances(ag - dg)


def _goals_potential(ag, dg, info, ctx) -> np.ndarray:
    prev = info_values(info, "prev_achieved_goal")
    return keypoint_distances(prev - dg) - keypoint_distances(ag - dg)


def _goals_end_effector(ag, dg, info, ctx) -> np.ndarray:
    diff = ag - dg
    return end_effector_values(diff.reshape(diff.shape[:-1] + ctx.keypoint_shape), ctx.end_effectors)


@dataclass(frozen=True)
class RewardTerm:
    """One named reward term of the catalogue.

    Attributes:
        name: the keyword that selects it (``rewards={"name": w}`` / ``"w*name"``).
        key: ``info["reward_<key>"]`` holds ``weight * value`` each step.
        kind: ``"action"``, ``"state"`` (R(s)) or ``"pixels"`` (R(obs)).
        goal_source: ``"goals"``, ``"info"`` or ``"none"`` (see :data:`GOAL_SOURCES`).
        default_weight: the weight of a bare name in a reward string.
        formula: the value of one step, in words and symbols.
        unit: unit of the value.
        source: paper or upstream file the term comes from.
        value: ``value(ctx: RewardContext) -> float``, the unweighted value of the step.
        from_goals: for ``goal_source="goals"``: ``(achieved (..., G), desired (..., G),
            info, ctx) -> (...,)`` unweighted values (KeyError when ``info`` lacks what
            the term needs, e.g. ``prev_achieved_goal``).
        aliases: other names accepted for it.
    """

    name: str
    key: str
    kind: str
    goal_source: str
    default_weight: float
    formula: str
    unit: str
    source: str
    value: Callable[[RewardContext], float]
    from_goals: Callable[..., np.ndarray] | None = None
    aliases: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.goal_source == "goals" and self.from_goals is None:
            raise ValueError(f"reward term {self.name!r}: goal_source='goals' needs from_goals")

    @property
    def info_key(self) -> str:
        """The ``info`` key of the weighted value: ``"reward_" + key``."""
        return "reward_" + self.key


_DEEPMIMIC = "Peng, Abbeel, Levine & van de Panne 2018, DeepMimic, ACM TOG 37(4) (SIGGRAPH), Sec. 5"

#: Every term of the catalogue, by name, in table order.
REWARD_TERMS: dict[str, RewardTerm] = {
    t.name: t
    for t in (
        RewardTerm(
            "keypoint_distance",
            "dist",
            "state",
            "goals",
            1.0,
            "-||k - k*||_2 over all key points stacked",
            "m",
            "p2 distance of the key points to their targets (Reacher-v5's reward_dist)",
            _keypoint_distance,
            _goals_keypoint_distance,
            aliases=("dist",),
        ),
        RewardTerm(
            "potential",
            "potential",
            "state",
            "goals",
            1.0,
            "Phi(s') - Phi(s), Phi = -||k - k*||_2",
            "m",
            "Ng, Harada & Russell 1999 (gamma = 1); Roboschool's progress (pybullet_envs gym_manipulator_envs.py)",
            _potential,
            _goals_potential,
        ),
        RewardTerm(
            "joint_distance",
            "joint_distance",
            "state",
            "none",
            1.0,
            "-||q ⊖ q*||_2, hinge differences wrapped into [-pi, pi)",
            "rad",
            "joint-space analogue of keypoint_distance",
            _joint_distance,
        ),
        RewardTerm(
            "ctrl",
            "ctrl",
            "action",
            "info",
            1.0,
            "-||a||^2, a the applied action (clipped into the ctrlrange)",
            "1 (controls in [-1, 1])",
            "gymnasium envs/mujoco/reacher_v5.py _get_rew (reward_control_weight = 1 in code)",
            _ctrl,
        ),
        RewardTerm(
            "electricity",
            "electricity",
            "action",
            "info",
            1.0,
            "-2.0 mean_i |a_i (0.1 dq_i/dt)| - 0.1 mean_i a_i^2, a the applied (clipped) action",
            "rad/s (0.1 scale)",
            "pybullet_envs gym_locomotion_envs.py WalkerBaseBulletEnv.step "
            "(electricity_cost = -2.0, stall_torque_cost = -0.1, joint_speeds = 0.1 dq/dt)",
            _electricity,
        ),
        RewardTerm(
            "pose",
            "pose",
            "state",
            "none",
            0.65,
            "exp(-2 sum_j (q*_j ⊖ q_j)^2)",
            "1 (in (0, 1])",
            _DEEPMIMIC + ", Eq. 6 (w^p = 0.65, Eq. 5)",
            _pose,
        ),
        RewardTerm(
            "velocity",
            "velocity",
            "state",
            "info",
            0.1,
            "exp(-0.1 sum_j (dq*_j/dt - dq_j/dt)^2), dq*/dt = 0 for a static pose",
            "1 (in (0, 1])",
            _DEEPMIMIC + ", Eq. 7 (w^v = 0.1, Eq. 5)",
            _velocity,
        ),
        RewardTerm(
            "end_effector",
            "end_effector",
            "state",
            "goals",
            0.15,
            "exp(-40 sum_e ||p*_e - p_e||^2) over the end-effector key points",
            "1 (in (0, 1])",
            _DEEPMIMIC + ", Eq. 8 (w^e = 0.15, Eq. 5)",
            _end_effector,
            _goals_end_effector,
        ),
        RewardTerm(
            "pixel_mse",
            "pixels",
            "pixels",
            "none",
            1.0,
            "-MSE(frame, goal frame) on [0, 1] intensities",
            "1 (in [-1, 0])",
            "pixel analogue of the key-point distance",
            _pixel_mse,
            aliases=("pixels",),
        ),
    )
}

_ALIASES: dict[str, str] = {alias: t.name for t in REWARD_TERMS.values() for alias in (t.name, *t.aliases)}

#: Named reward strings accepted by :func:`parse_rewards`.
PRESETS: dict[str, str] = {
    # The reachers' default reward (reward_mode="state", ctrl_cost_weight=1).
    "default": "ctrl+keypoint_distance",
    # The imitation reward of DeepMimic without its centre-of-mass term (fixed roots).
    "deepmimic": "0.65*pose+0.1*velocity+0.15*end_effector",
    # Roboschool's recipe: progress plus electricity.
    "roboschool": "potential+electricity",
}


def term_names() -> tuple[str, ...]:
    """The catalogue's term names, in table order."""
    return tuple(REWARD_TERMS)


def _unknown(name: str) -> ValueError:
    valid = ", ".join(repr(n) for n in REWARD_TERMS)
    return ValueError(f"reward term {name!r} is not one of {valid}")


def _check_weight(name: str, weight) -> float:
    ok = isinstance(weight, (int, float, np.integer, np.floating)) and not isinstance(weight, (bool, np.bool_))
    value = float(weight) if ok else float("nan")
    if not ok or not math.isfinite(value) or value < 0.0:
        raise ValueError(f"reward weight {name}={weight!r} is not a finite number >= 0")
    return value


@dataclass(frozen=True)
class RewardSpec:
    """Which terms make the reward, with which weights.

    Attributes:
        weights: ``((name, weight), ...)`` in summation order, names from
            :data:`REWARD_TERMS`, weights finite and >= 0.
        zero_keys: term names reported as ``info["reward_<key>"] = 0.0`` without being
            computed (the reachers' ``reward_potential`` when shaping is off).

    Raises:
        ValueError: an unknown name, a repeated name, or a bad weight.
    """

    weights: tuple[tuple[str, float], ...]
    zero_keys: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        seen = set()
        for name, weight in self.weights:
            if name not in REWARD_TERMS:
                raise _unknown(name)
            if name in seen:
                raise ValueError(f"reward term {name!r} is given twice")
            seen.add(name)
            _check_weight(name, weight)
        for name in self.zero_keys:
            if name not in REWARD_TERMS:
                raise _unknown(name)

    def terms(self) -> list[tuple[RewardTerm, float]]:
        """``[(term, weight), ...]`` in summation order."""
        return [(REWARD_TERMS[n], float(w)) for n, w in self.weights]

    @property
    def names(self) -> tuple[str, ...]:
        """The active term names, in order."""
        return tuple(n for n, _ in self.weights)

    @property
    def reward_mode(self) -> str:
        """``"state"``, ``"pixels"`` or ``"state+pixels"``: what the terms read."""
        kinds = {REWARD_TERMS[n].kind for n in self.names}
        if "pixels" in kinds:
            return "state+pixels" if "state" in kinds else "pixels"
        return "state"

    def __str__(self) -> str:
        return "+".join(f"{w:g}*{n}" for n, w in self.weights) or "0"

    def to_dict(self) -> dict[str, Any]:
        """The JSON form ``{"weights": [[name, weight], ...], "zero_keys": [name, ...]}``.

        It is what ``dataclasses.asdict`` (and so gymnasium's ``EnvSpec.to_json``) makes of
        a spec, and :func:`parse_rewards` / ``rewards=`` accept it back, so an env made
        with ``rewards=RewardSpec(...)`` survives ``EnvSpec.from_json(spec.to_json())``.
        """
        return {"weights": [[n, float(w)] for n, w in self.weights], "zero_keys": list(self.zero_keys)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RewardSpec:
        """The spec from its :meth:`to_dict` form (lists or tuples).

        Raises:
            ValueError: other keys, pairs that are not ``[name, weight]``, or what
                :class:`RewardSpec` itself refuses.
        """
        extra = [k for k in data if k not in ("weights", "zero_keys")]
        if extra or "weights" not in data:
            raise ValueError(
                f"rewards={dict(data)!r} is not a RewardSpec dict "
                "{'weights': [[name, weight], ...], 'zero_keys': [name, ...]}"
            )
        try:
            weights = tuple((str(n), w) for n, w in data["weights"])
            zero = tuple(str(n) for n in data.get("zero_keys", ()))
        except (TypeError, ValueError):
            raise ValueError(f"rewards={dict(data)!r}: 'weights' must be a list of [name, weight] pairs") from None
        for n, w in weights:
            _check_weight(n, w)
        return cls(tuple((n, float(w)) for n, w in weights), zero)


_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_TERM_RE = re.compile(rf"\s*(?:(?P<w>{_NUMBER})\s*\*\s*)?(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*")


def _parse_string(text: str) -> list[tuple[str, float]]:
    stripped = text.strip()
    if stripped in PRESETS:
        return _parse_string(PRESETS[stripped])
    if not stripped:
        raise ValueError("rewards='' names no reward term")
    out, pos = [], 0
    while True:
        m = _TERM_RE.match(text, pos)
        if m is None or m.end() == pos:
            raise ValueError(
                f"rewards={text!r} is not a sum of [weight*]name terms (at character {pos}), "
                "e.g. 'keypoint_distance+0.1*ctrl'"
            )
        name = m.group("name")
        if name not in _ALIASES:
            raise _unknown(name)
        canonical = _ALIASES[name]
        weight = float(m.group("w")) if m.group("w") else REWARD_TERMS[canonical].default_weight
        out.append((canonical, weight))
        pos = m.end()
        if pos == len(text):
            return out
        if text[pos] != "+":
            raise ValueError(
                f"rewards={text!r} is not a sum of [weight*]name terms (unexpected "
                f"{text[pos]!r} at character {pos}), e.g. 'keypoint_distance+0.1*ctrl'"
            )
        pos += 1


def parse_rewards(rewards: str | Mapping[str, float] | RewardSpec) -> RewardSpec:
    """Turn a reward selection into a :class:`RewardSpec`.

    Args:
        rewards: a dict ``{name: weight}`` (names or aliases, weights finite >= 0, the
            dict order is the summation order); a string of ``[weight*]name`` terms joined
            by ``+`` (``"keypoint_distance+0.1*ctrl"``; a bare name takes the term's
            default weight; whitespace allowed); a preset name from :data:`PRESETS`; a
            :class:`RewardSpec` (returned as is) or its JSON form
            ``{"weights": [[name, weight], ...], "zero_keys": [...]}``
            (:meth:`RewardSpec.to_dict`, what ``EnvSpec.to_json`` writes).

    Returns:
        The spec.

    Raises:
        ValueError: an unknown name (the message lists the valid names), a malformed
            string, a repeated term, a negative/non-finite weight, or another type.
    """
    if isinstance(rewards, RewardSpec):
        return rewards
    if isinstance(rewards, Mapping) and "weights" in rewards:
        # The JSON form of a RewardSpec ("weights" is no term name, so no ambiguity).
        return RewardSpec.from_dict(rewards)
    if isinstance(rewards, str):
        pairs = _parse_string(rewards)
    elif isinstance(rewards, Mapping):
        if not rewards:
            raise ValueError("rewards={} names no reward term")
        pairs = []
        for name, weight in rewards.items():
            if not isinstance(name, str) or name not in _ALIASES:
                raise _unknown(name)
            pairs.append((_ALIASES[name], _check_weight(name, weight)))
    else:
        raise ValueError(
            f"rewards={rewards!r} is not a dict {{name: weight}}, a string like "
            "'keypoint_distance+0.1*ctrl' or a preset name"
        )
    return RewardSpec(tuple((n, float(w)) for n, w in pairs))


def legacy_spec(
    reward_mode: str,
    potential_shaping: bool,
    ctrl_cost_weight: float,
    state_reward_weight: float,
    pixel_reward_weight: float,
) -> RewardSpec:
    """The reachers' ``reward_mode`` options as a preset of the catalogue.

    ``ctrl`` (weight ``ctrl_cost_weight``) always; with a state reward
    ``keypoint_distance`` and, with shaping, ``potential`` (both ``state_reward_weight``;
    without shaping ``reward_potential`` is reported as 0.0); with a pixel reward
    ``pixel_mse`` (``pixel_reward_weight``). Rewards and ``info`` keys are those of the
    options before the catalogue existed, bit for bit.
    """
    weights: list[tuple[str, float]] = [("ctrl", ctrl_cost_weight)]
    zero: tuple[str, ...] = ()
    if reward_mode in ("state", "state+pixels"):
        weights.append(("keypoint_distance", state_reward_weight))
        if potential_shaping:
            weights.append(("potential", state_reward_weight))
        else:
            zero = ("potential",)
    if reward_mode in ("pixels", "state+pixels"):
        weights.append(("pixel_mse", pixel_reward_weight))
    return RewardSpec(tuple(weights), zero)


def resolve_reward_fn(reward_fn: Any) -> Callable[[dict, dict], float] | None:
    """``reward_fn`` as a callable: None, a callable, or ``"package.module:function"``.

    Raises:
        ValueError: not callable, or the import path does not resolve to a callable.
    """
    if reward_fn is None or callable(reward_fn):
        return reward_fn
    if isinstance(reward_fn, str) and ":" in reward_fn:
        import importlib

        module_name, _, attr = reward_fn.partition(":")
        try:
            obj: Any = importlib.import_module(module_name)
            for part in attr.split("."):
                obj = getattr(obj, part)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"reward_fn={reward_fn!r} cannot be imported ({exc})") from None
        if callable(obj):
            return obj
    raise ValueError(
        f"reward_fn={reward_fn!r} is not a callable (terms, info) -> float or a 'package.module:function' path"
    )
