"""visfore mimic with a two-view translator: a tiny translator trained on TargetHumanoid-v0
frames with ``views=("default", "side")`` (32 x 64: two 32 x 32 views) drives
MimicHumanoid-v0, whose leader frames then have the translator's frame size and layout;
``--image`` takes an image of that size."""

from __future__ import annotations

import json

import gymnasium as gym
import imageio.v3 as iio
import numpy as np
import pytest
from typer.testing import CliRunner

import visfore_envs  # noqa: F401  (registers the ids)
from visfore.cli.app import app
from visfore.core.errors import VisforeError
from visfore.data.dataset import DatasetWriter
from visfore.perception.translator_run import load_translator_run
from visfore.reports.panels import CAPTION_HEIGHT
from visfore.rl.mimic import _make_mimic_env, leader_frame_options, run_mimic

runner = CliRunner()
VIEWS = ["default", "side"]
SIZE = 32  # pixels per view


def _write_dataset(path, episodes: int = 4, steps: int = 8) -> None:
    """A visfore dataset of TargetHumanoid-v0 two-view frames (random poses and actions),
    recorded with ``env_kwargs={"views": [...]}`` as ``--env-kwargs`` would record it."""
    env_kwargs = {"views": VIEWS, "init_pose": "random", "show_target": False}
    env = gym.make("TargetHumanoid-v0", obs_mode="state+pixels", width=SIZE, height=SIZE, **env_kwargs)
    attrs = {"env_id": "TargetHumanoid-v0", "env_kwargs": env_kwargs, "frame_size": [SIZE, 2 * SIZE]}
    state_dim = env.observation_space["state"].shape[0]
    rng = np.random.default_rng(0)
    with DatasetWriter.create(
        path, frame_shape=(SIZE, 2 * SIZE, 3), state_dim=state_dim, action_dim=14, attrs=attrs
    ) as writer:
        for e in range(episodes):
            obs, _ = env.reset(seed=e)
            pixels, state, actions = [obs["pixels"]], [obs["state"]], []
            for _ in range(steps):
                a = rng.uniform(-1, 1, 14).astype(np.float32)
                obs, *_ = env.step(a)
                pixels.append(obs["pixels"])
                state.append(obs["state"])
                actions.append(a)
            writer.append_episode(
                pixels=np.stack(pixels),
                state=np.stack(state),
                action=np.stack(actions),
                reward=np.zeros(steps),
                terminated=np.zeros(steps, bool),
                truncated=np.zeros(steps, bool),
            )
    env.close()


@pytest.fixture(scope="module")
def two_view_runs(tmp_path_factory):
    """A PPO run on TargetHumanoid-v0 (128 steps) and a translator trained one epoch on a
    tiny two-view TargetHumanoid-v0 dataset."""
    out = tmp_path_factory.mktemp("mimic-views")
    data = out / "humanoid-2views.zarr"
    _write_dataset(data)
    res = runner.invoke(
        app,
        [
            "train-translator",
            "--data",
            str(data),
            "--out",
            str(out / "translator"),
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--val-fraction",
            "0.25",
            "--channels",
            "8,16,16",
            "--hidden",
            "32",
            "--num-threads",
            "1",
            "--device",
            "cpu",
            "--quiet",
        ],
    )
    assert res.exit_code == 0, res.output
    res = runner.invoke(
        app,
        [
            "train-policy",
            "--env",
            "TargetHumanoid-v0",
            "--algo",
            "ppo",
            "--timesteps",
            "128",
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
            "0",
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
    return out / "train-policy-ppo", out / "translator"


def test_leader_frame_options():
    assert leader_frame_options((32, 64)) == {"width": 64, "height": 32}
    assert leader_frame_options((32, 64), {"show_target": False}) == {"width": 64, "height": 32}
    two = {"width": 32, "height": 32, "views": ("default", "side")}
    assert leader_frame_options((32, 64), {"views": "default+side"}) == two
    assert leader_frame_options((32, 64), {"views": ["default", "side"]}) == two
    with pytest.raises(VisforeError, match="not divisible by its 3 views"):
        leader_frame_options((32, 64), {"views": "default+side+top"})
    with pytest.raises(VisforeError, match="translator's env kwargs: views=5"):
        leader_frame_options((32, 64), {"views": 5})


def test_two_view_translator_reads_the_leader_in_its_own_layout(two_view_runs):
    policy, translator_dir = two_view_runs
    translator = load_translator_run(translator_dir)
    assert translator.frame_size == (SIZE, 2 * SIZE) and translator.env_kwargs["views"] == VIEWS
    env = _make_mimic_env("MimicHumanoid-v0", "hold", translator.frame_size, env_kwargs=translator.env_kwargs)
    try:
        env.reset(seed=1)
        frame = env.render()
        assert frame.shape == (*translator.frame_size, 3) and frame.dtype == np.uint8
        base = env.unwrapped
        assert base.views == tuple(VIEWS) and base.width == SIZE
        # the leader is seen as TargetHumanoid-v0 with the same views sees its robot
        single = gym.make("TargetHumanoid-v0", width=SIZE, height=SIZE, views=VIEWS, show_target=False)
        single.reset(seed=0)
        single.unwrapped.set_state(base.leader_qpos, np.zeros(14))
        ref = single.unwrapped._current_frame()
        single.close()
        for cols in (slice(0, SIZE), slice(SIZE, 2 * SIZE)):
            assert np.abs(frame[:, cols].astype(int) - ref[:, cols].astype(int)).mean() < 3.0
        assert translator.predict(frame)["keypoints"].shape == (24,)
    finally:
        env.close()
    result = run_mimic(
        policy, translator_dir, env_id="MimicHumanoid-v0", episodes=1, seed=2, modes=("translated", "true-pose")
    )
    assert [r["mode"] for r in result["summary"]] == ["translated", "true-pose"]
    assert all(e["steps"] == 199 for e in result["episodes_detail"])
    translated = result["episodes_detail"][0]
    assert translated["target_error"] is not None and translated["target_error"] > 0


def test_image_of_the_multi_view_size_is_executed(two_view_runs, tmp_path):
    policy, translator = two_view_runs
    env = gym.make("TargetHumanoid-v0", width=SIZE, height=SIZE, views="default+side", show_target=False)
    env.reset(seed=0)
    image = tmp_path / "pose.png"
    iio.imwrite(image, env.unwrapped._current_frame())
    env.close()
    out = tmp_path / "pose.json"
    args = ["mimic", "--env", "MimicHumanoid-v0", "--policy", str(policy), "--translator", str(translator)]
    res = runner.invoke(app, [*args, "--image", str(image), "--out", str(out)])
    assert res.exit_code == 0, res.output
    result = json.loads(out.read_text())
    assert len(result["translated_qpos"]) == 14 and len(result["target_keypoints"]) == 24
    # leader (image) | translated pose | follower, each a 32 x 64 two-view frame, upscaled
    shown = iio.imread(result["show"])
    scale = (shown.shape[0] - CAPTION_HEIGHT) // SIZE
    assert shown.shape == (CAPTION_HEIGHT + SIZE * scale, 3 * 2 * SIZE * scale + 2, 3)
    # a one-view image is refused, naming the two-view size
    single = tmp_path / "one.png"
    iio.imwrite(single, np.zeros((SIZE, SIZE, 3), np.uint8))
    res = runner.invoke(app, [*args, "--image", str(single)])
    assert res.exit_code == 2 and "(32, 64, 3)" in res.output
