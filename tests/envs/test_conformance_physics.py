"""Conformance with checks nobody here wrote, and physical perturbed bodies (issue 16).

Covers, over every registered id except ``LearnedSim-v0`` (torch, another distribution):
non-finite actions (3), perturbed bodies that start physical and blow-ups that truncate
(5), leaving gymnasium's GL context alone (6), async vector envs after an earlier render
(7), the standard render modes (8), pixel observations the caller owns (10), unknown
keywords (11), no ``settotalmass`` deprecation warning (12), reset info = step info and a
Minari recording with infos (14), and gymnasium's and SB3's ``check_env`` on the
locomotion ids of both backends in every observation mode.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from visfore_envs import ENV_IDS, LOCOMOTION_IDS

IDS = tuple(i for i in ENV_IDS if i != "LearnedSim-v0")
BULLET_IDS = tuple(i for i in IDS if i.endswith("Bullet-v0"))
LOCO_BOTH = LOCOMOTION_IDS + BULLET_IDS
MODES = ("state", "pixels", "state+pixels")
SMALL = {"width": 32, "height": 32}


def _make(env_id: str, **kwargs) -> gym.Env:
    return gym.make(env_id, **kwargs)


# -- 3: non-finite actions ---------------------------------------------------------------------
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("env_id", IDS)
def test_non_finite_action_is_one_value_error_and_changes_nothing(env_id, bad):
    env = _make(env_id)
    env.reset(seed=0)
    u = env.unwrapped
    action = np.zeros(env.action_space.shape, dtype=np.float32)
    action[0] = bad
    before = u.data.qpos.copy() if hasattr(u, "data") else None
    with pytest.raises(ValueError, match="action"):
        env.step(action)
    if before is not None:
        np.testing.assert_array_equal(u.data.qpos, before)
    obs, reward, *_ = env.step(np.zeros(env.action_space.shape, dtype=np.float32))
    assert np.isfinite(reward)


# -- 5: perturbed bodies start physical ----------------------------------------------------------
def _start_penetration(env) -> float:
    """Deepest contact (m, >= 0) of the reset state (MuJoCo contacts)."""
    d = env.unwrapped.data
    return max([0.0] + [-d.contact[i].dist for i in range(d.ncon)])


def _zero_action_length(env, seed: int, limit: int = 300) -> int:
    env.reset(seed=seed)
    for t in range(1, limit + 1):
        *_, terminated, truncated, _ = env.step(np.zeros(env.action_space.shape))
        if terminated or truncated:
            return t
    return limit


PERTURBED = [
    ("PerturbAnt-v0", {"shin.length": 2.0}),
    ("PerturbAnt-v0", {"shin.length": 5.0}),
    ("PerturbAnt-v0", {"thigh.length": 0.5, "hip.width": 1.5}),
    ("PerturbHalfCheetah-v0", {"torso.length": 3.0}),
    ("PerturbHopper-v0", {"thigh.length": 0.05}),
    ("PerturbHopper-v0", {"leg.length": 0.05}),
    ("PerturbHopper-v0", {"foot.length": 1.5, "leg.length": 1.3}),
    ("PerturbWalker2d-v0", {"thigh.length": 0.05}),
    ("PerturbWalker2d-v0", {"leg.length": 2.0}),
]


@pytest.mark.parametrize(("env_id", "perturbation"), PERTURBED)
def test_perturbed_body_starts_no_deeper_and_lives_as_long(env_id, perturbation):
    nominal, perturbed = _make(env_id), _make(env_id, perturbation=perturbation)
    for seed in range(3):
        nominal.reset(seed=seed)
        perturbed.reset(seed=seed)
        assert _start_penetration(perturbed) <= _start_penetration(nominal) + 1e-6
    n_len = _zero_action_length(nominal, 0)
    p_len = _zero_action_length(perturbed, 0)
    assert p_len >= 0.8 * n_len, (p_len, n_len)


def test_longer_shins_lift_the_ant_and_scale_its_healthy_range():
    ant = _make("PerturbAnt-v0", perturbation={"shin.length": 2.0}).unwrapped
    low, high = ant.healthy_z_range
    assert low > 0.2 and high > 1.0
    assert ant.init_qpos[2] > 0.75


@pytest.mark.parametrize(
    ("env_id", "perturbation"),
    [
        ("PerturbHopper-v0", {"leg.length": 30.0, "thigh.length": 30.0}),
        ("PerturbAnt-v0", {"shin.length": 60.0}),
    ],
)
def test_a_body_that_cannot_be_built_is_refused_in_one_line(env_id, perturbation):
    with pytest.raises(ValueError, match="cannot be built sensibly") as info:
        _make(env_id, perturbation=perturbation)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("env_id", LOCOMOTION_IDS)
def test_a_physics_blow_up_truncates_with_a_flag_and_finite_obs(env_id):
    env = _make(env_id, obs_mode="state+pixels", **SMALL)
    _, info = env.reset(seed=0)
    assert info["physics_unstable"] is False
    u = env.unwrapped
    u.set_state(u.data.qpos, np.full(u.model.nv, 1e30))
    obs, reward, terminated, truncated, info = env.step(np.zeros(env.action_space.shape))
    assert truncated and info["physics_unstable"] is True
    assert np.isfinite(obs["state"]).all() and np.isfinite(reward)


def test_bullet_perturbed_bodies_start_no_deeper_than_nominal():
    def lowest(env) -> float:
        p, body = env.unwrapped._p, env.unwrapped._robot_id
        return min(p.getAABB(body, link)[0][2] for link in range(-1, p.getNumJoints(body)))

    for env_id, perturbation in [
        ("PerturbAntBullet-v0", {"shin.length": 3.0}),
        ("PerturbHopperBullet-v0", {"thigh.length": 0.05}),
    ]:
        nominal, perturbed = _make(env_id), _make(env_id, perturbation=perturbation)
        nominal.reset(seed=0)
        perturbed.reset(seed=0)
        # AABBs carry Bullet's collision margin; the reset noise moves them by < 1 mm.
        assert lowest(perturbed) >= lowest(nominal) - 1e-3
        nominal.close()
        perturbed.close()


# -- 6: gymnasium's renderer keeps working -----------------------------------------------------
@pytest.mark.parametrize("order", ["visfore_first", "gymnasium_first"])
def test_visfore_render_leaves_gymnasiums_context_alone(order):
    hopper = gym.make("Hopper-v5", render_mode="rgb_array", width=64, height=64)
    ours = _make("ReacherPlane-v0", obs_mode="pixels")
    hopper.reset(seed=0)
    if order == "gymnasium_first":
        assert hopper.render().std() > 0
        ours.reset(seed=0)
    else:
        ours.reset(seed=0)
    for _ in range(2):
        assert hopper.render().std() > 0
        obs, *_ = ours.step(ours.action_space.sample())
        assert obs.std() > 0
        hopper.step(hopper.action_space.sample())
    hopper.close()
    ours.close()


# -- 7: async vector envs after an earlier render ------------------------------------------------
_ASYNC_SCRIPT = """
import sys
import gymnasium as gym

