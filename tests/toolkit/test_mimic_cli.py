"""visfore mimic: the target substitution is exact, the three-way comparison end to end
(tiny PPO policy, tiny translator), --image, and bad input as one-line errors."""

from __future__ import annotations

import csv
import json
import shutil

import gymnasium as gym
import imageio.v3 as iio
import numpy as np
import pytest
from typer.testing import CliRunner

import visfore_envs  # noqa: F401  (registers the ids)
from visfore.cli.app import app
from visfore.core.errors import VisforeError
from visfore.reports.panels import CAPTION_BG, CAPTION_HEIGHT, compose_panels, panel_columns
from visfore.rl.mimic import (
    MODES,
    image_panels,
    joint_difference,
    leader_keypoints_to_target,
    policy_observation,
    run_mimic,
)

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory, small_reacher_dataset):
    """A PPO run on ReacherPlane-v0 (256 steps) and a translator trained one epoch on the
    shared 32x32 ReacherPlane-v0 dataset."""
    out = tmp_path_factory.mktemp("mimic-runs")
    res = runner.invoke(
        app,
        [
            "train-policy",
            "--env",
            "ReacherPlane-v0",
            "--algo",
            "ppo",
            "--timesteps",
            "256",
            "--seed",
            "3",
            "--hp",
            "n_steps=64",
            "--hp",
            "batch_size=32",
            "--hp",
            "n_epochs=1",
            "--hp",
            "policy_kwargs=dict(net_arch=[16, 16])",
            "--eval-freq",
            "128",
            "--eval-episodes",
            "1",
            "--device",
            "cpu",
            "--no-progress",
            "--out-dir",
            str(out),
            "--name",
            "ppo",
        ],
    )
    assert res.exit_code == 0, res.output
    res = runner.invoke(
        app,
        [
            "train-translator",
            "--data",
            str(small_reacher_dataset),
            "--out",
            str(out / "translator"),
            "--epochs",
            "1",
            "--channels",
            "8,16,16",
            "--hidden",
            "32",
            "--num-threads",
            "1",
            "--quiet",
        ],
    )
    assert res.exit_code == 0, res.output
    return out / "train-policy-ppo", out / "translator"


def test_true_pose_observation_equals_the_single_envs_observation():
    """The policy's observation built from a mimic observation with the true mirrored target
    is exactly what ReacherPlane-v0 returns for the same follower state and target pose."""
    mimic = gym.make("MimicReacher-v0", leader="trajectory")
    single = gym.make("ReacherPlane-v0")
    obs, _ = mimic.reset(seed=5)
    rng = np.random.default_rng(0)
    checked = 0
    for t in range(30):
        if t % 10 == 0:
            m = mimic.unwrapped
            built = policy_observation(obs, obs[-4:], 4)
            ref, _ = single.reset(
                seed=0,
                options={
                    "target_qpos": m.mirror_pose(m.leader_qpos),
                    "qpos": m.data.qpos.copy(),
                    "qvel": m.data.qvel.copy(),
                },
            )
            assert built.shape == ref.shape == (14,)
            np.testing.assert_array_equal(built[:6], ref[:6])
            np.testing.assert_allclose(built[6:], ref[6:], rtol=0, atol=1e-12)
            checked += 1
        obs, *_ = mimic.step(rng.uniform(-1, 1, 2).astype(np.float32))
    assert checked == 3
    # another target: [proprio, k - k*', k*'] with the same follower key points k
    target = np.array([0.05, 0.02, 0.1, -0.03])
    built = policy_observation(obs, target, 4)
    k = obs[12:16] + obs[16:20]
    np.testing.assert_allclose(built, np.concatenate([obs[:6], k - target, target]))
    with pytest.raises(VisforeError, match="do not fit"):
        policy_observation(obs, target[:3], 4)
    mimic.close()
    single.close()


def test_true_pose_observation_of_a_joint_space_policy_equals_the_single_envs():
    """With ``joint_targets=True`` the built observation also ends with the env's own
    wrapped ``q* - q``, bit for bit."""
    mimic = gym.make("MimicReacher-v0", leader="trajectory")
    single = gym.make("ReacherPlane-v0", joint_targets=True)
    obs, _ = mimic.reset(seed=6)
    rng = np.random.default_rng(1)
    for _ in range(12):
        obs, *_ = mimic.step(rng.uniform(-1, 1, 2).astype(np.float32))
    m = mimic.unwrapped
    built = policy_observation(obs, obs[-4:], 4, joint_difference(mimic, m.target_qpos))
    ref, _ = single.reset(
        seed=0,
        options={
            "target_qpos": m.mirror_pose(m.leader_qpos),
            "qpos": m.data.qpos.copy(),
            "qvel": m.data.qvel.copy(),
        },
    )
    assert built.shape == ref.shape == (16,)
    np.testing.assert_array_equal(built[-2:], ref[-2:])
    np.testing.assert_allclose(built[:-2], ref[:-2], rtol=0, atol=1e-12)
    mimic.close()
    single.close()


