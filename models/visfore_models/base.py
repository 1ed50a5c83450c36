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

Latent models (``model.latent``; ``rssm``, ``jepa``; :class:`visfore_models.latent.LatentForwardModel`)
keep a :class:`LatentState` instead: ``deter (B, D)`` and ``stoch (B, S)``, the latent
after observing ``o_0..o_t`` and ``a_0..a_{t-1}`` (time index ``t``, the same convention:
the state at ``t`` has seen the frame ``o_t`` but not yet the action ``a_t``). Their
one-step predictor consumes the state at ``t`` and ``a_t`` and gives the state at ``t + 1``,
never looking at ``o_{t+1}`` (a prediction); only an inference network (RSSM's posterior,
in training mode with ``targets``) looks at ``o_{t+1}`` to form the state at ``t + 1`` (a
reconstruction, not a prediction). ``init_state`` filters the context frames (state at
``t = C - 1``), ``imagine`` runs the predictor in latent space and carries the state
between calls, and ``decode`` maps a state to a frame with the model's decoder.

Every model, pixel or latent, also measures states in one feature space (for planners)::

    feats = model.features(state)                              # (B, F)
    goal = model.encode_goal(goal_frames (B, 3, H, W))          # (B, F), the same space
    feats, state = model.imagine(state, actions (B, [N,] K, A), decode=False)  # (B, [N,] K, F)

``F = model.feature_dim``. A pixel model's features are its flattened latest frame
(``F = 3 * H * W``); a latent model's are a small vector computed without any convolution,
so ``imagine(..., decode=False)`` never decodes a frame. ``imagine(..., last_only=True)``
returns the last step only (``K`` reads 1): what a planner's final-step cost needs, and a
latent model then skips the other steps' features or decoding.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

__all__ = ["ForwardModel", "LatentState", "ModelState", "State", "normalize_image_size"]


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

    def repeat_interleave(self, n: int) -> ModelState:
        """The state of batch ``B * n``: candidate ``k`` of state ``b`` at ``b * n + k``
        (the layout of :meth:`ForwardModel.imagine` with ``(B, N, K, A)`` actions)."""
        return ModelState(
            frames=self.frames.repeat_interleave(n, dim=0), actions=self.actions.repeat_interleave(n, dim=0)
        )


@dataclass(frozen=True)
class LatentState:
    """The state of a latent model (:attr:`ForwardModel.latent`): its latent after
    observing ``o_0..o_t`` and ``a_0..a_{t-1}``.

    Attributes:
        deter: ``(B, D)`` floating tensor: the deterministic (recurrent) part, e.g. RSSM's
            GRU state ``h_t`` or JEPA's predictor GRU state.
        stoch: ``(B, S)`` floating tensor: the per-step latent, e.g. RSSM's flattened
            one-hot categorical sample ``z_t`` or JEPA's frame embedding ``z_t`` (not
            random for JEPA; the name follows the RSSM literature).
        frame: ``(B, 3, H, W)`` float in ``[0, 1]`` or ``None``: the last observed frame,
            kept unchanged through imagined steps, for a decoder that composites its
            prediction onto it (RSSM with ``decoder="composite"``); ``None`` for models
            whose decoder needs no frame.

    Both share the batch dimension; candidate ``n`` of state ``b`` is at ``b * N + n``
    after :meth:`repeat_interleave` (as for :class:`ModelState`).
    """

    deter: torch.Tensor
    stoch: torch.Tensor
    frame: torch.Tensor | None = None

    @property
    def batch_size(self) -> int:
        return int(self.deter.shape[0])

    def repeat_interleave(self, n: int) -> LatentState:
        """The state of batch ``B * n``: candidate ``k`` of state ``b`` at ``b * n + k``."""
        return LatentState(
            deter=self.deter.repeat_interleave(n, dim=0),
            stoch=self.stoch.repeat_interleave(n, dim=0),
            frame=None if self.frame is None else self.frame.repeat_interleave(n, dim=0),
        )


