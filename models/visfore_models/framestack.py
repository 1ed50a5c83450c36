"""Frame-stack recurrent forward model: the last ``S`` frames, channel-concatenated, are
encoded into a vector, a recurrent core (LSTM or GRU) takes it with the action, and a
deconvolution decoder generates the next frame, which is pushed onto the stack (open loop).

Sources:
    * A PyTorch model-based RL experiment on a bouncing block, whose model works on
      sets of 4 frames -- "the frames make up a Markov state" -- with a convolutional
      encoder, an LSTM layer that carries the sequence, and a deconvolutional decoder; the
      model is rolled out open-loop on its own outputs.
    * V. Mnih et al., "Human-level control through deep reinforcement learning", Nature 2015
      -- stacking the last 4 frames as the (approximately Markov) observation.
    * J. Oh, X. Guo, H. Lee, R. Lewis, S. Singh, "Action-Conditional Video Prediction using
      Deep Networks in Atari Games", NeurIPS 2015, arXiv:1507.08750 -- the feed-forward
      variant encodes a stack of the last frames; the recurrent variant adds an LSTM.

Differences to that bouncing-block model: it predicts the next 4 frames at once from 4 frames (a
"time step" is 4 frames with one action held constant); here each step predicts one frame
from a sliding window of the last ``S`` frames and one action, as required by
:class:`~visfore_models.base.ForwardModel`.

Architecture of one step (``H, W`` divisible by 8)::

    stack_t = [x_{t-S+1}, ..., x_t]  (3S, H, W)   (before S frames exist, the earliest frame
                                                   x_0 fills the missing slots)
    stack_t -> [conv 4x4 s2 + GN + LeakyReLU] x 3 -> conv 1x1 -> flatten -> Linear + ReLU -> e_t
    [e_t, a_t] -> LSTMCell or GRUCell -> h_t (hidden_size)
    h_t -> Linear + ReLU -> conv 1x1 -> [deconv 4x4 s2 + GN + ReLU] x 2 -> deconv 4x4 s2
        -> sigmoid -> x̂_{t+1} (3, H, W); x̂_{t+1} (or, under teacher forcing, o_{t+1})
        enters the stack for the next step.

Defaults: S = 4, channels (32, 32, 32), b = 8 bottleneck channels, latent 128, one LSTM of
128: 0.34 M parameters at 64x64 (0.31 M with ``core="gru"``; the Linear layers grow with
the image size: 0.24 M at 32x32, 0.73 M at 128x128). Like ``rnn_deconv`` it generates
frames from scratch (no copy of the input).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ._common import (
    VectorDecoder,
    VectorEncoder,
    check_channels,
    check_multiple_of,
    check_positive,
    prepare_inputs,
    rollout,
)
from .base import ForwardModel

__all__ = ["FrameStackForwardModel"]

CORES = ("lstm", "gru")


class FrameStackForwardModel(ForwardModel):
    """Stack of the last ``S`` frames -> CNN -> recurrent core with the action -> decoder
    (registry name ``"framestack"``). See the module docstring for the architecture and
    sources; the forward contract is that of :class:`visfore_models.base.ForwardModel`.

    Args:
        action_dim: ``A``, size of one action vector (``>= 1``).
        image_size: ``H`` (square) or ``(H, W)``; both divisible by 8.
        stack: ``S``, number of frames in the input stack (the current frame and the
            ``S - 1`` before it).
        channels: ``(c1, c2, c3)`` encoder channels at ``H/2, H/4, H/8``; the decoder
            mirrors them.
        bottleneck_channels: ``b``, channels of the flattened ``H/8 x W/8`` map.
        latent_dim: size of the stack encoding fed to the recurrent core.
        hidden_size: hidden units of the recurrent core.
        core: ``"lstm"`` (as in the bouncing-block model) or ``"gru"`` (Cho et al. 2014, arXiv:1406.1078).

    Raises:
        ValueError: on invalid sizes or an unknown ``core`` (one-line message).
    """

    name = "framestack"

    def __init__(
        self,
        *,
        action_dim: int,
        image_size: int | tuple[int, int],
        stack: int = 4,
        channels: Sequence[int] = (32, 32, 32),
        bottleneck_channels: int = 8,
        latent_dim: int = 128,
        hidden_size: int = 128,
        core: str = "lstm",
    ) -> None:
        super().__init__(action_dim=action_dim, image_size=image_size)
        check_multiple_of(self.name, self.image_size, 8)
        if core not in CORES:
            raise ValueError(f"core must be one of {', '.join(CORES)}, got {core!r}")
        self.stack = check_positive("stack", stack)
        self.channels = check_channels("channels", channels, 3)
        self.bottleneck_channels = check_positive("bottleneck_channels", bottleneck_channels)
        self.latent_dim = check_positive("latent_dim", latent_dim)
        self.hidden_size = check_positive("hidden_size", hidden_size)
        self.core = core
        ch = (self.channels[0], self.channels[1], self.channels[2])
        self.encoder = VectorEncoder(3 * self.stack, ch, self.bottleneck_channels, self.latent_dim, self.image_size)
        cin = self.latent_dim + action_dim
        self.cell: nn.LSTMCell | nn.GRUCell
        if core == "lstm":
            self.cell = nn.LSTMCell(cin, self.hidden_size)
            with torch.no_grad():  # forget-gate bias 1 (Jozefowicz et al. 2015)
                self.cell.bias_ih[self.hidden_size : 2 * self.hidden_size].fill_(1.0)
                self.cell.bias_hh[self.hidden_size : 2 * self.hidden_size].fill_(0.0)
        else:
            self.cell = nn.GRUCell(cin, self.hidden_size)
        self.decoder = VectorDecoder(self.hidden_size, ch, self.bottleneck_channels, self.image_size)

    # ------------------------------------------------------------------ serialisation
    def config(self) -> dict[str, Any]:
        """Keyword arguments that rebuild this model: ``FrameStackForwardModel(**config())``."""
        return {
            "action_dim": self.action_dim,
            "image_size": list(self.image_size),
            "stack": self.stack,
            "channels": list(self.channels),
            "bottleneck_channels": self.bottleneck_channels,
            "latent_dim": self.latent_dim,
            "hidden_size": self.hidden_size,
            "core": self.core,
        }

    # ------------------------------------------------------------------ one step
    def stack_frames(self, history: Sequence[torch.Tensor]) -> torch.Tensor:
        """Channel-concatenate the last ``S`` frames of ``history`` (each ``(B, 3, H, W)``,
        oldest first) into ``(B, 3S, H, W)``, repeating the earliest frame where fewer than
        ``S`` exist."""
        frames = list(history[-self.stack :])
        frames = [frames[0]] * (self.stack - len(frames)) + frames
        return torch.cat(frames, dim=1)

    def step(self, history: Sequence[torch.Tensor], action: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        """One recurrent step: the frames fed so far ``x_0..x_t`` (``history``, each
        ``(B, 3, H, W)``; only the last ``S`` are used) and ``a_t`` ``(B, A)`` -> prediction of
        ``x_{t+1}`` ``(B, 3, H, W)`` in ``[0, 1]`` and the new core state (``(h, c)`` for the
        LSTM, ``h`` for the GRU, each ``(B, hidden_size)``). No validation."""
        e = self.encoder(self.stack_frames(history))
        z = torch.cat([e, action.to(e.dtype)], dim=1)
        state = self.cell(z, state)
        h = state[0] if isinstance(state, tuple) else state
        return self.decoder(h), state

    # ------------------------------------------------------------------ rollout
    def forward(
        self,
        context: torch.Tensor,
        actions: torch.Tensor,
        targets: torch.Tensor | None = None,
        teacher_forcing_prob: float = 0.0,
    ) -> torch.Tensor:
        """Roll the model out over ``t = 0 .. C + K - 2`` (contract:
        :meth:`visfore_models.base.ForwardModel.forward`). The stack holds the frames fed
        at the last ``S`` steps: true context frames during the warm-up, afterwards the
        model's own predictions (or, under teacher forcing, the true frames).

        Args:
            context: ``(B, C, 3, H, W)`` float in ``[0, 1]``: ``o_0..o_{C-1}``.
            actions: ``(B, C + K - 1, A)`` float: ``a_0..a_{C+K-2}``.
            targets: optional ``(B, K, 3, H, W)``: ``o_C..o_{C+K-1}`` for teacher forcing.
            teacher_forcing_prob: per-sample, per-step probability of feeding the true
                frame instead of the prediction (needs ``targets``).

        Returns:
            ``(B, K, 3, H, W)`` predictions of ``o_C..o_{C+K-1}`` in ``[0, 1]``.

        Raises:
            ValueError: on shape/dtype mismatch, inputs on another device than the model,
                or a bad ``teacher_forcing_prob``.
        """
        self.check_inputs(context, actions, targets, teacher_forcing_prob)
        context, actions, targets = prepare_inputs(self.encoder.fc.weight, context, actions, targets)
        history: list[torch.Tensor] = []
        state: list[Any] = [None]

        def step(t: int, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
            history.append(x)
            del history[: -self.stack]
            pred, state[0] = self.step(history, a, state[0])
            return pred

        return rollout(step, context, actions, targets, teacher_forcing_prob)