def test_joint_space_policy_runs_the_comparison_and_an_image(tiny_runs, tmp_path):
    """A policy trained with ``--env-kwargs joint_targets=true`` gets the translated joint
    angles (mirrored) as its joint target, in the comparison and with --image."""
    _, translator = tiny_runs
    res = runner.invoke(
        app,
        [
            "train-policy",
            "--env",
            "ReacherPlane-v0",
            "--algo",
            "ppo",
            "--timesteps",
            "128",
            "--seed",
            "3",
            "--env-kwargs",
            "joint_targets=true",
            "--hp",
            "n_steps=64",
            "--hp",
            "batch_size=32",
            "--hp",
            "n_epochs=1",
            "--hp",
            "policy_kwargs=dict(net_arch=[16, 16])",
            "--eval-freq",
            "0",
            "--eval-episodes",
            "1",
            "--device",
            "cpu",
            "--no-progress",
            "--out-dir",
            str(tmp_path),
            "--name",
            "joint",
        ],
    )
    assert res.exit_code == 0, res.output
    policy = tmp_path / "train-policy-joint"
    result = run_mimic(policy, translator, episodes=1, seed=2, modes=("translated", "true-pose"))
    assert [r["mode"] for r in result["summary"]] == ["translated", "true-pose"]
    assert all(e["steps"] == 99 for e in result["episodes_detail"])
    env = gym.make("ReacherPlane-v0", width=32, height=32, show_target=False, render_mode="rgb_array")
    env.reset(seed=0, options={"qpos": np.array([0.4, 1.0]), "qvel": np.zeros(2)})
    image = tmp_path / "pose.png"
    iio.imwrite(image, env.render())
    env.close()
    res = runner.invoke(
        app,
        [
            "mimic",
            "--policy",
            str(policy),
            "--translator",
            str(translator),
            "--image",
            str(image),
            "--out",
            str(tmp_path / "pose.json"),
        ],
    )
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "pose.json").read_text())["steps"] == 50


def test_leader_keypoints_read_in_the_leader_frame_map_onto_the_true_target():
    """Key points of the leader in its own frame (= ReacherPlane-v0 key points of the
    leader's configuration, what a translator reads) map to the mimic env's target k*."""
    mimic = gym.make("MimicReacher-v0")
    single = gym.make("ReacherPlane-v0")
    obs, _ = mimic.reset(seed=2)
    q = mimic.unwrapped.leader_qpos
    ref, _ = single.reset(seed=0, options={"target_qpos": q})
    local = ref[10:14]  # k* of the single env = key points of configuration q
    np.testing.assert_allclose(leader_keypoints_to_target(mimic, local), obs[16:20], atol=1e-12)
    mimic.close()
    single.close()