#: what :meth:`ForwardModel.init_state` returns and :meth:`ForwardModel.imagine` consumes
State = ModelState | LatentState


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
        latent: ``True`` for latent models (``"rssm"``, ``"jepa"``): their state is a
            :class:`LatentState` and their features are a latent vector; ``False``
            (default): pixel models, whose state is a :class:`ModelState` of frames.
        action_dim: ``A``, the size of one action vector.
        image_size: ``(H, W)`` of the frames the model was built for.
    """

    name: ClassVar[str] = ""
    stochastic: ClassVar[bool] = False
    latent: ClassVar[bool] = False

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

    def after_optimizer_step(self) -> None:
        """Hook for a trainer to call after every optimizer step (after ``optimizer.step()``).

        Models that keep parameters outside the optimizer update them here, e.g. JEPA's
        EMA target encoder (BYOL, Grill et al. 2020, arXiv:2006.07733). The default does
        nothing. It must not be called inside a forward/backward pass.
        """

    def expect_after_optimizer_step(self) -> None:
        """A trainer that will call :meth:`after_optimizer_step` after every optimizer step
        says so here, before its first step. A model with a fallback for trainers that
        don't (JEPA updates its EMA target inside training-mode ``forward`` until the hook
        is first called) turns the fallback off, so a resumed run, whose model is freshly
        built, updates exactly as an uninterrupted one. The default does nothing.
        """

    # ------------------------------------------------------------------ stepping API
    def init_state(self, context_frames: torch.Tensor, context_actions: torch.Tensor | None = None) -> State:
        """The state after observing real frames (a :class:`ModelState` for pixel models, a
        :class:`LatentState` for latent models).

        Args:
            context_frames: ``(B, C, 3, H, W)`` floating tensor in ``[0, 1]``, ``o_0..o_{C-1}``.
            context_actions: ``(B, C - 1, A)`` floating tensor, ``a_0..a_{C-2}`` (may be
                omitted when ``C == 1``).

        Raises:
            ValueError: a shape, dtype or size mismatch (one line).
        """
        context_actions = self.check_context(context_frames, context_actions)
        return ModelState(frames=context_frames, actions=context_actions)

    def check_context(self, context_frames: torch.Tensor, context_actions: torch.Tensor | None) -> torch.Tensor:
        """Validate the arguments of :meth:`init_state` and return the context actions
        ``(B, C - 1, A)`` (an empty ``(B, 0, A)`` tensor when they are omitted with ``C == 1``).

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
        return context_actions

    def imagine(
        self, state: State, actions: torch.Tensor, decode: bool = True, last_only: bool = False
    ) -> tuple[torch.Tensor, State]:
        """Roll out open-loop from ``state`` under a batch of action sequences.

        Args:
            state: from :meth:`init_state` or a previous :meth:`imagine`.
            actions: ``(B, K, A)`` (one sequence per state) or ``(B, N, K, A)`` (N candidate
                sequences per state, e.g. a planner's samples), any ``K >= 1``.
            decode: ``True`` (default): return frames; ``False``: return the features of
                every imagined state (:meth:`features`), which a latent model computes
                without decoding.
            last_only: return the output of the last step only (``K`` reads 1 below); a
                latent model then skips the other steps' decoding or features. The new
                state is the same either way.

        Returns:
            ``(out, new_state)``: with ``decode=True`` ``out`` is ``(B, K, 3, H, W)`` (or
            ``(B, N, K, 3, H, W)``) in ``[0, 1]``, the predictions of the ``K`` frames after
            ``state``; with ``decode=False`` it is ``(B, K, F)`` (or ``(B, N, K, F)``), the
            features of the ``K`` states after ``state`` (``F`` = :attr:`feature_dim`; for a
            pixel model the flattened predicted frames). ``new_state`` is the state after
            them (batch ``B``, or ``B * N`` with candidate ``n`` of state ``b`` at
            ``b * N + n``); for a pixel model the window of its last frames. Runs in the
            model's current mode and with gradients unless the caller uses
            ``torch.no_grad()``; a stochastic model draws from torch's global RNG.

        Raises:
            ValueError: a shape mismatch or a state of the wrong kind (one line).
        """
        if not isinstance(state, ModelState):
            raise ValueError(f"{self.name or type(self).__name__} needs a ModelState, got {type(state).__name__}")
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
        if last_only:
            pred = pred[:, -1:]
        if candidates is not None:
            pred = pred.reshape(-1, candidates, *pred.shape[1:])
        if not decode:
            return pred.flatten(-3), new_state
        return pred, new_state

    def decode(self, state: State) -> torch.Tensor:
        """The latest frame of ``state``: ``(B, 3, H, W)`` in ``[0, 1]`` (for a pixel model
        the state holds frames; a latent model decodes its latent).

        Raises:
            ValueError: a state of the wrong kind (one line).
        """
        if not isinstance(state, ModelState):
            raise ValueError(f"{self.name or type(self).__name__} needs a ModelState, got {type(state).__name__}")
        return state.frames[:, -1]

    @property
    def feature_dim(self) -> int:
        """``F``, the size of :meth:`features` and :meth:`encode_goal` vectors (pixel
        models: ``3 * H * W``)."""
        H, W = self.image_size
        return 3 * H * W

    def features(self, state: State) -> torch.Tensor:
        """The vector a planner measures distances in: ``(B, F)`` float tensor
        (``F`` = :attr:`feature_dim`). For a pixel model, the flattened latest frame of
        ``state`` (``decode(state).flatten(1)``, values in ``[0, 1]``).

        Raises:
            ValueError: a state of the wrong kind (one line).
        """
        return self.decode(state).flatten(1)

    def encode_goal(self, frames: torch.Tensor) -> torch.Tensor:
        """A goal image in the space of :meth:`features`.

        Args:
            frames: ``(B, 3, H, W)`` floating tensor in ``[0, 1]`` (the model's ``H, W``).

        Returns:
            ``(B, F)`` float tensor; for a pixel model the flattened frames (the same values).

        Raises:
            ValueError: if ``frames`` is not a floating ``(B, 3, H, W)`` tensor of the
                model's image size (one line).
        """
        self.check_goal(frames)
        return frames.flatten(1)

    # ------------------------------------------------------------------ helpers
    def check_goal(self, frames: torch.Tensor) -> None:
        """Validate the argument of :meth:`encode_goal`: a floating ``(B, 3, H, W)`` tensor
        of the model's image size.

        Raises:
            ValueError: one line naming ``frames`` and the expected shape.
        """
        H, W = self.image_size
        if not isinstance(frames, torch.Tensor) or frames.dim() != 4 or tuple(frames.shape[1:]) != (3, H, W):
            raise ValueError(f"frames must be a (B, 3, {H}, {W}) tensor, got shape {_shape(frames)}")
        if not frames.is_floating_point():
            raise ValueError(f"frames must be a floating tensor in [0, 1], got {frames.dtype}")

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
