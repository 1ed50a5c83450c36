"""Conformance of the key-point and mimic ids with checkers and tools written elsewhere
(issue 16): gymnasium's and stable-baselines3's ``check_env``, goal-env ``compute_reward``
against the step reward, hostile actions, copies and saved simulation states, unknown
options, the env spec's JSON round trip and one ``info`` structure for reset and step."""

from __future__ import annotations

import copy
import pickle
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.envs.registration import EnvSpec
from gymnasium.error import ResetNeeded
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import visfore_envs
from visfore_envs import KEYPOINT_IDS, MIMIC_IDS, REWARD_TERMS, GoalConditionedKeypointEnv, parse_rewards

IDS = KEYPOINT_IDS + MIMIC_IDS
OBS_MODES = ("state", "pixels", "state+pixels")
SMALL = {"width": 32, "height": 32}  # tiny frames: rendering cost, not realism, matters here


def _make(env_id: str, **kwargs) -> gym.Env:
    return gym.make(env_id, **{**SMALL, **kwargs})


def _assert_same(a, b) -> None:
    """Bit-equal observations/infos (arrays, dicts of arrays, numbers)."""
    if isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            _assert_same(a[k], b[k])
    elif isinstance(a, tuple):
        assert isinstance(b, tuple) and len(a) == len(b)
        for x, y in zip(a, b):
            _assert_same(x, y)
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    else:
        assert type(a) is type(b) and a == b


# -- 1. the checkers -----------------------------------------------------------------------
@pytest.mark.parametrize("goal_conditioned", [False, True])
@pytest.mark.parametrize("obs_mode", OBS_MODES)
@pytest.mark.parametrize("env_id", IDS)
def test_gymnasium_and_sb3_checkers_pass(env_id, obs_mode, goal_conditioned):
    env = _make(env_id, obs_mode=obs_mode, goal_conditioned=goal_conditioned)
    u = env.unwrapped
    # Only the goal-conditioned env is a goal env for SB3/gymnasium-robotics.
    assert hasattr(u, "compute_reward") is goal_conditioned
    assert isinstance(u, GoalConditionedKeypointEnv) is goal_conditioned
    assert isinstance(u, gym.envs.registration.load_env_creator(gym.spec(env_id).entry_point))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small-image / float64 advice, not failures
        gym_check_env(u, skip_render_check=True)
        # SB3 calls compute_reward on the env it is given; gymnasium 1.x wrappers do not
        # forward attributes, so a goal env is checked unwrapped (HER itself reaches the
        # method through get_wrapper_attr).
        sb3_check_env(u if goal_conditioned else env, warn=True)
    env.close()


def test_goal_conditioned_env_pickles_and_vectorises():
    env = _make("MimicReacher-v0", goal_conditioned=True)
    clone = pickle.loads(pickle.dumps(env.unwrapped))
    assert type(clone) is type(env.unwrapped) and hasattr(clone, "compute_reward")
    assert type(clone).__name__ == "GoalConditionedMimicReacherEnv"
    assert visfore_envs.goal_conditioned_class(visfore_envs.MimicReacherEnv) is type(clone)
    plain = pickle.loads(pickle.dumps(_make("MimicReacher-v0").unwrapped))
    assert not hasattr(plain, "compute_reward")
    vec = gym.make_vec("ReacherPlane-v0", num_envs=2, vectorization_mode="sync", goal_conditioned=True)
    obs, _ = vec.reset(seed=0)
    assert obs["achieved_goal"].shape == (2, 4)
    obs, rewards, *_, infos = vec.step(vec.action_space.sample())
    u = vec.envs[0].unwrapped
    batched = u.compute_reward(obs["achieved_goal"], obs["desired_goal"], infos)
    assert batched.shape == (2,) and np.array_equal(batched, rewards)
    vec.close()
    with pytest.raises(ValueError, match="goal-conditioned"):
        type(clone)(goal_conditioned=False)


# -- 2. compute_reward == step reward ------------------------------------------------------
GOAL_REWARDS = {
    "ReacherPlane-v0": [{}, {"potential_shaping": True, "ctrl_cost_weight": 0.3}],
    "Reacher3D-v0": [{"potential_shaping": True}, {"rewards": "keypoint_distance+potential+electricity"}],
    "TargetHumanoid-v0": [{}, {"rewards": "keypoint_distance+0.5*potential+end_effector+velocity+0.1*ctrl"}],
    "MimicReacher-v0": [{}, {"rewards": "keypoint_distance+end_effector+velocity+ctrl"}],
    "MimicHumanoid-v0": [
        {"hold_steps": 6, "move_steps": 3},
        {"rewards": "0.1*velocity+0.15*end_effector+ctrl+keypoint_distance", "hold_steps": 6},
    ],
}


