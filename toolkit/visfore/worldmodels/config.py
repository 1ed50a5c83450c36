"""The options of ``visfore train-model``, ``predict``, ``play-model`` and
``train-eval-all``, each declared once (:mod:`visfore.core.config`).

Imported by the CLI without torch (no torch or zarr import here); the pipelines are
:mod:`visfore.worldmodels.training`, :mod:`~visfore.worldmodels.predict`,
:mod:`~visfore.worldmodels.play_model` and :mod:`~visfore.worldmodels.train_eval_all`.
Common names: ``--out/-o``, ``--name``, ``--resume``, ``--quiet/-q`` (train-eval-all's
``--out-dir`` and ``--continue`` stay as deprecated spellings).
"""

from __future__ import annotations

import json
import math
from typing import Any, Literal, Optional

from visfore.core.config import ConfigBase, option
from visfore.core.device import NUM_THREADS_HELP, parse_device_spec
from visfore.core.errors import VisforeError

__all__ = [
    "DEFAULT_EPOCHS",
    "RUNTIME_OPTIONS",
    "PlayModelConfig",
    "PredictConfig",
    "TrainConfig",
    "TrainEvalAllConfig",
    "parse_json_object",
    "validate_config",
]

#: Options that may change on ``--resume`` (they do not change the result).
RUNTIME_OPTIONS = ("resume", "device", "num_workers", "time_budget", "num_threads", "progress")
#: ``--epochs`` of a new run that does not give it (on ``--resume``: the run's own target).
DEFAULT_EPOCHS = 10


def parse_json_object(text: str | dict[str, Any]) -> dict[str, Any]:
    """Parse ``--model-kwargs``: a JSON object (``'{"lstm_channels": [32, 32]}'``).

    Raises:
        VisforeError: not JSON, or not an object.
    """
    if isinstance(text, dict):
        return text
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise VisforeError(f"--model-kwargs is not valid JSON ({exc.msg})") from None
    if not isinstance(value, dict):
        raise VisforeError("--model-kwargs must be a JSON object, e.g. '{\"lstm_channels\": [32, 32]}'")
    return value


