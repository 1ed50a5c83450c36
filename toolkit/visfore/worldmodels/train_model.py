"""``visfore train-model``: train an action-conditioned forward model on a visfore dataset.

Pipeline (:func:`train_model`; the options are :class:`~visfore.worldmodels.config.TrainConfig`,
the command is :mod:`visfore.cli.train_model`):

1. Validate every option and open the dataset *before* anything is written (bad input is
   a :class:`~visfore.core.errors.VisforeError`: one line, exit 2, nothing on disk touched).
2. Split the usable episodes into training and validation sets **by episode** (seeded,
   deterministic; stored in ``config.yaml``), load pixels into memory as uint8 once, and
   index every clip of ``C + K`` consecutive frames with its ``C + K - 1`` actions inside
   each episode (:mod:`visfore.data.clips`). Episodes of different lengths are fine: with
   ``pad_short_episodes`` (default) an episode shorter than ``C + K`` frames (but with at
   least ``C + 1``) gives one clip padded at the end (last frame repeated, zero actions)
   with a ``(K,)`` validity mask; the loss and every metric ignore the padded steps.
3. Train with Adam on the MSE of the ``K`` predicted frames (pixels in ``[0, 1]``, masked)
   plus the model's ``auxiliary_losses()`` (e.g. SVG-LP's ``beta * KL``; logged
   separately). Inputs fed back during the rollout follow ``--sampling``: ``open-loop``
   (default, like the evaluation), ``teacher`` (always the true frame) or ``scheduled``
   (Finn et al. 2016's inverse-sigmoid scheduled sampling, see :func:`resolve_sampling`).
   Mixed precision (``--amp``) uses ``torch.autocast`` (float16 + ``GradScaler`` on CUDA,
   bfloat16 on CPU). After each epoch: open-loop validation on a fixed subset of
   validation clips, a prediction grid ``images/epoch_XXX.png``, TensorBoard scalars and
   images under ``logs/``, ``checkpoints/last.pt`` and (when the validation MSE improved)
   ``checkpoints/best.pt``, both written atomically (:mod:`visfore.core.runs`).
4. Evaluate the final model (the weights of ``checkpoints/last.pt``) open-loop on the
   held-out validation episodes, per horizon step, with MSE, PSNR, SSIM, foreground PSNR
   and (if available locally) LPIPS (:mod:`visfore_models.metrics`), next to the
   copy-last-frame and mean-frame baselines and the same model fed shuffled actions;
   stochastic models (``model.stochastic``) are sampled ``--eval-samples`` times and
   reported as the mean over samples and best-of-N. Write ``metrics.json``, print a table.

``--resume`` continues a run from ``checkpoints/last.pt`` exactly: the options come from
the run's ``config.yaml``, and model, optimizer, LR scheduler, AMP grad scaler, step
counters, the scheduled-sampling position and every RNG state (of every rank) from the
checkpoint. The order of training clips in epoch ``e`` is a pure function of ``(seed, e)``,
so a run stopped mid-epoch (``--time-budget``, Ctrl-C) resumes at the very batch where it
stopped and ends with the same weights as an uninterrupted run (on the same device with
the same number of CPU threads and processes, up to the nondeterminism of some CUDA
kernels).

**Multi-process (DDP).** Under ``torchrun --nproc-per-node N visfore train-model ...``
(detected from ``WORLD_SIZE`` / ``RANK`` / ``LOCAL_RANK``) every process trains a
``DistributedDataParallel`` replica (NCCL on CUDA, one GPU per ``LOCAL_RANK``; gloo on
CPU). Each epoch's seeded clip order is split across ranks like ``DistributedSampler``
(padded by wrapping around to a multiple of N, rank ``r`` takes every N-th clip from
``r``); ``--batch-size`` is per process, so one step sees ``N * batch_size`` clips.
Rank 0 alone writes the run directory (``config.yaml``, checkpoints, logs, images,
``metrics.json``) and runs the evaluations; ``metrics.json`` records a SHA-256 of every
rank's final weights (they must agree).

**Python API** (used by sweep runners such as ``visfore train-eval-all``)::

    from visfore.worldmodels.train_model import TrainConfig, train_model
    metrics = train_model(TrainConfig(data="data/reacher.zarr", model="cdna", epochs=5))
    metrics = train_model({"data": "data/reacher.zarr", "model": "cdna", "epochs": 5})

:func:`train_model` takes a :class:`TrainConfig` or a mapping of its fields (every CLI
option, underscores or dashes; unknown keys are an error) and returns the content of
``metrics.json`` (see :func:`train_model` for the keys; among them ``run_dir``,
``train_seconds``, ``num_parameters``, ``samples_per_second`` = training clips per second
of training time, ``inference_frames_per_second`` = predicted frames per second of model
time in the final evaluation). It raises :class:`~visfore.core.errors.VisforeError` for bad
input and leaves the process's torch thread count as it found it. On ranks other than 0
it returns ``{"rank", "world_size", "run_dir", "weights_sha256"}``.

Torch, zarr and the models are imported inside functions so ``visfore --help`` is fast.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import hashlib
import json
import math
import os
import random
import signal
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Callable, Optional, Union

import numpy as np

from visfore.core.console import stdout_console
from visfore.core import runs
from visfore.data import storage
from visfore.core.device import parse_device_spec as _parse_device_spec  # noqa: F401 (old name)
from visfore.core.device import physical_cpu_cores, select_device  # noqa: F401 (re-exported)
from visfore.core.errors import VisforeError
from visfore.worldmodels.config import TrainConfig

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from visfore.data.clips import ClipDataset

COMMAND = "train-model"
CHECKPOINT_FORMAT = "visfore-train-model-checkpoint"
CHECKPOINT_VERSION = 2

#: Options that may change on ``--resume`` (they do not change the result).
RUNTIME_OPTIONS = ("resume", "device", "num_workers", "time_budget", "num_threads", "progress")
#: ``--sampling`` modes.
SAMPLING_MODES = ("open-loop", "teacher", "scheduled")
#: Finn et al. 2016's inverse-sigmoid constant (their runs); ours is scaled to the run.
PAPER_SAMPLING_K = 900.0
#: Foreground threshold of the foreground PSNR in metrics.json (max abs channel diff on [0, 1]).
FOREGROUND_THRESHOLD = 0.02


# ---------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------
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
    _positive("epochs", config.epochs)
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
    _parse_device_spec(config.device)


# ---------------------------------------------------------------------------------------
# schedules, devices, threads
# ---------------------------------------------------------------------------------------
def teacher_forcing_schedule(spec: str, *, total_steps: int) -> Callable[[int], float]:
    """Parse a teacher-forcing spec into ``step -> probability`` in ``[0, 1]``.

    The probability is that of feeding the true frame instead of the model's own
    prediction as the next input (per sample and step; see ``ForwardModel.forward``).
    Scheduled sampling: Bengio, Vinyals, Jaitly & Shazeer, "Scheduled Sampling for
    Sequence Prediction with Recurrent Neural Networks", NeurIPS 2015 (arXiv:1506.03099),
    as used for video prediction by Finn, Goodfellow & Levine 2016 (arXiv:1605.07157).

    Specs:
        ``"P"``: constant probability P (``"0"``: open-loop training).
        ``"inverse-sigmoid:k"``: ``k / (k + exp(step / k))`` (Bengio et al. 2015), k > 0 in
            optimisation steps (starts near 1, is 0.5 near ``step = k ln k``).
        ``"linear:P0:P1[:N]"``: linear from P0 to P1 over N steps (default: all
            ``total_steps``), P1 afterwards.

    Raises:
        VisforeError: an unparsable spec or a probability outside ``[0, 1]``.
    """
    text = str(spec).strip().lower()
    bad = VisforeError(
        f"--teacher-forcing {spec!r} is not a probability in [0, 1], "
        "'inverse-sigmoid:K' or 'linear:P0:P1[:STEPS]'"
    )
    try:
        if text.startswith("inverse-sigmoid:"):
            k = float(text.split(":", 1)[1])
            if not (k > 0 and math.isfinite(k)):
                raise bad
            return inverse_sigmoid(k)
        if text.startswith("linear:"):
            parts = text.split(":")[1:]
            if len(parts) not in (2, 3):
                raise bad
            p0, p1 = float(parts[0]), float(parts[1])
            n = int(parts[2]) if len(parts) == 3 else max(1, total_steps)
            if not (0 <= p0 <= 1 and 0 <= p1 <= 1 and n >= 1):
                raise bad
            return lambda step: float(p0 + (p1 - p0) * min(step, n) / n)
        p = float(text)
    except ValueError:
        raise bad from None
    if not 0.0 <= p <= 1.0:
        raise bad
    return lambda step: p


def inverse_sigmoid(k: float) -> Callable[[int], float]:
    """``step -> k / (k + exp(step / k))``: the probability of feeding the ground truth at
    training step ``step`` in Finn et al. 2016's scheduled sampling (Bengio et al. 2015's
    inverse-sigmoid decay)."""
    return lambda step: float(k / (k + math.exp(min(step / k, 700.0))))


def auto_sampling_k(total_steps: int) -> float:
    """``k`` such that ``k / (k + exp(i / k))`` is 0.5 at ``i = total_steps / 2``, i.e. the
    root of ``k ln k = total_steps / 2`` (bisection, ``k > 1``).

    Finn et al. 2016 used k = 900 over runs of about 10^5 steps; our runs are hundreds to a
    few thousand steps, where k = 900 would never leave teacher forcing. With this k the
    probability starts at ``k / (k + 1)`` (about 0.99 for 1,000 steps), crosses 0.5 half-way
    and ends at ``1 / (1 + k)`` (about 0.01 for 1,000 steps).
    """
    target = max(1, int(total_steps)) / 2.0
    lo, hi = 1.0, max(math.e, target)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid * math.log(mid) < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def resolve_sampling(config: TrainConfig, *, total_steps: int, k: float | None = None) -> tuple[dict[str, Any], Callable[[int], float]]:
    """The training-time sampling schedule of ``config``: ``(description, step -> p)``.

    ``p`` is the probability of feeding the true frame ``o_t`` instead of the model's own
    prediction at each rollout step (per sample; ``ForwardModel.forward``'s
    ``teacher_forcing_prob``), as a function of the optimisation step ``i`` (the global
    step, saved in checkpoints):

    * ``open-loop``: p = 0; ``teacher``: p = 1;
    * ``scheduled``: p = k / (k + exp(i / k)) (Finn, Goodfellow & Levine 2016, "Unsupervised
      Learning for Physical Interaction through Video Prediction", after Bengio et al. 2015),
      with ``k = config.sampling_k`` or :func:`auto_sampling_k` ``(total_steps)``. (Finn et
      al. feed round(B p) ground-truth clips per batch; here each clip and step draws
      independently with probability p, the same in expectation.)
    * ``teacher_forcing`` set: its spec (:func:`teacher_forcing_schedule`).

    ``k`` overrides the computed k (a resumed run keeps its checkpoint's k).
    """
    if config.teacher_forcing is not None:
        fn = teacher_forcing_schedule(config.teacher_forcing, total_steps=total_steps)
        return {"mode": "custom", "spec": str(config.teacher_forcing), "k": None,
                "formula": "teacher_forcing_schedule(spec)"}, fn
    if config.sampling == "teacher":
        return {"mode": "teacher", "k": None, "formula": "p = 1"}, lambda step: 1.0
    if config.sampling == "scheduled":
        if k is None:
            k = float(config.sampling_k) if config.sampling_k is not None else auto_sampling_k(total_steps)
        auto = config.sampling_k is None
        return {
            "mode": "scheduled",
            "k": float(k),
            "k_source": f"auto: k ln k = total_steps / 2 = {total_steps / 2:g}" if auto else "--sampling-k",
            "formula": "p(i) = k / (k + exp(i / k)), i = optimisation step (Finn et al. 2016)",
            "p_first_step": inverse_sigmoid(k)(0),
            "p_last_step": inverse_sigmoid(k)(max(0, total_steps - 1)),
        }, inverse_sigmoid(float(k))
    return {"mode": "open-loop", "k": None, "formula": "p = 0"}, lambda step: 0.0


# select_device, parse_device_spec and physical_cpu_cores live in visfore.core.device.


def _lr_lambda(schedule: str, warmup: int, total_steps: int) -> Callable[[int], float]:
    """LR multiplier per step: linear warm-up over ``warmup`` steps, then constant or a
    cosine decay to 0.1 at ``total_steps`` (Loshchilov & Hutter, SGDR, ICLR 2017)."""

    def factor(step: int) -> float:
        if warmup > 0 and step < warmup:
            return (step + 1) / warmup
        if schedule == "constant":
            return 1.0
        span = max(1, total_steps - warmup)
        progress = min(1.0, (step - warmup) / span)
        return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


# ---------------------------------------------------------------------------------------
# distributed (torchrun)
# ---------------------------------------------------------------------------------------
@dataclass
class _Dist:
    """This process's place in a torchrun job (world_size 1 = not distributed)."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    backend: Optional[str] = None
    owns_group: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise VisforeError(f"environment variable {name}={text!r} is not an integer") from None


def _setup_distributed(device_spec: str) -> _Dist:
    """Join the torchrun process group when ``WORLD_SIZE`` > 1 (NCCL when training on
    CUDA, else gloo); a no-op otherwise. The group is destroyed by :func:`_teardown` only
    if it was created here."""
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return _Dist()
    import torch
    import torch.distributed as tdist

    if not tdist.is_available():
        raise VisforeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    spec = _parse_device_spec(device_spec)
    if spec.startswith("cuda:"):
        raise VisforeError(f"--device {spec} cannot be used with torchrun; use auto or cuda (one GPU per LOCAL_RANK)")
    use_cuda = spec == "cuda" or (spec == "auto" and torch.cuda.is_available())
    if use_cuda and not torch.cuda.is_available():
        raise VisforeError(f"--device {spec} requested but CUDA is not available (torch {torch.__version__})")
    local_rank = _env_int("LOCAL_RANK", _env_int("RANK", 0))
    if use_cuda:
        if local_rank >= torch.cuda.device_count():
            raise VisforeError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} CUDA device(s)")
        torch.cuda.set_device(local_rank)
    owns = False
    if tdist.is_initialized():
        backend = str(tdist.get_backend())
    else:
        backend = "nccl" if use_cuda else "gloo"
        # generous timeout: ranks > 0 wait in a collective while rank 0 evaluates an epoch
        tdist.init_process_group(backend=backend, timeout=_dt.timedelta(minutes=60))
        owns = True
    return _Dist(world_size=tdist.get_world_size(), rank=tdist.get_rank(), local_rank=local_rank,
                 backend=backend, owns_group=owns)


def _teardown(dist: _Dist) -> None:
    if dist.owns_group:
        import torch.distributed as tdist

        if tdist.is_initialized():
            tdist.destroy_process_group()


def _all_gather_object(dist: _Dist, obj: Any) -> list[Any]:
    if not dist.enabled:
        return [obj]
    import torch.distributed as tdist

    out: list[Any] = [None] * dist.world_size
    tdist.all_gather_object(out, obj)
    return out


def _broadcast_object(dist: _Dist, obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not dist.enabled:
        return obj
    import torch.distributed as tdist

    box = [obj]
    tdist.broadcast_object_list(box, src=0)
    return box[0]


def _agree_on_errors(dist: _Dist, exc: BaseException | None) -> None:
    """Raise on every rank when any rank failed (so none waits forever in a collective)."""
    if not dist.enabled:
        if exc is not None:
            raise exc
        return
    messages = _all_gather_object(
        dist, None if exc is None else (str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    )
    if exc is not None:
        raise exc
    for rank, message in enumerate(messages):
        if message is not None:
            raise VisforeError(f"rank {rank}: {message}")


def _sum_across_ranks(dist: _Dist, values: list[float], device: "torch.device") -> list[float]:
    import torch
    import torch.distributed as tdist

    t = torch.tensor(values, dtype=torch.float64, device=device if dist.backend == "nccl" else "cpu")
    tdist.all_reduce(t)
    return [float(x) for x in t.cpu()]


def _shard(order: np.ndarray, rank: int, world: int) -> np.ndarray:
    """This rank's part of an epoch's clip order, as ``DistributedSampler`` splits it
    (wrap-around padding to a multiple of ``world``, then every ``world``-th from ``rank``)."""
    if world <= 1:
        return order
    n = len(order)
    total = -(-n // world) * world
    padded = np.concatenate([order, np.resize(order, total - n)]) if total > n else order
    return padded[rank::world]


def weights_digest(model: Any) -> str:
    """SHA-256 of a module's state dict (names, dtypes, shapes and bytes, in order)."""
    import torch

    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------
# dataset preparation
# ---------------------------------------------------------------------------------------
@dataclass
class _Prepared:
    dataset: Any
    source: Any
    train: "ClipDataset"
    val: "ClipDataset"
    train_episodes: np.ndarray
    val_episodes: np.ndarray
    excluded_episodes: np.ndarray


def _open_and_check_dataset(config: TrainConfig) -> Any:
    from visfore.data.dataset import open_dataset

    if config.data is None:
        raise VisforeError("--data is required (path of a visfore dataset)")
    ds = open_dataset(config.data)
    if ds.num_episodes == 0:
        raise VisforeError(f"{config.data} has no complete episode")
    lengths = ds.episode_lengths
    clip_len = config.context + config.horizon
    longest, shortest = int(lengths.max()), int(lengths.min())
    if clip_len > longest:
        span = (
            f"{longest} frames ({longest - 1} actions)" if longest == shortest
            else f"{shortest} to {longest} frames ({shortest - 1} to {longest - 1} actions)"
        )
        raise VisforeError(
            f"--context {config.context} + --horizon {config.horizon} = {clip_len} frames per clip, "
            f"but the episodes of {config.data} have {span}; use context + horizon <= {longest}"
        )
    return ds


def _min_episode_frames(config: TrainConfig) -> int:
    """Frames an episode needs to give a clip: C + K, or C + 1 with padding."""
    return config.context + 1 if config.pad_short_episodes else config.context + config.horizon


def _split(config: TrainConfig, ds: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from visfore.data.clips import split_episodes

    lengths = ds.episode_lengths
    need = _min_episode_frames(config)
    usable = np.flatnonzero(lengths >= need)
    excluded = np.flatnonzero(lengths < need)
    train_eps, val_eps = split_episodes(usable, config.val_fraction, config.seed)
    return train_eps, val_eps, excluded


def _prepare_data(config: TrainConfig, ds: Any, train_eps: np.ndarray, val_eps: np.ndarray,
                  excluded: np.ndarray) -> _Prepared:
    from visfore.data.clips import ClipDataset, load_clip_source

    source = load_clip_source(ds)
    train = ClipDataset(
        source, train_eps, context=config.context, horizon=config.horizon,
        stride=config.clip_stride, max_clips=config.max_train_clips, seed=config.seed,
        pad_short=config.pad_short_episodes,
    )
    val = ClipDataset(
        source, val_eps, context=config.context, horizon=config.horizon, stride=1,
        max_clips=config.max_val_clips, seed=config.seed + 1, pad_short=config.pad_short_episodes,
    )
    if len(train) == 0 or len(val) == 0:
        raise VisforeError("the split left no training or no validation clip")
    return _Prepared(ds, source, train, val, train_eps, val_eps, excluded)


def _attrs_summary(attrs: dict[str, Any]) -> dict[str, Any]:
    """The dataset attrs, JSON-plain (they come from Zarr JSON), long values shortened."""
    out: dict[str, Any] = {}
    for key, value in attrs.items():
        text = json.dumps(value, default=str)
        out[str(key)] = json.loads(text) if len(text) <= 2000 else text[:2000] + "..."
    return out


# ---------------------------------------------------------------------------------------
# evaluation
# ---------------------------------------------------------------------------------------
def shuffled_partners(n: int, seed: int) -> np.ndarray | None:
    """A derangement of ``range(n)``: clip ``i`` gets the actions of clip ``partner[i] != i``
    (random cycle through a seeded permutation; :func:`visfore_models.metrics.derangement`).
    None when ``n < 2``."""
    from visfore_models.metrics import derangement

    if n < 2:
        return None
    return derangement(n, seed)


class _StepSums:
    """Per part and metric, running ``(sum, count)`` per horizon step."""

    def __init__(self) -> None:
        self.sums: dict[str, dict[str, list[Any]]] = {}

    def add_values(self, part: str, values: dict[str, "torch.Tensor"], mask: "torch.Tensor") -> None:
        from visfore_models.metrics import step_sum_count

        acc = self.sums.setdefault(part, {})
        for key, v in values.items():
            if key == "foreground_pixels":
                continue
            valid = mask
            if key == "foreground_psnr" and "foreground_pixels" in values:
                valid = mask & (values["foreground_pixels"] > 0)
            s, c = step_sum_count(v, valid)
            s, c = s.cpu().numpy(), c.cpu().numpy()
            if key in acc:
                acc[key][0] = acc[key][0] + s
                acc[key][1] = acc[key][1] + c
            else:
                acc[key] = [s, c]

    def means(self) -> dict[str, dict[str, np.ndarray]]:
        out: dict[str, dict[str, np.ndarray]] = {}
        for part, acc in self.sums.items():
            out[part] = {}
            for key, (s, c) in acc.items():
                with np.errstate(invalid="ignore", divide="ignore"):
                    out[part][key] = np.where(c > 0, s / np.maximum(c, 1), np.nan).astype(np.float64)
        return out

    def counts(self, part: str, key: str) -> np.ndarray | None:
        acc = self.sums.get(part, {})
        return acc[key][1].astype(np.int64) if key in acc else None


def evaluate_open_loop(
    model: Any,
    clips: "ClipDataset",
    *,
    device: "torch.device",
    batch_size: int = 32,
    indices: np.ndarray | None = None,
    shuffle_seed: int | None = 0,
    baseline: bool = True,
    keep_first: int = 0,
    mean_frame: "torch.Tensor | None" = None,
    samples: int = 1,
    foreground_threshold: float | None = FOREGROUND_THRESHOLD,
    lpips: bool = False,
    amp_dtype: "torch.dtype | None" = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Open-loop per-horizon-step metrics of ``model`` on ``clips``.

    Each clip's context (C frames) and its C + K - 1 actions are fed to
    ``model(context, actions)`` (no targets, so no teacher forcing) and the K predictions
    are scored against the true frames with :mod:`visfore_models.metrics` (MSE, PSNR in
    dB, SSIM, foreground PSNR, optionally LPIPS; data range 1.0), per frame, then averaged
    over the clips per horizon step, skipping the padded steps of clips of short episodes
    (their ``mask``).

    Args:
        model: a ``visfore_models.ForwardModel`` (put in eval mode here, restored after).
            When ``model.stochastic`` is true it is sampled ``samples`` times per clip.
        clips: the evaluation clips.
        device: where to run.
        batch_size: clips per forward pass.
        indices: evaluate only these clip indices (default: all).
        shuffle_seed: also score the model fed *shuffled actions*: every clip gets the
            whole action sequence of another evaluation clip (a seeded derangement over all
            evaluated clips, so also across batches) -- a test of action sensitivity.
            None skips it.
        baseline: also score the copy-last-frame baseline (and the mean-frame baseline
            when ``mean_frame`` is given).
        keep_first: also return the first ``keep_first`` clips' context, targets and
            predictions (CPU float tensors; the first sample) for images.
        mean_frame: ``(3, H, W)`` mean training frame in [0, 1] (mean-frame baseline).
        samples: samples per clip of a stochastic model (ignored for deterministic ones).
        foreground_threshold: threshold of the foreground PSNR (None skips it).
        lpips: also LPIPS when available locally (else ``"lpips_note"`` says why not).
        amp_dtype: run the model under ``torch.autocast`` with this dtype (None: off).
        seed: torch seed of the evaluation (stochastic models); the caller's RNG state is
            restored afterwards.

    Returns:
        ``{"model": {"mse": (K,), "psnr": (K,), "ssim": (K,), "foreground_psnr": (K,),
        ["lpips": (K,)]}, "copy_last_frame": {...}, "mean_frame": {...},
        "shuffled_actions": {...}, ["best_of_n": {"mse", "psnr", "ssim"}], "num_clips": n,
        "num_episodes": m, "num_padded_clips": p, "valid_clips_per_step": (K,),
        "samples": N, "stochastic": bool, "inference": {"frames", "seconds",
        "frames_per_second"}, ["lpips_note": str], ["examples": ...]}`` with float64 numpy
        arrays (NaN where a step has no valid clip); keys of skipped parts are absent. For
        a stochastic model ``"model"`` (and ``"shuffled_actions"``) hold the mean over the
        N samples of each per-frame value, and ``"best_of_n"`` the best sample per clip
        (:func:`visfore_models.metrics.best_of_n_metrics`).
    """
    import torch

    from visfore.data.clips import frames_to_float, split_clip
    from visfore_models import metrics as vm

    C = clips.context
    idx = np.arange(len(clips)) if indices is None else np.asarray(indices, dtype=np.int64)
    n = int(idx.shape[0])
    stochastic = bool(getattr(model, "stochastic", False))
    n_samples = max(1, int(samples)) if stochastic else 1
    partner = shuffled_partners(n, shuffle_seed) if shuffle_seed is not None else None
    acc = _StepSums()
    examples: dict[str, list[Any]] = {"context": [], "targets": [], "prediction": []}
    kept = 0
    lpips_note: str | None = None
    use_lpips = False
    if lpips:
        lp_model, lpips_note = vm.load_lpips()
        use_lpips = lp_model is not None
    infer_seconds, infer_frames = 0.0, 0
    was_training = model.training
    model.eval()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    autocast = (
        (lambda: torch.autocast(device_type=device.type, dtype=amp_dtype))
        if amp_dtype is not None else contextlib.nullcontext
    )

    def rollout(context: "torch.Tensor", actions: "torch.Tensor") -> list["torch.Tensor"]:
        with autocast():
            return [model(context, actions).float() for _ in range(n_samples)]

    def score(preds: list["torch.Tensor"], targets: "torch.Tensor", context: "torch.Tensor",
              mask: "torch.Tensor") -> tuple[dict[str, "torch.Tensor"], dict[str, "torch.Tensor"] | None]:
        """Per-sample values (mean over the N samples) and, for N > 1, best-of-N values."""
        best = None
        if len(preds) == 1:
            values = vm.per_sample_metrics(preds[0], targets, mask)
        else:
            bon = vm.best_of_n_metrics(torch.stack(preds), targets, mask)
            values, best = dict(bon["mean_of_samples"]), dict(bon["best_of_n"])
        if foreground_threshold is not None:
            fg = [vm.foreground_psnr_per_sample(p, targets, context, foreground_threshold, mask) for p in preds]
            values["foreground_psnr"] = torch.stack(fg).mean(dim=0)
            values["foreground_pixels"] = vm.foreground_mask(context, targets, foreground_threshold).sum(dim=(2, 3))
        if use_lpips:
            lp = [vm.lpips_per_sample(p, targets, mask)[0] for p in preds]
            values["lpips"] = torch.stack(lp).mean(dim=0)  # type: ignore[arg-type]
        return values, best

    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.no_grad():
            torch.manual_seed(seed)
            for lo in range(0, n, batch_size):
                pos = np.arange(lo, min(n, lo + batch_size))
                batch = clips[idx[pos]]
                frames = frames_to_float(batch["frames"].to(device))
                actions = batch["actions"].to(device)
                mask = batch["mask"].to(device)
                context, targets = split_clip(frames, C)
                K = targets.shape[1]
                sync()
                t0 = time.perf_counter()
                preds = rollout(context, actions)
                sync()
                infer_seconds += time.perf_counter() - t0
                infer_frames += n_samples * len(pos) * K
                values, best = score(preds, targets, context, mask)
                acc.add_values("model", values, mask)
                if best is not None:
                    acc.add_values("best_of_n", best, mask)
                if baseline:
                    base = vm.copy_last_frame_baseline(context, K)
                    acc.add_values("copy_last_frame", score([base], targets, context, mask)[0], mask)
                    if mean_frame is not None:
                        mf = vm.mean_frame_baseline(mean_frame.to(device, torch.float32), len(pos), K)
                        acc.add_values("mean_frame", score([mf], targets, context, mask)[0], mask)
                if partner is not None:
                    other = clips.actions_for(idx[partner[pos]]).to(device)
                    acc.add_values("shuffled_actions", score(rollout(context, other), targets, context, mask)[0], mask)
                if kept < keep_first:
                    take = min(keep_first - kept, len(pos))
                    examples["context"].append(context[:take].cpu())
                    examples["targets"].append(targets[:take].cpu())
                    examples["prediction"].append(preds[0][:take].cpu())
                    kept += take
    finally:
        model.train(was_training)
    result: dict[str, Any] = acc.means()
    result["num_clips"] = n
    result["num_episodes"] = int(np.unique(clips.episode_ids[idx]).shape[0]) if n else 0
    result["num_padded_clips"] = int(np.asarray(clips.padded)[idx].sum()) if n else 0
    counts = acc.counts("model", "mse")
    result["valid_clips_per_step"] = counts if counts is not None else np.zeros(clips.horizon, np.int64)
    result["samples"] = n_samples
    result["stochastic"] = stochastic
    result["inference"] = {
        "frames": infer_frames,
        "seconds": infer_seconds,
        "frames_per_second": infer_frames / infer_seconds if infer_seconds > 0 else None,
        "note": f"model forward passes only ({n_samples} sample(s) per clip, batch {batch_size}, "
        f"{'autocast ' + str(amp_dtype).replace('torch.', '') if amp_dtype is not None else 'float32'}, "
        f"{device.type}); baselines, shuffled actions and metrics excluded",
    }
    if lpips:
        result["lpips_note"] = lpips_note
    if keep_first:
        result["examples"] = {k: torch.cat(v) if v else None for k, v in examples.items()}
    return result


_METRIC_ORDER = ("mse", "psnr", "ssim", "foreground_psnr", "lpips")


def _json_float(x: Any) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _summary(per_step: dict[str, np.ndarray]) -> dict[str, Any]:
    """Per-step lists (null where a step has no valid clip) and their means over steps."""
    keys = [k for k in _METRIC_ORDER if k in per_step] + [k for k in per_step if k not in _METRIC_ORDER]
    out: dict[str, Any] = {k: [_json_float(x) for x in per_step[k]] for k in keys}
    mean: dict[str, Any] = {}
    for k in keys:
        values = np.asarray(per_step[k], dtype=np.float64)
        finite = values[np.isfinite(values)]
        mean[k] = float(np.mean(finite)) if finite.size else None
    out["mean"] = mean
    return out


# ---------------------------------------------------------------------------------------
# images
# ---------------------------------------------------------------------------------------
def prediction_grid(context: np.ndarray, targets: np.ndarray, prediction: np.ndarray,
                    *, scale: int | None = None) -> np.ndarray:
    """Tile clips into one RGB image, columns = time (frames o_0 .. o_{C+K-1}).

    For each clip three rows: ``ctx`` (the C context frames in the first C columns),
    ``true`` (the K target frames in the last K columns) and ``pred`` (the K open-loop
    predictions under their targets); blank cells are dark grey, clips are separated by a
    gap, a label column is on the left.

    Args:
        context: (B, C, 3, H, W); targets, prediction: (B, K, 3, H, W); float in [0, 1].
        scale: integer nearest-neighbour upscaling (default: enough for >= 64 px frames).

    Returns:
        (rows, cols, 3) uint8 image.
    """
    from PIL import Image, ImageDraw

    B, C = context.shape[:2]
    K = targets.shape[1]
    H, W = context.shape[-2:]
    s = scale if scale is not None else max(1, 64 // max(1, min(H, W)))
    h, w = H * s, W * s
    pad, gap, label_w = 2, 6, 34
    cols = C + K
    height = B * (3 * (h + pad)) + (B - 1) * gap
    width = label_w + cols * (w + pad)
    img = np.full((height, width, 3), 255, dtype=np.uint8)

    def to_u8(x: np.ndarray) -> np.ndarray:
        x = np.clip(np.asarray(x, dtype=np.float32), 0.0, 1.0).transpose(1, 2, 0)
        x = (x * 255.0 + 0.5).astype(np.uint8)
        return x.repeat(s, axis=0).repeat(s, axis=1)

    blank = np.full((h, w, 3), 48, dtype=np.uint8)
    for b in range(B):
        top = b * (3 * (h + pad) + gap)
        rows = [
            [context[b, t] for t in range(C)] + [None] * K,
            [None] * C + [targets[b, k] for k in range(K)],
            [None] * C + [prediction[b, k] for k in range(K)],
        ]
        for r, row in enumerate(rows):
            y = top + r * (h + pad)
            for c, frame in enumerate(row):
                x = label_w + c * (w + pad)
                img[y : y + h, x : x + w] = blank if frame is None else to_u8(frame)
    pil = Image.fromarray(img)
    draw = ImageDraw.Draw(pil)
    for b in range(B):
        top = b * (3 * (h + pad) + gap)
        for r, label in enumerate(("ctx", "true", "pred")):
            draw.text((2, top + r * (h + pad) + h // 2 - 5), label, fill=(0, 0, 0))
    return np.asarray(pil)


def _save_png(path: Path, image: np.ndarray) -> None:
    from PIL import Image

    runs.atomic_write(path, lambda f: Image.fromarray(image).save(f, format="PNG"))


# ---------------------------------------------------------------------------------------
# checkpoint state
# ---------------------------------------------------------------------------------------
def _rng_state() -> dict[str, Any]:
    import torch

    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    import torch

    torch.set_rng_state(state["torch"].cpu())
    random.setstate(tuple(state["python"]) if not isinstance(state["python"], tuple) else state["python"])
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])


def _epoch_order(n: int, clips_per_epoch: int | None, seed: int, epoch: int) -> np.ndarray:
    """Training clip order of epoch ``epoch``: a permutation of ``range(n)`` (first
    ``clips_per_epoch`` of it), a pure function of ``(n, seed, epoch)``."""
    perm = np.random.default_rng([int(seed), int(epoch), 0x7C1F]).permutation(n)
    return perm[:clips_per_epoch] if clips_per_epoch else perm



# ---------------------------------------------------------------------------------------
# the pipeline
# ---------------------------------------------------------------------------------------
def _resolve_resume(config: TrainConfig, run_dir: Path) -> tuple[TrainConfig, list[str]]:
    """Options of a resumed run: the saved ones, with the runtime options of ``config``."""
    saved = runs.read_config(run_dir)
    options = saved.get("options")
    if not isinstance(options, dict):
        raise VisforeError(f"{run_dir / runs.CONFIG_NAME} has no 'options' section")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    merged = TrainConfig(**{k: v for k, v in options.items() if k in known})
    if "teacher_forcing" in options and "sampling" not in options and options["teacher_forcing"] in ("0", 0):
        merged.teacher_forcing = None  # a run of the version before --sampling: "0" = open-loop
    if config.data is not None and merged.data is not None:
        if not storage.same_location(config.data, merged.data):
            raise VisforeError(
                f"--data {config.data} differs from the run's dataset {merged.data}; "
                "omit --data when resuming"
            )
    defaults = TrainConfig()
    ignored = []
    for f in dataclasses.fields(TrainConfig):
        if f.name in RUNTIME_OPTIONS or f.name in ("data", "out", "name"):
            continue
        mine, theirs = getattr(config, f.name), getattr(merged, f.name)
        if mine != theirs and mine != getattr(defaults, f.name):
            ignored.append(f"--{f.name.replace('_', '-')} {mine} (run uses {theirs})")
    for key in RUNTIME_OPTIONS:
        setattr(merged, key, getattr(config, key))
    merged.out, merged.name = str(run_dir), None
    return merged, ignored


def train_model(config: Union[TrainConfig, Mapping[str, Any]]) -> dict[str, Any]:
    """Train and evaluate a forward model; write a run directory; return the metrics.

    Args:
        config: a :class:`TrainConfig` or a mapping of its fields (see
            :meth:`TrainConfig.from_dict`); every CLI option is a field.

    Returns:
        The content of ``metrics.json`` (open-loop, held-out episodes, data range 1.0):

        * ``model``, ``copy_last_frame``, ``mean_frame``, ``shuffled_actions`` (and
          ``best_of_n`` for stochastic models): per-horizon-step lists (length K; null
          where a step has no valid clip) ``mse``, ``psnr`` (dB), ``ssim``,
          ``foreground_psnr`` (dB; and ``lpips`` when available) and their ``mean`` over
          steps; for a stochastic model ``model`` is the mean over ``eval_samples``
          samples (``stochastic`` says so);
        * ``beats_copy_last_frame``, ``beats_mean_frame``, ``action_sensitivity``
          (``psnr_drop_db`` and per step), ``lpips`` (``computed`` and ``note``: the skip
          reason when not computed), ``definitions`` and ``metric_definitions`` (the same
          :data:`visfore_models.metrics.METRIC_DEFINITIONS`), ``padding``,
          ``valid_clips_per_step``, ``sampling``, ``amp``, ``distributed``;
        * counts and times: ``num_val_clips``, ``num_train_clips``, ``num_parameters``,
          ``train_seconds``, ``samples_per_second`` (training clips per second of
          training, all processes), ``inference_frames_per_second`` (predicted frames per
          second of model forward passes in the final evaluation), ``eval_seconds``,
          ``wall_seconds``, ``epochs_completed``, ``global_step``, ``history``, ``run_dir``.

        On a torchrun rank other than 0: ``{"rank", "world_size", "run_dir",
        "weights_sha256"}`` (rank 0 writes and returns the metrics).

    Raises:
        VisforeError: bad options or dataset (before anything is written), an existing
            run directory without ``resume``, a missing checkpoint with ``resume``, or a
            diverged training (non-finite loss).
    """
    import torch

    if isinstance(config, Mapping):
        config = TrainConfig.from_dict(config)
    elif not isinstance(config, TrainConfig):
        raise VisforeError(f"train_model needs a TrainConfig or a mapping, got {type(config).__name__}")
    threads = torch.get_num_threads()
    _parse_device_spec(config.device)
    dist = _setup_distributed(config.device)
    try:
        return _train_model(config, dist)
    finally:
        torch.set_num_threads(threads)  # the API must not leave the process changed
        _teardown(dist)


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


def reconstruction_loss(pred: "torch.Tensor", targets: "torch.Tensor", mask: "torch.Tensor | None" = None) -> "torch.Tensor":
    """Training MSE of ``(B, K, 3, H, W)`` predictions on ``[0, 1]`` (computed in float32).

    Without ``mask`` (every step real): ``F.mse_loss(pred, targets)``, the mean over all
    pixels. With a ``(B, K)`` bool ``mask``: the mean over the valid frames of the per-frame
    MSE (= the mean over their pixels); padded frames contribute neither value nor gradient.
    """
    import torch

    pred = pred.float()
    if mask is None:
        return torch.nn.functional.mse_loss(pred, targets)
    return (pred - targets).pow(2).mean(dim=(2, 3, 4))[mask].mean()


def _aux_losses(model: Any) -> dict[str, Any]:
    """The model's extra loss terms of its last forward pass (``{}`` if it has none)."""
    fn = getattr(model, "auxiliary_losses", None)
    losses = fn() if callable(fn) else {}
    return dict(losses) if losses else {}


def _train_model(config: TrainConfig, dist: _Dist) -> dict[str, Any]:
    t_begin = time.monotonic()

    # -- everything that can fail on bad input, on every rank, before any write ---------
    failure: BaseException | None = None
    try:
        if config.resume and config.out is None and config.name is None:
            raise VisforeError("--resume needs the run directory: pass --out DIR or --name NAME")
        run_dir = runs.resolve_run_dir(COMMAND, out=config.out, name=config.name)
    except BaseException as exc:  # noqa: BLE001 - re-raised on every rank below
        failure, run_dir = exc, Path(".")
    _agree_on_errors(dist, failure)
    run_dir = Path(_broadcast_object(dist, str(run_dir)))  # one timestamped name for all ranks
    try:
        prep = _prepare(config, dist, run_dir)
    except BaseException as exc:  # noqa: BLE001
        failure, prep = exc, None
    _agree_on_errors(dist, failure)
    assert prep is not None
    return _run(prep, dist, t_begin)


@dataclass
class _Prep:
    config: TrainConfig
    run_dir: Path
    ignored: list[str]
    device: Any
    ds: Any
    data: _Prepared
    model: Any
    num_threads: Optional[int]
    start_ckpt: Optional[dict[str, Any]]
    definitions: dict[str, str]


def _prepare(config: TrainConfig, dist: _Dist, run_dir: Path) -> _Prep:
    """Validate, open the dataset, build the model, read the checkpoint: no writes."""
    import torch

    runs.check_run_dir(run_dir, resume=config.resume)
    ignored: list[str] = []
    if config.resume:
        config, ignored = _resolve_resume(config, run_dir)
    validate_config(config)

    with warnings.catch_warnings():  # torchmetrics' deprecation notices on import
        warnings.simplefilter("ignore", FutureWarning)
        import visfore_models
        from visfore_models import build_model
    from visfore_models.metrics import METRIC_DEFINITIONS

    if config.model not in visfore_models.MODELS:
        raise VisforeError(
            f"unknown model {config.model!r}; valid: {', '.join(sorted(visfore_models.MODELS))}"
        )
    if dist.enabled and dist.backend == "nccl":
        device = torch.device("cuda", dist.local_rank)
    elif dist.enabled:
        device = torch.device("cpu")
    else:
        device = select_device(config.device)
    ds = _open_and_check_dataset(config)
    train_eps, val_eps, excluded = _split(config, ds)
    H, W, _ = ds.frame_shape
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    try:
        model = build_model(config.model, action_dim=ds.action_dim, image_size=(H, W), **config.model_kwargs)
    except (TypeError, ValueError) as exc:
        raise VisforeError(f"cannot build model {config.model!r}: {exc}".splitlines()[0]) from None
    if dist.rank > 0:  # own teacher-forcing / latent draws per rank (rank 0 keeps the 1-process stream)
        torch.manual_seed(config.seed * 1_000_003 + dist.rank)
        random.seed(config.seed * 1_000_003 + dist.rank)

    num_threads = None
    if device.type == "cpu":
        num_threads = config.num_threads or max(1, physical_cpu_cores() // dist.world_size)
        torch.set_num_threads(num_threads)
    else:
        torch.backends.cudnn.benchmark = True

    start_ckpt: dict[str, Any] | None = None
    if config.resume:
        start_ckpt = runs.load_checkpoint(runs.last_checkpoint_path(run_dir))
        if start_ckpt.get("format") != CHECKPOINT_FORMAT:
            raise VisforeError(f"{runs.last_checkpoint_path(run_dir)} is not a train-model checkpoint")
        saved_world = int(start_ckpt.get("world_size", 1))
        if saved_world != dist.world_size:
            raise VisforeError(
                f"{run_dir} was trained with {saved_world} process(es); resume it with the same "
                f"number (now {dist.world_size}) to continue exactly"
            )

    data = _prepare_data(config, ds, train_eps, val_eps, excluded)
    model.to(device)
    return _Prep(config, run_dir, ignored, device, ds, data, model, num_threads, start_ckpt, dict(METRIC_DEFINITIONS))


def _run(prep: _Prep, dist: _Dist, t_begin: float) -> dict[str, Any]:
    import torch

    from visfore.data.clips import dataset_mean_frame
    from visfore_models import load_model, model_state

    config, run_dir, device, model, data = prep.config, prep.run_dir, prep.device, prep.model, prep.data
    ds, start_ckpt = prep.ds, prep.start_ckpt
    main = dist.is_main
    console = _console(config.progress and main)
    stochastic = bool(getattr(model, "stochastic", False))

    # -- mixed precision ----------------------------------------------------------------
    amp_enabled = (device.type == "cuda") if config.amp is None else bool(config.amp)
    amp_dtype = (torch.float16 if device.type == "cuda" else torch.bfloat16) if amp_enabled else None
    scaler = torch.amp.GradScaler("cuda") if amp_enabled and device.type == "cuda" else None
    autocast = (
        (lambda: torch.autocast(device_type=device.type, dtype=amp_dtype))
        if amp_enabled else contextlib.nullcontext
    )
    amp_record = {
        "enabled": amp_enabled,
        "dtype": str(amp_dtype).replace("torch.", "") if amp_dtype is not None else None,
        "grad_scaler": scaler is not None,
        "requested": config.amp,
    }

    # -- optimiser and schedules --------------------------------------------------------
    n_train = len(data.train)
    per_epoch = min(n_train, config.clips_per_epoch) if config.clips_per_epoch else n_train
    per_rank = -(-per_epoch // dist.world_size)
    steps_per_epoch = math.ceil(per_rank / config.batch_size)
    total_steps = config.epochs * steps_per_epoch
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _lr_lambda(config.lr_schedule, config.warmup_steps, total_steps)
    )
    saved_k = None
    if start_ckpt is not None and isinstance(start_ckpt.get("sampling"), dict):
        saved_k = start_ckpt["sampling"].get("k")
    sampling_record, tf_prob = resolve_sampling(
        config, total_steps=total_steps, k=float(saved_k) if saved_k is not None else None
    )
    sampling_record["total_steps"] = total_steps

    # -- run directory (first write; rank 0 only) ---------------------------------------
    padding_record = {
        "enabled": config.pad_short_episodes,
        "min_episode_frames": _min_episode_frames(config),
        "train_padded_clips": int(data.train.num_padded),
        "val_padded_clips": int(data.val.num_padded),
    }
    dist_record = {"world_size": dist.world_size, "backend": dist.backend,
                   "batch_size_per_process": config.batch_size,
                   "global_batch_size": config.batch_size * dist.world_size}
    if main:
        if config.resume:
            runs.ensure_run_subdirs(run_dir)
            for line in prep.ignored:
                console.print(f"[yellow]--resume: ignored {line}[/yellow]")
        else:
            runs.create_run_dir(run_dir)
            record = _config_record(config, run_dir, ds, data, model, device, prep.num_threads)
            record["training"] = {
                "sampling": sampling_record, "amp": amp_record, "padding": padding_record,
                "distributed": dist_record, "steps_per_epoch": steps_per_epoch, "total_steps": total_steps,
            }
            runs.write_config(run_dir, record)

    net: Any = model
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    epoch, epoch_step, global_step, sampling_step = 0, 0, 0, 0
    history: list[dict[str, Any]] = []
    best_val = math.inf
    train_seconds = 0.0
    train_clips = 0
    partial = [0.0, 0, 0.0]
    if start_ckpt is not None:
        loaded = load_model(start_ckpt["model"], device=device)
        model.load_state_dict(loaded.state_dict())
        optimizer.load_state_dict(start_ckpt["optimizer"])
        scheduler.load_state_dict(start_ckpt["scheduler"])
        if scaler is not None and start_ckpt.get("scaler"):
            scaler.load_state_dict(start_ckpt["scaler"])
        epoch = int(start_ckpt["epoch"])
        epoch_step = int(start_ckpt["epoch_step"])
        global_step = int(start_ckpt["global_step"])
        sampling_step = int((start_ckpt.get("sampling") or {}).get("step", global_step))
        history = list(start_ckpt.get("history", []))
        best_val = float(start_ckpt.get("best_val_mse", math.inf))
        train_seconds = float(start_ckpt.get("train_seconds", 0.0))
        train_clips = int(start_ckpt.get("train_clips", 0))
        saved_partial = list(start_ckpt.get("partial_loss", (0.0, 0)))
        partial = [float(saved_partial[0]), int(saved_partial[1]),
                   float(saved_partial[2]) if len(saved_partial) > 2 else float(saved_partial[0])]
        per_rank_rng = start_ckpt.get("rng_per_rank")
        _set_rng_state(per_rank_rng[dist.rank] if per_rank_rng else start_ckpt["rng"])
        if epoch >= config.epochs:
            console.print(f"{run_dir} already finished {epoch}/{config.epochs} epochs; evaluating only")
        else:
            console.print(
                f"resuming {run_dir} after epoch {epoch}/{config.epochs}, step {global_step}/{total_steps}"
            )

    if main:
        from torch.utils.tensorboard import SummaryWriter

        writer: Any = SummaryWriter(log_dir=str(run_dir / "logs"), purge_step=global_step if start_ckpt else None)
    else:
        writer = _NullWriter()

    val_subset = np.sort(
        np.random.default_rng([config.seed, 0x5A1]).permutation(len(data.val))[: config.epoch_val_clips]
    )
    mean_frame = torch.from_numpy(dataset_mean_frame(data.source, data.train_episodes))

    def checkpoint(paths: list[Path], metrics: dict[str, Any]) -> None:
        """Collective (every rank gathers its RNG state); rank 0 writes ``paths``."""
        rngs = _all_gather_object(dist, _rng_state())
        if not main:
            return
        state = {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "model": model_state(model),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "epoch": epoch,
            "epoch_step": epoch_step,
            "global_step": global_step,
            "sampling": {"mode": sampling_record["mode"], "k": sampling_record.get("k"), "step": sampling_step},
            "epochs": config.epochs,
            "train_seconds": train_seconds,
            "train_clips": train_clips,
            "partial_loss": [float(loss_sum), int(loss_n), float(mse_sum)] if epoch_step else [0.0, 0, 0.0],
            "best_val_mse": best_val,
            "history": history,
            "metrics": metrics,
            "rng": rngs[0],
            "world_size": dist.world_size,
            "config": config.to_dict(),
        }
        if dist.enabled:
            state["rng_per_rank"] = rngs
        for path in paths:
            runs.save_checkpoint(path, state)

    def any_rank(flag: bool) -> bool:
        if not dist.enabled:
            return flag
        return _sum_across_ranks(dist, [1.0 if flag else 0.0], device)[0] > 0

    # -- training ---------------------------------------------------------------------
    stop = _StopFlag()
    stopped_early = False
    budget_s = config.time_budget * 60.0 if config.time_budget else None
    t_train = t_loop = time.monotonic()
    loss_sum, loss_n, mse_sum = float(partial[0]), int(partial[1]), float(partial[2])
    C = config.context
    model.train()
    with stop.catch_sigint(), _progress(console, config.progress and main) as progress:
        task = progress.add_task(
            "train", total=total_steps, completed=global_step, epoch=min(epoch + 1, config.epochs),
            epochs=config.epochs, loss=float("nan"), cps=0.0,
        )
        while epoch < config.epochs:
            order = _epoch_order(n_train, config.clips_per_epoch, config.seed, epoch)
            mine = _shard(order, dist.rank, dist.world_size)
            batches = [mine[i : i + config.batch_size] for i in range(0, len(mine), config.batch_size)]
            loader = torch.utils.data.DataLoader(
                data.train, sampler=batches[epoch_step:], batch_size=None,
                num_workers=config.num_workers, pin_memory=device.type == "cuda",
                # its own generator: creating the iterator must not draw from the global
                # RNG (teacher forcing uses it), or a resumed run would diverge
                generator=torch.Generator().manual_seed(config.seed * 1_000_003 + epoch),
            )
            t_window, clips_window = time.monotonic(), 0
            for batch in loader:
                frames = _frames_float(batch["frames"], device)
                actions = batch["actions"].to(device, non_blocking=True)
                all_valid = bool(batch["mask"].all())
                context, targets = frames[:, :C], frames[:, C:]
                p = tf_prob(sampling_step)
                with autocast():
                    # targets always: stochastic models' inference networks use them in
                    # training; with p = 0 they never feed a deterministic model
                    pred = net(context, actions, targets=targets, teacher_forcing_prob=p)
                    aux = _aux_losses(model)
                recon = reconstruction_loss(
                    pred, targets, None if all_valid else batch["mask"].to(device, non_blocking=True)
                )
                loss = recon
                for term in aux.values():
                    loss = loss + term.float()
                optimizer.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    if config.grad_clip > 0:
                        scaler.unscale_(optimizer)
                        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    loss.backward()
                    if config.grad_clip > 0:
                        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                    optimizer.step()
                with warnings.catch_warnings():  # GradScaler may skip a step (inf grads)
                    warnings.simplefilter("ignore", UserWarning)
                    scheduler.step()
                value = float(loss.detach())
                mse_value = float(recon.detach()) if aux else value
                aux_values = {k: float(v.detach()) for k, v in sorted(aux.items())}
                now = time.monotonic()
                want_stop = stop.requested or (budget_s is not None and now - t_loop > budget_s)
                if dist.enabled:
                    reduced = _sum_across_ranks(
                        dist, [value, mse_value, *aux_values.values(), 1.0 if want_stop else 0.0], device
                    )
                    value, mse_value = reduced[0] / dist.world_size, reduced[1] / dist.world_size
                    aux_values = {k: v / dist.world_size for k, v in zip(aux_values, reduced[2:-1])}
                    want_stop = reduced[-1] > 0
                if not math.isfinite(value):
                    raise VisforeError(
                        f"training diverged: loss is {value} at step {global_step}; try a lower --lr"
                        + (" or --no-amp" if amp_enabled else "")
                    )
                global_step += 1
                sampling_step += 1
                epoch_step += 1
                n_batch = len(batch["start"])
                loss_sum += value * n_batch
                mse_sum += mse_value * n_batch
                loss_n += n_batch
                clips_window += n_batch * dist.world_size
                train_clips += n_batch * dist.world_size
                writer.add_scalar("train/loss", value, global_step)
                writer.add_scalar("train/lr", scheduler.get_last_lr()[0], global_step)
                if aux_values:
                    writer.add_scalar("train/reconstruction_mse", mse_value, global_step)
                    for key, v in aux_values.items():
                        writer.add_scalar(f"train/aux/{key}", v, global_step)
                if p > 0 or sampling_record["mode"] == "scheduled":
                    writer.add_scalar("train/teacher_forcing_prob", p, global_step)
                if scaler is not None:
                    writer.add_scalar("train/amp_scale", float(scaler.get_scale()), global_step)
                cps = clips_window / max(now - t_window, 1e-9)
                progress.update(task, advance=1, loss=value, cps=cps, epoch=epoch + 1)
                if now - t_window > 20.0:
                    t_window, clips_window = now, 0
                if want_stop:
                    break
            train_seconds += time.monotonic() - t_train
            t_train = time.monotonic()
            epoch_done = epoch_step >= len(batches)
            if not epoch_done:
                # stopped mid-epoch: save the exact position for --resume
                stopped_early = True
                interrupted = any_rank(stop.requested)
                checkpoint([runs.last_checkpoint_path(run_dir)], {"partial_epoch_train_loss": loss_sum / max(loss_n, 1)})
                if interrupted:
                    writer.close()
                    console.print(f"interrupted; saved {runs.last_checkpoint_path(run_dir)} (resume with --resume)")
                    raise KeyboardInterrupt
                console.print(
                    f"[yellow]time budget of {config.time_budget} min reached at epoch {epoch + 1}, "
                    f"step {epoch_step}/{len(batches)}; evaluating[/yellow]"
                )
                break
            # -- end of epoch: validation subset, images, checkpoints (rank 0) ---------
            epoch += 1
            epoch_step = 0
            epoch_loss = loss_sum / max(loss_n, 1)
            epoch_mse = mse_sum / max(loss_n, 1)
            loss_sum, loss_n, mse_sum = 0.0, 0, 0.0
            improved = False
            record: dict[str, Any] = {}
            if main:
                val = evaluate_open_loop(
                    model, data.val, device=device, batch_size=config.eval_batch_size,
                    indices=val_subset, shuffle_seed=None, baseline=True, keep_first=config.image_clips,
                    samples=1, foreground_threshold=None, amp_dtype=amp_dtype, seed=config.seed,
                )
                record = {
                    "epoch": epoch,
                    "global_step": global_step,
                    "train_loss": epoch_loss,
                    "train_mse": epoch_mse,
                    "val_mse": _nanmean(val["model"]["mse"]),
                    "val_psnr": _nanmean(val["model"]["psnr"]),
                    "val_ssim": _nanmean(val["model"]["ssim"]),
                    "val_copy_last_frame_psnr": _nanmean(val["copy_last_frame"]["psnr"]),
                    "val_copy_last_frame_ssim": _nanmean(val["copy_last_frame"]["ssim"]),
                    "teacher_forcing_prob": tf_prob(max(0, sampling_step - 1)),
                    "train_seconds": train_seconds,
                }
                history.append(record)
                for key in ("train_loss", "train_mse", "val_mse", "val_psnr", "val_ssim",
                            "val_copy_last_frame_psnr", "val_copy_last_frame_ssim"):
                    writer.add_scalar(f"epoch/{key}", record[key], epoch)
                if config.image_clips and val.get("examples", {}).get("context") is not None:
                    ex = val["examples"]
                    grid = prediction_grid(ex["context"].float().numpy(), ex["targets"].float().numpy(),
                                           ex["prediction"].float().numpy())
                    _save_png(run_dir / "images" / f"epoch_{epoch:03d}.png", grid)
                    writer.add_image("val/prediction_grid", grid, epoch, dataformats="HWC")
                improved = record["val_mse"] < best_val
                if improved:
                    best_val = record["val_mse"]
            paths = [runs.last_checkpoint_path(run_dir)]
            if improved:
                paths.append(runs.best_checkpoint_path(run_dir))
            checkpoint(paths, record)
            writer.flush()
            if main:
                progress.console.print(
                    f"epoch {epoch}/{config.epochs}: train loss {record['train_loss']:.5f}, "
                    f"val PSNR {record['val_psnr']:.2f} dB / SSIM {record['val_ssim']:.4f} "
                    f"(copy-last-frame {record['val_copy_last_frame_psnr']:.2f} / "
                    f"{record['val_copy_last_frame_ssim']:.4f})"
                    + (" *best*" if improved else "")
                )
            t_train = time.monotonic()
            out_of_time = budget_s is not None and time.monotonic() - t_loop > budget_s and epoch < config.epochs
            interrupted, out_of_time = any_rank(stop.requested), any_rank(out_of_time)
            if interrupted or out_of_time:
                if interrupted:
                    writer.close()
                    raise KeyboardInterrupt
                stopped_early = True
                console.print(f"[yellow]time budget of {config.time_budget} min reached after epoch {epoch}; evaluating[/yellow]")
                break

    # -- every rank's final weights must agree (DDP) -------------------------------------
    digest = weights_digest(model)
    digests = _all_gather_object(dist, digest)
    dist_record["weights_sha256_per_rank"] = digests
    dist_record["ranks_in_sync"] = len(set(digests)) == 1
    if not main:
        writer.close()
        return {"rank": dist.rank, "world_size": dist.world_size, "run_dir": str(run_dir), "weights_sha256": digest}

    # -- final evaluation (rank 0) -------------------------------------------------------
    t_eval = time.monotonic()
    final = evaluate_open_loop(
        model, data.val, device=device, batch_size=config.eval_batch_size,
        shuffle_seed=config.seed, baseline=True, mean_frame=mean_frame,
        samples=config.eval_samples, foreground_threshold=FOREGROUND_THRESHOLD, lpips=True,
        amp_dtype=amp_dtype, seed=config.seed,
    )
    eval_seconds = time.monotonic() - t_eval
    metrics = _metrics_record(
        config, final, prep.definitions, model, data, history, train_seconds, eval_seconds,
        epoch, epoch_step, global_step, stopped_early, device, run_dir,
    )
    metrics["samples_per_second"] = train_clips / train_seconds if train_seconds > 0 and train_clips else None
    metrics["train_clips_seen"] = train_clips
    metrics["inference_frames_per_second"] = _json_float(final["inference"]["frames_per_second"] or float("nan"))
    metrics["inference"] = final["inference"]
    sampling_record["final_step"] = sampling_step
    sampling_record["p_at_final_step"] = tf_prob(max(0, sampling_step - 1))
    metrics["sampling"] = sampling_record
    metrics["amp"] = amp_record
    metrics["padding"] = padding_record | {"evaluated_padded_clips": final["num_padded_clips"]}
    metrics["distributed"] = dist_record
    metrics["stochastic"] = {
        "stochastic": stochastic,
        "eval_samples": final["samples"],
        "model_part": "mean over the samples of each per-frame metric (METRIC_DEFINITIONS['mean_of_samples'])"
        if stochastic else "one deterministic prediction per clip",
        **({"best_of_n_part": "best sample per clip (METRIC_DEFINITIONS['best_of_n'])"} if stochastic else {}),
    }
    metrics["wall_seconds"] = time.monotonic() - t_begin
    runs.write_json(run_dir / runs.METRICS_NAME, metrics)
    for part in ("model", "copy_last_frame", "mean_frame", "shuffled_actions", "best_of_n"):
        if part in metrics:
            for key, value in metrics[part]["mean"].items():
                if value is not None:
                    writer.add_scalar(f"final/{part}/{key}", value, global_step)
    writer.close()
    if config.progress:
        print_metrics_table(metrics, console)
    return metrics


def _nanmean(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    return float(np.mean(finite)) if finite.size else float("nan")


def _frames_float(frames: "torch.Tensor", device: "torch.device") -> "torch.Tensor":
    from visfore.data.clips import frames_to_float

    return frames_to_float(frames.to(device, non_blocking=True))


def _config_record(config: TrainConfig, run_dir: Path, ds: Any, data: _Prepared, model: Any,
                   device: Any, num_threads: int | None) -> dict[str, Any]:
    import torch

    import visfore

    options = json.loads(json.dumps(config.to_dict()))
    options["data"] = storage.resolve(config.data) if config.data else None  # abs path or URL
    options["out"] = str(run_dir)
    lengths = ds.episode_lengths
    return {
        "command": COMMAND,
        "created": runs.utc_timestamp(),
        "run_dir": str(run_dir.resolve()),
        "options": options,
        "dataset": {
            "path": options["data"],
            "num_episodes": ds.num_episodes,
            "num_rows": ds.num_rows,
            "frame_shape": list(ds.frame_shape),
            "action_dim": ds.action_dim,
            "episode_frames": {"min": int(lengths.min()), "max": int(lengths.max())},
            "attrs": _attrs_summary(ds.attrs),
        },
        "split": {
            "by": "episode",
            "seed": config.seed,
            "val_fraction": config.val_fraction,
            "train_episodes": [int(e) for e in data.train_episodes],
            "val_episodes": [int(e) for e in data.val_episodes],
            "excluded_short_episodes": [int(e) for e in data.excluded_episodes],
            "num_train_clips": len(data.train),
            "num_val_clips": len(data.val),
            "num_padded_train_clips": int(data.train.num_padded),
            "num_padded_val_clips": int(data.val.num_padded),
        },
        "model": {
            "name": model.name,
            "config": json.loads(json.dumps(model.config())),
            "num_parameters": int(model.num_parameters()),
            "stochastic": bool(getattr(model, "stochastic", False)),
        },
        "runtime": {
            "device": str(device),
            "torch_threads": num_threads,
            "torch_version": str(torch.__version__),
            "visfore_version": visfore.__version__,
        },
    }


def _metrics_record(config: TrainConfig, final: dict[str, Any], definitions: dict[str, str],
                    model: Any, data: _Prepared, history: list[dict[str, Any]],
                    train_seconds: float, eval_seconds: float, epoch: int, epoch_step: int,
                    global_step: int, stopped_early: bool, device: Any, run_dir: Path) -> dict[str, Any]:
    out: dict[str, Any] = {
        "evaluation": "open-loop on held-out validation episodes (the model feeds back its own "
        "predictions; no teacher forcing); per horizon step k = 1..K; padded steps of short "
        "episodes excluded",
        "data_range": 1.0,
        "context": config.context,
        "horizon": config.horizon,
        "foreground_threshold": FOREGROUND_THRESHOLD,
    }
    for part in ("model", "best_of_n", "copy_last_frame", "mean_frame", "shuffled_actions"):
        if part in final:
            out[part] = _summary(final[part])
    out["valid_clips_per_step"] = [int(c) for c in final["valid_clips_per_step"]]

    def gain(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else a - b

    m = out["model"]["mean"]
    for base in ("copy_last_frame", "mean_frame"):
        if base not in out:
            continue
        b = out[base]["mean"]
        psnr_ok = m["psnr"] is not None and b["psnr"] is not None and m["psnr"] > b["psnr"]
        ssim_ok = m["ssim"] is not None and b["ssim"] is not None and m["ssim"] > b["ssim"]
        out[f"beats_{base}"] = {
            "psnr": psnr_ok,
            "ssim": ssim_ok,
            "both": psnr_ok and ssim_ok,
            "psnr_gain_db": gain(m["psnr"], b["psnr"]),
            "ssim_gain": gain(m["ssim"], b["ssim"]),
            "foreground_psnr_gain_db": gain(m.get("foreground_psnr"), b.get("foreground_psnr")),
        }
    if "shuffled_actions" in out:
        s = out["shuffled_actions"]["mean"]
        drop_steps = [gain(a, b) for a, b in zip(out["model"]["psnr"], out["shuffled_actions"]["psnr"])]
        out["action_sensitivity"] = {
            "psnr_drop_db": gain(m["psnr"], s["psnr"]),
            "psnr_drop_db_per_step": drop_steps,
            "foreground_psnr_drop_db": gain(m.get("foreground_psnr"), s.get("foreground_psnr")),
            "ssim_drop": gain(m["ssim"], s["ssim"]),
            "mse_ratio": s["mse"] / m["mse"] if m["mse"] and s["mse"] is not None else None,
            "note": "shuffled_actions: each validation clip gets the whole action sequence of "
            "another validation clip (a seeded derangement); a model that uses its actions "
            "must get worse",
        }
    note = final.get("lpips_note") or "LPIPS skipped: not requested"
    out["lpips"] = {"computed": "lpips" in final.get("model", {}), "note": note}
    out["definitions"] = dict(definitions)
    out["metric_definitions"] = dict(definitions)  # the earlier name, kept for readers of v1
    out.update({
        "num_val_clips": final["num_clips"],
        "num_val_episodes": final["num_episodes"],
        "num_train_clips": len(data.train),
        "num_train_episodes": int(len(data.train_episodes)),
        "num_parameters": int(model.num_parameters()),
        "model_name": config.model,
        "epochs": config.epochs,
        "epochs_completed": epoch,
        "epoch_step": epoch_step,
        "global_step": global_step,
        "stopped_early": stopped_early,
        "train_seconds": train_seconds,
        "eval_seconds": eval_seconds,
        "device": str(device),
        "checkpoint": "checkpoints/last.pt",  # the evaluated weights
        "run_dir": str(run_dir),
        "history": history,
    })
    return out


# ---------------------------------------------------------------------------------------
# console output
# ---------------------------------------------------------------------------------------
def _console(enabled: bool) -> Any:

    return stdout_console(quiet=not enabled, highlight=False)


class _NoProgress:
    console: Any

    def __init__(self, console: Any) -> None:
        self.console = console

    def add_task(self, *args: Any, **kwargs: Any) -> int:
        return 0

    def update(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __enter__(self) -> "_NoProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        pass


def _progress(console: Any, enabled: bool) -> Any:
    if not enabled:
        return _NoProgress(console)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(
        TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.5f}"),
        TextColumn("{task.fields[cps]:.1f} clips/s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )


class _StopFlag:
    """Turns the first Ctrl-C during training into a flag checked after each step (so the
    checkpoint holds a consistent state); a second Ctrl-C interrupts at once."""

    def __init__(self) -> None:
        self.requested = False

    def catch_sigint(self) -> Any:
        import contextlib

        @contextlib.contextmanager
        def ctx():
            try:
                previous = signal.getsignal(signal.SIGINT)
                signal.signal(signal.SIGINT, self._handler)
            except ValueError:  # not the main thread
                yield
                return
            try:
                yield
            finally:
                signal.signal(signal.SIGINT, previous)

        return ctx()

    def _handler(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_metrics_table(metrics: dict[str, Any], console: Any = None) -> None:
    """Print the open-loop evaluation as a rich table (model / best-of-N / copy-last-frame /
    mean-frame / shuffled actions: mean PSNR, foreground PSNR, SSIM, MSE (and LPIPS) over
    the K-step horizon, PSNR at steps 1 and K) and a line saying whether the model beats
    copy-last-frame on both PSNR and SSIM."""
    from rich.table import Table

    console = console or stdout_console()
    K = metrics["horizon"]
    with_lpips = bool(metrics.get("lpips", {}).get("computed"))
    table = Table(
        title=f"open-loop {K}-step prediction, {metrics['num_val_clips']} clips of "
        f"{metrics['num_val_episodes']} held-out episodes",
        caption=f"means over the {K} horizon steps; PSNR and SSIM with data range 1.0; "
        f"FG = foreground PSNR (pixels that move, threshold {metrics.get('foreground_threshold', FOREGROUND_THRESHOLD)})",
    )
    table.add_column("predictor", no_wrap=True)
    for title in ("PSNR dB", "FG PSNR", "SSIM", "MSE") + (("LPIPS",) if with_lpips else ()) + ("PSNR@1", f"PSNR@{K}"):
        table.add_column(title, justify="right", no_wrap=True)
    stochastic = metrics.get("stochastic", {})
    n = stochastic.get("eval_samples", 1)
    model_label = f"model ({metrics['model_name']}" + (f", mean of {n})" if stochastic.get("stochastic") else ")")
    names = {"model": model_label, "best_of_n": f"best of {n} samples", "copy_last_frame": "copy-last-frame",
             "mean_frame": "mean-frame", "shuffled_actions": "shuffled-actions"}
    for part, label in names.items():
        if part not in metrics:
            continue
        r = metrics[part]
        mean = r["mean"]
        row = [label, _fmt(mean["psnr"], ".2f"), _fmt(mean.get("foreground_psnr"), ".2f"),
               _fmt(mean["ssim"], ".4f"), _fmt(mean["mse"], ".5f")]
        if with_lpips:
            row.append(_fmt(mean.get("lpips"), ".4f"))
        row += [_fmt(r["psnr"][0], ".2f"), _fmt(r["psnr"][-1], ".2f")]
        table.add_row(*row)
    console.print(table)
    beat = metrics["beats_copy_last_frame"]
    verdict = "[green]yes[/green]" if beat["both"] else "[red]no[/red]"
    console.print(
        f"model beats copy-last-frame on both PSNR and SSIM: {verdict} "
        f"(PSNR {_fmt(beat['psnr_gain_db'], '+.2f')} dB, SSIM {_fmt(beat['ssim_gain'], '+.4f')})"
    )
    if "action_sensitivity" in metrics:
        a = metrics["action_sensitivity"]
        console.print(f"shuffled actions cost {_fmt(a['psnr_drop_db'], '.2f')} dB PSNR and {_fmt(a['ssim_drop'], '.4f')} SSIM")
    if not with_lpips and metrics.get("lpips"):
        console.print(metrics["lpips"]["note"])
    sps = metrics.get("samples_per_second")
    fps = metrics.get("inference_frames_per_second")
    console.print(
        f"trained {metrics['epochs_completed']}/{metrics['epochs']} epochs ({metrics['global_step']} steps) "
        f"in {metrics['train_seconds']:.0f} s" + (f" ({sps:.1f} clips/s)" if sps else "")
        + f", evaluated in {metrics['eval_seconds']:.0f} s" + (f" ({fps:.0f} predicted frames/s)" if fps else "")
        + f"; run: {metrics['run_dir']}"
    )