@pytest.mark.parametrize("env_id,kwargs", [(i, kw) for i in IDS for kw in GOAL_REWARDS[i]], ids=lambda x: str(x))
def test_compute_reward_is_bit_equal_to_the_step_reward(env_id, kwargs):
    env = gym.make(env_id, goal_conditioned=True, **kwargs)
    u = env.unwrapped
    obs, _ = env.reset(seed=11)
    ag, dg, infos, rewards = [], [], [], []
    rng = np.random.default_rng(0)
    for _ in range(220):  # several episodes of ReacherPlane-v0 (50 steps), many held poses
        action = rng.uniform(-1.2, 1.2, size=env.action_space.shape).astype(np.float32)
        obs, reward, terminated, truncated, info = env.step(action)
        single = u.compute_reward(obs["achieved_goal"], obs["desired_goal"], info)
        assert isinstance(single, float) and single == reward
        ag.append(obs["achieved_goal"])
        dg.append(obs["desired_goal"])
        infos.append(info)
        rewards.append(reward)
        if terminated or truncated:
            obs, _ = env.reset()
    ag, dg, rewards = np.array(ag), np.array(dg), np.array(rewards)
    # Batched as SB3's HER calls it: (N, G) goals with an array of info dicts ...
    batched = u.compute_reward(ag, dg, np.array(infos, dtype=object))
    assert batched.shape == (len(rewards),) and batched.dtype == np.float64
    np.testing.assert_array_equal(batched, rewards)
    # ... or a dict of stacked arrays, or goals in another layout (strided, (N, 1, G)).
    stacked = {k: np.array([i[k] for i in infos]) for k in infos[0]}
    np.testing.assert_array_equal(u.compute_reward(ag, dg, stacked), rewards)
    np.testing.assert_array_equal(u.compute_reward(np.asfortranarray(ag), np.asfortranarray(dg), stacked), rewards)
    deep = u.compute_reward(ag[:, None], dg[:, None], {k: v[:, None] for k, v in stacked.items()})
    np.testing.assert_array_equal(deep[:, 0], rewards)
    env.close()


# -- 4. out-of-range actions cost what the physics applied -----------------------------------
@pytest.mark.parametrize("rewards", [None, "keypoint_distance+ctrl+electricity"])
@pytest.mark.parametrize("env_id", IDS)
def test_huge_actions_cost_like_the_clipped_action(env_id, rewards):
    kwargs = {} if rewards is None else {"rewards": rewards}
    env = gym.make(env_id, **kwargs)
    low, high = env.action_space.low, env.action_space.high
    rng = np.random.default_rng(1)
    huge = [(rng.uniform(-1e6, 1e6, size=low.shape)).astype(np.float32) for _ in range(5)]
    huge[0][:] = 1e6  # every actuator far out of range
    results = []
    for clip in (False, True):
        env.reset(seed=4)
        out = []
        for action in huge:
            obs, reward, _, _, info = env.step(np.clip(action, low, high) if clip else action)
            out.append((obs, reward, info))
        results.append(out)
    for (o1, r1, i1), (o2, r2, i2) in zip(*results):
        _assert_same(o1, o2)
        assert r1 == r2 and np.isfinite(r1) and r1 > -1e3
        _assert_same(i1, i2)
    # The documentation says so.
    assert "applied" in REWARD_TERMS["ctrl"].formula and "applied" in REWARD_TERMS["electricity"].formula
    assert "ctrlrange" in visfore_envs.core.rewards.__doc__
    env.close()


# -- 9. copies and saved simulation states -----------------------------------------------------
MIMIC_FAST = {"hold_steps": 6, "move_steps": 3}  # segment changes (new random poses) in 20 steps


def _kwargs(env_id: str, **kw) -> dict:
    return {**SMALL, **(MIMIC_FAST if env_id in MIMIC_IDS else {}), **kw}


def _rollout(env, actions):
    out = []
    for a in actions:
        obs, reward, terminated, truncated, info = env.step(a)
        out.append((obs, reward, terminated, truncated, info))
    return out


def _assert_same_rollouts(a, b):
    assert len(a) == len(b)
    for (o1, r1, te1, tr1, i1), (o2, r2, te2, tr2, i2) in zip(a, b):
        _assert_same(o1, o2)
        assert r1 == r2 and (te1, tr1) == (te2, tr2)
        _assert_same(i1, i2)


