"""Open-loop evaluation of forward models, its summary and its images.

* :func:`evaluate_open_loop` (options: :class:`EvalOptions`): per-horizon-step MSE, PSNR,
  SSIM, foreground PSNR (and LPIPS) of a model on clips, next to the copy-last-frame and
  mean-frame baselines and the same model fed shuffled actions;
* :func:`summary`: per-step lists and their means, JSON-plain (``metrics.json``);
* :func:`prediction_grid`: context / truth / prediction tiles as one RGB image;
  :func:`save_png` writes it atomically.

The results table is printed by the command (:func:`visfore.worldmodels.report.print_metrics_table`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from PIL import Image, ImageDraw

from visfore.core import runs
from visfore.data.clips import ClipDataset, frames_to_float, split_clip
from visfore_models import metrics as vm
from visfore_models.metrics import derangement, step_sum_count

__all__ = [
    "FOREGROUND_THRESHOLD",
    "EvalOptions",
    "evaluate_open_loop",
    "json_float",
    "nanmean",
    "prediction_grid",
    "save_png",
    "shuffled_partners",
    "summary",
]

#: Foreground threshold of the foreground PSNR in metrics.json (max abs channel diff on [0, 1]).
FOREGROUND_THRESHOLD = 0.02


def nanmean(values: np.ndarray) -> float:
    """Mean of the finite values (NaN when none)."""
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    return float(np.mean(finite)) if finite.size else float("nan")


def shuffled_partners(n: int, seed: int) -> np.ndarray | None:
    """A derangement of ``range(n)``: clip ``i`` gets the actions of clip ``partner[i] != i``
    (random cycle through a seeded permutation; :func:`visfore_models.metrics.derangement`).
    None when ``n < 2``."""
    if n < 2:
        return None
    return derangement(n, seed)


class _StepSums:
    """Per part and metric, running ``(sum, count)`` per horizon step."""

    def __init__(self) -> None:
        self.sums: dict[str, dict[str, list[Any]]] = {}

    def add_values(self, part: str, values: dict[str, torch.Tensor], mask: torch.Tensor) -> None:
        acc = self.sums.setdefault(part, {})
        for key, v in values.items():
            if key == "foreground_pixels":
                continue
            valid = mask
            if key == "foreground_psnr" and "foreground_pixels" in values:
                valid = mask & (values["foreground_pixels"] > 0)
            step_sum, step_count = step_sum_count(v, valid)
            s, c = step_sum.cpu().numpy(), step_count.cpu().numpy()
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


@dataclass
class EvalOptions:
    """How :func:`evaluate_open_loop` scores a model (every field optional).

    Attributes:
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
    """

    batch_size: int = 32
    indices: Optional[np.ndarray] = None
    shuffle_seed: Optional[int] = 0
    baseline: bool = True
    keep_first: int = 0
    mean_frame: Any = None
    samples: int = 1
    foreground_threshold: Optional[float] = FOREGROUND_THRESHOLD
    lpips: bool = False
    amp_dtype: Any = None
    seed: int = 0


class _Scorer:
    """The per-batch work of :func:`evaluate_open_loop`: roll the model out ``n_samples``
    times and score predictions (and baselines) into per-step sums."""

    def __init__(self, model: Any, device: torch.device, opts: EvalOptions, n_samples: int) -> None:
        self.vm, self.model, self.device, self.opts, self.n_samples = vm, model, device, opts, n_samples
        self.acc = _StepSums()
        self.use_lpips, self.lpips_note = False, None
        if opts.lpips:
            lp_model, self.lpips_note = vm.load_lpips()
            self.use_lpips = lp_model is not None
        self.infer_seconds, self.infer_frames = 0.0, 0

    def rollout(self, context: torch.Tensor, actions: torch.Tensor) -> list[torch.Tensor]:
        ctx = (
            torch.autocast(device_type=self.device.type, dtype=self.opts.amp_dtype)
            if self.opts.amp_dtype is not None
            else contextlib.nullcontext()
        )
        with ctx:
            return [self.model(context, actions).float() for _ in range(self.n_samples)]

    def timed_rollout(self, context: torch.Tensor, actions: torch.Tensor) -> list[torch.Tensor]:
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        sync()
        t0 = time.perf_counter()
        preds = self.rollout(context, actions)
        sync()
        self.infer_seconds += time.perf_counter() - t0
        self.infer_frames += self.n_samples * preds[0].shape[0] * preds[0].shape[1]
        return preds

    def score(
        self, preds: list[torch.Tensor], targets: torch.Tensor, context: torch.Tensor, mask: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
        """Per-sample values (mean over the N samples) and, for N > 1, best-of-N values."""
        vm, threshold = self.vm, self.opts.foreground_threshold
        best = None
        if len(preds) == 1:
            values = vm.per_sample_metrics(preds[0], targets, mask)
        else:
            bon = vm.best_of_n_metrics(torch.stack(preds), targets, mask)
            values, best = dict(bon["mean_of_samples"]), dict(bon["best_of_n"])
        if threshold is not None:
            fg = [vm.foreground_psnr_per_sample(p, targets, context, threshold, mask) for p in preds]
            values["foreground_psnr"] = torch.stack(fg).mean(dim=0)
            values["foreground_pixels"] = vm.foreground_mask(context, targets, threshold).sum(dim=(2, 3))
        if self.use_lpips:
            lp = [vm.lpips_per_sample(p, targets, mask)[0] for p in preds]
            values["lpips"] = torch.stack(lp).mean(dim=0)  # type: ignore[arg-type]
        return values, best

    def add(
        self, part: str, preds: list[torch.Tensor], targets: torch.Tensor, context: torch.Tensor, mask: torch.Tensor
    ) -> None:
        values, best = self.score(preds, targets, context, mask)
        self.acc.add_values(part, values, mask)
        if best is not None:
            self.acc.add_values("best_of_n", best, mask)

    def baselines(self, context: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> None:
        K = targets.shape[1]
        self.add("copy_last_frame", [self.vm.copy_last_frame_baseline(context, K)], targets, context, mask)
        if self.opts.mean_frame is not None:
            mf = self.vm.mean_frame_baseline(self.opts.mean_frame.to(self.device, torch.float32), len(context), K)
            self.add("mean_frame", [mf], targets, context, mask)


def evaluate_open_loop(
    model: Any, clips: ClipDataset, *, device: torch.device, options: EvalOptions | None = None, **overrides: Any
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
            When ``model.stochastic`` is true it is sampled ``options.samples`` times per clip.
        clips: the evaluation clips.
        device: where to run.
        options: what to score (:class:`EvalOptions`; default ``EvalOptions()``).
        **overrides: fields of :class:`EvalOptions` given directly
            (``evaluate_open_loop(m, clips, device=d, batch_size=7)``).

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
    opts = dataclasses.replace(options or EvalOptions(), **overrides)
    idx = np.arange(len(clips)) if opts.indices is None else np.asarray(opts.indices, dtype=np.int64)
    n = int(idx.shape[0])
    stochastic = bool(getattr(model, "stochastic", False))
    n_samples = max(1, int(opts.samples)) if stochastic else 1
    partner = shuffled_partners(n, opts.shuffle_seed) if opts.shuffle_seed is not None else None
    scorer = _Scorer(model, device, opts, n_samples)
    examples: dict[str, list[Any]] = {"context": [], "targets": [], "prediction": []}
    kept = 0
    was_training = model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.no_grad():
            torch.manual_seed(opts.seed)
            for lo in range(0, n, opts.batch_size):
                pos = np.arange(lo, min(n, lo + opts.batch_size))
                batch = clips[idx[pos]]
                frames = frames_to_float(batch["frames"].to(device))
                mask = batch["mask"].to(device)
                context, targets = split_clip(frames, clips.context)
                preds = scorer.timed_rollout(context, batch["actions"].to(device))
                scorer.add("model", preds, targets, context, mask)
                if opts.baseline:
                    scorer.baselines(context, targets, mask)
                if partner is not None:
                    other = clips.actions_for(idx[partner[pos]]).to(device)
                    scorer.add("shuffled_actions", scorer.rollout(context, other), targets, context, mask)
                if kept < opts.keep_first:
                    take = min(opts.keep_first - kept, len(pos))
                    for key, value in (("context", context), ("targets", targets), ("prediction", preds[0])):
                        examples[key].append(value[:take].cpu())
                    kept += take
    finally:
        model.train(was_training)
    return _eval_result(scorer, clips, idx, opts, n_samples, stochastic, device, examples)


def _eval_result(
    scorer: _Scorer,
    clips: ClipDataset,
    idx: np.ndarray,
    opts: EvalOptions,
    n_samples: int,
    stochastic: bool,
    device: torch.device,
    examples: dict[str, list[Any]],
) -> dict[str, Any]:
    n = int(idx.shape[0])
    result: dict[str, Any] = scorer.acc.means()
    result["num_clips"] = n
    result["num_episodes"] = int(np.unique(clips.episode_ids[idx]).shape[0]) if n else 0
    result["num_padded_clips"] = int(np.asarray(clips.padded)[idx].sum()) if n else 0
    counts = scorer.acc.counts("model", "mse")
    result["valid_clips_per_step"] = counts if counts is not None else np.zeros(clips.horizon, np.int64)
    result["samples"] = n_samples
    result["stochastic"] = stochastic
    seconds, frames = scorer.infer_seconds, scorer.infer_frames
    precision = "autocast " + str(opts.amp_dtype).replace("torch.", "") if opts.amp_dtype is not None else "float32"
    result["inference"] = {
        "frames": frames,
        "seconds": seconds,
        "frames_per_second": frames / seconds if seconds > 0 else None,
        "note": f"model forward passes only ({n_samples} sample(s) per clip, batch {opts.batch_size}, "
        f"{precision}, {device.type}); baselines, shuffled actions and metrics excluded",
    }
    if opts.lpips:
        result["lpips_note"] = scorer.lpips_note
    if opts.keep_first:
        result["examples"] = {k: torch.cat(v) if v else None for k, v in examples.items()}
    return result


_METRIC_ORDER = ("mse", "psnr", "ssim", "foreground_psnr", "lpips")


def json_float(x: Any) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def summary(per_step: dict[str, np.ndarray]) -> dict[str, Any]:
    """Per-step lists (null where a step has no valid clip) and their means over steps."""
    keys = [k for k in _METRIC_ORDER if k in per_step] + [k for k in per_step if k not in _METRIC_ORDER]
    out: dict[str, Any] = {k: [json_float(x) for x in per_step[k]] for k in keys}
    mean: dict[str, Any] = {}
    for k in keys:
        values = np.asarray(per_step[k], dtype=np.float64)
        finite = values[np.isfinite(values)]
        mean[k] = float(np.mean(finite)) if finite.size else None
    out["mean"] = mean
    return out


def prediction_grid(
    context: np.ndarray, targets: np.ndarray, prediction: np.ndarray, *, scale: int | None = None
) -> np.ndarray:
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


def save_png(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)  # e.g. RUN/images/, created by its first image
    runs.atomic_write(path, lambda f: Image.fromarray(image).save(f, format="PNG"))
