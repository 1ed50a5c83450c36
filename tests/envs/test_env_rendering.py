"""Frames: the target ghost, the goal frame and pixel reward, laziness, render()."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import visfore_envs  # noqa: F401
from visfore_envs import REACHER_IDS as ENV_IDS


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_target_ghost_is_visible(env_id):
    frames = {}
    for show in (True, False):
        env = gym.make(env_id, obs_mode="pixels", show_target=show)
        frames[show], _ = env.reset(seed=11)
        env.close()
    differ = np.any(frames[True] != frames[False], axis=-1)
    assert differ.sum() >= 20  # a ghost arm and markers, not a stray pixel

    # The ghost's key-point markers are red: the frame with the target has more red pixels.
    def red(f):
        f = f.astype(int)
        return int(np.sum((f[..., 0] > 150) & (f[..., 1] < 90) & (f[..., 2] < 90)))

    assert red(frames[True]) > red(frames[False])


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_goal_frame_gives_zero_pixel_reward_at_target(env_id):
    env = gym.make(env_id, obs_mode="pixels", reward_mode="pixels", render_mode="rgb_array")
    u = env.unwrapped
    env.reset(seed=2)
    target = u.target_qpos
    nv = u.model.nv
    # Far from the target the pixel reward is clearly negative ...
    _, _, _, _, info = env.step(np.zeros(env.action_space.shape, dtype=np.float32))
    far = info["pixel_mse"]
    assert far > 1e-3
    # ... and with the arm at the target configuration the frame is the goal frame.
    u.set_state(target, np.zeros(nv))
    np.testing.assert_array_equal(env.render(), u.render_goal())
    env.reset(seed=2, options={"target_qpos": target, "qpos": target, "qvel": np.zeros(nv)})
    obs, reward, _, _, info = env.step(np.zeros(env.action_space.shape, dtype=np.float32))
    assert info["pixel_mse"] < 1e-5 < far
    assert info["reward_pixels"] == pytest.approx(0.0, abs=1e-5)
    np.testing.assert_allclose(
        info["pixel_mse"],
        np.mean((obs / 255.0 - u.render_goal() / 255.0) ** 2),
        rtol=1e-9,
    )
    env.close()


class _CountingRenderer:
    def __init__(self, renderer):
        self.inner, self.calls = renderer, 0

    def render(self, data):
        self.calls += 1
        return self.inner.render(data)

    def close(self):
        self.inner.close()


def test_rendering_is_lazy_and_once_per_step():
    env = gym.make("ReacherPlane-v0")  # state obs, state reward: never renders
    env.reset(seed=0)
    for _ in range(5):
        env.step(env.action_space.sample())
    assert not env.unwrapped._renderer.is_open
    env.close()

    # The data-collection setting: one render per step, none for the goal frame.
    env = gym.make("ReacherPlane-v0", obs_mode="state+pixels", render_mode="rgb_array")
    counter = env.unwrapped._renderer = _CountingRenderer(env.unwrapped._renderer)
    obs, _ = env.reset(seed=0)
    assert counter.calls == 1
    for i in range(5):
        obs, *_ = env.step(env.action_space.sample())
        np.testing.assert_array_equal(env.render(), obs["pixels"])
        assert counter.calls == 2 + i
    env.close()

    # Pixel reward: the goal frame once per episode plus the observation frame.
    env = gym.make("ReacherPlane-v0", obs_mode="pixels", reward_mode="pixels")
    counter = env.unwrapped._renderer = _CountingRenderer(env.unwrapped._renderer)
    env.reset(seed=0)
    for _ in range(3):
        env.step(env.action_space.sample())
    assert counter.calls == 1 + 1 + 3
    env.close()


def test_render_modes_and_close():
    env = gym.make("Reacher3D-v0", render_mode="rgb_array", width=40, height=30)
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (30, 40, 3) and frame.dtype == np.uint8 and frame.std() > 1
    renderer = env.unwrapped._renderer
    assert renderer.is_open
    env.close()
    assert not renderer.is_open
    env.close()  # idempotent
    np.testing.assert_array_equal(env.render(), frame)  # a new context renders the same

    env = gym.make("Reacher3D-v0")
    env.reset(seed=0)
    with pytest.warns(UserWarning, match="render_mode"):
        assert env.unwrapped.render() is None
    env.close()


def test_free_camera_options_change_the_view():
    frames = []
    for kwargs in ({}, {"camera_azimuth": 45.0}, {"camera_distance": 1.5}, {"camera_lookat": (0.1, 0, 0.2)}):
        env = gym.make("Reacher3D-v0", obs_mode="pixels", **kwargs)
        frames.append(env.reset(seed=0)[0])
        env.close()
    for other in frames[1:]:
        assert np.any(other != frames[0])