class TrainConfig(ConfigBase, command="train-model"):
    """Every option of ``visfore train-model``: train an action-conditioned forward model
    and evaluate it open-loop on held-out episodes.

    ``--resume`` reads the other options from the run's ``config.yaml``; only the runtime
    options (:data:`RUNTIME_OPTIONS`) and ``epochs`` may change. ``epochs`` (None: the
    default, :data:`DEFAULT_EPOCHS`, for a new run; the run's own target on resume) is the
    run's total: on resume a target above the epochs already completed trains on to it
    (the history and ``metrics.json`` go on; the learning rate continues from its current
    value and decays to the schedule's end at the new total; the teacher-forcing schedule
    keeps its original span), and one at or below them trains nothing: the run is only
    evaluated again, after one line saying so.
    """

    data: Optional[str] = option(
        default=None,
        help="Visfore Zarr dataset (from `visfore collect`): a directory or a URL (s3://bucket/name.zarr).",
    )
    model: str = option(default="convlstm", help="Forward model name (visfore_models.MODELS).")
    model_kwargs: dict[str, Any] = option(
        help="JSON object of extra model options, e.g. '{\"lstm_channels\": [32, 32]}'.",
        default_factory=dict,
        parse=parse_json_object,
        metavar="JSON",
    )
    probe: Literal["none", "keypoints", "keypoints+velocities"] = option(
        default="none",
        help="keypoints: also train a read-out probe from a latent model's features (rssm, jepa) to the robot's key points and joint angles, from the dataset's states (on detached features unless --probe-weight > 0); keypoints+velocities: also the joint velocities (rad/s), so that with --probe-weight > 0 the latent carries the robot's momentum. The run is labelled state-supervised.",
    )
    probe_weight: float = option(
        default=0.0,
        help="With --probe: weight of the probe's loss in the world model's own loss; above 0 its gradient also trains the encoder and the predictor, on the features of the real frames and of the K imagined steps. 0 (default): a read-out on detached features; the world model trains exactly as without it.",
    )
    context: int = option(default=2, help="C context frames given to the model.")
    horizon: int = option(default=10, help="K frames predicted open-loop.")
    epochs: Optional[int] = option(
        default=None,
        help="Total training epochs (default 10). With --resume: the new total (more than the run has done trains on; default: the run's own).",
    )
    batch_size: int = option(default=16, help="Clips per optimisation step (per process under torchrun).")
    lr: float = option(default=1e-3, help="Adam learning rate.")
    lr_schedule: Literal["cosine", "constant"] = option(
        default="cosine", help="cosine (to 10%, after warm-up) or constant."
    )
    warmup_steps: int = option(default=20, help="Linear learning-rate warm-up steps.")
    weight_decay: float = option(default=0.0, help="Adam weight decay.")
    grad_clip: float = option(default=1.0, help="Max global gradient norm (0 = off).")
    sampling: Literal["open-loop", "teacher", "scheduled"] = option(
        default="open-loop",
        help="What the training rollout feeds back: open-loop (own predictions, like the evaluation), teacher (true frames) or scheduled (true frame with probability k/(k+exp(step/k)), Finn et al. 2016).",
    )
    sampling_k: Optional[float] = option(
        default=None,
        help="k of --sampling scheduled (Finn et al. used 900 over ~1e5 steps). Default: k ln k = total steps / 2, so the probability decays from ~1 to ~0 over this run and is 0.5 half-way.",
    )
    teacher_forcing: Optional[str] = option(
        default=None,
        help="Advanced alternative to --sampling: probability of feeding true frames, P, 'inverse-sigmoid:K' or 'linear:P0:P1[:STEPS]'. Evaluation is always open-loop.",
    )
    pad_short_episodes: bool = option(
        default=True,
        help="Episodes shorter than context + horizon frames give one clip padded at the end (last frame repeated, zero actions), masked out of the loss and metrics; off: they are left out.",
    )
    eval_samples: int = option(
        default=5,
        help="Samples per clip in the final evaluation of a stochastic model (mean over samples and best-of-N are reported).",
    )
    amp: Optional[bool] = option(
        default=None,
        help="Mixed precision: float16 autocast + GradScaler on CUDA, bfloat16 autocast on CPU. Default: on when training on CUDA, off on CPU.",
        flags=("--amp/--no-amp",),
    )
    seed: int = option(default=0, help="Seed of init, split, clip order and subsets.")
    val_fraction: float = option(default=0.1, help="Fraction of episodes held out for validation.")
    clip_stride: int = option(default=1, help="Rows between training clip starts in an episode.")
    max_train_clips: Optional[int] = option(default=None, help="Use a fixed seeded subset of training clips.")
    clips_per_epoch: Optional[int] = option(
        default=800,
        help="Training clips drawn per epoch (a fresh seeded draw each epoch, without replacement; split across processes under torchrun); 0 = every training clip.",
    )
    max_val_clips: Optional[int] = option(
        default=256, help="Evaluate on at most this many validation clips (seeded subset)."
    )
    epoch_val_clips: int = option(default=32, help="Validation clips scored after each epoch.")
    eval_batch_size: int = option(default=32, help="Clips per forward pass in evaluation.")
    image_clips: int = option(default=4, help="Validation clips drawn in each images/epoch_XXX.png (0 = no images).")
    out: Optional[str] = option(
        default=None, help="Run directory (default runs/train-model-<UTC time>).", flags=("--out", "-o")
    )
    name: Optional[str] = option(default=None, help="Run name: runs/train-model-NAME.")
    resume: bool = option(
        default=False, help="Continue the run in --out/--name from checkpoints/last.pt.", flags=("--resume",)
    )
    device: str = option(
        default="auto", help="auto, cpu, cuda or cuda:N (under torchrun: auto or cuda, one GPU per LOCAL_RANK)."
    )
    num_workers: int = option(default=0, help="DataLoader worker processes.")
    num_threads: Optional[int] = option(default=None, help=NUM_THREADS_HELP)
    time_budget: Optional[float] = option(
        default=None, help="Stop training after this many minutes (checkpointed), then evaluate."
    )
    progress: bool = option(
        default=True,
        help="Show the progress bar and the per-epoch table (--quiet: only the final summary).",
        flags=("--progress/--quiet", " /-q"),
    )


def _positive(name: str, value: Any, *, allow_none: bool = False, minimum: float = 1) -> None:
    if value is None and allow_none:
        return
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
        raise VisforeError(f"--{name} must be >= {minimum:g}, got {value}")


