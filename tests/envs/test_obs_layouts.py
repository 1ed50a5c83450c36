"""obs_layout: the v5 and Roboschool observation layouts (and action orders) on both
locomotion backends, so a policy trained on one backend can be evaluated on the other.

Checks: equal observation spaces per (robot, layout) across backends, the env checker on
the new combinations, equal observations of the two backends at the nominal zero pose
(both layouts), pose/sign conventions, the ant's action permutation, the Euler helper.
"""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

pybullet = pytest.importorskip("pybullet")

import visfore_envs  # noqa: E402,F401  (registers the ids)
from visfore_envs.locomotion import (  # noqa: E402
    ROBOSCHOOL_JOINTS,
    _euler_from_quat_wxyz,
    action_permutation,
)

IDS = {
    "hopper": "PerturbHopper-v0",
    "walker2d": "PerturbWalker2d-v0",
    "half_cheetah": "PerturbHalfCheetah-v0",
    "ant": "PerturbAnt-v0",
}
LAYOUTS = ("v5", "roboschool")
SHAPES = {
    ("hopper", "v5"): (11,),
    ("walker2d", "v5"): (17,),
    ("half_cheetah", "v5"): (17,),
    ("ant", "v5"): (105,),
    ("hopper", "roboschool"): (15,),
    ("walker2d", "roboschool"): (22,),
    ("half_cheetah", "roboschool"): (26,),
    ("ant", "roboschool"): (28,),
}


def _make(robot, backend, layout, **kw):
    return gym.make(IDS[robot], backend=backend, obs_layout=layout, **kw).unwrapped


def _zero_pose(mj, pb):
    """Both envs at the nominal initial pose, joints at 0, at rest (no reset noise)."""
    om, _ = mj.reset(seed=0)
    pb.reset(seed=0)
    for j in pb._joint_ids:
        pb._p.resetJointState(pb._robot_id, j, 0.0, 0.0)
    pb._initial_z = None
    pb._state = pb._calc_state()
    pb._potential = pb._calc_potential()
    return np.asarray(om), np.asarray(pb._observation())


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("robot", list(IDS))
def test_spaces_equal_across_backends(robot, layout):
    spaces = [_make(robot, b, layout).observation_space for b in ("mujoco", "pybullet")]
    assert spaces[0].shape == spaces[1].shape == SHAPES[robot, layout]
    assert spaces[0] == spaces[1]  # dtype and bounds too (float64 v5, float32 [-5, 5])
    acts = [_make(robot, b, layout).action_space for b in ("mujoco", "pybullet")]
    assert acts[0].shape == acts[1].shape


def test_defaults_and_bad_layout():
    assert _make("hopper", "mujoco", None).obs_layout == "v5"
    assert _make("hopper", "pybullet", None).obs_layout == "roboschool"
    for backend in ("mujoco", "pybullet"):
        with pytest.raises(ValueError, match="'bogus'.*'v5'.*'roboschool'"):
            _make("hopper", backend, "bogus")


@pytest.mark.parametrize(
    "robot,backend",
    [(r, "mujoco") for r in IDS] + [(r, "pybullet") for r in IDS],
)
def test_check_env_other_layout(robot, backend):
    layout = "roboschool" if backend == "mujoco" else "v5"
    env = _make(robot, backend, layout)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_env(env, skip_render_check=True)
    env.close()


@pytest.mark.parametrize("backend,layout", [("mujoco", "roboschool"), ("pybullet", "v5")])
def test_state_pixels_uses_layout(backend, layout):
    env = _make("hopper", backend, layout, obs_mode="state+pixels", width=16, height=16)
    obs, _ = env.reset(seed=0)
    assert obs["state"].shape == SHAPES["hopper", layout]
    assert env.observation_space["state"].shape == SHAPES["hopper", layout]
    env.close()


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("robot", list(IDS))
def test_backends_agree_at_nominal_pose(robot, layout):
    mj = _make(robot, "mujoco", layout, reset_noise_scale=0.0)
    pb = _make(robot, "pybullet", layout)
    om, ob = _zero_pose(mj, pb)
    # Same initial observation: heights, orientation, joints (normalised with the
    # PyBullet port's limits in the Roboschool layout), zero velocities and contacts.
    np.testing.assert_allclose(om, ob, atol=1e-5)
    z = 0 if layout == "v5" else None
    zero = np.zeros(mj.action_space.shape, dtype=np.float32)
    for _ in range(10):
        om = np.asarray(mj.step(zero)[0])
        ob = np.asarray(pb.step(zero)[0])
    if z is not None:
        # After 10 zero-torque steps the torso has dropped alike (within 3 cm). What does
        # not hold: velocities and joint angles, since the two simulators differ (MuJoCo's
        # v5 models have joint damping/armature and other limits; pybullet_envs runs
        # undamped), and the ant's contact forces are zeros on PyBullet.
        assert abs(om[z] - ob[z]) < 0.03, (om[z], ob[z])
    else:
        # Roboschool layout: height change relative to the initial height, within 3 cm.
        assert abs(om[0] - ob[0]) < 0.03, (om[0], ob[0])
        np.testing.assert_allclose(om[1:3], ob[1:3], atol=1e-3)  # sin/cos to target


