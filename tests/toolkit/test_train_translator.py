"""visfore train-translator: decode_state of the key-point envs, the CLI end to end, the
translator beating the mean predictor on an easy tiny dataset, reloading a run, bad input."""

from __future__ import annotations

import json
import math

import gymnasium as gym
import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

import visfore_envs  # noqa: F401  (registers the ids)
from visfore.cli.app import app
from visfore.core.errors import VisforeError
from visfore.data.dataset import DatasetWriter
from visfore.perception.train_translator import (
    circular_mean,
    train_translator,
    translation_errors,
    window_indices,
)
from visfore.perception.translator_run import load_translator_run

runner = CliRunner()
TINY = {"channels": (8, 16, 16), "hidden": 32, "lstm_channels": 8}
TINY_CLI = ["--channels", "8,16,16", "--hidden", "32", "--num-threads", "1", "--quiet"]


# ---------------------------------------------------------------------------------------
# decode_state of the key-point envs
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "env_id, nq, g", [("ReacherPlane-v0", 2, 4), ("Reacher3D-v0", 3, 6), ("TargetHumanoid-v0", 14, 24)]
)
def test_decode_state_matches_the_envs_own_keypoints_and_joints(env_id, nq, g):
    env = gym.make(env_id)
    u = env.unwrapped
    cls = type(u)
    rng = np.random.default_rng(1)
    states, qpos, qvel, kps, targets = [], [], [], [], []
    for episode in range(3):
        low, high = u._target_low, u._target_high
        obs, _ = env.reset(seed=episode, options={"qpos": rng.uniform(low, high)})
        for _ in range(4):
            obs, *_ = env.step(env.action_space.sample())
            states.append(obs.astype(np.float32))  # datasets store float32
            qpos.append(u.data.qpos.copy())
            qvel.append(u.data.qvel.copy())
            kps.append(u.keypoints)
            targets.append(u.target_keypoints)
    states = np.stack(states).reshape(3, 4, -1)  # leading axes are kept
    decoded = cls.decode_state(states)
    assert decoded["qpos"].shape == (3, 4, nq) and decoded["keypoints"].shape == (3, 4, g)
    assert decoded["qpos"].dtype == np.float64
    dq = decoded["qpos"].reshape(12, nq) - np.stack(qpos)
    assert np.abs(np.remainder(dq + np.pi, 2 * np.pi) - np.pi).max() < 1e-5
    np.testing.assert_allclose(decoded["keypoints"].reshape(12, g), np.stack(kps), atol=1e-6)
    np.testing.assert_allclose(decoded["target_keypoints"].reshape(12, g), np.stack(targets), atol=1e-6)
    # joint velocities (rad/s), stored as float32: the arm moved, so they are not all zero
    assert decoded["qvel"].shape == (3, 4, nq) and np.abs(np.stack(qvel)).max() > 0.1
    np.testing.assert_allclose(decoded["qvel"].reshape(12, nq), np.stack(qvel), rtol=1e-6, atol=1e-5)
    with pytest.raises(ValueError, match="decode_state needs|proprio length"):
        cls.decode_state(np.zeros((2, states.shape[-1] + 1)))


# ---------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------
def test_window_indices_never_cross_episodes():
    w = window_indices(np.array([3, 5]), 3)
    np.testing.assert_array_equal(w, [[0, 0, 0], [0, 0, 1], [0, 1, 2], [3, 3, 3], [3, 3, 4]])
    np.testing.assert_array_equal(window_indices(np.array([3, 5]), 1)[:, 0], np.arange(5))


