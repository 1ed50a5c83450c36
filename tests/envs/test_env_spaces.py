"""Observation/action spaces, the gymnasium env checker and option validation."""

from __future__ import annotations

import pickle
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import visfore_envs  # noqa: F401
from visfore_envs import REACHER_IDS as ENV_IDS
from visfore_envs import ReacherPlaneEnv

OBS_MODES = ("state", "pixels", "state+pixels")
# (state dim, proprio dim, goal dim, action dim)
DIMS = {"ReacherPlane-v0": (14, 6, 4, 2), "Reacher3D-v0": (21, 9, 6, 3)}


def _assert_box(space, obs, shape, dtype):
    assert isinstance(space, gym.spaces.Box)
    assert space.shape == shape and space.dtype == dtype
    assert isinstance(obs, np.ndarray) and obs.shape == shape and obs.dtype == dtype
    assert space.contains(obs)


@pytest.mark.parametrize("env_id", ENV_IDS)
@pytest.mark.parametrize("obs_mode", OBS_MODES)
def test_observation_shapes_and_dtypes(env_id, obs_mode):
    state_dim, _, _, action_dim = DIMS[env_id]
    env = gym.make(env_id, obs_mode=obs_mode, width=48, height=40)
    assert env.action_space.shape == (action_dim,) and env.action_space.dtype == np.float32
    assert env.unwrapped.action_dim == action_dim
    for obs in (env.reset(seed=0)[0], env.step(env.action_space.sample())[0]):
        if obs_mode == "state":
            _assert_box(env.observation_space, obs, (state_dim,), np.float64)
        elif obs_mode == "pixels":
            _assert_box(env.observation_space, obs, (40, 48, 3), np.uint8)
        else:
            assert set(obs) == {"state", "pixels"}
            _assert_box(env.observation_space["state"], obs["state"], (state_dim,), np.float64)
            _assert_box(env.observation_space["pixels"], obs["pixels"], (40, 48, 3), np.uint8)
    env.close()


@pytest.mark.parametrize("env_id", ENV_IDS)
@pytest.mark.parametrize("obs_mode", OBS_MODES)
def test_goal_conditioned_shapes(env_id, obs_mode):
    _, proprio_dim, goal_dim, _ = DIMS[env_id]
    env = gym.make(env_id, obs_mode=obs_mode, goal_conditioned=True)
    obs, _ = env.reset(seed=1)
    assert set(obs) == {"observation", "achieved_goal", "desired_goal"}
    space = env.observation_space
    for key in ("achieved_goal", "desired_goal"):
        _assert_box(space[key], obs[key], (goal_dim,), np.float64)
    u = env.unwrapped
    np.testing.assert_array_equal(obs["achieved_goal"], u.keypoints)
    np.testing.assert_array_equal(obs["desired_goal"], u.target_keypoints)
    inner = obs["observation"]
    if obs_mode == "state":
        _assert_box(space["observation"], inner, (proprio_dim,), np.float64)
    elif obs_mode == "pixels":
        _assert_box(space["observation"], inner, (64, 64, 3), np.uint8)
    else:
        _assert_box(space["observation"]["state"], inner["state"], (proprio_dim,), np.float64)
        _assert_box(space["observation"]["pixels"], inner["pixels"], (64, 64, 3), np.uint8)
    env.close()


def _check(env):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env.unwrapped, skip_render_check=True)
    # gymnasium's own MuJoCo envs get the same infinite-bound notices; nothing else allowed.
    other = [str(w.message) for w in caught if "infinity" not in str(w.message)]
    assert not other, other


@pytest.mark.parametrize("env_id", ENV_IDS)
@pytest.mark.parametrize("obs_mode", OBS_MODES)
def test_check_env(env_id, obs_mode):
    env = gym.make(env_id, obs_mode=obs_mode, reward_mode="state+pixels", potential_shaping=True)
    _check(env)
    env.close()


@pytest.mark.parametrize("env_id", ENV_IDS)
@pytest.mark.parametrize("obs_mode", OBS_MODES)
def test_check_env_goal_conditioned(env_id, obs_mode):
    env = gym.make(env_id, obs_mode=obs_mode, goal_conditioned=True, potential_shaping=True)
    _check(env)
    env.close()


