"""``visfore train-model``: train an action-conditioned forward model on a visfore dataset.

Pipeline (:func:`train_model`; the Typer command :func:`train_model_command` is a thin
wrapper):

1. Validate every option and open the dataset *before* anything is written (bad input is
   a :class:`~visfore.errors.VisforeError`: one line, exit 2, nothing on disk touched).
2. Split the episodes that are long enough for one clip into training and validation
   sets **by episode** (seeded, deterministic; stored in ``config.yaml``), load pixels into
   memory as uint8 once, and index every clip of ``C + K`` consecutive frames with its
   ``C + K - 1`` actions inside each episode (:mod:`visfore.clips`).
3. Train with Adam on the MSE of the ``K`` predicted frames (pixels in ``[0, 1]``),
   open-loop by default; teacher forcing / scheduled sampling on request
   (:func:`teacher_forcing_schedule`). After each epoch: open-loop validation on a fixed
   subset of validation clips, a prediction grid ``images/epoch_XXX.png``, TensorBoard
   scalars and images under ``logs/``, ``checkpoints/last.pt`` and (when the validation
   MSE improved) ``checkpoints/best.pt``, both written atomically (:mod:`visfore.runs`).
4. Evaluate the final model (the weights of ``checkpoints/last.pt``; ``best.pt`` holds
   the epoch with the lowest validation MSE on the per-epoch subset) open-loop on the
   held-out validation episodes, per horizon step, with MSE, PSNR and SSIM (data range
   1.0; :mod:`visfore_models.metrics`), next to the copy-last-frame baseline and to the
   same model fed shuffled actions; write ``metrics.json`` and print a table.

``--resume`` continues a run from ``checkpoints/last.pt`` exactly: the options come from
the run's ``config.yaml``, and model, optimizer, scheduler, step counters and RNG states
from the checkpoint. The order of training clips in epoch ``e`` is a pure function of
``(seed, e)``, so a run stopped mid-epoch (``--time-budget``, Ctrl-C) resumes at the
very batch where it stopped and ends with the same weights as an uninterrupted run (on
the same device with the same number of CPU threads, up to the nondeterminism of some
CUDA kernels).

Torch, zarr and the models are imported inside functions so ``visfore --help`` is fast.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import signal
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Callable, Optional

import numpy as np
import typer

from visfore import runs
from visfore.errors import VisforeError, handle_errors

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from visfore.clips import ClipDataset

COMMAND = "train-model"
CHECKPOINT_FORMAT = "visfore-train-model-checkpoint"
CHECKPOINT_VERSION = 1

#: Options that may change on ``--resume`` (they do not change the result).
RUNTIME_OPTIONS = ("resume", "device", "num_workers", "time_budget", "num_threads", "progress")


# ---------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------
@dataclass
class TrainConfig:
    """Every option of ``visfore train-model`` (CLI flag = field name with dashes).

    Attributes:
        data: path of the visfore Zarr dataset (required unless resuming).
        model: registry name in ``visfore_models.MODELS``.
        model_kwargs: extra keyword arguments of ``build_model`` (e.g. channel widths).
        context: C >= 1 context frames; horizon: K >= 1 predicted frames.
        epochs: target number of epochs (the total, also when resuming).
        batch_size: clips per optimisation step.
        lr: Adam learning rate; lr_schedule: ``"cosine"`` (decay to 10 % over all steps,
            after a linear warm-up of ``warmup_steps``) or ``"constant"``.
        weight_decay: Adam weight decay; grad_clip: max global gradient norm (0 = off).
        teacher_forcing: schedule spec, see :func:`teacher_forcing_schedule`. Default
            ``"0"`` (open-loop training, like the evaluation): on the 64x64 demo reacher a
            1 -> 0 warm-up over the first 50 steps gave the same open-loop result after
            2 x 800 clips (PSNR 21.85 vs 21.84 dB, SSIM 0.919 vs 0.917).
        seed: seeds the model init, the split, the clip order and the subsets.
        val_fraction: fraction of usable episodes held out for validation (ceil, >= 1).
        clip_stride: rows between consecutive clip starts inside an episode (training).
        max_train_clips: fixed seeded subset of the training clips (None = all).
        clips_per_epoch: clips drawn (without replacement, seeded per epoch) for each
            epoch from the training clips (None or 0 = all of them every epoch). The
            default, 800, keeps an epoch to about a minute on a 2-core CPU at 64x64.
        max_val_clips: final evaluation on a seeded subset of at most this many clips of
            the validation episodes (None = all; stride 1).
        epoch_val_clips: validation clips scored after each epoch (for best.pt / logs).
        eval_batch_size: clips per forward pass in evaluation.
        image_clips: validation clips drawn in each ``images/epoch_XXX.png``.
        out / name: run directory (``--out`` as given, or ``runs/train-model-NAME``,
            default ``runs/train-model-<UTC timestamp>``).
        resume: continue the run in ``out``/``name`` from ``checkpoints/last.pt``.
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``.
        num_workers: DataLoader worker processes (0 = load in the main process).
        num_threads: torch CPU threads (None = physical cores available to the process).
        time_budget: minutes of training after which training stops (checkpointed, so
            ``--resume`` continues it); evaluation still runs. None = no limit.
        progress: show the rich progress bar and table.
    """

    data: Optional[str] = None
    model: str = "convlstm"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    context: int = 2
    horizon: int = 10
    epochs: int = 10
    batch_size: int = 16
    lr: float = 1e-3
    lr_schedule: str = "cosine"
    warmup_steps: int = 20
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    teacher_forcing: str = "0"
    seed: int = 0
    val_fraction: float = 0.1
    clip_stride: int = 1
    max_train_clips: Optional[int] = None
    clips_per_epoch: Optional[int] = 800
    max_val_clips: Optional[int] = 256
    epoch_val_clips: int = 32
    eval_batch_size: int = 32
    image_clips: int = 4
    out: Optional[str] = None
    name: Optional[str] = None
    resume: bool = False
    device: str = "auto"
    num_workers: int = 0
    num_threads: Optional[int] = None
    time_budget: Optional[float] = None
    progress: bool = True

    def to_dict(self) -> dict[str, Any]:
        """Plain-typed dict of every field (YAML/JSON-safe)."""
        return dataclasses.asdict(self)


def _positive(name: str, value: Any, *, allow_none: bool = False, minimum: float = 1) -> None:
    if value is None and allow_none:
        return
    if value is None or isinstance(value, bool) or value < minimum:
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
    _positive("max-train-clips", config.max_train_clips, allow_none=True)
    _positive("clips-per-epoch", config.clips_per_epoch, allow_none=True, minimum=0)
    _positive("max-val-clips", config.max_val_clips, allow_none=True)
    _positive("num-threads", config.num_threads, allow_none=True)
    _positive("image-clips", config.image_clips, minimum=0)
    _positive("num-workers", config.num_workers, minimum=0)
    _positive("warmup-steps", config.warmup_steps, minimum=0)
    if not (config.lr > 0 and math.isfinite(config.lr)):
        raise VisforeError(f"--lr must be > 0, got {config.lr}")
    if config.weight_decay < 0 or config.grad_clip < 0:
        raise VisforeError("--weight-decay and --grad-clip must be >= 0")
    if config.lr_schedule not in ("cosine", "constant"):
        raise VisforeError(f"--lr-schedule must be cosine or constant, got {config.lr_schedule!r}")
    if not 0.0 < config.val_fraction < 1.0:
        raise VisforeError(f"--val-fraction must be in (0, 1), got {config.val_fraction}")
    if config.time_budget is not None and not config.time_budget > 0:
        raise VisforeError(f"--time-budget must be > 0 minutes, got {config.time_budget}")
    if not isinstance(config.model_kwargs, dict):
        raise VisforeError("--model-kwargs must be a JSON object")
    teacher_forcing_schedule(config.teacher_forcing, total_steps=1)
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
        ``"P"``: constant probability P (``"0"``: open-loop training, the default).
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
            if not k > 0:
                raise bad
            return lambda step: float(k / (k + math.exp(min(step / k, 700.0))))
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


def _parse_device_spec(spec: str) -> str:
    spec = str(spec).strip().lower()
    if spec in ("auto", "cpu", "cuda") or (spec.startswith("cuda:") and spec[5:].isdigit()):
        return spec
    raise VisforeError(f"--device must be auto, cpu, cuda or cuda:N, got {spec!r}")


def select_device(spec: str) -> "torch.device":
    """``auto`` -> CUDA when available else CPU; ``cpu``; ``cuda`` / ``cuda:N``.

    Raises:
        VisforeError: CUDA requested but not available.
    """
    import torch

    spec = _parse_device_spec(spec)
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise VisforeError(f"--device {spec} requested but CUDA is not available (torch {torch.__version__})")
        index = int(spec[5:]) if ":" in spec else 0
        if index >= torch.cuda.device_count():
            raise VisforeError(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s)")
    return torch.device(spec)


def physical_cpu_cores() -> int:
    """Physical cores available to this process (hyper-threads counted once), >= 1.

    Reads ``/proc/cpuinfo`` (physical id, core id pairs) on Linux, capped by the CPU
    affinity mask; falls back to ``os.cpu_count()``.
    """
    try:
        available = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        available = os.cpu_count() or 1
    cores: set[tuple[str, str]] = set()
    try:
        physical = "0"
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("physical id"):
                    physical = line.split(":", 1)[1].strip()
                elif line.startswith("core id"):
                    cores.add((physical, line.split(":", 1)[1].strip()))
    except OSError:
        pass
    return max(1, min(len(cores) or available, available))


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
    from visfore.dataset import open_dataset

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


def _split(config: TrainConfig, ds: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from visfore.clips import split_episodes

    clip_len = config.context + config.horizon
    lengths = ds.episode_lengths
    usable = np.flatnonzero(lengths >= clip_len)
    excluded = np.flatnonzero(lengths < clip_len)
    train_eps, val_eps = split_episodes(usable, config.val_fraction, config.seed)
    return train_eps, val_eps, excluded


def _prepare_data(config: TrainConfig, ds: Any, train_eps: np.ndarray, val_eps: np.ndarray,
                  excluded: np.ndarray) -> _Prepared:
    from visfore.clips import ClipDataset, load_clip_source

    source = load_clip_source(ds)
    train = ClipDataset(
        source, train_eps, context=config.context, horizon=config.horizon,
        stride=config.clip_stride, max_clips=config.max_train_clips, seed=config.seed,
    )
    val = ClipDataset(
        source, val_eps, context=config.context, horizon=config.horizon, stride=1,
        max_clips=config.max_val_clips, seed=config.seed + 1,
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
    (random cycle through a seeded permutation). None when ``n < 2``."""
    if n < 2:
        return None
    perm = np.random.default_rng(seed).permutation(n)
    partner = np.empty(n, dtype=np.int64)
    partner[perm] = np.roll(perm, -1)
    return partner


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
) -> dict[str, Any]:
    """Open-loop per-horizon-step metrics of ``model`` on ``clips``.

    Each clip's context (C frames) and its C + K - 1 actions are fed to
    ``model(context, actions)`` (no targets, so no teacher forcing) and the K predictions
    are scored against the true frames with :func:`visfore_models.metrics.per_sample_metrics`
    (MSE, PSNR in dB, SSIM; data range 1.0), averaged over clips per horizon step.

    Args:
        model: a ``visfore_models.ForwardModel`` (put in eval mode here, restored after).
        clips: the evaluation clips.
        device: where to run.
        batch_size: clips per forward pass.
        indices: evaluate only these clip indices (default: all).
        shuffle_seed: also score the model fed *shuffled actions*: every clip gets the
            whole action sequence of another evaluation clip (a seeded derangement over all
            evaluated clips, so also across batches) -- a test of action sensitivity.
            None skips it.
        baseline: also score the copy-last-frame baseline.
        keep_first: also return the first ``keep_first`` clips' context, targets and
            predictions (CPU float tensors) for images.

    Returns:
        ``{"model": {"mse": (K,), "psnr": (K,), "ssim": (K,)}, "copy_last_frame": {...},
        "shuffled_actions": {...}, "num_clips": n, "num_episodes": m, "examples": ...}``
        with float64 numpy arrays; keys of skipped parts are absent.
    """
    import torch

    from visfore.clips import frames_to_float, split_clip
    from visfore_models import metrics as vm_metrics

    C = clips.context
    idx = np.arange(len(clips)) if indices is None else np.asarray(indices, dtype=np.int64)
    n = int(idx.shape[0])
    partner = shuffled_partners(n, shuffle_seed) if shuffle_seed is not None else None
    sums: dict[str, dict[str, Any]] = {}
    examples: dict[str, list[Any]] = {"context": [], "targets": [], "prediction": []}
    kept = 0
    was_training = model.training
    model.eval()

    def add(part: str, pred: "torch.Tensor", target: "torch.Tensor") -> None:
        values = vm_metrics.per_sample_metrics(pred, target)
        acc = sums.setdefault(part, {})
        for key, v in values.items():
            s = v.sum(dim=0).cpu().numpy()
            acc[key] = acc.get(key, 0.0) + s

    try:
        with torch.no_grad():
            for lo in range(0, n, batch_size):
                pos = np.arange(lo, min(n, lo + batch_size))
                batch = clips[idx[pos]]
                frames = frames_to_float(batch["frames"].to(device))
                actions = batch["actions"].to(device)
                context, targets = split_clip(frames, C)
                pred = model(context, actions)
                add("model", pred, targets)
                if baseline:
                    add("copy_last_frame", vm_metrics.copy_last_frame_baseline(context, targets.shape[1]), targets)
                if partner is not None:
                    other = clips.actions_for(idx[partner[pos]]).to(device)
                    add("shuffled_actions", model(context, other), targets)
                if kept < keep_first:
                    take = min(keep_first - kept, len(pos))
                    examples["context"].append(context[:take].cpu())
                    examples["targets"].append(targets[:take].cpu())
                    examples["prediction"].append(pred[:take].cpu())
                    kept += take
    finally:
        model.train(was_training)
    result: dict[str, Any] = {
        part: {k: np.asarray(v, dtype=np.float64) / max(n, 1) for k, v in acc.items()}
        for part, acc in sums.items()
    }
    result["num_clips"] = n
    result["num_episodes"] = int(np.unique(clips.episode_ids[idx]).shape[0]) if n else 0
    if keep_first:
        result["examples"] = {k: torch.cat(v) if v else None for k, v in examples.items()}
    return result


