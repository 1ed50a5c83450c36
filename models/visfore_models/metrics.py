"""Per-horizon-step image metrics for video prediction (pure functions, no state).

All functions take ``pred`` and ``target`` of shape ``(B, K, 3, H, W)`` (floating, values in
``[0, 1]``, same shape and device) where ``K`` is the horizon. ``*_per_sample`` functions
return ``(B, K)`` float64 tensors (one value per frame, convenient to accumulate over
batches); ``*_per_step`` functions return ``(K,)`` float64 tensors, the mean over the batch
of the per-frame values (so PSNR is computed per frame, then averaged).

Definitions (also in :data:`METRIC_DEFINITIONS`, meant to be written into ``metrics.json``):

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

All metrics are evaluation-only: inputs are detached and no gradient flows.
"""

from __future__ import annotations

import torch
from torchmetrics.functional.image import structural_similarity_index_measure

__all__ = [
    "METRIC_DEFINITIONS",
    "PSNR_MAX_DB",
    "copy_last_frame_baseline",
    "mse_per_sample",
    "mse_per_step",
    "per_sample_metrics",
    "per_step_metrics",
    "psnr_per_sample",
    "psnr_per_step",
    "ssim_per_sample",
    "ssim_per_step",
]

#: MSE floor used in PSNR; identical frames score 10*log10(1/1e-10) = 100 dB.
_MSE_FLOOR = 1e-10
PSNR_MAX_DB = 100.0
SSIM_KERNEL_SIZE = 11
SSIM_SIGMA = 1.5

METRIC_DEFINITIONS: dict[str, str] = {
    "mse": "mean over channels and pixels of (pred - target)^2, images in [0, 1]; per frame, "
    "then averaged over clips for each horizon step",
    "psnr": "10*log10(1 / max(MSE, 1e-10)) dB with data_range 1.0 (capped at 100 dB); per frame, "
    "then averaged over clips for each horizon step",
    "ssim": "SSIM (Wang et al. 2004) via torchmetrics.functional.image.structural_similarity_index_measure, "
    "data_range 1.0, gaussian window 11x11 sigma 1.5, k1 0.01, k2 0.03, reflect padding 5 px, "
    "SSIM map averaged over the 3 RGB channels and all pixels; per frame, then averaged over "
    "clips for each horizon step",
    "copy_last_frame": "baseline predicting every future frame o_C..o_{C+K-1} as the last "
    "context frame o_{C-1}",
    "horizon_step": "step k (1-based) is the prediction of o_{C+k-1} from context o_0..o_{C-1} "
    "and actions a_0..a_{C+k-2}, rolled out open-loop",
}


def _check(pred: torch.Tensor, target: torch.Tensor) -> None:
    if not isinstance(pred, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise ValueError("pred and target must be torch tensors")
    if pred.shape != target.shape:
        raise ValueError(f"pred shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")
    if pred.dim() != 5 or pred.shape[2] != 3:
        raise ValueError(f"pred and target must be (B, K, 3, H, W), got {tuple(pred.shape)}")
    if not pred.is_floating_point() or not target.is_floating_point():
        raise ValueError(f"pred and target must be floating tensors in [0, 1], got {pred.dtype}/{target.dtype}")


def mse_per_sample(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-frame MSE on ``[0, 1]``: ``(B, K, 3, H, W) x 2 -> (B, K)`` float64.

    Raises:
        ValueError: if shapes differ or are not ``(B, K, 3, H, W)``.
    """
    _check(pred, target)
    diff = pred.detach().double() - target.detach().double()
    return diff.pow(2).mean(dim=(2, 3, 4))


def psnr_per_sample(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-frame PSNR in dB with data_range 1.0: ``10*log10(1/max(MSE, 1e-10))``, ``(B, K)`` float64.

    Raises:
        ValueError: if shapes differ or are not ``(B, K, 3, H, W)``.
    """
    mse = mse_per_sample(pred, target)
    return -10.0 * torch.log10(mse.clamp_min(_MSE_FLOOR))


def ssim_per_sample(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-frame SSIM (data_range 1.0, Gaussian 11x11, sigma 1.5), ``(B, K)`` float64.

    Computed with ``torchmetrics.functional.structural_similarity_index_measure``
    (``reduction="none"``) on the ``B*K`` frames.

    Raises:
        ValueError: if shapes differ, are not ``(B, K, 3, H, W)``, or ``H``/``W`` < 11.
    """
    _check(pred, target)
    B, K, C, H, W = pred.shape
    if H < SSIM_KERNEL_SIZE or W < SSIM_KERNEL_SIZE:
        raise ValueError(f"SSIM needs frames of at least {SSIM_KERNEL_SIZE}x{SSIM_KERNEL_SIZE}, got {H}x{W}")
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
    return values.double().reshape(B, K)


def mse_per_step(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MSE per horizon step: mean over the batch of per-frame MSE, ``(K,)`` float64."""
    return mse_per_sample(pred, target).mean(dim=0)


def psnr_per_step(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PSNR per horizon step: per-frame PSNR (dB) averaged over the batch, ``(K,)`` float64."""
    return psnr_per_sample(pred, target).mean(dim=0)


def ssim_per_step(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """SSIM per horizon step: per-frame SSIM averaged over the batch, ``(K,)`` float64."""
    return ssim_per_sample(pred, target).mean(dim=0)


def per_sample_metrics(pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """``{"mse", "psnr", "ssim"}`` -> ``(B, K)`` float64 tensors (sum these over batches and
    divide by the clip count to get per-step means)."""
    mse = mse_per_sample(pred, target)
    return {
        "mse": mse,
        "psnr": -10.0 * torch.log10(mse.clamp_min(_MSE_FLOOR)),
        "ssim": ssim_per_sample(pred, target),
    }


def per_step_metrics(pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """``{"mse", "psnr", "ssim"}`` -> ``(K,)`` float64 tensors (batch means per horizon step)."""
    return {k: v.mean(dim=0) for k, v in per_sample_metrics(pred, target).items()}


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
