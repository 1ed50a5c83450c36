"""``visfore train-model``: train an action-conditioned forward model on a visfore dataset.

Pipeline (:func:`train_model`; the options are :class:`~visfore.worldmodels.config.TrainConfig`,
the command is :mod:`visfore.cli.train_model`):

1. Validate every option and open the dataset *before* anything is written (bad input is
   a :class:`~visfore.core.errors.VisforeError`: one line, exit 2, nothing on disk touched).
2. Split the usable episodes into training and validation sets **by episode** (seeded,
   deterministic; stored in ``config.yaml``), load pixels into memory as uint8 once, and
   index every clip of ``C + K`` consecutive frames with its ``C + K - 1`` actions inside
   each episode (:mod:`visfore.worldmodels.training_data`, :mod:`visfore.data.clips`).
   Episodes of different lengths are fine: with ``pad_short_episodes`` (default) an
   episode shorter than ``C + K`` frames (but with at least ``C + 1``) gives one clip
   padded at the end (last frame repeated, zero actions) with a ``(K,)`` validity mask;
   the loss and every metric ignore the padded steps.
3. Train (:class:`ForwardModelTask` on the shared loop :class:`visfore.core.trainer.Trainer`)
   with Adam on the MSE of the ``K`` predicted frames (pixels in ``[0, 1]``, masked) plus
   the model's ``auxiliary_losses()`` (e.g. SVG-LP's ``beta * KL``, RSSM's ``kl`` and
   ``embed``, JEPA's ``prediction``, ``variance``, ``covariance``; each logged per step as
   ``train/aux/<key>`` and per epoch as ``train_aux_<key>``). After every optimizer step
   the trainer calls the model's ``after_optimizer_step()`` (JEPA's EMA target update).
   For latent models (``rssm``, ``jepa``) the returned frames in training are what the
   model trains its decoder on: RSSM's reconstructions (its posterior sees every frame),
   JEPA's decoding of detached predicted embeddings.
   ``--probe keypoints`` (latent models only; :mod:`visfore.data.labels`): the model gets
   a read-out head (``probe_dim`` = key-point coordinates + joint angles of the dataset's
   env), trained with ``probe_loss(observe(frames, actions), labels)`` on every real frame
   of each clip (each output's error divided by its spread over the training rows, joint
   angles' errors wrapped at pi, so metres and radians weigh alike): the features of the filtered states come without gradient (and from
   their own seeded RNG draws), the head's gradient is clipped apart from the model's, so
   every other weight ends exactly as without the probe. ``--probe-weight W > 0`` instead
   adds ``W`` times the probe's MSE over the real frames' features and the ``K`` imagined
   ones, with gradient, to the world model's loss: the encoder and the predictor learn to
   carry the key points forward (what a planner's key-point cost reads). The run is labelled
   ``state-supervised (probe: keypoints)`` (``self-supervised`` otherwise) in
   ``config.yaml``, ``metrics.json`` and the printed table.
   Inputs fed back during the rollout follow ``--sampling`` (:mod:`visfore.worldmodels.schedules`):
   ``open-loop`` (default, like the evaluation), ``teacher`` (always the true frame) or
   ``scheduled`` (Finn et al. 2016's inverse-sigmoid scheduled sampling). Mixed precision
   (``--amp``) uses ``torch.autocast`` (float16 + ``GradScaler`` on CUDA, bfloat16 on CPU).
   After each epoch: open-loop validation on a fixed subset of validation clips, a
   prediction grid ``images/epoch_XXX.png``, TensorBoard scalars and images under
   ``logs/``, ``checkpoints/last.pt`` and (when the validation MSE improved)
   ``checkpoints/best.pt``, both written atomically (:mod:`visfore.worldmodels.checkpoint`).
4. Evaluate the final model (the weights of ``checkpoints/last.pt``) open-loop on the
   held-out validation episodes (:func:`visfore.worldmodels.evaluation.evaluate_open_loop`),
   per horizon step, next to the copy-last-frame and mean-frame baselines and the same
   model fed shuffled actions (latent models also in latent space: the action
   sensitivity of the imagined features and the probe's key-point error per step, in cm);
   write ``metrics.json``. (The command prints the table,
   :func:`visfore.worldmodels.report.print_metrics_table`.)

``--resume`` continues a run from ``checkpoints/last.pt`` exactly: the options come from
the run's ``config.yaml``, and model, optimizer, LR scheduler, AMP grad scaler, the loop's
counters (:class:`~visfore.core.trainer.TrainState`), the scheduled-sampling position and
every RNG state (of every rank) from the checkpoint. The order of training clips in epoch
``e`` is a pure function of ``(seed, e)``, so a run stopped mid-epoch (``--time-budget``,
Ctrl-C) resumes at the very batch where it stopped and ends with the same weights as an
uninterrupted run (same device, CPU threads and processes, up to the nondeterminism of
some CUDA kernels). ``--epochs`` given with ``--resume`` is the run's new total: above the
epochs done training goes on to it (the LR schedule continued from where it is,
:func:`~visfore.worldmodels.schedules.extend_lr_schedule`); at or below them nothing is
trained and the run is only evaluated again (``metrics["session"]["evaluate_only"]``).

**Multi-process (DDP).** Under ``torchrun --nproc-per-node N visfore train-model ...``
every process trains a ``DistributedDataParallel`` replica (:mod:`visfore.worldmodels.distributed`).
Each epoch's seeded clip order is split across ranks like ``DistributedSampler``;
``--batch-size`` is per process. Rank 0 alone writes the run directory and runs the
evaluations; ``metrics.json`` records a SHA-256 of every rank's final weights.

**Python API**::

    from visfore.worldmodels.training import train_model
    from visfore.worldmodels.config import TrainConfig
    metrics = train_model(TrainConfig(data="data/reacher.zarr", model="cdna", epochs=5))
    metrics = train_model({"data": "data/reacher.zarr", "model": "cdna", "epochs": 5})

It returns the content of ``metrics.json``, raises
:class:`~visfore.core.errors.VisforeError` for bad input, prints nothing (notes go to
``logging``) and leaves the process's torch thread count as it found it. On ranks other
than 0 it returns ``{"rank", "world_size", "run_dir", "weights_sha256"}``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import random
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence, Union

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.tensorboard import SummaryWriter

import visfore_models
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
from visfore.data.clips import dataset_mean_frame, frames_to_float
from visfore.data.envs import check_keyword_values, keyword_parameters, unknown_keys_error
from visfore.data.labels import StateLabels, dataset_state_labels
from visfore.worldmodels import checkpoint as ckpt_io
from visfore.worldmodels import distributed as ddp
from visfore.worldmodels.config import DEFAULT_EPOCHS, RUNTIME_OPTIONS, TrainConfig, validate_config
from visfore.worldmodels.evaluation import (
    FOREGROUND_THRESHOLD,
    EvalOptions,
    ProbeTargets,
    evaluate_open_loop,
    json_float,
    nanmean,
    prediction_grid,
    save_png,
)
from visfore.worldmodels.records import COMMAND, config_record, metrics_record
from visfore.worldmodels.schedules import extend_lr_schedule, lr_lambda, resolve_sampling
from visfore.worldmodels.training_data import (
    TrainingData,
    min_episode_frames,
    open_and_check_dataset,
    prepare_data,
    split_usable_episodes,
)
from visfore_models import build_model, load_model, model_state
from visfore_models.metrics import METRIC_DEFINITIONS

__all__ = ["ForwardModelTask", "Precision", "reconstruction_loss", "resolve_resume", "train_model"]

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------
# entry point and preparation (no writes)
# ---------------------------------------------------------------------------------------
def train_model(config: Union[TrainConfig, Mapping[str, Any]]) -> dict[str, Any]:
    """Train and evaluate a forward model; write a run directory; return the metrics.

    Args:
        config: a :class:`TrainConfig` or a mapping of its fields (see
            :meth:`TrainConfig.from_dict`); every CLI option is a field.

    Returns:
        The content of ``metrics.json`` (open-loop, held-out episodes, data range 1.0):
        ``model``, ``copy_last_frame``, ``mean_frame``, ``shuffled_actions`` (and
        ``best_of_n`` for stochastic models): per-horizon-step lists ``mse``, ``psnr``,
        ``ssim``, ``foreground_psnr`` (and ``lpips``) and their ``mean``;
        ``beats_copy_last_frame``, ``beats_mean_frame``, ``action_sensitivity``, ``lpips``,
        ``definitions``, ``padding``, ``valid_clips_per_step``, ``sampling``, ``amp``,
        ``distributed``; counts and times (``num_val_clips``, ``num_train_clips``,
        ``num_parameters``, ``train_seconds``, ``samples_per_second``,
        ``inference_frames_per_second``, ``eval_seconds``, ``wall_seconds``,
        ``epochs_completed``, ``global_step``, ``history``, ``run_dir``); ``supervision``;
        latent models: ``latent_action_sensitivity`` and, with ``--probe``, ``probe``
        (:func:`visfore.worldmodels.records.latent_records`).
        On a torchrun rank other than 0: ``{"rank", "world_size", "run_dir", "weights_sha256"}``.

    Raises:
        VisforeError: bad options or dataset (before anything is written), an existing
            run directory without ``resume``, a missing checkpoint with ``resume``, or a
            diverged training (non-finite loss).
    """
    if isinstance(config, Mapping):
        config = TrainConfig.from_dict(config)
    elif not isinstance(config, TrainConfig):
        raise VisforeError(f"train_model needs a TrainConfig or a mapping, got {type(config).__name__}")
    parse_device_spec(config.device)
    with restoring_torch_threads():  # the API must not leave the process changed
        dist = ddp.setup_distributed(config.device)
        try:
            return _train_model(config, dist)
        finally:
            ddp.teardown(dist)


def _train_model(config: TrainConfig, dist: ddp.Dist) -> dict[str, Any]:
    t_begin = time.monotonic()
    # everything that can fail on bad input, on every rank, before any write
    failure: BaseException | None = None
    try:
        if config.resume and config.out is None and config.name is None:
            raise VisforeError("--resume needs the run directory: pass --out DIR or --name NAME")
        run_dir = runs.resolve_run_dir(COMMAND, out=config.out, name=config.name)
    except BaseException as exc:  # noqa: BLE001 - re-raised on every rank below
        failure, run_dir = exc, Path(".")
    ddp.agree_on_errors(dist, failure)
    run_dir = Path(ddp.broadcast_object(dist, str(run_dir)))  # one timestamped name for all ranks
    prep: Prep | None = None
    try:
        prep = prepare(config, dist, run_dir)
    except BaseException as exc:  # noqa: BLE001
        failure = exc
    ddp.agree_on_errors(dist, failure)
    assert prep is not None
    return _run(prep, dist, t_begin)


def resolve_resume(config: TrainConfig, run_dir: Path) -> tuple[TrainConfig, list[str]]:
    """Options of a resumed run: the saved ones, with the runtime options of ``config``
    and its ``epochs`` when given (not None: the new target; :func:`prepare` checks it
    against the epochs done); and the options given now that the run ignores
    (``--lr 0.1 (run uses 0.001)``)."""
    saved = runs.read_config(run_dir)
    options = saved.get("options")
    if not isinstance(options, dict):
        raise VisforeError(f"{run_dir / runs.CONFIG_NAME} has no 'options' section")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    merged = TrainConfig(**{k: v for k, v in options.items() if k in known})
    if "teacher_forcing" in options and "sampling" not in options and options["teacher_forcing"] in ("0", 0):
        merged.teacher_forcing = None  # a run of the version before --sampling: "0" = open-loop
    if config.data is not None and merged.data is not None and not storage.same_location(config.data, merged.data):
        raise VisforeError(
            f"--data {config.data} differs from the run's dataset {merged.data}; omit --data when resuming"
        )
    defaults = TrainConfig()
    ignored = []
    for f in dataclasses.fields(TrainConfig):
        if f.name in RUNTIME_OPTIONS or f.name in ("data", "out", "name", "epochs"):
            continue
        mine, theirs = getattr(config, f.name), getattr(merged, f.name)
        if mine != theirs and mine != getattr(defaults, f.name):
            ignored.append(f"--{f.name.replace('_', '-')} {mine} (run uses {theirs})")
    for key in RUNTIME_OPTIONS:
        setattr(merged, key, getattr(config, key))
    if merged.epochs is None:  # not recorded (cannot happen for runs of this version)
        merged.epochs = DEFAULT_EPOCHS
    if config.epochs is not None:
        merged.epochs = config.epochs
    merged.out, merged.name = str(run_dir), None
    return merged, ignored


@dataclass
class Prep:
    """Everything :func:`prepare` checked and built before the first write."""

    config: TrainConfig
    run_dir: Path
    ignored: list[str]
    device: Any
    ds: Any
    data: TrainingData
    model: Any
    num_threads: Optional[int]
    start_ckpt: Optional[dict[str, Any]]
    definitions: dict[str, str]
    #: On resume: the run's saved target (``epochs`` of config.yaml) and whether this
    #: session only evaluates (the target is not above the epochs done).
    saved_epochs: Optional[int] = None
    evaluate_only: bool = False
    #: ``--probe keypoints``: every dataset row's labels (key points m, joint angles rad)
    labels: Optional[StateLabels] = None

    @property
    def probe(self) -> Optional[ProbeTargets]:
        """The probe's targets for :class:`EvalOptions` (None without ``--probe``)."""
        return None if self.labels is None else ProbeTargets(self.labels.values, self.labels.layout)


