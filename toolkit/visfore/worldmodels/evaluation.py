"""Open-loop evaluation of forward models, its summary and its images.

* :func:`evaluate_open_loop` (options: :class:`EvalOptions`): per-horizon-step MSE, PSNR,
  SSIM, foreground PSNR (and LPIPS) of a model on clips, next to the copy-last-frame and
  mean-frame baselines and the same model fed shuffled actions; for latent models
  (``model.latent``) also in latent space (:class:`_LatentScorer`): the action
  sensitivity of the imagined features and, with a probe (``train-model --probe
  keypoints``), the probe's key-point error (cm) and joint-angle error (degrees) per
  horizon step (definitions: :data:`LATENT_DEFINITIONS`);
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
    "LATENT_DEFINITIONS",
    "EvalOptions",
    "ProbeTargets",
    "probe_errors",
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

#: What the latent-space numbers of metrics.json mean (``definitions``, latent models only).
LATENT_DEFINITIONS: dict[str, str] = {
    "latent_rollout": "latent models: init_state on the C context frames (and their C - 1 actions), then "
    "imagine(K actions, decode=False): the features (model.features, the planner's space) of the K "
    "imagined states, open loop, no frame decoded",
    "latent_action_sensitivity": "per horizon step, the mean Euclidean distance between the imagined "
    "features of a clip under its own actions and under the whole action sequence of another clip (the "
    "shuffled-actions derangement of the decoded metrics), divided by the feature scale; 0 = the actions "
    "change nothing",
    "feature_scale": "per horizon step, the RMS distance of the imagined features (own actions) from their "
    "mean over the evaluated clips: sqrt(E||f - E f||^2), the spread of features between clips",
    "resample_distance": "stochastic models: the same distance between two rollouts of a clip under its own "
    "actions (different latent samples), the sampling noise the action effect must exceed",
    "probe": "state-supervised: a read-out head from the latent features to the key points (m) and joint "
    "angles (rad) of the dataset's states (train-model --probe keypoints): on detached features of "
    "observed frames, or with --probe-weight above 0 also on imagined ones and through the model",
    "probe_keypoint_error_cm": "per horizon step, the mean over the valid clips of the mean over key points "
    "of ||probe(features of the imagined state) - true key point|| over the key point's axes, in cm",
    "probe_joint_error_deg": "per horizon step, the mean over the valid clips and joints of "
    "|wrap(probe angle - true angle)| in degrees, wrap into [-180, 180)",
    "probe_velocity_error_rad_s": "--probe keypoints+velocities only: per horizon step, the mean over the "
    "valid clips and joints of |probe velocity - true joint velocity| in rad/s",
    "probe_copy_last_state": "the key points and joint angles of the last context frame o_{C-1} taken as the "
    "prediction of every step (the robot does not move): the copy-last-frame baseline of the probe",
    "probe_observed": "the probe read off the filtered state of the real context frames (init_state, no "
    "imagination) against o_{C-1}'s labels: the probe's own read-out error, the floor of the open-loop one",
}


@dataclass(frozen=True)
class ProbeTargets:
    """The probe's true values for :func:`evaluate_open_loop`.

    Attributes:
        labels: ``(N, P)`` float32, one row per row of the clips' :class:`ClipSource`
            (key points in metres, then joint angles in radians;
            :class:`visfore.data.labels.StateLabels`).
        layout: the :class:`visfore.data.labels.ProbeLayout` of the columns.
    """

    labels: np.ndarray
    layout: Any


def probe_errors(pred: torch.Tensor, true: torch.Tensor, layout: Any) -> dict[str, torch.Tensor]:
    """Key-point, joint-angle and joint-velocity errors of probe outputs.

    Args:
        pred, true: ``(..., P)`` probe outputs and labels (layout: ``layout``, a
            :class:`visfore.data.labels.ProbeLayout`): key points in metres, joint angles
            in radians, then (``keypoints+velocities``) joint velocities in rad/s.

    Returns:
        ``{"keypoint_error_cm": (...,), "joint_error_deg": (...,), "velocity_error_rad_s":
        (...,)}`` float64: the mean over key points of the Euclidean error over their axes,
        in centimetres; the mean over joints of the wrapped absolute angle error, in
        degrees (absent when the layout has no joints); the mean over joints of the
        absolute velocity error, in rad/s (only when the layout has velocities).
    """
    pred, true = pred.double(), true.double().to(pred.device)
    G, D = layout.keypoint_coords, layout.axes_per_keypoint
    dk = (pred[..., :G] - true[..., :G]).reshape(*pred.shape[:-1], G // D, D)
    out = {"keypoint_error_cm": 100.0 * torch.linalg.vector_norm(dk, dim=-1).mean(dim=-1)}
    joints = layout.joint_slice
    if layout.num_joints:
        dq = torch.remainder(pred[..., joints] - true[..., joints] + math.pi, 2 * math.pi) - math.pi
        out["joint_error_deg"] = torch.rad2deg(dq.abs()).mean(dim=-1)
    if getattr(layout, "num_velocities", 0):
        vel = layout.velocity_slice
        out["velocity_error_rad_s"] = (pred[..., vel] - true[..., vel]).abs().mean(dim=-1)
    return out


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
        latent: for a latent model (``model.latent``), also score it in latent space
            (the action sensitivity of its features; the probe with ``probe``). These
            rollouts draw from their own seeded RNG (one per batch), so the decoded
            metrics are the same with and without them. Ignored for pixel models.
        probe: score the model's probe (``model.probe_dim > 0``) against these labels,
            per horizon step (:data:`LATENT_DEFINITIONS`).
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
    latent: bool = True
    probe: Optional[ProbeTargets] = None


def _autocast(device: torch.device, dtype: Any) -> contextlib.AbstractContextManager[Any]:
    return torch.autocast(device_type=device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


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
        with _autocast(self.device, self.opts.amp_dtype):
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


class _LatentScorer:
    """The latent-space part of :func:`evaluate_open_loop` (latent models): per batch, the
    features of ``init_state`` + ``imagine(decode=False)`` under the clips' own actions,
    under shuffled actions and (stochastic models) once more under their own; the probe's
    errors on the first. Accumulates per-step sums over batches."""

    def __init__(self, model: Any, device: torch.device, opts: EvalOptions, clips: ClipDataset) -> None:
        self.model, self.device, self.opts, self.clips = model, device, opts, clips
        self.acc = _StepSums()
        K = clips.horizon
        self.f_sum: torch.Tensor | None = None  # (K, F) float64
        self.sq_sum = torch.zeros(K, dtype=torch.float64)
        self.count = torch.zeros(K, dtype=torch.int64)
        probe = opts.probe if int(getattr(model, "probe_dim", 0) or 0) > 0 else None
        self.probe = probe
        self.labels = torch.from_numpy(np.ascontiguousarray(probe.labels, dtype=np.float32)) if probe else None
        self.observed: dict[str, list[float]] = {}

    def features(self, context: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(features of the filtered state (B, F), imagined features (B, K, F))``, float32."""
        C = context.shape[1]
        with _autocast(self.device, self.opts.amp_dtype):
            state = self.model.init_state(context, actions[:, : C - 1])
            feats, _ = self.model.imagine(state, actions[:, C - 1 :], decode=False)
            return self.model.features(state).float(), feats.float()

    def _labels(self, index: np.ndarray, offsets: np.ndarray) -> torch.Tensor:
        """Labels ``(B, len(offsets), P)`` of clip rows ``start + offsets`` (clamped to the
        episode's last row, as the padded frames are)."""
        assert self.labels is not None
        rows = self.clips.starts[index][:, None] + offsets[None, :]
        rows = np.minimum(rows, self.clips.ends[index][:, None] - 1)
        return self.labels[torch.from_numpy(rows)].to(self.device)

    def add(
        self,
        context: torch.Tensor,
        actions: torch.Tensor,
        other: torch.Tensor | None,
        index: np.ndarray,
        mask: torch.Tensor,
    ) -> None:
        C, K = self.clips.context, self.clips.horizon
        observed, feats = self.features(context, actions)
        values: dict[str, torch.Tensor] = {}
        if other is not None:
            _, shuffled = self.features(context, other)
            values["feature_distance"] = torch.linalg.vector_norm(feats.double() - shuffled.double(), dim=-1)
            self.acc.add_values("latent_shuffled", values, mask)
        if bool(getattr(self.model, "stochastic", False)):
            _, again = self.features(context, actions)
            dist = torch.linalg.vector_norm(feats.double() - again.double(), dim=-1)
            self.acc.add_values("latent_resample", {"feature_distance": dist}, mask)
        f = feats.double().cpu()
        m = mask.cpu()
        if self.f_sum is None:
            self.f_sum = torch.zeros(K, f.shape[-1], dtype=torch.float64)
        self.f_sum += torch.where(m[..., None], f, 0.0).sum(dim=0)
        self.sq_sum += torch.where(m, f.pow(2).sum(dim=-1), 0.0).sum(dim=0)
        self.count += m.sum(dim=0)
        if self.probe is not None:
            layout = self.probe.layout
            true = self._labels(index, np.arange(C, C + K))  # (B, K, P): o_C .. o_{C+K-1}
            last = self._labels(index, np.array([C - 1]))  # (B, 1, P): o_{C-1}
            self.acc.add_values("probe_model", probe_errors(self.model.probe(feats).float(), true, layout), mask)
            self.acc.add_values("probe_copy_last_state", probe_errors(last.expand_as(true), true, layout), mask)
            for key, v in probe_errors(self.model.probe(observed).float(), last[:, 0], layout).items():
                acc = self.observed.setdefault(key, [0.0, 0])
                acc[0] += float(v.sum())
                acc[1] += int(v.shape[0])

    def result(self) -> dict[str, Any]:
        """``{"latent": {...}, ["probe": {...}]}`` (float64 numpy per-step arrays)."""
        means = self.acc.means()
        K = self.clips.horizon
        n = self.count.double().clamp(min=1)
        if self.f_sum is not None:
            var = self.sq_sum / n - (self.f_sum / n[:, None]).pow(2).sum(dim=-1)
            scale = torch.where(self.count > 0, var.clamp(min=0).sqrt(), float("nan")).numpy()
            pooled = float(np.sqrt(np.nanmean(scale**2))) if np.isfinite(scale).any() else float("nan")
        else:
            scale, pooled = np.full(K, np.nan), float("nan")
        latent: dict[str, Any] = {
            "feature_dim": int(self.model.feature_dim),
            "feature_scale": scale.astype(np.float64),
            "feature_scale_pooled": pooled,
        }
        with np.errstate(invalid="ignore", divide="ignore"):
            if "latent_shuffled" in means:
                d = means["latent_shuffled"]["feature_distance"]
                latent["feature_distance_shuffled"] = d
                latent["relative_shuffled"] = d / scale
            if "latent_resample" in means:
                d = means["latent_resample"]["feature_distance"]
                latent["feature_distance_resample"] = d
                latent["relative_resample"] = d / scale
        out: dict[str, Any] = {"latent": latent}
        if self.probe is not None:
            out["probe"] = {
                "model": means.get("probe_model", {}),
                "copy_last_state": means.get("probe_copy_last_state", {}),
                "observed": {k: s / c if c else float("nan") for k, (s, c) in self.observed.items()},
                "layout": self.probe.layout,
            }
        return out


