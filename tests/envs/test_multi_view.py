"""Multi-view frames (``views=``): shapes and spaces, views=None and ("default",) unchanged,
named views, bad names, the option surviving copies, pickles and the spec JSON round trip,
the humanoid's (and Reacher3D's) views framing every pose, pixel rewards, and the mimic
leader's views matching the single-robot env's."""

from __future__ import annotations

import copy
import pickle

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.envs.registration import EnvSpec

import visfore_envs  # noqa: F401  (registers the ids)
from visfore_envs import Reacher3DEnv, ReacherPlaneEnv, TargetHumanoidEnv
from visfore_envs.core.mujoco_env import parse_views
from visfore_envs.core.rendering import CameraSpec, FastRenderer
from visfore_envs.humanoid import HUMANOID_VIEWS
from visfore_envs.mimic import MimicHumanoidEnv
from visfore_envs.reacher import REACHER_3D_VIEWS

S = 32  # pixels per view side: small and fast


def _zero(env):
    return np.zeros(env.action_space.shape, dtype=np.float32)


def _project(camera: CameraSpec, fovy_deg: float, points, width: int, height: int) -> np.ndarray:
    """Pixel coordinates (u to the right, v down) of world points (..., 3) seen by a MuJoCo
    free camera (MuJoCo's convention: forward (cos e cos a, cos e sin a, sin e), up
    (-sin e cos a, -sin e sin a, cos e), the head at lookat - distance * forward)."""
    a, e = np.deg2rad(camera.azimuth), np.deg2rad(camera.elevation)
    fwd = np.array([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)])
    up = np.array([-np.sin(e) * np.cos(a), -np.sin(e) * np.sin(a), np.cos(e)])
    right = np.cross(fwd, up)
    rel = np.asarray(points, dtype=np.float64) - (np.asarray(camera.lookat) - camera.distance * fwd)
    depth = rel @ fwd
    assert (depth > 0).all()  # everything in front of the camera
    t = np.tan(np.deg2rad(fovy_deg) / 2)
    x = (rel @ right) / depth / (t * width / height)
    y = (rel @ up) / depth / t
    return np.stack([(x + 1) / 2 * width, (1 - y) / 2 * height], axis=-1)


# -- shapes and spaces ------------------------------------------------------------------------
@pytest.mark.parametrize("views", [("default",), ("default", "side"), ("default", "side", "top")])
def test_frames_observation_space_and_render_have_the_views_side_by_side(views):
    n = len(views)
    env = gym.make("TargetHumanoid-v0", obs_mode="pixels", width=S, height=24, views=views, render_mode="rgb_array")
    assert env.observation_space == gym.spaces.Box(0, 255, (24, n * S, 3), np.uint8)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (24, n * S, 3) and obs.dtype == np.uint8
    obs, *_ = env.step(_zero(env))
    frame = env.render()
    assert frame.shape == (24, n * S, 3) and frame.dtype == np.uint8
    np.testing.assert_array_equal(frame, obs)
    u = env.unwrapped
    assert u.views == views and u.n_views == n and u.frame_width == n * S and u.width == S
    # one renderer, one camera per view
    assert isinstance(u._renderer, FastRenderer) and u._renderer.n_views == n
    env.close()
    both = gym.make("Reacher3D-v0", obs_mode="state+pixels", width=S, height=S, views="default+side")
    assert both.observation_space["pixels"].shape == (S, 2 * S, 3)
    assert both.reset(seed=0)[0]["pixels"].shape == (S, 2 * S, 3)
    both.close()
    gc = gym.make("TargetHumanoid-v0", obs_mode="pixels", goal_conditioned=True, width=S, height=S, views=views)
    assert gc.observation_space["observation"].shape == (S, n * S, 3)
    assert gc.reset(seed=0)[0]["observation"].shape == (S, n * S, 3)
    gc.close()


