"""Mimic pairs MimicReacher-v0 and MimicHumanoid-v0: env checker, layouts, determinism, the
leader processes, the mirror map, physics isolation, views, vector envs, bad options."""

from __future__ import annotations

import functools
import math
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import visfore_envs
from visfore_envs import (
    MIMIC_IDS,
    MimicHumanoidEnv,
    MimicReacherEnv,
    ReacherPlaneEnv,
    TargetHumanoidEnv,
)
from visfore_envs.mimic import HUMANOID_MIRROR, REACHER_MIRROR

IDS = ("MimicReacher-v0", "MimicHumanoid-v0")
# id -> (nq, proprio length P, goal length G)
DIMS = {"MimicReacher-v0": (2, 6, 4), "MimicHumanoid-v0": (14, 28, 24)}


def _make(env_id, **kwargs):
    return gym.make(env_id, **kwargs)


def _zero(env):
    return np.zeros(env.action_space.shape, dtype=np.float32)


def _check(env):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env.unwrapped, skip_render_check=True)
    other = [str(w.message) for w in caught if "infinity" not in str(w.message)]
    assert not other, other


def _leader_sites(env):
    """The leader's key points as drawn (sites of the rendering model), flat (G,)."""
    sd = env._posed_scene()
    sm = env.scene_model
    pts = np.array([sd.site_xpos[sm.site("leader/" + s).id] for s in env.keypoint_sites])
    return pts[:, list(env.keypoint_axes)].reshape(-1)


def test_registered_exported_and_truncated():
    assert MIMIC_IDS == IDS and set(IDS) <= set(visfore_envs.ENV_IDS)
    assert not set(IDS) & set(visfore_envs.KEYPOINT_IDS)
    for name in ("MimicReacherEnv", "MimicHumanoidEnv", "MimicEnv", "MirrorMap", "MIMIC_IDS"):
        assert name in visfore_envs.__all__
    for env_id, cls, steps in zip(IDS, (MimicReacherEnv, MimicHumanoidEnv), (100, 200)):
        assert gym.spec(env_id).max_episode_steps == steps
        env = _make(env_id)
        assert type(env.unwrapped) is cls
        env.reset(seed=0)
        for t in range(steps):
            *_, terminated, truncated, _ = env.step(_zero(env))
            assert not terminated and truncated == (t == steps - 1)
        env.close()


@pytest.mark.parametrize("env_id", IDS)
@pytest.mark.parametrize("obs_mode", ["state", "pixels", "state+pixels"])
def test_check_env_every_obs_mode(env_id, obs_mode):
    env = _make(env_id, obs_mode=obs_mode, reward_mode="state+pixels", potential_shaping=True, width=24, height=24)
    _check(env)
    env.close()


@pytest.mark.parametrize("env_id", IDS)
@pytest.mark.parametrize("obs_mode", ["state", "pixels", "state+pixels"])
def test_check_env_goal_conditioned(env_id, obs_mode):
    nq, p, g = DIMS[env_id]
    env = _make(env_id, obs_mode=obs_mode, goal_conditioned=True, leader="trajectory", width=24, height=24)
    _check(env)
    obs, _ = env.reset(seed=0)
    assert obs["achieved_goal"].shape == (g,) and obs["desired_goal"].shape == (g,)
    if obs_mode == "state":
        assert obs["observation"].shape == (p,)  # the follower's state only
    # The target moves with the leader; compute_reward still equals the step reward.
    for _ in range(5):
        obs, reward, _, _, info = env.step(env.action_space.sample())
        assert env.unwrapped.compute_reward(obs["achieved_goal"], obs["desired_goal"], info) == pytest.approx(
            reward, abs=1e-12
        )
    env.close()