def _batch_seed(seed: int, lo: int) -> int:
    """The seed of the latent rollouts of the batch starting at position ``lo``."""
    return (int(seed) * 1_000_003 + 7919 * int(lo) + 0x1A7E) % (2**63)


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
        arrays (NaN where a step has no valid clip); keys of skipped parts are absent.
        Latent models add ``"latent": {"feature_dim", "feature_scale": (K,),
        "feature_scale_pooled", ["feature_distance_shuffled": (K,), "relative_shuffled":
        (K,)], ["feature_distance_resample": (K,), "relative_resample": (K,)]}`` and, with
        ``options.probe`` and a model with a probe, ``"probe": {"model": {"keypoint_error_cm":
        (K,), "joint_error_deg": (K,)}, "copy_last_state": {...}, "observed": {... floats},
        "layout": ProbeLayout}`` (:data:`LATENT_DEFINITIONS`). For
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
    latent = _LatentScorer(model, device, opts, clips) if opts.latent and getattr(model, "latent", False) else None
    rng_devices = [device] if device.type == "cuda" else []
    examples: dict[str, list[Any]] = {"context": [], "targets": [], "prediction": []}
    kept = 0
    was_training = model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=rng_devices), torch.no_grad():
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
                other = clips.actions_for(idx[partner[pos]]).to(device) if partner is not None else None
                if other is not None:
                    scorer.add("shuffled_actions", scorer.rollout(context, other), targets, context, mask)
                if latent is not None:
                    with torch.random.fork_rng(devices=rng_devices):
                        torch.manual_seed(_batch_seed(opts.seed, lo))
                        latent.add(context, batch["actions"].to(device), other, idx[pos], mask)
                if kept < opts.keep_first:
                    take = min(opts.keep_first - kept, len(pos))
                    for key, value in (("context", context), ("targets", targets), ("prediction", preds[0])):
                        examples[key].append(value[:take].cpu())
                    kept += take
    finally:
        model.train(was_training)
    result = _eval_result(scorer, clips, idx, opts, n_samples, stochastic, device, examples)
    if latent is not None:
        result.update(latent.result())
    return result


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
