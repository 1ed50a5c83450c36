"""The train-model pipeline (visfore.worldmodels.training): run directory contents, metrics, resume,
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

from visfore.cli.app import app
from visfore.core import runs
from visfore.core.device import select_device
from visfore.core.errors import VisforeError
from visfore.data.dataset import DatasetWriter
from visfore.worldmodels.config import TrainConfig
from visfore.worldmodels.evaluation import evaluate_open_loop, prediction_grid, shuffled_partners
from visfore.worldmodels.schedules import teacher_forcing_schedule
from visfore.worldmodels.training import train_model

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


def _write_squares(path: Path, steps_per_episode: list[int]) -> Path:
    """A square moved by the actions: action a_t in [-1, 1]^2 moves it by round(2 * a_t)
    pixels; one episode per entry of ``steps_per_episode`` (actions; frames = steps + 1)."""
    rng = np.random.default_rng(0)
    writer = DatasetWriter.create(
        path,
        frame_shape=(SIZE, SIZE, 3),
        state_dim=2,
        action_dim=2,
        attrs={"env_id": "synthetic-square", "policy": "random", "seed": 0},
        chunk_frames=STEPS + 1,
    )
    with writer:
        for steps in steps_per_episode:
            actions = rng.uniform(-1, 1, size=(steps, 2)).astype(np.float32)
            pos = [rng.integers(0, SIZE - 4, size=2)]
            for a in actions:
                pos.append(np.clip(pos[-1] + np.round(2 * a).astype(int), 0, SIZE - 4))
            pos = np.array(pos)
            writer.append_episode(
                pixels=_square_frames(pos),
                state=pos.astype(np.float32),
                action=actions,
                reward=np.zeros(steps, np.float32),
                terminated=np.zeros(steps, bool),
                truncated=np.zeros(steps, bool),
            )
    return path


@pytest.fixture(scope="module")
def square_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic visfore dataset: 16 episodes x 8 actions, 16x16 frames."""
    return _write_squares(tmp_path_factory.mktemp("train") / "squares.zarr", [STEPS] * 16)


