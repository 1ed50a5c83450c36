"""Per-horizon-step image metrics for video prediction (pure functions, no state).

All functions take ``pred`` and ``target`` of shape ``(B, K, 3, H, W)`` (floating, values in
``[0, 1]``, same shape and device) where ``K`` is the horizon. ``*_per_sample`` functions
return ``(B, K)`` float64 tensors (one value per frame, convenient to accumulate over
batches); ``*_per_step`` functions return ``(K,)`` float64 tensors, the mean over the batch
of the per-frame values (so PSNR is computed per frame, then averaged).

**Masks.** Every per-sample and per-step function takes an optional ``mask``: a ``(B, K)``
bool tensor, ``True`` where the frame is real and ``False`` where it is padding (a clip of an
episode shorter than ``C + K`` repeats its last frame; see :mod:`visfore.data.clips`).
Per-sample values of padded frames are NaN; a per-step value is the mean over the valid
samples of that step only, and NaN for a step with no valid sample. A NaN produced by the
prediction itself at a valid frame is *not* skipped: it propagates to the mean.

Definitions (also in :data:`METRIC_DEFINITIONS`, written into ``metrics.json``):

* MSE: mean over the 3 channels and H x W pixels of ``(pred - target)**2`` on ``[0, 1]``.
* PSNR: ``10 * log10(1 / max(MSE, 1e-10))`` dB per frame (data_range = 1.0; capped at
  100 dB for identical frames so averages stay finite).
* SSIM: structural similarity (Wang, Bovik, Sheikh & Simoncelli, "Image Quality Assessment:
  From Error Visibility to Structural Similarity", IEEE TIP 2004) computed by
  ``torchmetrics.functional.image.structural_similarity_index_measure`` with
  data_range = 1.0, an 11 x 11 Gaussian window with sigma 1.5, k1 = 0.01, k2 = 0.03: each
  RGB channel is reflect-padded by 5 px, local means/variances/covariance are Gaussian-
  weighted, and the SSIM map (H x W per channel) is averaged over channels and pixels, per
  frame.
* Foreground PSNR (:func:`foreground_psnr_per_sample`): PSNR over the *foreground* pixels
  only, those where the target frame differs from the first context frame ``o_0`` by more
  than ``threshold`` (default 0.02 on [0, 1]) in at least one channel. On mostly static
  scenes (a small arm on a plain background) full-frame PSNR is dominated by the
  background that any predictor copies; this one scores the part that moves. NaN for a
  frame without foreground pixel (excluded from the means).
* Baselines: copy-last-frame (:func:`copy_last_frame_baseline`) and the training set's
  mean frame (:func:`mean_frame_baseline`).
* Action sensitivity (:func:`action_sensitivity`): the PSNR drop when each clip is given the
  actions of another clip of the batch (a seeded derangement).
* LPIPS (:func:`lpips_per_sample`; Zhang et al. CVPR 2018, AlexNet, v0.1): only when the
  ``lpips`` package *and* its weights are on disk; nothing is ever downloaded.
* Stochastic models (:func:`best_of_n_metrics`): metrics over N sampled futures, averaged
  over the samples and for the best sample of each clip.

All metrics are evaluation-only: inputs are detached and no gradient flows.
"""

from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path
from typing import Any, Callable, overload

import numpy as np
import torch

with warnings.catch_warnings():  # torchmetrics' deprecation notices on import are not our users'
    warnings.simplefilter("ignore", FutureWarning)
    from torchmetrics.functional.image import structural_similarity_index_measure

__all__ = [
    "FOREGROUND_THRESHOLD",
    "METRIC_DEFINITIONS",
    "PSNR_MAX_DB",
    "action_sensitivity",
    "best_of_n_metrics",
    "copy_last_frame_baseline",
    "derangement",
    "foreground_mask",
    "foreground_psnr_per_sample",
    "foreground_psnr_per_step",
    "load_lpips",
    "lpips_per_sample",
    "masked_mean_per_step",
    "mean_frame_baseline",
    "mse_per_sample",
    "mse_per_step",
    "per_sample_metrics",
    "per_step_metrics",
    "psnr_from_mse",
    "psnr_per_sample",
    "psnr_per_step",
    "ssim_per_sample",
    "ssim_per_step",
    "step_sum_count",
]

