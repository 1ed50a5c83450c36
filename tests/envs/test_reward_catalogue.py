"""The reward catalogue: each term against its formula, selection by string and dict, user
callables, goal-conditioned recomputation, and the reachers' options as exact presets."""

from __future__ import annotations

import math
import sys

import gymnasium as gym
import numpy as np
import pytest

import visfore_envs  # noqa: F401
from visfore_envs.core.rewards import (
    PRESETS,
    REWARD_TERMS,
    RewardSpec,
    legacy_spec,
    parse_rewards,
    term_names,
)

ALL_TERMS = {
    "keypoint_distance": 1.3,
    "potential": 0.7,
    "joint_distance": 0.4,
    "ctrl": 0.2,
    "electricity": 0.9,
    "pose": 0.65,
    "velocity": 0.1,
    "end_effector": 0.15,
    "pixel_mse": 3.0,
}


def wrap(x):
    return (np.asarray(x) + math.pi) % (2 * math.pi) - math.pi


def hand_values(u, action, prev_distance, frame, ee_rows):
    """Every term's unweighted value from the documented formulas, computed here from the
    env's public state (joint positions/velocities, key points, frames)."""
    q, dq, q_star = u.data.qpos, u.data.qvel, u.target_qpos
    k, k_star = u.keypoints, u.target_keypoints
    a = np.asarray(action, dtype=np.float64)
    distance = float(np.linalg.norm(k - k_star))
    dq_act = dq[u.model.jnt_dofadr[u.model.actuator_trnid[:, 0]]]
    err_ee = (k - k_star).reshape(u.n_keypoints, -1)[ee_rows]
    joint_err = wrap(q - q_star)
    return {
        "keypoint_distance": -distance,
        "potential": prev_distance - distance,
        "joint_distance": -float(np.linalg.norm(joint_err)),
        "ctrl": -float(np.sum(a**2)),
        "electricity": -2.0 * float(np.mean(np.abs(a * 0.1 * dq_act))) - 0.1 * float(np.mean(a**2)),
        "pose": math.exp(-2.0 * float(np.sum(joint_err**2))),
        "velocity": math.exp(-0.1 * float(np.sum(dq**2))),
        "end_effector": math.exp(-40.0 * float(np.sum(err_ee**2))),
        "pixel_mse": -float(np.mean((frame / 255.0 - u.render_goal() / 255.0) ** 2)),
    }


@pytest.mark.parametrize(
    "env_id, ee_rows",
    [("ReacherPlane-v0", [0, 1]), ("TargetHumanoid-v0", [1, 3, 5, 7])],  # default: all key points
)
def test_every_term_matches_its_formula(env_id, ee_rows):
    env = gym.make(env_id, rewards=ALL_TERMS, obs_mode="pixels", width=32, height=32)
    u = env.unwrapped
    assert u.reward_mode == "state+pixels"
    _, info = env.reset(seed=2)
    prev = info["distance"]
    rng = np.random.default_rng(0)
    for _ in range(8):
        action = rng.uniform(-1, 1, env.action_space.shape).astype(np.float32)
        frame, reward, _, _, info = env.step(action)
        values = hand_values(u, action, prev, frame, ee_rows)
        prev = info["distance"]
        for name, weight in ALL_TERMS.items():
            key = REWARD_TERMS[name].info_key
            assert info[key] == pytest.approx(weight * values[name], rel=1e-9, abs=1e-12), name
        assert info["pixel_mse"] == pytest.approx(-values["pixel_mse"], rel=1e-9)
        terms = [info[REWARD_TERMS[n].info_key] for n in ALL_TERMS]
        assert reward == pytest.approx(sum(terms), rel=1e-12, abs=1e-12)
        keys = {k for k in info if k.startswith("reward_")}
        assert keys == {REWARD_TERMS[n].info_key for n in ALL_TERMS}
    env.close()


def test_joint_terms_wrap_hinge_angles_and_are_exact_at_the_target():
    # ReacherPlane's joint0 is an unlimited hinge: pi - 0.1 and -pi + 0.1 are 0.2 apart.
    env = gym.make("ReacherPlane-v0", rewards="joint_distance+pose+velocity+end_effector").unwrapped
    target = np.array([-math.pi + 0.1, 0.0])
    env.reset(seed=0, options={"target_qpos": target, "qpos": np.array([math.pi - 0.1, 0.0]), "qvel": np.zeros(2)})
    _, _, _, _, info = env.step(np.zeros(2, dtype=np.float32))
    assert info["reward_joint_distance"] == pytest.approx(-0.2, abs=1e-9)
    assert info["reward_pose"] == pytest.approx(0.65 * math.exp(-2 * 0.04), rel=1e-9)
    # At the target, at rest, with no action: every term at its best value.
    env.reset(seed=0, options={"target_qpos": target, "qpos": target, "qvel": np.zeros(2)})
    _, reward, _, _, info = env.step(np.zeros(2, dtype=np.float32))
    assert info["reward_joint_distance"] == 0.0
    assert (info["reward_pose"], info["reward_velocity"], info["reward_end_effector"]) == (0.65, 0.1, 0.15)
    assert reward == pytest.approx(0.9, abs=1e-15)
    env.close()


