"""train-model with the latent world models (rssm, jepa): run directory, auxiliary losses,
the after_optimizer_step hook, --probe keypoints (state-supervised), latent-space metrics.

Tiny models on the shared 32x32 reacher dataset (12 episodes x 12 actions): each run
takes a second or two."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from rich.console import Console
from typer.testing import CliRunner

from visfore.cli.app import app
from visfore.core import runs
from visfore.core.errors import VisforeError
from visfore.data.dataset import open_dataset
from visfore.data.labels import ProbeLayout, dataset_state_labels
from visfore.worldmodels.config import TrainConfig
from visfore.worldmodels.model_run import load_model_run
from visfore.worldmodels.report import print_metrics_table

TINY = {
    "rssm": {"depth": 4, "deter": 16, "hidden": 16, "stoch": 4, "classes": 4, "embed_dim": 8},
    "jepa": {"depth": 4, "embed_dim": 8, "deter": 16, "hidden": 16},
}
AUX_KEYS = {"rssm": {"kl", "embed"}, "jepa": {"prediction", "variance", "covariance", "temporal_variance"}}
HORIZON = 3


def _config(data: Path, out: Path, model: str, **overrides) -> TrainConfig:
    base = dict(
        data=str(data),
        out=str(out),
        model=model,
        model_kwargs=dict(TINY[model]),
        context=2,
        horizon=HORIZON,
        epochs=1,
        batch_size=4,
        lr=3e-3,
        lr_schedule="constant",
        warmup_steps=0,
        val_fraction=0.25,
        clips_per_epoch=8,
        max_val_clips=8,
        epoch_val_clips=4,
        image_clips=1,
        eval_samples=2,
        device="cpu",
        num_threads=1,
        progress=False,
    )
    base.update(overrides)
    return TrainConfig(**base)


def _train(config: TrainConfig) -> dict:
    from visfore.worldmodels.training import train_model

    return train_model(config)


def _resume(out: Path, **overrides) -> dict:
    return _train(TrainConfig(out=str(out), resume=True, device="cpu", num_threads=1, progress=False, **overrides))


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return runs.load_checkpoint(out / "checkpoints" / "last.pt")["model"]["state_dict"]


# -- end to end -------------------------------------------------------------------------
@pytest.mark.parametrize("model", ["rssm", "jepa"])
def test_train_model_end_to_end_and_resume(model: str, small_reacher_dataset: Path, tmp_path: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / model
    result = CliRunner().invoke(app, [
        "train-model", "--data", str(small_reacher_dataset), "--out", str(out), "--model", model,
        "--model-kwargs", json.dumps(TINY[model]), "--context", "2", "--horizon", str(HORIZON), "--epochs", "1",
        "--batch-size", "4", "--clips-per-epoch", "8", "--max-val-clips", "8", "--epoch-val-clips", "4",
        "--val-fraction", "0.25", "--eval-samples", "2", "--device", "cpu", "--num-threads", "1",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "self-supervised" in result.output and "latent space: shuffled actions move" in result.output
    for path in ("config.yaml", "metrics.json", "checkpoints/last.pt", "checkpoints/best.pt", "images/epoch_001.png"):
        assert (out / path).is_file(), path
    metrics = json.loads((out / "metrics.json").read_text())
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert metrics["supervision"] == cfg["supervision"] == "self-supervised" and "probe" not in cfg
    assert cfg["model"]["latent"] is True and cfg["model"]["config"]["depth"] == 4
    # the decoded open-loop metrics per step next to copy-last-frame, as for pixel models
    for part in ("model", "copy_last_frame", "shuffled_actions"):
        assert len(metrics[part]["psnr"]) == HORIZON and all(math.isfinite(v) for v in metrics[part]["psnr"])
    assert "psnr_drop_db" in metrics["action_sensitivity"]
    # auxiliary losses: per key in the epoch history and in TensorBoard
    record = metrics["history"][0]
    assert {f"train_aux_{k}" for k in AUX_KEYS[model]} <= set(record)
    assert all(math.isfinite(record[f"train_aux_{k}"]) for k in AUX_KEYS[model])
    aux_total = sum(record[f"train_aux_{k}"] for k in AUX_KEYS[model])
    assert record["train_loss"] == pytest.approx(record["train_mse"] + aux_total, rel=1e-5)
    events = EventAccumulator(str(out / "logs"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {f"train/aux/{k}" for k in AUX_KEYS[model]} | {f"epoch/train_aux_{k}" for k in AUX_KEYS[model]} <= tags
    # latent-space action sensitivity, per step
    sens = metrics["latent_action_sensitivity"]
    assert len(sens["relative_per_step"]) == HORIZON and sens["relative"] >= 0 and sens["feature_scale"] > 0
    assert ("resample_relative" in sens) == (model == "rssm")  # stochastic: the sampling-noise floor
    assert "latent_action_sensitivity" in metrics["definitions"]
    # resume one more epoch
    again = _resume(out, epochs=2)
    assert again["epochs_completed"] == 2 and len(again["history"]) == 2 and again["session"]["resumed"]
    assert {f"train_aux_{k}" for k in AUX_KEYS[model]} <= set(again["history"][1])


@pytest.mark.parametrize("model", ["rssm", "jepa"])
def test_resume_mid_epoch_matches_a_straight_run(model: str, small_reacher_dataset: Path, tmp_path: Path):
    """The EMA target (jepa) and the probe's own RNG stream resume exactly too."""
    kwargs = dict(epochs=2, probe="keypoints")
    straight = _train(_config(small_reacher_dataset, tmp_path / "a", model, **kwargs))
    stopped = _train(_config(small_reacher_dataset, tmp_path / "b", model, time_budget=1e-9, **kwargs))
    assert stopped["global_step"] == 1 and stopped["epochs_completed"] == 0
    resumed = _resume(tmp_path / "b")
    assert resumed["global_step"] == straight["global_step"] == 4
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [h["train_probe_loss"] for h in resumed["history"]] == [h["train_probe_loss"] for h in straight["history"]]