#: MSE floor used in PSNR; identical frames score 10*log10(1/1e-10) = 100 dB.
_MSE_FLOOR = 1e-10
PSNR_MAX_DB = 100.0
SSIM_KERNEL_SIZE = 11
SSIM_SIGMA = 1.5
#: Default foreground threshold: max abs channel difference on [0, 1] (about 5/255).
FOREGROUND_THRESHOLD = 0.02
#: torchvision's ImageNet AlexNet weights (the LPIPS "alex" trunk), looked up in
#: ``torch.hub.get_dir()/checkpoints`` or at ``$VISFORE_LPIPS_ALEXNET``.
LPIPS_ALEXNET_FILE = "alexnet-owt-7be5be79.pth"

METRIC_DEFINITIONS: dict[str, str] = {
    "mse": "mean over the 3 channels and all H x W pixels of (pred - target)^2, images in [0, 1]; "
    "per frame, then averaged over the valid (unpadded) clips of each horizon step",
    "psnr": "10*log10(1 / max(MSE, 1e-10)) dB with data_range 1.0 (capped at 100 dB); per frame, "
    "then averaged over the valid clips of each horizon step (the mean of per-frame PSNR, not the "
    "PSNR of the mean MSE)",
    "ssim": "SSIM (Wang et al. 2004) via torchmetrics.functional.image.structural_similarity_index_measure, "
    "data_range 1.0, gaussian window 11x11 sigma 1.5, k1 0.01, k2 0.03, reflect padding 5 px, "
    "SSIM map averaged over the 3 RGB channels and all pixels; per frame, then averaged over "
    "the valid clips of each horizon step",
    "foreground_psnr": "PSNR (data_range 1.0, 10*log10(1 / max(MSE_fg, 1e-10)) dB) where MSE_fg is "
    "the mean of (pred - target)^2 over the 3 channels of the foreground pixels only; a pixel is "
    "foreground when max over channels |target - o_0| > threshold (default 0.02 on [0, 1]; o_0 = "
    "the first context frame), i.e. the pixels that move during the clip; per frame, then "
    "averaged over the valid clips of each horizon step that have at least one foreground pixel "
    "(a frame without foreground is undefined and excluded; a step where no clip has one is null)",
    "mask": "clips of episodes shorter than C + K are padded at the end (last frame repeated, zero "
    "actions) and carry a (K,) validity mask; padded frames are excluded from every metric and "
    "from the training loss; per-step means are over the valid clips of that step (null if none)",
    "per_step_mean": "'mean' of a per-step list is the unweighted mean over the horizon steps "
    "of the per-step values (steps that are null are skipped)",
    "copy_last_frame": "baseline predicting every future frame o_C..o_{C+K-1} as the last context frame o_{C-1}",
    "mean_frame": "baseline predicting every future frame as the mean frame of the training "
    "set (per-pixel, per-channel mean of all training-episode frames in [0, 1])",
    "shuffled_actions": "the model rolled out open-loop with the whole action sequence of another "
    "evaluation clip (a seeded derangement: no clip keeps its own actions)",
    "action_sensitivity": "psnr_drop_db = PSNR(model, own actions) - PSNR(model, shuffled actions) "
    "in dB, per horizon step and its mean over steps; > 0 means the model uses its actions, ~0 "
    "that it ignores them",
    "lpips": "LPIPS v0.1 (Zhang et al. CVPR 2018) with the AlexNet trunk, inputs mapped from [0, 1] "
    "to [-1, 1], one distance per frame (lower is better), averaged over the valid clips of each "
    "step; computed only when the 'lpips' package and its weights are available locally (never "
    "downloaded), else skipped with the reason",
    "mean_of_samples": "stochastic models: N futures are sampled per clip; each metric is "
    "computed per sample and frame, then averaged over the N samples (the expected quality of "
    "one sample), then over clips per step",
    "best_of_n": "stochastic models: of the N sampled futures of a clip, the one with the best "
    "clip score (highest mean PSNR over its valid steps for psnr, lowest mean MSE for mse, "
    "highest mean SSIM for ssim; chosen per metric and per clip, not per frame) is scored; "
    "then averaged over clips per step (Denton & Fergus 2018's protocol)",
    "horizon_step": "step k (1-based) is the prediction of o_{C+k-1} from context o_0..o_{C-1} "
    "and actions a_0..a_{C+k-2}, rolled out open-loop",
}


