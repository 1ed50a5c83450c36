"""The train-model pipeline (visfore.train_model): run directory contents, metrics, resume,
bad input. Tiny frames (16x16 synthetic, 32x32 reacher) and a tiny ConvLSTM keep it fast."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from visfore import runs
from visfore.cli import app
from visfore.dataset import DatasetWriter
from visfore.errors import VisforeError
from visfore.train_model import (
    TrainConfig,
    evaluate_open_loop,
    prediction_grid,
    select_device,
    shuffled_partners,
    teacher_forcing_schedule,
    train_model,
)

TINY = {"encoder_channels": [4, 8], "lstm_channels": [8], "decoder_channels": [8, 4], "num_kernels": 1}
TINY_JSON = json.dumps(TINY)
SIZE = 16
STEPS = 8  # actions per synthetic episode -> 9 frames


def _square_frames(positions: np.ndarray) -> np.ndarray:
    """(T, 2) integer top-left corners -> (T, SIZE, SIZE, 3) uint8: a 4x4 yellow square on
    a blue-ish background with a fixed red marker (so frames are not all alike)."""
    frames = np.zeros((len(positions), SIZE, SIZE, 3), np.uint8)
    frames[..., 2] = 90
    frames[:, 1:3, 12:14, 0] = 200
    for t, (y, x) in enumerate(positions):
        frames[t, y : y + 4, x : x + 4] = (230, 220, 30)
    return frames


@pytest.fixture(scope="module")
def square_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic visfore dataset: a square moved by the actions, 16 episodes x 8 actions,
    16x16 frames, action a_t in [-1, 1]^2 moves the square by round(2 * a_t) pixels."""
    path = tmp_path_factory.mktemp("train") / "squares.zarr"
    rng = np.random.default_rng(0)
    writer = DatasetWriter.create(
        path, frame_shape=(SIZE, SIZE, 3), state_dim=2, action_dim=2,
        attrs={"env_id": "synthetic-square", "policy": "random", "seed": 0}, chunk_frames=STEPS + 1,
    )
    with writer:
        for _ in range(16):
            actions = rng.uniform(-1, 1, size=(STEPS, 2)).astype(np.float32)
            pos = [rng.integers(0, SIZE - 4, size=2)]
            for a in actions:
                pos.append(np.clip(pos[-1] + np.round(2 * a).astype(int), 0, SIZE - 4))
            pos = np.array(pos)
            writer.append_episode(
                pixels=_square_frames(pos), state=pos.astype(np.float32), action=actions,
                reward=np.zeros(STEPS, np.float32), terminated=np.zeros(STEPS, bool),
                truncated=np.zeros(STEPS, bool),
            )
    return path


def _config(data: Path, out: Path, **overrides) -> TrainConfig:
    base = dict(
        data=str(data), out=str(out), model_kwargs=dict(TINY), context=2, horizon=3, epochs=2,
        batch_size=8, lr=3e-3, lr_schedule="constant", warmup_steps=0, val_fraction=0.25,
        clips_per_epoch=32, max_val_clips=24, epoch_val_clips=8, image_clips=2, device="cpu",
        num_threads=1, progress=False,
    )
    base.update(overrides)
    return TrainConfig(**base)


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in sorted(root.rglob("*"))
    }


# -- a full short run ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def short_run(square_dataset: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("runs") / "short"
    metrics = train_model(_config(square_dataset, out, epochs=4))
    return out, metrics


def test_run_directory_contents(short_run):
    out, metrics = short_run
    assert (out / "config.yaml").is_file() and (out / "metrics.json").is_file()
    assert (out / "checkpoints" / "last.pt").is_file() and (out / "checkpoints" / "best.pt").is_file()
    assert sorted(p.name for p in (out / "images").iterdir()) == [f"epoch_{i:03d}.png" for i in range(1, 5)]
    assert list((out / "logs").glob("events.out.tfevents.*"))
    assert not list(out.rglob(".*.tmp-*"))
    from PIL import Image

    img = np.asarray(Image.open(out / "images" / "epoch_004.png"))
    assert img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8