def _device(config: TrainConfig, dist: ddp.Dist) -> torch.device:
    if dist.enabled and dist.backend == "nccl":
        return torch.device("cuda", dist.local_rank)
    if dist.enabled:
        return torch.device("cpu")
    return select_device(config.device)


def check_model_kwargs(config: TrainConfig) -> None:
    """Check ``--model-kwargs`` against the model class's constructor: an unknown key is one
    line listing the valid keys with types and defaults (``action_dim``, ``image_size``
    and ``probe_dim`` are set by train-model itself), a value of the wrong plain type one
    line naming key, value and type.

    Raises:
        VisforeError: as above.
    """
    cls = visfore_models.MODELS[config.model]
    params, is_open = keyword_parameters(cls, skip=("action_dim", "image_size", "probe_dim"))
    try:
        if not is_open:
            problem = unknown_keys_error(config.model_kwargs, params)
            if problem is not None:
                raise VisforeError(problem)
        check_keyword_values(config.model_kwargs, params)
    except VisforeError as exc:
        raise VisforeError(f"--model-kwargs of {config.model}: {exc}") from None


def _build_model(config: TrainConfig, ds: Any, dist: ddp.Dist, probe_dim: int = 0) -> Any:
    H, W, _ = ds.frame_shape
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    kwargs = dict(config.model_kwargs)
    if probe_dim:
        kwargs["probe_dim"] = probe_dim
    try:
        model = build_model(config.model, action_dim=ds.action_dim, image_size=(H, W), **kwargs)
    except (TypeError, ValueError) as exc:
        raise VisforeError(f"cannot build model {config.model!r}: {exc}".splitlines()[0]) from None
    if dist.rank > 0:  # own teacher-forcing / latent draws per rank (rank 0 keeps the 1-process stream)
        torch.manual_seed(config.seed * 1_000_003 + dist.rank)
        random.seed(config.seed * 1_000_003 + dist.rank)
    elif getattr(model, "latent", False):
        # latent models: the training draws (RSSM's samples) start from their own seed, so
        # the probe head, initialised last, does not shift them (--probe leaves the world
        # model as it is without one); pixel models keep the stream after their init
        torch.manual_seed(config.seed * 1_000_003)
    return model