# -- the hook ---------------------------------------------------------------------------
def test_after_optimizer_step_is_called_and_moves_the_jepa_target(
    small_reacher_dataset: Path, tmp_path: Path, monkeypatch
):
    from visfore_models import JEPAForwardModel, build_model

    calls = []
    original = JEPAForwardModel.after_optimizer_step

    def spy(self):
        calls.append(self.training)
        original(self)

    monkeypatch.setattr(JEPAForwardModel, "after_optimizer_step", spy)
    metrics = _train(_config(small_reacher_dataset, tmp_path / "hook", "jepa", epochs=2))
    assert len(calls) == metrics["global_step"] == 4
    weights = _weights(tmp_path / "hook")
    torch.manual_seed(0)  # the run's seed: the same initial weights
    fresh = build_model("jepa", action_dim=2, image_size=32, **TINY["jepa"]).state_dict()
    targets = [k for k in weights if k.startswith("target_")]
    assert targets and all(torch.equal(fresh[k], fresh_enc) for k, fresh_enc in zip(targets, _encoder(fresh)))
    assert any(not torch.equal(weights[k], fresh[k]) for k in targets)  # the EMA moved the target
    # ... and it lags the trained online encoder (momentum 0.99)
    assert any(not torch.equal(weights[k], w) for k, w in zip(targets, _encoder(weights)))