def test_string_and_dict_selection():
    spec = parse_rewards("keypoint_distance+0.1*ctrl")
    assert spec.weights == (("keypoint_distance", 1.0), ("ctrl", 0.1))
    assert parse_rewards({"keypoint_distance": 1, "ctrl": 0.1}) == spec
    assert parse_rewards("  dist + 1e-1 * ctrl ") == spec  # aliases, whitespace, exponents
    # A bare name takes the term's default weight: DeepMimic's 0.65 / 0.1 / 0.15.
    deepmimic = parse_rewards("pose+velocity+end_effector")
    assert deepmimic.weights == (("pose", 0.65), ("velocity", 0.1), ("end_effector", 0.15))
    assert parse_rewards("deepmimic") == deepmimic and set(PRESETS) >= {"default", "deepmimic"}
    assert parse_rewards(".5*pixels+2.*potential").weights == (("pixel_mse", 0.5), ("potential", 2.0))
    assert parse_rewards(str(spec)) == spec  # str() is a valid reward string
    assert spec.reward_mode == "state"
    assert parse_rewards("pixel_mse+ctrl").reward_mode == "pixels"
    assert parse_rewards("pixel_mse+pose").reward_mode == "state+pixels"
    assert set(term_names()) == set(ALL_TERMS)
    # String and dict selection give the same env rewards.
    results = []
    for rewards in ("keypoint_distance+0.1*ctrl", {"keypoint_distance": 1.0, "ctrl": 0.1}):
        env = gym.make("Reacher3D-v0", rewards=rewards)
        env.reset(seed=1)
        _, reward, _, _, info = env.step(np.array([0.3, -0.2, 0.9], dtype=np.float32))
        results.append((reward, info))
        assert set(info) == {"reward_dist", "reward_ctrl", "distance", "is_success"}
        assert reward == info["reward_ctrl"] + info["reward_dist"]
        assert info["reward_ctrl"] == pytest.approx(-0.1 * (0.09 + 0.04 + 0.81), rel=1e-6)
        env.close()
    assert results[0] == results[1]


@pytest.mark.parametrize(
    "rewards, needle",
    [
        ("keypoint_distance+speed", "reward term 'speed' is not one of 'keypoint_distance', 'potential'"),
        ({"nope": 1.0}, "reward term 'nope' is not one of"),
        ("keypoint_distance+", "is not a sum of [weight*]name terms"),
        ("0.1*", "is not a sum of [weight*]name terms"),
        ("keypoint_distance*0.1", "unexpected '*'"),
        ("keypoint_distance-ctrl", "unexpected '-'"),
        ("2*2*ctrl", "is not a sum"),
        ("ctrl+0.5*ctrl", "reward term 'ctrl' is given twice"),
        ({"ctrl": -1.0}, "reward weight ctrl=-1.0 is not a finite number >= 0"),
        ({"ctrl": float("nan")}, "reward weight ctrl=nan"),
        ({"ctrl": True}, "reward weight ctrl=True"),
        ({"ctrl": "0.1"}, "reward weight ctrl='0.1'"),
        ("", "names no reward term"),
        ({}, "names no reward term"),
        (["ctrl"], "is not a dict"),
    ],
)
def test_bad_selection_raises_one_line_value_error(rewards, needle):
    with pytest.raises(ValueError) as excinfo:
        gym.make("ReacherPlane-v0", rewards=rewards)
    message = str(excinfo.value)
    assert needle in message and "\n" not in message
    if "is not one of" in message:
        assert all(repr(n) in message for n in ALL_TERMS)


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"reward_mode": "pixels"}, "reward_mode='pixels' cannot be combined with rewards="),
        ({"potential_shaping": True}, "potential_shaping=True cannot be combined"),
        ({"ctrl_cost_weight": 0.1}, "ctrl_cost_weight=0.1 cannot be combined"),
        (
            {"goal_conditioned": True, "rewards": "keypoint_distance+pose"},
            "rewards term 'pose' cannot be recomputed from goals",
        ),
        ({"goal_conditioned": True, "rewards": "pixel_mse"}, "rewards term 'pixel_mse'"),
        ({"reward_fn": 3}, "reward_fn=3 is not a callable"),
        ({"reward_fn": "no_such_module_xyz:f"}, "reward_fn='no_such_module_xyz:f' cannot be imported"),
    ],
)
def test_conflicting_options_raise(kwargs, needle):
    kwargs = {"rewards": "keypoint_distance", **kwargs}
    with pytest.raises(ValueError) as excinfo:
        gym.make("ReacherPlane-v0", **kwargs)
    assert needle in str(excinfo.value) and "\n" not in str(excinfo.value)