@pytest.mark.parametrize("env_id", IDS)
def test_state_layouts(env_id):
    nq, p, g = DIMS[env_id]
    env = _make(env_id, leader="trajectory")
    u = env.unwrapped
    obs, info = env.reset(seed=1)
    for _ in range(3):
        obs, _, _, _, info = env.step(env.action_space.sample())
    assert env.observation_space.shape == obs.shape == (2 * p + 2 * g,)
    follower, leader = obs[:p], obs[p : 2 * p]
    diff, target = obs[2 * p : 2 * p + g], obs[2 * p + g :]
    np.testing.assert_array_equal(info["leader_qpos"], u.leader_qpos)
    if env_id == "MimicReacher-v0":
        np.testing.assert_array_equal(follower, np.concatenate([np.cos(u.data.qpos), np.sin(u.data.qpos), u.data.qvel]))
        np.testing.assert_array_equal(
            leader, np.concatenate([np.cos(u.leader_qpos), np.sin(u.leader_qpos), u.leader_qvel])
        )
    else:
        np.testing.assert_array_equal(follower, np.concatenate([u.data.qpos, u.data.qvel]))
        np.testing.assert_array_equal(leader, np.concatenate([u.leader_qpos, u.leader_qvel]))
    np.testing.assert_array_equal(target, u.target_keypoints)
    np.testing.assert_allclose(target, u.mirror_keypoints(u.leader_keypoints), atol=1e-12)
    np.testing.assert_allclose(diff, u.keypoints - target, atol=1e-15)
    np.testing.assert_allclose(u.target_qpos, u.mirror_pose(u.leader_qpos))
    # decode_state reads the layout back (angles of the reacher wrapped into (-pi, pi]).
    decoded = type(u).decode_state(obs[None])
    wrap = lambda q: np.angle(np.exp(1j * q))  # noqa: E731
    np.testing.assert_allclose(wrap(decoded["qpos"][0]), wrap(u.data.qpos), atol=1e-12)
    np.testing.assert_allclose(wrap(decoded["leader_qpos"][0]), wrap(u.leader_qpos), atol=1e-12)
    np.testing.assert_allclose(decoded["keypoints"][0], u.keypoints, atol=1e-12)
    with pytest.raises(ValueError, match="decode_state"):
        type(u).decode_state(np.zeros(2 * g + 1))
    # state+pixels: the follower's own state plus the frame, no leader state or target.
    env2 = _make(env_id, obs_mode="state+pixels", leader="trajectory", width=16, height=16)
    obs2, _ = env2.reset(seed=1)
    assert env2.observation_space["state"].shape == obs2["state"].shape == (p,)
    for _ in range(3):
        obs2, *_ = env2.step(np.zeros(env2.action_space.shape, np.float32))
    follower2 = env2.unwrapped.data
    if env_id == "MimicReacher-v0":  # [cos q, sin q, dq/dt]
        expect = np.concatenate([np.cos(follower2.qpos), np.sin(follower2.qpos), follower2.qvel])
    else:  # [q, dq/dt]
        expect = np.concatenate([follower2.qpos, follower2.qvel])
    np.testing.assert_array_equal(obs2["state"], expect)
    assert obs2["pixels"].shape == (16, 16, 3)
    env.close()
    env2.close()


@pytest.mark.parametrize("leader", ["hold", "trajectory"])
@pytest.mark.parametrize("env_id", IDS)
def test_seeded_determinism(env_id, leader):
    def run(seed):
        env = _make(env_id, leader=leader, obs_mode="state+pixels", width=16, height=16)
        env.action_space.seed(seed)
        obs, _ = env.reset(seed=seed)
        out = [obs["state"], obs["pixels"]]
        for _ in range(60):
            obs, reward, _, _, info = env.step(env.action_space.sample())
            out += [obs["state"], obs["pixels"], np.array([reward]), info["leader_qpos"]]
        env.close()
        return out

    a, b, c = run(4), run(4), run(5)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


@pytest.mark.parametrize("env_id", IDS)
def test_hold_leader_changes_pose_after_hold_steps(env_id):
    hold, move = 12, 4
    env = _make(env_id, leader="hold", hold_steps=hold, move_steps=move).unwrapped
    low, high = env._target_low, env._target_high
    qs = [env.reset(seed=2)[1]["leader_qpos"]]
    for _ in range(3 * hold):
        qs.append(env.step(_zero(env))[4]["leader_qpos"])
        np.testing.assert_allclose(env.target_qpos, env.mirror_pose(env.leader_qpos))
        np.testing.assert_allclose(env._reward_ctx.target_qvel, env.mirror_pose(env.leader_qvel))
    qs = np.array(qs)
    assert np.all(qs >= low - 1e-12) and np.all(qs <= high + 1e-12)
    for k in range(3):
        seg = qs[k * hold : (k + 1) * hold]
        # Moving over the first `move` steps of a segment (k >= 1), then held.
        start = 0 if k == 0 else move - 1
        np.testing.assert_array_equal(seg[start:], np.broadcast_to(seg[-1], seg[start:].shape))
        if k:
            prev = qs[k * hold - 1]
            assert np.all(seg[0] != prev)  # changes right at the segment start
            # The smoothstep path: monotone between the two held poses, no overshoot.
            frac = (seg[:move] - prev) / (seg[-1] - prev)
            expect = np.array([s * s * (3 - 2 * s) for s in (np.arange(1, move + 1) / move)])
            np.testing.assert_allclose(frac, np.broadcast_to(expect[:, None], frac.shape), atol=1e-9)
    assert np.abs(qs[hold] - qs[0]).max() > 0.1  # a new pose, not the same one
    # The leader's velocity is the finite difference of its poses.
    np.testing.assert_allclose(env.leader_qvel, (qs[-1] - qs[-2]) / env.dt)


