"""Abstract forward-model interface shared by every model in :mod:`visfore_models`.

Time-index convention (the same as the Zarr dataset's: ``a_t`` is the action taken after
observing ``o_t``, and it leads to ``o_{t+1}``)::

    context  = o_0 .. o_{C-1}                 (B, C, 3, H, W) float in [0, 1]
    actions  = a_0 .. a_{C+K-2}               (B, C + K - 1, A) float
    output   = o_C .. o_{C+K-1}               (B, K, 3, H, W) float in [0, 1]

A model is a recurrent one-step predictor run over ``t = 0 .. C + K - 2``: step ``t``
consumes the frame ``x_t`` and the action ``a_t`` and emits ``x̂_{t+1}``, the prediction of
``o_{t+1}``. ``x_t`` is the real ``o_t`` while ``t < C`` (warm-up on the context), and for
``t >= C`` it is the model's own previous prediction ``x̂_t`` (open loop) or, under teacher
forcing, the true ``o_t`` taken from ``targets[:, t - C]``. Hence the prediction of
``o_{t+1}`` depends on ``o_0..o_t`` (real or predicted) and ``a_0..a_t`` only, never on
``o_{t+1}`` itself nor on ``a_{t+1}`` (the bug "the model was trying to predict the present
from the present" cannot happen by construction, and ``tests/models`` checks it). The
predictions emitted during warm-up (``x̂_1..x̂_{C-1}``) are not returned.

The number of predicted frames ``K = actions.shape[1] - C + 1`` is taken from the actions,
so a model trained with one horizon can roll out any other.

Stepping API (for planners, imagination, ``predict``, ``play-model``, ``LearnedSim-v0``),
the same for every model, implemented once here over :meth:`ForwardModel.forward`::

    state = model.init_state(context_frames (B, C, 3, H, W), context_actions (B, C - 1, A))
    frames, state = model.imagine(state, actions (B, K, A))        # (B, K, 3, H, W)
    frames, state = model.imagine(state, actions (B, N, K, A))     # (B, N, K, 3, H, W): N candidates
    frame = model.decode(state)                                     # (B, 3, H, W), the latest frame

A pixel model's :class:`ModelState` is its recent frames: the last ``C`` frames (real or
imagined) and the ``C - 1`` actions between them (``C`` = the context length given to
:meth:`init_state`). ``imagine`` is one open-loop ``forward`` from that window, so its first
call equals ``forward(context_frames, cat(context_actions, actions))`` exactly; a later call
re-reads the window (a recurrent model's hidden state is not carried between calls, as in
``LearnedSim-v0`` and receding-horizon planning).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

__all__ = ["ForwardModel", "ModelState", "normalize_image_size"]


@dataclass(frozen=True)
class ModelState:
    """What a model needs to continue a rollout: its recent frames and actions.

    Attributes:
        frames: ``(B, C, 3, H, W)`` floating tensor in ``[0, 1]``: the last ``C`` frames
            (real at :meth:`ForwardModel.init_state`, then imagined), oldest first.
        actions: ``(B, C - 1, A)`` floating tensor: the actions taken between them
            (``actions[:, t]`` after ``frames[:, t]``).
    """

    frames: torch.Tensor
    actions: torch.Tensor

    @property
    def batch_size(self) -> int:
        return int(self.frames.shape[0])

    @property
    def context(self) -> int:
        """C, the frames in the window."""
        return int(self.frames.shape[1])


def normalize_image_size(image_size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    """Return ``(H, W)`` from an int (square) or a 2-sequence.

    Raises:
        ValueError: if the value is not a positive int or a pair of positive ints.
    """
    if isinstance(image_size, bool):
        raise ValueError(f"image_size must be an int or (H, W), got {image_size!r}")
    if isinstance(image_size, int):
        hw = (image_size, image_size)
    elif isinstance(image_size, (tuple, list)) and len(image_size) == 2:
        hw = (int(image_size[0]), int(image_size[1]))
    else:
        raise ValueError(f"image_size must be an int or (H, W), got {image_size!r}")
    if hw[0] <= 0 or hw[1] <= 0:
        raise ValueError(f"image_size must be positive, got {image_size!r}")
    return hw


class ForwardModel(nn.Module, abc.ABC):
    """Action-conditioned video-prediction model (abstract base).

    Subclasses set the class attribute :attr:`name` (the registry key), implement
    :meth:`config` (the keyword arguments that rebuild the model, stored in checkpoints)
    and :meth:`forward` with the contract below. :meth:`check_inputs` performs the shared
    shape validation and returns ``(C, K)``.

    Attributes:
        name: registry key of the model class (e.g. ``"convlstm"``).
        stochastic: ``True`` for models whose predictions are random samples (e.g.
            ``"svg_lp"``): each call draws new latent samples from torch's global RNG (so
            ``torch.manual_seed`` makes them reproducible), and an evaluation can report the
            mean and the best of N samples. ``False`` (default): same inputs, same output.
        action_dim: ``A``, the size of one action vector.
        image_size: ``(H, W)`` of the frames the model was built for.
    """

    name: ClassVar[str] = ""
    stochastic: ClassVar[bool] = False

    def __init__(self, *, action_dim: int, image_size: int | tuple[int, int]) -> None:
        super().__init__()
        if isinstance(action_dim, bool) or not isinstance(action_dim, int) or action_dim < 1:
            raise ValueError(f"action_dim must be a positive int, got {action_dim!r}")
        self.action_dim: int = action_dim
        self.image_size: tuple[int, int] = normalize_image_size(image_size)

    # ------------------------------------------------------------------ interface
    @abc.abstractmethod
    def config(self) -> dict[str, Any]:
        """Keyword arguments (JSON/YAML-serialisable) such that ``type(self)(**config())``
        rebuilds an identical, untrained model."""

    @abc.abstractmethod
    def forward(
        self,
        context: torch.Tensor,
        actions: torch.Tensor,
        targets: torch.Tensor | None = None,
        teacher_forcing_prob: float = 0.0,
    ) -> torch.Tensor:
        """Predict ``K`` future frames open-loop.

        Args:
            context: ``(B, C, 3, H, W)`` floating tensor in ``[0, 1]``, frames ``o_0..o_{C-1}``.
            actions: ``(B, C + K - 1, A)`` floating tensor, ``a_0..a_{C+K-2}`` (``a_t`` is the
                action taken after ``o_t``); ``K >= 1`` is derived from its length.
            targets: optional ``(B, K, 3, H, W)`` true frames ``o_C..o_{C+K-1}``, used for
                teacher forcing and, by stochastic models in training mode only, by the
                inference network (e.g. SVG-LP's posterior ``q(z_t | x_{1..t})``). In eval
                mode and with ``teacher_forcing_prob == 0`` they never change the output.
            teacher_forcing_prob: probability in ``[0, 1]`` that, at each step and for each
                sample independently, the true frame replaces the model's own prediction as
                the next input. ``0`` (default) is open-loop; ``1`` is full teacher forcing.
                Needs ``targets`` when ``> 0``. Values strictly between 0 and 1 draw from
                torch's global RNG (on the inputs' device), so ``torch.manual_seed`` makes
                them reproducible; 0 and 1 draw nothing.

        Returns:
            ``(B, K, 3, H, W)`` tensor in ``[0, 1]`` on the model's device and in its dtype
            (float32 unless converted): predictions of ``o_C..o_{C+K-1}``.

        Raises:
            ValueError: on any shape, dtype or argument mismatch (one-line message).
        """

    def auxiliary_losses(self) -> dict[str, torch.Tensor]:
        """Extra loss terms of the last forward pass, to be added to the reconstruction loss
        (e.g. SVG-LP's ``beta * KL``).

        Returns:
            ``{name: scalar tensor}`` (already weighted; part of the last forward's autograd
            graph when that ran with gradients). The default, for deterministic models, is
            an empty dict. A trainer does ``loss = mse + sum(model.auxiliary_losses().values())``.
        """
        return {}

    # ------------------------------------------------------------------ stepping API
    def init_state(self, context_frames: torch.Tensor, context_actions: torch.Tensor | None = None) -> ModelState:
        """The state after observing real frames.

        Args:
            context_frames: ``(B, C, 3, H, W)`` floating tensor in ``[0, 1]``, ``o_0..o_{C-1}``.
            context_actions: ``(B, C - 1, A)`` floating tensor, ``a_0..a_{C-2}`` (may be
                omitted when ``C == 1``).

        Raises:
            ValueError: a shape, dtype or size mismatch (one line).
        """
        if context_actions is None:
            if not isinstance(context_frames, torch.Tensor) or context_frames.dim() != 5:
                raise ValueError(f"context_frames must be a (B, C, 3, H, W) tensor, got shape {_shape(context_frames)}")
            if context_frames.shape[1] != 1:
                raise ValueError(
                    f"context_actions (B, C - 1, A) are needed for C={context_frames.shape[1]} context frames"
                )
            context_actions = context_frames.new_zeros((context_frames.shape[0], 0, self.action_dim))
        if not isinstance(context_actions, torch.Tensor) or context_actions.dim() != 3:
            raise ValueError(f"context_actions must be a (B, C - 1, A) tensor, got shape {_shape(context_actions)}")
        if not isinstance(context_frames, torch.Tensor) or context_frames.dim() != 5:
            raise ValueError(f"context_frames must be a (B, C, 3, H, W) tensor, got shape {_shape(context_frames)}")
        C = context_frames.shape[1]
        if context_actions.shape[1] != C - 1:
            raise ValueError(f"context_actions must hold C - 1 = {C - 1} actions, got {context_actions.shape[1]}")
        next_action = context_actions.new_zeros((context_actions.shape[0], 1, context_actions.shape[2]))
        self.check_inputs(context_frames, torch.cat([context_actions, next_action], dim=1))
        return ModelState(frames=context_frames, actions=context_actions)

    def imagine(self, state: ModelState, actions: torch.Tensor) -> tuple[torch.Tensor, ModelState]:
        """Roll out open-loop from ``state`` under a batch of action sequences.

        Args:
            state: from :meth:`init_state` or a previous :meth:`imagine`.
            actions: ``(B, K, A)`` (one sequence per state) or ``(B, N, K, A)`` (N candidate
                sequences per state, e.g. a planner's samples), any ``K >= 1``.

        Returns:
            ``(frames, new_state)``: ``frames`` ``(B, K, 3, H, W)`` (or ``(B, N, K, 3, H, W)``)
            in ``[0, 1]``, the predictions of the ``K`` frames after ``state``; ``new_state``
            the window after them (batch ``B``, or ``B * N`` with candidate ``n`` of state
            ``b`` at ``b * N + n``). Runs in the model's current mode and with gradients
            unless the caller uses ``torch.no_grad()``; a stochastic model draws from
            torch's global RNG.

        Raises:
            ValueError: a shape mismatch (one line).
        """
        frames, past = state.frames, state.actions
        candidates = None
        if isinstance(actions, torch.Tensor) and actions.dim() == 4:
            B, candidates = actions.shape[:2]
            if B != state.batch_size:
                raise ValueError(f"actions batch size {B} != state batch size {state.batch_size}")
            frames = frames.repeat_interleave(candidates, dim=0)
            past = past.repeat_interleave(candidates, dim=0)
            actions = actions.reshape(B * candidates, *actions.shape[2:])
        if not isinstance(actions, torch.Tensor) or actions.dim() != 3 or actions.shape[1] < 1:
            raise ValueError(
                f"actions must be a (B, K, A) or (B, N, K, A) tensor with K >= 1, got shape {_shape(actions)}"
            )
        all_actions = torch.cat([past.to(actions.dtype), actions], dim=1)
        pred = self(frames, all_actions)
        C = frames.shape[1]
        window = torch.cat([frames, pred.to(frames.dtype)], dim=1)[:, -C:]
        new_state = ModelState(
            frames=window, actions=all_actions[:, all_actions.shape[1] - (C - 1) :] if C > 1 else all_actions[:, :0]
        )
        if candidates is not None:
            pred = pred.reshape(-1, candidates, *pred.shape[1:])
        return pred, new_state

    def decode(self, state: ModelState) -> torch.Tensor:
        """The latest frame of ``state``: ``(B, 3, H, W)`` in ``[0, 1]`` (for a pixel model
        the state holds frames; a latent model would decode its latent here)."""
        return state.frames[:, -1]

    # ------------------------------------------------------------------ helpers
    def num_parameters(self, trainable_only: bool = True) -> int:
        """Number of (trainable) scalar parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def check_inputs(
        self,
        context: torch.Tensor,
        actions: torch.Tensor,
        targets: torch.Tensor | None = None,
        teacher_forcing_prob: float = 0.0,
    ) -> tuple[int, int]:
        """Validate the arguments of :meth:`forward` and return ``(C, K)``.

        Raises:
            ValueError: with a one-line message naming the offending argument and the
                expected vs. received shape.
        """
        H, W = self.image_size
        if not isinstance(context, torch.Tensor) or context.dim() != 5:
            raise ValueError(f"context must be a (B, C, 3, H, W) tensor, got shape {_shape(context)}")
        if not context.is_floating_point():
            raise ValueError(f"context must be a floating tensor in [0, 1], got {context.dtype}")
        B, C, ch, h, w = context.shape
        if ch != 3:
            raise ValueError(f"context must have 3 (RGB) channels at dim 2, got {ch} (shape {tuple(context.shape)})")
        if (h, w) != (H, W):
            raise ValueError(f"context frames must be {H}x{W} (the model's image_size), got {h}x{w}")
        if C < 1:
            raise ValueError("context must hold at least one frame (C >= 1), got C=0")
        if not isinstance(actions, torch.Tensor) or actions.dim() != 3:
            raise ValueError(f"actions must be a (B, C + K - 1, A) tensor, got shape {_shape(actions)}")
        if not actions.is_floating_point():
            raise ValueError(f"actions must be a floating tensor, got {actions.dtype}")
        if actions.shape[0] != B:
            raise ValueError(f"actions batch size {actions.shape[0]} != context batch size {B}")
        if actions.shape[2] != self.action_dim:
            raise ValueError(f"actions must have action_dim={self.action_dim} at dim 2, got {actions.shape[2]}")
        T = actions.shape[1]
        if T < C:
            raise ValueError(
                f"actions length must be >= C (C + K - 1 with K >= 1): got {T} actions for C={C} context frames"
            )
        K = T - C + 1
        if isinstance(teacher_forcing_prob, bool) or not (0.0 <= float(teacher_forcing_prob) <= 1.0):
            raise ValueError(f"teacher_forcing_prob must be in [0, 1], got {teacher_forcing_prob!r}")
        if targets is not None:
            expected = (B, K, 3, H, W)
            if not isinstance(targets, torch.Tensor) or tuple(targets.shape) != expected:
                raise ValueError(f"targets must have shape {expected} (B, K, 3, H, W), got {_shape(targets)}")
        elif teacher_forcing_prob > 0.0:
            raise ValueError("teacher_forcing_prob > 0 needs targets (B, K, 3, H, W)")
        return C, K

    def extra_repr(self) -> str:
        return f"name={self.name!r}, action_dim={self.action_dim}, image_size={self.image_size}"


def _shape(x: object) -> str:
    if isinstance(x, torch.Tensor):
        return str(tuple(x.shape))
    return f"<{type(x).__name__}>"
