"""A forward model's open-loop predictions of a dataset's clips (visfore.perception.predicted_frames)
and `visfore train-translator --on-predictions`, which trains on them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from visfore_cli_testutils import invoke, one_error_line

from visfore.core.errors import VisforeError
from visfore.data.dataset import open_dataset
from visfore.perception.predicted_frames import clip_layout, predict_clips
from visfore.worldmodels.model_run import frames_to_model, load_model_run, model_to_frames

TINY_CLI = ["--channels", "8,16,16", "--hidden", "32", "--num-threads", "1", "--quiet"]


def test_clip_layout_cuts_non_overlapping_clips_inside_episodes():
    # episodes of 5, 13 and 3 frames; clips of 4 frames
    starts, episodes = clip_layout(np.array([5, 18, 21]), 4)
    assert starts.tolist() == [0, 5, 9, 13]
    assert episodes.tolist() == [0, 1, 1, 1]
    assert clip_layout(np.array([3, 6]), 4)[0].shape == (0,)


def test_predictions_are_the_models_open_loop_rollouts_with_true_labels(
    model_run_dir, small_reacher_dataset, one_torch_thread
):
    """12 episodes of 13 frames, context 2 + horizon 3 = 5: two clips per episode. The
    context frames are the dataset's, the predicted frames are exactly the model's
    rollout of the clip's true actions, and every frame points at the row it shows."""
    run = load_model_run(model_run_dir)
    ds = open_dataset(small_reacher_dataset)
    pixels, actions = ds.read("pixels"), ds.read("action")
    clips = predict_clips(run, pixels, actions, ds.episode_ends, 3, batch_size=7)
    assert clips.frames.shape == (24 * 5, 32, 32, 3) and clips.frames.dtype == np.uint8
    assert clips.clip_ends.tolist() == list(range(5, 121, 5))
    assert clips.clip_episode.tolist() == [e for e in range(12) for _ in range(2)]
    assert clips.step.tolist()[:10] == [0, 0, 1, 2, 3] * 2
    assert clips.source_rows.tolist()[:10] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert clips.source_rows[10] == 13  # episode 1 starts at row 13
    context = clips.step == 0
    np.testing.assert_array_equal(clips.frames[context], pixels[clips.source_rows[context]])

    # clip 3 = episode 1's second clip, rows 18..22; the model called directly
    rows = np.arange(18, 23)
    with torch.no_grad():
        direct = run.model(frames_to_model(pixels[rows[:2]][None]), torch.from_numpy(actions[rows[:4]][None]))
    np.testing.assert_array_equal(clips.frames[15:20][2:], model_to_frames(direct)[0])
    assert clips.source_rows[15:20].tolist() == rows.tolist()
    again = predict_clips(run, pixels, actions, ds.episode_ends, 3, batch_size=24)
    np.testing.assert_array_equal(again.frames, clips.frames)


def test_bad_horizons_and_sizes_are_one_line_errors(model_run_dir, small_reacher_dataset):
    run = load_model_run(model_run_dir)
    ds = open_dataset(small_reacher_dataset)
    pixels, actions = ds.read("pixels"), ds.read("action")
    with pytest.raises(VisforeError, match="horizon must be an integer >= 1, got 0"):
        predict_clips(run, pixels, actions, ds.episode_ends, 0)
    with pytest.raises(VisforeError, match="no episode has 22 frames .*the longest has 13"):
        predict_clips(run, pixels, actions, ds.episode_ends, 20)
    with pytest.raises(VisforeError, match="frames are 16x16 but the model .* takes 32x32"):
        predict_clips(run, pixels[:, :16, :16], actions, ds.episode_ends, 2)
    with pytest.raises(VisforeError, match="actions are 3-dim"):
        predict_clips(run, pixels, np.zeros((len(actions), 3), np.float32), ds.episode_ends, 2)


def test_train_translator_on_predictions_end_to_end(model_run_dir, small_reacher_dataset, tmp_path):
    """The translator trains on 24 clips of 2 real + 3 predicted frames, keeps the clips
    of one dataset episode on one side of the split, and reports its key-point error by
    prediction step."""
    out = tmp_path / "run"
    res = invoke(
        "train-translator",
        "--data",
        str(small_reacher_dataset),
        "--out",
        str(out),
        "--epochs",
        "1",
        "--on-predictions",
        str(model_run_dir),
        "--prediction-horizon",
        "3",
        "--val-fraction",
        "0.25",
        *TINY_CLI,
    )
    assert res.exit_code == 0, res.output
    metrics = json.loads((out / "metrics.json").read_text())
    info = metrics["on_predictions"]
    assert info["clips"] == 24 and info["context"] == 2 and info["horizon"] == 3
    assert info["model"] == str(model_run_dir.resolve()) and info["checkpoint"] in ("best", "last")
    assert len(info["keypoint_error_cm_by_step"]) == 4 and all(e > 0 for e in info["keypoint_error_cm_by_step"])
    assert metrics["num_val_episodes"] == 3 and metrics["num_val_frames"] == 3 * 2 * 5
    assert metrics["num_train_frames"] == 9 * 2 * 5
    config = (out / "config.yaml").read_text()
    assert "on_predictions:" in config and "prediction_horizon: 3" in config


def _error(args):
    return one_error_line(invoke("train-translator", *args))


def test_on_predictions_bad_input_is_one_line_and_writes_nothing(model_run_dir, small_reacher_dataset, tmp_path):
    data = ["--data", str(small_reacher_dataset), "--out", str(tmp_path / "r"), *TINY_CLI]
    assert "--prediction-horizon needs --on-predictions" in _error([*data, "--prediction-horizon", "3"])
    assert "--prediction-horizon must be an integer >= 1" in _error(
        [*data, "--on-predictions", str(model_run_dir), "--prediction-horizon", "0"]
    )
    assert "no episode has 22 frames" in _error(
        [*data, "--on-predictions", str(model_run_dir), "--prediction-horizon", "20"]
    )
    assert "not a train-model run" in _error([*data, "--on-predictions", str(tmp_path)])
    assert not (tmp_path / "r").exists()
