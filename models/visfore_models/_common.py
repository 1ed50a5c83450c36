"""Building blocks shared by the forward models of the zoo (private module: import
:class:`StepwiseForwardModel`, :func:`cdna_transform` and :func:`dna_transform`, the public
ones, from :mod:`visfore_models`).

* :func:`check_multiple_of` -- the image-size constraint of the models (one-line ValueError).
* :func:`prepare_inputs`, :func:`next_input`, :func:`rollout` -- the recurrent rollout
  of :class:`~visfore_models.base.ForwardModel` (warm-up on the context, then open loop or
  per-sample teacher forcing), identical for every deterministic model;
  :class:`StepwiseForwardModel` -- a model defined by its one-step ``step`` method, whose
  ``forward`` is that rollout (cdna, dna, rnn_deconv).
* :func:`cdna_transform`, :func:`dna_transform` -- Finn, Goodfellow & Levine 2016
  (arXiv:1605.07157) advection of the previous frame by normalised kernels.
* :class:`VectorEncoder`, :class:`VectorDecoder` -- DCGAN-like conv encoder to a latent
  vector and deconvolution decoder back to a frame (Radford et al. 2016, arXiv:1511.06434;
  used with a recurrent core by Oh et al. 2015, arXiv:1507.08750, and Denton & Fergus 2018,
  arXiv:1802.07687).

Every normalisation is GroupNorm (never BatchNorm), so a sample's prediction does not depend
on the rest of the batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .base import ForwardModel

__all__ = [
    "StepwiseForwardModel",
    "VectorDecoder",
    "VectorEncoder",
    "cdna_transform",
    "check_channels",
    "check_multiple_of",
    "check_odd",
    "check_positive",
    "conv_gn_relu",
    "deconv_gn_relu",
    "dna_transform",
    "down",
    "groups",
    "next_input",
    "prepare_inputs",
    "rollout",
]


# ---------------------------------------------------------------------------- validation
def check_multiple_of(name: str, image_size: tuple[int, int], multiple: int = 8) -> None:
    """Raise a one-line ValueError unless ``H`` and ``W`` are positive multiples of ``multiple``."""
    H, W = image_size
    if H % multiple or W % multiple:
        raise ValueError(f"{name} needs H and W divisible by {multiple}, got {H}x{W}")


def check_channels(name: str, value: Sequence[int], length: int | None = None) -> tuple[int, ...]:
    """Return ``value`` as a tuple of positive ints (of the given length, if any)."""
    try:
        out = tuple(int(c) for c in value)
    except TypeError:
        raise ValueError(f"{name} must be a sequence of positive ints, got {value!r}") from None
    if (length is not None and len(out) != length) or not out or any(c < 1 for c in out):
        what = f"{length} positive ints" if length is not None else "positive ints"
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return out


def check_positive(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def check_odd(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or value % 2 != 1:
        raise ValueError(f"{name} must be a positive odd int, got {value!r}")
    return value


# ---------------------------------------------------------------------------- layers
def groups(c: int) -> int:
    """Number of GroupNorm groups for ``c`` channels (8, 4, 2 or 1)."""
    for g in (8, 4, 2):
        if c % g == 0:
            return g
    return 1


def conv_gn_relu(cin: int, cout: int, k: int, stride: int = 1) -> nn.Sequential:
    """``Conv2d(k, stride, padding=k//2) -> GroupNorm -> ReLU``; ``(B, cin, H, W) ->
    (B, cout, H/stride, W/stride)`` (for even ``H, W`` when ``stride = 2``)."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2),
        nn.GroupNorm(groups(cout), cout),
        nn.ReLU(inplace=True),
    )


