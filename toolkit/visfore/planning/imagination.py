"""Closed-loop imagination through a frozen forward model, differentiable: a policy picks
each action from the imagined frames (:class:`Imagination`), and :func:`goal_loss` scores
the imagined frames against the goal (the loss that ``visfore train-through-model``,
:mod:`visfore.planning.through_model`, backpropagates into the policy).

Closed-loop imagination needs the model one step at a time; the public interface
``model(context, actions)`` takes all actions up front. :class:`Imagination` therefore
uses the model's own step function where it has one -- ``step(x, a, state)`` of the
ConvLSTM and of every :class:`visfore_models.StepwiseForwardModel` (cdna, dna,
rnn_deconv), ``step(history, a, state)`` of framestack -- carrying the recurrent state
exactly as ``model.forward`` does (mode ``recurrent``; the predictions equal
``model(context, actions_taken)``), and otherwise (svg_lp, unknown models) re-runs the
model on the sliding window of the last ``C`` frames with ``K = 1`` (mode ``window``, as
``LearnedSim-v0``).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch.nn import functional as F

from visfore.planning.through_model_policy import _last_frames
from visfore_models import ConvLSTMForwardModel, FrameStackForwardModel, StepwiseForwardModel

__all__ = [
    "Imagination",
    "goal_loss",
    "imagination_mode",
]

LOSS_STEPS = ("final", "all")
IMAGINATION_MODES = ("recurrent", "framestack", "window")


def imagination_mode(model: Any) -> str:
    """How :class:`Imagination` steps ``model``: ``recurrent`` (``model.step(x, a, state)``:
    ConvLSTM and StepwiseForwardModel subclasses), ``framestack`` (``model.step(history, a,
    state)``) or ``window`` (``model(last C frames, C actions)`` with K = 1; anything else)."""
    if isinstance(model, (ConvLSTMForwardModel, StepwiseForwardModel)):
        return "recurrent"
    if isinstance(model, FrameStackForwardModel):
        return "framestack"
    return "window"


class Imagination:
    """Closed-loop rollouts of a (frozen) forward model under a policy, differentiable.

    Args:
        model: a :class:`visfore_models.ForwardModel` (eval mode is the caller's job).
        context: C, the context frames the model was trained with (>= 1).
        mode: None (:func:`imagination_mode`), or force ``window``.
    """

    def __init__(self, model: Any, context: int, mode: str | None = None) -> None:
        self.model = model
        self.context = int(context)
        self.mode = mode or imagination_mode(model)
        if self.mode not in IMAGINATION_MODES:
            raise ValueError(f"imagination mode must be one of {', '.join(IMAGINATION_MODES)}, got {self.mode!r}")

    def rollout(
        self,
        policy: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
        context_frames: torch.Tensor,
        context_actions: torch.Tensor,
        goal: torch.Tensor,
        horizon: int,
        *,
        frames: int = 1,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Imagine ``horizon`` steps.

        Args:
            policy: ``policy(frames (B, F, 3, H, W), goal (B, 3, H, W), prev_action (B, A))
                -> (B, A)`` (e.g. a :class:`~visfore.planning.through_model_policy.GoalPolicyNet`).
            context_frames: ``(B, C, 3, H, W)`` float in [0, 1], true ``o_0 .. o_{C-1}``.
            context_actions: ``(B, C - 1, A)`` float, the true ``a_0 .. a_{C-2}``.
            goal: ``(B, 3, H, W)`` float in [0, 1].
            horizon: K >= 1.
            frames: F, frames the policy sees.

        Returns:
            ``(predictions (B, K, 3, H, W), actions (B, K, A))``: ``predictions[:, k]`` is the
            model's prediction of ``o_{C+k}`` after the policy's ``actions[:, k]`` (taken at
            ``o_{C-1+k}``). In the ``recurrent``/``framestack`` modes ``predictions`` equals
            ``model(context_frames, cat(context_actions, actions))``.
        """
        B, C = context_frames.shape[:2]
        if C != self.context:
            raise ValueError(f"context_frames must hold C={self.context} frames, got {C}")
        if context_actions.shape[1] != C - 1:
            raise ValueError(f"context_actions must hold C - 1 = {C - 1} actions, got {context_actions.shape[1]}")
        A = int(self.model.action_dim)
        history = [context_frames[:, i] for i in range(C)]
        taken = [context_actions[:, i] for i in range(C - 1)]
        prev = taken[-1] if taken else context_frames.new_zeros(B, A)
        state: Any = None
        model = self.model
        if self.mode == "recurrent":
            for t in range(C - 1):  # warm-up on the context, as model.forward does
                _, state = model.step(history[t], taken[t], state)
        elif self.mode == "framestack":
            for t in range(C - 1):
                _, state = model.step(history[: t + 1][-model.stack :], taken[t], state)
        preds: list[torch.Tensor] = []
        chosen: list[torch.Tensor] = []
        for _ in range(int(horizon)):
            a = policy(_last_frames(history, frames), goal, prev)
            if self.mode == "recurrent":
                pred, state = model.step(history[-1], a, state)
            elif self.mode == "framestack":
                pred, state = model.step(history[-model.stack :], a, state)
            else:
                window = torch.stack(history[-C:], dim=1)
                acts = torch.stack(taken[len(taken) - (C - 1) :] + [a], dim=1) if C > 1 else a[:, None]
                pred = model(window, acts)[:, 0]
            history.append(pred)
            taken.append(a)
            prev = a
            preds.append(pred)
            chosen.append(a)
        return torch.stack(preds, dim=1), torch.stack(chosen, dim=1)


def _pyramid_mse(pred: torch.Tensor, goal: torch.Tensor, scales: int) -> torch.Tensor:
    """Per-sample MSE ``(N,)`` of ``pred (N, 3, H, W)`` to ``goal`` averaged over ``scales``
    levels of 2x average pooling (level l: pooled by 2**l; stops where a side would drop
    below 1 pixel)."""
    total = pred.new_zeros(pred.shape[0])
    n = 0
    for level in range(int(scales)):
        if level:
            if min(pred.shape[-2:]) < 2:
                break
            pred, goal = F.avg_pool2d(pred, 2), F.avg_pool2d(goal, 2)
        total = total + (pred - goal).pow(2).flatten(1).mean(1)
        n += 1
    return total / n


def goal_loss(
    predictions: torch.Tensor,
    goal: torch.Tensor,
    scaled_actions: torch.Tensor,
    *,
    steps: str = "final",
    scales: int = 1,
    action_penalty: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The training loss of the through-model policy.

    Args:
        predictions: ``(B, K, 3, H, W)`` imagined frames in [0, 1].
        goal: ``(B, 3, H, W)`` goal frames in [0, 1].
        scaled_actions: ``(B, K, A)`` the actions scaled to [-1, 1].
        steps: ``final`` (only ``predictions[:, -1]``) or ``all`` (step ``k = 1..K`` weighted
            ``k / sum(1..K)``).
        scales: pyramid levels of the pixel MSE (:func:`_pyramid_mse`).
        action_penalty: weight of ``mean(scaled_actions ** 2)``.

    Returns:
        ``(loss, parts)``: the scalar loss (differentiable) and floats ``pixel``,
        ``action``, ``final_mse`` (full-resolution MSE of the last frame).

    Raises:
        ValueError: unknown ``steps``.
    """
    B, K = predictions.shape[:2]
    if steps == "final":
        pixel = _pyramid_mse(predictions[:, -1], goal, scales).mean()
    elif steps == "all":
        w = torch.arange(1, K + 1, dtype=predictions.dtype, device=predictions.device)
        w = w / w.sum()
        flat = predictions.reshape(B * K, *predictions.shape[2:])
        goals = goal[:, None].expand(B, K, *goal.shape[1:]).reshape(B * K, *goal.shape[1:])
        per = _pyramid_mse(flat, goals, scales).view(B, K)
        pixel = (per * w).sum(1).mean()
    else:
        raise ValueError(f"steps must be one of {', '.join(LOSS_STEPS)}, got {steps!r}")
    act = scaled_actions.pow(2).mean()
    loss = pixel + float(action_penalty) * act
    with torch.no_grad():
        final = (predictions[:, -1] - goal).pow(2).mean()
    return loss, {"pixel": float(pixel.detach()), "action": float(act.detach()), "final_mse": float(final)}