def test_errors_are_wrapped_and_per_keypoint_and_circular_mean_crosses_the_cut():
    q_true = np.array([[math.pi - 0.01, 0.0], [-math.pi + 0.01, 1.0]])
    q_pred = np.array([[-math.pi + 0.01, 0.1], [math.pi - 0.01, 1.0]])
    kp_true = np.zeros((2, 4))
    kp_pred = np.array([[0.03, 0.04, 0.0, 0.0], [0.0, 0.0, 0.06, 0.08]])
    e = translation_errors(q_pred, q_true, kp_pred, kp_true, axes_per_keypoint=2)
    np.testing.assert_allclose(e["joint_mae_deg"], [math.degrees(0.02), math.degrees(0.05)], rtol=1e-9)
    np.testing.assert_allclose(e["keypoint_error_cm"], [2.5, 5.0])  # (5 + 0) / 2, (0 + 10) / 2
    assert abs(abs(circular_mean(np.array([[math.pi - 0.1], [-math.pi + 0.1]]))[0]) - math.pi) < 1e-12


# ---------------------------------------------------------------------------------------
# datasets
# ---------------------------------------------------------------------------------------
def _write(path, *, env_id, frames, states, episode_len, env_kwargs=None):
    n, h, w, _ = frames.shape
    attrs = {"env_id": env_id, "env_kwargs": env_kwargs or {}, "frame_size": [h, w], "obs_mode": "state+pixels"}
    with DatasetWriter.create(
        path, frame_shape=(h, w, 3), state_dim=states.shape[1], action_dim=2, attrs=attrs
    ) as writer:
        for s in range(0, n, episode_len):
            t = episode_len - 1
            writer.append_episode(
                pixels=frames[s : s + episode_len],
                state=states[s : s + episode_len],
                action=np.zeros((t, 2)),
                reward=np.zeros(t),
                terminated=np.zeros(t, bool),
                truncated=np.zeros(t, bool),
            )
    return path


@pytest.fixture(scope="module")
def random_pose_dataset(tmp_path_factory):
    """ReacherPlane-v0 frames (32x32, no target ghost) of independent random poses
    (joint0 uniform in [-pi, pi], joint1 in [-2.5, 2.5]): 20 episodes of 12 frames. Every
    frame a new pose, so the mean predictor is poor and the translator has an easy job."""
    env = gym.make("ReacherPlane-v0", obs_mode="state+pixels", width=32, height=32, show_target=False)
    rng = np.random.default_rng(0)
    frames, states = [], []
    env.reset(seed=0)
    for _ in range(240):
        q = rng.uniform([-math.pi, -2.5], [math.pi, 2.5])
        obs, _ = env.reset(options={"qpos": q, "qvel": np.zeros(2)})
        frames.append(obs["pixels"])
        states.append(obs["state"])
    env.close()
    path = tmp_path_factory.mktemp("translator") / "poses.zarr"
    return _write(
        path,
        env_id="ReacherPlane-v0",
        frames=np.stack(frames),
        states=np.stack(states).astype(np.float32),
        episode_len=12,
        env_kwargs={"show_target": False},
    )