def prepare(config: TrainConfig, dist: ddp.Dist, run_dir: Path) -> Prep:
    """Validate, open the dataset, build the model, read the checkpoint: no writes."""
    runs.check_run_dir(run_dir, resume=config.resume)
    ignored: list[str] = []
    saved_epochs: int | None = None
    if config.resume:
        requested = config.epochs
        config, ignored = resolve_resume(config, run_dir)
        saved_epochs = int(runs.read_config(run_dir)["options"].get("epochs") or DEFAULT_EPOCHS)
    elif config.epochs is None:
        config = dataclasses.replace(config, epochs=DEFAULT_EPOCHS)
    validate_config(config)
    if config.model not in visfore_models.MODELS:
        raise VisforeError(f"unknown model {config.model!r}; valid: {', '.join(sorted(visfore_models.MODELS))}")
    check_probe_model(config)
    check_model_kwargs(config)
    device = _device(config, dist)
    ds = open_and_check_dataset(config)
    train_eps, val_eps, excluded = split_usable_episodes(config, ds)
    labels = dataset_state_labels(ds, config.probe) if config.probe != "none" else None
    model = _build_model(config, ds, dist, probe_dim=labels.layout.dim if labels is not None else 0)
    num_threads = None
    if device.type == "cpu":
        num_threads = configure_torch_threads(config.num_threads, divide_by=dist.world_size)
    else:
        torch.backends.cudnn.benchmark = True
    start_ckpt: dict[str, Any] | None = None
    evaluate_only = False
    if config.resume:
        path = runs.last_checkpoint_path(run_dir)
        start_ckpt = runs.load_checkpoint(path)
        ckpt_io.check_checkpoint(start_ckpt, path, dist.world_size, run_dir)
        assert saved_epochs is not None
        config, evaluate_only = _resume_target(config, requested, saved_epochs, int(start_ckpt["epoch"]), run_dir)
    data = prepare_data(config, ds, train_eps, val_eps, excluded)
    model.to(device)
    return Prep(
        config,
        run_dir,
        ignored,
        device,
        ds,
        data,
        model,
        num_threads,
        start_ckpt,
        dict(METRIC_DEFINITIONS),
        saved_epochs=saved_epochs,
        evaluate_only=bool(config.resume and evaluate_only),
        labels=labels,
    )


def latent_model_names() -> list[str]:
    """The registered latent models (``latent = True``: ``rssm``, ``jepa``), sorted."""
    return sorted(name for name, cls in visfore_models.MODELS.items() if getattr(cls, "latent", False))


def check_probe_model(config: TrainConfig) -> None:
    """``--probe`` needs a latent model (a probe reads a latent state; a pixel model's
    state is its frames).

    Raises:
        VisforeError: one line naming the model and the latent ones.
    """
    if config.probe != "none" and not getattr(visfore_models.MODELS[config.model], "latent", False):
        raise VisforeError(
            f"--probe {config.probe} needs a latent model ({', '.join(latent_model_names())}); "
            f"{config.model} is a pixel model"
        )


