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

A latent model (``model.latent``: rssm, jepa) is imagined in its latent space instead
(:class:`LatentImagination`, mode ``latent``; DreamerV1's imagination, Hafner et al.
2020, arXiv:1912.01603): the start state is ``init_state`` of the context, each step
the policy maps ``[features(state), goal features, previous action]`` to an action and
``model.imagine(state, action (B, 1, A), decode=False)`` steps the latent once, carrying
the :class:`visfore_models.LatentState` -- no frame is decoded. :func:`latent_goal_loss`
scores the imagined features against ``encode_goal`` of the goal frames (and, with a
``keypoints`` term, the key points the model's probe reads from both).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch
from torch.nn import functional as F

from visfore.planning.latent_costs import keypoint_distances, latent_distances, probe_goal_keypoints, probe_keypoints
from visfore.planning.through_model_policy import _last_frames
from visfore_models import ConvLSTMForwardModel, FrameStackForwardModel, StepwiseForwardModel

__all__ = [
    "Imagination",
    "LatentImagination",
    "LatentRollout",
    "goal_loss",
    "imagination_mode",
    "is_latent_model",
    "latent_goal_loss",
    "latent_start_cost",
]

LOSS_STEPS = ("final", "all")
IMAGINATION_MODES = ("recurrent", "framestack", "window")
#: Cost terms of a latent model's loss (``pixels`` would need decoding).
LATENT_LOSS_TERMS = ("latent", "keypoints")


def is_latent_model(model: Any) -> bool:
    """Whether ``model`` is imagined in latent space (``model.latent``, with ``features``,
    ``encode_goal`` and ``imagine``): the rssm and jepa models."""
    return bool(getattr(model, "latent", False)) and all(
        callable(getattr(model, name, None)) for name in ("features", "encode_goal", "imagine", "init_state")
    )


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


@dataclass
class LatentRollout:
    """What :meth:`LatentImagination.rollout` imagined.

    Attributes:
        features: ``(B, K, F)``: ``features[:, k]`` of the state after ``actions[:, k]``.
        actions: ``(B, K, A)``: the policy's actions (env units).
        start: ``(B, F)``: the features of the start state (no gradient).
        goal: ``(B, F)``: ``encode_goal`` of the goal frames (no gradient).
        goal_keypoints: ``(B, G)`` metres: the key points the probe reads from the goal
            frames filtered at rest (:meth:`LatentImagination.goal_keypoints`; no
            gradient), or None when the imagination reads no key points.
    """

    features: torch.Tensor
    actions: torch.Tensor
    start: torch.Tensor
    goal: torch.Tensor
    goal_keypoints: torch.Tensor | None = None


class LatentImagination:
    """Closed-loop rollouts of a frozen latent model under a policy, in latent space and
    differentiable (mode ``latent``).

    Args:
        model: a latent :class:`visfore_models.ForwardModel` (``rssm``, ``jepa``; eval mode
            and frozen parameters are the caller's job).
        context: C, the context frames the model was trained with (>= 1).
        keypoint_coords: ``G``, the probe outputs that are key points (for
            :meth:`keypoints`), or None when the loss reads none.
    """

    mode = "latent"

    def __init__(self, model: Any, context: int, keypoint_coords: int | None = None) -> None:
        if not is_latent_model(model):
            raise ValueError(f"{getattr(model, 'name', type(model).__name__)} is not a latent model")
        self.model = model
        self.context = int(context)
        self.keypoint_coords = keypoint_coords

    def begin(
        self, context_frames: torch.Tensor, context_actions: torch.Tensor, goal_frames: torch.Tensor
    ) -> tuple[Any, torch.Tensor, torch.Tensor]:
        """``(start state, its features (B, F), goal features (B, F))``, without gradients:
        ``init_state`` of the context (a stochastic model draws first), then
        ``encode_goal`` of the goal frames."""
        C = context_frames.shape[1]
        if C != self.context:
            raise ValueError(f"context_frames must hold C={self.context} frames, got {C}")
        if context_actions.shape[1] != C - 1:
            raise ValueError(f"context_actions must hold C - 1 = {C - 1} actions, got {context_actions.shape[1]}")
        with torch.no_grad():
            state = self.model.init_state(context_frames, context_actions)
            start = self.model.features(state).float()
            goal = self.model.encode_goal(goal_frames).float()
        return state, start, goal

    def rollout(
        self,
        policy: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
        context_frames: torch.Tensor,
        context_actions: torch.Tensor,
        goal_frames: torch.Tensor,
        horizon: int,
    ) -> LatentRollout:
        """Imagine ``horizon`` steps.

        The start state (``init_state`` of the context) and the goal features
        (``encode_goal``) are computed without gradients (data, not decisions); every step
        after them is differentiable, so the loss reaches every action and, through it,
        the policy (the model's parameters stay untouched when frozen). A stochastic
        model (rssm) draws from torch's global RNG, the start state's draws first.

        Args:
            policy: ``policy(features (B, F), goal (B, F), prev_action (B, A)) -> (B, A)``
                (a :class:`~visfore.planning.through_model_policy.LatentPolicyNet`).
            context_frames: ``(B, C, 3, H, W)`` float in [0, 1], the true ``o_0 .. o_{C-1}``.
            context_actions: ``(B, C - 1, A)`` float, the true ``a_0 .. a_{C-2}``.
            goal_frames: ``(B, 3, H, W)`` float in [0, 1].
            horizon: K >= 1.

        Returns:
            A :class:`LatentRollout`. ``features`` equals ``model.imagine(init_state,
            actions, decode=False)`` of the actions taken (same draws).
        """
        B, C = context_frames.shape[:2]
        model = self.model
        state, start, goal = self.begin(context_frames, context_actions, goal_frames)
        prev = context_actions[:, -1] if C > 1 else context_frames.new_zeros(B, int(model.action_dim))
        feats = start
        out_features: list[torch.Tensor] = []
        chosen: list[torch.Tensor] = []
        for _ in range(int(horizon)):
            a = policy(feats, goal, prev)
            step, state = model.imagine(state, a[:, None], decode=False)
            feats = step[:, 0].float()
            out_features.append(feats)
            chosen.append(a)
            prev = a
        goal_kp = self.goal_keypoints(goal_frames) if self.keypoint_coords else None
        return LatentRollout(
            features=torch.stack(out_features, dim=1),
            actions=torch.stack(chosen, dim=1),
            start=start,
            goal=goal,
            goal_keypoints=goal_kp,
        )

    def goal_keypoints(self, goal_frames: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` goal frames -> ``(B, G)`` metres, without gradient: the probe on
        the state of each goal frame filtered C times at rest
        (:func:`~visfore.planning.latent_costs.probe_goal_keypoints`), the input the probe
        was trained on (``encode_goal``'s embedding is not; ``visfore plan
        --goal-keypoints``). A stochastic model draws from torch's global RNG."""
        if not self.keypoint_coords:
            raise ValueError("this imagination reads no key points (keypoint_coords is None)")
        with torch.no_grad():
            return probe_goal_keypoints(self.model, goal_frames, self.context, int(self.keypoint_coords)).float()

    def keypoints(self, features: torch.Tensor) -> torch.Tensor:
        """``(..., F)`` -> ``(..., G)``: the key points (metres) the probe reads."""
        if not self.keypoint_coords:
            raise ValueError("this imagination reads no key points (keypoint_coords is None)")
        return probe_keypoints(self.model, features, int(self.keypoint_coords))


def _step_weights(K: int, steps: str, like: torch.Tensor) -> torch.Tensor | None:
    """None for ``final``; ``k / sum(1..K)`` for ``all``."""
    if steps == "final":
        return None
    if steps == "all":
        w = torch.arange(1, K + 1, dtype=like.dtype, device=like.device)
        return w / w.sum()
    raise ValueError(f"steps must be one of {', '.join(LOSS_STEPS)}, got {steps!r}")


def latent_goal_loss(
    rollout: LatentRollout,
    scaled_actions: torch.Tensor,
    *,
    weights: Mapping[str, float],
    steps: str = "final",
    action_penalty: float = 0.0,
    keypoints: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The training loss of the through-model policy of a latent model.

    Terms (each ``(B, K)`` per step, then the final step or the ``k / sum(k)``-weighted
    sum over the steps, averaged over the batch):

    * ``latent``: ``||f_k - g||^2`` of the imagined features to the goal's
      (:func:`~visfore.planning.latent_costs.latent_distances`), always computed;
    * ``keypoints``: ``||p(f_k) - p(g)||`` in metres, the probe's key points of both
      (:func:`~visfore.planning.latent_costs.keypoint_distances`), when weighted.

    ``loss = sum_i weights[i] * term_i + action_penalty * mean(scaled_actions ** 2)``.

    Args:
        rollout: from :meth:`LatentImagination.rollout`.
        scaled_actions: ``(B, K, A)`` the actions scaled to [-1, 1].
        weights: ``{term: weight}`` over :data:`LATENT_LOSS_TERMS`.
        steps: ``final`` or ``all``.
        action_penalty: weight of ``mean(scaled_actions ** 2)``.
        keypoints: ``(..., F) -> (..., G)`` (:meth:`LatentImagination.keypoints`), needed
            for a ``keypoints`` term.

    Returns:
        ``(loss, parts)``: the scalar loss (differentiable) and floats ``latent``,
        ``final_latent`` (the final step's latent distance), ``goal_cost`` (the final
        step's weighted cost, the validation's measure), ``action``, and with a
        ``keypoints`` term ``keypoints`` / ``final_keypoints`` (metres).

    Raises:
        ValueError: unknown ``steps``, a term outside :data:`LATENT_LOSS_TERMS`, or key
            points without ``keypoints``.
    """
    unknown = [t for t in weights if t not in LATENT_LOSS_TERMS]
    if unknown:
        raise ValueError(f"latent loss terms must be among {', '.join(LATENT_LOSS_TERMS)}, got {unknown}")
    feats = rollout.features
    K = feats.shape[1]
    per: dict[str, torch.Tensor] = {"latent": latent_distances(feats, rollout.goal)}
    if "keypoints" in weights:
        if keypoints is None:
            raise ValueError("a keypoints term needs the probe's key points (keypoints=...)")
        goal_kp = rollout.goal_keypoints if rollout.goal_keypoints is not None else keypoints(rollout.goal)
        per["keypoints"] = keypoint_distances(keypoints(feats), goal_kp)
    w = _step_weights(K, steps, feats)
    terms = {name: (d[:, -1] if w is None else (d * w).sum(1)).mean() for name, d in per.items()}
    loss = terms["latent"].new_zeros(())
    for name, weight in weights.items():
        loss = loss + float(weight) * terms[name]
    act = scaled_actions.pow(2).mean()
    loss = loss + float(action_penalty) * act
    parts: dict[str, float] = {"action": float(act.detach())}
    with torch.no_grad():
        goal_cost = 0.0
        for name, d in per.items():
            final = float(d[:, -1].mean())
            parts[name] = float(terms[name].detach())
            parts[f"final_{name}"] = final
            goal_cost += float(weights.get(name, 0.0)) * final
        parts["goal_cost"] = goal_cost
    return loss, parts


def latent_start_cost(
    start: torch.Tensor,
    goal: torch.Tensor,
    weights: Mapping[str, float],
    keypoints: Callable[[torch.Tensor], torch.Tensor] | None = None,
    goal_keypoints: torch.Tensor | None = None,
) -> dict[str, float]:
    """The do-nothing baseline: the costs of the start states' features ``start (B, F)``
    to ``goal (B, F)`` (:meth:`LatentImagination.begin`): ``latent``, ``keypoints`` when
    weighted (to ``goal_keypoints (B, G)`` when given, as the loss does, else to the
    probe's reading of ``goal``), ``goal_cost`` the weighted sum; batch means."""
    with torch.no_grad():
        out = {"latent": float(latent_distances(start[:, None], goal).mean())}
        if "keypoints" in weights and keypoints is not None:
            goal_kp = goal_keypoints if goal_keypoints is not None else keypoints(goal)
            out["keypoints"] = float(keypoint_distances(keypoints(start[:, None]), goal_kp).mean())
        out["goal_cost"] = sum(float(weights.get(k, 0.0)) * v for k, v in out.items())
    return out
