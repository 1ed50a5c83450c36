"""Action-conditioned ConvLSTM forward model with CDNA-style compositing.

Sources:
    * X. Shi, Z. Chen, H. Wang, D.-Y. Yeung, W.-K. Wong, W.-C. Woo, "Convolutional LSTM
      Network: A Machine Learning Approach for Precipitation Nowcasting", NeurIPS 2015,
      arXiv:1506.04214 -- the ConvLSTM cell.
    * C. Finn, I. Goodfellow, S. Levine, "Unsupervised Learning for Physical Interaction
      through Video Prediction", NeurIPS 2016, arXiv:1605.07157 -- action tiled spatially
      and concatenated at the bottleneck; CDNA (convolutional dynamic neural advection):
      normalised per-sample kernels applied to the previous frame, composited with the
      previous frame and a generated image through predicted masks.
    * C. Finn, S. Levine, "Deep Visual Foresight for Planning Robot Motion", ICRA 2017,
      arXiv:1610.00696 -- the use of such a model for visual foresight.

Architecture of one step ``(x_t, a_t, state) -> (x̂_{t+1}, state)`` (``H, W`` divisible by 4)::

    x_t (3, H, W) -> conv 5x5 s2 + GN + ReLU -> e1 (c1, H/2, W/2)
                  -> conv 3x3 s2 + GN + ReLU -> e2 (c2, H/4, W/4)
    [e2, tile(a_t)] -> ConvLSTM -> ... -> ConvLSTM -> h (hL, H/4, W/4)        (bottleneck)
    up2(h) ++ e1  -> conv 3x3 + GN + ReLU -> d1 (d1, H/2, W/2)
    up2(d1) ++ x_t -> conv 3x3 + GN + ReLU -> d2 (d2, H, W)
    heads:  d2 -> generated image g = sigmoid(conv)                       (3, H, W)
            d2 -> background mask m = sigmoid(conv), bias logit(0.95)     (1, H, W)
            d2 -> N + 1 softmax masks over {CDNA_1..CDNA_N, g}            (N+1, H, W)
            [avgpool4x4(ReLU(conv1x1(h) -> 8 ch)), a_t] -> MLP(64) -> N kernels
                k x k, each softmax-normalised (non-negative, sums to 1)
    x̂_{t+1} = m * x_t + (1 - m) * sum_i w_i * cand_i,
        cand_i = x_t convolved with kernel i (replicate padding), cand_{N+1} = g

Defaults: c1 = 32, c2 = 48, two ConvLSTM cells of 48 channels (3x3), d1 = 32, d2 = 16,
N = 4 CDNA kernels of 5x5: about 0.40 M parameters (independent of the image size); at 64x64 the bottleneck is 16x16.
GroupNorm (never BatchNorm) keeps every sample independent of the rest of the batch.

Every candidate lies in ``[0, 1]`` and the weights are convex, so the output does too. At
initialisation ``m ~ 0.95`` everywhere and the CDNA kernels are centre-peaked, so the model
starts as (almost) the copy-last-frame baseline and learning improves on it rather than
first having to climb up to it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .base import ForwardModel

__all__ = ["ConvLSTMCell", "ConvLSTMForwardModel"]

#: initial probability of the background mask ("keep the previous frame").
INITIAL_KEEP_PROB = 0.95
#: initial logit added to the centre tap of every CDNA kernel (softmax over k*k taps).
CDNA_CENTER_LOGIT = 2.0
#: channels of the 1x1 projection of the bottleneck feeding the CDNA kernel MLP.
KERNEL_FEATURES = 8


class ConvLSTMCell(nn.Module):
    """Convolutional LSTM cell (Shi et al. 2015, arXiv:1506.04214), peephole-free variant.

    ``i, f, o, g = split(Conv([x, h_prev]))``;
    ``c = sigmoid(f) * c_prev + sigmoid(i) * tanh(g)``; ``h = sigmoid(o) * tanh(c)``.
    The paper's Hadamard peephole terms ``W_ci * c``, ``W_cf * c``, ``W_co * c`` are left
    out (as in most later ConvLSTM uses, e.g. PredRNN baselines); the forget-gate bias is
    initialised to 1.

    Args:
        in_channels: channels of the input ``x``.
        hidden_channels: channels of ``h`` and ``c``.
        kernel_size: odd size of the square gate convolution ("same" padding).

    Shapes: ``x`` ``(B, in_channels, H, W)``; ``state`` ``(h, c)`` each
    ``(B, hidden_channels, H, W)`` or ``None`` (zeros). Returns ``(h, c)``.
    """

    def __init__(self, in_channels: int, hidden_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"ConvLSTMCell kernel_size must be odd, got {kernel_size}")
        self.in_channels = in_channels
        self.hidden_channels = hidden_channels
        self.conv = nn.Conv2d(in_channels + hidden_channels, 4 * hidden_channels, kernel_size, padding=kernel_size // 2)
        with torch.no_grad():
            assert self.conv.bias is not None
            self.conv.bias.zero_()
            self.conv.bias[hidden_channels : 2 * hidden_channels].fill_(1.0)  # forget gate

    def forward(
        self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if state is None:
            z = x.new_zeros(x.shape[0], self.hidden_channels, x.shape[2], x.shape[3])
            state = (z, z)
        h_prev, c_prev = state
        gates = self.conv(torch.cat([x, h_prev], dim=1))
        i, f, o, g = torch.chunk(gates, 4, dim=1)
        c = torch.sigmoid(f) * c_prev + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c


def _conv_gn_relu(cin: int, cout: int, k: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2),
        nn.GroupNorm(_groups(cout), cout),
        nn.ReLU(inplace=True),
    )


def _groups(c: int) -> int:
    for g in (8, 4, 2):
        if c % g == 0:
            return g
    return 1


class ConvLSTMForwardModel(ForwardModel):
    """Action-conditioned ConvLSTM video predictor with CDNA compositing (registry name
    ``"convlstm"``).

    See the module docstring for the architecture and sources (Shi et al. 2015,
    arXiv:1506.04214; Finn, Goodfellow & Levine 2016, arXiv:1605.07157). The forward
    contract and time alignment are those of :class:`visfore_models.base.ForwardModel`.

    Args:
        action_dim: ``A``, size of one action vector (``>= 1``).
        image_size: ``H`` (square) or ``(H, W)``; both divisible by 4 and ``>= 16``.
        encoder_channels: ``(c1, c2)`` channels at ``H/2`` and ``H/4``.
        lstm_channels: hidden channels of each stacked ConvLSTM cell at ``H/4``.
        decoder_channels: ``(d1, d2)`` channels at ``H/2`` and ``H``.
        num_kernels: ``N`` CDNA kernels (transformed copies of the previous frame).
        cdna_kernel_size: odd size ``k`` of the CDNA kernels (max displacement ``k // 2``
            pixels per step per kernel).
        lstm_kernel_size: odd size of the ConvLSTM gate convolutions.

    Raises:
        ValueError: on invalid sizes (image size not divisible by 4, even kernel sizes, ...).
    """

    name = "convlstm"

    def __init__(
        self,
        *,
        action_dim: int,
        image_size: int | tuple[int, int],
        encoder_channels: Sequence[int] = (32, 48),
        lstm_channels: Sequence[int] = (48, 48),
        decoder_channels: Sequence[int] = (32, 16),
        num_kernels: int = 4,
        cdna_kernel_size: int = 5,
        lstm_kernel_size: int = 3,
    ) -> None:
        super().__init__(action_dim=action_dim, image_size=image_size)
        H, W = self.image_size
        if H % 4 or W % 4 or H < 16 or W < 16:
            raise ValueError(f"convlstm needs H and W divisible by 4 and >= 16, got {H}x{W}")
        if len(encoder_channels) != 2 or len(decoder_channels) != 2:
            raise ValueError("encoder_channels and decoder_channels must each have 2 entries")
        if len(lstm_channels) < 1:
            raise ValueError("lstm_channels needs at least one entry")
        if num_kernels < 0:
            raise ValueError(f"num_kernels must be >= 0, got {num_kernels}")
        if cdna_kernel_size % 2 != 1:
            raise ValueError(f"cdna_kernel_size must be odd, got {cdna_kernel_size}")
        self.encoder_channels = tuple(int(c) for c in encoder_channels)
        self.lstm_channels = tuple(int(c) for c in lstm_channels)
        self.decoder_channels = tuple(int(c) for c in decoder_channels)
        self.num_kernels = int(num_kernels)
        self.cdna_kernel_size = int(cdna_kernel_size)
        self.lstm_kernel_size = int(lstm_kernel_size)

        c1, c2 = self.encoder_channels
        d1, d2 = self.decoder_channels
        self.enc1 = _conv_gn_relu(3, c1, 5, stride=2)
        self.enc2 = _conv_gn_relu(c1, c2, 3, stride=2)
        cells = []
        cin = c2 + action_dim
        for hc in self.lstm_channels:
            cells.append(ConvLSTMCell(cin, hc, self.lstm_kernel_size))
            cin = hc
        self.cells = nn.ModuleList(cells)
        h_last = self.lstm_channels[-1]
        self.dec1 = _conv_gn_relu(h_last + c1, d1, 3)
        self.dec2 = _conv_gn_relu(d1 + 3, d2, 3)
        self.gen_head = nn.Conv2d(d2, 3, 3, padding=1)
        # channel 0: background logit; 1..N+1: softmax over CDNA candidates + generated image
        self.mask_head = nn.Conv2d(d2, 2 + self.num_kernels, 3, padding=1)
        with torch.no_grad():
            assert self.mask_head.bias is not None
            self.mask_head.bias.zero_()
            self.mask_head.bias[0] = math.log(INITIAL_KEEP_PROB / (1.0 - INITIAL_KEEP_PROB))
        if self.num_kernels > 0:
            k2 = self.cdna_kernel_size**2
            self.kernel_pool = nn.Sequential(
                nn.Conv2d(h_last, KERNEL_FEATURES, 1), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(4)
            )
            self.kernel_mlp = nn.Sequential(
                nn.Linear(KERNEL_FEATURES * 16 + action_dim, 64),
                nn.ReLU(inplace=True),
                nn.Linear(64, self.num_kernels * k2),
            )
            last = self.kernel_mlp[2]
            assert isinstance(last, nn.Linear)
            with torch.no_grad():
                centre = torch.zeros(self.num_kernels, k2)
                centre[:, k2 // 2] = CDNA_CENTER_LOGIT
                last.bias.copy_(centre.flatten())

    # ------------------------------------------------------------------ serialisation
    def config(self) -> dict[str, Any]:
        """Keyword arguments that rebuild this model: ``ConvLSTMForwardModel(**config())``."""
        return {
            "action_dim": self.action_dim,
            "image_size": list(self.image_size),
            "encoder_channels": list(self.encoder_channels),
            "lstm_channels": list(self.lstm_channels),
            "decoder_channels": list(self.decoder_channels),
            "num_kernels": self.num_kernels,
            "cdna_kernel_size": self.cdna_kernel_size,
            "lstm_kernel_size": self.lstm_kernel_size,
        }

    # ------------------------------------------------------------------ one step
    def _cdna(self, x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
        """Apply per-sample kernels ``(B, N, k, k)`` to every channel of ``x`` ``(B, 3, H, W)``
        with replicate padding; returns ``(B, N, 3, H, W)``."""
        B, C, H, W = x.shape
        N, k = kernels.shape[1], kernels.shape[-1]
        p = k // 2
        xp = F.pad(x, (p, p, p, p), mode="replicate").reshape(1, B * C, H + 2 * p, W + 2 * p)
        # weight[(b*C + c)*N + n] = kernels[b, n]  (groups = B*C, N outputs per group)
        weight = kernels[:, None].expand(B, C, N, k, k).reshape(B * C * N, 1, k, k)
        out = F.conv2d(xp, weight, groups=B * C)  # (1, B*C*N, H, W)
        return out.reshape(B, C, N, H, W).transpose(1, 2)

    def step(
        self,
        x: torch.Tensor,
        action: torch.Tensor,
        state: list[tuple[torch.Tensor, torch.Tensor]] | None,
    ) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        """One recurrent step: frame ``x_t`` ``(B, 3, H, W)`` and action ``a_t`` ``(B, A)``
        -> prediction of ``x_{t+1}`` ``(B, 3, H, W)`` in ``[0, 1]`` and the new state (one
        ``(h, c)`` pair per ConvLSTM cell). No validation (use :meth:`forward`)."""
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        a_map = action[:, :, None, None].expand(-1, -1, e2.shape[2], e2.shape[3])
        z = torch.cat([e2, a_map], dim=1)
        new_state: list[tuple[torch.Tensor, torch.Tensor]] = []
        for i, cell in enumerate(self.cells):
            h, c = cell(z, None if state is None else state[i])
            new_state.append((h, c))
            z = h
        d = self.dec1(torch.cat([F.interpolate(z, scale_factor=2.0, mode="nearest"), e1], dim=1))
        d = self.dec2(torch.cat([F.interpolate(d, scale_factor=2.0, mode="nearest"), x], dim=1))
        generated = torch.sigmoid(self.gen_head(d))
        logits = self.mask_head(d)
        keep = torch.sigmoid(logits[:, :1])  # (B, 1, H, W)
        weights = torch.softmax(logits[:, 1:], dim=1).unsqueeze(2)  # (B, N+1, 1, H, W)
        if self.num_kernels > 0:
            feats = torch.cat([self.kernel_pool(z).flatten(1), action], dim=1)
            kk = self.cdna_kernel_size
            kernels = torch.softmax(self.kernel_mlp(feats).view(-1, self.num_kernels, kk * kk), dim=-1)
            transformed = self._cdna(x, kernels.view(-1, self.num_kernels, kk, kk))
            candidates = torch.cat([transformed, generated.unsqueeze(1)], dim=1)
        else:
            candidates = generated.unsqueeze(1)
        moved = (weights * candidates).sum(dim=1)
        return keep * x + (1.0 - keep) * moved, new_state

    # ------------------------------------------------------------------ rollout
    def forward(
        self,
        context: torch.Tensor,
        actions: torch.Tensor,
        targets: torch.Tensor | None = None,
        teacher_forcing_prob: float = 0.0,
    ) -> torch.Tensor:
        """Roll the model out over ``t = 0 .. C + K - 2`` (see
        :meth:`visfore_models.base.ForwardModel.forward` for the full contract).

        Args:
            context: ``(B, C, 3, H, W)`` float in ``[0, 1]``: ``o_0..o_{C-1}``.
            actions: ``(B, C + K - 1, A)`` float: ``a_0..a_{C+K-2}``.
            targets: optional ``(B, K, 3, H, W)``: ``o_C..o_{C+K-1}`` for teacher forcing.
            teacher_forcing_prob: per-sample, per-step probability of feeding the true
                frame instead of the prediction (needs ``targets``).

        Returns:
            ``(B, K, 3, H, W)`` predictions of ``o_C..o_{C+K-1}`` in ``[0, 1]``, in the
            model's dtype (float32 unless converted; floating inputs are cast to it).

        Raises:
            ValueError: on shape/dtype mismatch, inputs on another device than the model,
                or a bad ``teacher_forcing_prob``.
        """
        C, K = self.check_inputs(context, actions, targets, teacher_forcing_prob)
        weight = self.gen_head.weight
        if context.device != weight.device or actions.device != weight.device:
            raise ValueError(f"inputs are on {context.device}/{actions.device} but the model is on {weight.device}")
        context = context.to(dtype=weight.dtype)
        actions = actions.to(dtype=weight.dtype)
        if targets is not None:
            targets = targets.to(device=weight.device, dtype=weight.dtype)
        p = float(teacher_forcing_prob)
        B = context.shape[0]
        state: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        preds: list[torch.Tensor] = []
        pred: torch.Tensor | None = None
        for t in range(C + K - 1):
            if t < C:
                x = context[:, t]
            else:
                assert pred is not None
                x = pred
                if targets is not None and p > 0.0:
                    true = targets[:, t - C]
                    if p >= 1.0:
                        x = true
                    else:
                        use = torch.rand(B, device=context.device) < p
                        x = torch.where(use[:, None, None, None], true, pred)
            pred, state = self.step(x, actions[:, t], state)
            if t >= C - 1:
                preds.append(pred)
        return torch.stack(preds, dim=1)