def _encoder(state: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    return [v for k, v in state.items() if k.startswith("encoder.")]


# -- the probe --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def probe_run(small_reacher_dataset: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("probe") / "rssm-probe"
    metrics = _train(_config(small_reacher_dataset, out, "rssm", probe="keypoints", epochs=3, lr=1e-2))
    return out, metrics


def test_probe_is_labelled_state_supervised_everywhere(probe_run):
    out, metrics = probe_run
    label = "state-supervised (probe: keypoints)"
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["supervision"] == metrics["supervision"] == metrics["probe"]["label"] == label
    assert cfg["options"]["probe"] == "keypoints"
    layout = ProbeLayout.from_dict(cfg["probe"])
    assert layout.keypoint_names == ("elbow", "fingertip") and layout.axis_names == ("x", "y")
    assert layout.dim == 6 and cfg["model"]["config"]["probe_dim"] == 6
    assert [o["unit"] for o in cfg["probe"]["outputs"]] == ["m"] * 4 + ["rad"] * 2
    console = Console(record=True, width=200)
    print_metrics_table(metrics, console)
    text = console.export_text()
    assert f"rssm, {label}" in text.splitlines()[0] and "state-supervised probe: key-point error" in text
    run = load_model_run(out)
    assert run.supervision == label and run.state_supervised and run.probe == layout
    with torch.no_grad():
        state = run.model.init_state(torch.rand(2, 2, 3, 32, 32), torch.zeros(2, 1, 2))
        out_probe = run.model.probe(run.model.features(state))
    assert out_probe.shape == (2, run.probe.dim) and out_probe[:, run.probe.keypoint_slice].shape == (2, 4)


def test_probe_metrics_per_horizon_step(probe_run):
    _, metrics = probe_run
    probe = metrics["probe"]
    for part in ("model", "copy_last_state"):
        for key in ("keypoint_error_cm", "joint_error_deg"):
            values = probe[part][key]
            assert len(values) == HORIZON and all(v is not None and v >= 0 for v in values)
    # copy-last-state: the true key points of o_{C-1}; the robot moves, so the error grows with k
    base = probe["copy_last_state"]["keypoint_error_cm"]
    assert base[0] < base[-1] < 30  # centimetres: the arm is 21 cm long
    assert probe["observed"]["keypoint_error_cm"] >= 0
    assert {"probe_keypoint_error_cm", "probe_copy_last_state"} <= set(metrics["definitions"])
    assert all("val_probe_keypoint_error_cm" in h and "train_probe_loss" in h for h in metrics["history"])


def test_velocity_probe_reads_the_joint_velocities_of_the_states(small_reacher_dataset: Path, tmp_path: Path):
    """--probe keypoints+velocities: the labels gain the states' joint velocities (rad/s,
    columns 4:6 of ReacherPlane's state), the layout says so, the loss does not wrap them
    like angles, and the run reports their error per horizon step."""
    out = tmp_path / "run"
    metrics = _train(_config(small_reacher_dataset, out, "rssm", probe="keypoints+velocities", probe_weight=2.0))
    label = "state-supervised (probe: keypoints+velocities)"
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["supervision"] == metrics["supervision"] == label
    layout = ProbeLayout.from_dict(cfg["probe"])
    assert layout.dim == 8 and layout.velocity_names == ("joint0_velocity", "joint1_velocity")
    assert (layout.keypoint_slice, layout.joint_slice, layout.velocity_slice) == (slice(0, 4), slice(4, 6), slice(6, 8))
    assert [o["unit"] for o in cfg["probe"]["outputs"]] == ["m"] * 4 + ["rad"] * 2 + ["rad/s"] * 2
    ds = open_dataset(small_reacher_dataset)
    labels = dataset_state_labels(ds, "keypoints+velocities")
    state = ds.read("state")
    np.testing.assert_array_equal(labels.values[:, 6:], state[:, 4:6])
    np.testing.assert_array_equal(labels.values[:, :6], dataset_state_labels(ds).values)  # the rest unchanged
    assert np.abs(labels.values[:, 6:]).max() > 0.1  # the arm moves
    velocities = metrics["probe"]["model"]["velocity_error_rad_s"]
    assert len(velocities) == HORIZON and all(v is not None and v >= 0 for v in velocities)
    console = Console(record=True, width=250)
    print_metrics_table(metrics, console)
    text = console.export_text()
    assert "joint velocity error" in text and label in text.splitlines()[0]
    run = load_model_run(out)
    assert run.probe == layout and run.supervision == label
    _, task = _probe_task(small_reacher_dataset, tmp_path / "never", "jepa", probe="keypoints+velocities")
    assert task.probe_angular.tolist() == [False] * 4 + [True, True] + [False, False]
    assert not (tmp_path / "never").exists()


def test_velocity_labels_need_states_that_hold_velocities():
    from visfore.data.labels import _decode_rows

    class NoVelocities:  # decode_state without "qvel", as a robot that stores no velocities
        __name__ = "NoVelocities"

        @classmethod
        def decode_state(cls, state):
            return {"qpos": state[:, :1], "keypoints": state[:, 1:]}

    with pytest.raises(VisforeError, match="hold no joint velocities.*use --probe keypoints"):
        _decode_rows(NoVelocities, np.zeros((3, 4), np.float32), "NoVel-v0", velocities=True)
    # a run's layout from before the velocity kind has no velocity_names: it has no velocities
    old = {"kind": "keypoints", "env_id": "e", "keypoint_names": ["a"], "axis_names": ["x"], "joint_names": ["j"]}
    assert ProbeLayout.from_dict(old).dim == 2 and ProbeLayout.from_dict(old).velocity_slice == slice(2, 2)
    with pytest.raises(VisforeError, match="malformed probe layout: kind 'keypoints\\+velocities' with 0"):
        ProbeLayout.from_dict(
            {
                "kind": "keypoints+velocities",
                "env_id": "e",
                "keypoint_names": ["a"],
                "axis_names": ["x"],
                "joint_names": ["j"],
            }
        )


def _probe_task(data: Path, out: Path, model: str, **overrides):
    from visfore.worldmodels import distributed as ddp
    from visfore.worldmodels.training import ForwardModelTask, Precision, prepare

    overrides.setdefault("probe", "keypoints")
    config = _config(data, out, model, **overrides)
    dist = ddp.setup_distributed("cpu")
    prep = prepare(config, dist, out)
    task = ForwardModelTask(
        prep,
        dist,
        precision=Precision.for_device(False, prep.device),
        lr_schedule={"schedule": "constant", "warmup_steps": 0, "total_steps": 100},
        sampling_steps=100,
        sampling_k=None,
        writer=None,
    )
    return prep, task


def test_probe_loss_falls_on_a_fixed_batch(small_reacher_dataset: Path, tmp_path: Path, one_torch_thread):
    from visfore.core.trainer import TrainState

    prep, task = _probe_task(small_reacher_dataset, tmp_path / "never-written", "jepa", lr=1e-2)
    assert prep.labels is not None and prep.labels.values.shape[1] == 6
    batch = prep.data.train[np.arange(4)]
    state = TrainState(extra={"sampling_step": 0, "mse_sum": 0.0})
    losses = []
    for _ in range(15):
        result = task.train_step(batch, state)
        state.global_step += 1
        losses.append(result.scalars["train/probe_loss"])
    assert losses[-1] < 0.5 * losses[0], losses
    assert not (tmp_path / "never-written").exists()


def test_probe_loss_weighs_outputs_by_their_spread_over_training_rows(small_reacher_dataset: Path, tmp_path: Path):
    """Each output's divisor is its standard deviation over the training episodes' rows;
    the reacher's two joint angles (the last outputs) are the angular ones."""
    prep, task = _probe_task(small_reacher_dataset, tmp_path / "never", "jepa")
    src = prep.data.train.source
    rows = np.concatenate(
        [
            np.arange(src.episode_starts[e], src.episode_starts[e] + src.episode_lengths[e])
            for e in prep.data.train_episodes
        ]
    )
    assert len(rows) < prep.labels.values.shape[0]  # the validation episodes are left out
    expected = prep.labels.values[rows].std(axis=0)
    assert task.probe_scale.shape == (6,) and np.allclose(task.probe_scale.numpy(), expected, rtol=1e-5)
    assert task.probe_angular.tolist() == [False, False, False, False, True, True]


@pytest.mark.parametrize("model", ["rssm", "jepa"])
@pytest.mark.parametrize("weight", [0.0, 2.0])
def test_probe_weight_decides_whether_the_probe_trains_the_encoder(
    small_reacher_dataset: Path, tmp_path: Path, model: str, weight: float
):
    """--probe-weight 0: the probe's gradient reaches its head only; above 0 it reaches the
    encoder and the predictor too (the imagined steps' features carry gradient)."""
    prep, task = _probe_task(small_reacher_dataset, tmp_path / "never", model, probe_weight=weight)
    batch = prep.data.train[np.arange(4)]
    from visfore.worldmodels.training import frames_to_float

    frames = frames_to_float(batch["frames"])
    loss = task._probe_loss(frames, batch["actions"], batch, step=0)
    assert loss.shape == () and loss.dtype == torch.float32 and float(loss.detach()) > 0
    task.model.zero_grad(set_to_none=True)
    loss.backward()
    named = dict(task.model.named_parameters())
    head = [p for k, p in named.items() if k.startswith("probe_head.")]
    assert all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in head)
    others = {k: p for k, p in named.items() if not k.startswith("probe_head.")}
    reached = {k for k, p in others.items() if p.grad is not None and float(p.grad.abs().sum()) > 0}
    if weight == 0:
        assert not reached
    else:  # the encoder's first convolution and the predictor's recurrent cell
        assert any(k.startswith("encoder.") for k in reached), sorted(reached)
        assert any(k.startswith("gru.") for k in reached), sorted(reached)
    assert not (tmp_path / "never").exists()