# ------------------------------------------------------------------------- validation
def _check(pred: torch.Tensor, target: torch.Tensor) -> None:
    if not isinstance(pred, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise ValueError("pred and target must be torch tensors")
    if pred.shape != target.shape:
        raise ValueError(f"pred shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")
    if pred.dim() != 5 or pred.shape[2] != 3:
        raise ValueError(f"pred and target must be (B, K, 3, H, W), got {tuple(pred.shape)}")
    if not pred.is_floating_point() or not target.is_floating_point():
        raise ValueError(f"pred and target must be floating tensors in [0, 1], got {pred.dtype}/{target.dtype}")


@overload
def _check_mask(mask: torch.Tensor, B: int, K: int, device: torch.device) -> torch.Tensor: ...
@overload
def _check_mask(mask: None, B: int, K: int, device: torch.device) -> None: ...
def _check_mask(mask: torch.Tensor | None, B: int, K: int, device: torch.device) -> torch.Tensor | None:
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or tuple(mask.shape) != (B, K):
        raise ValueError(
            f"mask must be a (B, K) = ({B}, {K}) bool tensor, got "
            f"{tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__}"
            f"{' ' + str(mask.dtype) if isinstance(mask, torch.Tensor) else ''}"
        )
    return mask.to(device)


def _apply_mask(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``(B, K)`` values with NaN where ``mask`` is False."""
    mask = _check_mask(mask, values.shape[0], values.shape[1], values.device)
    if mask is None:
        return values
    return torch.where(mask, values, torch.full_like(values, float("nan")))


# ------------------------------------------------------------------------- reductions
def step_sum_count(values: torch.Tensor, valid: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum and count per horizon step of the valid entries of ``(B, K)`` ``values``.

    Entries where ``valid`` is False are ignored (even if NaN); a NaN at a valid entry
    propagates to the sum. Accumulate ``(sum, count)`` over batches and divide at the end.

    Returns:
        ``(sum, count)``: ``(K,)`` float64 and ``(K,)`` int64 tensors.
    """
    if values.dim() != 2:
        raise ValueError(f"values must be (B, K), got {tuple(values.shape)}")
    values = values.double()
    if valid is None:
        return values.sum(dim=0), torch.full(
            (values.shape[1],), values.shape[0], dtype=torch.int64, device=values.device
        )
    valid = _check_mask(valid, values.shape[0], values.shape[1], values.device)
    assert valid is not None
    summed = torch.where(valid, values, torch.zeros_like(values)).sum(dim=0)
    return summed, valid.sum(dim=0).to(torch.int64)


def masked_mean_per_step(values: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over the batch of ``(B, K)`` ``values`` per step, over the ``valid`` entries only.

    Returns:
        ``(K,)`` float64; NaN at a step with no valid entry.
    """
    total, count = step_sum_count(values, valid)
    out = total / count.clamp_min(1).double()
    return torch.where(count > 0, out, torch.full_like(out, float("nan")))


# ------------------------------------------------------------------------- per frame
def psnr_from_mse(mse: torch.Tensor) -> torch.Tensor:
    """``10 * log10(1 / max(mse, 1e-10))`` dB (data range 1.0; 100 dB cap). NaN stays NaN."""
    return -10.0 * torch.log10(mse.clamp_min(_MSE_FLOOR))


def mse_per_sample(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per-frame MSE on ``[0, 1]``: ``(B, K, 3, H, W) x 2 -> (B, K)`` float64 (NaN where
    ``mask`` is False).

    Raises:
        ValueError: if shapes differ or are not ``(B, K, 3, H, W)``, or a bad mask.
    """
    _check(pred, target)
    diff = pred.detach().double() - target.detach().double()
    return _apply_mask(diff.pow(2).mean(dim=(2, 3, 4)), mask)


def psnr_per_sample(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per-frame PSNR in dB with data_range 1.0: ``10*log10(1/max(MSE, 1e-10))``, ``(B, K)``
    float64 (NaN where ``mask`` is False).

    Raises:
        ValueError: if shapes differ or are not ``(B, K, 3, H, W)``, or a bad mask.
    """
    return psnr_from_mse(mse_per_sample(pred, target, mask))


def ssim_per_sample(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per-frame SSIM (data_range 1.0, Gaussian 11x11, sigma 1.5), ``(B, K)`` float64 (NaN
    where ``mask`` is False).

    Computed with ``torchmetrics.functional.structural_similarity_index_measure``
    (``reduction="none"``) on the ``B*K`` frames.

    Raises:
        ValueError: if shapes differ, are not ``(B, K, 3, H, W)``, ``H``/``W`` < 11, or a bad mask.
    """
    _check(pred, target)
    B, K, C, H, W = pred.shape
    if H < SSIM_KERNEL_SIZE or W < SSIM_KERNEL_SIZE:
        raise ValueError(f"SSIM needs frames of at least {SSIM_KERNEL_SIZE}x{SSIM_KERNEL_SIZE}, got {H}x{W}")
    _check_mask(mask, B, K, pred.device)
    p = pred.detach().reshape(B * K, C, H, W).float()
    t = target.detach().reshape(B * K, C, H, W).float()
    values = structural_similarity_index_measure(
        p,
        t,
        gaussian_kernel=True,
        sigma=SSIM_SIGMA,
        kernel_size=SSIM_KERNEL_SIZE,
        reduction="none",
        data_range=1.0,
    )
    assert isinstance(values, torch.Tensor)
    return _apply_mask(values.double().reshape(B, K), mask)


def mse_per_step(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """MSE per horizon step: mean over the (valid) clips of per-frame MSE, ``(K,)`` float64."""
    return masked_mean_per_step(mse_per_sample(pred, target), mask)


def psnr_per_step(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """PSNR per horizon step: per-frame PSNR (dB) averaged over the (valid) clips, ``(K,)`` float64."""
    return masked_mean_per_step(psnr_per_sample(pred, target), mask)


def ssim_per_step(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """SSIM per horizon step: per-frame SSIM averaged over the (valid) clips, ``(K,)`` float64."""
    return masked_mean_per_step(ssim_per_sample(pred, target), mask)


# ------------------------------------------------------------------------- foreground
def _check_context(context: torch.Tensor, target: torch.Tensor) -> None:
    if not isinstance(context, torch.Tensor) or context.dim() != 5 or context.shape[1] < 1:
        raise ValueError(f"context must be (B, C, 3, H, W) with C >= 1, got {getattr(context, 'shape', None)}")
    if context.shape[0] != target.shape[0] or context.shape[2:] != target.shape[2:]:
        raise ValueError(f"context {tuple(context.shape)} does not match target {tuple(target.shape)} (B, 3, H, W)")


def foreground_mask(
    context: torch.Tensor, target: torch.Tensor, threshold: float = FOREGROUND_THRESHOLD
) -> torch.Tensor:
    """Foreground pixels of each target frame: ``(B, K, H, W)`` bool.

    A pixel of target frame ``k`` is foreground when the largest absolute difference over
    its 3 channels between ``target[:, k]`` and the first context frame ``context[:, 0]``
    exceeds ``threshold`` (strictly). Only the *target* is compared, so the mask does not
    depend on the prediction and is the same for every predictor.

    Raises:
        ValueError: bad shapes or a negative threshold.
    """
    if not threshold >= 0:
        raise ValueError(f"threshold must be >= 0, got {threshold}")
    if not isinstance(target, torch.Tensor) or target.dim() != 5 or target.shape[2] != 3:
        raise ValueError(f"target must be (B, K, 3, H, W), got {getattr(target, 'shape', None)}")
    _check_context(context, target)
    first = context.detach()[:, :1].double()
    return (target.detach().double() - first).abs().amax(dim=2) > threshold


def foreground_psnr_per_sample(
    pred: torch.Tensor,
    target: torch.Tensor,
    context: torch.Tensor,
    threshold: float = FOREGROUND_THRESHOLD,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-frame PSNR over the foreground pixels (see :func:`foreground_mask`), ``(B, K)``
    float64: ``10 log10(1 / max(MSE_fg, 1e-10))`` with MSE_fg the mean of the squared error
    over the 3 channels of the foreground pixels. NaN where a frame has no foreground pixel
    or ``mask`` is False.
    """
    _check(pred, target)
    fg = foreground_mask(context, target, threshold)  # (B, K, H, W)
    sq = (pred.detach().double() - target.detach().double()).pow(2).sum(dim=2)  # (B, K, H, W)
    n = fg.sum(dim=(2, 3))
    mse = torch.where(fg, sq, torch.zeros_like(sq)).sum(dim=(2, 3)) / (3.0 * n.clamp_min(1).double())
    psnr = psnr_from_mse(mse)
    psnr = torch.where(n > 0, psnr, torch.full_like(psnr, float("nan")))
    return _apply_mask(psnr, mask)


def foreground_psnr_per_step(
    pred: torch.Tensor,
    target: torch.Tensor,
    context: torch.Tensor,
    threshold: float = FOREGROUND_THRESHOLD,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Foreground PSNR per horizon step, ``(K,)`` float64: the mean over the valid clips whose
    frame has at least one foreground pixel; NaN for a step without any."""
    fg_any = foreground_mask(context, target, threshold).any(dim=(2, 3))
    B, K = fg_any.shape
    valid = fg_any if mask is None else fg_any & _check_mask(mask, B, K, fg_any.device)
    return masked_mean_per_step(foreground_psnr_per_sample(pred, target, context, threshold), valid)


# ------------------------------------------------------------------------- bundles
def per_sample_metrics(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    context: torch.Tensor | None = None,
    foreground_threshold: float = FOREGROUND_THRESHOLD,
) -> dict[str, torch.Tensor]:
    """``{"mse", "psnr", "ssim"}`` -> ``(B, K)`` float64 tensors (NaN where ``mask`` is False).

    With ``context``, also ``"foreground_psnr"`` ``(B, K)`` (NaN where undefined) and
    ``"foreground_pixels"`` ``(B, K)`` int64 (its pixel counts; a frame with 0 is excluded).
    Accumulate with :func:`step_sum_count` (valid = mask, and for foreground PSNR also
    ``foreground_pixels > 0``).
    """
    mse = mse_per_sample(pred, target, mask)
    out = {"mse": mse, "psnr": psnr_from_mse(mse), "ssim": ssim_per_sample(pred, target, mask)}
    if context is not None:
        out["foreground_psnr"] = foreground_psnr_per_sample(pred, target, context, foreground_threshold, mask)
        out["foreground_pixels"] = (
            foreground_mask(context, target, foreground_threshold).sum(dim=(2, 3)).to(torch.int64)
        )
    return out


def per_step_metrics(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    context: torch.Tensor | None = None,
    foreground_threshold: float = FOREGROUND_THRESHOLD,
) -> dict[str, torch.Tensor]:
    """``{"mse", "psnr", "ssim"}`` (and ``"foreground_psnr"`` with ``context``) -> ``(K,)``
    float64 tensors: means over the valid clips per horizon step (NaN if none)."""
    values = per_sample_metrics(pred, target, mask, context=context, foreground_threshold=foreground_threshold)
    out: dict[str, torch.Tensor] = {}
    for key, v in values.items():
        if key == "foreground_pixels":
            continue
        valid = mask
        if key == "foreground_psnr":
            has = values["foreground_pixels"] > 0
            valid = has if mask is None else has & mask.to(has.device)
        out[key] = masked_mean_per_step(v, valid)
    return out


# ------------------------------------------------------------------------- baselines
def copy_last_frame_baseline(context: torch.Tensor, K: int) -> torch.Tensor:
    """Copy-last-frame baseline: repeat ``o_{C-1}`` K times.

    Args:
        context: ``(B, C, 3, H, W)`` frames ``o_0..o_{C-1}``.
        K: horizon (``>= 1``).

    Returns:
        ``(B, K, 3, H, W)`` tensor (a new tensor, not a view), same dtype/device as ``context``.

    Raises:
        ValueError: if ``context`` is not 5-D with ``C >= 1`` or ``K < 1``.
    """
    if not isinstance(context, torch.Tensor) or context.dim() != 5 or context.shape[1] < 1:
        raise ValueError(f"context must be (B, C, 3, H, W) with C >= 1, got {getattr(context, 'shape', None)}")
    if isinstance(K, bool) or not isinstance(K, int) or K < 1:
        raise ValueError(f"K must be a positive int, got {K!r}")
    return context[:, -1:].repeat(1, K, 1, 1, 1)


def mean_frame_baseline(mean_frame: torch.Tensor, B: int, K: int) -> torch.Tensor:
    """Mean-frame baseline: the training set's mean frame at every step of every clip.

    Args:
        mean_frame: ``(3, H, W)`` floating tensor in ``[0, 1]`` (see
            ``visfore.data.clips.dataset_mean_frame``).
        B, K: batch size and horizon (``>= 1``).

    Returns:
        ``(B, K, 3, H, W)``: a broadcast (read-only) view of ``mean_frame``.

    Raises:
        ValueError: a bad shape or size.
    """
    if not isinstance(mean_frame, torch.Tensor) or mean_frame.dim() != 3 or mean_frame.shape[0] != 3:
        raise ValueError(f"mean_frame must be (3, H, W), got {getattr(mean_frame, 'shape', None)}")
    if not mean_frame.is_floating_point():
        raise ValueError(f"mean_frame must be a floating tensor in [0, 1], got {mean_frame.dtype}")
    for name, v in (("B", B), ("K", K)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    return mean_frame[None, None].expand(B, K, *mean_frame.shape)


# ------------------------------------------------------------------------- actions
def derangement(n: int, seed: int) -> np.ndarray:
    """A seeded permutation ``p`` of ``range(n)`` with ``p[i] != i`` for every ``i`` when
    ``n >= 2`` (one random cycle through ``numpy.random.default_rng(seed).permutation(n)``);
    the identity when ``n < 2``. Clip ``i`` takes the actions of clip ``p[i]``."""
    if n < 2:
        return np.arange(max(n, 0), dtype=np.int64)
    perm = np.random.default_rng(seed).permutation(n)
    partner = np.empty(n, dtype=np.int64)
    partner[perm] = np.roll(perm, -1)
    return partner


def action_sensitivity(
    predict: Callable[[torch.Tensor], torch.Tensor],
    actions: torch.Tensor,
    target: torch.Tensor,
    *,
    seed: int = 0,
    mask: torch.Tensor | None = None,
    prediction: torch.Tensor | None = None,
) -> dict[str, Any]:
    """How much a model's open-loop prediction depends on its actions.

    Args:
        predict: ``actions (B, C + K - 1, A) -> prediction (B, K, 3, H, W)``, a closure over
            the model and the batch's context (e.g. ``lambda a: model(context, a)``).
        actions: the batch's own actions.
        target: ``(B, K, 3, H, W)`` true frames.
        seed: seed of the derangement (:func:`derangement`): clip ``i`` is given the actions
            of clip ``perm[i] != i`` (with ``B == 1`` nothing can be shuffled and the drop is 0).
        mask: optional ``(B, K)`` validity mask.
        prediction: the prediction with the own actions, if already computed.

    Returns:
        ``{"psnr": (K,), "psnr_shuffled": (K,), "psnr_drop_db": (K,)`` float64 tensors,
        ``"mean_psnr_drop_db": float`` (mean over steps), ``"permutation": (B,) int64}``.
    """
    B = actions.shape[0]
    perm = torch.from_numpy(derangement(B, seed)).to(actions.device)
    with torch.no_grad():
        own = predict(actions) if prediction is None else prediction
        shuffled = predict(actions[perm])
    psnr = psnr_per_step(own, target, mask)
    psnr_s = psnr_per_step(shuffled, target, mask)
    drop = psnr - psnr_s
    finite = drop[~torch.isnan(drop)]
    return {
        "psnr": psnr,
        "psnr_shuffled": psnr_s,
        "psnr_drop_db": drop,
        "mean_psnr_drop_db": float(finite.mean()) if finite.numel() else float("nan"),
        "permutation": perm.cpu(),
    }


# ------------------------------------------------------------------------- stochastic
def best_of_n_metrics(
    samples: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    ssim: bool = True,
) -> dict[str, dict[str, torch.Tensor]]:
    """Metrics of N sampled futures per clip (stochastic models).

    Args:
        samples: ``(N, B, K, 3, H, W)`` predictions (N >= 1 samples of each clip).
        target: ``(B, K, 3, H, W)``.
        mask: optional ``(B, K)`` validity mask.
        ssim: also SSIM (needs frames of at least 11x11).

    Returns:
        ``{"mean_of_samples": {...}, "best_of_n": {...}, "best_index": {...}}``: the first
        two map ``"mse"``, ``"psnr"`` (and ``"ssim"``) to ``(B, K)`` float64 (NaN at padded
        frames): the per-frame value averaged over the N samples, and the per-frame values of
        the sample with the best clip score (mean over the clip's valid steps: highest PSNR,
        lowest MSE, highest SSIM, chosen separately per metric; first on ties);
        ``"best_index"`` maps each metric to the ``(B,)`` chosen sample indices.
    """
    if not isinstance(samples, torch.Tensor) or samples.dim() != 6 or samples.shape[0] < 1:
        raise ValueError(f"samples must be (N, B, K, 3, H, W) with N >= 1, got {getattr(samples, 'shape', None)}")
    N = samples.shape[0]
    if samples.shape[1:] != target.shape:
        raise ValueError(f"samples {tuple(samples.shape)} do not match target {tuple(target.shape)} as (N, *target)")
    B, K = target.shape[:2]
    mask = _check_mask(mask, B, K, target.device)
    flat = samples.reshape(N * B, *target.shape[1:])
    tgt = target.unsqueeze(0).expand(N, *target.shape).reshape(N * B, *target.shape[1:])
    per: dict[str, torch.Tensor] = {"mse": mse_per_sample(flat, tgt)}
    per["psnr"] = psnr_from_mse(per["mse"])
    if ssim:
        per["ssim"] = ssim_per_sample(flat, tgt)
    valid = torch.ones(B, K, dtype=torch.bool, device=per["mse"].device) if mask is None else mask.to(per["mse"].device)
    w = valid.double()
    mean_of: dict[str, torch.Tensor] = {}
    best: dict[str, torch.Tensor] = {}
    index: dict[str, torch.Tensor] = {}
    for key, v in per.items():
        v = v.reshape(N, B, K)
        mean_of[key] = _apply_mask(v.mean(dim=0), mask)
        score = torch.where(valid, v, torch.zeros_like(v)).sum(dim=2) / w.sum(dim=1).clamp_min(1.0)  # (N, B)
        pick = score.argmin(dim=0) if key == "mse" else score.argmax(dim=0)
        index[key] = pick
        chosen = v.gather(0, pick[None, :, None].expand(1, B, K))[0]
        best[key] = _apply_mask(chosen, mask)
    return {"mean_of_samples": mean_of, "best_of_n": best, "best_index": index}


# ------------------------------------------------------------------------- LPIPS
def _alexnet_weights_path() -> Path:
    env = os.environ.get("VISFORE_LPIPS_ALEXNET")
    if env:
        return Path(env)
    return Path(torch.hub.get_dir()) / "checkpoints" / LPIPS_ALEXNET_FILE


@functools.lru_cache(maxsize=4)
def _load_lpips_cached(net: str) -> tuple[Any, str]:
    try:
        import lpips  # type: ignore[import-not-found]
    except ModuleNotFoundError as exc:
        if exc.name == "lpips":
            return None, "LPIPS skipped: package 'lpips' not installed"
        return None, f"LPIPS skipped: package 'lpips' cannot be imported (missing module {exc.name!r})"
    except Exception as exc:  # noqa: BLE001 - any import failure is a reason to skip
        return None, f"LPIPS skipped: package 'lpips' cannot be imported ({type(exc).__name__}: {exc})".splitlines()[0]
    linear = Path(getattr(lpips, "__file__", "") or ".").parent / "weights" / "v0.1" / f"{net}.pth"
    if not linear.is_file():
        return None, f"LPIPS skipped: the lpips linear-layer weights {linear} are missing"
    trunk = _alexnet_weights_path()
    if not trunk.is_file():
        return None, (
            f"LPIPS skipped: AlexNet weights not found at {trunk} (set VISFORE_LPIPS_ALEXNET; never downloaded)"
        )
    try:
        # pnet_rand=True: build the trunk without pretrained weights (no download), then
        # load torchvision's ImageNet AlexNet features from the local file.
        model = lpips.LPIPS(net=net, version="0.1", pnet_rand=True, verbose=False)
        state = torch.load(trunk, map_location="cpu", weights_only=True)
        for _, block in model.net.named_children():
            for idx, layer in block.named_children():
                for pname, p in layer.named_parameters(recurse=False):
                    p.data.copy_(state[f"features.{idx}.{pname}"])
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
    except Exception as exc:  # noqa: BLE001
        return None, f"LPIPS skipped: cannot build lpips.LPIPS ({type(exc).__name__}: {exc})".splitlines()[0]
    version = getattr(lpips, "__version__", "?")
    return model, f"LPIPS v0.1 ({net}) from lpips {version}, trunk {trunk.name}"


def load_lpips(net: str = "alex") -> tuple[Any, str]:
    """The LPIPS network if it can be built from local files only, with a one-line note.

    Returns:
        ``(model, description)`` or ``(None, reason)`` where ``reason`` is one line such as
        ``"LPIPS skipped: package 'lpips' not installed"``. Never downloads anything.
    """
    if net != "alex":
        raise ValueError(f"only the 'alex' LPIPS trunk is supported, got {net!r}")
    return _load_lpips_cached(net)


def lpips_per_sample(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    net: str = "alex",
    batch_size: int = 64,
) -> tuple[torch.Tensor | None, str]:
    """Per-frame LPIPS distance (lower is better), ``(B, K)`` float64 (NaN where ``mask`` is
    False), or ``None`` when LPIPS is not available locally.

    Returns:
        ``(values, description)`` or ``(None, reason)`` (see :func:`load_lpips`).
    """
    _check(pred, target)
    model, note = load_lpips(net)
    if model is None:
        return None, note
    B, K, C, H, W = pred.shape
    _check_mask(mask, B, K, pred.device)
    model = model.to(pred.device)
    p = pred.detach().reshape(B * K, C, H, W).float()
    t = target.detach().reshape(B * K, C, H, W).float()
    out = []
    with torch.no_grad():
        for lo in range(0, B * K, batch_size):
            d = model(p[lo : lo + batch_size], t[lo : lo + batch_size], normalize=True)
            out.append(d.reshape(-1).double())
    return _apply_mask(torch.cat(out).reshape(B, K), mask), note
