"""CDNA: convolutional dynamic neural advection (Finn, Goodfellow & Levine 2016).

Sources:
    * C. Finn, I. Goodfellow, S. Levine, "Unsupervised Learning for Physical Interaction
      through Video Prediction", NeurIPS 2016, arXiv:1605.07157, and its TensorFlow release
      (tensorflow/models, research/video_prediction/prediction_model.py): the stack of seven
      convolutional LSTMs with layer normalisation, skip connections and the action (and
      robot state) tiled at the 8x8 bottleneck; CDNA predicts N normalised k x k kernels
      from the bottleneck, applies each to the previous frame, and composites the N
      transformed images and the previous frame (the "background") with N + 1 softmax masks.
    * X. Shi et al., "Convolutional LSTM Network", NeurIPS 2015, arXiv:1506.04214 -- the
      cell (:class:`~visfore_models.convlstm.ConvLSTMCell`).

Backbone of one step (:class:`FinnConvLSTMBackbone`; ``H, W`` divisible by 8; ``l1..l7`` =
``lstm_channels``, LSTM = ConvLSTM followed by GroupNorm, the paper's layer norm)::

    x_t (3, H, W) -> conv 5x5 s2 + GN + ReLU -> e0 (l1, H/2)
    e0 -> LSTM1 (l1) -> LSTM2 (l2) -> conv 3x3 s2 + GN + ReLU -> e1 (l2, H/4)
    e1 -> LSTM3 (l3) -> LSTM4 (l4) -> conv 3x3 s2 + GN + ReLU -> (l4, H/8)
    [., tile(a_t)] -> conv 1x1 + ReLU -> LSTM5 (l5) -> b (l5, H/8)            (bottleneck)
    b -> deconv 3x3 s2 + ReLU -> LSTM6 (l6) -> [., e1] -> deconv 3x3 s2 + ReLU (H/2)
      -> LSTM7 (l7) -> [., e0] -> deconv 3x3 s2 + GN + ReLU -> f (l7 + l1, H, W)

CDNA head::

    [avgpool4x4(ReLU(conv1x1(b) -> 8 ch)), a_t] -> Linear -> N kernels k x k, each a softmax
        over its k*k taps (non-negative, sums to 1)
    T_i = x_t convolved with kernel i (replicate padding)                   i = 1..N
    f -> conv 1x1 -> softmax over N + 1 (+1) channels -> masks m_0, m_1..m_N (, m_g)
    x̂_{t+1} = m_0 * x_t + sum_i m_i * T_i (+ m_g * g,  g = sigmoid(conv1x1(f)) if
              generate_image: the released code's extra image generated from scratch for
              dis-occluded regions)

Differences to the paper: channels are scaled down (the paper's ``(32, 32, 64, 64, 128, 64,
32)`` with 5x5 gates become ``(16, 16, 32, 32, 32, 32, 16)`` with 3x3 gates) for a few hundred
thousand parameters; the kernels are softmax-normalised (the release uses ReLU and division
by the sum) and computed from the average-pooled bottleneck and the action (the paper: a fully
connected layer on the flattened 8x8 bottleneck, whose size would grow with the image); the
interface carries no robot state, so only the action is tiled; GroupNorm replaces layer norm.

Defaults: N = 10 kernels of 5x5 (the paper's): 0.44 M parameters, independent of the image
size. Every candidate lies in ``[0, 1]`` and the masks are convex weights, so the output does
too. At initialisation the background mask has weight 0.95 and the kernels are centre-peaked,
so the model starts near the copy-last-frame baseline.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ._common import (
    StepwiseForwardModel,
    cdna_transform,
    check_channels,
    check_multiple_of,
    check_odd,
    conv_gn_relu,
    groups,
)
from .convlstm import ConvLSTMCell

__all__ = ["CDNAForwardModel", "FinnConvLSTMBackbone"]

#: initial weight of the "previous frame" mask (softmax share of channel 0).
INITIAL_KEEP_PROB = 0.95
#: initial logit added to the centre tap of every kernel (softmax over k*k taps).
KERNEL_CENTER_LOGIT = 2.0
#: channels of the 1x1 projection of the bottleneck feeding the kernel layer.
KERNEL_FEATURES = 8

State = list[tuple[torch.Tensor, torch.Tensor] | None]


def keep_logit(num_others: int) -> float:
    """Bias of mask channel 0 such that ``softmax`` gives it :data:`INITIAL_KEEP_PROB`
    against ``num_others`` channels at logit 0."""
    return math.log(INITIAL_KEEP_PROB / (1.0 - INITIAL_KEEP_PROB) * max(num_others, 1))


class FinnConvLSTMBackbone(nn.Module):
    """The seven-ConvLSTM encoder-decoder of Finn et al. 2016 (see the module docstring).

    Args:
        action_dim: ``A``, tiled at the ``H/8`` bottleneck.
        lstm_channels: ``(l1, ..., l7)`` hidden channels of the seven ConvLSTM cells.
        lstm_kernel_size: odd size of the ConvLSTM gate convolutions.

    Shapes: ``forward(x (B, 3, H, W), action (B, A), state)`` returns ``(f, b, state)``:
    full-resolution features ``f`` ``(B, l7 + l1, H, W)``, the bottleneck ``b``
    ``(B, l5, H/8, W/8)`` and the new state (seven ``(h, c)`` pairs; ``None`` = zeros).
    """

    def __init__(self, action_dim: int, lstm_channels: tuple[int, ...], lstm_kernel_size: int) -> None:
        super().__init__()
        l1, l2, l3, l4, l5, l6, l7 = lstm_channels
        k = lstm_kernel_size
        self.out_channels = l7 + l1
        self.bottleneck_channels = l5
        self.enc0 = conv_gn_relu(3, l1, 5, stride=2)
        self.enc1 = conv_gn_relu(l2, l2, 3, stride=2)
        self.enc2 = conv_gn_relu(l4, l4, 3, stride=2)
        self.enc3 = nn.Sequential(nn.Conv2d(l4 + action_dim, l4, 1), nn.ReLU(inplace=True))
        self.dec1 = nn.Sequential(_up(l5, l5), nn.ReLU(inplace=True))
        self.dec2 = nn.Sequential(_up(l6 + l2, l6 + l2), nn.ReLU(inplace=True))
        self.dec3 = nn.Sequential(_up(l7 + l1, l7 + l1), nn.GroupNorm(groups(l7 + l1), l7 + l1), nn.ReLU(inplace=True))
        ins = (l1, l1, l2, l3, l4, l5, l6 + l2)
        self.cells = nn.ModuleList(ConvLSTMCell(i, h, k) for i, h in zip(ins, lstm_channels))
        self.norms = nn.ModuleList(nn.GroupNorm(groups(h), h) for h in lstm_channels)

    def _lstm(self, i: int, x: torch.Tensor, state: State, new: State) -> torch.Tensor:
        h, c = self.cells[i](x, state[i])
        new[i] = (h, c)
        return self.norms[i](h)

    def forward(
        self, x: torch.Tensor, action: torch.Tensor, state: State | None
    ) -> tuple[torch.Tensor, torch.Tensor, State]:
        old: State = [None] * 7 if state is None else state
        new: State = [None] * 7
        e0 = self.enc0(x)
        h = self._lstm(1, self._lstm(0, e0, old, new), old, new)
        e1 = self.enc1(h)
        h = self._lstm(3, self._lstm(2, e1, old, new), old, new)
        e2 = self.enc2(h)
        a_map = action.to(e2.dtype)[:, :, None, None].expand(-1, -1, e2.shape[2], e2.shape[3])
        b = self._lstm(4, self.enc3(torch.cat([e2, a_map], dim=1)), old, new)
        h = self._lstm(5, self.dec1(b), old, new)
        h = self._lstm(6, self.dec2(torch.cat([h, e1], dim=1)), old, new)
        f = self.dec3(torch.cat([h, e0], dim=1))
        return f, b, new


def _up(cin: int, cout: int) -> nn.ConvTranspose2d:
    """3x3 transposed convolution, stride 2, exactly doubling H and W (TF's 'SAME')."""
    return nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=1)


