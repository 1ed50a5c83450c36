"""Action-conditioned RNN-deconvolution baseline: conv encoder -> LSTM on a latent vector ->
deconvolution decoder that generates the next frame directly.

Sources:
    * The "Forward model" master's-thesis experiments of GitHub user ichko
      (github.com/ichko/differentiable-simulation): the "RNN Deconvolution Baseline" -- frame
      -> representation vector -> RNN driven by the actions -> deconvolution -> frame.
    * J. Oh, X. Guo, H. Lee, R. Lewis, S. Singh, "Action-Conditional Video Prediction using
      Deep Networks in Atari Games", NeurIPS 2015, arXiv:1507.08750 -- the recurrent
      encoder / action-conditioned transition / deconvolution decoder family (they combine
      action and latent multiplicatively; here the action is concatenated to the LSTM input).
    * A. Radford, L. Metz, S. Chintala, "Unsupervised Representation Learning with Deep
      Convolutional Generative Adversarial Networks", ICLR 2016, arXiv:1511.06434 -- the
      4x4 stride-2 (de)convolution blocks.

Differences to that thesis baseline: it encodes only the preconditioning frames into the initial RNN
state and then runs the RNN on the actions alone; here every step re-encodes its input frame
(the true frame during the context warm-up, afterwards the model's own prediction or, under
teacher forcing, the true frame), as required by :class:`~visfore_models.base.ForwardModel`.

Architecture of one step ``(x_t, a_t, state) -> (x̂_{t+1}, state)`` (``H, W`` divisible by 8)::

    x_t (3, H, W) -> [conv 4x4 s2 + GN + LeakyReLU] x 3 -> (c3, H/8, W/8)
                  -> conv 1x1 -> (b, H/8, W/8) -> flatten -> Linear + ReLU -> e_t (latent_dim)
    [e_t, a_t] -> LSTMCell -> ... -> LSTMCell -> h_t (hidden_size)
    h_t -> Linear + ReLU -> (b, H/8, W/8) -> conv 1x1 + GN + ReLU -> (c3, H/8, W/8)
        -> [deconv 4x4 s2 + GN + ReLU] x 2 -> deconv 4x4 s2 -> sigmoid -> x̂_{t+1} (3, H, W)

Defaults: channels (32, 32, 32) at H/2, H/4, H/8, b = 8 bottleneck channels, latent 128,
one LSTM layer of 128: 0.33 M parameters at 64x64 (the two Linear layers have
``b * H/8 * W/8 * 128`` weights each, so the count grows with the image size: 0.24 M at
32x32, 0.73 M at 128x128).

The frame is generated from scratch (no copy of the input), so the untrained model outputs a
grey blur and first has to learn the background; it is the baseline the transformation-based
models (``cdna``, ``dna``, ``convlstm``) should beat.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ._common import (
    StepwiseForwardModel,
    VectorDecoder,
    VectorEncoder,
    check_channels,
    check_multiple_of,
    check_positive,
)

__all__ = ["RNNDeconvForwardModel"]


class RNNDeconvForwardModel(StepwiseForwardModel):
    """Conv encoder -> LSTM on a latent vector (action concatenated) -> deconvolution decoder
    (registry name ``"rnn_deconv"``). See the module docstring for the architecture and
    sources; the forward contract is that of :class:`visfore_models.base.ForwardModel`.

    Args:
        action_dim: ``A``, size of one action vector (``>= 1``).
        image_size: ``H`` (square) or ``(H, W)``; both divisible by 8.
        channels: ``(c1, c2, c3)`` channels of the encoder at ``H/2, H/4, H/8``; the
            decoder mirrors them.
        bottleneck_channels: ``b``, channels of the ``H/8 x W/8`` map that is flattened
            into (and un-flattened from) the latent vector.
        latent_dim: size of the frame encoding fed to the LSTM.
        hidden_size: hidden units of each LSTM layer.
        rnn_layers: number of stacked LSTM cells.

    Raises:
        ValueError: on invalid sizes (one-line message).
    """

    name = "rnn_deconv"

    def __init__(
        self,
        *,
        action_dim: int,
        image_size: int | tuple[int, int],
        channels: Sequence[int] = (32, 32, 32),
        bottleneck_channels: int = 8,
        latent_dim: int = 128,
        hidden_size: int = 128,
        rnn_layers: int = 1,
    ) -> None:
        super().__init__(action_dim=action_dim, image_size=image_size)
        check_multiple_of(self.name, self.image_size, 8)
        self.channels = check_channels("channels", channels, 3)
        self.bottleneck_channels = check_positive("bottleneck_channels", bottleneck_channels)
        self.latent_dim = check_positive("latent_dim", latent_dim)
        self.hidden_size = check_positive("hidden_size", hidden_size)
        self.rnn_layers = check_positive("rnn_layers", rnn_layers)
        ch = (self.channels[0], self.channels[1], self.channels[2])
        self.encoder = VectorEncoder(3, ch, self.bottleneck_channels, self.latent_dim, self.image_size)
        sizes = [self.latent_dim + action_dim] + [self.hidden_size] * self.rnn_layers
        cells = [nn.LSTMCell(sizes[i], sizes[i + 1]) for i in range(self.rnn_layers)]
        for cell in cells:  # forget-gate bias 1 (Jozefowicz et al. 2015)
            with torch.no_grad():
                cell.bias_ih[self.hidden_size : 2 * self.hidden_size].fill_(1.0)
                cell.bias_hh[self.hidden_size : 2 * self.hidden_size].fill_(0.0)
        self.cells = nn.ModuleList(cells)
        self.decoder = VectorDecoder(self.hidden_size, ch, self.bottleneck_channels, self.image_size)

    # ------------------------------------------------------------------ serialisation
    def config(self) -> dict[str, Any]:
        """Keyword arguments that rebuild this model: ``RNNDeconvForwardModel(**config())``."""
        return {
            "action_dim": self.action_dim,
            "image_size": list(self.image_size),
            "channels": list(self.channels),
            "bottleneck_channels": self.bottleneck_channels,
            "latent_dim": self.latent_dim,
            "hidden_size": self.hidden_size,
            "rnn_layers": self.rnn_layers,
        }

    # ------------------------------------------------------------------ one step
    def step(
        self,
        x: torch.Tensor,
        action: torch.Tensor,
        state: list[tuple[torch.Tensor, torch.Tensor]] | None,
    ) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        """One recurrent step: frame ``x_t`` ``(B, 3, H, W)`` and action ``a_t`` ``(B, A)``
        -> prediction of ``x_{t+1}`` ``(B, 3, H, W)`` in ``[0, 1]`` and the new state (one
        ``(h, c)`` pair of ``(B, hidden_size)`` per LSTM layer). No validation."""
        e = self.encoder(x)
        z = torch.cat([e, action.to(e.dtype)], dim=1)
        new_state: list[tuple[torch.Tensor, torch.Tensor]] = []
        for i, cell in enumerate(self.cells):
            h, c = cell(z, None if state is None else state[i])
            new_state.append((h, c))
            z = h
        return self.decoder(z), new_state