@pytest.fixture(scope="module")
def mixed_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two episode lengths: 16 episodes alternating 8 actions (9 frames) and 3 actions
    (4 frames)."""
    return _write_squares(tmp_path_factory.mktemp("mixed") / "mixed.zarr", [STEPS, 3] * 8)


def _config(data: Path, out: Path, **overrides) -> TrainConfig:
    base = dict(
        data=str(data),
        out=str(out),
        model_kwargs=dict(TINY),
        context=2,
        horizon=3,
        epochs=2,
        batch_size=8,
        lr=3e-3,
        lr_schedule="constant",
        warmup_steps=0,
        val_fraction=0.25,
        clips_per_epoch=32,
        max_val_clips=24,
        epoch_val_clips=8,
        image_clips=2,
        device="cpu",
        num_threads=1,
        progress=False,
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
    # the sweep-runner API: these keys are always there
    for key in ("run_dir", "train_seconds", "num_parameters", "samples_per_second", "inference_frames_per_second"):
        assert returned[key] == metrics[key] and metrics[key] is not None
    assert metrics["samples_per_second"] == pytest.approx(4 * 32 / metrics["train_seconds"])
    assert metrics["inference_frames_per_second"] > 0 and metrics["inference"]["frames"] == 20 * 3
    # new parts and metrics
    for part in ("model", "copy_last_frame", "mean_frame", "shuffled_actions"):
        assert len(metrics[part]["foreground_psnr"]) == 3
        assert metrics[part]["mean"]["foreground_psnr"] is not None
    assert "best_of_n" not in metrics and metrics["stochastic"]["eval_samples"] == 1
    assert set(metrics["beats_mean_frame"]) >= {"psnr", "ssim", "both", "psnr_gain_db"}
    sens = metrics["action_sensitivity"]
    assert sens["psnr_drop_db"] == pytest.approx(
        metrics["model"]["mean"]["psnr"] - metrics["shuffled_actions"]["mean"]["psnr"]
    )
    assert len(sens["psnr_drop_db_per_step"]) == 3
    assert metrics["lpips"]["computed"] is False or "lpips" in metrics["model"]
    assert metrics["lpips"]["note"].startswith("LPIPS")
    assert metrics["definitions"] == metrics["metric_definitions"]
    assert {"foreground_psnr", "mean_frame", "action_sensitivity", "lpips", "best_of_n", "mask"} <= set(
        metrics["definitions"]
    )
    assert metrics["valid_clips_per_step"] == [20, 20, 20] and metrics["padding"]["evaluated_padded_clips"] == 0
    assert metrics["sampling"]["mode"] == "open-loop" and metrics["amp"]["enabled"] is False
    assert metrics["distributed"]["world_size"] == 1 and metrics["distributed"]["ranks_in_sync"]
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
@pytest.mark.parametrize(
    "sampling", [dict(teacher_forcing="0.5"), dict(sampling="scheduled")], ids=["teacher-forcing-0.5", "scheduled"]
)
def test_resume_mid_epoch_matches_a_straight_run(square_dataset: Path, tmp_path: Path, sampling):
    kwargs = dict(epochs=2, clips_per_epoch=16, **sampling)
    straight = train_model(_config(square_dataset, tmp_path / "a", **kwargs))
    # stop after the first optimisation step (2 steps per epoch), then resume
    stopped = train_model(_config(square_dataset, tmp_path / "b", time_budget=1e-9, **kwargs))
    assert stopped["stopped_early"] and stopped["global_step"] == 1 and stopped["epochs_completed"] == 0
    ckpt = runs.load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")
    assert (ckpt["epoch"], ckpt["epoch_step"]) == (0, 1)
    assert ckpt["sampling"]["step"] == 1  # the schedule's position
    if "sampling" in sampling:  # 0 < p < 1 at every step: the draws need the saved RNG
        assert 0 < straight["sampling"]["p_last_step"] < straight["sampling"]["p_first_step"] < 1
        assert ckpt["sampling"]["k"] == straight["sampling"]["k"]
    resumed = train_model(
        TrainConfig(out=str(tmp_path / "b"), resume=True, device="cpu", num_threads=1, progress=False)
    )
    assert resumed["epochs_completed"] == 2 and resumed["global_step"] == straight["global_step"] == 4
    a = runs.load_checkpoint(tmp_path / "a" / "checkpoints" / "last.pt")["model"]["state_dict"]
    b = runs.load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")["model"]["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["model"] == straight["model"]
    assert [h["train_loss"] for h in resumed["history"]] == [h["train_loss"] for h in straight["history"]]


def test_resume_of_a_finished_run_only_reevaluates(square_dataset: Path, tmp_path: Path):
    first = train_model(_config(square_dataset, tmp_path / "r", epochs=1, clips_per_epoch=8))
    again = train_model(TrainConfig(out=str(tmp_path / "r"), resume=True, device="cpu", progress=False, num_threads=1))
    assert again["global_step"] == first["global_step"] and again["model"] == first["model"]
    assert again["session"]["evaluate_only"] and not first["session"]["resumed"]


def _resume(out: Path, **overrides):
    return train_model(TrainConfig(out=str(out), resume=True, device="cpu", progress=False, num_threads=1, **overrides))


def test_resume_with_a_larger_epochs_target_trains_on(square_dataset: Path, tmp_path: Path):
    """issue 19.3: --resume --epochs 2 of a finished 1-epoch run trains a second epoch:
    checkpoint at epoch 2, the history appended, metrics.json and config.yaml for 2."""
    out = tmp_path / "r"
    first = train_model(_config(square_dataset, out, epochs=1, clips_per_epoch=16))
    assert first["epochs"] == 1 and first["global_step"] == 2
    more = _resume(out, epochs=2)
    assert more["epochs"] == 2 and more["epochs_completed"] == 2 and more["global_step"] == 4
    assert more["session"] == {
        "resumed": True,
        "evaluate_only": False,
        "epochs_trained": 1,
        "steps": 2,
        "train_seconds": pytest.approx(more["train_seconds"] - first["train_seconds"]),
    }
    assert [h["epoch"] for h in more["history"]] == [1, 2]
    assert more["history"][0] == first["history"][0]  # appended, the first epoch kept
    assert more["model"] != first["model"]  # the weights moved: it trained
    ckpt = runs.load_checkpoint(out / "checkpoints" / "last.pt")
    assert (ckpt["epoch"], ckpt["global_step"], ckpt["epochs"]) == (2, 4, 2)
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 2
    assert (out / "images" / "epoch_002.png").is_file()
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["options"]["epochs"] == 2 and cfg["training"]["total_steps"] == 4
    assert cfg["training"]["targets"][0] | {"at": None} == {
        "epochs": 2, "previous_epochs": 1, "from_epoch": 1, "from_step": 2, "at": None,
    }  # fmt: skip
    # without --epochs the run keeps its (new) target: nothing left, evaluate only
    again = _resume(out)
    assert again["session"]["evaluate_only"] and again["epochs"] == 2 and again["global_step"] == 4


def test_resume_with_a_new_target_continues_the_learning_rate(square_dataset: Path, tmp_path: Path):
    """A new target continues the cosine from the multiplier reached (no jump) and ends at
    0.1 at the new total; the teacher-forcing schedule keeps its first span."""
    out = tmp_path / "lr"
    kwargs = dict(clips_per_epoch=16, lr_schedule="cosine", warmup_steps=0, teacher_forcing="linear:1:0")
    stopped = train_model(_config(square_dataset, out, epochs=2, time_budget=1e-9, **kwargs))
    assert stopped["global_step"] == 1 and stopped["epochs_completed"] == 0  # of 4 steps
    lr_at_stop = runs.load_checkpoint(out / "checkpoints" / "last.pt")["optimizer"]["param_groups"][0]["lr"]
    assert lr_at_stop == pytest.approx(3e-3 * (0.1 + 0.45 * (1 + math.cos(math.pi / 4))))
    resumed = _resume(out, epochs=3)
    assert resumed["global_step"] == 6 and resumed["epochs_completed"] == 3
    assert resumed["lr_schedule"] == {
        "schedule": "cosine", "warmup_steps": 0, "total_steps": 6, "from_step": 1,
        "from_factor": pytest.approx(lr_at_stop / 3e-3),
    }  # fmt: skip
    ckpt = runs.load_checkpoint(out / "checkpoints" / "last.pt")
    assert ckpt["optimizer"]["param_groups"][0]["lr"] == pytest.approx(3e-4)  # 0.1 x lr at the end
    assert ckpt["sampling"]["total_steps"] == 4 and resumed["sampling"]["total_steps"] == 4


def test_resume_with_epochs_at_or_below_the_done_ones_only_evaluates(square_dataset: Path, tmp_path: Path):
    """--epochs not above the epochs already trained: one line saying so, nothing trained,
    the checkpoint and the run's target untouched, the summary says it only evaluated."""
    out = tmp_path / "r2"
    train_model(_config(square_dataset, out, epochs=2, clips_per_epoch=8))
    before = runs.load_checkpoint(out / "checkpoints" / "last.pt")
    result = _cli("--out", str(out), "--resume", "--epochs", "1", "--device", "cpu", "--num-threads", "1")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert text.count("nothing to train") == 2  # the warning and the summary line
    assert "--epochs 1: " in text and "has already trained 2 epoch(s); nothing to train, evaluating only" in text
    assert "nothing to train: 2/2 epochs (2 steps) already trained in" in text and "evaluated only in" in text
    assert "loss nan" not in text and "clips/s" not in text  # no empty progress bar
    after = runs.load_checkpoint(out / "checkpoints" / "last.pt")
    assert (after["epoch"], after["global_step"], after["epochs"]) == (2, 2, 2)
    a, b = after["model"]["state_dict"], before["model"]["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert yaml.safe_load((out / "config.yaml").read_text())["options"]["epochs"] == 2
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and metrics["session"]["evaluate_only"] and metrics["session"]["steps"] == 0


def test_shuffled_action_cost_never_prints_minus_zero(short_run):
    """A drop that rounds to zero prints as 0.00 (it printed '-0.00 dB'); real values keep
    their sign."""
    from rich.console import Console

    from visfore.worldmodels.report import print_metrics_table

    _, metrics = short_run

    def printed(drop: float, ssim: float, gain: float) -> str:
        m = json.loads(json.dumps(metrics))
        m["action_sensitivity"].update(psnr_drop_db=drop, ssim_drop=ssim)
        m["beats_copy_last_frame"].update(psnr_gain_db=gain)
        console = Console(record=True, width=200)
        print_metrics_table(m, console)
        return console.export_text()

    text = printed(-0.001, -0.00001, -0.004)
    assert "shuffled actions cost 0.00 dB PSNR and 0.0000 SSIM" in text
    assert "(PSNR +0.00 dB" in text and "-0.00" not in text
    assert "shuffled actions cost -0.50 dB PSNR and 0.1234 SSIM" in printed(-0.5, 0.1234, 1.0)


# -- CLI ----------------------------------------------------------------------------------
def _cli(*args: str):
    return CliRunner().invoke(app, ["train-model", *args])


def test_cli_quiet_prints_only_the_final_summary(small_reacher_dataset: Path, tmp_path: Path):
    """--quiet: no progress bar and no table, but the result line (its help: 'only the
    final summary'); it printed nothing at all."""
    out = tmp_path / "quiet-run"
    result = _cli(
        "--data", str(small_reacher_dataset), "--horizon", "2", "--epochs", "1", "--batch-size", "4",
        "--clips-per-epoch", "4", "--max-val-clips", "4", "--epoch-val-clips", "2", "--image-clips", "1",
        "--model-kwargs", TINY_JSON, "--device", "cpu", "--num-threads", "1", "--out", str(out), "--quiet",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("trained 1/1 epochs") and lines[0].endswith(f"run: {out}")
    assert "copy-last-frame" not in result.output  # no table


def test_epochs_help_says_it_is_the_target_on_resume():
    """issue 19.3: --epochs is the run's total, also on --resume (a larger one trains on;
    see test_resume_with_a_larger_epochs_target_trains_on); it is no longer ignored."""
    result = CliRunner().invoke(app, ["train-model", "--help"], env={"COLUMNS": "300"})
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "Total training epochs (default 10). With --resume: the new total" in text
    assert "keeps the run's own)." not in text


def test_cli_end_to_end_on_reacher(small_reacher_dataset: Path, tmp_path: Path):
    out = tmp_path / "reacher-run"
    result = _cli(
        "--data",
        str(small_reacher_dataset),
        "--model",
        "convlstm",
        "--context",
        "2",
        "--horizon",
        "4",
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--clips-per-epoch",
        "16",
        "--max-val-clips",
        "8",
        "--epoch-val-clips",
        "4",
        "--model-kwargs",
        TINY_JSON,
        "--device",
        "cpu",
        "--num-threads",
        "1",
        "--out",
        str(out),
    )
    assert result.exit_code == 0, result.output
    assert "copy-last-frame" in result.output and "shuffled-actions" in result.output
    assert "model beats copy-last-frame on both PSNR and SSIM" in result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["model"]["psnr"]) == 4
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["dataset"]["frame_shape"] == [32, 32, 3]
    # --resume of a finished run: options from config.yaml, same epoch target, re-evaluates
    resumed = _cli(
        "--out", str(out), "--resume", "--lr", "0.5", "--device", "cpu", "--num-threads", "1"
    )  # same threads: same float summation order
    assert resumed.exit_code == 0, resumed.output
    assert "ignored --lr 0.5 (run uses 0.001)" in resumed.output and "evaluating only" in resumed.output
    assert "loss nan" not in resumed.output and "nothing to train: 1/1 epochs" in resumed.output
    assert json.loads((out / "metrics.json").read_text())["model"] == metrics["model"]
    # existing run without --resume: exit 2, one line, nothing touched
    before = _tree_digest(out)
    again = _cli("--data", str(small_reacher_dataset), "--out", str(out), "--device", "cpu")
    assert again.exit_code == 2 and "already exists" in again.output and "--resume" in again.output
    assert len(again.output.strip().splitlines()) == 1
    assert _tree_digest(out) == before


def test_cli_ctrl_c_prints_interrupted_once(square_dataset: Path, tmp_path: Path, monkeypatch):
    """A real SIGINT during the first step: the step ends, last.pt is saved, and the
    command prints one line, 'interrupted; saved ...; continue with --resume --out RUN'
    (the checkpointer's own 'interrupted' warning made it two); exit 130."""
    import signal

    from visfore.worldmodels import training

    original = training.ForwardModelTask.train_step

    def step_then_ctrl_c(self, batch, state):
        result = original(self, batch, state)
        if state.global_step == 0:
            signal.raise_signal(signal.SIGINT)  # the handler of StopOnInterrupt takes it
        return result

    monkeypatch.setattr(training.ForwardModelTask, "train_step", step_then_ctrl_c)
    out = tmp_path / "ctrl-c"
    result = _cli(
        "--data", str(square_dataset), "--horizon", "3", "--epochs", "2", "--batch-size", "8",
        "--clips-per-epoch", "16", "--max-val-clips", "8", "--epoch-val-clips", "4",
        "--model-kwargs", TINY_JSON, "--device", "cpu", "--num-threads", "1", "--out", str(out), "--quiet",
    )  # fmt: skip
    assert result.exit_code == 130, result.output
    assert result.output.count("interrupted") == 1, result.output
    line = next(line for line in result.output.splitlines() if "interrupted" in line)
    last = out / "checkpoints" / "last.pt"
    assert line == f"interrupted; saved {last}; continue with --resume --out {out}"
    ckpt = runs.load_checkpoint(last)
    assert (ckpt["epoch"], ckpt["epoch_step"]) == (0, 1)


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
        (["--model", "nope"], "unknown model 'nope'; valid:"),
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
        (["--sampling", "sometimes"], "--sampling must be one of open-loop, teacher, scheduled"),
        (["--sampling", "scheduled", "--sampling-k", "0"], "--sampling-k must be a number > 0"),
        (["--sampling-k", "50"], "--sampling-k applies to --sampling scheduled only"),
        (["--sampling", "teacher", "--teacher-forcing", "0.5"], "give either --sampling"),
        (["--eval-samples", "0"], "--eval-samples must be >= 1"),
        (["--eval-batch-size", "0"], "--eval-batch-size must be >= 1"),
        (["--grad-clip", "-1"], "--grad-clip must be >= 0"),
    ],
)
def test_cli_bad_input_exit_2_and_nothing_written(square_dataset: Path, tmp_path: Path, args, needle):
    out = tmp_path / "never"
    result = _cli(
        "--data",
        str(square_dataset),
        "--out",
        str(out),
        "--device",
        "cpu",
        "--horizon",
        "3",
        "--model-kwargs",
        TINY_JSON,
        *args,
    )  # later flags win
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
    grid = prediction_grid(np.zeros((B, C, 3, 16, 16)), np.ones((B, K, 3, 16, 16)), np.full((B, K, 3, 16, 16), 0.5))
    assert grid.dtype == np.uint8 and grid.shape[2] == 3
    assert grid.shape[1] > (C + K) * 64 and grid.shape[0] > B * 3 * 64  # upscaled to 64 px