def test_probe_weight_scales_the_world_models_step(small_reacher_dataset: Path, tmp_path: Path, one_torch_thread):
    """With --probe-weight > 0 the world model's weights move differently from a detached
    probe's run, and the imagined key points are learnt: the probe loss falls on a fixed batch."""
    from visfore.core.trainer import TrainState

    ends = {}
    for weight in (0.0, 5.0):
        torch.manual_seed(0)
        prep, task = _probe_task(small_reacher_dataset, tmp_path / "never", "jepa", probe_weight=weight, lr=1e-2)
        batch = prep.data.train[np.arange(4)]
        state = TrainState(extra={"sampling_step": 0, "mse_sum": 0.0})
        losses = []
        for _ in range(15):
            losses.append(task.train_step(batch, state).scalars["train/probe_loss"])
            state.global_step += 1
        assert losses[-1] < 0.5 * losses[0], (weight, losses)
        ends[weight] = {k: v.detach().clone() for k, v in task.model.state_dict().items() if k.startswith("encoder.")}
    assert any(not torch.equal(ends[0.0][k], ends[5.0][k]) for k in ends[0.0])


def test_probe_weight_is_recorded_in_the_run(small_reacher_dataset: Path, tmp_path: Path):
    out = tmp_path / "run"
    metrics = _train(_config(small_reacher_dataset, out, "rssm", probe="keypoints", probe_weight=3.0))
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["options"]["probe_weight"] == 3.0 and config["options"]["probe"] == "keypoints"
    assert metrics["supervision"] == "state-supervised (probe: keypoints)"