def down(cin: int, cout: int) -> nn.Sequential:
    """DCGAN down-sampling block: ``Conv2d(4, stride 2, padding 1) -> GN -> LeakyReLU(0.2)``;
    ``(B, cin, H, W) -> (B, cout, H/2, W/2)``."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 4, stride=2, padding=1),
        nn.GroupNorm(groups(cout), cout),
        nn.LeakyReLU(0.2, inplace=True),
    )


def deconv_gn_relu(cin: int, cout: int) -> nn.Sequential:
    """DCGAN up-sampling block: ``ConvTranspose2d(4, stride 2, padding 1) -> GN -> ReLU``;
    ``(B, cin, H, W) -> (B, cout, 2H, 2W)``."""
    return nn.Sequential(
        nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1),
        nn.GroupNorm(groups(cout), cout),
        nn.ReLU(inplace=True),
    )


class VectorEncoder(nn.Module):
    """Frame(s) to a latent vector: three DCGAN down-sampling blocks to ``H/8 x W/8``, a 1x1
    convolution to ``bottleneck_channels``, flatten, ``Linear`` to ``latent_dim`` and an
    output activation (``"relu"`` or ``"tanh"``).

    Shapes: ``(B, in_channels, H, W) -> (B, latent_dim)``; with ``return_skips=True`` also the
    three feature maps ``[(B, c1, H/2, W/2), (B, c2, H/4, W/4), (B, c3, H/8, W/8)]``.
    The ``Linear`` layer has ``bottleneck_channels * H/8 * W/8 * latent_dim`` weights, so the
    parameter count grows with the image size.
    """

    def __init__(
        self,
        in_channels: int,
        channels: tuple[int, int, int],
        bottleneck_channels: int,
        latent_dim: int,
        image_size: tuple[int, int],
        activation: str = "relu",
    ) -> None:
        super().__init__()
        c1, c2, c3 = channels
        self.blocks = nn.ModuleList([down(in_channels, c1), down(c1, c2), down(c2, c3)])
        self.squeeze = nn.Sequential(nn.Conv2d(c3, bottleneck_channels, 1), nn.LeakyReLU(0.2, inplace=True))
        H, W = image_size
        self.fc = nn.Linear(bottleneck_channels * (H // 8) * (W // 8), latent_dim)
        self.act: nn.Module = nn.Tanh() if activation == "tanh" else nn.ReLU(inplace=True)

    def forward(
        self, x: torch.Tensor, return_skips: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        skips = []
        for block in self.blocks:
            x = block(x)
            skips.append(x)
        h = self.act(self.fc(self.squeeze(x).flatten(1)))
        return (h, skips) if return_skips else h


class VectorDecoder(nn.Module):
    """Latent vector to a frame: ``Linear`` to ``bottleneck_channels x H/8 x W/8``, a 1x1
    convolution to ``c3``, three DCGAN up-sampling blocks (``c3 -> c2 -> c1 -> 3``, the last
    without normalisation) and a sigmoid: the frame is generated directly.

    With ``skip_channels = (s1, s2, s3)`` the input of each up-sampling block is concatenated
    with a skip feature map of the matching resolution (U-Net style; Denton & Fergus 2018):
    ``s3`` channels at ``H/8``, ``s2`` at ``H/4``, ``s1`` at ``H/2``.

    Shapes: ``(B, latent_dim)`` [and the skips] ``-> (B, 3, H, W)`` in ``[0, 1]``.
    """

    def __init__(
        self,
        latent_dim: int,
        channels: tuple[int, int, int],
        bottleneck_channels: int,
        image_size: tuple[int, int],
        skip_channels: tuple[int, int, int] = (0, 0, 0),
    ) -> None:
        super().__init__()
        c1, c2, c3 = channels
        s1, s2, s3 = skip_channels
        H, W = image_size
        self.grid = (bottleneck_channels, H // 8, W // 8)
        self.fc = nn.Sequential(nn.Linear(latent_dim, bottleneck_channels * (H // 8) * (W // 8)), nn.ReLU(inplace=True))
        self.expand = nn.Sequential(
            nn.Conv2d(bottleneck_channels, c3, 1), nn.GroupNorm(groups(c3), c3), nn.ReLU(inplace=True)
        )
        self.up1 = deconv_gn_relu(c3 + s3, c2)
        self.up2 = deconv_gn_relu(c2 + s2, c1)
        self.up3 = nn.ConvTranspose2d(c1 + s1, 3, 4, stride=2, padding=1)

    def forward(self, h: torch.Tensor, skips: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        x = self.expand(self.fc(h).view(-1, *self.grid))
        for i, up in enumerate((self.up1, self.up2, self.up3)):
            if skips is not None:
                x = torch.cat([x, skips[2 - i]], dim=1)
            x = up(x)
        return torch.sigmoid(x)


# ---------------------------------------------------------------------------- transforms
def cdna_transform(x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Convolve every channel of ``x`` ``(B, 3, H, W)`` with each of the per-sample
    kernels ``(B, N, k, k)`` (replicate padding, so normalised kernels keep values in
    ``[0, 1]``); returns ``(B, N, 3, H, W)``. CDNA of Finn et al. 2016."""
    B, C, H, W = x.shape
    N, k = kernels.shape[1], kernels.shape[-1]
    p = k // 2
    xp = F.pad(x, (p, p, p, p), mode="replicate").reshape(1, B * C, H + 2 * p, W + 2 * p)
    # weight[(b*C + c)*N + n] = kernels[b, n]  (groups = B*C, N outputs per group)
    weight = kernels[:, None].expand(B, C, N, k, k).reshape(B * C * N, 1, k, k).to(xp.dtype)
    out = F.conv2d(xp, weight, groups=B * C)  # (1, B*C*N, H, W)
    return out.reshape(B, C, N, H, W).transpose(1, 2)


