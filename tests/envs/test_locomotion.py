"""Perturbable locomotion (MuJoCo backend): v5 equivalence, checks, perturbations, errors."""

from __future__ import annotations

import pickle

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import visfore_envs
from visfore_envs import LOCOMOTION_IDS

V5 = {
    "PerturbHopper-v0": "Hopper-v5",
    "PerturbWalker2d-v0": "Walker2d-v5",
    "PerturbAnt-v0": "Ant-v5",
    "PerturbHalfCheetah-v0": "HalfCheetah-v5",
}


def _rollout(env, seed, steps, action_seed=0):
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(action_seed)
    trace = [obs]
    for _ in range(steps):
        action = rng.uniform(-1, 1, size=env.action_space.shape).astype(np.float32)
        obs, reward, terminated, truncated, info = env.step(action)
        trace.append((obs, reward, terminated, truncated))
        if terminated or truncated:
            break
    return trace


def _same(a, b) -> bool:
    if len(a) != len(b):
        return False
    if not np.array_equal(a[0], b[0]):
        return False
    return all(np.array_equal(x[0], y[0]) and x[1:] == y[1:] for x, y in zip(a[1:], b[1:]))


@pytest.mark.parametrize("env_id", LOCOMOTION_IDS)
def test_nominal_equals_gymnasium_v5(env_id):
    ours, theirs = gym.make(env_id), gym.make(V5[env_id])
    assert ours.observation_space == theirs.observation_space
    assert ours.action_space == theirs.action_space
    assert ours.unwrapped.dt == theirs.unwrapped.dt
    a, b = _rollout(ours, 5, 150), _rollout(theirs, 5, 150)
    assert _same(a, b), f"{env_id} diverged from {V5[env_id]}"


@pytest.mark.parametrize("env_id", LOCOMOTION_IDS)
def test_check_env_state(env_id):
    check_env(gym.make(env_id, perturbation={"friction": 0.9}).unwrapped, skip_render_check=True)


@pytest.mark.parametrize("obs_mode", ["pixels", "state+pixels"])
def test_check_env_pixels_and_frames_follow_the_robot(obs_mode):
    env = gym.make("PerturbHopper-v0", obs_mode=obs_mode, width=48, height=32, randomize="0.9-1.1")
    check_env(env.unwrapped, skip_render_check=True)
    obs, _ = env.reset(seed=0)
    frame = obs if obs_mode == "pixels" else obs["pixels"]
    assert frame.shape == (32, 48, 3) and frame.dtype == np.uint8
    frames = [frame]
    for _ in range(20):
        obs, *_ = env.step(env.action_space.sample())
        frames.append(obs if obs_mode == "pixels" else obs["pixels"])
    assert np.abs(frames[-1].astype(int) - frames[0].astype(int)).mean() > 0.5  # it moves


@pytest.mark.parametrize("env_id", LOCOMOTION_IDS)
def test_seeded_determinism_with_randomisation(env_id):
    make = lambda: gym.make(env_id, randomize="0.7-1.3")  # noqa: E731
    a, b = _rollout(make(), 11, 60), _rollout(make(), 11, 60)
    assert _same(a, b)
    c = _rollout(make(), 12, 60)
    assert not _same(a, c)


def test_randomize_draws_a_new_body_each_reset_from_the_seed():
    env = gym.make("PerturbWalker2d-v0", randomize="random")
    _, first = env.reset(seed=3)
    _, second = env.reset()
    assert first["perturbation"] != second["perturbation"]
    assert first["body_mass"] != second["body_mass"]
    _, again = gym.make("PerturbWalker2d-v0", randomize="random").reset(seed=3)
    assert again["perturbation"] == first["perturbation"]
    for key in ("friction", "actuator_gear", "thigh.mass"):
        assert first["perturbation"][key] != 1.0
    assert first["perturbation"]["thigh.length"] == 1.0


def test_info_reports_the_perturbation_and_masses():
    env = gym.make("PerturbHopper-v0", perturbation={"Lthigh": 1.3, "foot.mass": 2.0})
    _, info = env.reset(seed=0)
    nominal = gym.make("PerturbHopper-v0").reset(seed=0)[1]
    assert info["perturbation"]["thigh.length"] == 1.3
    assert info["perturbation"]["foot.mass"] == 2.0
    assert set(info["perturbation"]) == set(visfore_envs.perturbation_keys("PerturbHopper-v0"))
    assert info["body_mass"]["foot"] == pytest.approx(2 * nominal["body_mass"]["foot"])
    assert info["body_mass"]["thigh"] > nominal["body_mass"]["thigh"]
    *_, step_info = env.step(env.action_space.sample())
    assert step_info["perturbation"] == info["perturbation"]
    assert step_info["perturbation"] is not info["perturbation"]