def _resume_target(
    config: TrainConfig, requested: int | None, saved_epochs: int, done: int, run_dir: Path
) -> tuple[TrainConfig, bool]:
    """The epoch target of a resumed run that has completed ``done`` epochs, and whether
    there is nothing to train (evaluate only). ``requested`` (``--epochs`` given now, or
    None) above ``done`` is the new target; at or below it nothing is trained and the
    run keeps its own target (``saved_epochs``); one line says so (a warning when
    ``--epochs`` asked for it, a note for a finished run resumed without it)."""
    if config.epochs is not None and config.epochs > done:
        return config, False
    if requested is not None and requested != saved_epochs:
        log.warning(
            "--epochs %d: %s has already trained %d epoch(s); nothing to train, evaluating only "
            "(pass --epochs above %d to train on)",
            requested,
            run_dir,
            done,
            done,
        )
    else:
        log.info("%s already finished %d/%d epochs; evaluating only", run_dir, done, saved_epochs)
    return dataclasses.replace(config, epochs=saved_epochs), True


# ---------------------------------------------------------------------------------------
# the task: one optimisation step, the end-of-epoch validation, the checkpoint
# ---------------------------------------------------------------------------------------
@dataclass
class Precision:
    """Mixed precision of a run: autocast dtype (None: off) and the CUDA grad scaler."""

    enabled: bool
    dtype: Any
    scaler: Any
    requested: Optional[bool]

    @classmethod
    def for_device(cls, requested: Optional[bool], device: torch.device) -> Precision:
        """float16 + GradScaler on CUDA, bfloat16 on CPU; on by default on CUDA only."""
        enabled = (device.type == "cuda") if requested is None else bool(requested)
        dtype = (torch.float16 if device.type == "cuda" else torch.bfloat16) if enabled else None
        scaler = torch.amp.GradScaler("cuda") if enabled and device.type == "cuda" else None
        return cls(enabled, dtype, scaler, requested)

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager[Any]:
        return torch.autocast(device_type=device.type, dtype=self.dtype) if self.enabled else contextlib.nullcontext()

    def record(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "dtype": str(self.dtype).replace("torch.", "") if self.dtype is not None else None,
            "grad_scaler": self.scaler is not None,
            "requested": self.requested,
        }