def _summary(per_step: dict[str, np.ndarray]) -> dict[str, Any]:
    out: dict[str, Any] = {k: [float(x) for x in per_step[k]] for k in ("mse", "psnr", "ssim")}
    out["mean"] = {k: float(np.mean(per_step[k])) for k in ("mse", "psnr", "ssim")}
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
    if config.data is not None and merged.data is not None:
        if Path(config.data).resolve() != Path(merged.data).resolve():
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


def train_model(config: TrainConfig) -> dict[str, Any]:
    """Train and evaluate a forward model; write a run directory; return the metrics.

    Args:
        config: the options (see :class:`TrainConfig`).

    Returns:
        The content of ``metrics.json``: per-horizon-step lists (length K) ``mse``,
        ``psnr`` (dB), ``ssim`` and their ``mean`` for ``model``, ``copy_last_frame`` and
        ``shuffled_actions`` (open-loop, held-out episodes, data range 1.0), plus
        ``beats_copy_last_frame``, ``metric_definitions``, counts, times, ``run_dir``.

    Raises:
        VisforeError: bad options or dataset (before anything is written), an existing
            run directory without ``resume``, a missing checkpoint with ``resume``, or a
            diverged training (non-finite loss).
    """
    import torch

    threads = torch.get_num_threads()
    try:
        return _train_model(config)
    finally:
        torch.set_num_threads(threads)  # the API must not leave the process changed


