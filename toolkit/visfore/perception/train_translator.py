"""``visfore train-translator``: learn to read joint angles and key points off frames.

The frame-to-pose translator (:class:`visfore_models.translator.FrameTranslator`):
a CNN, optionally with ConvLSTM memory over the last few frames, from an RGB frame to the
robot's joint angles ``q`` (radians) and key points ``k`` (metres), trained on a dataset
written by ``visfore collect`` (it holds the frames and the states already).

Pipeline (:func:`train_translator`; :func:`train_translator_command` is a thin wrapper):

1. Validate every option and open the dataset before anything is written. The training
   targets come from the dataset's ``data/state`` through the env class's
   ``decode_state`` classmethod (:meth:`visfore_envs.core.KeypointTargetEnv.decode_state`;
   the class is found through the env id's registered entry point; :mod:`visfore.data.labels`,
   shared with ``train-model --probe keypoints``), so a new robot brings its own decoding. A dataset whose env has no ``decode_state`` is a one-line
   :class:`~visfore.core.errors.VisforeError`.
2. Split the episodes into training and held-out episodes (seeded,
   :func:`visfore.data.clips.split_episodes`; at least one of each). Every row of an episode
   is a sample: its frame (with ``--memory M``: the frames of rows ``t - M + 1 .. t`` of
   the same episode, the episode's first frame repeated before its start) and the state
   decoded at row ``t``.
   With ``--on-predictions RUN`` the frames are a ``visfore train-model`` run's open-loop
   predictions instead (:mod:`visfore.perception.predicted_frames`): every episode is cut into
   clips of ``C + K`` frames (the run's context C, ``--prediction-horizon`` K), the C
   real context frames are kept and the K predicted frames are labelled with the true
   state of the frames they predict. Each clip is then an episode of the translator
   (clips of one dataset episode share its side of the split). This is the reader a
   planner needs to score imagined frames (``visfore plan --cost keypoints``); use a
   dataset the model was not trained on, so its predictions are as good as at planning
   time and no better.
3. Train with Adam (cosine decay of the learning rate to 10 %, linear warm-up) on
   :func:`visfore_models.translator.translator_loss` (``(cos, sin)`` MSE for the angles
   plus ``--keypoint-weight`` times the MSE of the key points normalised by the training
   set's mean and standard deviation, which the model stores). After each epoch: the loss
   on the held-out episodes, TensorBoard scalars in ``logs/``, ``checkpoints/last.pt``
   and (when the held-out loss improved) ``checkpoints/best.pt``, written atomically.
   ``--time-budget`` stops training between two batches (``last.pt`` is then written).
4. Evaluate the final weights (``last.pt``) on every frame of the held-out episodes
   (:func:`translation_errors`) next to the mean predictor (circular mean of each joint
   angle and mean key points over the training frames), print a table, write
   ``metrics.json``.

Run directory ``runs/train-translator-<name or UTC time>/`` (:mod:`visfore.core.runs`):
``config.yaml``, ``checkpoints/{last,best}.pt``, ``logs/``, ``metrics.json``. Load a run
for use with :func:`visfore.perception.translator_run.load_translator_run`.

Python API::

    from visfore.perception.train_translator import train_translator
    metrics = train_translator({"data": "data/translator-reacher.zarr", "epochs": 10})

There is no ``--resume`` (runs are minutes long); a stopped run keeps its checkpoints.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np
import torch
from rich.table import Table
from torch.utils.tensorboard import SummaryWriter

from visfore.core import runs
from visfore.core.console import stdout_console
from visfore.core.device import parse_device_spec, select_device
from visfore.core.errors import VisforeError
from visfore.core.threads import adaptive_threads, configure_torch_threads, restoring_torch_threads
from visfore.core.trainer import (
    Checkpointer,
    RichProgress,
    StepResult,
    StopOnInterrupt,
    TensorBoardLogger,
    TimeBudget,
    Trainer,
    TrainState,
    TrainTask,
)
from visfore.data import storage
from visfore.data.clips import split_episodes
from visfore.data.dataset import open_dataset
from visfore.data.labels import (  # moved to the data layer (train-model --probe uses them too)
    DecodableEnvClass,
    decode_dataset_states,
    env_class_for,
    joint_names_for,
    keypoint_names_for,
)
from visfore.perception.config import MAX_MEMORY, TranslatorConfig
from visfore.perception.predicted_frames import predict_clips
from visfore.worldmodels.model_run import load_model_run
from visfore_models.translator import FrameTranslator, translator_loss, translator_state

log = logging.getLogger(__name__)

__all__ = [
    "COMMAND",
    "CHECKPOINT_FORMAT",
    "TranslatorConfig",
    "circular_mean",
    "decode_dataset_states",
    "env_class_for",
    "joint_names_for",
    "keypoint_names_for",
    "print_translator_table",
    "train_translator",
    "translation_errors",
    "window_indices",
]

COMMAND = "train-translator"
CHECKPOINT_FORMAT = "visfore-train-translator-checkpoint"
CHECKPOINT_VERSION = 1
#: Learning-rate warm-up steps (linear), then cosine decay to 10 % of ``--lr``.
WARMUP_STEPS = 20

#: Definitions stored in ``metrics.json``.
DEFINITIONS = {
    "joint_mae_deg": "per joint: mean over held-out frames of |wrap(q_pred - q_true)| in degrees, "
    "wrap into [-180, 180); 'mean' averages the joints",
    "keypoint_error_cm": "per key point: mean over held-out frames of the Euclidean distance "
    "||k_pred - k_true|| over the key point's axes (the env's keypoint_axes), in centimetres; "
    "'mean' averages the key points",
    "mean_predictor": "predicts the same value for every frame: the circular mean "
    "atan2(mean sin q, mean cos q) of each joint angle and the mean of each key-point "
    "coordinate over the training frames",
    "ratio": "model error / mean-predictor error (lower is better; 0.1 = ten times smaller)",
    "held_out": "every frame of the held-out episodes (seeded split by episode, --val-fraction)",
    "checkpoint": "the metrics are those of the final weights, checkpoints/last.pt",
}


def _int_at_least(name: str, value: Any, minimum: int, maximum: int | None = None) -> None:
    flag = "--" + name.replace("_", "-")
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < minimum
        or (maximum is not None and value > maximum)
    ):
        span = f">= {minimum}" if maximum is None else f"in {minimum}..{maximum}"
        raise VisforeError(f"{flag} must be an integer {span}, got {value!r}")


def _real(name: str, value: Any, *, positive: bool) -> None:
    flag = "--" + name.replace("_", "-")
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (value <= 0 if positive else value < 0):
        raise VisforeError(f"{flag} must be a finite number {'> 0' if positive else '>= 0'}, got {value!r}")


def validate_config(config: TranslatorConfig) -> None:
    """Check every option; touches nothing.

    Raises:
        VisforeError: the first bad option, named with its flag and the allowed values.
    """
    if config.data is None:
        raise VisforeError("--data is required (a dataset from `visfore collect`)")
    _int_at_least("memory", config.memory, 1, MAX_MEMORY)
    _int_at_least("epochs", config.epochs, 1)
    _int_at_least("batch_size", config.batch_size, 1)
    _int_at_least("eval_batch_size", config.eval_batch_size, 1)
    _int_at_least("hidden", config.hidden, 1)
    _int_at_least("lstm_channels", config.lstm_channels, 1)
    _int_at_least("seed", config.seed, 0)
    if config.num_threads is not None:
        _int_at_least("num_threads", config.num_threads, 1)
    if config.prediction_horizon is not None:
        if config.on_predictions is None:
            raise VisforeError("--prediction-horizon needs --on-predictions RUN (a train-model run)")
        _int_at_least("prediction_horizon", config.prediction_horizon, 1)
    _real("lr", config.lr, positive=True)
    _real("weight_decay", config.weight_decay, positive=False)
    _real("keypoint_weight", config.keypoint_weight, positive=False)
    if config.time_budget is not None:
        _real("time_budget", config.time_budget, positive=True)
    if not (isinstance(config.val_fraction, (int, float)) and 0.0 < config.val_fraction < 1.0):
        raise VisforeError(f"--val-fraction must be in (0, 1), got {config.val_fraction!r}")
    try:
        channels = tuple(int(c) for c in config.channels)
    except (TypeError, ValueError):
        raise VisforeError(f"--channels must be positive integers, got {config.channels!r}") from None
    if not channels or min(channels) < 1:
        raise VisforeError(f"--channels must be positive integers, got {config.channels!r}")
    config.channels = channels
    parse_device_spec(config.device)


# ---------------------------------------------------------------------------------------
# samples, augmentation, metrics
# ---------------------------------------------------------------------------------------
def window_indices(episode_ends: np.ndarray, memory: int) -> np.ndarray:
    """Row indices of each row's frame window, (N, memory) int64.

    ``out[r] = [r - memory + 1, ..., r]``, each clipped below at the first row of the
    episode of ``r`` (the episode's first frame repeated before its start); windows never
    cross ``episode_ends``. ``out[:, -1] == arange(N)``.
    """
    ends = np.asarray(episode_ends, dtype=np.int64)
    n = int(ends[-1]) if len(ends) else 0
    starts = np.repeat(np.concatenate([[0], ends[:-1]]), np.diff(np.concatenate([[0], ends])))
    rows = np.arange(n, dtype=np.int64)
    offsets = np.arange(-memory + 1, 1, dtype=np.int64)
    return np.maximum(rows[:, None] + offsets[None, :], starts[:, None])


def augment_frames(frames: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Photometric augmentation of a batch ``(B, T, 3, H, W)`` float in [0, 1] (a new tensor).

    Per sample (the same for its T frames): brightness ``x * U(0.9, 1.1)``, contrast about
    the sample mean ``U(0.9, 1.1)``, per-channel gain ``U(0.95, 1.05)``, plus pixel noise
    ``N(0, 0.01)``; clipped to [0, 1]. No geometric shift or flip: the camera is fixed and
    the targets are absolute positions, so moving the image would move the labels.
    ``generator`` is a CPU ``torch.Generator`` (reproducible draws).
    """
    B = frames.shape[0]

    def u(lo: float, hi: float, *shape: int) -> torch.Tensor:
        return (lo + (hi - lo) * torch.rand(*shape, generator=generator)).to(frames.device)

    bright = u(0.9, 1.1, B, 1, 1, 1, 1)
    contrast = u(0.9, 1.1, B, 1, 1, 1, 1)
    gain = u(0.95, 1.05, B, 1, 3, 1, 1)
    mean = frames.mean(dim=(1, 2, 3, 4), keepdim=True)
    out = (frames - mean) * contrast + mean
    out = out * bright * gain
    noise = torch.randn(frames.shape, generator=generator).to(frames.device) * 0.01
    return (out + noise).clamp_(0.0, 1.0)


def circular_mean(angles: np.ndarray) -> np.ndarray:
    """Circular mean of angles (N, nq) rad over N: ``atan2(mean sin, mean cos)`` (nq,)
    (Mardia & Jupp 2000, *Directional Statistics*, sec. 2.2.1)."""
    a = np.asarray(angles, dtype=np.float64)
    return np.arctan2(np.sin(a).mean(axis=0), np.cos(a).mean(axis=0))


def translation_errors(
    qpos_pred: np.ndarray,
    qpos_true: np.ndarray,
    kp_pred: np.ndarray,
    kp_true: np.ndarray,
    *,
    axes_per_keypoint: int,
) -> dict[str, np.ndarray]:
    """Errors of predicted joint angles and key points (definitions in :data:`DEFINITIONS`).

    Args:
        qpos_pred, qpos_true: (N, nq) radians (``qpos_pred`` may be (nq,): one value for
            every frame, as the mean predictor).
        kp_pred, kp_true: (N, G) metres (``kp_pred`` may be (G,)), key points flattened
            point by point, ``axes_per_keypoint`` coordinates each.

    Returns:
        ``{"joint_mae_deg": (nq,), "keypoint_error_cm": (G / D,)}`` float64.
    """
    dq = np.asarray(qpos_pred, dtype=np.float64) - np.asarray(qpos_true, dtype=np.float64)
    dq = np.remainder(dq + np.pi, 2 * np.pi) - np.pi
    joint = np.degrees(np.abs(dq)).mean(axis=0)
    true = np.asarray(kp_true, dtype=np.float64)
    diff = np.asarray(kp_pred, dtype=np.float64) - true
    diff = np.broadcast_to(diff, true.shape).reshape(true.shape[0], -1, axes_per_keypoint)
    kp = 100.0 * np.linalg.norm(diff, axis=-1).mean(axis=0)
    return {"joint_mae_deg": joint, "keypoint_error_cm": kp}


def _named(names: list[str], values: np.ndarray) -> dict[str, Any]:
    out: dict[str, Any] = {name: float(v) for name, v in zip(names, values)}
    out["mean"] = float(np.mean(values))
    return out


# ---------------------------------------------------------------------------------------
# the pipeline
# ---------------------------------------------------------------------------------------
@dataclass
class _Data:
    env_id: str
    env_kwargs: dict[str, Any]
    env_cls: DecodableEnvClass
    frame_size: tuple[int, int]
    pixels: np.ndarray
    qpos: np.ndarray
    keypoints: np.ndarray
    windows: np.ndarray
    train_rows: np.ndarray
    val_rows: np.ndarray
    train_episodes: np.ndarray
    val_episodes: np.ndarray
    joint_names: list[str]
    keypoint_names: list[str]
    axes_per_keypoint: int
    data_location: str
    #: with --on-predictions: (frames,) int64, 0 = real context frame, k = k-th prediction
    step: Optional[np.ndarray] = None
    predictions: Optional[dict[str, Any]] = None


def _load_data(config: TranslatorConfig) -> _Data:
    assert config.data is not None  # validate_config: --data is required
    ds = open_dataset(config.data)
    name = storage.display_name(ds.path)
    if ds.num_episodes < 2:
        raise VisforeError(
            f"{name} has {ds.num_episodes} complete episode(s); train-translator needs at least 2 "
            "(one for training, one held out)"
        )
    env_id = ds.attrs.get("env_id")
    if not isinstance(env_id, str):
        raise VisforeError(f"{name} does not record its env id (attrs['env_id'])")
    env_cls = env_class_for(env_id)
    h, w, _ = ds.frame_shape
    factor = 2 ** len(config.channels)
    if h % factor or w % factor:
        raise VisforeError(
            f"frames of {name} are {h}x{w}; the translator with {len(config.channels)} encoder levels "
            f"needs sizes divisible by {factor} (collect with e.g. --size 64, or pass fewer --channels)"
        )
    state = ds.read("state")
    qpos, kp = decode_dataset_states(env_cls, state, env_id=env_id)
    train_eps, val_eps = split_episodes(np.arange(ds.num_episodes), config.val_fraction, config.seed)
    ends, starts = ds.episode_ends, ds.episode_starts
    # the translator's episodes (rows [starts[i], ends[i])) of each dataset episode
    pieces_of = {e: [e] for e in range(ds.num_episodes)}
    pixels = ds.read("pixels")
    step, predictions = None, None
    if config.on_predictions is not None:
        clips, run = _predicted_clips(config, ds, pixels)
        pixels, qpos, kp, step = clips.frames, qpos[clips.source_rows], kp[clips.source_rows], clips.step
        ends = clips.clip_ends
        starts = ends - (clips.context + clips.horizon)
        pieces_of = {e: [] for e in range(ds.num_episodes)}
        for c, e in enumerate(clips.clip_episode):
            pieces_of[int(e)].append(c)
        train_eps = np.array([e for e in train_eps if pieces_of[int(e)]], dtype=np.int64)
        val_eps = np.array([e for e in val_eps if pieces_of[int(e)]], dtype=np.int64)
        if len(train_eps) == 0 or len(val_eps) == 0:
            raise VisforeError(
                f"{name}: too few episodes of {clips.context + clips.horizon} frames for a training and "
                "a held-out side; collect longer or more episodes, or lower --prediction-horizon"
            )
        predictions = {
            "model": str(Path(run.run_dir).resolve()),
            "checkpoint": run.checkpoint,
            "context": clips.context,
            "horizon": clips.horizon,
            "clips": int(len(clips.clip_ends)),
        }

    def rows(eps: np.ndarray) -> np.ndarray:
        return np.concatenate([np.arange(starts[i], ends[i]) for e in eps for i in pieces_of[int(e)]]).astype(np.int64)

    loc = ds.path if isinstance(ds.path, str) else str(Path(ds.path).resolve())
    joint_names = joint_names_for(env_cls, qpos.shape[1])
    kp_names, d = keypoint_names_for(env_cls, kp.shape[1])
    return _Data(
        env_id=env_id,
        env_kwargs=dict(ds.attrs.get("env_kwargs") or {}),
        env_cls=env_cls,
        frame_size=(int(h), int(w)),
        pixels=pixels,
        qpos=qpos,
        keypoints=kp,
        windows=window_indices(ends, config.memory),
        train_rows=rows(train_eps),
        val_rows=rows(val_eps),
        train_episodes=train_eps,
        val_episodes=val_eps,
        joint_names=joint_names,
        keypoint_names=kp_names,
        axes_per_keypoint=d,
        data_location=loc,
        step=step,
        predictions=predictions,
    )


def _predicted_clips(config: TranslatorConfig, ds: Any, pixels: np.ndarray) -> tuple[Any, Any]:
    """``(clips, run)``: the open-loop predictions of ``ds``'s clips
    (:class:`visfore.perception.predicted_frames.PredictedClips`) by the ``--on-predictions`` run
    (:class:`visfore.worldmodels.model_run.ModelRun`, also returned)."""
    assert config.on_predictions is not None  # the caller's condition
    run = load_model_run(config.on_predictions, device=config.device)
    run.check_dataset(ds)
    horizon = run.horizon if config.prediction_horizon is None else config.prediction_horizon
    clips = predict_clips(
        run, pixels, ds.read("action"), ds.episode_ends, horizon, batch_size=config.eval_batch_size, seed=config.seed
    )
    return clips, run


def _batch_frames(data: _Data, rows: np.ndarray, device: torch.device) -> torch.Tensor:
    """(B, M, 3, H, W) float32 in [0, 1] on ``device`` for dataset rows ``rows``."""
    frames = torch.from_numpy(data.pixels[data.windows[rows]])  # (B, M, H, W, 3) uint8
    return frames.to(device).permute(0, 1, 4, 2, 3).float().div_(255.0)


def _predict_rows(
    model: Any, data: _Data, rows: np.ndarray, device: torch.device, batch: int
) -> tuple[np.ndarray, np.ndarray]:
    qs, ks = [], []
    model.eval()
    with torch.no_grad():
        for i in range(0, len(rows), batch):
            out = model(_batch_frames(data, rows[i : i + batch], device))
            qs.append(out["qpos"].double().cpu().numpy())
            ks.append(out["keypoints"].double().cpu().numpy())
    return np.concatenate(qs), np.concatenate(ks)


def _val_loss(model: Any, data: _Data, device: torch.device, config: TranslatorConfig) -> dict[str, float]:
    sums = {"total": 0.0, "angle": 0.0, "keypoint": 0.0}
    rows = data.val_rows
    model.eval()
    with torch.no_grad():
        for i in range(0, len(rows), config.eval_batch_size):
            r = rows[i : i + config.eval_batch_size]
            out = model(_batch_frames(data, r, device))
            losses = translator_loss(
                out,
                torch.from_numpy(data.qpos[r]).to(device),
                torch.from_numpy(data.keypoints[r]).to(device),
                model=model,
                keypoint_weight=config.keypoint_weight,
            )
            for k in sums:
                sums[k] += float(losses[k]) * len(r)
    return {k: v / len(rows) for k, v in sums.items()}


def train_translator(config: Union[TranslatorConfig, Mapping[str, Any]]) -> dict[str, Any]:
    """Train and evaluate a frame translator; write a run directory; return the metrics.

    Args:
        config: a :class:`TranslatorConfig` or a mapping of its fields.

    Returns:
        The content of ``metrics.json``: ``model`` and ``mean_predictor`` each with
        ``joint_mae_deg`` and ``keypoint_error_cm`` (per joint / key point by name, and
        ``mean``), ``ratio`` (model / mean predictor, ``joint`` and ``keypoint``),
        ``beats_mean_predictor`` (both means lower), ``definitions``, ``env_id``,
        ``joint_names``, ``keypoint_names``, counts (``num_train_frames``,
        ``num_val_frames``, episodes), ``history`` (per epoch losses), ``best_epoch``,
        ``epochs_completed``, ``stopped_by_time_budget``, ``train_seconds``,
        ``num_parameters``, ``run_dir``.

    Raises:
        VisforeError: bad options or dataset (before anything is written), an existing
            run directory, a diverged training (non-finite loss).
    """
    if isinstance(config, Mapping):
        config = TranslatorConfig.from_dict(config)
    elif not isinstance(config, TranslatorConfig):
        raise VisforeError(f"train_translator needs a TranslatorConfig or a mapping, got {type(config).__name__}")
    config = dataclasses.replace(config)
    validate_config(config)
    with restoring_torch_threads():  # the API must not leave the process changed
        return _train(config)


def warmup_cosine(warmup: int, total_steps: int) -> Callable[[int], float]:
    """LR multiplier per optimisation step: linear warm-up over ``warmup`` steps, then a
    cosine decay to 0.1 at ``total_steps`` (Loshchilov & Hutter, SGDR, ICLR 2017)."""

    def factor(step: int) -> float:
        if warmup > 0 and step < warmup:
            return (step + 1) / warmup
        span = max(1, total_steps - warmup)
        progress = min(1.0, (step - warmup) / span)
        return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def _build_model(config: TranslatorConfig, data: _Data, device: torch.device) -> tuple[Any, Any, Any]:
    """``(model, optimizer, scheduler)``: the seeded :class:`FrameTranslator` (key-point
    statistics of the training frames set), Adam, and the per-step warm-up + cosine schedule."""
    torch.manual_seed(config.seed)
    model = FrameTranslator(
        num_joints=data.qpos.shape[1],
        num_keypoint_coords=data.keypoints.shape[1],
        image_size=data.frame_size,
        memory=config.memory,
        channels=config.channels,
        lstm_channels=config.lstm_channels,
        hidden=config.hidden,
    )
    train_kp = data.keypoints[data.train_rows].astype(np.float64)
    model.set_keypoint_stats(train_kp.mean(axis=0), train_kp.std(axis=0))
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    total_steps = math.ceil(len(data.train_rows) / config.batch_size) * config.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(min(WARMUP_STEPS, total_steps // 10), total_steps)
    )
    return model, optimizer, scheduler


def _run_record(data: _Data) -> dict[str, Any]:
    """What config.yaml, every checkpoint and metrics.json record about the data."""
    return {
        "env_id": data.env_id,
        "env_kwargs": data.env_kwargs,
        "frame_size": list(data.frame_size),
        "joint_names": data.joint_names,
        "keypoint_names": data.keypoint_names,
        "axes_per_keypoint": data.axes_per_keypoint,
        "on_predictions": data.predictions,
    }


def _write_run_config(run_dir: Path, config: TranslatorConfig, data: _Data, model: Any, device: Any) -> None:
    """Create the run directory and write ``config.yaml``."""
    runs.create_run_dir(run_dir)
    runs.write_config(
        run_dir,
        {
            "command": COMMAND,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "options": {**config.to_dict(), "data": data.data_location},
            **_run_record(data),
            "device": str(device),
            "num_threads": torch.get_num_threads(),
            "split": {
                "train_episodes": [int(e) for e in data.train_episodes],
                "val_episodes": [int(e) for e in data.val_episodes],
            },
            "model": model.config(),
        },
    )


class TranslatorTask(TrainTask):
    """The translator's steps for :class:`visfore.core.trainer.Trainer`.

    Epoch ``e`` visits the training rows in the order ``default_rng([seed, e])`` draws,
    in batches of ``--batch-size`` frames; the augmentation of epoch ``e`` draws from
    ``torch.Generator().manual_seed(seed * 100_003 + e)``. After each epoch (and where the
    loop stops inside one) the held-out loss is measured (:func:`_val_loss`).
    """

    def __init__(
        self,
        config: TranslatorConfig,
        data: _Data,
        model: Any,
        optimizer: Any,
        scheduler: Any,
        device: torch.device,
        writer: Any,
    ) -> None:
        self.config, self.data, self.model, self.optimizer, self.scheduler = config, data, model, optimizer, scheduler
        self.device, self.writer = device, writer
        self.generator: Any = None

    def epoch_batches(self, state: TrainState) -> Sequence[np.ndarray]:
        order = np.random.default_rng([self.config.seed, state.epoch]).permutation(self.data.train_rows)
        self.generator = torch.Generator().manual_seed(self.config.seed * 100_003 + state.epoch)
        self.model.train()
        return [order[i : i + self.config.batch_size] for i in range(0, len(order), self.config.batch_size)]

    def train_step(self, batch: np.ndarray, state: TrainState) -> StepResult:
        frames = _batch_frames(self.data, batch, self.device)
        if self.config.augment:
            frames = augment_frames(frames, self.generator)
        losses = translator_loss(
            self.model(frames),
            torch.from_numpy(self.data.qpos[batch]).to(self.device),
            torch.from_numpy(self.data.keypoints[batch]).to(self.device),
            model=self.model,
            keypoint_weight=self.config.keypoint_weight,
        )
        loss = losses["total"]
        if not torch.isfinite(loss):
            raise VisforeError(f"training diverged (loss {float(loss)}) at epoch {state.epoch + 1}; lower --lr")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        return StepResult(loss=float(loss.detach()), samples=len(batch))

    def validate(self, state: TrainState) -> dict[str, Any]:
        """The held-out losses (``val_total_loss``, ``val_angle_loss``, ``val_keypoint_loss``),
        also logged to TensorBoard as ``val/<key>_loss`` at the global step."""
        val = _val_loss(self.model, self.data, self.device, self.config)
        self.model.train()
        for key, value in val.items():
            self.writer.add_scalar(f"val/{key}_loss", value, state.global_step)
        return {"step": state.global_step, **{f"val_{k}_loss": v for k, v in val.items()}}

    def end_epoch(self, state: TrainState) -> dict[str, Any]:
        return {**self.validate(state), "complete": True}

    def save_checkpoint(self, paths: Sequence[Path], state: TrainState, record: Mapping[str, Any]) -> None:
        checkpoint = {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "translator": translator_state(self.model),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": state.epoch,
            "step": state.global_step,
            "metrics": {k: v for k, v in record.items() if k != "improved"},
            **_run_record(self.data),
        }
        for path in paths:
            runs.save_checkpoint(path, checkpoint)


class _PartialEpochCheckpointer(Checkpointer):
    """:class:`~visfore.core.trainer.Checkpointer` that, where the loop stops inside an
    epoch (time budget, Ctrl-C), measures the held-out loss of the partial epoch, records
    it in the history (``complete: False``) and saves ``last`` (and ``best`` when it
    improved), as after a whole epoch. After Ctrl-C the loop's KeyboardInterrupt says
    ``saved checkpoints/last.pt`` (the command prints it on its one "interrupted" line)."""

    def on_stop_mid_epoch(self, trainer: Trainer, state: TrainState) -> None:
        task = trainer.task
        assert isinstance(task, TranslatorTask)  # the only task this checkpointer is given
        record = {
            "epoch": state.epoch + 1,
            "global_step": state.global_step,
            "train_loss": state.epoch_loss,
            **task.validate(state),
            "complete": False,
        }
        state.history.append(record)
        self.on_epoch_end(trainer, state, record)  # after Ctrl-C: the note "saved LAST"


def _fit(config: TranslatorConfig, task: TranslatorTask, run_dir: Path, console: Any) -> TrainState:
    """Train for ``--epochs`` (or until ``--time-budget``) with checkpoints, TensorBoard and
    the progress bar; returns the final :class:`TrainState`.

    Raises:
        KeyboardInterrupt: after Ctrl-C, once ``checkpoints/last.pt`` is written.
    """
    steps_per_epoch = math.ceil(len(task.data.train_rows) / config.batch_size)
    callbacks = [
        StopOnInterrupt(),
        *adaptive_threads(config.num_threads, task.device),
        TimeBudget(config.time_budget),
        TensorBoardLogger(task.writer),
        _PartialEpochCheckpointer(
            runs.last_checkpoint_path(run_dir), runs.best_checkpoint_path(run_dir), monitor="val_total_loss"
        ),
        RichProgress(steps_per_epoch * config.epochs, enabled=config.progress, unit="frames", console=console),
    ]
    return Trainer(task, epochs=config.epochs, callbacks=callbacks).fit(TrainState())


def _evaluate(model: Any, data: _Data, config: TranslatorConfig, device: Any) -> dict[str, Any]:
    """Errors of the final weights on every held-out frame next to the mean predictor
    (circular mean of each joint angle, mean key points of the training frames):
    ``model``, ``mean_predictor``, ``ratio``, ``on_predictions`` (errors by prediction
    step) and ``eval_seconds``."""
    t_eval = time.perf_counter()
    q_pred, k_pred = _predict_rows(model, data, data.val_rows, device, config.eval_batch_size)
    eval_seconds = time.perf_counter() - t_eval
    q_true, k_true = data.qpos[data.val_rows], data.keypoints[data.val_rows]
    d = data.axes_per_keypoint
    mine = translation_errors(q_pred, q_true, k_pred, k_true, axes_per_keypoint=d)
    q_mean = circular_mean(data.qpos[data.train_rows])
    k_mean = data.keypoints[data.train_rows].astype(np.float64).mean(axis=0)
    base = translation_errors(q_mean, q_true, k_mean, k_true, axes_per_keypoint=d)
    model_block: dict[str, dict[str, Any]] = {
        "joint_mae_deg": _named(data.joint_names, mine["joint_mae_deg"]),
        "keypoint_error_cm": _named(data.keypoint_names, mine["keypoint_error_cm"]),
    }
    base_block: dict[str, Any] = {
        "joint_mae_deg": _named(data.joint_names, base["joint_mae_deg"]),
        "keypoint_error_cm": _named(data.keypoint_names, base["keypoint_error_cm"]),
        "qpos": [float(v) for v in q_mean],
        "keypoints": [float(v) for v in k_mean],
    }
    on_predictions = None
    if data.step is not None:
        # how well the predicted frames are read, by prediction step (0 = real context)
        val_step = data.step[data.val_rows]
        assert data.predictions is not None  # _load_data sets it with step
        on_predictions = {
            **data.predictions,
            "keypoint_error_cm_by_step": [
                float(
                    translation_errors(
                        q_pred[val_step == k],
                        q_true[val_step == k],
                        k_pred[val_step == k],
                        k_true[val_step == k],
                        axes_per_keypoint=d,
                    )["keypoint_error_cm"].mean()
                )
                for k in range(int(val_step.max()) + 1)
            ],
        }
    return {
        "model": model_block,
        "mean_predictor": base_block,
        "ratio": {
            "joint": _ratio(model_block["joint_mae_deg"]["mean"], base_block["joint_mae_deg"]["mean"]),
            "keypoint": _ratio(model_block["keypoint_error_cm"]["mean"], base_block["keypoint_error_cm"]["mean"]),
        },
        "on_predictions": on_predictions,
        "eval_seconds": eval_seconds,
    }


def _best_epoch(history: Sequence[Mapping[str, Any]]) -> int | None:
    """The epoch of the lowest held-out loss (the first one on ties)."""
    losses = [r["val_total_loss"] for r in history]
    return int(history[int(np.argmin(losses))]["epoch"]) if losses else None


def _train(config: TranslatorConfig) -> dict[str, Any]:
    """The pipeline: data and model (no writes) -> run directory -> train -> evaluate."""
    t_begin = time.perf_counter()
    device = select_device(config.device)
    run_dir = runs.resolve_run_dir(COMMAND, out=config.out, name=config.name)
    runs.check_run_dir(run_dir, resume=False)
    configure_torch_threads(config.num_threads)
    data = _load_data(config)
    model, optimizer, scheduler = _build_model(config, data, device)
    _write_run_config(run_dir, config, data, model, device)

    console = stdout_console(quiet=not config.progress, highlight=False)
    writer = SummaryWriter(log_dir=str(run_dir / "logs"))
    task = TranslatorTask(config, data, model, optimizer, scheduler, device, writer)
    try:
        state = _fit(config, task, run_dir, console)
    finally:
        writer.flush()
        writer.close()
    result = _evaluate(model, data, config, device)
    eval_seconds = result.pop("eval_seconds")
    model_block, base_block = result["model"], result["mean_predictor"]
    history = [{k: v for k, v in r.items() if k not in ("global_step", "improved")} for r in state.history]
    metrics = {
        "command": COMMAND,
        "run_dir": str(run_dir),
        "data": data.data_location,
        **_run_record(data),
        **result,
        "memory": config.memory,
        "beats_mean_predictor": bool(
            model_block["joint_mae_deg"]["mean"] < base_block["joint_mae_deg"]["mean"]
            and model_block["keypoint_error_cm"]["mean"] < base_block["keypoint_error_cm"]["mean"]
        ),
        "definitions": DEFINITIONS,
        "num_train_episodes": int(len(data.train_episodes)),
        "num_val_episodes": int(len(data.val_episodes)),
        "num_train_frames": int(len(data.train_rows)),
        "num_val_frames": int(len(data.val_rows)),
        "num_parameters": int(sum(p.numel() for p in model.parameters())),
        "epochs_completed": state.epoch,
        "stopped_by_time_budget": state.stopped_early,
        "global_step": state.global_step,
        "best_epoch": _best_epoch(history),
        "history": history,
        "train_seconds": round(state.train_seconds, 3),
        "eval_seconds": round(eval_seconds, 3),
        "frames_per_second_eval": round(len(data.val_rows) / max(eval_seconds, 1e-9), 1),
        "wall_seconds": round(time.perf_counter() - t_begin, 3),
        "device": str(device),
    }
    runs.write_json(run_dir / runs.METRICS_NAME, metrics)
    return metrics


def _ratio(a: float, b: float) -> float | None:
    return float(a / b) if b > 0 else None


def print_translator_table(metrics: Mapping[str, Any], console: Any = None) -> None:
    """Print per-joint errors (degrees) and per-key-point errors (cm) of the model next to
    the mean predictor, as a rich table, and a one-line verdict."""
    console = console or stdout_console(highlight=False)
    table = Table(
        title=f"visfore train-translator: {metrics['env_id']}, {metrics['num_val_frames']} held-out frames "
        f"({metrics['num_val_episodes']} episodes)"
    )
    table.add_column("quantity")
    table.add_column("unit")
    table.add_column("model", justify="right")
    table.add_column("mean predictor", justify="right")
    table.add_column("model / mean", justify="right")
    for key, label, unit in (("joint_mae_deg", "joint", "deg"), ("keypoint_error_cm", "key point", "cm")):
        mine, base = metrics["model"][key], metrics["mean_predictor"][key]
        for name in mine:
            r = mine[name] / base[name] if base[name] > 0 else float("nan")
            style = "bold" if name == "mean" else None
            table.add_row(f"{label} {name}", unit, f"{mine[name]:.2f}", f"{base[name]:.2f}", f"{r:.3f}", style=style)
    console.print(table)
    verdict = "beats" if metrics["beats_mean_predictor"] else "does NOT beat"
    console.print(
        f"the translator {verdict} the mean predictor (joint error x{metrics['ratio']['joint']:.3f}, "
        f"key-point error x{metrics['ratio']['keypoint']:.3f}); {metrics['epochs_completed']} epochs in "
        f"{metrics['train_seconds']:.0f} s; run: {metrics['run_dir']}"
    )