def reconstruction_loss(pred: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Training MSE of ``(B, K, 3, H, W)`` predictions on ``[0, 1]`` (computed in float32).

    Without ``mask`` (every step real): ``F.mse_loss(pred, targets)``, the mean over all
    pixels. With a ``(B, K)`` bool ``mask``: the mean over the valid frames of the per-frame
    MSE (= the mean over their pixels); padded frames contribute neither value nor gradient.
    """
    pred = pred.float()
    if mask is None:
        return torch.nn.functional.mse_loss(pred, targets)
    return (pred - targets).pow(2).mean(dim=(2, 3, 4))[mask].mean()


def _aux_losses(model: Any) -> dict[str, Any]:
    """The model's extra loss terms of its last forward pass (``{}`` if it has none)."""
    fn = getattr(model, "auxiliary_losses", None)
    losses = fn() if callable(fn) else {}
    return dict(losses) if losses else {}


def _probe_loss_weights(prep: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """The probe loss's ``(P,)`` float32 divisors, each output's standard deviation over the
    training episodes' rows (floored at 1e-3), so that metres and radians weigh alike (raw,
    the joint angles' radians would outweigh the key points' metres about 60 to 1), and its
    ``(P,)`` bool mask of joint angles, whose errors wrap around at pi."""
    labels, source = prep.labels, prep.data.train.source
    rows = np.concatenate(
        [
            np.arange(source.episode_starts[e], source.episode_starts[e] + source.episode_lengths[e])
            for e in prep.data.train_episodes
        ]
    )
    std = torch.from_numpy(labels.values[rows].std(axis=0).astype(np.float32)).clamp_min(1e-3)
    angular = torch.zeros(labels.layout.dim, dtype=torch.bool)
    angular[labels.layout.joint_slice] = True
    return std, angular


def _probe_seed(seed: int, step: int, rank: int) -> int:
    """The torch seed of the probe's filtering pass at optimisation step ``step`` (a pure
    function of the run's seed, the step and the rank, so a resumed run draws the same)."""
    return (int(seed) * 1_000_003 + int(step) * 7919 + int(rank) * 104_729 + 0x9B0E) % 2**63


def _epoch_order(n: int, clips_per_epoch: int | None, seed: int, epoch: int) -> np.ndarray:
    """Training clip order of epoch ``epoch``: a permutation of ``range(n)`` (first
    ``clips_per_epoch`` of it), a pure function of ``(n, seed, epoch)``."""
    perm = np.random.default_rng([int(seed), int(epoch), 0x7C1F]).permutation(n)
    return perm[:clips_per_epoch] if clips_per_epoch else perm


class ForwardModelTask(TrainTask):
    """The :class:`~visfore.core.trainer.TrainTask` of ``train-model``.

    ``state.extra`` holds ``sampling_step`` (the scheduled-sampling position),
    ``mse_sum`` (the unfinished epoch's reconstruction-MSE sum) and ``aux_sums`` (per
    auxiliary-loss key, and ``probe`` for the probe loss, the unfinished epoch's sum over
    clips; the epoch record has their means as ``train_aux_<key>`` and
    ``train_probe_loss``). ``lr_schedule`` is the
    keyword arguments of :func:`~visfore.worldmodels.schedules.lr_lambda` (``schedule``,
    ``warmup_steps``, ``total_steps``, ``from_step``, ``from_factor``);
    ``sampling_steps`` the span of the teacher-forcing schedule (the run's first target:
    a new ``--epochs`` on resume does not move it).
    """

    def __init__(
        self,
        prep: Prep,
        dist: ddp.Dist,
        *,
        precision: Precision,
        lr_schedule: Mapping[str, Any],
        sampling_steps: int,
        sampling_k: float | None,
        writer: Any,
    ) -> None:
        config, model = prep.config, prep.model
        self.prep, self.config, self.dist, self.model = prep, config, dist, model
        self.device, self.data, self.precision, self.writer = prep.device, prep.data, precision, writer
        self.world_size = dist.world_size
        self.net: Any = model
        if dist.enabled:
            self.net = DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        self.optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        #: The LR schedule (keyword arguments of lr_lambda; saved in every checkpoint).
        self.lr_schedule = dict(lr_schedule)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lr_lambda(
                str(lr_schedule["schedule"]),
                int(lr_schedule["warmup_steps"]),
                int(lr_schedule["total_steps"]),
                from_step=lr_schedule.get("from_step"),
                from_factor=lr_schedule.get("from_factor"),
            ),
        )
        self.sampling_record, self.tf_prob = resolve_sampling(config, total_steps=sampling_steps, k=sampling_k)
        self.sampling_record["total_steps"] = sampling_steps
        self.val_subset = np.sort(
            np.random.default_rng([config.seed, 0x5A1]).permutation(len(self.data.val))[: config.epoch_val_clips]
        )
        #: ``--probe``: (N, P) float32 labels of every dataset row, on the CPU
        self.labels = None if prep.labels is None else torch.from_numpy(prep.labels.values)
        #: the probe loss's (P,) divisors and angle mask (:meth:`_probe_loss`), or None
        self.probe_scale: torch.Tensor | None = None
        self.probe_angular: torch.Tensor | None = None
        if prep.labels is not None:
            self.probe_scale, self.probe_angular = _probe_loss_weights(prep)
        head = getattr(model, "probe_head", None)
        probe_ids = {id(p) for p in head.parameters()} if head is not None else set()
        #: the probe head's parameters and the others: clipped apart, so the probe's
        #: gradient never rescales the world model's step (it trains on detached features)
        self.probe_params = [p for p in model.parameters() if id(p) in probe_ids]
        self.model_params = [p for p in model.parameters() if id(p) not in probe_ids]
        # This trainer calls after_optimizer_step() after every step from the first one on:
        # said before the first step, so a resumed run updates exactly as an uninterrupted one.
        model.expect_after_optimizer_step()

    def restore(self, ckpt: Mapping[str, Any]) -> TrainState:
        """Load model, optimiser, schedules and this rank's RNG state; return the counters."""
        self.model.load_state_dict(load_model(ckpt["model"], device=self.device).state_dict())
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if self.precision.scaler is not None and ckpt.get("scaler"):
            self.precision.scaler.load_state_dict(ckpt["scaler"])
        per_rank = ckpt.get("rng_per_rank")
        ckpt_io.set_rng_state(per_rank[self.dist.rank] if per_rank else ckpt["rng"])
        return ckpt_io.train_state(ckpt)

    # -- the loop's hooks ------------------------------------------------------------------
    def epoch_batches(self, state: TrainState) -> Sequence[Any]:
        order = _epoch_order(len(self.data.train), self.config.clips_per_epoch, self.config.seed, state.epoch)
        mine = ddp.shard(order, self.dist.rank, self.dist.world_size)
        return [mine[i : i + self.config.batch_size] for i in range(0, len(mine), self.config.batch_size)]

    def iterate(self, batches: Sequence[Any], state: TrainState) -> Iterable[Any]:
        return torch.utils.data.DataLoader(
            self.data.train,
            sampler=batches,
            batch_size=None,
            num_workers=self.config.num_workers,
            pin_memory=self.device.type == "cuda",
            # its own generator: creating the iterator must not draw from the global RNG
            # (teacher forcing uses it), or a resumed run would diverge
            generator=torch.Generator().manual_seed(self.config.seed * 1_000_003 + state.epoch),
        )

    def train_step(self, batch: Any, state: TrainState) -> StepResult:
        device, C = self.device, self.config.context
        frames = frames_to_float(batch["frames"].to(device, non_blocking=True))
        actions = batch["actions"].to(device, non_blocking=True)
        mask = None if bool(batch["mask"].all()) else batch["mask"].to(device, non_blocking=True)
        context, targets = frames[:, :C], frames[:, C:]
        p = self.tf_prob(state.extra["sampling_step"])
        with self.precision.autocast(device):
            # targets always: stochastic models' inference networks use them in training;
            # with p = 0 they never feed a deterministic model
            pred = self.net(context, actions, targets=targets, teacher_forcing_prob=p)
            aux = _aux_losses(self.model)
            probe = self._probe_loss(frames, actions, batch, state.global_step) if self.labels is not None else None
        recon = reconstruction_loss(pred, targets, mask)
        loss = recon
        for term in aux.values():
            loss = loss + term.float()
        # a detached probe's gradient reaches its head only: its scale does not matter there
        probe_factor = self.config.probe_weight if self.config.probe_weight > 0 else 1.0
        self._optimise(loss if probe is None else loss + probe_factor * probe)
        value = float(loss.detach())
        mse_value = float(recon.detach()) if aux else value
        aux_values = {k: float(v.detach()) for k, v in sorted(aux.items())}
        if probe is not None:
            aux_values["probe"] = float(probe.detach())
        if self.dist.enabled:
            reduced = ddp.sum_across_ranks(self.dist, [value, mse_value, *aux_values.values()], device)
            value, mse_value = reduced[0] / self.world_size, reduced[1] / self.world_size
            aux_values = {k: v / self.world_size for k, v in zip(aux_values, reduced[2:])}
        if not (math.isfinite(value) and math.isfinite(aux_values.get("probe", 0.0))):
            raise VisforeError(
                f"training diverged: loss is {value} (probe loss {aux_values.get('probe')}) at step "
                f"{state.global_step}; try a lower --lr" + (" or --no-amp" if self.precision.enabled else "")
            )
        state.extra["sampling_step"] += 1
        n = len(batch["start"])
        state.extra["mse_sum"] += mse_value * n
        sums = state.extra.setdefault("aux_sums", {})
        for key, v in aux_values.items():
            sums[key] = sums.get(key, 0.0) + v * n
        return StepResult(loss=value, samples=n, scalars=self._step_scalars(p, mse_value, aux_values))

    def _probe_loss(
        self, frames: torch.Tensor, actions: torch.Tensor, batch: Mapping[str, Any], step: int
    ) -> torch.Tensor:
        """``model.probe_loss`` against the rows' labels: a float32 scalar (padded frames of
        short-episode clips are left out).

        ``--probe-weight 0``: on the filtered features of every real frame of the clips
        (``observe`` over ``o_0..o_{C+K-1}``, without gradient), so the gradient reaches the
        probe head only. ``--probe-weight W > 0``: one MSE over those features *and* the
        ``K`` imagined ones (``imagine`` from the filtered state after the context under the
        clip's actions, the features a planner's key-point cost reads), all with gradient, so the
        encoder and the predictor learn to carry the key points (the caller weighs it by W).
        """
        C = self.config.context
        model, labels_all = self.model, self.labels
        assert labels_all is not None  # the caller's condition
        into_model = self.config.probe_weight > 0
        T = frames.shape[1]
        devices = [frames.device] if frames.device.type == "cuda" else []
        with torch.set_grad_enabled(into_model), torch.random.fork_rng(devices=devices):
            # its own seeded draws (RSSM samples its posterior): the training stream, and
            # so the world model, is the same with and without a detached probe
            torch.manual_seed(_probe_seed(self.config.seed, step, self.dist.rank))
            states = model.filter_states(frames, actions[:, : T - 1])  # one pass, o_0..o_{C+K-1}
            feats = torch.stack([model.features(s) for s in states], dim=1)  # (B, C + K, F)
            if into_model:  # from the state after the context, as init_state would give it
                imagined, _ = model.imagine(states[C - 1], actions[:, C - 1 : T - 1], decode=False)  # (B, K, F)
        starts = batch["start"].cpu()
        ends = torch.from_numpy(self.data.train.source.episode_starts + self.data.train.source.episode_lengths)[
            batch["episode"].cpu()
        ]
        rows = starts[:, None] + torch.arange(T)
        valid = rows < ends[:, None]  # context frames always; targets where the mask is True
        labels = labels_all[torch.minimum(rows, ends[:, None] - 1)].to(feats.device)
        valid = valid.to(feats.device)
        assert bool(valid[:, :C].all())
        weights = {"scale": self.probe_scale, "angular": self.probe_angular}
        if not into_model:
            return model.probe_loss(feats[valid], labels[valid], **weights)
        ahead = valid[:, C:]
        return model.probe_loss(
            torch.cat([feats[valid], imagined[ahead]]),
            torch.cat([labels[valid], labels[:, C:][ahead]]),
            detach=False,
            **weights,
        )

    def _optimise(self, loss: torch.Tensor) -> None:
        clip, scaler = self.config.grad_clip, self.precision.scaler
        self.optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            if clip > 0:
                scaler.unscale_(self.optimizer)
                self._clip_gradients(clip)
            scaler.step(self.optimizer)
            scaler.update()
        else:
            loss.backward()
            if clip > 0:
                self._clip_gradients(clip)
            self.optimizer.step()
        # parameters outside the optimizer (JEPA's EMA target encoder) follow the step
        self.model.after_optimizer_step()
        with warnings.catch_warnings():  # GradScaler may skip a step (inf grads)
            warnings.simplefilter("ignore", UserWarning)
            self.scheduler.step()

    def _clip_gradients(self, clip: float) -> None:
        """Clip the global gradient norm of the world model to ``clip`` and, apart from it,
        that of the probe head (a model without a probe: all parameters, as always)."""
        torch.nn.utils.clip_grad_norm_(self.model_params, clip)
        if self.probe_params:
            torch.nn.utils.clip_grad_norm_(self.probe_params, clip)

    def _step_scalars(self, p: float, mse_value: float, aux_values: dict[str, float]) -> dict[str, float]:
        scalars = {"train/lr": float(self.scheduler.get_last_lr()[0])}
        if aux_values:
            scalars["train/reconstruction_mse"] = mse_value
            scalars.update({f"train/aux/{k}": v for k, v in aux_values.items() if k != "probe"})
        if "probe" in aux_values:
            scalars["train/probe_loss"] = aux_values["probe"]
        if p > 0 or self.sampling_record["mode"] == "scheduled":
            scalars["train/teacher_forcing_prob"] = p
        if self.precision.scaler is not None:
            scalars["train/amp_scale"] = float(self.precision.scaler.get_scale())
        return scalars

    def end_epoch(self, state: TrainState) -> dict[str, Any]:
        """Validation on the fixed subset and the prediction grid (rank 0 only)."""
        train_mse = state.extra["mse_sum"] / max(state.loss_count, 1)
        state.extra["mse_sum"] = 0.0
        aux_means = {k: v / max(state.loss_count, 1) for k, v in sorted(state.extra.pop("aux_sums", {}).items())}
        if not self.dist.is_main:
            return {}
        config = self.config
        val = evaluate_open_loop(
            self.model,
            self.data.val,
            device=self.device,
            options=EvalOptions(
                batch_size=config.eval_batch_size,
                indices=self.val_subset,
                shuffle_seed=None,
                baseline=True,
                keep_first=config.image_clips,
                samples=1,
                foreground_threshold=None,
                amp_dtype=self.precision.dtype,
                seed=config.seed,
                probe=self.prep.probe,
            ),
        )
        record = {
            "train_mse": train_mse,
            **{("train_probe_loss" if k == "probe" else f"train_aux_{k}"): v for k, v in aux_means.items()},
            "val_mse": nanmean(val["model"]["mse"]),
            "val_psnr": nanmean(val["model"]["psnr"]),
            "val_ssim": nanmean(val["model"]["ssim"]),
            "val_copy_last_frame_psnr": nanmean(val["copy_last_frame"]["psnr"]),
            "val_copy_last_frame_ssim": nanmean(val["copy_last_frame"]["ssim"]),
            "teacher_forcing_prob": self.tf_prob(max(0, state.extra["sampling_step"] - 1)),
            "train_seconds": state.train_seconds,
        }
        if "probe" in val:
            record["val_probe_keypoint_error_cm"] = nanmean(val["probe"]["model"]["keypoint_error_cm"])
        examples = val.get("examples", {})
        if config.image_clips and examples.get("context") is not None:
            grid = prediction_grid(
                examples["context"].float().numpy(),
                examples["targets"].float().numpy(),
                examples["prediction"].float().numpy(),
            )
            save_png(self.prep.run_dir / "images" / f"epoch_{state.epoch:03d}.png", grid)
            self.writer.add_image("val/prediction_grid", grid, state.epoch, dataformats="HWC")
        return record

    def save_checkpoint(self, paths: Sequence[Path], state: TrainState, record: Mapping[str, Any]) -> None:
        """Collective (every rank gathers its RNG state); rank 0 writes ``paths``."""
        rngs = ddp.all_gather_object(self.dist, ckpt_io.rng_state())
        if not self.dist.is_main:
            return
        sampling = self.sampling_record
        checkpoint = {
            "format": ckpt_io.CHECKPOINT_FORMAT,
            "version": ckpt_io.CHECKPOINT_VERSION,
            "model": model_state(self.model),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.precision.scaler.state_dict() if self.precision.scaler is not None else None,
            **ckpt_io.counters(state),
            "sampling": {
                "mode": sampling["mode"],
                "k": sampling.get("k"),
                "step": state.extra["sampling_step"],
                "total_steps": sampling["total_steps"],
            },
            "lr_schedule": dict(self.lr_schedule),
            "epochs": self.config.epochs,
            "metrics": dict(record),
            "rng": rngs[0],
            "world_size": self.dist.world_size,
            "config": self.config.to_dict(),
        }
        if self.dist.enabled:
            checkpoint["rng_per_rank"] = rngs
        for path in paths:
            runs.save_checkpoint(path, checkpoint)


# ---------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------
def _steps_per_epoch(config: TrainConfig, n_train: int, world_size: int) -> int:
    per_epoch = min(n_train, config.clips_per_epoch) if config.clips_per_epoch else n_train
    return math.ceil(-(-per_epoch // world_size) / config.batch_size)


def _training_record(prep: Prep, task: ForwardModelTask, dist: ddp.Dist, steps_per_epoch: int) -> dict[str, Any]:
    config, data = prep.config, prep.data
    return {
        "sampling": task.sampling_record,
        "amp": task.precision.record(),
        "padding": {
            "enabled": config.pad_short_episodes,
            "min_episode_frames": min_episode_frames(config),
            "train_padded_clips": int(data.train.num_padded),
            "val_padded_clips": int(data.val.num_padded),
        },
        "distributed": {
            "world_size": dist.world_size,
            "backend": dist.backend,
            "batch_size_per_process": config.batch_size,
            "global_batch_size": config.batch_size * dist.world_size,
        },
        "steps_per_epoch": steps_per_epoch,
        "total_steps": steps_per_epoch * _target(config),
        "lr_schedule": dict(task.lr_schedule),
    }


def _target(config: TrainConfig) -> int:
    """The epoch target (set by :func:`prepare`: never None past it)."""
    assert config.epochs is not None
    return int(config.epochs)


def _start_run_dir(prep: Prep, training: dict[str, Any], state: TrainState) -> None:
    """The first write (rank 0): a new run directory with ``config.yaml``, or the resumed
    one (its ``config.yaml`` rewritten, atomically, when ``--epochs`` set a new target:
    ``options.epochs``, ``training.total_steps`` / ``lr_schedule`` follow, and
    ``training.targets`` keeps every change)."""
    config, run_dir = prep.config, prep.run_dir
    if config.resume:
        runs.ensure_run_subdirs(run_dir)
        for line in prep.ignored:
            log.warning("--resume: ignored %s", line)
        if not prep.evaluate_only and prep.saved_epochs is not None and _target(config) != prep.saved_epochs:
            record = runs.read_config(run_dir)
            record["options"]["epochs"] = _target(config)
            section = record.setdefault("training", {})
            section.setdefault("targets", []).append(
                {
                    "epochs": _target(config),
                    "previous_epochs": prep.saved_epochs,
                    "from_epoch": state.epoch,
                    "from_step": state.global_step,
                    "at": runs.utc_timestamp(),
                }
            )
            section["total_steps"] = training["total_steps"]
            section["lr_schedule"] = training["lr_schedule"]
            runs.write_config(run_dir, record)
            log.info(
                "%s: new target %d epochs (was %d); training on from epoch %d",
                run_dir,
                _target(config),
                prep.saved_epochs,
                state.epoch,
            )
        return
    runs.create_run_dir(run_dir)
    record = config_record(
        config,
        run_dir,
        prep.ds,
        prep.data,
        prep.model,
        prep.device,
        prep.num_threads,
        probe_layout=prep.labels.layout if prep.labels is not None else None,
    )
    record["training"] = training
    runs.write_config(run_dir, record)


def _describe_epoch(epochs: int) -> Callable[[dict[str, Any]], str]:
    def describe(record: dict[str, Any]) -> str:
        return (
            f"epoch {record['epoch']}/{epochs}: train loss {record['train_loss']:.5f}, "
            f"val PSNR {record['val_psnr']:.2f} dB / SSIM {record['val_ssim']:.4f} "
            f"(copy-last-frame {record['val_copy_last_frame_psnr']:.2f} / "
            f"{record['val_copy_last_frame_ssim']:.4f})"
            + (
                f", probe key points {record['val_probe_keypoint_error_cm']:.2f} cm"
                if "val_probe_keypoint_error_cm" in record
                else ""
            )
            + (" *best*" if record.get("improved") else "")
        )

    return describe


def _schedules(
    config: TrainConfig, ckpt: Mapping[str, Any] | None, steps_per_epoch: int
) -> tuple[dict[str, Any], int, float | None]:
    """The LR schedule (keyword arguments of :func:`lr_lambda`), the teacher-forcing span
    (steps) and the scheduled-sampling ``k`` of this session: a new run's from its
    options; a resumed run's from its checkpoint (runs of earlier versions: its saved
    ``epochs``), the LR schedule continued to a new target
    (:func:`~visfore.worldmodels.schedules.extend_lr_schedule`)."""
    total_steps = _target(config) * steps_per_epoch
    if ckpt is None:
        plain = {
            "schedule": config.lr_schedule,
            "warmup_steps": config.warmup_steps,
            "total_steps": total_steps,
            "from_step": None,
            "from_factor": None,
        }
        return plain, total_steps, None
    saved_total = int(ckpt.get("epochs") or _target(config)) * steps_per_epoch
    saved_lr = ckpt.get("lr_schedule") or {
        "schedule": config.lr_schedule,
        "warmup_steps": config.warmup_steps,
        "total_steps": saved_total,
        "from_step": None,
        "from_factor": None,
    }
    sampling = ckpt.get("sampling") or {}
    k = sampling.get("k")
    return (
        extend_lr_schedule(dict(saved_lr), int(ckpt["global_step"]), total_steps),
        int(sampling.get("total_steps") or saved_total),
        float(k) if k is not None else None,
    )


def _run(prep: Prep, dist: ddp.Dist, t_begin: float) -> dict[str, Any]:
    config, run_dir, device = prep.config, prep.run_dir, prep.device
    epochs = _target(config)
    main = dist.is_main
    steps_per_epoch = _steps_per_epoch(config, len(prep.data.train), dist.world_size)
    total_steps = epochs * steps_per_epoch
    lr_schedule, sampling_steps, saved_k = _schedules(config, prep.start_ckpt, steps_per_epoch)
    writer: Any = None
    task = ForwardModelTask(
        prep,
        dist,
        precision=Precision.for_device(config.amp, device),
        lr_schedule=lr_schedule,
        sampling_steps=sampling_steps,
        sampling_k=saved_k,
        writer=None,
    )
    training = _training_record(prep, task, dist, steps_per_epoch)
    state = TrainState(extra={"sampling_step": 0, "mse_sum": 0.0})
    if prep.start_ckpt is not None:
        state = task.restore(prep.start_ckpt)
    if main:
        _start_run_dir(prep, training, state)
    session_start = (state.epoch, state.global_step, state.train_seconds)
    if prep.start_ckpt is not None and not prep.evaluate_only:
        log.info(
            "resuming %s after epoch %d/%d, step %d/%d",
            run_dir,
            state.epoch,
            epochs,
            state.global_step,
            total_steps,
        )
    if main:
        writer = SummaryWriter(log_dir=str(run_dir / "logs"), purge_step=state.global_step if prep.start_ckpt else None)
    task.writer = writer if writer is not None else _NullWriter()
    callbacks = [
        StopOnInterrupt(),
        *adaptive_threads(config.num_threads, prep.device, divide_by=dist.world_size),
        TimeBudget(config.time_budget),
        TensorBoardLogger(writer),
        Checkpointer(
            runs.last_checkpoint_path(run_dir),
            runs.best_checkpoint_path(run_dir),
            monitor="val_mse",
            is_writer=main,
            resume_hint=f"continue with --resume --out {run_dir}",
        ),
        RichProgress(
            total_steps,
            enabled=config.progress and main,
            describe=_describe_epoch(epochs),
            console=_console(config.progress and main),
        ),
    ]
    trainer = Trainer(task, epochs=epochs, callbacks=callbacks, any_rank=ddp.any_rank(dist, device))
    with contextlib.closing(task.writer):
        trainer.fit(state)
        session = {
            "resumed": prep.start_ckpt is not None,
            "evaluate_only": prep.evaluate_only,
            "epochs_trained": state.epoch - session_start[0],
            "steps": state.global_step - session_start[1],
            "train_seconds": state.train_seconds - session_start[2],
        }
        return _finish(prep, dist, task, state, training, t_begin, session)


def _console(enabled: bool) -> Any:
    return stdout_console(quiet=not enabled, highlight=False)


class _NullWriter:
    """SummaryWriter stand-in on ranks other than 0."""

    def add_scalar(self, *args: Any, **kwargs: Any) -> None:
        pass

    def add_image(self, *args: Any, **kwargs: Any) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def _finish(
    prep: Prep,
    dist: ddp.Dist,
    task: ForwardModelTask,
    state: TrainState,
    training: dict[str, Any],
    t_begin: float,
    session: dict[str, Any],
) -> dict[str, Any]:
    """Check the ranks agree, evaluate the final model (rank 0), write ``metrics.json``."""
    config, model = prep.config, prep.model
    digest = ddp.weights_digest(model)
    digests = ddp.all_gather_object(dist, digest)
    dist_record = dict(training["distributed"], weights_sha256_per_rank=digests, ranks_in_sync=len(set(digests)) == 1)
    if not dist.is_main:
        return {
            "rank": dist.rank,
            "world_size": dist.world_size,
            "run_dir": str(prep.run_dir),
            "weights_sha256": digest,
        }
    t_eval = time.monotonic()
    mean_frame = torch.from_numpy(dataset_mean_frame(prep.data.source, prep.data.train_episodes))
    final = evaluate_open_loop(
        model,
        prep.data.val,
        device=prep.device,
        options=EvalOptions(
            batch_size=config.eval_batch_size,
            shuffle_seed=config.seed,
            baseline=True,
            mean_frame=mean_frame,
            samples=config.eval_samples,
            foreground_threshold=FOREGROUND_THRESHOLD,
            lpips=True,
            amp_dtype=task.precision.dtype,
            seed=config.seed,
            probe=prep.probe,
        ),
    )
    metrics = metrics_record(
        config, final, prep.definitions, model, prep.data, state, time.monotonic() - t_eval, prep.device, prep.run_dir
    )
    clips, seconds = state.train_samples, state.train_seconds
    sampling = dict(
        task.sampling_record,
        final_step=state.extra["sampling_step"],
        p_at_final_step=task.tf_prob(max(0, state.extra["sampling_step"] - 1)),
    )
    stochastic = bool(getattr(model, "stochastic", False))
    metrics.update(
        {
            "samples_per_second": clips / seconds if seconds > 0 and clips else None,
            "train_clips_seen": clips,
            "inference_frames_per_second": json_float(final["inference"]["frames_per_second"] or float("nan")),
            "inference": final["inference"],
            "sampling": sampling,
            "amp": task.precision.record(),
            "padding": training["padding"] | {"evaluated_padded_clips": final["num_padded_clips"]},
            "distributed": dist_record,
            "stochastic": {
                "stochastic": stochastic,
                "eval_samples": final["samples"],
                "model_part": "mean over the samples of each per-frame metric (METRIC_DEFINITIONS['mean_of_samples'])"
                if stochastic
                else "one deterministic prediction per clip",
                **({"best_of_n_part": "best sample per clip (METRIC_DEFINITIONS['best_of_n'])"} if stochastic else {}),
            },
            "lr_schedule": dict(task.lr_schedule),
            "session": session,
            "wall_seconds": time.monotonic() - t_begin,
        }
    )
    runs.write_json(prep.run_dir / runs.METRICS_NAME, metrics)
    for part in ("model", "copy_last_frame", "mean_frame", "shuffled_actions", "best_of_n"):
        for key, value in metrics.get(part, {}).get("mean", {}).items():
            if value is not None:
                task.writer.add_scalar(f"final/{part}/{key}", value, state.global_step)
    return metrics