def _train_model(config: TrainConfig) -> dict[str, Any]:
    import torch

    t_begin = time.monotonic()
    if config.resume and config.out is None and config.name is None:
        raise VisforeError("--resume needs the run directory: pass --out DIR or --name NAME")
    run_dir = runs.resolve_run_dir(COMMAND, out=config.out, name=config.name)
    runs.check_run_dir(run_dir, resume=config.resume)
    ignored: list[str] = []
    if config.resume:
        config, ignored = _resolve_resume(config, run_dir)
    validate_config(config)

    with warnings.catch_warnings():  # torchmetrics' deprecation notices on import
        warnings.simplefilter("ignore", FutureWarning)
        import visfore_models
        from visfore_models import build_model, load_model, model_state
    from visfore_models.metrics import METRIC_DEFINITIONS

    if config.model not in visfore_models.MODELS:
        raise VisforeError(
            f"unknown model {config.model!r}; valid: {', '.join(sorted(visfore_models.MODELS))}"
        )
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

    num_threads = None
    if device.type == "cpu":
        num_threads = config.num_threads or physical_cpu_cores()
        torch.set_num_threads(num_threads)
    else:
        torch.backends.cudnn.benchmark = True
    console = _console(config.progress)

    start_ckpt: dict[str, Any] | None = None
    if config.resume:
        start_ckpt = runs.load_checkpoint(runs.last_checkpoint_path(run_dir))
        if start_ckpt.get("format") != CHECKPOINT_FORMAT:
            raise VisforeError(f"{runs.last_checkpoint_path(run_dir)} is not a train-model checkpoint")

    data = _prepare_data(config, ds, train_eps, val_eps, excluded)
    model.to(device)

    # -- run directory (first write) -------------------------------------------------
    if config.resume:
        runs.ensure_run_subdirs(run_dir)
        for line in ignored:
            console.print(f"[yellow]--resume: ignored {line}[/yellow]")
    else:
        runs.create_run_dir(run_dir)
        runs.write_config(run_dir, _config_record(config, run_dir, ds, data, model, device, num_threads))

    # -- optimiser --------------------------------------------------------------------
    n_train = len(data.train)
    per_epoch = min(n_train, config.clips_per_epoch) if config.clips_per_epoch else n_train
    steps_per_epoch = math.ceil(per_epoch / config.batch_size)
    total_steps = config.epochs * steps_per_epoch
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _lr_lambda(config.lr_schedule, config.warmup_steps, total_steps)
    )
    tf_prob = teacher_forcing_schedule(config.teacher_forcing, total_steps=total_steps)

    epoch, epoch_step, global_step = 0, 0, 0
    history: list[dict[str, Any]] = []
    best_val = math.inf
    train_seconds = 0.0
    partial_loss = (0.0, 0)
    if start_ckpt is not None:
        loaded = load_model(start_ckpt["model"], device=device)
        model.load_state_dict(loaded.state_dict())
        optimizer.load_state_dict(start_ckpt["optimizer"])
        scheduler.load_state_dict(start_ckpt["scheduler"])
        epoch = int(start_ckpt["epoch"])
        epoch_step = int(start_ckpt["epoch_step"])
        global_step = int(start_ckpt["global_step"])
        history = list(start_ckpt.get("history", []))
        best_val = float(start_ckpt.get("best_val_mse", math.inf))
        train_seconds = float(start_ckpt.get("train_seconds", 0.0))
        partial_loss = tuple(start_ckpt.get("partial_loss", (0.0, 0)))
        _set_rng_state(start_ckpt["rng"])
        if epoch >= config.epochs:
            console.print(f"{run_dir} already finished {epoch}/{config.epochs} epochs; evaluating only")
        else:
            console.print(
                f"resuming {run_dir} after epoch {epoch}/{config.epochs}, step {global_step}/{total_steps}"
            )

    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(run_dir / "logs"), purge_step=global_step if start_ckpt else None)

    val_subset = np.sort(
        np.random.default_rng([config.seed, 0x5A1]).permutation(len(data.val))[: config.epoch_val_clips]
    )

    def checkpoint(path: Path, metrics: dict[str, Any]) -> None:
        runs.save_checkpoint(path, {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "model": model_state(model),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "epoch": epoch,
            "epoch_step": epoch_step,
            "global_step": global_step,
            "epochs": config.epochs,
            "train_seconds": train_seconds,
            "partial_loss": [float(loss_sum), int(loss_n)] if epoch_step else [0.0, 0],
            "best_val_mse": best_val,
            "history": history,
            "metrics": metrics,
            "rng": _rng_state(),
            "config": config.to_dict(),
        })

    # -- training ---------------------------------------------------------------------
    stop = _StopFlag()
    stopped_early = False
    budget_s = config.time_budget * 60.0 if config.time_budget else None
    t_train = t_loop = time.monotonic()
    loss_sum, loss_n = float(partial_loss[0]), int(partial_loss[1])
    model.train()
    with stop.catch_sigint(), _progress(console, config.progress) as progress:
        task = progress.add_task(
            "train", total=total_steps, completed=global_step, epoch=min(epoch + 1, config.epochs),
            epochs=config.epochs, loss=float("nan"), cps=0.0,
        )
        while epoch < config.epochs:
            order = _epoch_order(n_train, config.clips_per_epoch, config.seed, epoch)
            batches = [order[i : i + config.batch_size] for i in range(0, len(order), config.batch_size)]
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
                context, targets = frames[:, : config.context], frames[:, config.context :]
                p = tf_prob(global_step)
                pred = model(context, actions, targets=targets if p > 0 else None, teacher_forcing_prob=p)
                loss = torch.nn.functional.mse_loss(pred, targets)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if config.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                optimizer.step()
                scheduler.step()
                value = float(loss.detach())
                if not math.isfinite(value):
                    raise VisforeError(
                        f"training diverged: loss is {value} at step {global_step}; try a lower --lr"
                    )
                global_step += 1
                epoch_step += 1
                loss_sum += value * len(batch["start"])
                loss_n += len(batch["start"])
                clips_window += len(batch["start"])
                now = time.monotonic()
                writer.add_scalar("train/loss", value, global_step)
                writer.add_scalar("train/lr", scheduler.get_last_lr()[0], global_step)
                if p > 0:
                    writer.add_scalar("train/teacher_forcing_prob", p, global_step)
                cps = clips_window / max(now - t_window, 1e-9)
                progress.update(task, advance=1, loss=value, cps=cps, epoch=epoch + 1)
                if now - t_window > 20.0:
                    t_window, clips_window = now, 0
                if stop.requested or (budget_s is not None and now - t_loop > budget_s):
                    break
            train_seconds += time.monotonic() - t_train
            t_train = time.monotonic()
            epoch_done = epoch_step >= len(batches)
            if not epoch_done:
                # stopped mid-epoch: save the exact position for --resume
                stopped_early = True
                checkpoint(runs.last_checkpoint_path(run_dir), {"partial_epoch_train_loss": loss_sum / max(loss_n, 1)})
                if stop.requested:
                    writer.close()
                    console.print(f"interrupted; saved {runs.last_checkpoint_path(run_dir)} (resume with --resume)")
                    raise KeyboardInterrupt
                console.print(
                    f"[yellow]time budget of {config.time_budget} min reached at epoch {epoch + 1}, "
                    f"step {epoch_step}/{len(batches)}; evaluating[/yellow]"
                )
                break
            # -- end of epoch: validation subset, images, checkpoints ------------------
            val = evaluate_open_loop(
                model, data.val, device=device, batch_size=config.eval_batch_size,
                indices=val_subset, shuffle_seed=None, baseline=True, keep_first=config.image_clips,
            )
            epoch += 1
            epoch_step = 0
            epoch_loss = loss_sum / max(loss_n, 1)
            loss_sum, loss_n = 0.0, 0
            record = {
                "epoch": epoch,
                "global_step": global_step,
                "train_loss": epoch_loss,
                "val_mse": float(np.mean(val["model"]["mse"])),
                "val_psnr": float(np.mean(val["model"]["psnr"])),
                "val_ssim": float(np.mean(val["model"]["ssim"])),
                "val_copy_last_frame_psnr": float(np.mean(val["copy_last_frame"]["psnr"])),
                "val_copy_last_frame_ssim": float(np.mean(val["copy_last_frame"]["ssim"])),
                "train_seconds": train_seconds,
            }
            history.append(record)
            for key in ("train_loss", "val_mse", "val_psnr", "val_ssim"):
                writer.add_scalar(f"epoch/{key}", record[key], epoch)
            for key in ("val_copy_last_frame_psnr", "val_copy_last_frame_ssim"):
                writer.add_scalar(f"epoch/{key}", record[key], epoch)
            if config.image_clips and val.get("examples", {}).get("context") is not None:
                ex = val["examples"]
                grid = prediction_grid(ex["context"].numpy(), ex["targets"].numpy(), ex["prediction"].numpy())
                _save_png(run_dir / "images" / f"epoch_{epoch:03d}.png", grid)
                writer.add_image("val/prediction_grid", grid, epoch, dataformats="HWC")
            improved = record["val_mse"] < best_val
            if improved:
                best_val = record["val_mse"]
            checkpoint(runs.last_checkpoint_path(run_dir), record)
            if improved:
                checkpoint(runs.best_checkpoint_path(run_dir), record)
            writer.flush()
            progress.console.print(
                f"epoch {epoch}/{config.epochs}: train loss {record['train_loss']:.5f}, "
                f"val PSNR {record['val_psnr']:.2f} dB / SSIM {record['val_ssim']:.4f} "
                f"(copy-last-frame {record['val_copy_last_frame_psnr']:.2f} / "
                f"{record['val_copy_last_frame_ssim']:.4f})"
                + (" *best*" if improved else "")
            )
            t_train = time.monotonic()
            if stop.requested or (budget_s is not None and time.monotonic() - t_loop > budget_s and epoch < config.epochs):
                if stop.requested:
                    writer.close()
                    raise KeyboardInterrupt
                stopped_early = True
                console.print(f"[yellow]time budget of {config.time_budget} min reached after epoch {epoch}; evaluating[/yellow]")
                break

    # -- final evaluation -------------------------------------------------------------
    t_eval = time.monotonic()
    final = evaluate_open_loop(
        model, data.val, device=device, batch_size=config.eval_batch_size,
        shuffle_seed=config.seed, baseline=True,
    )
    eval_seconds = time.monotonic() - t_eval
    metrics = _metrics_record(
        config, final, METRIC_DEFINITIONS, model, data, history, train_seconds, eval_seconds,
        epoch, epoch_step, global_step, stopped_early, device, run_dir,
    )
    metrics["wall_seconds"] = time.monotonic() - t_begin
    runs.write_json(run_dir / runs.METRICS_NAME, metrics)
    for part in ("model", "copy_last_frame", "shuffled_actions"):
        if part in metrics:
            for key, value in metrics[part]["mean"].items():
                writer.add_scalar(f"final/{part}/{key}", value, global_step)
    writer.close()
    if config.progress:
        print_metrics_table(metrics, console)
    return metrics