def main():
    e = gym.make("Reacher-v5", render_mode="rgb_array"); e.reset(seed=0); e.render()
    import visfore_envs  # noqa: F401  (after the render: llvmpipe threads already run)
    kwargs = {{}} if "{context}" == "fork" else {{"vector_kwargs": {{"context": "{context}"}}}}
    v = gym.make_vec("ReacherPlane-v0", num_envs=2, vectorization_mode="async",
                     obs_mode="pixels", **kwargs)
    try:
        obs, _ = v.reset(seed=0)
        print("OK", obs.shape, float(obs.std()) > 0)
    except RuntimeError as exc:
        print("ERROR", exc)
    finally:
        v.close(terminate=True)

if __name__ == "__main__":
    main()
"""


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_async_vector_env_after_an_earlier_render_never_hangs(tmp_path, context):
    script = tmp_path / "async_after_render.py"
    script.write_text(textwrap.dedent(_ASYNC_SCRIPT.format(context=context)))
    env = {k: v for k, v in os.environ.items() if k != "LP_NUM_THREADS"}  # as a user's shell
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=env)
    lines = [line for line in done.stdout.splitlines() if line.startswith(("OK", "ERROR"))]
    assert lines, done.stderr[-2000:]
    if context == "fork":  # works, or fails fast in one line saying what to do
        assert lines[0] == "OK (2, 64, 64, 3) True" or (lines[0].startswith("ERROR") and "'spawn'" in lines[0]), lines
    else:
        assert lines[0] == "OK (2, 64, 64, 3) True", lines


# -- 8: render modes ---------------------------------------------------------------------------
@pytest.mark.parametrize("render_mode", ["rgb_array", "rgb_array_list", "human"])
@pytest.mark.parametrize("env_id", IDS)
def test_every_id_accepts_the_standard_render_modes(env_id, render_mode):
    env = _make(env_id, render_mode=render_mode)  # constructing only: never open a window
    assert env.render_mode == render_mode
    env.close()


# -- 10: pixel observations belong to the caller ---------------------------------------------------
@pytest.mark.parametrize("obs_mode", ["pixels", "state+pixels"])
@pytest.mark.parametrize("env_id", IDS)
def test_pixel_observation_does_not_alias_the_renderer(env_id, obs_mode):
    env = _make(env_id, obs_mode=obs_mode, render_mode="rgb_array", **SMALL)
    obs, _ = env.reset(seed=0)
    frame = obs if obs_mode == "pixels" else obs["pixels"]
    kept = frame.copy()
    frame[:] = 0
    np.testing.assert_array_equal(env.render(), kept)
    action = np.zeros(env.action_space.shape, dtype=np.float32)
    obs2, *_ = env.step(action)
    frame2 = obs2 if obs_mode == "pixels" else obs2["pixels"]
    assert frame2.any()
    np.testing.assert_array_equal(env.render(), frame2)
    env.close()


# -- 11: unknown keywords ------------------------------------------------------------------------
@pytest.mark.parametrize("env_id", IDS)
def test_unknown_keyword_is_a_value_error_naming_it_and_the_options(env_id):
    with pytest.raises(ValueError, match="no_such_option") as info:
        _make(env_id, no_such_option=1)
    assert "obs_mode" in str(info.value)


# -- 12: no settotalmass deprecation -------------------------------------------------------------
def test_no_settotalmass_deprecation_warning(capfd):
    for perturbation in (None, {"torso.length": 1.2}):
        env = _make("PerturbHalfCheetah-v0", perturbation=perturbation)
        env.reset(seed=0)
    assert "settotalmass" not in capfd.readouterr().err
    from visfore_envs.locomotion import _LOCO_DIR

    assert "settotalmass=" not in (_LOCO_DIR / "half_cheetah.xml").read_text().split("-->", 2)[2]
    assert sum(env.unwrapped.model.body_mass) > 0
    nominal = _make("PerturbHalfCheetah-v0").unwrapped.model
    assert float(np.sum(nominal.body_mass)) == pytest.approx(14.0)


# -- 14: reset info = step info; Minari -------------------------------------------------------------
@pytest.mark.parametrize("env_id", LOCO_BOTH)
def test_reset_info_has_the_step_info_keys(env_id):
    env = _make(env_id)
    _, reset_info = env.reset(seed=0)
    *_, step_info = env.step(env.action_space.sample())
    assert list(reset_info) == list(step_info)
    for key, value in reset_info.items():
        if key.startswith("reward_"):
            assert value == 0.0


@pytest.mark.parametrize("env_id", IDS)
def test_minari_records_infos_and_recovers_the_env(env_id, tmp_path, monkeypatch):
    minari = pytest.importorskip("minari")
    from minari import DataCollector

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    env = DataCollector(_make(env_id, max_episode_steps=4), record_infos=True)
    for seed in range(2):
        env.reset(seed=seed)
        done = False
        while not done:
            *_, terminated, truncated, _ = env.step(env.action_space.sample())
            done = terminated or truncated
    name = f"visfore/{env_id.lower().replace('-', '_')}/test-v0"
    dataset = env.create_dataset(dataset_id=name, algorithm_name="random")
    assert dataset.total_episodes == 2
    episode = next(dataset.iterate_episodes())
    assert len(episode.infos) > 0
    recovered = dataset.recover_environment()
    assert recovered.spec.id == env_id
    recovered.close()
    env.close()
    minari.delete_dataset(name)


def test_minari_stores_raw_frames_equal_to_the_live_ones(tmp_path, monkeypatch):
    minari = pytest.importorskip("minari")
    from minari import DataCollector

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    env = DataCollector(
        _make("PerturbHopper-v0", obs_mode="pixels", max_episode_steps=3, **SMALL),
        record_infos=True,
        jpeg_encoding=False,
    )
    obs, _ = env.reset(seed=0)
    live = [obs.copy()]
    done = False
    while not done:
        obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
        live.append(obs.copy())
        done = terminated or truncated
    dataset = env.create_dataset(dataset_id="visfore/hopper_pixels/test-v0", algorithm_name="random")
    stored = next(dataset.iterate_episodes()).observations
    np.testing.assert_array_equal(np.asarray(stored), np.stack(live))
    env.close()
    minari.delete_dataset("visfore/hopper_pixels/test-v0")


# -- checkers we did not write ---------------------------------------------------------------------
@pytest.mark.parametrize("obs_mode", MODES)
@pytest.mark.parametrize("env_id", LOCO_BOTH)
def test_gymnasium_and_sb3_check_env(env_id, obs_mode):
    sb3_env_checker = pytest.importorskip("stable_baselines3.common.env_checker")
    kwargs = {"obs_mode": obs_mode, **(SMALL if obs_mode != "state" else {})}
    env = _make(env_id, **kwargs)
    check_env(env.unwrapped, skip_render_check=True)
    sb3_env_checker.check_env(_make(env_id, **kwargs))
    env.close()
