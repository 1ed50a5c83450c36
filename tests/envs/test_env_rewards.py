"""Targets, key points, dynamics, determinism and the reward terms."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest

import visfore_envs  # noqa: F401
from visfore_envs import REACHER_IDS as ENV_IDS


def analytic_keypoints(env_id: str, q: np.ndarray) -> np.ndarray:
    """Elbow and fingertip from the joint angles by hand (independent of MuJoCo)."""
    if env_id == "ReacherPlane-v0":
        a, b = q
        elbow = 0.1 * np.array([math.cos(a), math.sin(a)])
        tip = elbow + 0.11 * np.array([math.cos(a + b), math.sin(a + b)])
        return np.concatenate([elbow, tip])
    yaw, pitch, bend = q
    shoulder = np.array([0.0, 0.0, 0.3])

    def direction(elevation):
        return np.array([math.cos(yaw) * math.cos(elevation), math.sin(yaw) * math.cos(elevation), math.sin(elevation)])

    elbow = shoulder + 0.12 * direction(pitch)
    tip = elbow + 0.12 * direction(pitch + bend)
    return np.concatenate([elbow, tip])


def _rollout(env, actions):
    out = []
    for a in actions:
        obs, reward, terminated, truncated, info = env.step(a)
        out.append((obs, reward, info))
    return out


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_targets_in_joint_limits_and_keypoints_match_forward_kinematics(env_id):
    env = gym.make(env_id)
    u = env.unwrapped
    low, high = u.model.jnt_range.T.copy()
    unlimited = ~u.model.jnt_limited.astype(bool)
    low[unlimited], high[unlimited] = -math.pi, math.pi
    for seed in range(5):
        env.reset(seed=seed)
        q = u.target_qpos
        assert np.all(q >= low) and np.all(q <= high)
        np.testing.assert_allclose(u.target_keypoints, analytic_keypoints(env_id, q), atol=1e-9)
        env.step(env.action_space.sample())
        np.testing.assert_allclose(u.keypoints, analytic_keypoints(env_id, u.data.qpos), atol=1e-9)
    env.close()


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_seeded_determinism_bit_for_bit(env_id):
    kwargs = dict(
        obs_mode="state+pixels",
        reward_mode="state+pixels",
        potential_shaping=True,
        render_mode="rgb_array",
        width=32,
        height=32,
    )
    env_a, env_b = gym.make(env_id, **kwargs), gym.make(env_id, **kwargs)
    actions = np.random.default_rng(0).uniform(-1, 1, (20,) + env_a.action_space.shape)
    actions = actions.astype(np.float32)
    obs_a, info_a = env_a.reset(seed=42)
    obs_b, info_b = env_b.reset(seed=42)
    np.testing.assert_array_equal(obs_a["state"], obs_b["state"])
    np.testing.assert_array_equal(obs_a["pixels"], obs_b["pixels"])
    assert info_a == info_b
    for a in actions:
        oa, ra, _, _, ia = env_a.step(a)
        ob, rb, _, _, ib = env_b.step(a)
        np.testing.assert_array_equal(oa["state"], ob["state"])
        np.testing.assert_array_equal(oa["pixels"], ob["pixels"])
        assert ra == rb and ia == ib
        np.testing.assert_array_equal(env_a.render(), env_b.render())
    env_a.close()
    env_b.close()


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_seeds_change_targets_and_unseeded_reset_continues_stream(env_id):
    env_a, env_b = gym.make(env_id).unwrapped, gym.make(env_id).unwrapped
    env_a.reset(seed=1)
    first = env_a.target_qpos
    env_b.reset(seed=2)
    assert not np.allclose(first, env_b.target_qpos)
    env_a.reset()
    env_b.reset(seed=1)
    np.testing.assert_array_equal(first, env_b.target_qpos)
    env_b.reset()
    second = env_a.target_qpos
    assert not np.allclose(first, second)
    np.testing.assert_array_equal(second, env_b.target_qpos)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_actions_move_the_joints(env_id):
    env = gym.make(env_id)
    env.reset(seed=0)
    u = env.unwrapped
    q0 = u.data.qpos.copy()
    for _ in range(5):
        env.step(np.full(env.action_space.shape, 0.5, dtype=np.float32))
    assert np.all(np.abs(u.data.qpos - q0) > 1e-2)
    env.close()


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_state_reward_is_negative_distance_plus_control_cost(env_id):
    env = gym.make(env_id, ctrl_cost_weight=0.1)
    env.reset(seed=7)
    u = env.unwrapped
    target = analytic_keypoints(env_id, u.target_qpos)
    rng = np.random.default_rng(1)
    for _ in range(10):
        action = rng.uniform(-1, 1, env.action_space.shape).astype(np.float32)
        _, reward, _, _, info = env.step(action)
        distance = float(np.sqrt(np.sum((analytic_keypoints(env_id, u.data.qpos) - target) ** 2)))
        assert info["distance"] == pytest.approx(distance, abs=1e-9)
        assert info["reward_dist"] == pytest.approx(-distance, abs=1e-9)
        assert info["reward_potential"] == 0.0
        ctrl = -0.1 * float(np.sum(action.astype(np.float64) ** 2))
        assert info["reward_ctrl"] == pytest.approx(ctrl, rel=1e-12)
        assert reward == pytest.approx(info["reward_dist"] + ctrl, rel=1e-12)
        assert info["is_success"] == (distance < u.success_threshold)
        assert "reward_pixels" not in info and "pixel_mse" not in info
    env.close()


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_potential_shaping_telescopes(env_id):
    env = gym.make(env_id, potential_shaping=True)
    _, info = env.reset(seed=3)
    phi_initial = -info["distance"]
    total = 0.0
    truncated = False
    while not truncated:
        _, reward, _, truncated, info = env.step(env.action_space.sample())
        total += info["reward_potential"]
        assert reward == pytest.approx(info["reward_dist"] + info["reward_potential"] + info["reward_ctrl"], rel=1e-12)
    phi_final = -info["distance"]
    assert total == pytest.approx(phi_final - phi_initial, abs=1e-12)
    env.close()


def test_reward_mode_weights_and_terms():
    env = gym.make(
        "ReacherPlane-v0",
        reward_mode="state+pixels",
        state_reward_weight=2.0,
        pixel_reward_weight=10.0,
        potential_shaping=True,
        width=32,
        height=32,
    )
    env.reset(seed=0)
    _, reward, _, _, info = env.step(env.action_space.sample())
    assert info["reward_dist"] == pytest.approx(-2.0 * info["distance"])
    assert info["reward_pixels"] == pytest.approx(-10.0 * info["pixel_mse"])
    assert 0.0 < info["pixel_mse"] < 1.0
    terms = ("reward_ctrl", "reward_dist", "reward_potential", "reward_pixels")
    assert reward == pytest.approx(sum(info[k] for k in terms), rel=1e-12)
    env.close()

    env = gym.make("ReacherPlane-v0", reward_mode="pixels", width=32, height=32)
    env.reset(seed=0)
    _, reward, _, _, info = env.step(env.action_space.sample())
    assert "reward_dist" not in info and "reward_potential" not in info
    assert reward == pytest.approx(info["reward_pixels"] + info["reward_ctrl"], rel=1e-12)
    assert info["distance"] > 0.0
    env.close()


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_compute_reward_vectorised_matches_step_rewards(env_id):
    env = gym.make(env_id, goal_conditioned=True, potential_shaping=True)
    u = env.unwrapped
    obs, _ = env.reset(seed=5)
    achieved, desired, infos, rewards = [], [], [], []
    for _ in range(30):
        obs, reward, _, _, info = env.step(env.action_space.sample())
        achieved.append(obs["achieved_goal"])
        desired.append(obs["desired_goal"])
        infos.append(info)
        rewards.append(reward)
        assert u.compute_reward(obs["achieved_goal"], obs["desired_goal"], info) == pytest.approx(
            reward, rel=1e-12, abs=1e-12
        )
    ag, dg, rewards = np.stack(achieved), np.stack(desired), np.array(rewards)
    batched_info = {
        "reward_ctrl": np.array([i["reward_ctrl"] for i in infos]),
        "prev_achieved_goal": np.stack([i["prev_achieved_goal"] for i in infos]),
    }
    np.testing.assert_allclose(u.compute_reward(ag, dg, batched_info), rewards, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(u.compute_reward(ag, dg, infos), rewards, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(u.compute_reward(ag, dg, np.array(infos, dtype=object)), rewards, rtol=1e-12, atol=1e-12)
    # Extra batch axes, and relabelled goals (HER): reaching the achieved goal is best.
    shaped = u.compute_reward(
        ag.reshape(5, 6, -1),
        dg.reshape(5, 6, -1),
        {k: v.reshape((5, 6) + v.shape[1:]) for k, v in batched_info.items()},
    )
    np.testing.assert_allclose(shaped.reshape(-1), rewards, rtol=1e-12, atol=1e-12)
    relabelled = u.compute_reward(ag, ag, batched_info)
    assert np.all(relabelled >= rewards - 1e-12)
    with pytest.raises(KeyError):
        u.compute_reward(ag, dg, {"reward_ctrl": batched_info["reward_ctrl"]})
    env.close()


def test_reset_options_fix_target_and_state():
    env = gym.make("Reacher3D-v0").unwrapped
    target = np.array([0.5, 0.3, -1.0])
    env.reset(seed=0, options={"target_qpos": target, "qpos": target, "qvel": np.zeros(3)})
    np.testing.assert_array_equal(env.target_qpos, target)
    assert env.distance == pytest.approx(0.0, abs=1e-12)
    _, _, _, _, info = env.step(np.zeros(3, dtype=np.float32))
    assert info["is_success"]
    env.close()