def test_the_probe_never_changes_the_world_model(small_reacher_dataset: Path, tmp_path: Path):
    """The probe trains on detached features, its gradient is clipped apart and its
    filtering pass has its own RNG stream: every other weight ends bit for bit as in a run
    without the probe (rssm samples, jepa does not)."""
    for model in ("rssm", "jepa"):
        plain = _train(_config(small_reacher_dataset, tmp_path / f"{model}-plain", model, epochs=2))
        probed = _train(_config(small_reacher_dataset, tmp_path / f"{model}-probe", model, epochs=2, probe="keypoints"))
        a, b = _weights(tmp_path / f"{model}-plain"), _weights(tmp_path / f"{model}-probe")
        assert set(b) - set(a) and all(k.startswith("probe_head.") for k in set(b) - set(a))
        assert all(torch.equal(a[k], b[k]) for k in a), model
        assert plain["model"] == probed["model"]  # the decoded metrics too
        assert plain["latent_action_sensitivity"] == probed["latent_action_sensitivity"]


def test_latent_metrics_do_not_change_the_decoded_ones(probe_run, small_reacher_dataset: Path):
    from visfore.worldmodels.evaluation import EvalOptions, evaluate_open_loop

    out, _ = probe_run
    run = load_model_run(out, "last")
    from visfore.data.clips import ClipDataset, load_clip_source

    ds = open_dataset(small_reacher_dataset)
    clips = ClipDataset(load_clip_source(ds), run.val_episodes, context=2, horizon=HORIZON)
    labels = dataset_state_labels(ds)
    from visfore.worldmodels.evaluation import ProbeTargets

    opts = EvalOptions(batch_size=4, samples=2, seed=3, probe=ProbeTargets(labels.values, labels.layout))
    with_latent = evaluate_open_loop(run.model, clips, device=torch.device("cpu"), options=opts)
    without = evaluate_open_loop(
        run.model, clips, device=torch.device("cpu"), options=dataclasses.replace(opts, latent=False)
    )
    assert "latent" not in without and "probe" not in without
    for part in ("model", "shuffled_actions", "best_of_n"):
        for key, value in without[part].items():
            np.testing.assert_array_equal(with_latent[part][key], value)
    assert with_latent["probe"]["model"]["keypoint_error_cm"].shape == (HORIZON,)
    assert with_latent["latent"]["relative_shuffled"].shape == (HORIZON,)


