"""TargetHumanoid-v0: spaces, env checker, determinism, physics, targets, ghost, vector envs."""

from __future__ import annotations

import functools
import warnings

import gymnasium as gym
import mujoco
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import visfore_envs
from visfore_envs import HUMANOID_IDS, KEYPOINT_IDS, TargetHumanoidEnv
from visfore_envs.humanoid import HUMANOID_JOINTS, HUMANOID_KEYPOINTS

ENV_ID = "TargetHumanoid-v0"
NQ, G = 14, 24


def _make(**kwargs):
    return gym.make(ENV_ID, **kwargs)


def _check(env):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env.unwrapped, skip_render_check=True)
    other = [str(w.message) for w in caught if "infinity" not in str(w.message)]
    assert not other, other


def test_registered_exported_and_truncated_after_100_steps():
    assert HUMANOID_IDS == (ENV_ID,) and ENV_ID in KEYPOINT_IDS and ENV_ID in visfore_envs.ENV_IDS
    assert "TargetHumanoidEnv" in visfore_envs.__all__
    assert gym.spec(ENV_ID).max_episode_steps == 100
    env = _make()
    u = env.unwrapped
    assert isinstance(u, TargetHumanoidEnv)
    assert u.dt == pytest.approx(0.02)
    assert tuple(u.model.joint(i).name for i in range(u.model.njnt)) == HUMANOID_JOINTS
    assert tuple(u.model.actuator(i).name for i in range(u.model.nu)) == HUMANOID_JOINTS
    assert u.model.opt.gravity.tolist() == [0.0, 0.0, 0.0]
    # The torso is welded to the world: no free joint, every joint a limited hinge.
    assert np.all(u.model.jnt_type == int(mujoco.mjtJoint.mjJNT_HINGE))
    assert np.all(u.model.jnt_limited == 1)
    env.reset(seed=0)
    for t in range(100):
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        assert not terminated and truncated == (t == 99)
    env.close()


@pytest.mark.parametrize("obs_mode", ["state", "pixels", "state+pixels"])
def test_check_env_every_obs_mode(obs_mode):
    env = _make(obs_mode=obs_mode, reward_mode="state+pixels", potential_shaping=True, width=32, height=32)
    _check(env)
    env.close()


@pytest.mark.parametrize("obs_mode", ["state", "pixels", "state+pixels"])
def test_check_env_goal_conditioned(obs_mode):
    env = _make(obs_mode=obs_mode, goal_conditioned=True, potential_shaping=True, width=32, height=32)
    _check(env)
    obs, _ = env.reset(seed=0)
    assert obs["achieved_goal"].shape == (G,) and obs["desired_goal"].shape == (G,)
    if obs_mode == "state":
        assert obs["observation"].shape == (2 * NQ,)
    env.close()


def test_state_layout():
    env = _make()
    obs, _ = env.reset(seed=3)
    assert env.observation_space.shape == (2 * NQ + 2 * G,) == obs.shape
    assert env.action_space.shape == (NQ,) and env.action_space.dtype == np.float32
    obs, *_ = env.step(np.linspace(-1, 1, NQ).astype(np.float32))
    u = env.unwrapped
    np.testing.assert_array_equal(obs[0:14], u.data.qpos)
    np.testing.assert_array_equal(obs[14:28], u.data.qvel)
    np.testing.assert_allclose(obs[28:52], u.keypoints - u.target_keypoints)
    np.testing.assert_array_equal(obs[52:76], u.target_keypoints)
    # Key points are the sites' world positions, in HUMANOID_KEYPOINTS order.
    sites = np.concatenate([u.data.site(name).xpos for name in HUMANOID_KEYPOINTS])
    np.testing.assert_array_equal(u.keypoints, sites)
    env.close()


def test_seeded_determinism_bit_for_bit():
    kwargs = dict(obs_mode="state+pixels", reward_mode="state+pixels", potential_shaping=True, width=32, height=32)
    env_a, env_b = _make(**kwargs), _make(**kwargs)
    actions = np.random.default_rng(0).uniform(-1, 1, (15, NQ)).astype(np.float32)
    (oa, ia), (ob, ib) = env_a.reset(seed=7), env_b.reset(seed=7)
    np.testing.assert_array_equal(oa["state"], ob["state"])
    np.testing.assert_array_equal(oa["pixels"], ob["pixels"])
    assert ia == ib
    for a in actions:
        oa, ra, _, _, ia = env_a.step(a)
        ob, rb, _, _, ib = env_b.step(a)
        np.testing.assert_array_equal(oa["state"], ob["state"])
        np.testing.assert_array_equal(oa["pixels"], ob["pixels"])
        assert ra == rb and ia == ib
    env_b.reset(seed=8)
    assert not np.array_equal(env_a.unwrapped.target_qpos, env_b.unwrapped.target_qpos)
    env_a.close()
    env_b.close()


def test_targets_and_initial_states_within_joint_limits():
    env = _make().unwrapped
    low, high = env.model.jnt_range.T
    targets = []
    for seed in range(30):
        env.reset(seed=seed)
        for q in (env.target_qpos, env.data.qpos):
            assert np.all(q >= low) and np.all(q <= high)
        targets.append(env.target_qpos)
    targets = np.array(targets)
    # Uniform over the ranges: the draws spread over most of each range.
    spread = (targets.max(0) - targets.min(0)) / (high - low)
    assert np.all(spread > 0.6), spread
    env.close()