def test_config_yaml_records_options_dataset_and_split(short_run, square_dataset: Path):
    out, _ = short_run
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    opts = cfg["options"]
    assert opts["context"] == 2 and opts["horizon"] == 3 and opts["epochs"] == 4
    assert opts["model"] == "convlstm" and opts["model_kwargs"] == TINY
    assert Path(opts["data"]) == square_dataset.resolve()
    assert cfg["dataset"]["attrs"]["env_id"] == "synthetic-square"
    assert cfg["dataset"]["frame_shape"] == [SIZE, SIZE, 3]
    split = cfg["split"]
    train, val = set(split["train_episodes"]), set(split["val_episodes"])
    assert not train & val and train | val == set(range(16)) and len(val) == 4
    assert cfg["model"]["num_parameters"] > 0


def test_checkpoints_reload(short_run):
    from visfore_models import load_model

    out, metrics = short_run
    for name in ("last.pt", "best.pt"):
        ckpt = runs.load_checkpoint(out / "checkpoints" / name)
        model = load_model(ckpt["model"])
        assert model.config()["lstm_channels"] == TINY["lstm_channels"]
        assert {"optimizer", "scheduler", "epoch", "global_step", "rng", "metrics"} <= set(ckpt)
        pred = model(torch.rand(1, 2, 3, SIZE, SIZE), torch.zeros(1, 4, 2))
        assert pred.shape == (1, 3, 3, SIZE, SIZE)
    last = runs.load_checkpoint(out / "checkpoints" / "last.pt")
    assert last["epoch"] == 4 and last["global_step"] == 16 and last["epoch_step"] == 0


def test_metrics_json_documented_keys(short_run):
    out, returned = short_run
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data_range"] == 1.0 and metrics["horizon"] == 3
    for part in ("model", "copy_last_frame", "shuffled_actions"):
        for key in ("mse", "psnr", "ssim"):
            assert len(metrics[part][key]) == 3
            assert all(math.isfinite(v) for v in metrics[part][key])
            assert metrics[part]["mean"][key] == pytest.approx(np.mean(metrics[part][key]))
    assert {"mse", "psnr", "ssim", "copy_last_frame"} <= set(metrics["metric_definitions"])
    # 4 held-out episodes x (9 frames - 5 + 1) clips = 20 < --max-val-clips 24
    assert metrics["num_val_clips"] == 20 and metrics["num_val_episodes"] == 4
    assert metrics["num_parameters"] > 0 and metrics["train_seconds"] > 0
    assert set(metrics["beats_copy_last_frame"]) >= {"psnr", "ssim", "both"}
    assert "open-loop" in metrics["evaluation"]
    assert returned["model"] == metrics["model"]
    # PSNR is consistent with MSE per frame (data range 1): mean PSNR <= PSNR of mean MSE
    assert metrics["model"]["psnr"][0] >= -10 * math.log10(max(metrics["model"]["mse"][0], 1e-10)) - 1e-6


def test_loss_falls(short_run):
    _, metrics = short_run
    losses = [h["train_loss"] for h in metrics["history"]]
    assert losses[-1] < losses[0]


# -- resume -------------------------------------------------------------------------------
def test_resume_mid_epoch_matches_a_straight_run(square_dataset: Path, tmp_path: Path):
    kwargs = dict(epochs=2, teacher_forcing="0.5", clips_per_epoch=16)
    straight = train_model(_config(square_dataset, tmp_path / "a", **kwargs))
    # stop after the first optimisation step (2 steps per epoch), then resume
    stopped = train_model(_config(square_dataset, tmp_path / "b", time_budget=1e-9, **kwargs))
    assert stopped["stopped_early"] and stopped["global_step"] == 1 and stopped["epochs_completed"] == 0
    ckpt = runs.load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")
    assert (ckpt["epoch"], ckpt["epoch_step"]) == (0, 1)
    resumed = train_model(TrainConfig(out=str(tmp_path / "b"), resume=True, device="cpu",
                                      num_threads=1, progress=False))
    assert resumed["epochs_completed"] == 2 and resumed["global_step"] == straight["global_step"] == 4
    a = runs.load_checkpoint(tmp_path / "a" / "checkpoints" / "last.pt")["model"]["state_dict"]
    b = runs.load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")["model"]["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["model"] == straight["model"]
    assert [h["train_loss"] for h in resumed["history"]] == [h["train_loss"] for h in straight["history"]]