# -- refusals ----------------------------------------------------------------------------
def _cli_refusal(data: Path, out: Path, *args: str) -> str:
    result = CliRunner().invoke(
        app, ["train-model", "--data", str(data), "--out", str(out), "--device", "cpu", "--horizon", "3", *args]
    )
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert not out.exists()
    return result.output


def test_probe_on_a_pixel_model_is_refused_in_one_line(small_reacher_dataset: Path, tmp_path: Path):
    text = _cli_refusal(small_reacher_dataset, tmp_path / "never", "--model", "convlstm", "--probe", "keypoints")
    assert "--probe keypoints needs a latent model (jepa, rssm); convlstm is a pixel model" in text


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--model", "rssm", "--model-kwargs", '{"bogus": 1}'], "unknown key 'bogus'; valid keys: depth (int, default"),
        (["--model", "jepa", "--model-kwargs", '{"depth": "x"}'], "depth='x': expected int, got str"),
        (["--model", "jepa", "--model-kwargs", '{"probe_dim": 3}'], "the probe is set by --probe keypoints"),
        (["--model", "rssm", "--probe", "joints"], "--probe must be one of none, keypoints"),
        (["--model", "jepa", "--probe-weight", "1"], "--probe-weight 1.0 needs --probe keypoints"),
        (
            ["--model", "jepa", "--probe", "keypoints", "--probe-weight", "-1"],
            "--probe-weight must be a finite number >= 0, got -1.0",
        ),
    ],
)
def test_bad_latent_options_are_refused_in_one_line(small_reacher_dataset: Path, tmp_path: Path, args, needle):
    assert needle in _cli_refusal(small_reacher_dataset, tmp_path / "never", *args)


def test_probe_needs_a_dataset_with_states_to_decode(tmp_path: Path):
    from visfore.data.dataset import DatasetWriter

    path = tmp_path / "synthetic.zarr"
    writer = DatasetWriter.create(path, frame_shape=(16, 16, 3), state_dim=2, action_dim=2, attrs={"env_id": "nope-v0"})
    with writer:
        for _ in range(4):
            writer.append_episode(
                pixels=np.zeros((9, 16, 16, 3), np.uint8),
                state=np.zeros((9, 2), np.float32),
                action=np.zeros((8, 2), np.float32),
                reward=np.zeros(8, np.float32),
                terminated=np.zeros(8, bool),
                truncated=np.zeros(8, bool),
            )
    with pytest.raises(VisforeError, match="'nope-v0' is not a registered Gymnasium id"):
        _train(_config(path, tmp_path / "never", "jepa", probe="keypoints"))
    assert not (tmp_path / "never").exists()
