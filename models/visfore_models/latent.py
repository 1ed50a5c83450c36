"""Shared machinery of the latent world models (``rssm``, ``jepa``): the stepping API in
latent space, the optional probe head, and the conv encoder / decoder they both use.

:class:`LatentForwardModel` is a :class:`~visfore_models.base.ForwardModel` whose state is a
:class:`~visfore_models.base.LatentState`. A subclass implements four latent operations::

    _filter(context (B, C, 3, H, W), actions (B, C - 1, A))  -> LatentStates at t = 0 .. C - 1
    _step(state at t, a_t (B, A))                             -> LatentState at t + 1 (prediction)
    _features(deter (N, D), stoch (N, S))                     -> (N, F)  no convolution
    _decode(deter (N, D), stoch (N, S), frame (N, 3, H, W) | None) -> (N, 3, H, W) in [0, 1]

and this class builds ``init_state``, ``imagine`` (batched candidates, features or frames),
``decode``, ``features``, ``observe`` and the probe from them. ``forward`` stays the
subclass's (it also trains); a subclass makes ``imagine(init_state(c, a0), a)`` equal
``forward(c, cat(a0, a))`` in eval mode by using the same operations in the same order
(including the draws from torch's global RNG).

Probe (``probe_dim > 0``): a small MLP from :meth:`~LatentForwardModel.features` to
``probe_dim`` values (e.g. the robot's key points and joint angles), trained by
:meth:`~LatentForwardModel.probe_loss` on *detached* features, so the privileged labels
never shape the latent itself (a read-out probe in the sense of Alain & Bengio 2016,
"Understanding intermediate layers using linear classifier probes", arXiv:1610.01644,
with one hidden layer).

Conv encoder and decoder (:class:`ConvEncoder`, :class:`ConvDecoder`): DreamerV3's image
networks (Hafner et al. 2023, arXiv:2301.04104, and github.com/danijar/dreamerv3,
``nets.py``): stride-2 convolutions with kernel 4, each followed by a normalisation and
SiLU, until the map is 4x4 (``minres = 4``), then flatten; the decoder mirrors it with
transposed convolutions from a linear layer. Differences: GroupNorm instead of
LayerNorm-over-channels (the package's rule: no batch statistics, GroupNorm everywhere);
the channels double once (``depth, 2 depth, 2 depth, ...``; DreamerV3 doubles them at every
stage) so the linear layers at the 4x4 grid, which dominate the parameter count, stay small; the input is centred (``x - 0.5``,
as DreamerV3) and the output is a sigmoid, so frames stay in ``[0, 1]``.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from collections.abc import Sequence

import torch
from torch import nn

from ._common import check_multiple_of, groups, prepare_inputs
from .base import ForwardModel, LatentState, State, _shape

__all__ = ["ConvDecoder", "ConvEncoder", "LatentForwardModel", "conv_stages", "mlp"]


# ---------------------------------------------------------------------------- layers
def conv_stages(image_size: tuple[int, int], min_res: int = 4) -> int:
    """Number of stride-2 stages of :class:`ConvEncoder`: the largest ``s >= 1`` with ``H``
    and ``W`` divisible by ``2**s`` and ``min(H, W) / 2**s >= min_res`` (DreamerV3's
    ``minres = 4``: 32x32 -> 3 stages to 4x4, 64x64 -> 4, 16x24 -> 2 to 4x6); 1 when even
    one stage goes below ``min_res``."""
    H, W = image_size
    s = 1
    while H % 2 ** (s + 1) == 0 and W % 2 ** (s + 1) == 0 and min(H, W) // 2 ** (s + 1) >= min_res:
        s += 1
    return s


def stage_channels(depth: int, stages: int) -> list[int]:
    """Channels of each encoder stage: ``depth`` for the first, ``2 * depth`` for the others
    (16, 32, 32, 32, ... for ``depth = 16``)."""
    return [depth * 2 ** min(i, 1) for i in range(stages)]


def mlp(sizes: Sequence[int], *, out_norm: bool = False) -> nn.Sequential:
    """``Linear -> LayerNorm -> SiLU`` for every hidden layer, then a plain ``Linear``
    (DreamerV3's MLPs: normalisation and SiLU, Hafner et al. 2023). ``sizes = (in, h1, ...,
    out)``; ``(N, in) -> (N, out)``. ``out_norm`` appends a LayerNorm to the output."""
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 2):
        layers += [nn.Linear(sizes[i], sizes[i + 1]), nn.LayerNorm(sizes[i + 1]), nn.SiLU()]
    layers.append(nn.Linear(sizes[-2], sizes[-1]))
    if out_norm:
        layers.append(nn.LayerNorm(sizes[-1]))
    return nn.Sequential(*layers)


class ConvEncoder(nn.Module):
    """Frames to a flat feature vector: ``x - 0.5``, then :func:`conv_stages` blocks of
    ``Conv2d(4, stride 2, padding 1) -> GroupNorm -> SiLU`` with :func:`stage_channels` channels.

    Shapes: ``(N, 3, H, W)`` in ``[0, 1]`` -> ``(N, out_dim)``, ``out_dim = c_last * H/2**s *
    W/2**s`` (:attr:`out_dim`, :attr:`grid` = ``(c_last, H/2**s, W/2**s)``).
    """

    def __init__(self, image_size: tuple[int, int], depth: int) -> None:
        super().__init__()
        stages = conv_stages(image_size)
        channels = stage_channels(depth, stages)
        blocks: list[nn.Module] = []
        cin = 3
        for c in channels:
            blocks += [nn.Conv2d(cin, c, 4, stride=2, padding=1), nn.GroupNorm(groups(c), c), nn.SiLU()]
            cin = c
        self.net = nn.Sequential(*blocks)
        H, W = image_size
        self.grid = (channels[-1], H // 2**stages, W // 2**stages)
        self.out_dim = self.grid[0] * self.grid[1] * self.grid[2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x - 0.5).flatten(1)


class ConvDecoder(nn.Module):
    """A latent vector to a frame: ``Linear`` to the encoder's last grid, then the encoder's
    stages mirrored with ``ConvTranspose2d(4, stride 2, padding 1)`` (GroupNorm and SiLU after
    each but the last, which gives 3 channels) and a sigmoid.

    With ``composite=True`` the last layer gives a fourth channel, a mask ``m = sigmoid(.)``,
    and the frame is ``m * sigmoid(rgb) + (1 - m) * background``: the prediction is painted
    onto a given frame (the last observed one), so what does not move (the target, the
    floor) can be copied instead of carried through the latent. This is the compositing of
    Finn, Goodfellow & Levine 2016 ("Unsupervised Learning for Physical Interaction through
    Video Prediction", arXiv:1605.07157, section 3.1: a mask that keeps the previous frame's
    static background), with one generated image instead of transformed ones.

    Shapes: ``(N, in_dim)`` (and ``background (N, 3, H, W)`` in ``[0, 1]`` when composite)
    -> ``(N, 3, H, W)`` in ``[0, 1]``.
    """

    def __init__(self, in_dim: int, image_size: tuple[int, int], depth: int, *, composite: bool = False) -> None:
        super().__init__()
        self.composite = bool(composite)
        stages = conv_stages(image_size)
        channels = stage_channels(depth, stages)
        H, W = image_size
        self.grid = (channels[-1], H // 2**stages, W // 2**stages)
        self.fc = nn.Linear(in_dim, self.grid[0] * self.grid[1] * self.grid[2])
        blocks: list[nn.Module] = []
        rev = channels[::-1]
        for cin, cout in zip(rev[:-1], rev[1:]):
            blocks += [
                nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1),
                nn.GroupNorm(groups(cout), cout),
                nn.SiLU(),
            ]
        blocks.append(nn.ConvTranspose2d(rev[-1], 4 if self.composite else 3, 4, stride=2, padding=1))
        self.net = nn.Sequential(*blocks)

    def forward(self, h: torch.Tensor, background: torch.Tensor | None = None) -> torch.Tensor:
        x = self.net(self.fc(h).view(-1, *self.grid))
        if not self.composite:
            return torch.sigmoid(x)
        if background is None or tuple(background.shape) != (x.shape[0], 3, *x.shape[2:]):
            raise ValueError(
                f"a composite decoder needs a ({x.shape[0]}, 3, {x.shape[2]}, {x.shape[3]}) background frame, "
                f"got {_shape(background)}"
            )
        mask = torch.sigmoid(x[:, 3:])
        return mask * torch.sigmoid(x[:, :3]) + (1.0 - mask) * background.to(x.dtype)


# ---------------------------------------------------------------------------- base class
class LatentForwardModel(ForwardModel):
    """A forward model whose state is a :class:`~visfore_models.base.LatentState` (abstract;
    ``latent = True``). See the module docstring for what a subclass implements.

    Subclasses call ``super().__init__(action_dim=..., image_size=...)`` and, once their
    feature size is known, :meth:`_build_probe`; their constructor checks the image size
    (``H`` and ``W`` divisible by 8).
    """

    latent = True

    def __init__(self, *, action_dim: int, image_size: int | tuple[int, int]) -> None:
        super().__init__(action_dim=action_dim, image_size=image_size)
        check_multiple_of(self.name, self.image_size, 8)
        self.probe_dim = 0
        self.probe_head: nn.Module | None = None

    # ------------------------------------------------------------------ subclass hooks
    @abc.abstractmethod
    def _filter(self, context: torch.Tensor, actions: torch.Tensor) -> list[LatentState]:
        """The states at ``t = 0 .. C - 1`` after observing ``context (B, C, 3, H, W)`` and
        ``actions (B, C - 1, A)`` (already on the model's device and dtype); the state at
        ``t`` equals the last one of filtering only ``o_0..o_t`` (same RNG draws first)."""

    @abc.abstractmethod
    def _step(self, state: LatentState, action: torch.Tensor) -> LatentState:
        """One predicted step: the state at ``t + 1`` from the state at ``t`` and ``a_t (B, A)``."""

    @abc.abstractmethod
    def _features(self, deter: torch.Tensor, stoch: torch.Tensor) -> torch.Tensor:
        """``(N, F)`` features of ``N`` states (no convolution)."""

    @abc.abstractmethod
    def _decode(self, deter: torch.Tensor, stoch: torch.Tensor, frame: torch.Tensor | None = None) -> torch.Tensor:
        """``(N, 3, H, W)`` frames in ``[0, 1]`` of ``N`` states (``frame``: their
        :attr:`~visfore_models.base.LatentState.frame`, for a decoder that uses it)."""

    #: whether states carry their last observed frame (:attr:`LatentState.frame`) for the
    #: decoder; a subclass with a compositing decoder sets it True
    keeps_frame = False

    def _with_frames(self, states: list[LatentState], frames: torch.Tensor) -> list[LatentState]:
        """``states`` of ``o_0..o_{T-1}`` with ``frames (B, T, 3, H, W)`` attached when the
        model keeps frames (:attr:`keeps_frame`); unchanged otherwise."""
        if not self.keeps_frame:
            return states
        return [dataclasses.replace(s, frame=frames[:, t]) for t, s in enumerate(states)]

    @property
    @abc.abstractmethod
    def feature_dim(self) -> int:
        """``F``, the size of a feature vector."""

    # ------------------------------------------------------------------ stepping API
    def _reference(self) -> torch.Tensor:
        return next(self.parameters())

    def init_state(self, context_frames: torch.Tensor, context_actions: torch.Tensor | None = None) -> LatentState:
        """The latent state at ``t = C - 1`` after filtering ``o_0..o_{C-1}`` and
        ``a_0..a_{C-2}`` (same arguments and errors as
        :meth:`visfore_models.base.ForwardModel.init_state`)."""
        context_actions = self.check_context(context_frames, context_actions)
        context, actions, _ = prepare_inputs(self._reference(), context_frames, context_actions, None)
        return self._with_frames(self._filter(context, actions), context)[-1]

    def _check_state(self, state: State) -> LatentState:
        if not isinstance(state, LatentState):
            raise ValueError(f"{self.name} needs a LatentState (from init_state), got {type(state).__name__}")
        return state

    def imagine(
        self, state: State, actions: torch.Tensor, decode: bool = True, last_only: bool = False
    ) -> tuple[torch.Tensor, LatentState]:
        """Roll the latent predictor out from ``state`` (contract:
        :meth:`visfore_models.base.ForwardModel.imagine`): ``K`` batched latent steps, then,
        with ``decode=True``, one batched decoder call over all ``B * [N *] K`` states; with
        ``decode=False`` only the features (no convolution at all). ``last_only`` decodes
        (or computes the features of) the last state only, which is all a planner's
        final-step cost reads: ``K - 1`` fewer feature or decoder passes, the same values.
        The returned state is the latent after the last step, so chained calls continue
        the same rollout.

        Raises:
            ValueError: a shape mismatch or a state that is not a LatentState (one line).
        """
        state = self._check_state(state)
        candidates = None
        if isinstance(actions, torch.Tensor) and actions.dim() == 4:
            B, candidates = actions.shape[:2]
            if B != state.batch_size:
                raise ValueError(f"actions batch size {B} != state batch size {state.batch_size}")
            state = state.repeat_interleave(candidates)
            actions = actions.reshape(B * candidates, *actions.shape[2:])
        if not isinstance(actions, torch.Tensor) or actions.dim() != 3 or actions.shape[1] < 1:
            raise ValueError(
                f"actions must be a (B, K, A) or (B, N, K, A) tensor with K >= 1, got shape {_shape(actions)}"
            )
        if actions.shape[0] != state.batch_size:
            raise ValueError(f"actions batch size {actions.shape[0]} != state batch size {state.batch_size}")
        if actions.shape[2] != self.action_dim:
            raise ValueError(f"actions must have action_dim={self.action_dim} at the last dim, got {actions.shape[2]}")
        ref = self._reference()
        if actions.device != ref.device:
            raise ValueError(f"actions are on {actions.device} but the model is on {ref.device}")
        actions = actions.to(ref.dtype)
        deters, stochs, feats = [], [], []
        frame = state.frame  # the last observed frame stays the decoder's background
        K = actions.shape[1]
        for k in range(K):
            state = self._step(state, actions[:, k])
            if last_only and k < K - 1:
                continue
            if decode:
                deters.append(state.deter)
                stochs.append(state.stoch)
            else:  # per step: small matrices that stay in cache
                feats.append(self._features(state.deter, state.stoch))
        if decode:
            deter = torch.stack(deters, dim=1)  # (B', K, D)
            stoch = torch.stack(stochs, dim=1)
            Bp, K = deter.shape[:2]
            back = None if frame is None else frame.repeat_interleave(K, dim=0)  # row b * K + k: frame b
            out = self._decode(deter.flatten(0, 1), stoch.flatten(0, 1), back)
            out = out.view(Bp, K, *out.shape[1:])
        else:
            out = torch.stack(feats, dim=1)  # (B', K, F)
        if candidates is not None:
            out = out.reshape(-1, candidates, *out.shape[1:])
        if frame is not None:  # only the returned state needs it: no per-step copy
            state = dataclasses.replace(state, frame=frame)
        return out, state

    def decode(self, state: State) -> torch.Tensor:
        """The decoder's frame of ``state``: ``(B, 3, H, W)`` in ``[0, 1]``.

        Raises:
            ValueError: a state that is not a LatentState (one line).
        """
        state = self._check_state(state)
        return self._decode(state.deter, state.stoch, state.frame)

    def features(self, state: State) -> torch.Tensor:
        """``(B, F)`` features of ``state`` (the model's planning space; see the model).

        Raises:
            ValueError: a state that is not a LatentState (one line).
        """
        state = self._check_state(state)
        return self._features(state.deter, state.stoch)

    def observe(self, frames: torch.Tensor, actions: torch.Tensor | None = None) -> torch.Tensor:
        """Features of the filtered state after each real frame, for probes and analyses.

        Args:
            frames: ``(B, T, 3, H, W)`` floating tensor in ``[0, 1]``, ``o_0..o_{T-1}``.
            actions: ``(B, T - 1, A)``, ``a_0..a_{T-2}`` (may be omitted when ``T == 1``).

        Returns:
            ``(B, T, F)`` float32: entry ``t`` is ``features(init_state(frames[:, :t + 1],
            actions[:, :t]))`` (one filtering pass; a stochastic model draws from torch's
            global RNG, the draws of a prefix first, so under one seed entry ``t`` equals
            that ``init_state``).

        Raises:
            ValueError: a shape mismatch (one line).
        """
        return torch.stack([self.features(s) for s in self.filter_states(frames, actions)], dim=1)

    def filter_states(self, frames: torch.Tensor, actions: torch.Tensor | None = None) -> list[LatentState]:
        """The filtered states after each real frame, one filtering pass (:meth:`observe` is
        their features): ``T`` :class:`~visfore_models.base.LatentState` of batch ``B``;
        state ``t`` is ``init_state(frames[:, :t + 1], actions[:, :t])`` (same draws rule as
        :meth:`observe`), so ``imagine`` can continue from any of them.

        Args:
            frames: ``(B, T, 3, H, W)`` floating tensor in ``[0, 1]``.
            actions: ``(B, T - 1, A)`` (may be omitted when ``T == 1``).

        Raises:
            ValueError: a shape mismatch (one line).
        """
        actions = self.check_context(frames, actions)
        frames, actions, _ = prepare_inputs(self._reference(), frames, actions, None)
        return self._with_frames(self._filter(frames, actions), frames)

    # ------------------------------------------------------------------ probe
    def _build_probe(self, probe_dim: int, hidden: int) -> None:
        if isinstance(probe_dim, bool) or not isinstance(probe_dim, int) or probe_dim < 0:
            raise ValueError(f"probe_dim must be a non-negative int, got {probe_dim!r}")
        self.probe_dim = probe_dim
        self.probe_head = mlp((self.feature_dim, hidden, probe_dim)) if probe_dim else None

    def probe(self, features: torch.Tensor) -> torch.Tensor:
        """The probe's read-out of ``features`` ``(..., F)``: ``(..., probe_dim)`` float.

        Raises:
            ValueError: if the model has no probe (``probe_dim == 0``) or the last dim of
                ``features`` is not ``F`` (one line).
        """
        if self.probe_head is None:
            raise ValueError(f"{self.name} has no probe: build it with probe_dim > 0")
        if not isinstance(features, torch.Tensor) or features.dim() < 1 or features.shape[-1] != self.feature_dim:
            raise ValueError(f"features must be a (..., {self.feature_dim}) tensor, got shape {_shape(features)}")
        ref = self._reference()
        out = self.probe_head(features.to(ref.dtype).flatten(0, -2) if features.dim() > 1 else features[None])
        return out.view(*features.shape[:-1], self.probe_dim)

    def probe_loss(
        self,
        features: torch.Tensor,
        labels: torch.Tensor,
        *,
        detach: bool = True,
        scale: torch.Tensor | None = None,
        angular: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Mean squared error of the probe on ``features`` ``(..., F)`` against ``labels``
        ``(..., probe_dim)`` (e.g. key points in metres and joint angles in radians from the
        dataset's states): a float32 scalar.

        Args:
            detach: True (default): the features are detached, so the gradient reaches only
                the probe head; False: it also flows into whatever computed ``features``
                (the encoder, the predictor).
            scale: optional ``(probe_dim,)`` positive divisors of each output's error (e.g.
                the labels' standard deviations, so metres and radians weigh alike).
            angular: optional ``(probe_dim,)`` bool mask of outputs that are angles: their
                error is wrapped into ``[-pi, pi)`` first, so ``pi - e`` and ``-pi + e`` are
                ``2e`` apart, not ``2 pi - 2e``.

        Raises:
            ValueError: if the model has no probe or a shape does not match (one line).
        """
        detachable = isinstance(features, torch.Tensor) and detach
        pred = self.probe(features.detach() if detachable else features)
        if not isinstance(labels, torch.Tensor) or tuple(labels.shape) != tuple(pred.shape):
            raise ValueError(f"labels must have shape {tuple(pred.shape)} (..., probe_dim), got {_shape(labels)}")
        diff = pred.float() - labels.to(pred.device).float()
        for name, vec in (("scale", scale), ("angular", angular)):
            if vec is not None and (not isinstance(vec, torch.Tensor) or tuple(vec.shape) != (self.probe_dim,)):
                raise ValueError(f"{name} must be a ({self.probe_dim},) tensor, got shape {_shape(vec)}")
        if angular is not None:
            wrapped = torch.remainder(diff + math.pi, 2 * math.pi) - math.pi
            diff = torch.where(angular.to(diff.device, torch.bool), wrapped, diff)
        if scale is not None:
            diff = diff / scale.to(diff.device, torch.float32)
        return diff.square().mean()
