"""SVG-LP: stochastic video generation with a learned prior (Denton & Fergus 2018),
action-conditioned.

Sources:
    * E. Denton, R. Fergus, "Stochastic Video Generation with a Learned Prior", ICML 2018,
      arXiv:1802.07687, and the authors' release (github.com/edenton/svg): encoder, frame
      predictor LSTM, posterior LSTM ``q(z_t | x_{1..t})``, learned prior LSTM
      ``p(z_t | x_{1..t-1})``, decoder with skip connections from the last context frame;
      loss ``sum_t MSE_t + beta * KL(q || p)_t`` with ``beta = 1e-4``; during the
      conditioning frames the latents come from the posterior (the next frame is known),
      afterwards from the prior.
    * A. X. Lee, R. Zhang, F. Ebert, P. Abbeel, C. Finn, S. Levine, "Stochastic Adversarial
      Video Prediction", 2018, arXiv:1804.01523 -- action-conditioned stochastic prediction
      (the action is an input of the frame predictor).

One step ``t`` (``x_t`` the input frame, ``o_{t+1}`` the true next frame; ``H, W``
divisible by 8)::

    h_t, skips_t = E(x_t)             E: [conv 4x4 s2 + GN + LeakyReLU] x 3 -> conv 1x1 ->
                                         flatten -> Linear -> tanh -> (g_dim,); skips_t =
                                         the three feature maps at H/2, H/4, H/8
    mu_p, logvar_p = prior LSTM(h_t)                            p(z_t | x_{0..t})
    mu_q, logvar_q = posterior LSTM(E(o_{t+1}))                 q(z_t | x_{0..t+1})
    z_t = mu + exp(logvar / 2) * eps,  eps ~ N(0, I) drawn from torch's global RNG
          (posterior in the warm-up t < C - 1, and at every step when training with
          targets; prior otherwise)
    g_t = predictor LSTM([h_t, z_t, a_t]) -> Linear -> tanh         (g_dim,)
    x̂_{t+1} = D(g_t, skips_{C-1})     D: Linear -> conv 1x1 -> [concat skip, deconv 4x4 s2
                                         + GN + ReLU] x 2 -> concat skip, deconv 4x4 s2 ->
                                         sigmoid; skips from the last context frame
                                         o_{C-1} (from x_t itself during the warm-up)

(The paper indexes the prior as ``p(z_t | x_{1..t-1})`` for the prediction of ``x_t``; with
this package's step convention that is the prior of step ``t`` seeing ``x_0..x_t`` while
predicting ``x_{t+1}``.) Each LSTM module is ``Linear embedding -> stacked LSTMCells ->
Linear head(s)`` as in the release; BatchNorm is left out (samples stay independent).

KL: ``KL(q || p)`` summed over the ``z_dim`` dimensions, averaged over the batch and over the
steps where the posterior was used; :meth:`SVGLPForwardModel.auxiliary_losses` returns
``{"kl": beta * KL}`` (a zero tensor when the posterior was not used; since the trainer's
MSE is a mean over steps, ``beta`` keeps the paper's per-step weighting). Denton & Fergus
train with teacher forcing (``teacher_forcing_prob = 1``) and the targets; the posterior is
used only when ``targets`` are passed and the model is in training mode.

Defaults: channels (32, 32, 32), b = 8, g_dim = 64, z_dim = 8, rnn_size = 96, a 2-layer
predictor, 1-layer posterior and prior (the paper: 128 / 10 / 256, 2 / 1 / 1 layers for
SM-MNIST), beta = 1e-4: 0.50 M parameters at 64x64 (the encoder's and decoder's Linear
layers grow with the image size: 0.45 M at 32x32, 0.70 M at 128x128). The output is
generated (sigmoid), not copied: the model starts far from copy-last-frame.
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
    next_input,
    prepare_inputs,
)
from .base import ForwardModel

__all__ = ["SVGLPForwardModel", "gaussian_kl"]

LSTMState = list[tuple[torch.Tensor, torch.Tensor] | None]


def gaussian_kl(mu_q: torch.Tensor, logvar_q: torch.Tensor, mu_p: torch.Tensor, logvar_p: torch.Tensor) -> torch.Tensor:
    """``KL(N(mu_q, exp(logvar_q)) || N(mu_p, exp(logvar_p)))`` of diagonal Gaussians
    ``(B, z)``, summed over ``z`` and averaged over ``B`` (computed in float32)."""
    mu_q, logvar_q, mu_p, logvar_p = (t.float() for t in (mu_q, logvar_q, mu_p, logvar_p))
    kl = 0.5 * (logvar_p - logvar_q + (logvar_q.exp() + (mu_q - mu_p) ** 2) / logvar_p.exp() - 1.0)
    return kl.sum(dim=1).mean()


class _LSTMStack(nn.Module):
    """``Linear(in -> hidden) -> n x LSTMCell(hidden)``; ``forward(x (B, in), state)`` returns
    the top hidden ``(B, hidden)`` and the new state (``None`` = zeros)."""

    def __init__(self, input_size: int, hidden_size: int, layers: int) -> None:
        super().__init__()
        self.embed = nn.Linear(input_size, hidden_size)
        cells = [nn.LSTMCell(hidden_size, hidden_size) for _ in range(layers)]
        for cell in cells:  # forget-gate bias 1
            with torch.no_grad():
                cell.bias_ih[hidden_size : 2 * hidden_size].fill_(1.0)
                cell.bias_hh[hidden_size : 2 * hidden_size].fill_(0.0)
        self.cells = nn.ModuleList(cells)

    def forward(self, x: torch.Tensor, state: LSTMState | None) -> tuple[torch.Tensor, LSTMState]:
        h = self.embed(x)
        new: LSTMState = []
        for i, cell in enumerate(self.cells):
            h, c = cell(h, None if state is None else state[i])
            new.append((h, c))
        return h, new


class _GaussianLSTM(nn.Module):
    """Denton & Fergus's ``gaussian_lstm``: ``_LSTMStack`` then two Linear heads giving
    ``mu, logvar`` ``(B, z_dim)``."""

    def __init__(self, input_size: int, hidden_size: int, layers: int, z_dim: int) -> None:
        super().__init__()
        self.lstm = _LSTMStack(input_size, hidden_size, layers)
        self.mu = nn.Linear(hidden_size, z_dim)
        self.logvar = nn.Linear(hidden_size, z_dim)

    def forward(self, x: torch.Tensor, state: LSTMState | None) -> tuple[torch.Tensor, torch.Tensor, LSTMState]:
        h, state = self.lstm(x, state)
        return self.mu(h), self.logvar(h), state


class SVGLPForwardModel(ForwardModel):
    """Action-conditioned SVG-LP (registry name ``"svg_lp"``; ``stochastic = True``). See the
    module docstring for the architecture and sources; the forward contract is that of
    :class:`visfore_models.base.ForwardModel`, with latent samples drawn from torch's global
    RNG (``torch.manual_seed`` reproduces them; one ``(B, z_dim)`` normal draw at the start
    of every step, before the teacher-forcing draw).

    Args:
        action_dim: ``A``, size of one action vector (``>= 1``).
        image_size: ``H`` (square) or ``(H, W)``; both divisible by 8.
        channels: ``(c1, c2, c3)`` encoder channels at ``H/2, H/4, H/8`` (the decoder
            mirrors them and receives the encoder's maps as skips).
        bottleneck_channels: ``b``, channels of the flattened ``H/8 x W/8`` map.
        g_dim: size of the frame encoding ``h_t`` and of the predictor output ``g_t``.
        z_dim: size of the latent ``z_t``.
        rnn_size: hidden units of every LSTM (predictor, posterior, prior).
        predictor_layers: LSTM layers of the frame predictor.
        latent_layers: LSTM layers of the posterior and of the prior.
        beta: weight of the KL term returned by :meth:`auxiliary_losses`.

    Raises:
        ValueError: on invalid sizes or a negative ``beta`` (one-line message).
    """

    name = "svg_lp"
    stochastic = True

    def __init__(
        self,
        *,
        action_dim: int,
        image_size: int | tuple[int, int],
        channels: Sequence[int] = (32, 32, 32),
        bottleneck_channels: int = 8,
        g_dim: int = 64,
        z_dim: int = 8,
        rnn_size: int = 96,
        predictor_layers: int = 2,
        latent_layers: int = 1,
        beta: float = 1e-4,
    ) -> None:
        super().__init__(action_dim=action_dim, image_size=image_size)
        check_multiple_of(self.name, self.image_size, 8)
        self.channels = check_channels("channels", channels, 3)
        self.bottleneck_channels = check_positive("bottleneck_channels", bottleneck_channels)
        self.g_dim = check_positive("g_dim", g_dim)
        self.z_dim = check_positive("z_dim", z_dim)
        self.rnn_size = check_positive("rnn_size", rnn_size)
        self.predictor_layers = check_positive("predictor_layers", predictor_layers)
        self.latent_layers = check_positive("latent_layers", latent_layers)
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not beta >= 0.0:
            raise ValueError(f"beta must be a non-negative number, got {beta!r}")
        self.beta = float(beta)
        ch = (self.channels[0], self.channels[1], self.channels[2])
        b = self.bottleneck_channels
        self.encoder = VectorEncoder(3, ch, b, self.g_dim, self.image_size, activation="tanh")
        self.decoder = VectorDecoder(self.g_dim, ch, b, self.image_size, skip_channels=ch)
        self.predictor = _LSTMStack(self.g_dim + self.z_dim + action_dim, self.rnn_size, self.predictor_layers)
        self.predictor_out = nn.Sequential(nn.Linear(self.rnn_size, self.g_dim), nn.Tanh())
        self.posterior = _GaussianLSTM(self.g_dim, self.rnn_size, self.latent_layers, self.z_dim)
        self.prior = _GaussianLSTM(self.g_dim, self.rnn_size, self.latent_layers, self.z_dim)
        self._kl: torch.Tensor | None = None

    # ------------------------------------------------------------------ serialisation
    def config(self) -> dict[str, Any]:
        """Keyword arguments that rebuild this model: ``SVGLPForwardModel(**config())``."""
        return {
            "action_dim": self.action_dim,
            "image_size": list(self.image_size),
            "channels": list(self.channels),
            "bottleneck_channels": self.bottleneck_channels,
            "g_dim": self.g_dim,
            "z_dim": self.z_dim,
            "rnn_size": self.rnn_size,
            "predictor_layers": self.predictor_layers,
            "latent_layers": self.latent_layers,
            "beta": self.beta,
        }

    def __getstate__(self) -> dict[str, Any]:
        # the last KL is part of an autograd graph, which copy.deepcopy and pickle refuse
        state = self.__dict__.copy()
        state["_kl"] = None
        return state

    # ------------------------------------------------------------------ losses
    def auxiliary_losses(self) -> dict[str, torch.Tensor]:
        """``{"kl": beta * KL(q || p)}`` of the last forward pass (KL summed over ``z``,
        averaged over batch and posterior steps; zero when no posterior step ran), or ``{}``
        before the first forward pass."""
        if self._kl is None:
            return {}
        return {"kl": self.beta * self._kl}

    # ------------------------------------------------------------------ rollout
    def forward(
        self,
        context: torch.Tensor,
        actions: torch.Tensor,
        targets: torch.Tensor | None = None,
        teacher_forcing_prob: float = 0.0,
    ) -> torch.Tensor:
        """Sample a rollout over ``t = 0 .. C + K - 2`` (contract:
        :meth:`visfore_models.base.ForwardModel.forward`).

        In training mode with ``targets``, every ``z_t`` comes from the posterior, which sees
        the true next frame (so the prediction of ``o_{C+k}`` depends on ``targets[:, k]``:
        the VAE reconstruction; the KL term keeps it honest). Otherwise (eval mode, or no
        targets) ``z_t`` comes from the posterior during the context warm-up and from the
        learned prior for every returned frame, so predictions depend only on the past.

        Args:
            context: ``(B, C, 3, H, W)`` float in ``[0, 1]``: ``o_0..o_{C-1}``.
            actions: ``(B, C + K - 1, A)`` float: ``a_0..a_{C+K-2}``.
            targets: optional ``(B, K, 3, H, W)``: ``o_C..o_{C+K-1}``, for teacher forcing
                and, in training mode, for the posterior.
            teacher_forcing_prob: per-sample, per-step probability of feeding the true
                frame instead of the prediction (needs ``targets``).

        Returns:
            ``(B, K, 3, H, W)`` sampled predictions of ``o_C..o_{C+K-1}`` in ``[0, 1]``.

        Raises:
            ValueError: on shape/dtype mismatch, inputs on another device than the model,
                or a bad ``teacher_forcing_prob``.
        """
        C, K = self.check_inputs(context, actions, targets, teacher_forcing_prob)
        context, actions, targets = prepare_inputs(self.encoder.fc.weight, context, actions, targets)
        p = float(teacher_forcing_prob)
        B = context.shape[0]
        use_posterior_always = self.training and targets is not None
        pred_state: LSTMState | None = None
        prior_state: LSTMState | None = None
        post_state: LSTMState | None = None
        skips: list[torch.Tensor] = []
        kls: list[torch.Tensor] = []
        preds: list[torch.Tensor] = []
        pred: torch.Tensor | None = None
        for t in range(C + K - 1):
            eps = torch.randn(B, self.z_dim, device=context.device, dtype=context.dtype)
            if t < C:
                x = context[:, t]
            else:
                assert pred is not None
                x = next_input(pred, targets, t - C, p)
            h, skips_t = self.encoder(x, return_skips=True)
            if t < C:
                skips = skips_t  # decoder skips: the last context frame
            mu_p, logvar_p, prior_state = self.prior(h, prior_state)
            if t < C - 1 or use_posterior_always:
                if t < C - 1:
                    true_next = context[:, t + 1]
                else:
                    assert targets is not None
                    true_next = targets[:, t + 1 - C]
                mu_q, logvar_q, post_state = self.posterior(self.encoder(true_next), post_state)
                kls.append(gaussian_kl(mu_q, logvar_q, mu_p, logvar_p))
                mu, logvar = mu_q, logvar_q
            else:
                mu, logvar = mu_p, logvar_p
            z = mu + torch.exp(0.5 * logvar) * eps
            inp = torch.cat([h, z.to(h.dtype), actions[:, t].to(h.dtype)], dim=1)
            g, pred_state = self.predictor(inp, pred_state)
            pred = self.decoder(self.predictor_out(g), skips)
            if t >= C - 1:
                preds.append(pred)
        self._kl = torch.stack(kls).mean() if kls else context.new_zeros(())
        return torch.stack(preds, dim=1)