# -- views=None and ("default",) are today's frames ----------------------------------------------
@pytest.mark.parametrize("env_id", ["ReacherPlane-v0", "Reacher3D-v0", "TargetHumanoid-v0", "MimicHumanoid-v0"])
def test_default_view_is_the_one_view_frame_bit_for_bit(env_id):
    kwargs = dict(obs_mode="pixels", reward_mode="pixels", width=S, height=S)
    envs = [gym.make(env_id, **kwargs), gym.make(env_id, views=("default",), **kwargs)]
    envs.append(gym.make(env_id, views="default", **kwargs))
    if env_id != "ReacherPlane-v0":
        camera = {"camera": "leader"} if env_id.startswith("Mimic") else {}
        envs.append(gym.make(env_id, views=("default", "side"), **{**kwargs, **camera}))
        envs.append(gym.make(env_id, **{**kwargs, **camera}))
    rng = np.random.default_rng(0)
    actions = [rng.uniform(-1, 1, envs[0].action_space.shape).astype(np.float32) for _ in range(3)]
    runs = []
    for env in envs:
        frames = [env.reset(seed=5)[0]]
        rewards = []
        for a in actions:
            obs, reward, *_ = env.step(a)
            frames.append(obs)
            rewards.append(reward)
        runs.append((frames, rewards, env.unwrapped.render_goal()))
        env.close()
    for frames, rewards, goal in runs[1:3]:
        for f, ref in zip(frames, runs[0][0]):
            np.testing.assert_array_equal(f, ref)
        assert rewards == runs[0][1]
        np.testing.assert_array_equal(goal, runs[0][2])
    if len(runs) > 3:
        # the first view of a two-view frame is exactly the one-view frame of its camera
        (two, _, goal2), (one, _, goal1) = runs[3], runs[4]
        for f, ref in zip(two, one):
            assert f.shape == (S, 2 * S, 3)
            np.testing.assert_array_equal(f[:, :S], ref)
        np.testing.assert_array_equal(goal2[:, :S], goal1)


def test_named_views_differ_from_the_default_and_custom_cameras_stay_default():
    env = TargetHumanoidEnv(obs_mode="pixels", width=S, height=S, views=("default", "side", "top"))
    env.reset(seed=1)
    frame = env._current_frame()
    default, side, top = (frame[:, i * S : (i + 1) * S].astype(int) for i in range(3))
    assert np.abs(side - default).mean() > 10 and np.abs(top - default).mean() > 10
    assert env._renderer.cameras == (env.default_camera, HUMANOID_VIEWS["side"], HUMANOID_VIEWS["top"])
    assert TargetHumanoidEnv.view_names() == ("default", "side", "top")
    # "default" is the camera the options give; the named views stay where they are
    custom = TargetHumanoidEnv(camera_azimuth=100.0, views=("side", "default"))
    assert custom._renderer.cameras[0] == HUMANOID_VIEWS["side"]
    assert custom._renderer.cameras[1].azimuth == 100.0
    named = TargetHumanoidEnv(camera="front", views=["default", "side"])
    assert named._renderer.cameras[0] == CameraSpec(name="front")
    side_az = HUMANOID_VIEWS["side"].azimuth
    assert abs((side_az - TargetHumanoidEnv.default_camera.azimuth) % 360 - 90) <= 5
    assert Reacher3DEnv.view_names() == ("default", *REACHER_3D_VIEWS)
    assert ReacherPlaneEnv.view_names() == ("default",)
    for e in (env, custom, named):
        e.close()


# -- bad values ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("env_id", "kwargs", "message"),
    [
        (
            "TargetHumanoid-v0",
            {"views": ("default", "nope")},
            r"view 'nope' of views=\('default', 'nope'\) is not one of 'default', 'side', 'top' "
            r"\(the views of TargetHumanoidEnv\)",
        ),
        ("TargetHumanoid-v0", {"views": "default+Side"}, r"view 'Side' of views='default\+Side' is not one of"),
        ("ReacherPlane-v0", {"views": ("default", "side")}, r"view 'side' .* is not one of 'default' \(the views of"),
        ("TargetHumanoid-v0", {"views": ()}, r"views=\(\) is not a non-empty sequence of view names"),
        ("TargetHumanoid-v0", {"views": "default+"}, r"views='default\+' is not a non-empty sequence"),
        ("TargetHumanoid-v0", {"views": 3}, r"views=3 is not None, a sequence of view names"),
        ("TargetHumanoid-v0", {"views": ("side", "side")}, r"names view 'side' twice"),
        ("TargetHumanoid-v0", {"views": ("default", "side"), "width": 4000}, r"frames 8000 pixels wide"),
        ("MimicHumanoid-v0", {"views": ("default", "side")}, r"view 'side' .* needs camera='leader' or camera="),
        ("MimicReacher-v0", {"camera": "leader", "views": "side"}, r"view 'side' of views='side' is not one of 'def"),
    ],
)
def test_bad_views_are_one_line_value_errors(env_id, kwargs, message):
    with pytest.raises(ValueError, match=message) as info:
        gym.make(env_id, **kwargs)
    assert "\n" not in str(info.value)