@pytest.mark.parametrize("env_id", IDS)
def test_deepcopy_behaves_like_the_original(env_id):
    env = gym.make(env_id, **_kwargs(env_id, obs_mode="state+pixels"))
    actions = [env.action_space.sample() for _ in range(20)]
    # Before reset: gymnasium's own order error on the copy; the unwrapped copy either
    # steps like the fresh original (key-point envs) or says reset is needed (mimic).
    fresh = copy.deepcopy(env)
    with pytest.raises(ResetNeeded):
        fresh.step(actions[0])
    u_copy = copy.deepcopy(env.unwrapped)
    if env_id in MIMIC_IDS:
        with pytest.raises(ResetNeeded, match="reset"):
            u_copy.step(actions[0])
    else:
        _assert_same_rollouts(_rollout(u_copy, actions[:3]), _rollout(copy.deepcopy(env.unwrapped), actions[:3]))
    # After reset with the same seed: the same episode.
    assert _assert_same(env.reset(seed=5), fresh.reset(seed=5)) is None
    _assert_same_rollouts(_rollout(env, actions), _rollout(fresh, actions))
    # A copy taken mid-episode continues exactly as the original does (leader included).
    env.reset(seed=6)
    _rollout(env, actions[:8])
    mid = copy.deepcopy(env)
    assert mid.unwrapped is not env.unwrapped and mid.unwrapped.data is not env.unwrapped.data
    _assert_same_rollouts(_rollout(env, actions), _rollout(mid, actions))
    assert mid.spec.to_json() == env.spec.to_json()
    env.close()
    fresh.close()
    mid.close()


@pytest.mark.parametrize(
    "env_id,obs_mode",
    [(i, "state") for i in IDS] + [("ReacherPlane-v0", "state+pixels"), ("MimicReacher-v0", "pixels")],
)
def test_sim_state_restores_bit_for_bit(env_id, obs_mode):
    kw = _kwargs(env_id, obs_mode=obs_mode, rewards="keypoint_distance+potential+ctrl")
    if env_id in MIMIC_IDS:
        kw["rewards"] = "keypoint_distance+potential+velocity+ctrl"
    env = gym.make(env_id, **kw)
    u = env.unwrapped
    env.reset(seed=8)
    rng = np.random.default_rng(3)
    actions = rng.uniform(-1, 1, size=(30,) + env.action_space.shape).astype(np.float32)
    _rollout(u, actions[:7])
    state = u.get_sim_state()
    state = pickle.loads(pickle.dumps(state))  # a snapshot can be stored
    expected = _rollout(u, actions)
    u.set_sim_state(state)
    _assert_same_rollouts(_rollout(u, actions), expected)
    # Into another env of the same id (never reset): the same continuation.
    other = gym.make(env_id, **kw).unwrapped
    other.set_sim_state(state)
    _assert_same_rollouts(_rollout(other, actions), expected)
    # The random stream continues too (next episode's target).
    u.set_sim_state(state)
    _rollout(u, actions)
    _assert_same(u.reset()[0], other.reset()[0])
    bad = dict(state)
    bad.pop("physics")
    with pytest.raises(ValueError, match="physics"):
        u.set_sim_state(bad)
    with pytest.raises(ValueError, match="shape"):
        u.set_sim_state({**state, "physics": state["physics"][:-1]})
    env.close()


@pytest.mark.parametrize("env_id", MIMIC_IDS)
def test_a_refused_action_leaves_the_mimic_leader_in_place(env_id):
    env = gym.make(env_id, **_kwargs(env_id))
    u = env.unwrapped
    env.reset(seed=0)
    before = u.get_sim_state()
    for bad in (np.full(env.action_space.shape, np.nan, np.float32), np.zeros(1, np.float32)):
        with pytest.raises(ValueError, match="action"):
            u.step(bad)
    after = u.get_sim_state()
    assert after["leader_t"] == before["leader_t"]
    np.testing.assert_array_equal(after["leader_qpos"], before["leader_qpos"])
    np.testing.assert_array_equal(after["physics"], before["physics"])


# -- 11. unknown options -------------------------------------------------------------------------
@pytest.mark.parametrize("env_id", IDS)
def test_unknown_options_raise_value_error_listing_the_valid_ones(env_id):
    with pytest.raises(ValueError) as exc:
        gym.make(env_id, obs_mod="pixels")
    assert type(exc.value) is ValueError  # not a TypeError (nor a subclass of both)
    message = str(exc.value)
    assert "obs_mod" in message and "obs_mode" in message and "rewards" in message
    assert ("leader" in message) is (env_id in MIMIC_IDS)
    names = gym.spec(env_id).entry_point  # the class lists its options
    cls = gym.envs.registration.load_env_creator(names)
    assert "obs_mode" in cls.option_names() and "obs_mod" not in cls.option_names()