@pytest.mark.parametrize("env_id", IDS)
def test_trajectory_leader_is_smooth_and_within_limits(env_id):
    env = _make(env_id, leader="trajectory").unwrapped
    low, high = env._target_low, env._target_high
    qs = [env.reset(seed=7)[1]["leader_qpos"]]
    for _ in range(150):
        qs.append(env.step(_zero(env))[4]["leader_qpos"])
    qs = np.array(qs)
    assert np.all(qs >= low) and np.all(qs <= high)
    assert env.trajectory_frequencies == (0.1, 0.5)  # as documented
    half = 0.5 * (high - low)
    w = 2 * math.pi * env.trajectory_frequencies[1] * env.dt  # max angular step (rad/step)
    first, second = np.diff(qs, axis=0), np.diff(qs, n=2, axis=0)
    assert np.all(np.abs(first) <= half * w + 1e-12)
    assert np.all(np.abs(second) <= half * w * w + 1e-12)
    # It moves: every joint travels a good part of its range over the 3 s.
    assert np.all(np.ptp(qs, axis=0) > 0.05 * (high - low))


@pytest.mark.parametrize("env_id", IDS)
def test_user_callable_leader_is_followed(env_id):
    nq = DIMS[env_id][0]
    offset = -0.5 if env_id == "MimicHumanoid-v0" else 0.0  # inside the knees' range

    def pose(t):
        return 0.3 * np.sin(0.1 * t + np.arange(nq)) + offset

    calls = []

    def wave(t, rng):
        calls.append(t)
        assert isinstance(rng, np.random.Generator)
        return pose(t)

    env = _make(env_id, leader=wave)
    u = env.unwrapped
    env.reset(seed=0)
    for t in range(1, 25):
        _, _, _, _, info = env.step(_zero(env))
        expect = np.clip(pose(t), u._target_low, u._target_high)
        np.testing.assert_allclose(info["leader_qpos"], expect)
        np.testing.assert_allclose(u.target_qpos, u.mirror_pose(expect))
    assert calls == list(range(25))
    # Out-of-range poses are clipped into the limits of the limited joints.
    env2 = _make(env_id, leader=lambda t, rng: np.full(nq, 10.0))
    _, info = env2.reset(seed=0)
    m = env2.unwrapped.model
    limited = m.jnt_limited.astype(bool)
    np.testing.assert_allclose(info["leader_qpos"][limited], m.jnt_range[limited, 1])
    np.testing.assert_allclose(info["leader_qpos"][~limited], 10.0)
    env.close()
    env2.close()


@pytest.mark.parametrize("leader", ["hold", "trajectory"])
@pytest.mark.parametrize("env_id", IDS)
def test_mirror_pose_puts_follower_keypoints_on_the_reflected_leader(env_id, leader):
    env = _make(env_id, leader=leader).unwrapped
    nv = env.model.nv
    for seed in range(4):
        env.reset(seed=seed)
        for _ in range(17 * seed):
            env.step(_zero(env))
        drawn = _leader_sites(env)  # where the leader is drawn
        np.testing.assert_allclose(drawn, env.leader_keypoints, atol=1e-12)
        env.set_state(env.mirror_pose(env.leader_qpos), np.zeros(nv))
        assert env.distance < 1e-12
        np.testing.assert_allclose(env.keypoints, env.mirror_keypoints(drawn), atol=1e-12)
        # The same point by point: follower key point i on leader key point source[i], x -> D - x.
        k = env.keypoints.reshape(env.n_keypoints, -1)
        lead = drawn.reshape(env.n_keypoints, -1)
        for i, j in enumerate(env.mirror.keypoint_source):
            np.testing.assert_allclose(k[i, 0], env.leader_distance - lead[j, 0], atol=1e-12)
            np.testing.assert_allclose(k[i, 1:], lead[j, 1:], atol=1e-12)
    # The map is an involution and keeps the humanoid's limits.
    q = env.leader_qpos
    np.testing.assert_array_equal(env.mirror_pose(env.mirror_pose(q)), q)
    if env_id == "MimicHumanoid-v0":
        lo, hi = env.model.jnt_range.T
        np.testing.assert_allclose(np.sort(env.mirror_pose(np.stack([lo, hi])), axis=0), np.stack([lo, hi]))
    env.close()