def test_parse_views():
    assert parse_views(None) is None
    assert parse_views("default+side") == ("default", "side") == parse_views(["default", "side"])
    assert parse_views(" top ") == ("top",)
    with pytest.raises(ValueError, match="'x' of views=.* is not one of 'a', 'b'"):
        parse_views("a+x", ("a", "b"))


# -- the option survives copies, pickles, snapshots and the spec ------------------------------------
@pytest.mark.parametrize("views", [("default", "side"), "default+side", ["default", "side"]])
def test_views_survive_the_spec_json_round_trip_copies_and_pickles(views):
    env = gym.make("TargetHumanoid-v0", obs_mode="pixels", width=S, height=S, views=views)
    text = env.spec.to_json()
    rebuilt = gym.make(EnvSpec.from_json(text))
    assert rebuilt.spec.to_json() == text
    first, _ = env.reset(seed=3)
    action = env.action_space.sample()
    after, *_ = env.step(action)
    clones = [
        rebuilt.unwrapped,
        pickle.loads(pickle.dumps(env.unwrapped)),
        copy.deepcopy(env.unwrapped),
    ]
    for clone in clones:
        assert clone.views == ("default", "side") and clone.observation_space.shape == (S, 2 * S, 3)
    np.testing.assert_array_equal(rebuilt.reset(seed=3)[0], first)
    np.testing.assert_array_equal(rebuilt.step(action)[0], after)
    # deepcopy and get/set_sim_state continue in the same multi-view state
    deep = clones[2]
    snap = TargetHumanoidEnv(obs_mode="pixels", width=S, height=S, views=views)
    snap.set_sim_state(env.unwrapped.get_sim_state())
    nxt = env.step(action)[0]
    np.testing.assert_array_equal(deep.step(action)[0], nxt)
    np.testing.assert_array_equal(snap.step(action)[0], nxt)
    for e in (env, rebuilt, *clones[1:], snap):
        e.close()


def test_views_are_a_listed_option():
    assert "views" in TargetHumanoidEnv.option_names() and "views" in MimicHumanoidEnv.option_names()
    with pytest.raises(ValueError, match="valid options are: .*views"):
        TargetHumanoidEnv(view=("default",))


# -- framing -----------------------------------------------------------------------------------------
def _check_framing(env, sites, views, poses, margin=0.1):
    """Every given key point of ``poses`` random poses projects inside every view: at least
    ``margin`` of the frame from its edges in the named views (as their docs say), inside
    the frame in the default one."""
    idx = [env.keypoint_sites.index(s) for s in sites]
    fovy = float(env.scene_model.vis.global_.fovy)
    pts = []
    for seed in range(poses):
        env.reset(seed=seed)
        for kp in (env.keypoints, env.target_keypoints):  # two random poses per reset
            pts.append(kp.reshape(-1, 3)[idx])
    pts = np.concatenate(pts)
    for name, camera in zip(views, env._renderer.cameras):
        uv = _project(camera, fovy, pts, 1, 1)
        lo, hi = uv.min(axis=0), uv.max(axis=0)
        inside = 0.0 if name == "default" else margin
        assert lo.min() >= inside and hi.max() <= 1 - inside, (name, lo, hi)


def test_humanoid_views_frame_every_hand_and_foot_at_random_poses():
    views = ("default", "side", "top")
    env = TargetHumanoidEnv(init_pose="random", views=views, width=S, height=S)
    _check_framing(env, env.end_effector_sites, views, poses=250)
    # ...and the projection is what the renderer draws: the ghost's red key-point markers
    # lie where the target key points project, in the side view
    big = TargetHumanoidEnv(obs_mode="pixels", init_pose="random", views=("side",), width=96, height=96)
    big.reset(seed=7)
    frame = big._current_frame()
    red = (frame[..., 0] > 150) & (frame[..., 1] < 80) & (frame[..., 2] < 80)
    ys, xs = np.nonzero(red)
    uv = _project(HUMANOID_VIEWS["side"], 45.0, big.target_keypoints.reshape(-1, 3), 96, 96)
    nearest = [np.hypot(xs - u, ys - v).min() for u, v in uv]
    assert np.median(nearest) < 1.5, nearest
    env.close()
    big.close()