def dna_transform(x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Per-pixel advection: ``out[b, c, i, j] = sum_{u,v} kernels[b, u*k + v, i, j] *
    x[b, c, i + u - k//2, j + v - k//2]`` (replicate padding). ``x`` ``(B, 3, H, W)``,
    ``kernels`` ``(B, k*k, H, W)`` normalised over dim 1; returns ``(B, 3, H, W)``.
    DNA of Finn et al. 2016."""
    B, C, H, W = x.shape
    kk = kernels.shape[1]
    k = int(round(kk**0.5))
    p = k // 2
    patches = F.unfold(F.pad(x, (p, p, p, p), mode="replicate"), k)  # (B, C*k*k, H*W)
    patches = patches.view(B, C, kk, H, W)
    return (patches * kernels.unsqueeze(1).to(patches.dtype)).sum(dim=2)


# ---------------------------------------------------------------------------- rollout
def prepare_inputs(
    reference: torch.Tensor,
    context: torch.Tensor,
    actions: torch.Tensor,
    targets: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Check that the inputs are on ``reference``'s device (a parameter of the model) and
    cast them to its dtype (float32 unless the model was converted; under ``torch.autocast``
    the parameters stay float32 and autocast picks the compute dtype per operation).

    Raises:
        ValueError: if the inputs live on another device than the model.
    """
    if context.device != reference.device or actions.device != reference.device:
        raise ValueError(f"inputs are on {context.device}/{actions.device} but the model is on {reference.device}")
    context = context.to(dtype=reference.dtype)
    actions = actions.to(dtype=reference.dtype)
    if targets is not None:
        targets = targets.to(device=reference.device, dtype=reference.dtype)
    return context, actions, targets


def next_input(pred: torch.Tensor, targets: torch.Tensor | None, k: int, p: float) -> torch.Tensor:
    """Input frame of an open-loop step: the prediction ``pred`` ``(B, 3, H, W)`` of ``o_{C+k}``,
    or, under teacher forcing, the true ``targets[:, k]``: always when ``p >= 1``, per sample
    with probability ``p`` (one ``torch.rand(B)`` draw from the global RNG) when ``0 < p < 1``,
    never when ``p == 0`` or ``targets`` is None."""
    if targets is None or p <= 0.0:
        return pred
    true = targets[:, k]
    if p >= 1.0:
        return true
    use = torch.rand(pred.shape[0], device=pred.device) < p
    return torch.where(use[:, None, None, None], true, pred.to(true.dtype))


def rollout(
    step: Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor],
    context: torch.Tensor,
    actions: torch.Tensor,
    targets: torch.Tensor | None,
    teacher_forcing_prob: float,
) -> torch.Tensor:
    """Run ``step(t, x_t, a_t) -> x̂_{t+1}`` over ``t = 0 .. C + K - 2`` (the step keeps its
    own recurrent state) with ``x_t = o_t`` for ``t < C`` and :func:`next_input` afterwards;
    returns the stacked predictions of ``o_C .. o_{C+K-1}``, ``(B, K, 3, H, W)``."""
    C = context.shape[1]
    p = float(teacher_forcing_prob)
    preds: list[torch.Tensor] = []
    pred: torch.Tensor | None = None
    for t in range(actions.shape[1]):
        if t < C:
            x = context[:, t]
        else:
            assert pred is not None
            x = next_input(pred, targets, t - C, p)
        pred = step(t, x, actions[:, t])
        if t >= C - 1:
            preds.append(pred)
    return torch.stack(preds, dim=1)


class StepwiseForwardModel(ForwardModel):
    """A forward model given by one recurrent step; :meth:`forward` rolls it out.

    Subclasses implement ``step(x, a, state) -> (prediction, state)``: ``x`` the input frame
    ``(B, 3, H, W)`` (true during the context, then predicted or teacher-forced), ``a`` the
    action ``(B, A)`` taken after it, ``state`` the recurrent state (None at the first
    step), ``prediction`` the next frame ``(B, 3, H, W)`` in ``[0, 1]``.
    """

    def step(self, x: torch.Tensor, a: torch.Tensor, state):  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(
        self,
        context: torch.Tensor,
        actions: torch.Tensor,
        targets: torch.Tensor | None = None,
        teacher_forcing_prob: float = 0.0,
    ) -> torch.Tensor:
        """Roll :meth:`step` out over ``t = 0 .. C + K - 2`` (contract:
        :meth:`visfore_models.base.ForwardModel.forward`).

        Args:
            context: ``(B, C, 3, H, W)`` float in ``[0, 1]``: ``o_0..o_{C-1}``.
            actions: ``(B, C + K - 1, A)`` float: ``a_0..a_{C+K-2}``.
            targets: optional ``(B, K, 3, H, W)``: ``o_C..o_{C+K-1}`` for teacher forcing.
            teacher_forcing_prob: per-sample, per-step probability of feeding the true
                frame instead of the prediction (Finn et al. 2016 train with scheduled
                sampling, an inverse-sigmoid decay of this probability; needs ``targets``).

        Returns:
            ``(B, K, 3, H, W)`` predictions of ``o_C..o_{C+K-1}`` in ``[0, 1]``.

        Raises:
            ValueError: on shape/dtype mismatch, inputs on another device than the model,
                or a bad ``teacher_forcing_prob``.
        """
        self.check_inputs(context, actions, targets, teacher_forcing_prob)
        reference = next(self.parameters())
        context, actions, targets = prepare_inputs(reference, context, actions, targets)
        state: list = [None]

        def one_step(t: int, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
            pred, state[0] = self.step(x, a, state[0])
            return pred

        return rollout(one_step, context, actions, targets, teacher_forcing_prob)