def test_mirror_tables():
    assert REACHER_MIRROR.joint_source == (0, 1) and REACHER_MIRROR.joint_sign == (-1.0, -1.0)
    np.testing.assert_array_equal(REACHER_MIRROR.pose([[0.5, -1.0]]), [[-0.5, 1.0]])
    q = np.arange(1.0, 15.0)
    m = HUMANOID_MIRROR.pose(q)
    np.testing.assert_array_equal(m[:8], np.r_[q[4:8], q[0:4]])
    np.testing.assert_array_equal(m[8:], [-q[11], -q[12], q[13], -q[8], -q[9], q[10]])


@pytest.mark.parametrize("env_id", IDS)
def test_follower_moves_under_actions_and_never_moves_the_leader(env_id):
    nq = DIMS[env_id][0]

    def run(action_scale, seed=3):
        env = _make(env_id, leader="trajectory").unwrapped
        env.reset(seed=seed, options={"qvel": np.zeros(env.model.nv)})
        start = env.data.qpos.copy()
        rng = np.random.default_rng(0)
        leader, mocap = [], []
        for _ in range(20):
            env.step((action_scale * rng.uniform(-1, 1, nq)).astype(np.float32))
            leader.append(env.leader_qpos)
            mocap.append(env.scene_data.mocap_pos.copy())
        end = env.data.qpos.copy()
        env.close()
        return start, end, np.array(leader), np.array(mocap)

    s0, e0, l0, m0 = run(0.0)
    s1, e1, l1, m1 = run(1.0)
    np.testing.assert_array_equal(s0, s1)
    # No action, no motion: the moving leader exerts no force on the follower.
    np.testing.assert_allclose(e0, s0, atol=1e-9)
    assert np.abs(e1 - s1).max() > 0.1
    # The actions change nothing of the leader (poses and drawn bodies).
    np.testing.assert_array_equal(l0, l1)
    leader_ids = _make(env_id).unwrapped._leader_mocap
    np.testing.assert_array_equal(m0[:, leader_ids], m1[:, leader_ids])
    assert np.ptp(l0, axis=0).max() > 0.1


@pytest.mark.parametrize("env_id", IDS)
def test_leader_view_shows_the_leader_as_the_single_robot_env_shows_its_robot(env_id):
    single_cls = ReacherPlaneEnv if env_id == "MimicReacher-v0" else TargetHumanoidEnv
    env = _make(env_id, obs_mode="pixels", camera="leader", width=48, height=48).unwrapped
    env.reset(seed=3)
    for _ in range(30):
        frame, *_ = env.step(_zero(env))
    single = single_cls(obs_mode="pixels", show_target=False, width=48, height=48)
    single.reset(seed=0)
    single.set_state(env.leader_qpos, np.zeros(single.model.nv))
    ref = single._current_frame()
    diff = np.abs(frame.astype(int) - ref.astype(int))
    # The lights turn with the leader (MimicEnv._turn_lights_with_leader): both robots'
    # default views are the same frame (with the lights left in place the humanoid's
    # differed by a mean of 1.1).
    assert diff.mean() < 0.01
    # ...and the leader's pose is what the frame shows: another pose gives another frame.
    single.set_state(env.mirror_pose(env.leader_qpos) * 0.5, np.zeros(single.model.nv))
    assert np.abs(single._current_frame().astype(int) - frame.astype(int)).mean() > 3 * diff.mean() + 0.5
    env.close()
    single.close()


def test_pair_view_shows_both_robots_reacher():
    # Top-down view: the follower on the left half, the leader on the right half.
    env = _make("MimicReacher-v0", obs_mode="pixels", leader="trajectory", width=64, height=64).unwrapped
    first, _ = env.reset(seed=1, options={"qvel": np.zeros(2)})
    frames = [first]
    for _ in range(20):
        frames.append(env.step(_zero(env))[0])
    changed = np.any(np.abs(frames[-1].astype(int) - first.astype(int)) > 30, axis=-1)
    assert changed[:, 34:].sum() > 10  # the leader moved
    assert changed[:, :30].sum() == 0  # the follower (no action) did not
    env.close()