def test_reacher_3d_views_frame_the_whole_reach():
    views = ("default", "side", "top")
    env = Reacher3DEnv(init_pose="random", views=views, width=S, height=S)
    _check_framing(env, env.keypoint_sites, views, poses=250)
    env.close()


# -- pixel rewards -------------------------------------------------------------------------------------
def test_pixel_reward_compares_every_view_with_the_goal_frame():
    env = TargetHumanoidEnv(obs_mode="pixels", reward_mode="pixels", width=S, height=S, views=("default", "side"))
    env.reset(seed=2)
    goal = env.render_goal()
    assert goal.shape == (S, 2 * S, 3)
    frame, reward, _, _, info = env.step(_zero(env))
    expected = np.mean((frame.astype(np.float64) - goal) ** 2) / 255.0**2
    assert info["pixel_mse"] == pytest.approx(expected, rel=1e-12) and info["pixel_mse"] > 0
    assert reward == pytest.approx(-info["pixel_mse"])
    # at the target pose both views match the goal frame
    env.set_state(env.target_qpos, np.zeros(env.model.nv))
    _, _, _, _, info = env.step(_zero(env))
    assert info["pixel_mse"] < 1e-3
    # the side half of the goal frame is the side view's goal frame
    side = TargetHumanoidEnv(obs_mode="pixels", width=S, height=S, views=("side",))
    side.reset(seed=2)
    np.testing.assert_array_equal(side.render_goal(), goal[:, S:])
    env.close()
    side.close()


# -- mimic: the leader seen from each of the single-robot env's views -----------------------------------------
@pytest.mark.parametrize(
    ("env_id", "single_cls", "views"),
    [("MimicHumanoid-v0", TargetHumanoidEnv, ("default", "side")), ("MimicReacher-v0", ReacherPlaneEnv, ("default",))],
)
def test_leader_views_show_the_leader_as_the_single_robot_envs_views_show_its_robot(env_id, single_cls, views):
    n = len(views)
    env = gym.make(env_id, obs_mode="pixels", camera="leader", views=views, width=48, height=48).unwrapped
    env.reset(seed=3)
    for _ in range(30):
        frame, *_ = env.step(_zero(env))
    assert frame.shape == (48, n * 48, 3)
    single = single_cls(obs_mode="pixels", show_target=False, width=48, height=48, views=views)
    single.reset(seed=0)
    single.set_state(env.leader_qpos, np.zeros(single.model.nv))
    ref = single._current_frame()
    assert ref.shape == frame.shape
    other = single_cls(obs_mode="pixels", show_target=False, width=48, height=48, views=views)
    other.reset(seed=0)
    other.set_state(env.mirror_pose(env.leader_qpos) * 0.5, np.zeros(single.model.nv))
    moved = other._current_frame()
    for i in range(n):
        cols = slice(i * 48, (i + 1) * 48)
        diff = np.abs(frame[:, cols].astype(int) - ref[:, cols].astype(int))
        # as test_mimic's one-view test: the reacher's frame is the same; the humanoid's
        # differs by the world-fixed key light (and, in the side view, a strip of the
        # floor the mimic env stretches between the robots)
        assert diff.mean() < (0.01 if env_id == "MimicReacher-v0" else 0.5), (views[i], diff.mean())
        # ...and each view shows the leader's pose: another pose gives another frame
        assert np.abs(moved[:, cols].astype(int) - frame[:, cols].astype(int)).mean() > 3 * diff.mean() + 0.5
    env.close()
    single.close()
    other.close()


def test_mimic_pixel_reward_and_follower_views():
    env = MimicHumanoidEnv(
        obs_mode="pixels", reward_mode="state+pixels", camera="follower", views=("default", "side"), width=S, height=S
    )
    env.reset(seed=0)
    env.set_state(env.mirror_pose(env.leader_qpos), np.zeros(env.model.nv))
    frame, _, _, _, info = env.step(_zero(env))
    assert frame.shape == (S, 2 * S, 3) and env.render_goal().shape == (S, 2 * S, 3)
    assert info["pixel_mse"] == 0.0
    assert env._renderer.cameras == (TargetHumanoidEnv.default_camera, HUMANOID_VIEWS["side"])
    leader = MimicHumanoidEnv(camera="leader", views="side+default")
    assert leader._renderer.cameras == (
        MimicHumanoidEnv.leader_view(HUMANOID_VIEWS["side"]),
        MimicHumanoidEnv.camera_views()["leader"],
    )
    env.close()
    leader.close()