def test_evaluate_identity_model_equals_copy_last_frame(square_dataset: Path):
    """A model that repeats the last context frame scores exactly the baseline, and its
    shuffled-action score is the same (it ignores actions)."""
    from visfore.data.clips import ClipDataset, load_clip_source
    from visfore.data.dataset import open_dataset

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


# -- episodes of different lengths: padding and masks --------------------------------------
def test_short_episodes_are_padded_and_masked(mixed_dataset: Path, tmp_path: Path):
    """C = 2, K = 4: 9-frame episodes give 4 clips each, 4-frame episodes one clip padded
    after its 2nd target; every metric counts only the real steps."""
    metrics = train_model(_config(mixed_dataset, tmp_path / "pad", context=2, horizon=4, epochs=1, clips_per_epoch=16))
    cfg = yaml.safe_load((tmp_path / "pad" / "config.yaml").read_text())
    assert cfg["options"]["pad_short_episodes"] is True
    split = cfg["split"]
    assert split["excluded_short_episodes"] == [] and len(split["train_episodes"]) + len(split["val_episodes"]) == 16
    n_short_val = sum(1 for e in split["val_episodes"] if e % 2 == 1)
    n_long_val = len(split["val_episodes"]) - n_short_val
    assert n_short_val and n_long_val
    assert split["num_padded_val_clips"] == n_short_val and split["num_padded_train_clips"] == 8 - n_short_val
    n_val = 4 * n_long_val + n_short_val
    assert metrics["num_val_clips"] == n_val
    assert metrics["valid_clips_per_step"] == [n_val, n_val, 4 * n_long_val, 4 * n_long_val]
    assert metrics["padding"]["evaluated_padded_clips"] == n_short_val
    assert all(v is not None for v in metrics["model"]["psnr"])
    # --no-pad-short-episodes: the short episodes are left out
    unpadded = train_model(
        _config(
            mixed_dataset,
            tmp_path / "nopad",
            context=2,
            horizon=4,
            epochs=1,
            clips_per_epoch=16,
            pad_short_episodes=False,
        )
    )
    cfg = yaml.safe_load((tmp_path / "nopad" / "config.yaml").read_text())
    assert cfg["split"]["excluded_short_episodes"] == list(range(1, 16, 2))
    assert cfg["options"]["pad_short_episodes"] is False
    assert len(set(unpadded["valid_clips_per_step"])) == 1 and unpadded["padding"]["evaluated_padded_clips"] == 0