def _frames_float(frames: "torch.Tensor", device: "torch.device") -> "torch.Tensor":
    from visfore.clips import frames_to_float

    return frames_to_float(frames.to(device, non_blocking=True))


def _config_record(config: TrainConfig, run_dir: Path, ds: Any, data: _Prepared, model: Any,
                   device: Any, num_threads: int | None) -> dict[str, Any]:
    import torch

    import visfore

    options = json.loads(json.dumps(config.to_dict()))
    options["data"] = str(Path(config.data).resolve()) if config.data else None
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
        },
        "model": {
            "name": model.name,
            "config": json.loads(json.dumps(model.config())),
            "num_parameters": int(model.num_parameters()),
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
        "predictions; no teacher forcing); per horizon step k = 1..K",
        "data_range": 1.0,
        "context": config.context,
        "horizon": config.horizon,
    }
    for part in ("model", "copy_last_frame", "shuffled_actions"):
        if part in final:
            out[part] = _summary(final[part])
    m, b = out["model"]["mean"], out["copy_last_frame"]["mean"]
    out["beats_copy_last_frame"] = {
        "psnr": m["psnr"] > b["psnr"],
        "ssim": m["ssim"] > b["ssim"],
        "both": m["psnr"] > b["psnr"] and m["ssim"] > b["ssim"],
        "psnr_gain_db": m["psnr"] - b["psnr"],
        "ssim_gain": m["ssim"] - b["ssim"],
    }
    if "shuffled_actions" in out:
        s = out["shuffled_actions"]["mean"]
        out["action_sensitivity"] = {
            "psnr_drop_db": m["psnr"] - s["psnr"],
            "ssim_drop": m["ssim"] - s["ssim"],
            "mse_ratio": s["mse"] / m["mse"] if m["mse"] > 0 else None,
            "note": "shuffled_actions: each validation clip gets the whole action sequence of "
            "another validation clip (a seeded derangement); a model that uses its actions "
            "must get worse",
        }
    out["metric_definitions"] = dict(definitions)
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
    from rich.console import Console

    return Console(quiet=not enabled, highlight=False)


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