@pytest.fixture(scope="module")
def trained_run(random_pose_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("translator-runs") / "run"
    metrics = train_translator(
        {
            "data": str(random_pose_dataset),
            "out": str(out),
            "epochs": 25,
            "batch_size": 32,
            "lr": 3e-3,
            "val_fraction": 0.2,
            "seed": 0,
            "num_threads": 1,
            "progress": False,
            **TINY,
        }
    )
    return out, metrics


def test_translator_beats_the_mean_predictor_on_an_easy_dataset(trained_run):
    out, m = trained_run
    assert m["beats_mean_predictor"]
    assert m["ratio"]["joint"] < 0.5 and m["ratio"]["keypoint"] < 0.5, m["ratio"]
    assert set(m["model"]["joint_mae_deg"]) == {"joint0", "joint1", "mean"}
    assert set(m["model"]["keypoint_error_cm"]) == {"elbow", "fingertip", "mean"}
    # the mean predictor of uniform joint0 angles is ~90 degrees off on average
    assert 60 < m["mean_predictor"]["joint_mae_deg"]["joint0"] < 120
    assert m["num_val_episodes"] == 4 and m["num_val_frames"] == 48 and m["num_train_frames"] == 192
    assert m["epochs_completed"] == 25 and not m["stopped_by_time_budget"]
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk["model"] == m["model"] and "definitions" in on_disk
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["command"] == "train-translator" and config["env_id"] == "ReacherPlane-v0"
    assert len(config["split"]["val_episodes"]) == 4
    assert (out / "checkpoints" / "last.pt").is_file() and (out / "checkpoints" / "best.pt").is_file()
    assert any((out / "logs").iterdir())


def test_run_reloads_and_predicts_what_the_evaluation_measured(trained_run, random_pose_dataset):
    from visfore.data.dataset import open_dataset

    out, m = trained_run
    run = load_translator_run(out)
    assert run.env_id == "ReacherPlane-v0" and run.frame_size == (32, 32) and run.memory == 1
    assert run.env_kwargs == {"show_target": False} and run.joint_names == ["joint0", "joint1"]
    assert run.keypoint_names == ["elbow", "fingertip"] and run.axes_per_keypoint == 2
    assert run.epoch == 25 and run.metrics["model"] == m["model"]
    ds = open_dataset(random_pose_dataset)
    config = yaml.safe_load((out / "config.yaml").read_text())
    rows = np.concatenate(
        [np.arange(ds.episode_starts[e], ds.episode_ends[e]) for e in config["split"]["val_episodes"]]
    )
    frames = ds.read("pixels")[rows]
    pred = run.predict(frames)
    assert pred["qpos"].shape == (48, 2) and pred["keypoints"].shape == (48, 4)
    truth = type(gym.make("ReacherPlane-v0").unwrapped).decode_state(ds.read("state")[rows])
    e = translation_errors(pred["qpos"], truth["qpos"], pred["keypoints"], truth["keypoints"], axes_per_keypoint=2)
    assert e["joint_mae_deg"].mean() == pytest.approx(m["model"]["joint_mae_deg"]["mean"], rel=1e-4)
    assert e["keypoint_error_cm"].mean() == pytest.approx(m["model"]["keypoint_error_cm"]["mean"], rel=1e-4)
    one = run.predict(frames[3])  # a single (H, W, 3) frame: no batch axis
    np.testing.assert_allclose(one["keypoints"], pred["keypoints"][3], atol=1e-6)
    windows = run.predict(frames[:4, None])  # (B, T=1, H, W, 3)
    np.testing.assert_allclose(windows["qpos"], pred["qpos"][:4], atol=1e-6)
    best = load_translator_run(out, checkpoint="best")
    assert best.checkpoint == "best" and best.checkpoint_path.name == "best.pt"
    with pytest.raises(VisforeError, match="uint8"):
        run.predict(frames.astype(np.float32))
    with pytest.raises(VisforeError, match=r"H, W = 32, 32"):
        run.predict(np.zeros((2, 64, 64, 3), np.uint8))
    with pytest.raises(VisforeError, match="checkpoint must be one of"):
        load_translator_run(out, checkpoint="first")


def test_cli_end_to_end_with_memory_is_seeded_and_deterministic(small_reacher_dataset, tmp_path):
    """The shared 32x32 smooth-policy dataset (12 episodes, ghost visible), ConvLSTM memory 2:
    exit 0, a table on stdout, and two runs with the same seed give the same numbers."""
    results = []
    for name in ("a", "b"):
        out = tmp_path / name
        res = runner.invoke(
            app,
            [
                "train-translator",
                "--data",
                str(small_reacher_dataset),
                "--out",
                str(out),
                "--epochs",
                "1",
                "--memory",
                "2",
                "--augment",
                "--seed",
                "3",
                *TINY_CLI[:-1],
            ],
        )
        assert res.exit_code == 0, res.output
        assert "mean predictor" in res.output and "key point fingertip" in res.output
        results.append(json.loads((out / "metrics.json").read_text()))
    a, b = results
    assert a["memory"] == 2 and a["model"] == b["model"] and a["history"] == b["history"]
    assert load_translator_run(tmp_path / "a").memory == 2


# ---------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------
def _error(args):
    res = runner.invoke(app, ["train-translator", *args])
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    return lines[0]


def test_env_without_decode_state_is_one_line(tmp_path):
    frames = np.zeros((10, 32, 32, 3), np.uint8)
    path = _write(
        tmp_path / "hopper.zarr",
        env_id="PerturbHopper-v0",
        frames=frames,
        states=np.zeros((10, 11), np.float32),
        episode_len=5,
    )
    line = _error(["--data", str(path), "--out", str(tmp_path / "run")])
    assert "PerturbHopper-v0" in line and "no decode_state" in line and "ReacherPlane-v0" in line
    assert not (tmp_path / "run").exists()


def test_too_few_episodes_bad_sizes_and_bad_options(tmp_path, small_reacher_dataset):
    env = gym.make("ReacherPlane-v0", obs_mode="state+pixels", width=24, height=24)
    obs, _ = env.reset(seed=0)
    frames = np.repeat(obs["pixels"][None], 6, axis=0)
    states = np.repeat(obs["state"][None].astype(np.float32), 6, axis=0)
    one = _write(tmp_path / "one.zarr", env_id="ReacherPlane-v0", frames=frames, states=states, episode_len=6)
    assert "at least 2" in _error(["--data", str(one), "--out", str(tmp_path / "r1")])
    two = _write(tmp_path / "two.zarr", env_id="ReacherPlane-v0", frames=frames, states=states, episode_len=3)
    assert "divisible by 16" in _error(["--data", str(two), "--out", str(tmp_path / "r2")])
    assert "dataset not found" in _error(["--data", str(tmp_path / "nope.zarr")])
    data = ["--data", str(small_reacher_dataset), "--out", str(tmp_path / "r3")]
    assert "--memory must be an integer in 1..16" in _error([*data, "--memory", "0"])
    assert "--val-fraction must be in (0, 1)" in _error([*data, "--val-fraction", "1.5"])
    assert "--lr must be a finite number > 0" in _error([*data, "--lr", "-1"])
    assert "--channels" in _error([*data, "--channels", "8,x"])
    assert "--device must be" in _error([*data, "--device", "tpu"])
    assert "--data is required" in _error(["--out", str(tmp_path / "r4")])
    (tmp_path / "r3").mkdir()
    assert "already exists" in _error(data)
    assert not any((tmp_path / p).exists() for p in ("r1", "r2", "r4"))
    with pytest.raises(VisforeError, match="unknown train-translator option.*epoch"):
        train_translator({"data": str(small_reacher_dataset), "epoch": 3})
    with pytest.raises(VisforeError, match="not a train-translator run|config.yaml not found"):
        load_translator_run(tmp_path)


def test_cli_ctrl_c_prints_interrupted_once(small_reacher_dataset, tmp_path, monkeypatch):
    """A real SIGINT during the first step: the partial epoch is validated and saved, and
    the command prints one line 'interrupted; saved RUN/checkpoints/last.pt' (it printed a
    warning of its own as well); exit 130."""
    import signal

    from visfore.perception import train_translator as tt

    original = tt.TranslatorTask.train_step

    def step_then_ctrl_c(self, batch, state):
        result = original(self, batch, state)
        if state.global_step == 0:
            signal.raise_signal(signal.SIGINT)  # StopOnInterrupt's handler takes it
        return result

    monkeypatch.setattr(tt.TranslatorTask, "train_step", step_then_ctrl_c)
    out = tmp_path / "ctrl-c"
    args = ["train-translator", "--data", str(small_reacher_dataset), "--out", str(out), "--epochs", "2", *TINY_CLI]
    res = runner.invoke(app, args)
    assert res.exit_code == 130, res.output
    assert res.output.count("interrupted") == 1, res.output
    assert f"interrupted; saved {out / 'checkpoints' / 'last.pt'}" in res.output.splitlines()
    assert (out / "checkpoints" / "last.pt").is_file()