def test_resume_of_a_finished_run_only_reevaluates(square_dataset: Path, tmp_path: Path):
    first = train_model(_config(square_dataset, tmp_path / "r", epochs=1, clips_per_epoch=8))
    again = train_model(TrainConfig(out=str(tmp_path / "r"), resume=True, device="cpu", progress=False,
                                    num_threads=1))
    assert again["global_step"] == first["global_step"] and again["model"] == first["model"]


# -- CLI ----------------------------------------------------------------------------------
def _cli(*args: str):
    return CliRunner().invoke(app, ["train-model", *args])


def test_cli_end_to_end_on_reacher(small_reacher_dataset: Path, tmp_path: Path):
    out = tmp_path / "reacher-run"
    result = _cli(
        "--data", str(small_reacher_dataset), "--model", "convlstm", "--context", "2",
        "--horizon", "4", "--epochs", "1", "--batch-size", "8", "--clips-per-epoch", "16",
        "--max-val-clips", "8", "--epoch-val-clips", "4", "--model-kwargs", TINY_JSON,
        "--device", "cpu", "--num-threads", "1", "--out", str(out),
    )
    assert result.exit_code == 0, result.output
    assert "copy-last-frame" in result.output and "shuffled-actions" in result.output
    assert "model beats copy-last-frame on both PSNR and SSIM" in result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["model"]["psnr"]) == 4
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["dataset"]["frame_shape"] == [32, 32, 3]
    # --resume of a finished run: options from config.yaml, same epoch target, re-evaluates
    resumed = _cli("--out", str(out), "--resume", "--epochs", "3", "--device", "cpu",
                   "--num-threads", "1")  # same threads: same float summation order
    assert resumed.exit_code == 0, resumed.output
    assert "ignored --epochs 3 (run uses 1)" in resumed.output and "evaluating only" in resumed.output
    assert json.loads((out / "metrics.json").read_text())["model"] == metrics["model"]
    # existing run without --resume: exit 2, one line, nothing touched
    before = _tree_digest(out)
    again = _cli("--data", str(small_reacher_dataset), "--out", str(out), "--device", "cpu")
    assert again.exit_code == 2 and "already exists" in again.output and "--resume" in again.output
    assert len(again.output.strip().splitlines()) == 1
    assert _tree_digest(out) == before


def test_cli_existing_directory_untouched(square_dataset: Path, tmp_path: Path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    result = _cli("--data", str(square_dataset), "--out", str(out), "--model-kwargs", TINY_JSON)
    assert result.exit_code == 2 and "already exists" in result.output
    assert [p.name for p in out.iterdir()] == ["notes.txt"] and (out / "notes.txt").read_text() == "mine"


def test_cli_resume_without_checkpoint(tmp_path: Path):
    (tmp_path / "empty-run").mkdir()
    result = _cli("--out", str(tmp_path / "empty-run"), "--resume")
    assert result.exit_code == 2 and "no checkpoint" in result.output
    result = _cli("--resume")
    assert result.exit_code == 2 and "--out" in result.output


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--model", "nope"], "valid: convlstm"),
        (["--horizon", "20"], "have 9 frames (8 actions)"),
        (["--context", "0"], "--context must be >= 1"),
        (["--horizon", "0"], "--horizon must be >= 1"),
        (["--epochs", "0"], "--epochs must be >= 1"),
        (["--batch-size", "0"], "--batch-size must be >= 1"),
        (["--val-fraction", "0.99"], "need at least one of each"),
        (["--val-fraction", "0"], "--val-fraction must be in (0, 1)"),
        (["--teacher-forcing", "2"], "--teacher-forcing"),
        (["--model-kwargs", "[1]"], "JSON object"),
        (["--model-kwargs", '{"lstm_channels": []}'], "cannot build model"),
    ],
)
def test_cli_bad_input_exit_2_and_nothing_written(square_dataset: Path, tmp_path: Path, args, needle):
    out = tmp_path / "never"
    result = _cli("--data", str(square_dataset), "--out", str(out), "--device", "cpu",
                  "--horizon", "3", "--model-kwargs", TINY_JSON, *args)  # later flags win
    assert result.exit_code == 2, result.output
    assert needle in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not out.exists()