def print_metrics_table(metrics: dict[str, Any], console: Any = None) -> None:
    """Print the open-loop evaluation as a rich table (model / copy-last-frame / shuffled
    actions: mean PSNR, SSIM and MSE over the K-step horizon, PSNR at steps 1 and K) and a
    line saying whether the model beats copy-last-frame on both PSNR and SSIM."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    K = metrics["horizon"]
    table = Table(
        title=f"open-loop {K}-step prediction, {metrics['num_val_clips']} clips of "
        f"{metrics['num_val_episodes']} held-out episodes",
        caption=f"means over the {K} horizon steps; PSNR and SSIM with data range 1.0",
    )
    table.add_column("predictor", no_wrap=True)
    table.add_column("PSNR dB", justify="right", no_wrap=True)
    table.add_column("SSIM", justify="right", no_wrap=True)
    table.add_column("MSE", justify="right", no_wrap=True)
    table.add_column("PSNR@1", justify="right", no_wrap=True)
    table.add_column(f"PSNR@{K}", justify="right", no_wrap=True)
    names = {"model": f"model ({metrics['model_name']})", "copy_last_frame": "copy-last-frame",
             "shuffled_actions": "shuffled-actions"}
    for part, label in names.items():
        if part not in metrics:
            continue
        r = metrics[part]
        table.add_row(label, f"{r['mean']['psnr']:.2f}", f"{r['mean']['ssim']:.4f}",
                      f"{r['mean']['mse']:.5f}", f"{r['psnr'][0]:.2f}", f"{r['psnr'][-1]:.2f}")
    console.print(table)
    beat = metrics["beats_copy_last_frame"]
    verdict = "[green]yes[/green]" if beat["both"] else "[red]no[/red]"
    console.print(
        f"model beats copy-last-frame on both PSNR and SSIM: {verdict} "
        f"(PSNR {beat['psnr_gain_db']:+.2f} dB, SSIM {beat['ssim_gain']:+.4f})"
    )
    if "action_sensitivity" in metrics:
        a = metrics["action_sensitivity"]
        console.print(f"shuffled actions cost {a['psnr_drop_db']:.2f} dB PSNR and {a['ssim_drop']:.4f} SSIM")
    console.print(
        f"trained {metrics['epochs_completed']}/{metrics['epochs']} epochs ({metrics['global_step']} steps) "
        f"in {metrics['train_seconds']:.0f} s, evaluated in {metrics['eval_seconds']:.0f} s; "
        f"run: {metrics['run_dir']}"
    )


# ---------------------------------------------------------------------------------------
# Typer command
# ---------------------------------------------------------------------------------------
def _parse_model_kwargs(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise VisforeError(f"--model-kwargs is not valid JSON ({exc.msg})") from None
    if not isinstance(value, dict):
        raise VisforeError("--model-kwargs must be a JSON object, e.g. '{\"lstm_channels\": [32, 32]}'")
    return value


@handle_errors
def train_model_command(
    data: Annotated[Optional[Path], typer.Option(help="Visfore Zarr dataset (from `visfore collect`).")] = None,
    model: Annotated[str, typer.Option(help="Forward model name (visfore_models.MODELS).")] = "convlstm",
    context: Annotated[int, typer.Option(help="C context frames given to the model.")] = 2,
    horizon: Annotated[int, typer.Option(help="K frames predicted open-loop.")] = 10,
    epochs: Annotated[int, typer.Option(help="Total training epochs (also the target on --resume).")] = 10,
    batch_size: Annotated[int, typer.Option(help="Clips per optimisation step.")] = 16,
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = 1e-3,
    lr_schedule: Annotated[str, typer.Option(help="cosine (to 10%, after warm-up) or constant.")] = "cosine",
    teacher_forcing: Annotated[str, typer.Option(help="Probability of feeding true frames in training: P, 'inverse-sigmoid:K' or 'linear:P0:P1[:STEPS]'. 0 = open-loop. Evaluation is always open-loop.")] = "0",
    seed: Annotated[int, typer.Option(help="Seed of init, split, clip order and subsets.")] = 0,
    val_fraction: Annotated[float, typer.Option(help="Fraction of episodes held out for validation.")] = 0.1,
    clip_stride: Annotated[int, typer.Option(help="Rows between training clip starts in an episode.")] = 1,
    max_train_clips: Annotated[Optional[int], typer.Option(help="Use a fixed seeded subset of training clips.")] = None,
    clips_per_epoch: Annotated[int, typer.Option(help="Training clips drawn per epoch (a fresh seeded draw each epoch, without replacement); 0 = every training clip.")] = 800,
    max_val_clips: Annotated[Optional[int], typer.Option(help="Evaluate on at most this many validation clips (seeded subset).")] = 256,
    epoch_val_clips: Annotated[int, typer.Option(help="Validation clips scored after each epoch.")] = 32,
    model_kwargs: Annotated[Optional[str], typer.Option(help="JSON object of extra model options, e.g. '{\"lstm_channels\": [32, 32]}'.")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Run directory (default runs/train-model-<UTC time>).")] = None,
    name: Annotated[Optional[str], typer.Option(help="Run name: runs/train-model-NAME.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out/--name from checkpoints/last.pt.")] = False,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    num_workers: Annotated[int, typer.Option(help="DataLoader worker processes.")] = 0,
    num_threads: Annotated[Optional[int], typer.Option(help="Torch CPU threads (default: physical cores).")] = None,
    time_budget: Annotated[Optional[float], typer.Option(help="Stop training after this many minutes (checkpointed), then evaluate.")] = None,
) -> None:
    """Train an action-conditioned forward model and evaluate it open-loop on held-out episodes."""
    config = TrainConfig(
        data=str(data) if data is not None else None,
        model=model,
        model_kwargs=_parse_model_kwargs(model_kwargs),
        context=context,
        horizon=horizon,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        lr_schedule=lr_schedule,
        teacher_forcing=teacher_forcing,
        seed=seed,
        val_fraction=val_fraction,
        clip_stride=clip_stride,
        max_train_clips=max_train_clips,
        clips_per_epoch=clips_per_epoch,
        max_val_clips=max_val_clips,
        epoch_val_clips=epoch_val_clips,
        out=str(out) if out is not None else None,
        name=name,
        resume=resume,
        device=device,
        num_workers=num_workers,
        num_threads=num_threads,
        time_budget=time_budget,
    )
    train_model(config)