def test_random_init_pose_spreads_over_the_joint_ranges_and_is_seeded():
    env = _make(init_pose="random").unwrapped
    low, high = env.model.jnt_range.T
    starts = []
    for seed in range(30):
        env.reset(seed=seed)
        q = env.data.qpos.copy()
        assert np.all(q >= low) and np.all(q <= high)
        assert not np.array_equal(q, env.target_qpos)
        starts.append(q)
    starts = np.array(starts)
    assert np.all((starts.max(0) - starts.min(0)) / (high - low) > 0.6)
    env.reset(seed=3)
    np.testing.assert_array_equal(env.data.qpos, starts[3])
    # The default stays near home (the PPO task's start).
    home = _make().unwrapped
    home.reset(seed=3)
    assert np.abs(home.data.qpos - home.init_qpos).max() <= 0.1 + 1e-12
    with pytest.raises(ValueError, match=r"init_pose='anywhere' is not one of 'home', 'random'"):
        _make(init_pose="anywhere")
    env.close()
    home.close()


def test_actions_move_every_joint_and_a_released_pose_holds():
    env = _make()
    u = env.unwrapped
    env.reset(seed=0, options={"qpos": u.init_qpos, "qvel": np.zeros(NQ)})
    low, high = u.model.jnt_range.T
    # Push every joint toward the middle of its range (half control: no joint reaches a limit).
    action = (0.5 * np.sign((low + high) / 2 - u.data.qpos)).astype(np.float32)
    q0 = u.data.qpos.copy()
    for _ in range(5):
        env.step(action)
    assert np.all(np.abs(u.data.qpos - q0) > 0.05), u.data.qpos - q0
    assert np.all((u.data.qpos > low) & (u.data.qpos < high))
    # No gravity, no springs: with zero torque the limbs stop (damping) and stay there.
    for _ in range(50):
        env.step(np.zeros(NQ, dtype=np.float32))
    q_released = u.data.qpos.copy()
    for _ in range(50):
        env.step(np.zeros(NQ, dtype=np.float32))
    assert np.abs(u.data.qpos - q_released).max() < 0.01
    assert np.abs(u.data.qvel).max() < 1e-3
    env.close()


def test_keypoints_reach_the_target_at_the_target_configuration():
    env = _make(potential_shaping=True)
    u = env.unwrapped
    _, info = env.reset(seed=4)
    assert info["distance"] > 0.3 and not info["is_success"]
    target = u.target_qpos
    _, info = env.reset(seed=4, options={"target_qpos": target, "qpos": target, "qvel": np.zeros(NQ)})
    assert info["distance"] == 0.0 and info["is_success"]
    np.testing.assert_array_equal(u.keypoints, u.target_keypoints)
    _, reward, _, _, info = env.step(np.zeros(NQ, dtype=np.float32))
    assert info["distance"] == 0.0 and info["is_success"] and reward == 0.0
    env.close()


def test_left_and_right_limbs_are_mirror_images():
    # Mirror through the sagittal plane (y -> -y): legs and elbows keep their angles,
    # the shoulders' angles change sign (their axes are mirrored axial vectors).
    env = _make().unwrapped
    env.reset(seed=0)
    for seed in range(5):
        env.reset(seed=seed)
        q = env.target_qpos
        mirrored = q.copy()
        mirrored[4:8] = q[0:4]
        mirrored[11:13] = -q[8:10]
        mirrored[13] = q[10]
        env.set_state(mirrored, np.zeros(NQ))
        k = env.keypoints.reshape(8, 3)
        right, left = k[[0, 1, 4, 5]], k[[2, 3, 6, 7]]
        np.testing.assert_allclose(left, right * np.array([1.0, -1.0, 1.0]), atol=1e-12)
    env.close()


def _red(frame):
    f = frame.astype(int)
    return int(np.sum((f[..., 0] > 150) & (f[..., 1] < 90) & (f[..., 2] < 90)))


def test_ghost_visible_by_default_and_hidden_on_request():
    frames = {}
    for show in (True, False):
        env = _make(obs_mode="pixels", show_target=show)
        frames[show], _ = env.reset(seed=5)
        env.close()
    differ = np.any(frames[True] != frames[False], axis=-1)
    assert differ.sum() >= 40
    assert _red(frames[True]) > _red(frames[False]) + 5
    # The body fills a good part of the frame (the camera frames the whole humanoid).
    background = np.all(frames[False] < 10, axis=-1) | np.all(np.abs(frames[False].astype(int) - 217) < 40, axis=-1)
    assert 0.05 < 1.0 - background.mean() < 0.5


def test_pixel_reward_zero_at_the_target():
    env = _make(obs_mode="pixels", reward_mode="pixels", width=48, height=48)
    u = env.unwrapped
    env.reset(seed=6)
    _, _, _, _, info = env.step(np.zeros(NQ, dtype=np.float32))
    far = info["pixel_mse"]
    target = u.target_qpos
    env.reset(seed=6, options={"target_qpos": target, "qpos": target, "qvel": np.zeros(NQ)})
    obs, _, _, _, info = env.step(np.zeros(NQ, dtype=np.float32))
    assert far > 1e-3 > info["pixel_mse"]
    np.testing.assert_array_equal(obs, u.render_goal())
    env.close()


def test_async_vector_env_two_envs():
    fns = [functools.partial(_make, obs_mode="state+pixels", width=32, height=32)] * 2
    envs = gym.vector.AsyncVectorEnv(fns)
    try:
        obs, _ = envs.reset(seed=[1, 2])
        assert obs["state"].shape == (2, 76) and obs["pixels"].shape == (2, 32, 32, 3)
        assert not np.array_equal(obs["state"][0], obs["state"][1])
        for _ in range(3):
            obs, reward, terminated, truncated, info = envs.step(envs.action_space.sample())
        assert reward.shape == (2,) and np.all(np.isfinite(reward)) and "reward_dist" in info
    finally:
        envs.close(terminate=True)