# -- 13. every option form survives the env spec's JSON round trip ------------------------------
def _spec_forms(tmp_path, monkeypatch):
    (tmp_path / "conformance_rewards.py").write_text("def halve(terms, info):\n    return 0.5 * sum(terms.values())\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = parse_rewards("ctrl+keypoint_distance")
    return [
        ("ReacherPlane-v0", {"rewards": spec}),
        ("ReacherPlane-v0", {"rewards": spec.to_dict()}),
        ("ReacherPlane-v0", {"rewards": "0.1*ctrl+dist"}),
        ("ReacherPlane-v0", {"rewards": "roboschool"}),
        ("Reacher3D-v0", {"rewards": {"ctrl": np.float32(0.5), "keypoint_distance": 1}}),
        ("Reacher3D-v0", {"rewards": "keypoint_distance", "reward_fn": "conformance_rewards:halve"}),
        ("Reacher3D-v0", {"reward_mode": "state", "potential_shaping": True, "ctrl_cost_weight": 0.2}),
        (
            "TargetHumanoid-v0",
            {
                "camera_lookat": np.array([0.1, 0.0, 1.0]),
                "width": np.int64(24),
                "height": 24,
                "goal_conditioned": np.bool_(True),
                "success_threshold": np.float64(0.2),
            },
        ),
        ("TargetHumanoid-v0", {"rewards": parse_rewards("deepmimic"), "init_pose": "random"}),
        ("MimicReacher-v0", {"leader": "trajectory", "camera": "leader", "rewards": spec}),
        ("MimicHumanoid-v0", {"hold_steps": np.int32(4), "move_steps": 2, "obs_mode": "state+pixels", **SMALL}),
    ]


def test_every_option_form_survives_the_spec_json_round_trip(tmp_path, monkeypatch):
    for env_id, kwargs in _spec_forms(tmp_path, monkeypatch):
        env = gym.make(env_id, **kwargs)
        text = env.spec.to_json()
        rebuilt = gym.make(EnvSpec.from_json(text))
        u, v = env.unwrapped, rebuilt.unwrapped
        assert type(u) is type(v), (env_id, kwargs)
        assert u.reward_spec == v.reward_spec and u.obs_mode == v.obs_mode
        assert rebuilt.spec.to_json() == text
        actions = [env.action_space.sample() for _ in range(4)]
        _assert_same(env.reset(seed=2), rebuilt.reset(seed=2))
        _assert_same_rollouts(_rollout(env, actions), _rollout(rebuilt, actions))
        env.close()
        rebuilt.close()


# -- 14. reset's info has step's structure --------------------------------------------------------
INFO_VARIANTS = [
    {},
    {"goal_conditioned": True, "potential_shaping": True},
    {"rewards": "pixel_mse+0.5*ctrl+keypoint_distance"},
    {"rewards": "0.65*pose+0.1*velocity+0.15*end_effector+electricity+joint_distance"},
]


@pytest.mark.parametrize("variant", range(len(INFO_VARIANTS)))
@pytest.mark.parametrize("obs_mode", OBS_MODES)
@pytest.mark.parametrize("env_id", IDS)
def test_reset_info_has_the_step_info_structure(env_id, obs_mode, variant):
    kwargs = dict(INFO_VARIANTS[variant])
    if env_id in MIMIC_IDS and kwargs.get("potential_shaping"):
        kwargs.pop("potential_shaping")  # not allowed with a moving goal (documented)
    env = _make(env_id, obs_mode=obs_mode, **kwargs)
    _, reset_info = env.reset(seed=1)
    assert reset_info["distance"] == env.unwrapped.distance
    _, _, _, _, step_info = env.step(env.action_space.sample())
    assert list(reset_info) == list(step_info)
    for key, value in step_info.items():
        first = reset_info[key]
        assert type(first) is type(value), key
        assert np.shape(first) == np.shape(value), key
        if isinstance(value, np.ndarray):
            assert first.dtype == value.dtype, key
        if key.startswith("reward_"):
            assert first == 0.0
    if "pixel_mse" in reset_info:
        assert 0.0 < reset_info["pixel_mse"] < 1.0  # the initial frame against the goal frame
    env.close()