class CDNAForwardModel(StepwiseForwardModel):
    """Finn et al. 2016 CDNA video predictor (registry name ``"cdna"``). See the module
    docstring for the architecture and sources; the forward contract is that of
    :class:`visfore_models.base.ForwardModel`.

    Args:
        action_dim: ``A``, size of one action vector (``>= 1``).
        image_size: ``H`` (square) or ``(H, W)``; both divisible by 8.
        lstm_channels: seven hidden-channel counts ``(l1..l7)`` of the ConvLSTM stack.
        num_kernels: ``N`` CDNA kernels (transformed copies of the previous frame).
        kernel_size: odd size ``k`` of the CDNA kernels (max displacement ``k // 2`` pixels
            per step).
        lstm_kernel_size: odd size of the ConvLSTM gate convolutions.
        generate_image: add an image generated from scratch as one more compositing
            candidate (as the authors' released code does, for dis-occluded regions).

    Raises:
        ValueError: on invalid sizes (one-line message).
    """

    name = "cdna"

    def __init__(
        self,
        *,
        action_dim: int,
        image_size: int | tuple[int, int],
        lstm_channels: Sequence[int] = (16, 16, 32, 32, 32, 32, 16),
        num_kernels: int = 10,
        kernel_size: int = 5,
        lstm_kernel_size: int = 3,
        generate_image: bool = False,
    ) -> None:
        super().__init__(action_dim=action_dim, image_size=image_size)
        check_multiple_of(self.name, self.image_size, 8)
        self.lstm_channels = check_channels("lstm_channels", lstm_channels, 7)
        if isinstance(num_kernels, bool) or not isinstance(num_kernels, int) or num_kernels < 1:
            raise ValueError(f"num_kernels must be a positive int, got {num_kernels!r}")
        self.num_kernels = num_kernels
        self.kernel_size = check_odd("kernel_size", kernel_size)
        self.lstm_kernel_size = check_odd("lstm_kernel_size", lstm_kernel_size)
        self.generate_image = bool(generate_image)
        self.backbone = FinnConvLSTMBackbone(action_dim, self.lstm_channels, self.lstm_kernel_size)
        f, b = self.backbone.out_channels, self.backbone.bottleneck_channels
        n_masks = 1 + self.num_kernels + int(self.generate_image)
        self.mask_head = nn.Conv2d(f, n_masks, 1)
        with torch.no_grad():
            assert self.mask_head.bias is not None  # Conv2d(bias=True)
            self.mask_head.bias.zero_()
            self.mask_head.bias[0] = keep_logit(n_masks - 1)
        self.gen_head = nn.Conv2d(f, 3, 1) if self.generate_image else None
        k2 = self.kernel_size**2
        self.kernel_pool = nn.Sequential(
            nn.Conv2d(b, KERNEL_FEATURES, 1), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(4)
        )
        self.kernel_fc = nn.Linear(KERNEL_FEATURES * 16 + action_dim, self.num_kernels * k2)
        with torch.no_grad():
            centre = torch.zeros(self.num_kernels, k2)
            centre[:, k2 // 2] = KERNEL_CENTER_LOGIT
            self.kernel_fc.bias.copy_(centre.flatten())

    # ------------------------------------------------------------------ serialisation
    def config(self) -> dict[str, Any]:
        """Keyword arguments that rebuild this model: ``CDNAForwardModel(**config())``."""
        return {
            "action_dim": self.action_dim,
            "image_size": list(self.image_size),
            "lstm_channels": list(self.lstm_channels),
            "num_kernels": self.num_kernels,
            "kernel_size": self.kernel_size,
            "lstm_kernel_size": self.lstm_kernel_size,
            "generate_image": self.generate_image,
        }

    # ------------------------------------------------------------------ one step
    def kernels(self, bottleneck: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """CDNA kernels ``(B, N, k, k)``, each non-negative and summing to 1, from the
        bottleneck ``(B, l5, H/8, W/8)`` and the action ``(B, A)``."""
        feats = self.kernel_pool(bottleneck).flatten(1)
        logits = self.kernel_fc(torch.cat([feats, action.to(feats.dtype)], dim=1))
        k = self.kernel_size
        return torch.softmax(logits.view(-1, self.num_kernels, k * k), dim=-1).view(-1, self.num_kernels, k, k)

    def step(self, x: torch.Tensor, action: torch.Tensor, state: State | None) -> tuple[torch.Tensor, State]:
        """One recurrent step: frame ``x_t`` ``(B, 3, H, W)`` and action ``a_t`` ``(B, A)``
        -> prediction of ``x_{t+1}`` ``(B, 3, H, W)`` in ``[0, 1]`` and the new state. No
        validation (use :meth:`forward`)."""
        f, b, state = self.backbone(x, action, state)
        transformed = cdna_transform(x, self.kernels(b, action))  # (B, N, 3, H, W)
        candidates = [x.unsqueeze(1), transformed.to(x.dtype)]
        if self.gen_head is not None:
            candidates.append(torch.sigmoid(self.gen_head(f)).unsqueeze(1).to(x.dtype))
        masks = torch.softmax(self.mask_head(f), dim=1).unsqueeze(2)  # (B, M, 1, H, W)
        out = (masks * torch.cat(candidates, dim=1)).sum(dim=1)
        return out.clamp(0.0, 1.0), state