@pytest.mark.parametrize("robot", ["hopper", "walker2d", "half_cheetah"])
def test_pose_sign_conventions(robot):
    """Same torso pitch and joint angles set on both backends read the same."""
    mj = _make(robot, "mujoco", "v5", reset_noise_scale=0.0)
    pb = _make(robot, "pybullet", "v5")
    _zero_pose(mj, pb)
    n = len(ROBOSCHOOL_JOINTS[robot])
    angles = np.linspace(-0.3, 0.2, n)
    qpos = mj.init_qpos.copy()
    qpos[2] = 0.15  # rooty: pitch about +y
    qpos[3:] = angles
    mj.set_state(qpos, mj.init_qvel)
    p, body = pb._p, pb._robot_id
    for j, a in zip(pb._joint_ids, angles):
        p.resetJointState(body, j, float(a), 0.0)
    pitch_joint = [
        j for j in range(p.getNumJoints(body))
        if p.getJointInfo(body, j)[1].decode() in ("ignore3", "ignorey")
    ][0]  # fmt: skip
    p.resetJointState(body, pitch_joint, 0.15, 0.0)
    om, ob = mj._v5_observation(), pb._v5_state()
    np.testing.assert_allclose(ob[1], 0.15, atol=1e-6)
    np.testing.assert_allclose(om[1 : 2 + n], ob[1 : 2 + n], atol=1e-6)


def test_ant_action_permutation():
    perm = action_permutation("ant", "v5", "roboschool")
    np.testing.assert_array_equal(perm, [2, 3, 4, 5, 6, 7, 0, 1])
    inv = action_permutation("ant", "roboschool", "v5")
    np.testing.assert_array_equal(np.arange(8)[perm][inv], np.arange(8))
    for robot in ("hopper", "walker2d", "half_cheetah"):
        assert action_permutation(robot, "v5", "roboschool") is None

    rng = np.random.default_rng(0)
    actions_v5 = rng.uniform(-1, 1, size=(5, 8)).astype(np.float32)

    # MuJoCo: Roboschool-ordered actions drive the joints v5-ordered actions drive.
    a = _make("ant", "mujoco", "v5")
    b = _make("ant", "mujoco", "roboschool")
    a.reset(seed=3)
    b.reset(seed=3)
    for act in actions_v5:
        ra = a.step(act)[1]
        rb = b.step(act[perm])[1]
        np.testing.assert_array_equal(a.data.qpos, b.data.qpos)
        assert ra == rb
    # each actuator's joint is the one named at that index of the layout's order
    m = b.model
    joint_of_ctrl = [m.joint(m.actuator_trnid[k, 0]).name for k in range(m.nu)]
    e = np.zeros(8, dtype=np.float32)
    e[0] = 0.5  # Roboschool index 0 = hip_1
    b.step(e)
    assert joint_of_ctrl[int(np.flatnonzero(b.data.ctrl)[0])] == "hip_1"

    # PyBullet: v5-ordered actions on the v5 layout = the same torques as the
    # joint-ordered actions on the default layout.
    c = _make("ant", "pybullet", "roboschool")
    d = _make("ant", "pybullet", "v5")
    c.reset(seed=3)
    d.reset(seed=3)
    for act in actions_v5:
        rc = c.step(act[perm])[1]
        rd = d.step(act)[1]
        np.testing.assert_array_equal(c._state, d._state)
        assert rc == rd
    c.close()
    d.close()


def test_feet_contacts_mujoco_roboschool():
    env = _make("hopper", "mujoco", "roboschool")
    obs, _ = env.reset(seed=0)
    assert obs[-1] == 0.0
    zero = np.zeros(3, dtype=np.float32)
    for _ in range(30):
        obs = env.step(zero)[0]
    assert obs[-1] == 1.0  # the foot has landed
    assert obs.dtype == np.float32 and np.all(np.abs(obs) <= 5)


def test_euler_matches_pybullet():
    rng = np.random.default_rng(1)
    for _ in range(50):
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        w, x, y, z = q
        expected = pybullet.getEulerFromQuaternion([x, y, z, w])
        np.testing.assert_allclose(_euler_from_quat_wxyz(q), expected, atol=1e-9)


@pytest.mark.parametrize("backend,layout", [("mujoco", "roboschool"), ("pybullet", "v5")])
def test_pickle_and_randomize_keep_layout(backend, layout):
    import pickle

    env = _make("walker2d", backend, layout, randomize=(0.8, 1.2))
    clone = pickle.loads(pickle.dumps(env))
    assert clone.obs_layout == layout
    for e in (env, clone):
        for seed in (0, 1):  # a new body each reset (the MuJoCo model is rebuilt)
            obs, _ = e.reset(seed=seed)
            assert obs.shape == SHAPES["walker2d", layout]
            obs = e.step(np.zeros(6, dtype=np.float32))[0]
            assert e.observation_space.contains(obs)
        e.close()
