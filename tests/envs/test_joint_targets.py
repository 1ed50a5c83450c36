"""joint_targets=True: the state vector ends with q* - q for joint-space reaching policies."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import visfore_envs  # noqa: F401  (registers the ids)

IDS = ("ReacherPlane-v0", "Reacher3D-v0", "TargetHumanoid-v0")


@pytest.mark.parametrize("env_id", IDS)
def test_state_is_the_default_state_plus_the_joint_difference(env_id):
    env, plain = gym.make(env_id, joint_targets=True), gym.make(env_id)
    u = env.unwrapped
    nq = u.model.nq
    assert env.observation_space.shape == (plain.observation_space.shape[0] + nq,)
    obs, _ = env.reset(seed=4)
    ref, _ = plain.reset(seed=4)
    rng = np.random.default_rng(0)
    for _ in range(5):
        np.testing.assert_array_equal(obs[:-nq], ref)
        np.testing.assert_allclose(obs[-nq:], u.target_qpos - u.data.qpos, atol=1e-12)
        a = rng.uniform(-1, 1, env.action_space.shape).astype(np.float32)
        obs, *_ = env.step(a)
        ref, *_ = plain.step(a)
    assert np.abs(obs[-nq:]).max() > 0.05  # a real difference, not zeros
    env.close()
    plain.close()


def test_unlimited_hinge_differences_wrap():
    env = gym.make("ReacherPlane-v0", joint_targets=True)
    # Target +3 rad, arm at -3 rad: the short way round is 6 - 2 pi = -0.283 rad.
    obs, _ = env.reset(seed=0, options={"target_qpos": [3.0, 0.0], "qpos": [-3.0, 0.0], "qvel": [0.0, 0.0]})
    np.testing.assert_allclose(obs[-2:], [6.0 - 2 * np.pi, 0.0], atol=1e-12)
    env.close()


def test_check_env_and_state_pixels():
    env = gym.make("TargetHumanoid-v0", joint_targets=True, obs_mode="state+pixels")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_env(env.unwrapped, skip_render_check=True)
    obs, _ = env.reset(seed=1)
    assert obs["state"].shape == (90,) and obs["pixels"].shape == (64, 64, 3)
    env.close()


@pytest.mark.parametrize(
    "env_id,kwargs,message",
    [
        ("ReacherPlane-v0", {"goal_conditioned": True}, "joint_targets=True needs a state observation"),
        ("ReacherPlane-v0", {"obs_mode": "pixels"}, "obs_mode='pixels'"),
        ("MimicReacher-v0", {}, "not available in mimic envs"),
    ],
)
def test_refused_where_it_has_no_meaning(env_id, kwargs, message):
    with pytest.raises(ValueError, match=message):
        gym.make(env_id, joint_targets=True, **kwargs)
