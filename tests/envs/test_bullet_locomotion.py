"""PyBullet backend of the perturbable locomotion envs (visfore_envs.bullet).

Checks: gymnasium's env checker on every id, seeded determinism, upstream's observation
sizes and reward formula, the converted MJCFs against pybullet_data's originals, and the
perturbation (connected scaling, masses, friction/gravity/gear/damping, randomisation).
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

pybullet = pytest.importorskip("pybullet")
pybullet_data = pytest.importorskip("pybullet_data")

import visfore_envs  # noqa: E402,F401  (registers the ids)
from visfore_envs.bullet import (  # noqa: E402
    BULLET_ASSETS_DIR,
    BULLET_CLASSES,
    BulletHopperEnv,
    BulletLocomotionEnv,
)
from visfore_envs.bullet.locomotion_env import _connect  # noqa: E402

BULLET_IDS = {
    "PerturbHopperBullet-v0": "hopper",
    "PerturbWalker2dBullet-v0": "walker2d",
    "PerturbAntBullet-v0": "ant",
    "PerturbHalfCheetahBullet-v0": "half_cheetah",
}
# pybullet_envs robot_locomotors.py obs_dim / action_dim
UPSTREAM_DIMS = {"hopper": (15, 3), "walker2d": (22, 6), "ant": (28, 8), "half_cheetah": (26, 6)}
REWARD_TERMS = (
    "reward_alive",
    "reward_progress",
    "reward_electricity",
    "reward_joints_at_limit",
    "reward_feet_collision",
)


def _run(env, actions):
    out = []
    for a in actions:
        obs, reward, terminated, truncated, info = env.step(a)
        out.append((obs, reward, terminated, truncated, info))
    return out


@pytest.mark.parametrize("env_id", list(BULLET_IDS))
def test_check_env_state(env_id):
    env = gym.make(env_id)
    assert env.spec.max_episode_steps == 1000
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_env(env.unwrapped, skip_render_check=True)
    env.close()


@pytest.mark.parametrize("obs_mode", ["pixels", "state+pixels"])
def test_check_env_pixels(obs_mode):
    env = gym.make("PerturbHalfCheetahBullet-v0", obs_mode=obs_mode, width=32, height=24)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_env(env.unwrapped, skip_render_check=True)
    obs, _ = env.reset(seed=0)
    frame = obs if obs_mode == "pixels" else obs["pixels"]
    assert frame.shape == (24, 32, 3) and frame.dtype == np.uint8
    assert frame.std() > 0  # not a blank image
    env.close()


def test_pixels_track_robot_and_render():
    env = BulletHopperEnv(obs_mode="state+pixels", render_mode="rgb_array")
    obs, _ = env.reset(seed=1)
    assert obs["pixels"].shape == (64, 64, 3)
    np.testing.assert_array_equal(env.render(), obs["pixels"])
    for _ in range(5):
        obs, *_ = env.step(np.ones(3, dtype=np.float32))
    np.testing.assert_array_equal(env.render(), obs["pixels"])
    env.close()
    env.close()  # idempotent


@pytest.mark.parametrize("robot", list(UPSTREAM_DIMS))
def test_upstream_dimensions(robot):
    env = BULLET_CLASSES[robot]()
    obs_dim, action_dim = UPSTREAM_DIMS[robot]
    obs, info = env.reset(seed=0)
    assert obs.shape == (obs_dim,) and obs.dtype == np.float32
    assert env.action_space.shape == (action_dim,)
    assert env.dt == pytest.approx(0.0165)
    assert set(REWARD_TERMS) <= set(info) and "x_position" in info
    assert info["perturbation"] == env.morphology.nominal()
    env.close()


@pytest.mark.parametrize("robot", ["hopper", "ant"])
def test_seeded_determinism(robot):
    cls = BULLET_CLASSES[robot]
    a, b = cls(), cls()
    actions = np.random.default_rng(7).uniform(-1, 1, (50, a.action_space.shape[0]))
    actions = (0.3 * actions).astype(np.float32)
    obs_a, _ = a.reset(seed=11)
    obs_b, _ = b.reset(seed=11)
    np.testing.assert_array_equal(obs_a, obs_b)
    run_a, run_b = _run(a, actions), _run(b, actions)
    for (oa, ra, ta, _, ia), (ob, rb, tb, _, ib) in zip(run_a, run_b):
        np.testing.assert_array_equal(oa, ob)
        assert ra == rb and ta == tb and ia == ib
    # the same env, reset again with the same seed (restoreState path), repeats it too
    obs_c, _ = a.reset(seed=11)
    np.testing.assert_array_equal(obs_c, obs_a)
    for (oa, ra, *_), (oc, rc, *_) in zip(run_a, _run(a, actions)):
        np.testing.assert_array_equal(oa, oc)
        assert ra == rc
    other, _ = b.reset(seed=12)
    assert not np.array_equal(other, obs_a)  # the joint noise comes from the seed
    a.close()
    b.close()


def test_physics_moves_and_reward_formula():
    env = gym.make("PerturbHalfCheetahBullet-v0")
    obs, info = env.reset(seed=0)
    x0 = info["x_position"]
    action = np.full(6, 0.5, dtype=np.float32)
    for _ in range(40):
        obs, reward, terminated, truncated, info = env.step(action)
        assert reward == sum(info[k] for k in REWARD_TERMS)
        assert info["reward_feet_collision"] == 0.0
        assert info["reward_alive"] in (1.0, -1.0)
        # electricity cost: -2 mean|a * joint speed| - 0.1 mean(a^2) <= -0.1 * 0.25
        assert info["reward_electricity"] <= -0.1 * 0.25 + 1e-12
        assert not terminated  # the half cheetah never terminates
    assert info["x_position"] != x0
    env.close()


def test_electricity_and_progress_terms():
    env = BulletHopperEnv()
    env.reset(seed=3)
    a = np.array([0.2, -0.4, 0.6], dtype=np.float32)
    potential = env._potential
    obs, reward, *_, info = env.step(a)
    joint_speeds = obs[9 : 9 + 6 : 2]  # 0.1 x joint speed, as upstream observes it
    expected = -2.0 * float(np.abs(a * joint_speeds).mean()) - 0.1 * float(np.square(a).mean())
    assert info["reward_electricity"] == pytest.approx(expected, rel=1e-6)
    assert info["reward_progress"] == pytest.approx(env._potential - potential)
    at_limit = np.count_nonzero(np.abs(obs[8 : 8 + 6 : 2]) > 0.99)
    assert info["reward_joints_at_limit"] == pytest.approx(-0.1 * at_limit)
    env.close()


def _link_states(path: Path) -> dict[str, tuple]:
    client = _connect()
    try:
        body = client.loadMJCF(str(path))[0]
        out = {client.getBodyInfo(body)[0].decode(): client.getBasePositionAndOrientation(body)}
        for j in range(client.getNumJoints(body)):
            name = client.getJointInfo(body, j)[12].decode()
            state = client.getLinkState(body, j)
            dyn = client.getDynamicsInfo(body, j)
            out[name] = (state[0], state[1], dyn[0], dyn[2], dyn[1])
    finally:
        client.disconnect()
    return out


@pytest.mark.parametrize("robot", list(UPSTREAM_DIMS))
def test_converted_mjcf_matches_pybullet_data(robot):
    import mujoco

    ours = BULLET_ASSETS_DIR / f"{robot}.xml"
    original = Path(pybullet_data.getDataPath()) / "mjcf" / f"{robot}.xml"
    a, b = _link_states(original), _link_states(ours)
    renamed = {"left_back_leg": "back_leg"}  # ant: gymnasium v5's name
    assert {renamed.get(k, k) for k in a} == set(b)
    for name, value in a.items():
        mine = b[renamed.get(name, name)]
        for x, y in zip(value, mine):
            np.testing.assert_allclose(np.ravel(x), np.ravel(y), atol=1e-6, err_msg=name)
    mujoco.MjModel.from_xml_path(str(ours))  # morphology.scale_mjcf poses it with MuJoCo


def test_matches_upstream_with_original_file():
    """With pybullet_data's own hopper.xml the port reproduces pybullet_envs' numbers:
    the initial observation of HopperBulletEnv seeded with 0 (recorded from pybullet 3.2.7)."""
    env = BulletHopperEnv()
    env.xml_path = Path(pybullet_data.getDataPath()) / "mjcf" / "hopper.xml"
    obs, _ = env.reset(seed=0)
    upstream = [0, 0, 1, 0, 0, 0, 0, -0.0, 1.0209262, 0, 0.964826, 0, -0.11689013, 0, 0]
    np.testing.assert_allclose(obs, upstream, atol=1e-7)
    env.close()


def _frames(env):
    p, body = env._p, env._robot_id
    links = env._links
    return {
        name: (np.array(p.getLinkState(body, i)[4]), np.array(p.getLinkState(body, i)[5]))
        for name, i in links.items()
        if i >= 0
    }


def _rotate(quat, vec):
    return np.array(pybullet.multiplyTransforms([0, 0, 0], quat, vec, [0, 0, 0, 1])[0])


def test_length_scaling_keeps_robot_connected():
    nominal, longer = BulletHopperEnv(), BulletHopperEnv(perturbation={"thigh.length": 1.3})
    nominal.reset(seed=0)
    longer.reset(seed=0)  # same joint noise: bent knee and hip
    fn, fl = _frames(nominal), _frames(longer)
    for frames, length in ((fn, 0.45), (fl, 0.45 * 1.3)):
        hip, hip_q = frames["thigh"]
        knee, _ = frames["leg"]
        # the leg's joint anchor (its frame) is at the end of the thigh segment
        np.testing.assert_allclose(knee, hip + _rotate(hip_q, [0, 0, -length]), atol=1e-6)
        np.testing.assert_allclose(np.linalg.norm(knee - hip), length, atol=1e-6)
    # the leg moved 0.135 m further from the hip, the foot still hangs from the leg
    shift = np.linalg.norm(fl["leg"][0] - fl["thigh"][0]) - np.linalg.norm(fn["leg"][0] - fn["thigh"][0])
    assert shift == pytest.approx(0.45 * 0.3, abs=1e-6)
    ankle, _ = fl["foot"]
    knee, knee_q = fl["leg"]
    np.testing.assert_allclose(ankle, knee + _rotate(knee_q, [0, 0, -0.5]), atol=1e-6)
    # the root was raised so the foot keeps its clearance; the torso starts higher
    assert longer.height_ratio == pytest.approx((1.25 + 0.135) / 1.25, abs=1e-6)
    # masses follow the geometry: the thigh capsule is 30% longer (same radius)
    r, h = 0.05, 0.45
    volume = lambda h: np.pi * r**2 * h + 4 / 3 * np.pi * r**3  # noqa: E731
    mass_n = nominal.reset(seed=0)[1]["body_mass"]
    mass_l = longer.reset(seed=0)[1]["body_mass"]
    assert mass_l["thigh"] / mass_n["thigh"] == pytest.approx(volume(1.3 * h) / volume(h), rel=1e-6)
    assert mass_l["leg"] == pytest.approx(mass_n["leg"], rel=1e-6)
    nominal.close()
    longer.close()


@pytest.mark.parametrize("robot", list(UPSTREAM_DIMS))
def test_scaled_robot_is_posed_as_mujoco_poses_it(robot):
    """PyBullet loads the scaled MJCF as MuJoCo compiles it: every body frame at the
    initial pose (before the joint noise) is where MuJoCo puts it; the robot then steps."""
    import mujoco

    cls = BULLET_CLASSES[robot]
    keys = [k for k in cls().morphology.keys() if k.endswith((".length", ".width"))]
    spec = {k: 0.7 + 0.1 * (i % 7) for i, k in enumerate(keys)}
    env = cls(perturbation=spec)
    obs, info = env.reset(seed=0)
    assert info["perturbation"] == {**env.morphology.nominal(), **spec}
    model = mujoco.MjModel.from_xml_string(env._scaled_xml()[0])
    data = mujoco.MjData(model)
    mujoco.mj_kinematics(model, data)
    env._p.restoreState(env._state_id)  # the loaded pose, before the joint noise
    p, body = env._p, env._robot_id
    for name, link in env._links.items():
        if link >= 0 and not name.startswith("link0_"):
            frame = p.getLinkState(body, link)[4]
        elif link == -1 and name == "torso":
            frame = p.getBasePositionAndOrientation(body)[0]
        else:
            continue
        np.testing.assert_allclose(frame, data.body(name).xpos, atol=1e-6, err_msg=name)
    env.reset(seed=0)
    for _ in range(20):
        obs, *_ = env.step(env.action_space.sample() * 0.2)
        assert np.isfinite(obs).all()
    env.close()


def test_joint_damping_below_one_is_nominal():
    nominal = BulletHopperEnv()
    with pytest.warns(UserWarning, match="joint_damping"):
        low = BulletHopperEnv(perturbation={"joint_damping": 0.5})
        low.reset(seed=0)
    nominal.reset(seed=0)
    a = np.full(3, 0.3, dtype=np.float32)
    for _ in range(10):
        np.testing.assert_array_equal(nominal.step(a)[0], low.step(a)[0])
    nominal.close()
    low.close()


def test_mass_factor_doubles_link_mass():
    nominal = BulletHopperEnv()
    heavy = BulletHopperEnv(perturbation={"foot.mass": 2.0})
    _, info_n = nominal.reset(seed=0)
    _, info_h = heavy.reset(seed=0)
    assert info_h["body_mass"]["foot"] == pytest.approx(2 * info_n["body_mass"]["foot"], rel=1e-9)
    for name in ("torso", "thigh", "leg"):
        assert info_h["body_mass"][name] == pytest.approx(info_n["body_mass"][name], rel=1e-9)
    # the loaded link carries it (and the inertia doubles too)
    p, body, link = heavy._p, heavy._robot_id, heavy._links["foot"]
    assert p.getDynamicsInfo(body, link)[0] == pytest.approx(2 * info_n["body_mass"]["foot"])
    nominal.close()
    heavy.close()


def test_half_cheetah_explicit_foot_mass_follows_geometry():
    # pybullet_data's cheetah gives bfoot/ffoot an explicit 10 kg; a longer foot scales it
    env = BULLET_CLASSES["half_cheetah"](perturbation={"bfoot.length": 1.5, "ffoot.mass": 0.5})
    _, info = env.reset(seed=0)
    r, h = 0.046, 2 * 0.094
    volume = lambda h: np.pi * r**2 * h + 4 / 3 * np.pi * r**3  # noqa: E731
    ratio = volume(1.5 * h) / volume(h)
    assert info["body_mass"]["bfoot"] == pytest.approx(10 * ratio, rel=1e-6)
    assert info["body_mass"]["ffoot"] == pytest.approx(5.0, rel=1e-9)
    env.close()


def test_global_factors():
    env = BulletHopperEnv(
        perturbation={
            "friction": 0.25,
            "gravity": 0.5,
            "actuator_gear": 1.5,
            "joint_damping": 3.0,
        }
    )
    env.reset(seed=0)
    p, body = env._p, env._robot_id
    # Bullet multiplies the two frictions of a contact: each side x sqrt(0.25)
    assert p.getDynamicsInfo(env._ground_id, -1)[1] == pytest.approx(0.8 * 0.5, rel=1e-6)
    assert p.getDynamicsInfo(body, env._links["foot"])[1] == pytest.approx(0.8 * 0.5, rel=1e-6)
    assert env._power == pytest.approx(0.75 * 1.5)
    # gravity: dropped with zero torques, the torso falls half as fast as at nominal
    nominal = BulletHopperEnv()
    light = BulletHopperEnv(perturbation={"gravity": 0.5})
    speeds = []
    for e in (nominal, light):
        e.reset(seed=0)
        e.step(np.zeros(3, dtype=np.float32))
        speeds.append(e._p.getLinkState(e._robot_id, e._robot_body[1], computeLinkVelocity=1)[6][2])
    assert speeds[0] == pytest.approx(-9.8 * env.dt, rel=0.02)
    assert speeds[1] / speeds[0] == pytest.approx(0.5, rel=0.01)  # (joint limits push a bit)
    light.close()
    # joint damping: (3 - 1) x the MJCF damping (1 for the hopper's joints)
    damped = env
    for e in (nominal, damped):
        e.reset(seed=0)
        e._p.setGravity(0, 0, 0)
        e._p.resetJointState(e._robot_id, e._joint_ids[2], 0.0, 5.0)
        for _ in range(5):
            e.step(np.zeros(3, dtype=np.float32))
    speed = lambda e: e._p.getJointState(e._robot_id, e._joint_ids[2])[1]  # noqa: E731
    assert abs(speed(damped)) < 0.8 * abs(speed(nominal))
    env.close()
    nominal.close()


def test_randomize_draws_differ_and_reproduce():
    a = BulletHopperEnv(randomize="random", perturbation={"thigh.length": 1.2})
    b = BulletHopperEnv(randomize="random", perturbation={"thigh.length": 1.2})
    draws_a, draws_b = [], []
    for i in range(3):
        seed = 5 if i == 0 else None
        oa, ia = a.reset(seed=seed)
        ob, ib = b.reset(seed=seed)
        np.testing.assert_array_equal(oa, ob)
        draws_a.append(ia["perturbation"])
        draws_b.append(ib["perturbation"])
        assert ia["body_mass"] == ib["body_mass"]
        assert ia["perturbation"]["thigh.length"] == 1.2  # not drawn: the fixed factor
        step_a = a.step(np.full(3, 0.1, dtype=np.float32))
        step_b = b.step(np.full(3, 0.1, dtype=np.float32))
        np.testing.assert_array_equal(step_a[0], step_b[0])
    assert draws_a == draws_b
    assert draws_a[0] != draws_a[1] != draws_a[2]
    assert draws_a[0]["friction"] != 1.0 and draws_a[0]["torso.mass"] != 1.0
    a.close()
    b.close()


def test_bad_perturbation_key():
    with pytest.raises(ValueError, match="Lnose|nose"):
        BulletHopperEnv(perturbation={"nose.length": 1.2})
    with pytest.raises(ValueError, match="thigh.length"):
        BulletHopperEnv(perturbation={"thigh.length": -1.0})
    with pytest.raises(ValueError, match="obs_mode"):
        BulletHopperEnv(obs_mode="rgb")
    with pytest.raises(ValueError, match="robot"):
        BulletLocomotionEnv("humanoid")
    env = BulletHopperEnv()
    with pytest.raises(RuntimeError):
        env.step(np.zeros(3, dtype=np.float32))
    env.reset(seed=0)
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(4, dtype=np.float32))
    env.close()


def test_pickle_and_aliases():
    env = gym.make("PerturbWalker2dBullet-v0", perturbation={"Lthigh": 1.1})
    clone = pickle.loads(pickle.dumps(env.unwrapped))
    obs_a, info_a = env.reset(seed=2)
    obs_b, info_b = clone.reset(seed=2)
    np.testing.assert_array_equal(obs_a, obs_b)
    assert info_a["perturbation"]["thigh.length"] == 1.1
    env.close()
    clone.close()
