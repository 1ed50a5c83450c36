"""Vector environments, including forking after the parent process rendered."""

from __future__ import annotations

import functools

import gymnasium as gym
import numpy as np
import pytest

import visfore_envs  # noqa: F401


def _make(env_id, **kwargs):
    return gym.make(env_id, **kwargs)


def test_async_vector_env_with_pixels_after_parent_rendered():
    # The parent renders first: Mesa's llvmpipe would hang the forked children unless
    # LP_NUM_THREADS=0 (set by visfore_envs on import).
    parent = gym.make("ReacherPlane-v0", obs_mode="pixels")
    parent.reset(seed=0)
    assert parent.unwrapped._renderer.is_open
    fns = [functools.partial(_make, "ReacherPlane-v0", obs_mode="state+pixels", reward_mode="state+pixels")] * 2
    envs = gym.vector.AsyncVectorEnv(fns)  # default start method (fork on Linux)
    try:
        obs, _ = envs.reset(seed=[1, 2])
        assert obs["pixels"].shape == (2, 64, 64, 3) and obs["pixels"].dtype == np.uint8
        assert obs["state"].shape == (2, 14)
        assert np.any(obs["pixels"][0] != obs["pixels"][1])
        for _ in range(10):
            obs, reward, terminated, truncated, info = envs.step(envs.action_space.sample())
        assert reward.shape == (2,) and np.all(np.isfinite(reward))
        assert "reward_pixels" in info and "distance" in info
    finally:
        envs.close(terminate=True)
    parent.close()


@pytest.mark.parametrize("env_id", ["ReacherPlane-v0", "Reacher3D-v0"])
def test_sync_vector_env_matches_single_envs(env_id):
    fns = [functools.partial(_make, env_id, obs_mode="state+pixels", width=32, height=32)] * 2
    envs = gym.vector.SyncVectorEnv(fns)
    obs, _ = envs.reset(seed=[3, 4])
    single = gym.make(env_id, obs_mode="state+pixels", width=32, height=32)
    ref, _ = single.reset(seed=4)
    np.testing.assert_array_equal(obs["state"][1], ref["state"])
    np.testing.assert_array_equal(obs["pixels"][1], ref["pixels"])
    actions = envs.action_space.sample()
    obs, reward, *_ = envs.step(actions)
    ref, ref_reward, *_ = single.step(actions[1])
    np.testing.assert_array_equal(obs["pixels"][1], ref["pixels"])
    assert reward[1] == ref_reward
    envs.close()
    single.close()


def test_async_vector_env_goal_conditioned_state():
    fns = [functools.partial(_make, "Reacher3D-v0", goal_conditioned=True)] * 2
    envs = gym.vector.AsyncVectorEnv(fns)
    try:
        obs, _ = envs.reset(seed=0)
        assert obs["observation"].shape == (2, 9)
        assert obs["desired_goal"].shape == (2, 6)
        envs.step(envs.action_space.sample())
    finally:
        envs.close(terminate=True)