def test_evaluation_uses_the_mask(mixed_dataset: Path):
    """Per-step means over the real steps only, exactly (a copy model on padded clips)."""
    from visfore.data.clips import ClipDataset, frames_to_float, load_clip_source, split_clip
    from visfore.data.dataset import open_dataset
    from visfore_models import metrics as M

    src = load_clip_source(open_dataset(mixed_dataset))
    clips = ClipDataset(src, range(16), context=2, horizon=4, pad_short=True)
    assert clips.num_padded == 8

    class Copy(torch.nn.Module):
        def forward(self, context, actions):
            return context[:, -1:].repeat(1, actions.shape[1] - context.shape[1] + 1, 1, 1, 1)

    mean_frame = torch.full((3, SIZE, SIZE), 0.3)
    res = evaluate_open_loop(Copy(), clips, device=torch.device("cpu"), batch_size=5, mean_frame=mean_frame)
    batch = clips[np.arange(len(clips))]
    context, targets = split_clip(frames_to_float(batch["frames"]), 2)
    mask = batch["mask"]
    pred = context[:, -1:].repeat(1, 4, 1, 1, 1)
    for key, expected in M.per_step_metrics(pred, targets, mask, context=context).items():
        np.testing.assert_allclose(res["model"][key], expected.numpy(), rtol=1e-10)
        np.testing.assert_allclose(res["copy_last_frame"][key], expected.numpy(), rtol=1e-10)
    unmasked = M.per_step_metrics(pred, targets)["psnr"].numpy()
    assert not np.allclose(res["model"]["psnr"][2:], unmasked[2:])  # the padding would count
    mf = M.per_step_metrics(M.mean_frame_baseline(mean_frame, len(clips), 4), targets, mask)
    np.testing.assert_allclose(res["mean_frame"]["psnr"], mf["psnr"].numpy(), rtol=1e-10)
    assert res["valid_clips_per_step"].tolist() == [40, 40, 32, 32] and res["num_padded_clips"] == 8