def test_cli_three_way_comparison_end_to_end(tiny_runs, tmp_path):
    policy, translator = tiny_runs
    out = tmp_path / "mimic.csv"
    res = runner.invoke(
        app,
        [
            "mimic",
            "--env",
            "MimicReacher-v0",
            "--policy",
            str(policy),
            "--translator",
            str(translator),
            "--episodes",
            "2",
            "--seed",
            "1",
            "--out",
            str(out),
            "-q",
        ],
    )
    assert res.exit_code == 0, res.output
    for mode in MODES:
        assert mode in res.output
    rows = list(csv.DictReader(out.open()))
    assert [r["mode"] for r in rows] == list(MODES)
    assert all(r["episodes"] == "2" for r in rows)
    # the same run through the API: seeded and deterministic, same episode seeds in every mode
    a = run_mimic(policy, translator, episodes=2, seed=1)
    b = run_mimic(policy, translator, episodes=2, seed=1)
    assert a["summary"] == b["summary"]
    assert [float(r["final_distance_mean"]) for r in rows] == pytest.approx(
        [r["final_distance_mean"] for r in a["summary"]], abs=1e-4
    )
    detail = a["episodes_detail"]
    assert sorted({(e["mode"], e["seed"]) for e in detail}) == sorted((m, s) for m in MODES for s in (1, 2))
    assert all(e["steps"] == 99 for e in detail)  # 4 held poses of 25 steps, ending on a hold
    translated = [e for e in detail if e["mode"] == "translated"]
    assert all(e["target_error"] is not None and e["target_error"] > 0 for e in translated)
    assert all(e["target_error"] is None for e in detail if e["mode"] != "translated")
    longer = run_mimic(policy, translator, episodes=1, seed=1, hold_steps=40, modes=("random",))
    assert longer["hold_steps"] == 40 and longer["episodes_detail"][0]["steps"] == 79  # 2 holds of 40
    md = tmp_path / "mimic.md"
    res = runner.invoke(
        app,
        [
            "mimic",
            "--policy",
            str(policy),
            "--translator",
            str(translator),
            "--episodes",
            "1",
            "--leader",
            "trajectory",
            "--out",
            str(md),
            "-q",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "| true-pose |" in md.read_text()


def test_image_executes_the_translated_pose(tiny_runs, tmp_path):
    policy, translator = tiny_runs
    env = gym.make("ReacherPlane-v0", width=32, height=32, show_target=False, render_mode="rgb_array")
    env.reset(seed=0, options={"qpos": np.array([0.7, -1.2]), "qvel": np.zeros(2)})
    image = tmp_path / "pose.png"
    iio.imwrite(image, env.render())
    env.close()
    out = tmp_path / "pose.json"
    res = runner.invoke(
        app,
        ["mimic", "--policy", str(policy), "--translator", str(translator), "--image", str(image), "--out", str(out)],
    )
    assert res.exit_code == 0, res.output
    result = json.loads(out.read_text())
    assert len(result["translated_qpos"]) == 2 and len(result["target_keypoints"]) == 4
    assert result["steps"] == 50 and result["final_distance"] >= 0
    # leader (image) | translated pose | follower: labelled, 32 px frames upscaled 4x to 128 px
    shown = iio.imread(result["show"])
    assert shown.shape == (CAPTION_HEIGHT + 128, 3 * 128 + 2, 3)
    (l0, l1), (t0, t1), (f0, f1) = panel_columns([32, 32, 32], 4)
    np.testing.assert_array_equal(shown[CAPTION_HEIGHT:, l0:l1][::4, ::4], iio.imread(image))
    mimic = gym.make("MimicReacher-v0")
    target_qpos = mimic.unwrapped.mirror_pose(np.array(result["translated_qpos"]))
    mimic.close()
    single = gym.make("ReacherPlane-v0", width=32, height=32, render_mode="rgb_array")
    single.reset(seed=0, options={"target_qpos": target_qpos})
    np.testing.assert_array_equal(shown[CAPTION_HEIGHT:, t0:t1][::4, ::4], single.unwrapped.render_goal())
    single.close()
    assert all(np.any(shown[:CAPTION_HEIGHT, a:b] != CAPTION_BG) for a, b in ((l0, l1), (t0, t1), (f0, f1)))
    assert "leader | translated pose | follower" in res.output


def test_image_panels_captions_the_three_frames():
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(3)]
    picture = image_panels(*frames, steps=50)
    np.testing.assert_array_equal(
        picture, compose_panels(frames, ["leader (image)", "translated pose", "follower t=50"], 4)
    )
    assert image_panels(*(f.repeat(4, 0).repeat(4, 1) for f in frames), steps=1).shape == (CAPTION_HEIGHT + 128, 386, 3)


def _error(args):
    res = runner.invoke(app, ["mimic", *args])
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), res.output
    return lines[0]


def test_bad_input_is_one_line(tiny_runs, tmp_path):
    policy, translator = tiny_runs
    assert "not a directory" in _error(["--policy", str(tmp_path / "nope"), "--translator", str(translator)])
    assert "trained on ReacherPlane-v0" in _error(
        ["--env", "MimicHumanoid-v0", "--policy", str(policy), "--translator", str(translator)]
    )
    assert "--env must be one of MimicReacher-v0, MimicHumanoid-v0" in _error(
        ["--env", "Hopper-v5", "--policy", str(policy), "--translator", str(translator)]
    )
    # a translator for another frame size than the image
    big = tmp_path / "big.png"
    iio.imwrite(big, np.zeros((64, 64, 3), np.uint8))
    assert "(32, 32, 3)" in _error(["--policy", str(policy), "--translator", str(translator), "--image", str(big)])
    assert "not found" in _error(
        ["--policy", str(policy), "--translator", str(translator), "--image", str(tmp_path / "missing.png")]
    )
    assert "--leader" in _error(["--policy", str(policy), "--translator", str(translator), "--leader", "dance"])
    assert "--hold-steps only applies" in _error(
        ["--policy", str(policy), "--translator", str(translator), "--leader", "trajectory", "--hold-steps", "10"]
    )
    assert "suffix" in _error(
        ["--policy", str(policy), "--translator", str(translator), "--out", str(tmp_path / "x.txt")]
    )
    assert "train-translator run" in _error(["--policy", str(policy), "--translator", str(policy)])


def test_resumed_reacher_run_keeps_its_success_history(tiny_runs, tmp_path):
    """train-policy --resume on a key-point env appends to evaluations.npz with the
    is_success history of the first session kept (aligned with the timesteps)."""
    policy, _ = tiny_runs
    run = tmp_path / "run"
    shutil.copytree(policy, run)
    with np.load(run / "logs" / "evaluations.npz") as d:
        before = {k: d[k].copy() for k in d.files}
    assert len(before["timesteps"]) == len(before["successes"]) == 2
    res = runner.invoke(app, ["train-policy", "--resume", str(run), "--timesteps", "384", "--no-progress"])
    assert res.exit_code == 0, res.output
    with np.load(run / "logs" / "evaluations.npz") as d:
        assert len(d["timesteps"]) == len(d["successes"]) == 3
        np.testing.assert_array_equal(d["successes"][:2], before["successes"])
