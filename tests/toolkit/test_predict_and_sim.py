"""Using a trained model: loading a run (visfore.worldmodels.model_run), ``visfore predict``, the
``LearnedSim-v0`` env (visfore.worldmodels.learned_sim) and ``visfore play-model`` (headless only).

One tiny ConvLSTM is trained for one epoch on 8 clips of the shared 32x32 reacher dataset
(12 episodes of 12 actions, so 13 frames each) by the real ``visfore train-model`` CLI,
once per session. No test opens a window.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from PIL import Image, ImageSequence
from visfore_cli_testutils import invoke as _cli
from visfore_cli_testutils import one_error_line as _one_error_line

import visfore.worldmodels.learned_sim  # noqa: F401  (registers LearnedSim-v0)
from visfore.core.errors import VisforeError
from visfore.data.dataset import DatasetWriter
from visfore.worldmodels.model_run import frames_to_model, load_model_run, model_to_frames, sample_seed

C = 2  # context frames of the trained model
SIZE = 32  # frame size of the shared dataset
FRAMES = 13  # frames per episode of the shared dataset (12 actions)
CAPTION = 12  # caption row height of the animations


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _gif_frames(path: Path) -> list[np.ndarray]:
    with Image.open(path) as im:
        return [np.asarray(frame.convert("RGB")) for frame in ImageSequence.Iterator(im)]


def _dataset(path: Path, size: int, action_dim: int) -> Path:
    """A tiny synthetic visfore dataset: 2 episodes of 6 actions."""
    rng = np.random.default_rng(0)
    with DatasetWriter.create(
        path,
        frame_shape=(size, size, 3),
        state_dim=2,
        action_dim=action_dim,
        attrs={"env_id": "synthetic"},
        chunk_frames=7,
    ) as writer:
        for _ in range(2):
            writer.append_episode(
                pixels=rng.integers(0, 255, (7, size, size, 3), dtype=np.uint8),
                state=np.zeros((7, 2), np.float32),
                action=np.zeros((6, action_dim), np.float32),
                reward=np.zeros(6, np.float32),
                terminated=np.zeros(6, bool),
                truncated=np.zeros(6, bool),
            )
    return path


# -- model_run ----------------------------------------------------------------------------
def test_load_model_run(model_run_dir: Path, small_reacher_dataset: Path):
    mr = load_model_run(model_run_dir)
    assert mr.checkpoint == "best" and mr.checkpoint_path.name == "best.pt"
    assert (mr.context, mr.horizon, mr.image_size, mr.action_dim) == (C, 2, (SIZE, SIZE), 2)
    assert mr.data_path == small_reacher_dataset.resolve()
    assert np.array_equal(mr.action_low, [-1, -1]) and np.array_equal(mr.action_high, [1, 1])
    assert mr.action_low.dtype == np.float32
    assert not mr.model.training and not mr.stochastic
    assert sorted(mr.train_episodes + mr.val_episodes) == list(range(12))
    assert load_model_run(model_run_dir, "last").checkpoint_path.name == "last.pt"
    ds = mr.open_dataset()
    assert ds.frame_shape == (SIZE, SIZE, 3)


def test_load_model_run_errors(model_run_dir: Path, tmp_path: Path):
    def err(*args, **kwargs) -> str:
        with pytest.raises(VisforeError) as info:
            load_model_run(*args, **kwargs)
        assert "\n" not in str(info.value)
        return str(info.value)

    assert "not a directory" in err(tmp_path / "missing")
    assert "not a train-model run directory" in err(tmp_path)
    other = tmp_path / "policy-run"
    other.mkdir()
    (other / "config.yaml").write_text("command: train-policy\n")
    assert "not a train-model run directory" in err(other)
    assert "unknown checkpoint" in err(model_run_dir, "newest")
    broken = tmp_path / "no-checkpoints"
    shutil.copytree(model_run_dir, broken)
    for p in (broken / "checkpoints").iterdir():
        p.unlink()
    assert "has no trained model" in err(broken)


def test_frame_conversions_round_trip():
    frames = np.random.default_rng(1).integers(0, 256, (3, 5, 4, 3), dtype=np.uint8)
    x = frames_to_model(frames)
    assert x.shape == (3, 3, 5, 4) and x.dtype == torch.float32 and float(x.max()) <= 1.0
    assert np.array_equal(model_to_frames(x), frames)


def test_sample_seed_is_reproducible_and_restores_the_rng():
    torch.manual_seed(5)
    before = torch.get_rng_state()
    with sample_seed(7):
        a = torch.rand(3)
    with sample_seed(7):
        b = torch.rand(3)
    assert torch.equal(a, b) and torch.equal(torch.get_rng_state(), before)


# -- predict ------------------------------------------------------------------------------
def test_predict_writes_side_by_side_gif(model_run_dir: Path, small_reacher_dataset: Path, tmp_path: Path):
    out = tmp_path / "sub" / "rollout.gif"
    result = _cli(
        "predict",
        model_run_dir,
        "--data",
        small_reacher_dataset,
        "--episode",
        3,
        "--start",
        2,
        "--horizon",
        5,
        "--scale",
        2,
        "--fps",
        5,
        "--out",
        out,
    )
    assert result.exit_code == 0, result.output
    step_lines = [
        line for line in result.output.splitlines() if line.split()[:1] in (["1"], ["2"], ["3"], ["4"], ["5"])
    ]
    assert len(step_lines) == 5 and "PSNR" in result.output and str(out) in result.output
    frames = _gif_frames(out)
    assert len(frames) == C + 5
    assert frames[0].shape == (CAPTION + SIZE * 2, 3 * SIZE * 2 + 2, 3)
    with Image.open(out) as im:
        assert im.info["duration"] == 200 and im.info.get("loop") == 0

    # the truth panel of the first predicted frame shows the true o_{T+C} (up to the GIF palette)
    from visfore.data.dataset import open_dataset

    ds = open_dataset(small_reacher_dataset)
    truth = ds.episode(3).pixels[2 + C]
    panel = frames[C][CAPTION::2, 0 : 2 * SIZE : 2]  # undo the 2x upscaling
    assert np.abs(panel.astype(int) - truth.astype(int)).mean() < 8


def test_predict_api_matches_a_direct_model_call(model_run_dir: Path, tmp_path: Path):
    from visfore.worldmodels.config import PredictConfig
    from visfore.worldmodels.predict import predict

    res = predict(PredictConfig(run=str(model_run_dir), episode=1, out=str(tmp_path / "r.gif")), echo=None)
    # default horizon: the rest of the episode
    assert (res.start, res.context, res.horizon, res.num_frames) == (0, C, FRAMES - C, FRAMES)
    assert len(res.psnr) == len(res.copy_last_psnr) == FRAMES - C and all(np.isfinite(res.psnr))
    mr = load_model_run(model_run_dir)
    ep = mr.open_dataset().episode(1)
    with torch.no_grad():
        pred = mr.model(frames_to_model(ep.pixels[None, :C]), torch.from_numpy(ep.action[None]))
    assert np.array_equal(res.prediction, model_to_frames(pred[0]))
    assert np.array_equal(res.truth, ep.pixels)
    mse = ((pred[0] - frames_to_model(ep.pixels[C:])) ** 2).mean(dim=(1, 2, 3)).double()
    assert np.allclose(res.psnr, (10 * torch.log10(1 / mse)).numpy(), atol=1e-4)
    with pytest.raises(TypeError, match="PredictConfig"):  # the Python API takes the typed config
        predict(model_run_dir)  # type: ignore[arg-type]


def test_predict_mp4_works_or_says_use_gif(model_run_dir: Path, tmp_path: Path, monkeypatch):
    from visfore.worldmodels import predict as predict_mod

    out = tmp_path / "rollout.mp4"
    args = ("predict", model_run_dir, "--episode", 0, "--horizon", 3, "--out", out)
    if predict_mod.mp4_backend() is not None:
        result = _cli(*args)
        assert result.exit_code == 0, result.output
        assert out.stat().st_size > 0
        out.unlink()
    monkeypatch.setattr(predict_mod, "mp4_backend", lambda: None)
    line = _one_error_line(_cli(*args))
    assert "rollout.gif" in line and "mp4" in line.lower()
    assert not out.exists()


def test_predict_bad_input(model_run_dir: Path, small_reacher_dataset: Path, tmp_path: Path):
    out = tmp_path / "bad.gif"
    run = model_run_dir
    small = _dataset(tmp_path / "small.zarr", 16, 2)
    wide = _dataset(tmp_path / "wide.zarr", SIZE, 3)
    cases = [
        (("--episode", 12), "episode 12 out of range"),
        (("--episode", 0, "--horizon", FRAMES), "--horizon 13 is too long"),
        (("--episode", 0, "--start", FRAMES - C), "--start 11 leaves no frame"),
        (("--episode", 0, "--data", small), "16x16 frames"),
        (("--episode", 0, "--data", wide), "3-dim actions"),
        (("--episode", 0, "--checkpoint", "newest"), "--checkpoint must be one of best, last"),
        (("--episode", -1), "--episode must be >= 0"),
    ]
    for extra, match in cases:
        line = _one_error_line(_cli("predict", run, "--out", out, *extra))
        assert match in line, (extra, line)
        assert not out.exists()
    assert "not a train-model run" in _one_error_line(_cli("predict", tmp_path, "--episode", 0, "--out", out))
    line = _one_error_line(_cli("predict", run, "--episode", 0, "--out", tmp_path / "x.png"))
    assert ".gif or .mp4" in line
    assert not list(tmp_path.glob("*.gif")) and not list(tmp_path.glob(".*tmp*"))


# -- LearnedSim-v0 ------------------------------------------------------------------------
def test_learned_sim_passes_check_env(model_run_dir: Path):
    from gymnasium.utils.env_checker import check_env

    env = gym.make("LearnedSim-v0", run=str(model_run_dir))
    assert env.spec.max_episode_steps == 50
    assert env.observation_space == gym.spaces.Box(0, 255, (SIZE, SIZE, 3), np.uint8)
    assert env.action_space == gym.spaces.Box(-1, 1, (2,), np.float32)
    check_env(env.unwrapped, skip_render_check=True)
    env.close()


def test_learned_sim_reset_info_and_render(model_run_dir: Path, small_reacher_dataset: Path):
    from visfore.data.dataset import open_dataset

    env = gym.make("LearnedSim-v0", run=str(model_run_dir), render_mode="rgb_array")
    obs, info = env.reset(seed=3, options={"episode": 4, "start": 5})
    ep = open_dataset(small_reacher_dataset).episode(4)
    assert (info["episode"], info["start"], info["frame_index"]) == (4, 5, 5 + C - 1)
    assert np.array_equal(info["context"], ep.pixels[5 : 5 + C]) and info["context"].dtype == np.uint8
    assert np.array_equal(info["context_actions"], ep.action[5 : 5 + C - 1])
    assert np.array_equal(obs, ep.pixels[5 + C - 1]) and np.array_equal(info["state"], ep.state[5 + C - 1])
    assert np.array_equal(env.render(), obs)
    obs, reward, terminated, truncated, info = env.step(np.array([0.5, -0.5], np.float32))
    assert reward == 0.0 and not terminated and not truncated and info["step"] == 1
    assert np.array_equal(env.render(), obs)
    with pytest.raises(ValueError):
        env.reset(options={"episode": 4, "start": FRAMES - C + 1})
    # drawn starts leave room for the context
    for seed in range(20):
        _, info = env.reset(seed=seed)
        assert 0 <= info["start"] <= FRAMES - C and 0 <= info["episode"] < 12
    env.close()


def test_learned_sim_seeded_determinism(model_run_dir: Path):
    def rollout(seed: int) -> tuple[list[np.ndarray], tuple[int, int]]:
        env = gym.make("LearnedSim-v0", run=str(model_run_dir))
        env.action_space.seed(123)
        obs, info = env.reset(seed=seed)
        frames = [obs]
        for _ in range(6):
            frames.append(env.step(env.action_space.sample())[0])
        env.close()
        return frames, (info["episode"], info["start"])

    a, b = rollout(11), rollout(11)
    assert a[1] == b[1] and all(np.array_equal(x, y) for x, y in zip(a[0], b[0]))
    starts = {rollout(seed)[1] for seed in range(6)}
    assert len(starts) > 1  # the seed picks the episode and start


def test_learned_sim_steps_are_model_predictions(model_run_dir: Path):
    env = gym.make("LearnedSim-v0", run=str(model_run_dir))
    mr = env.unwrapped.model_run
    obs0, info = env.reset(seed=0)
    window = list(info["context"])  # C frames, uint8 (H, W, 3)
    actions = list(info["context_actions"])  # C - 1 actions
    rng = np.random.default_rng(0)
    for _ in range(3):
        a = rng.uniform(-1.5, 1.5, size=2).astype(np.float32)  # partly outside the bounds
        clipped = np.clip(a, -1, 1)
        obs, *_, info = env.step(a)
        assert np.array_equal(info["action"], clipped)
        ctx = frames_to_model(np.stack(window[-C:]))[None]
        acts = torch.from_numpy(np.stack(actions[-(C - 1) :] + [clipped]) if C > 1 else clipped[None])[None]
        with torch.no_grad():
            expected = model_to_frames(mr.model(ctx, acts)[0, 0])
        assert obs.dtype == np.uint8 and obs.shape == (SIZE, SIZE, 3)
        assert np.array_equal(obs, expected)
        window.append(obs)
        actions.append(clipped)
    with pytest.raises(ValueError):
        env.step(np.zeros(3, np.float32))
    with pytest.raises(ValueError):
        env.step(np.array([np.nan, 0], np.float32))
    env.close()


def test_learned_sim_truncates_after_50_steps(model_run_dir: Path):
    env = gym.make("LearnedSim-v0", run=str(model_run_dir))
    env.reset(seed=0)
    for t in range(50):
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        assert not terminated and truncated == (t == 49)
    env.close()
    direct = gym.make("LearnedSim-v0", run=str(model_run_dir), max_steps=3).unwrapped
    direct.reset(seed=0)
    assert [direct.step(np.zeros(2))[3] for _ in range(3)] == [False, False, True]


def test_learned_sim_stochastic_model_is_seeded(model_run_dir: Path):
    from visfore_models import ForwardModel

    class Noisy(ForwardModel):  # the stepping API comes from the base class
        stochastic = True

        def config(self):
            return {}

        def forward(self, context, actions, targets=None, teacher_forcing_prob=0.0):
            return (context[:, -1:] + 0.2 * torch.rand_like(context[:, -1:])).clamp(0, 1)

    def rollout(seed: int) -> list[np.ndarray]:
        env = gym.make("LearnedSim-v0", run=str(model_run_dir)).unwrapped
        env.model_run.model = Noisy(action_dim=2, image_size=SIZE)
        env.reset(seed=seed)
        return [env.step(np.zeros(2, np.float32))[0] for _ in range(3)]

    torch.manual_seed(0)
    a = rollout(4)
    torch.manual_seed(99)  # the global RNG does not matter
    b = rollout(4)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], a[1])


def test_learned_sim_errors(model_run_dir: Path, tmp_path: Path):
    with pytest.raises(VisforeError, match="not a train-model run"):
        gym.make("LearnedSim-v0", run=str(tmp_path))
    with pytest.raises(VisforeError, match="16x16 frames"):
        gym.make("LearnedSim-v0", run=str(model_run_dir), data=str(_dataset(tmp_path / "s.zarr", 16, 2)))
    env = gym.make("LearnedSim-v0", run=str(model_run_dir), episodes="val").unwrapped
    val = set(load_model_run(model_run_dir).val_episodes)
    assert {env.reset(seed=s)[1]["episode"] for s in range(10)} <= val


# -- play-model ---------------------------------------------------------------------------
@pytest.fixture
def headless(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr("sys.platform", "linux")


def test_play_model_headless_random_writes_gif(model_run_dir: Path, tmp_path: Path, headless):
    out = tmp_path / "play.gif"
    result = _cli(
        "play-model", model_run_dir, "--policy", "random", "--steps", 12, "--seed", 1, "--scale", 2, "--out", out
    )
    assert result.exit_code == 0, result.output
    assert str(out) in result.output
    frames = _gif_frames(out)
    assert len(frames) == 12 and frames[0].shape == (CAPTION + 2 * SIZE, 2 * SIZE, 3)
    again = tmp_path / "again.gif"
    assert (
        _cli(
            "play-model", model_run_dir, "--policy", "random", "--steps", 12, "--seed", 1, "--scale", 2, "--out", again
        ).exit_code
        == 0
    )
    assert out.read_bytes() == again.read_bytes()
    # an existing --out is never overwritten: one line, exit 2, the file as it was
    before = out.read_bytes()
    line = _one_error_line(_cli("play-model", model_run_dir, "--policy", "random", "--steps", 3, "--out", out))
    assert "already exists" in line and str(out) in line
    assert out.read_bytes() == before


def test_play_model_quiet_prints_only_the_result_line(model_run_dir: Path, tmp_path: Path, headless):
    """--quiet: 'No messages (the result line only)': the keyboard fallback note goes, the
    'wrote ... to OUT' line stays (it printed nothing)."""
    out = tmp_path / "quiet.gif"
    result = _cli("play-model", model_run_dir, "--policy", "keyboard", "--steps", 3, "--scale", 1, "--out", out, "-q")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert text.startswith("wrote 3 frames (3 steps, 1 episode(s), policy random) to ") and text.endswith("quiet.gif")
    assert "keyboard policy needs a window" not in text and out.is_file()


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_play_model_keyboard_without_display_plays_random_into_the_current_directory(
    model_run_dir: Path, tmp_path: Path, headless, monkeypatch
):
    """No --out, no window: play-<run name>.gif in the current directory, never in the run
    directory (the model's record); a second play takes the next numbered name."""
    from visfore.worldmodels.config import PlayModelConfig
    from visfore.worldmodels.play_model import play_model

    monkeypatch.chdir(tmp_path)
    run_before = _tree(model_run_dir)
    default = tmp_path / f"play-{model_run_dir.name}.gif"
    messages: list[str] = []
    res = play_model(PlayModelConfig(run=str(model_run_dir), steps=55), echo=messages.append)  # keyboard: default
    assert res.out == default and not res.window and res.policy == "random"
    assert res.frames == 55 and res.episodes == 2  # the 50-step TimeLimit started a new episode
    assert len(_gif_frames(default)) == 55
    assert any("no display" in m for m in messages) and any(str(default) in m for m in messages)
    first = default.read_bytes()

    result = _cli("play-model", model_run_dir, "--policy", "random", "--steps", 3, "--scale", 1)
    assert result.exit_code == 0, result.output
    second = tmp_path / f"play-{model_run_dir.name}-1.gif"
    assert str(second) in " ".join(result.output.split()) and len(_gif_frames(second)) == 3
    assert default.read_bytes() == first  # not overwritten
    assert _tree(model_run_dir) == run_before  # nothing written into the run directory


def test_keyboard_action_mapping():
    from visfore.worldmodels.play_model import keyboard_action

    low, high = np.array([-1, -2, 0], np.float32), np.array([1, 2, 4], np.float32)
    assert np.array_equal(keyboard_action([], low, high), [0, 0, 2])
    assert np.array_equal(keyboard_action(["left", "up", "d"], low, high), [-1, 2, 4])
    assert np.array_equal(keyboard_action(["right", "down", "a"], low, high), [1, -2, 0])
    assert np.array_equal(keyboard_action(["left", "right"], low, high), [0, 0, 2])


class _FakePolicyRun:
    """Stands in for visfore.rl.policy_run.PolicyRun (a pixel policy)."""

    def __init__(self, action_space, obs_shape):
        self.action_space = action_space
        self.model = type("M", (), {"observation_space": gym.spaces.Box(0, 255, obs_shape, np.uint8)})()
        self.seen: list[tuple] = []

    def predict(self, obs):
        self.seen.append(obs.shape)
        return np.full(self.action_space.shape, 0.25, np.float32)


def test_play_model_with_a_policy_run(model_run_dir: Path, tmp_path: Path, headless, monkeypatch):
    from visfore.rl import policy_run
    from visfore.worldmodels.config import PlayModelConfig
    from visfore.worldmodels.play_model import play_model

    fake = _FakePolicyRun(gym.spaces.Box(-1, 1, (2,), np.float32), (3, SIZE, SIZE))
    config = PlayModelConfig(run=str(model_run_dir), policy=str(tmp_path), steps=4, out=str(tmp_path / "p.gif"))
    res = play_model(config, echo=None, load_policy=lambda path: fake)
    assert res.frames == 4 and fake.seen == [(SIZE, SIZE, 3)] * 4

    fake_bad = _FakePolicyRun(gym.spaces.Box(-1, 1, (3,), np.float32), (SIZE, SIZE, 3))
    monkeypatch.setattr(policy_run, "load_policy_run", lambda path: fake_bad)
    out = tmp_path / "q.gif"
    line = _one_error_line(_cli("play-model", model_run_dir, "--policy", tmp_path, "--out", out))
    assert "acts in Box(3,)" in line and not out.exists()
    fake_obs = _FakePolicyRun(gym.spaces.Box(-1, 1, (2,), np.float32), (14,))
    monkeypatch.setattr(policy_run, "load_policy_run", lambda path: fake_obs)
    line = _one_error_line(_cli("play-model", model_run_dir, "--policy", tmp_path, "--out", out))
    assert "takes observations (14,)" in line and not out.exists()
    line = _one_error_line(_cli("play-model", model_run_dir, "--policy", "nonsense", "--out", out))
    assert "--policy must be keyboard, random or a train-policy run directory" in line


def test_learned_sim_is_registered_by_the_visfore_distribution(model_run_dir: Path):
    """A fresh process: ``import visfore_envs`` runs the ``gymnasium.envs`` entry points, so
    the toolkit's LearnedSim-v0 is registered (by the visfore distribution, without torch
    until the env is made); the module-qualified id works with gymnasium alone."""
    import subprocess
    import sys

    code = f"""
import sys
from importlib.metadata import entry_points
import gymnasium as gym
import visfore_envs
assert "LearnedSim-v0" not in visfore_envs.ENV_IDS, "listed by the env package"
assert gym.spec("LearnedSim-v0").entry_point == "visfore.worldmodels.learned_sim:LearnedSimEnv"
assert "torch" not in sys.modules, "registering imported torch"
(ep,) = [e for e in entry_points(group="gymnasium.envs") if e.name == "visfore"]
assert ep.value == "visfore.worldmodels.learned_sim:register"
env = gym.make("LearnedSim-v0", run={str(model_run_dir)!r})
obs, _ = env.reset(seed=0)
assert obs.shape == ({SIZE}, {SIZE}, 3) and env.spec.max_episode_steps == 50
env.close()
print("ok")
"""
    qualified = f"""
import gymnasium as gym
env = gym.make("visfore.worldmodels.learned_sim:LearnedSim-v0", run={str(model_run_dir)!r})
env.close()
print("ok")
"""
    for source in (code, qualified):
        proc = subprocess.run([sys.executable, "-c", source], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]