def test_user_callable_combines_the_terms(tmp_path, monkeypatch):
    seen = []

    def product(terms, info):
        seen.append((dict(terms), set(info)))
        return terms["keypoint_distance"] * terms["pose"]

    env = gym.make("Reacher3D-v0", rewards="keypoint_distance+pose+0.1*ctrl", reward_fn=product)
    env.reset(seed=0)
    _, reward, _, _, info = env.step(np.array([0.5, 0.5, -0.5], dtype=np.float32))
    assert reward == info["reward_dist"] * info["reward_pose"]
    terms, info_keys = seen[-1]
    assert terms == {"keypoint_distance": info["reward_dist"], "pose": info["reward_pose"], "ctrl": info["reward_ctrl"]}
    assert {"reward_dist", "reward_pose", "reward_ctrl", "distance"} <= info_keys
    env.close()

    # With the reachers' options: the callable sees their terms.
    env = gym.make("ReacherPlane-v0", reward_fn=lambda terms, info: 2.0 * terms["keypoint_distance"])
    env.reset(seed=0)
    _, reward, _, _, info = env.step(np.zeros(2, dtype=np.float32))
    assert reward == 2.0 * info["reward_dist"]
    env.close()

    # An import path works too (as --env-kwargs can pass it), and a non-number is refused.
    (tmp_path / "my_rewards_mod.py").write_text(
        "def half(terms, info):\n    return 0.5 * terms['keypoint_distance']\n"
        "def broken(terms, info):\n    return float('nan')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    env = gym.make("ReacherPlane-v0", rewards="keypoint_distance", reward_fn="my_rewards_mod:half")
    env.reset(seed=0)
    _, reward, _, _, info = env.step(np.zeros(2, dtype=np.float32))
    assert reward == 0.5 * info["reward_dist"]
    env = gym.make("ReacherPlane-v0", reward_fn="my_rewards_mod:broken")
    env.reset(seed=0)
    with pytest.raises(ValueError, match="reward_fn returned nan"):
        env.step(np.zeros(2, dtype=np.float32))
    sys.modules.pop("my_rewards_mod", None)


LEGACY_CASES = [
    (env_id, mode, shaping)
    for env_id in ("ReacherPlane-v0", "Reacher3D-v0")
    for mode in ("state", "pixels", "state+pixels")
    for shaping in (False, True)
]


@pytest.mark.parametrize("env_id, reward_mode, shaping", LEGACY_CASES)
def test_reacher_options_are_exact_presets(env_id, reward_mode, shaping):
    wc, ws, wp = 0.3, 1.7, 2.5
    env = gym.make(
        env_id,
        reward_mode=reward_mode,
        potential_shaping=shaping,
        ctrl_cost_weight=wc,
        state_reward_weight=ws,
        pixel_reward_weight=wp,
        obs_mode="pixels",
        width=24,
        height=24,
    )
    u = env.unwrapped
    assert u.reward_spec == legacy_spec(reward_mode, shaping, wc, ws, wp)
    assert u.reward_mode == reward_mode
    state, pixels = reward_mode != "pixels", reward_mode != "state"
    _, info = env.reset(seed=3)
    prev = info["distance"]
    rng = np.random.default_rng(1)
    for _ in range(6):
        action = rng.uniform(-1, 1, env.action_space.shape).astype(np.float32)
        frame, reward, _, _, info = env.step(action)
        # The documented formulas, evaluated here with the same floating-point operations.
        a = action.astype(np.float64)
        diff = u.keypoints - u.target_keypoints
        distance = math.sqrt(float(diff.dot(diff)))
        expected = {
            "reward_ctrl": -wc * float(a.dot(a)),
            "distance": distance,
            "is_success": distance < u.success_threshold,
        }
        total = expected["reward_ctrl"]
        if state:
            expected["reward_dist"] = -ws * distance
            expected["reward_potential"] = ws * (prev - distance) if shaping else 0.0
            total = total + (expected["reward_dist"] + expected["reward_potential"])
        if pixels:
            d = frame.reshape(-1).astype(np.float64) - u.render_goal().reshape(-1).astype(np.float64)
            mse = float(d @ d) * (1.0 / (255.0 * 255.0 * 24 * 24 * 3))
            expected["reward_pixels"] = -wp * mse
            expected["pixel_mse"] = mse
            total = total + expected["reward_pixels"]
        assert list(info) == list(expected)  # same keys, same order
        for key, value in expected.items():
            assert info[key] == value and type(info[key]) is type(value), key
        assert reward == total
        prev = distance
    env.close()


GOAL_REWARDS = "keypoint_distance+0.5*potential+end_effector+0.1*ctrl+velocity+electricity"


@pytest.mark.parametrize("env_id, ee_rows", [("Reacher3D-v0", [0, 1]), ("TargetHumanoid-v0", [1, 3, 5, 7])])
def test_goal_conditioned_compute_reward_recomputes_the_step_reward(env_id, ee_rows):
    env = gym.make(env_id, goal_conditioned=True, rewards=GOAL_REWARDS)
    u = env.unwrapped
    assert u.potential_shaping
    env.reset(seed=5)
    ag, dg, infos, rewards = [], [], [], []
    for _ in range(12):
        obs, reward, _, _, info = env.step(env.action_space.sample())
        # Equal up to rounding (vectorised sums may round differently from the step's dot).
        assert u.compute_reward(obs["achieved_goal"], obs["desired_goal"], info) == pytest.approx(
            reward, rel=1e-12, abs=1e-12
        )
        ag.append(obs["achieved_goal"])
        dg.append(obs["desired_goal"])
        infos.append(info)
        rewards.append(reward)
    ag, dg, rewards = np.stack(ag), np.stack(dg), np.array(rewards)
    np.testing.assert_allclose(u.compute_reward(ag, dg, infos), rewards, rtol=1e-12, atol=1e-12)
    keys = ("reward_ctrl", "reward_velocity", "reward_electricity", "prev_achieved_goal")
    batched = {k: np.stack([i[k] for i in infos]) for k in keys}
    np.testing.assert_allclose(u.compute_reward(ag, dg, batched), rewards, rtol=1e-12, atol=1e-12)
    # Relabelled goals (HER): the goal-dependent terms are recomputed, the goal-free ones
    # (ctrl, electricity, velocity) are read back from info.
    relabelled = u.compute_reward(ag, ag, batched)
    assert np.all(relabelled >= rewards - 1e-12)
    prev_to_goal = np.linalg.norm(batched["prev_achieved_goal"] - ag, axis=-1)
    expected = (batched["reward_ctrl"] + batched["reward_electricity"]) + (
        0.5 * prev_to_goal + 0.15 + batched["reward_velocity"]
    )
    np.testing.assert_allclose(relabelled, expected, rtol=1e-12)
    with pytest.raises(KeyError):
        u.compute_reward(ag, dg, {"reward_ctrl": batched["reward_ctrl"]})
    env.close()
    # A user callable is given the batched term values.
    env = gym.make(
        env_id,
        goal_conditioned=True,
        rewards="keypoint_distance+end_effector",
        reward_fn=lambda t, info: np.minimum(t["keypoint_distance"], -t["end_effector"]),
    )
    err = (ag - dg).reshape(len(ag), -1, 3)[:, ee_rows]
    expected = np.minimum(-np.linalg.norm(ag - dg, axis=-1), -0.15 * np.exp(-40 * np.sum(err**2, axis=(1, 2))))
    np.testing.assert_allclose(env.unwrapped.compute_reward(ag, dg, infos), expected, rtol=1e-12)
    env.close()


def test_spec_validation_and_str():
    with pytest.raises(ValueError, match="is not one of"):
        RewardSpec((("nope", 1.0),))
    spec = RewardSpec((("pose", 0.65), ("ctrl", 0.01)))
    assert str(spec) == "0.65*pose+0.01*ctrl"
    # Every term documents itself.
    for term in REWARD_TERMS.values():
        assert term.formula and term.unit and term.source and term.default_weight > 0
        assert term.kind in ("action", "state", "pixels")
        assert (term.from_goals is not None) == (term.goal_source == "goals")


def test_cli_env_kwargs_pass_a_reward_string():
    envs = pytest.importorskip("visfore.data.envs")
    kwargs = envs.parse_env_kwargs(["rewards=keypoint_distance+0.1*ctrl,show_target=False"])
    assert kwargs == {"rewards": "keypoint_distance+0.1*ctrl", "show_target": False}
    kwargs = envs.parse_env_kwargs(['{"rewards": {"pose": 0.65, "end_effector": 0.15}}'])
    env = gym.make("TargetHumanoid-v0", **kwargs)
    # (JSON keys come back sorted; the order only sets the summation order.)
    assert sorted(env.unwrapped.reward_spec.weights) == [("end_effector", 0.15), ("pose", 0.65)]
    env.close()