def validate_config(config: TrainConfig) -> None:
    """Check option ranges that do not need the dataset.

    Raises:
        VisforeError: the first bad option, naming its flag.
    """
    _positive("context", config.context)
    _positive("horizon", config.horizon)
    _positive("epochs", config.epochs, allow_none=True)
    _positive("batch-size", config.batch_size)
    _positive("clip-stride", config.clip_stride)
    _positive("eval-batch-size", config.eval_batch_size)
    _positive("epoch-val-clips", config.epoch_val_clips)
    _positive("eval-samples", config.eval_samples)
    _positive("max-train-clips", config.max_train_clips, allow_none=True)
    _positive("clips-per-epoch", config.clips_per_epoch, allow_none=True, minimum=0)
    _positive("max-val-clips", config.max_val_clips, allow_none=True)
    _positive("num-threads", config.num_threads, allow_none=True)
    _positive("image-clips", config.image_clips, minimum=0)
    _positive("num-workers", config.num_workers, minimum=0)
    _positive("warmup-steps", config.warmup_steps, minimum=0)
    if not (config.lr > 0 and math.isfinite(config.lr)):
        raise VisforeError(f"--lr must be > 0, got {config.lr}")
    if not (config.weight_decay >= 0 and config.grad_clip >= 0):
        raise VisforeError("--weight-decay and --grad-clip must be >= 0")
    if config.lr_schedule not in ("cosine", "constant"):
        raise VisforeError(f"--lr-schedule must be cosine or constant, got {config.lr_schedule!r}")
    if not 0.0 < config.val_fraction < 1.0:
        raise VisforeError(f"--val-fraction must be in (0, 1), got {config.val_fraction}")
    if config.time_budget is not None and not config.time_budget > 0:
        raise VisforeError(f"--time-budget must be > 0 minutes, got {config.time_budget}")
    if not isinstance(config.model_kwargs, dict):
        raise VisforeError("--model-kwargs must be a JSON object")
    from visfore.data.labels import PROBE_KINDS  # lazy, as the schedules below

    if config.probe not in PROBE_KINDS:
        raise VisforeError(f"--probe must be one of {', '.join(PROBE_KINDS)}, got {config.probe!r}")
    w = config.probe_weight
    if isinstance(w, bool) or not isinstance(w, (int, float)) or not (w >= 0 and math.isfinite(w)):
        raise VisforeError(f"--probe-weight must be a finite number >= 0, got {w!r}")
    if w > 0 and config.probe == "none":
        raise VisforeError(f"--probe-weight {w} needs --probe keypoints (there is no probe to weigh)")
    if "probe_dim" in config.model_kwargs:
        raise VisforeError(
            f"--model-kwargs probe_dim={config.model_kwargs['probe_dim']!r}: the probe is set by --probe keypoints "
            "(its size comes from the dataset's states); remove probe_dim"
        )
    # lazy: the CLI imports this config module at start-up; it stays as light as it is
    from visfore.worldmodels.schedules import SAMPLING_MODES, teacher_forcing_schedule

    if config.sampling not in SAMPLING_MODES:
        raise VisforeError(f"--sampling must be one of {', '.join(SAMPLING_MODES)}, got {config.sampling!r}")
    if config.sampling_k is not None:
        k = config.sampling_k
        if isinstance(k, bool) or not isinstance(k, (int, float)) or not (k > 0 and math.isfinite(k)):
            raise VisforeError(f"--sampling-k must be a number > 0, got {k!r}")
        if config.sampling != "scheduled":
            raise VisforeError(f"--sampling-k applies to --sampling scheduled only (got --sampling {config.sampling})")
    if config.teacher_forcing is not None:
        if config.sampling != "open-loop":
            raise VisforeError(
                f"give either --sampling ({config.sampling}) or --teacher-forcing ({config.teacher_forcing}), not both"
            )
        teacher_forcing_schedule(config.teacher_forcing, total_steps=1)
    for name in ("pad_short_episodes", "resume", "progress"):
        if not isinstance(getattr(config, name), bool):
            raise VisforeError(f"--{name.replace('_', '-')} must be a boolean, got {getattr(config, name)!r}")
    if config.amp is not None and not isinstance(config.amp, bool):
        raise VisforeError(f"--amp must be a boolean (or unset), got {config.amp!r}")
    parse_device_spec(config.device)


# ---------------------------------------------------------------------------------------