def test_cli_bad_data(tmp_path: Path):
    result = _cli("--data", str(tmp_path / "missing.zarr"), "--out", str(tmp_path / "o"))
    assert result.exit_code == 2 and "not found" in result.output
    (tmp_path / "plain").mkdir()
    result = _cli("--data", str(tmp_path / "plain"), "--out", str(tmp_path / "o"))
    assert result.exit_code == 2 and "visfore dataset" in result.output or "Zarr" in result.output
    result = _cli("--out", str(tmp_path / "o"))
    assert result.exit_code == 2 and "--data is required" in result.output
    assert not (tmp_path / "o").exists()


# -- pieces -------------------------------------------------------------------------------
def test_teacher_forcing_schedules():
    assert teacher_forcing_schedule("0", total_steps=10)(5) == 0.0
    assert teacher_forcing_schedule("0.25", total_steps=10)(5) == 0.25
    lin = teacher_forcing_schedule("linear:1:0", total_steps=10)
    assert lin(0) == 1.0 and lin(5) == 0.5 and lin(10) == 0.0 and lin(50) == 0.0
    assert teacher_forcing_schedule("linear:1:0:4", total_steps=10)(2) == 0.5
    inv = teacher_forcing_schedule("inverse-sigmoid:10", total_steps=10)
    assert inv(0) == pytest.approx(10 / 11) and inv(1000) < 1e-3
    assert all(inv(s) >= inv(s + 1) for s in range(100))
    for bad in ("x", "1.5", "-0.1", "inverse-sigmoid:0", "linear:2:0", "linear:1"):
        with pytest.raises(VisforeError):
            teacher_forcing_schedule(bad, total_steps=10)


def test_shuffled_partners_is_a_derangement():
    for n in (2, 3, 17):
        p = shuffled_partners(n, seed=0)
        assert sorted(p) == list(range(n)) and all(p[i] != i for i in range(n))
    assert shuffled_partners(1, seed=0) is None


def test_device_selection():
    assert select_device("cpu").type == "cpu"
    assert select_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(VisforeError, match="CUDA is not available"):
            select_device("cuda")
    with pytest.raises(VisforeError, match="--device"):
        select_device("tpu")


def test_prediction_grid_layout():
    B, C, K = 2, 2, 3
    grid = prediction_grid(np.zeros((B, C, 3, 16, 16)), np.ones((B, K, 3, 16, 16)),
                           np.full((B, K, 3, 16, 16), 0.5))
    assert grid.dtype == np.uint8 and grid.shape[2] == 3
    assert grid.shape[1] > (C + K) * 64 and grid.shape[0] > B * 3 * 64  # upscaled to 64 px


def test_evaluate_identity_model_equals_copy_last_frame(square_dataset: Path):
    """A model that repeats the last context frame scores exactly the baseline, and its
    shuffled-action score is the same (it ignores actions)."""
    from visfore.clips import ClipDataset, load_clip_source
    from visfore.dataset import open_dataset

    clips = ClipDataset(load_clip_source(open_dataset(square_dataset)), range(16), context=2, horizon=3)

    class Copy(torch.nn.Module):
        def forward(self, context, actions):
            K = actions.shape[1] - context.shape[1] + 1
            return context[:, -1:].repeat(1, K, 1, 1, 1)

    res = evaluate_open_loop(Copy(), clips, device=torch.device("cpu"), batch_size=7)
    for key in ("mse", "psnr", "ssim"):
        np.testing.assert_allclose(res["model"][key], res["copy_last_frame"][key])
        np.testing.assert_allclose(res["model"][key], res["shuffled_actions"][key])
    assert res["num_clips"] == len(clips) and res["num_episodes"] == 16
    assert res["model"]["mse"].shape == (3,)
