"""DNA: dynamic neural advection (Finn, Goodfellow & Levine 2016).

Sources:
    * C. Finn, I. Goodfellow, S. Levine, "Unsupervised Learning for Physical Interaction
      through Video Prediction", NeurIPS 2016, arXiv:1605.07157, and its TensorFlow release
      (tensorflow/models, research/video_prediction/prediction_model.py): DNA predicts, for
      every pixel, a normalised distribution over the k x k locations of the previous frame it
      comes from -- a per-pixel ("untied") kernel computed by a 1x1 layer on the
      full-resolution features -- and composites the advected image with the previous frame
      through 2 softmax masks (the release supports exactly one DNA mask plus the background).

Architecture of one step: the backbone of :mod:`visfore_models.cdna`
(:class:`~visfore_models.cdna.FinnConvLSTMBackbone`: seven ConvLSTMs, action tiled at the
``H/8`` bottleneck, features ``f`` ``(l7 + l1, H, W)``), then::

    f -> conv 1x1 -> (k*k, H, W) -> softmax over the k*k taps -> per-pixel kernels K
    D[c, i, j] = sum_{u, v} K[u*k + v, i, j] * x_t[c, i + u - k//2, j + v - k//2]
                 (replicate padding)
    f -> conv 1x1 -> softmax over 2 channels -> masks m_0, m_1
    x̂_{t+1} = m_0 * x_t + m_1 * D

Differences to the paper: the scaled-down backbone of ``cdna`` (see there), softmax instead of
ReLU-and-divide normalisation, GroupNorm instead of layer norm, no robot state.

Defaults: 5x5 kernels (the paper's), channels ``(16, 16, 32, 32, 32, 32, 16)``: 0.41 M
parameters, independent of the image size. The output is a convex combination of pixels of
``x_t``, so it lies in ``[0, 1]``. At initialisation the background mask has weight 0.95 and
the kernels are centre-peaked: the model starts near the copy-last-frame baseline.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ._common import StepwiseForwardModel, check_channels, check_multiple_of, check_odd, dna_transform
from .cdna import KERNEL_CENTER_LOGIT, FinnConvLSTMBackbone, State, keep_logit

__all__ = ["DNAForwardModel"]


class DNAForwardModel(StepwiseForwardModel):
    """Finn et al. 2016 DNA video predictor (registry name ``"dna"``). See the module
    docstring for the architecture and sources; the forward contract is that of
    :class:`visfore_models.base.ForwardModel`.

    Args:
        action_dim: ``A``, size of one action vector (``>= 1``).
        image_size: ``H`` (square) or ``(H, W)``; both divisible by 8.
        lstm_channels: seven hidden-channel counts ``(l1..l7)`` of the ConvLSTM stack.
        kernel_size: odd size ``k`` of the per-pixel kernels (max displacement ``k // 2``
            pixels per step).
        lstm_kernel_size: odd size of the ConvLSTM gate convolutions.

    Raises:
        ValueError: on invalid sizes (one-line message).
    """

    name = "dna"

    def __init__(
        self,
        *,
        action_dim: int,
        image_size: int | tuple[int, int],
        lstm_channels: Sequence[int] = (16, 16, 32, 32, 32, 32, 16),
        kernel_size: int = 5,
        lstm_kernel_size: int = 3,
    ) -> None:
        super().__init__(action_dim=action_dim, image_size=image_size)
        check_multiple_of(self.name, self.image_size, 8)
        self.lstm_channels = check_channels("lstm_channels", lstm_channels, 7)
        self.kernel_size = check_odd("kernel_size", kernel_size)
        self.lstm_kernel_size = check_odd("lstm_kernel_size", lstm_kernel_size)
        self.backbone = FinnConvLSTMBackbone(action_dim, self.lstm_channels, self.lstm_kernel_size)
        f = self.backbone.out_channels
        k2 = self.kernel_size**2
        self.kernel_head = nn.Conv2d(f, k2, 1)
        self.mask_head = nn.Conv2d(f, 2, 1)
        with torch.no_grad():
            assert self.kernel_head.bias is not None and self.mask_head.bias is not None  # Conv2d(bias=True)
            self.kernel_head.bias.zero_()
            self.kernel_head.bias[k2 // 2] = KERNEL_CENTER_LOGIT
            self.mask_head.bias.zero_()
            self.mask_head.bias[0] = keep_logit(1)

    # ------------------------------------------------------------------ serialisation
    def config(self) -> dict[str, Any]:
        """Keyword arguments that rebuild this model: ``DNAForwardModel(**config())``."""
        return {
            "action_dim": self.action_dim,
            "image_size": list(self.image_size),
            "lstm_channels": list(self.lstm_channels),
            "kernel_size": self.kernel_size,
            "lstm_kernel_size": self.lstm_kernel_size,
        }

    # ------------------------------------------------------------------ one step
    def step(self, x: torch.Tensor, action: torch.Tensor, state: State | None) -> tuple[torch.Tensor, State]:
        """One recurrent step: frame ``x_t`` ``(B, 3, H, W)`` and action ``a_t`` ``(B, A)``
        -> prediction of ``x_{t+1}`` ``(B, 3, H, W)`` in ``[0, 1]`` and the new state. No
        validation (use :meth:`forward`)."""
        f, _, state = self.backbone(x, action, state)
        kernels = torch.softmax(self.kernel_head(f), dim=1)  # (B, k*k, H, W)
        advected = dna_transform(x, kernels).to(x.dtype)
        masks = torch.softmax(self.mask_head(f), dim=1)  # (B, 2, H, W)
        out = masks[:, :1] * x + masks[:, 1:] * advected
        return out.clamp(0.0, 1.0), state