class PredictConfig(ConfigBase, command="predict"):
    """Every option of ``visfore predict``: open-loop rollout of a trained model on one
    episode with the episode's true actions (truth | prediction | difference animation)."""

    run: str = option(help="A `visfore train-model` run directory.", argument=True)
    episode: int = option(help="Episode index N in the dataset (0-based).")
    out: str = option(help="Animation to write: .gif (Pillow) or .mp4 (imageio + ffmpeg).", flags=("--out", "-o"))
    data: Optional[str] = option(
        default=None,
        help="Dataset directory or URL (s3://bucket/name.zarr); default: the one the model was trained on.",
    )
    start: int = option(default=0, help="Index T within the episode of the first context frame.")
    horizon: Optional[int] = option(default=None, help="K frames to predict (default: the rest of the episode).")
    checkpoint: Literal["best", "last"] = option(default="best", help="Checkpoint of the run to load.")
    fps: float = option(default=10.0, help="Animation frames per second.")
    scale: int = option(default=4, help="Integer nearest-neighbour upscaling of each panel.")
    sample_seed: Optional[int] = option(default=None, help="Seed of a stochastic model's sample.")
    device: str = option(default="cpu", help="cpu, auto, cuda or cuda:N.")
    quiet: bool = option(default=False, help="Do not print the per-step PSNR table.", flags=("--quiet", "-q"))


class PlayModelConfig(ConfigBase, command="play-model"):
    """Every option of ``visfore play-model``: drive a trained forward model as an
    environment (``LearnedSim-v0``) with the keyboard, a random or a trained policy."""

    run: str = option(help="A `visfore train-model` run directory.", argument=True)
    data: Optional[str] = option(
        default=None,
        help="Dataset of the initial frames, a directory or URL (s3://bucket/name.zarr); default: the model's training dataset.",
    )
    policy: str = option(
        default="keyboard",
        help="keyboard (a live window; arrows drive a[0], a[1]), random, or a train-policy run directory.",
    )
    steps: int = option(default=200, help="Env steps to play.")
    out: Optional[str] = option(
        default=None,
        help="GIF/MP4 of the frames; never overwritten (an existing file is an error). Default when no window opens: play-RUNNAME.gif in the current directory, or play-RUNNAME-1.gif, -2, ... when taken.",
        flags=("--out", "-o"),
    )
    seed: int = option(default=0, help="Seed of the first reset and of the random policy.")
    checkpoint: Literal["best", "last"] = option(default="best", help="Checkpoint of the run to load.")
    fps: float = option(default=10.0, help="Frames per second (window and animation).")
    scale: int = option(default=4, help="Integer upscaling of the frames.")
    device: str = option(default="cpu", help="cpu, auto, cuda or cuda:N.")
    headless: bool = option(default=False, help="Never open a window; write --out.", flags=("--headless",))
    quiet: bool = option(default=False, help="No messages (the result line only).", flags=("--quiet", "-q"))


class TrainEvalAllConfig(ConfigBase, command="train-eval-all"):
    """Every option of ``visfore train-eval-all``: train and evaluate every configuration
    of a sweep file (models x hyperparameters x seeds), then write a comparison report."""

    config: str = option(
        help="Sweep YAML: data, shared train-model options, models, hyperparameters, seeds.", flags=("--config", "-c")
    )
    out: str = option(
        default="runs",
        help="Parent directory of the sweep directory train-eval-all-NAME.",
        flags=("--out", "-o"),
        deprecated=("--out-dir",),
    )
    name: Optional[str] = option(default=None, help="Sweep name (default: the file's name:, else its stem).")
    data: Optional[str] = option(
        default=None, help="Dataset path or fsspec URL (s3://...); overrides the file's data:."
    )
    wandb: bool = option(
        default=False,
        help="Also log every run to Weights & Biases (needs the wandb package; WANDB_MODE=offline keeps it local).",
        flags=("--wandb",),
    )
    dry_run: bool = option(
        default=False, help="Print the expanded configurations and exit; writes nothing.", flags=("--dry-run",)
    )
    resume: bool = option(
        default=False,
        help="Continue an existing sweep: skip runs with metrics.json, resume runs with a checkpoint.",
        flags=("--resume",),
        deprecated=("--continue",),
    )
    quiet: bool = option(default=False, help="No per-run progress bars and tables.", flags=("--quiet", "-q"))