def test_global_factors_reach_the_model():
    nominal = gym.make("PerturbAnt-v0").unwrapped.model
    env = gym.make(
        "PerturbAnt-v0",
        perturbation={"friction": 0.5, "gravity": 2.0, "actuator_gear": 1.5, "joint_damping": 3.0},
    )
    model = env.unwrapped.model
    np.testing.assert_allclose(model.geom_friction[:, 0], 0.5 * nominal.geom_friction[:, 0])
    np.testing.assert_allclose(model.geom_friction[:, 1:], nominal.geom_friction[:, 1:])
    np.testing.assert_allclose(model.opt.gravity, 2.0 * nominal.opt.gravity)
    np.testing.assert_allclose(model.actuator_gear[:, 0], 1.5 * nominal.actuator_gear[:, 0])
    np.testing.assert_allclose(model.dof_damping, 3.0 * nominal.dof_damping)


def test_lower_gravity_makes_the_hopper_fall_slower():
    def drop(gravity):
        env = gym.make("PerturbHopper-v0", perturbation={"gravity": gravity}, terminate_when_unhealthy=False)
        env.reset(seed=0)
        base = env.unwrapped
        qpos = base.init_qpos.copy()
        qpos[1] += 0.5  # half a metre above the floor
        base.set_state(qpos, np.zeros(base.model.nv))
        for _ in range(25):  # 0.2 s of free fall
            obs, *_ = env.step(np.zeros(3, dtype=np.float32))
        return qpos[1] - obs[0]

    # Free fall: 1/2 g t^2 = 0.196 m at 9.81 m/s^2, 0.3x as far at 0.3 g.
    assert drop(1.0) == pytest.approx(0.5 * 9.81 * 0.2**2, rel=0.05)
    assert drop(0.3) == pytest.approx(0.3 * drop(1.0), rel=0.05)


def test_scaled_hopper_starts_on_the_floor_and_scales_its_healthy_height():
    tall = gym.make("PerturbHopper-v0", perturbation={"thigh.length": 1.5, "leg.length": 1.5})
    short = gym.make("PerturbHopper-v0", perturbation={"thigh.length": 0.5, "leg.length": 0.5})
    for env in (tall, short):
        env.reset(seed=0)
        # Standing still for a few steps does not fall through or fly: healthy, not terminated.
        for _ in range(10):
            obs, reward, terminated, *_ = env.step(np.zeros(3, dtype=np.float32))
            assert not terminated
    low_tall = tall.unwrapped.healthy_z_range[0]
    low_short = short.unwrapped.healthy_z_range[0]
    assert low_short < 0.7 < low_tall
    # Unscaled v5 threshold would end the short hopper's episode at once.
    strict = gym.make("PerturbHopper-v0", perturbation={"thigh.length": 0.3, "leg.length": 0.3}, scale_healthy_z=False)
    strict.reset(seed=0)
    assert strict.step(np.zeros(3, dtype=np.float32))[2]


def test_pickle_and_vector_env():
    env = gym.make("PerturbHalfCheetah-v0", perturbation={"bthigh.length": 1.2})
    clone = pickle.loads(pickle.dumps(env.unwrapped))
    assert clone.perturbation["bthigh.length"] == 1.2
    vec = gym.vector.SyncVectorEnv([lambda: gym.make("PerturbHopper-v0", randomize="0.8-1.2") for _ in range(2)])
    obs, info = vec.reset(seed=[1, 2])
    assert obs.shape == (2, 11)
    lengths = info["perturbation"]["thigh.length"]  # vector infos stack per key
    assert lengths.shape == (2,) and lengths[0] != lengths[1]


def test_bad_input_is_one_clear_error():
    with pytest.raises(ValueError, match=r"unknown perturbation key 'shin.length'.*valid keys"):
        gym.make("PerturbHopper-v0", perturbation={"shin.length": 1.2})
    with pytest.raises(ValueError, match="must be a finite number > 0"):
        gym.make("PerturbHopper-v0", perturbation={"thigh.length": -1})
    with pytest.raises(ValueError, match="backend"):
        gym.make("PerturbHopper-v0", backend="bullet")
    with pytest.raises(ValueError, match="reward_mode"):
        gym.make("PerturbHopper-v0", reward_mode="pixels")
    with pytest.raises(ValueError, match="unknown option 'healthy_angle'"):
        gym.make("PerturbHopper-v0", healthy_angle=0.3)
    with pytest.raises(ValueError, match="randomize"):
        gym.make("PerturbHopper-v0", randomize="sometimes")


def test_perturbation_key_helpers():
    assert visfore_envs.resolve_perturbation_key("PerturbHopper-v0", "Wthigh") == "thigh.width"
    assert "shin.length" in visfore_envs.perturbation_keys("visfore_envs:PerturbAnt-v0")
    with pytest.raises(ValueError, match="not a perturbable env"):
        visfore_envs.perturbation_keys("ReacherPlane-v0")