def test_state_layout_reacher_plane():
    env = gym.make("ReacherPlane-v0")
    obs, _ = env.reset(seed=3)
    obs, *_ = env.step(np.array([0.5, -0.5], dtype=np.float32))
    u = env.unwrapped
    q, dq = u.data.qpos, u.data.qvel
    np.testing.assert_allclose(obs[0:2], np.cos(q))
    np.testing.assert_allclose(obs[2:4], np.sin(q))
    np.testing.assert_allclose(obs[4:6], dq)
    np.testing.assert_allclose(obs[6:10], u.keypoints - u.target_keypoints)
    np.testing.assert_allclose(obs[10:14], u.target_keypoints)
    env.close()


def test_state_layout_reacher_3d():
    env = gym.make("Reacher3D-v0")
    obs, _ = env.reset(seed=3)
    obs, *_ = env.step(np.array([0.5, -0.5, 0.2], dtype=np.float32))
    u = env.unwrapped
    np.testing.assert_allclose(obs[0:3], np.cos(u.data.qpos))
    np.testing.assert_allclose(obs[3:6], np.sin(u.data.qpos))
    np.testing.assert_allclose(obs[6:9], u.data.qvel)
    np.testing.assert_allclose(obs[9:15], u.keypoints - u.target_keypoints)
    np.testing.assert_allclose(obs[15:21], u.target_keypoints)
    env.close()


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"obs_mode": "rgb"}, "obs_mode='rgb' is not one of 'state', 'pixels', 'state+pixels'"),
        ({"reward_mode": "sparse"}, "reward_mode='sparse' is not one of 'state', 'pixels', 'state+pixels'"),
        ({"width": 0}, "width=0"),
        ({"height": -3}, "height=-3"),
        ({"width": 64.5}, "width=64.5"),
        ({"height": "64"}, "height='64'"),
        ({"frame_skip": 0}, "frame_skip=0"),
        ({"render_mode": "human"}, "render_mode='human' is not one of None, 'rgb_array'"),
        ({"camera": "nope"}, "camera='nope' is not one of 'top'"),
        ({"camera": "top", "camera_distance": 1.0}, "camera_distance=1.0"),
        ({"camera_distance": -1.0}, "camera_distance=-1.0"),
        ({"camera_lookat": (0, 0)}, "camera_lookat=(0, 0)"),
        ({"ctrl_cost_weight": -0.1}, "ctrl_cost_weight=-0.1"),
        ({"success_threshold": 0.0}, "success_threshold=0.0"),
        ({"goal_conditioned": "yes"}, "goal_conditioned='yes'"),
        ({"goal_conditioned": True, "reward_mode": "pixels"}, "reward_mode='pixels'"),
    ],
)
def test_invalid_options_raise_value_error(kwargs, needle):
    with pytest.raises(ValueError) as excinfo:
        ReacherPlaneEnv(**kwargs)
    message = str(excinfo.value)
    assert needle in message
    assert "\n" not in message


def test_invalid_option_through_gym_make():
    with pytest.raises(ValueError, match="obs_mode='rgb' is not one of"):
        gym.make("Reacher3D-v0", obs_mode="rgb")


def test_invalid_action_and_reset_options():
    env = gym.make("ReacherPlane-v0").unwrapped
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action shape"):
        env.step(np.zeros(3, dtype=np.float32))
    with pytest.raises(ValueError, match="'goal' is not one of"):
        env.reset(options={"goal": [0, 0]})
    with pytest.raises(ValueError, match="target_qpos"):
        env.reset(options={"target_qpos": [0.0, 0.0, 0.0]})
    env.close()


def test_named_camera_and_non_square_frames():
    env = gym.make("ReacherPlane-v0", obs_mode="pixels", camera="top", width=80, height=48)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (48, 80, 3) and obs.std() > 1.0
    env.close()


def test_pickle_roundtrip_before_and_after_render():
    env = gym.make("Reacher3D-v0", obs_mode="pixels", width=32, height=32).unwrapped
    clone = pickle.loads(pickle.dumps(env))
    assert clone.observation_space == env.observation_space
    obs, _ = env.reset(seed=4)  # renders: a GL context now exists
    clone = pickle.loads(pickle.dumps(env))
    obs2, _ = clone.reset(seed=4)
    np.testing.assert_array_equal(obs, obs2)
    env.close()
    clone.close()