def test_reconstruction_loss_ignores_padded_frames():
    from visfore.worldmodels.training import reconstruction_loss

    g = torch.Generator().manual_seed(0)
    pred = torch.rand(3, 4, 3, 8, 8, generator=g, requires_grad=True)
    targets = torch.rand(3, 4, 3, 8, 8, generator=g)
    assert torch.equal(reconstruction_loss(pred, targets), torch.nn.functional.mse_loss(pred, targets))
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]], dtype=torch.bool)
    loss = reconstruction_loss(pred, targets, mask)
    per_frame = (pred - targets).pow(2).mean(dim=(2, 3, 4))
    torch.testing.assert_close(loss, per_frame[mask].mean())
    other = pred.detach().clone()
    other[~mask] = 7.0  # anything at padded frames
    torch.testing.assert_close(reconstruction_loss(other, targets, mask), loss)
    loss.backward()
    assert torch.all(pred.grad[~mask] == 0) and torch.all(pred.grad[mask].abs().sum(dim=(1, 2, 3)) > 0)


# -- scheduled sampling --------------------------------------------------------------------
def test_scheduled_sampling_schedule():
    from visfore.worldmodels.schedules import auto_sampling_k, resolve_sampling

    for total in (4, 100, 1000, 20_000):
        k = auto_sampling_k(total)
        assert k > 1 and k * math.log(k) == pytest.approx(total / 2, rel=1e-9)
        record, p = resolve_sampling(TrainConfig(sampling="scheduled"), total_steps=total)
        assert record["mode"] == "scheduled" and record["k"] == pytest.approx(k)
        assert p(0) == pytest.approx(k / (k + 1)) and p(total / 2) == pytest.approx(0.5)
        assert all(p(i) > p(i + 1) for i in range(0, total, max(1, total // 50)))
    _, p = resolve_sampling(TrainConfig(sampling="scheduled"), total_steps=1000)
    assert p(0) > 0.99 and p(999) < 0.01  # decays over the run
    record, p = resolve_sampling(TrainConfig(sampling="scheduled", sampling_k=900.0), total_steps=10)
    assert record["k"] == 900.0 and p(0) == pytest.approx(900 / 901)  # Finn et al.'s constant
    assert resolve_sampling(TrainConfig(sampling="teacher"), total_steps=10)[1](5) == 1.0
    assert resolve_sampling(TrainConfig(), total_steps=10)[1](5) == 0.0
    record, p = resolve_sampling(TrainConfig(teacher_forcing="linear:1:0"), total_steps=10)
    assert record["mode"] == "custom" and p(5) == 0.5
    # a resumed run keeps its checkpoint's k
    assert resolve_sampling(TrainConfig(sampling="scheduled"), total_steps=10, k=3.0)[0]["k"] == 3.0


def test_scheduled_sampling_is_logged_and_recorded(square_dataset: Path, tmp_path: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "sched"
    metrics = train_model(_config(square_dataset, out, epochs=1, clips_per_epoch=32, sampling="scheduled"))
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["options"]["sampling"] == "scheduled" and cfg["options"]["sampling_k"] is None
    k = cfg["training"]["sampling"]["k"]
    assert k == metrics["sampling"]["k"] and cfg["training"]["sampling"]["total_steps"] == 4
    events = EventAccumulator(str(out / "logs"))
    events.Reload()
    probs = [e.value for e in events.Scalars("train/teacher_forcing_prob")]
    assert probs == pytest.approx([k / (k + math.exp(i / k)) for i in range(4)])


# -- auxiliary losses and stochastic models -----------------------------------------------
class _NoisyCopy:
    """Built lazily (ForwardModel import): a stochastic test model with an auxiliary loss."""

    @staticmethod
    def make():
        from visfore_models import ForwardModel

        class NoisyCopy(ForwardModel):
            name = "test_noisy_copy"
            stochastic = True

            def __init__(self, *, action_dim, image_size, noise=0.05):
                super().__init__(action_dim=action_dim, image_size=image_size)
                self.noise = noise
                self.gain = torch.nn.Parameter(torch.tensor(0.5))
                self.act = torch.nn.Linear(action_dim, 3)
                self._aux = {}

            def config(self):
                return {"action_dim": self.action_dim, "image_size": list(self.image_size), "noise": self.noise}

            def forward(self, context, actions, targets=None, teacher_forcing_prob=0.0):
                C, K = self.check_inputs(context, actions, targets, teacher_forcing_prob)
                last, outs = context[:, -1], []
                for k in range(K):
                    a = self.act(actions[:, C - 1 + k])[:, :, None, None]
                    last = (2 * self.gain * last + 0.1 * a + self.noise * torch.randn_like(last)).clamp(0, 1)
                    outs.append(last)
                self._aux = {"kl": 1e-3 + 1e-3 * (self.gain - 0.5) ** 2}
                return torch.stack(outs, dim=1)

            def auxiliary_losses(self):
                return dict(self._aux)

        return NoisyCopy


def test_auxiliary_losses_and_stochastic_evaluation(square_dataset: Path, tmp_path: Path, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    import visfore_models

    cls = _NoisyCopy.make()
    monkeypatch.setitem(visfore_models.MODELS, cls.name, cls)
    out = tmp_path / "stoch"
    metrics = train_model(
        _config(square_dataset, out, model=cls.name, model_kwargs={}, epochs=1, clips_per_epoch=16, eval_samples=3)
    )
    h = metrics["history"][0]
    assert h["train_loss"] - h["train_mse"] == pytest.approx(1e-3, rel=0.05)  # the aux term is in the loss
    events = EventAccumulator(str(out / "logs"))
    events.Reload()
    assert {"train/loss", "train/reconstruction_mse", "train/aux/kl"} <= set(events.Tags()["scalars"])
    assert metrics["stochastic"]["stochastic"] and metrics["stochastic"]["eval_samples"] == 3
    assert "best_of_n" in metrics and metrics["inference"]["frames"] == 3 * 20 * 3
    for key in ("mse", "psnr", "ssim"):
        assert len(metrics["best_of_n"][key]) == 3
    assert metrics["best_of_n"]["mean"]["psnr"] >= metrics["model"]["mean"]["psnr"]
    assert metrics["best_of_n"]["mean"]["mse"] <= metrics["model"]["mean"]["mse"]
    assert "mean over the samples" in metrics["stochastic"]["model_part"]
    # evaluation is seeded: resuming the finished run re-evaluates to the same numbers
    again = train_model(TrainConfig(out=str(out), resume=True, device="cpu", num_threads=1, progress=False))
    assert again["model"] == metrics["model"] and again["best_of_n"] == metrics["best_of_n"]


# -- mixed precision -------------------------------------------------------------------------
def test_amp_on_cpu_uses_bfloat16_when_asked(square_dataset: Path, tmp_path: Path):
    metrics = train_model(_config(square_dataset, tmp_path / "amp", epochs=1, clips_per_epoch=16, amp=True))
    assert metrics["amp"] == {"enabled": True, "dtype": "bfloat16", "grad_scaler": False, "requested": True}
    assert all(math.isfinite(v) for v in metrics["model"]["psnr"])
    cfg = yaml.safe_load((tmp_path / "amp" / "config.yaml").read_text())
    assert cfg["options"]["amp"] is True and cfg["training"]["amp"]["dtype"] == "bfloat16"
    default = train_model(_config(square_dataset, tmp_path / "noamp", epochs=1, clips_per_epoch=8))
    assert default["amp"]["enabled"] is False  # the default on device="cpu": off


# -- the Python API ----------------------------------------------------------------------------
def test_api_takes_a_mapping_and_refuses_unknown_keys(square_dataset: Path, tmp_path: Path):
    config = _config(square_dataset, tmp_path / "api", epochs=1, clips_per_epoch=8).to_dict()
    config["batch-size"] = config.pop("batch_size")  # CLI spelling works too
    metrics = train_model(config)
    assert metrics["run_dir"] == str(tmp_path / "api") and metrics["global_step"] == 1
    with pytest.raises(VisforeError, match="unknown train-model option"):
        train_model({"data": str(square_dataset), "bogus": 1})
    assert TrainConfig.from_dict(TrainConfig().to_dict()) == TrainConfig()


def test_help_documents_the_new_options():
    result = CliRunner().invoke(app, ["train-model", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for flag in (
        "--sampling",
        "--sampling-k",
        "--pad-short-episodes",
        "--no-pad-short-episodes",
        "--eval-samples",
        "--amp",
        "--no-amp",
        "--teacher-forcing",
        "torchrun",
    ):
        assert flag in result.output, flag


# -- DDP (torchrun, 2 CPU processes, gloo) ------------------------------------------------------
def test_torchrun_two_processes(square_dataset: Path, tmp_path: Path):
    """`visfore train-model` under torchrun: one run directory (rank 0 writes; its name, a
    timestamp, is the same on both ranks), complete, and both ranks end with the same weights."""
    import os
    import subprocess
    import sys

    from visfore.worldmodels.distributed import weights_digest
    from visfore_models import load_model

    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    env.pop("WORLD_SIZE", None)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "visfore.cli",
        "train-model",
        "--data",
        str(square_dataset),
        "--model-kwargs",
        TINY_JSON,
        "--context",
        "2",
        "--horizon",
        "3",
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--clips-per-epoch",
        "16",
        "--max-val-clips",
        "8",
        "--epoch-val-clips",
        "4",
        "--val-fraction",
        "0.25",
        "--device",
        "cpu",
        "--num-threads",
        "1",
        "--lr-schedule",
        "constant",
        "--warmup-steps",
        "0",
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run_dirs = list((tmp_path / "runs").iterdir())
    assert len(run_dirs) == 1 and [p.name for p in tmp_path.iterdir()] == ["runs"]
    run = run_dirs[0]
    for name in ("config.yaml", "metrics.json", "checkpoints/last.pt", "checkpoints/best.pt", "images/epoch_001.png"):
        assert (run / name).is_file(), name
    assert list((run / "logs").glob("events.out.tfevents.*")) and not list(run.rglob(".*.tmp-*"))
    metrics = json.loads((run / "metrics.json").read_text())
    d = metrics["distributed"]
    assert d["world_size"] == 2 and d["backend"] == "gloo" and d["global_batch_size"] == 8
    assert len(d["weights_sha256_per_rank"]) == 2 and d["ranks_in_sync"]
    ckpt = runs.load_checkpoint(run / "checkpoints" / "last.pt")
    assert weights_digest(load_model(ckpt["model"])) == d["weights_sha256_per_rank"][0]
    # 16 clips per epoch split over 2 ranks of batch 4: 2 steps of 8 clips
    assert metrics["global_step"] == 2 and metrics["train_clips_seen"] == 16
    assert ckpt["world_size"] == 2 and len(ckpt["rng_per_rank"]) == 2
    assert yaml.safe_load((run / "config.yaml").read_text())["training"]["distributed"]["world_size"] == 2