@pytest.mark.parametrize("env_id", IDS)
def test_matching_the_mirror_pose_is_success_with_zero_pixel_error(env_id):
    env = _make(env_id, obs_mode="pixels", reward_mode="state+pixels", hold_steps=30, width=32, height=32).unwrapped
    env.reset(seed=0)
    env.set_state(env.mirror_pose(env.leader_qpos), np.zeros(env.model.nv))
    _, reward, _, _, info = env.step(_zero(env))  # the leader holds its first pose
    assert info["distance"] < 1e-9 and info["is_success"]
    assert info["pixel_mse"] == 0.0 and reward == pytest.approx(0.0, abs=1e-9)
    np.testing.assert_array_equal(env.render_goal(), env._current_frame())


def test_async_vector_env_two_envs_matches_single_env():
    fns = [
        functools.partial(_make, "MimicReacher-v0", leader="trajectory", obs_mode="state+pixels", width=16, height=16)
    ] * 2
    envs = gym.vector.AsyncVectorEnv(fns)
    single = _make("MimicReacher-v0", leader="trajectory", obs_mode="state+pixels", width=16, height=16)
    try:
        obs, info = envs.reset(seed=[5, 6])
        ref, ref_info = single.reset(seed=6)
        np.testing.assert_array_equal(obs["pixels"][1], ref["pixels"])
        np.testing.assert_array_equal(info["leader_qpos"][1], ref_info["leader_qpos"])
        for _ in range(5):
            actions = envs.action_space.sample()
            obs, reward, _, _, info = envs.step(actions)
            ref, ref_reward, _, _, ref_info = single.step(actions[1])
            np.testing.assert_array_equal(obs["state"][1], ref["state"])
            np.testing.assert_array_equal(obs["pixels"][1], ref["pixels"])
            assert reward[1] == ref_reward
            np.testing.assert_array_equal(info["leader_qpos"][1], ref_info["leader_qpos"])
        assert info["leader_qpos"].shape == (2, 2)
    finally:
        envs.close(terminate=True)
        single.close()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"leader": "dance"}, r"leader='dance' is not one of 'hold', 'trajectory'"),
        ({"leader": 3}, r"leader=3 is not one of"),
        ({"hold_steps": 0}, r"hold_steps=0 is not an integer in \[1, inf\]"),
        ({"hold_steps": 10, "move_steps": 11}, r"move_steps=11 is not an integer in \[0, 10\]"),
        ({"leader": "trajectory", "hold_steps": 10}, r"hold_steps=10 only applies to leader='hold'"),
        ({"camera": "nope"}, r"camera='nope' is not one of 'pair', 'leader', 'follower', 'top'"),
        ({"camera": "leader", "camera_distance": 1.0}, r"camera_distance=1.0 cannot be combined"),
        ({"goal_conditioned": True, "potential_shaping": True}, r"'potential' reward term"),
        ({"goal_conditioned": True, "rewards": "keypoint_distance+potential"}, r"'potential' reward term"),
        ({"obs_mode": "rgb"}, r"obs_mode='rgb' is not one of"),
    ],
)
def test_bad_options_raise_one_line_value_errors(kwargs, match):
    with pytest.raises(ValueError, match=match) as err:
        MimicReacherEnv(**kwargs)
    assert "\n" not in str(err.value)


def test_bad_reset_options_and_bad_user_leader():
    env = MimicReacherEnv()
    with pytest.raises(ValueError, match=r"reset option 'target_qpos' is not one of 'qpos', 'qvel'"):
        env.reset(options={"target_qpos": np.zeros(2)})
    with pytest.raises(ValueError, match=r"shape"):
        env.reset(options={"qpos": np.zeros(3)})
    env.reset(seed=0)
    before = env.leader_qpos
    with pytest.raises(ValueError, match=r"action shape"):
        env.step(np.zeros(3, np.float32))
    np.testing.assert_array_equal(env.leader_qpos, before)  # a bad action does not move the leader
    for bad in (lambda t, rng: [0.0], lambda t, rng: [np.nan, 0.0], lambda t, rng: "up"):
        with pytest.raises(ValueError, match=r"leader\(0, rng\) returned .* it must return 2 finite") as err:
            MimicReacherEnv(leader=bad).reset(seed=0)
        assert "\n" not in str(err.value)
    env.close()
