"""``visfore train-through-model --model RUN``: a goal-reaching policy trained by
backpropagating the goal cost through a learned forward model (the options:
:class:`visfore.planning.config.ThroughModelConfig`; the old spelling ``visfore
train-policy --through-model RUN`` is forwarded to it).

Idea: learn a forward model of the world from random actions and initial conditions,
then train the policy by backpropagating the goal error through that model from random
initial conditions to random targets -- supervised learning with a differentiable
simulator, the "distal teacher" of Jordan & Rumelhart (1992, "Forward models:
Supervised learning with a distal teacher", Cognitive Science 16) and the emulator of
Nguyen & Widrow's truck backer-upper (1990); Dreamer (Hafner et al., 2020) does the same
in a learned latent space. Here the simulator is a frozen ``visfore train-model`` forward
model (:mod:`visfore.worldmodels.model_run`) and the policy maps frames to actions.

**Training** (:func:`train_through_model`, on :class:`visfore.core.trainer.Trainer` with
:class:`ThroughModelTask`: a trainer "epoch" is the block of iterations up to the next
validation), one Adam step per iteration:

1. Sample ``B`` start clips from the model's dataset (its training episodes): a random
   window ``o_s .. o_{s+C-1}`` (the model's ``C`` context frames) and the ``C - 1`` actions
   ``a_s .. a_{s+C-2}`` taken between them; and ``B`` random goal frames: any frame of a
   random episode (a reachable pose, rendered like the training frames). Both are pure
   functions of ``(seed, iteration)`` (:func:`batch_rng`), so a resumed run draws the same
   batches as an uninterrupted one.
2. Imagine ``--horizon`` ``K`` steps closed-loop (:class:`Imagination`): at step ``k`` the
   policy sees the last frame(s) of the imagined history (true context frames, then the
   model's own predictions), the goal frame and its previous action, and picks ``a_k``;
   the frozen model (eval mode, ``requires_grad=False`` parameters, but differentiable
   operations) predicts the next frame from it. Gradients flow from the loss through
   every prediction back into every action and the policy's weights.
3. Loss (:func:`goal_loss`): pixel MSE between the predicted frame(s) and the goal --
   the last one (``--loss-steps final``) or all ``K`` with linearly growing weights
   ``k / sum(k)`` (``all``) -- averaged over ``--loss-scales`` levels of a 2x average-pool
   pyramid (level ``l``: frames pooled by ``2**l``; coarser levels widen the basin of the
   thin arm's overlap), plus ``--action-penalty`` times the mean squared action scaled to
   ``[-1, 1]``. Gradients clipped to norm 1 (``torch.nn.utils.clip_grad_norm_``).

Every ``--val-every`` iterations a fixed validation batch (validation episodes of the
model's split) is imagined without gradients: ``val_goal_mse`` (full-resolution MSE of
the final imagined frame to the goal) decides ``checkpoints/best.pt``; next to it
``val_start_mse``, the MSE of the start frame to the goal (the do-nothing baseline).

**Evaluation** in the real env with :func:`visfore.planning.goal_reaching.run_goal_episodes` (the
same seeding, success threshold and metrics as ``visfore plan``): the policy acts on the
real frames ``obs["pixels"]`` and the goal frame ``env.unwrapped.render_goal()``.

**Run directory** ``--out``, or ``<out-dir>/train-policy-through-model-<name or UTC
YYYYmmdd-HHMMSS>/`` (the prefix of the runs written before the command was renamed, so
they load and resume alike)::

    config.yaml               every option resolved, the model run, dataset, env, policy net
    checkpoints/last.pt       policy + optimizer + iteration + history (atomic, --resume)
    checkpoints/best.pt       the lowest val_goal_mse so far
    logs/                     TensorBoard scalars (train/loss, val/goal_mse)
    metrics.json              loss curve, validation history, eval summary
    eval/episodes.csv         one row per real-env episode (GoalEpisode.row())

:func:`load_through_model_policy` reads a run back as a :class:`ThroughModelPolicy`, a
:class:`visfore.planning.goal_reaching.GoalController` named ``"through-model"`` (``visfore plan
--policy RUN`` adds it to its comparison).

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

import csv
import io
import logging
import math
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from torch import nn
from torch.nn import functional as F
from torch.utils.tensorboard import SummaryWriter

from visfore.core import provenance, runs
from visfore.core.console import stdout_console
from visfore.core.device import parse_device_spec, select_device
from visfore.core.errors import VisforeError
from visfore.core.progress import NoProgress, episode_progress
from visfore.core.trainer import (
    Callback,
    Checkpointer,
    StepResult,
    StopOnInterrupt,
    TensorBoardLogger,
    TimeBudget,
    Trainer,
    TrainState,
    TrainTask,
)
from visfore.data.clips import load_clip_source
from visfore.data.envs import resolve_env_id
from visfore.planning.config import ThroughModelConfig
from visfore.planning.goal_reaching import (
    check_action_scale,
    evaluation_env_kwargs,
    make_goal_env,
    run_goal_episodes,
    scale_action_box,
    summarize_goal_episodes,
)
from visfore.worldmodels.model_run import load_model_run, sample_seed
from visfore_models import ConvLSTMForwardModel, FrameStackForwardModel, StepwiseForwardModel

log = logging.getLogger(__name__)

__all__ = [
    "COMMAND",
    "GoalPolicyNet",
    "Imagination",
    "ThroughModelConfig",
    "ThroughModelPolicy",
    "batch_rng",
    "goal_loss",
    "imagination_mode",
    "load_through_model_policy",
    "train_through_model",
    "validate_config",
]

#: Run directory prefix and ``config.yaml`` ``command``.
COMMAND = "train-policy-through-model"
CONFIG_FORMAT = "visfore-train-policy-through-model"
CONFIG_VERSION = 1
CHECKPOINT_FORMAT = "visfore-through-model-policy-checkpoint"
CHECKPOINT_VERSION = 1
POLICY_NETS = ("cnn", "mlp")
LOSS_STEPS = ("final", "all")
IMAGINATION_MODES = ("recurrent", "framestack", "window")
EVAL_DIR = "eval"
EPISODES_CSV = "episodes.csv"
#: Extra success thresholds reported next to the env's own (metres).
EXTRA_THRESHOLDS = (0.05,)
#: Default iterations when neither --iterations nor --time-budget is given.
DEFAULT_ITERATIONS = 1000
#: Options that may change on ``--resume`` (they do not change what is trained).
RUNTIME_OPTIONS = (
    "resume",
    "device",
    "progress",
    "iterations",
    "time_budget",
    "num_threads",
    "eval_episodes",
    "eval_steps",
    "eval_seed",
    "success_threshold",
    "gifs",
)
#: Options that only locate the run directory (neither merged nor reported on resume).
LOCATION_OPTIONS = ("out", "name", "out_dir")
#: Runtime options of the final evaluation: a resumed run keeps its saved values unless
#: this call sets them (to other than the default).
EVAL_OPTIONS = ("eval_episodes", "eval_steps", "eval_seed", "success_threshold", "gifs")


# ---------------------------------------------------------------------------------------
# configuration (the options are declared in visfore.planning.config)
# ---------------------------------------------------------------------------------------
def _int_at_least(flag: str, value: Any, minimum: int, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if value is None or isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise VisforeError(f"--{flag} must be an integer >= {minimum}, got {value!r}")


def _positive_float(flag: str, value: Any, *, allow_zero: bool = False, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value))
    if not ok or float(value) < 0 or (float(value) == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise VisforeError(f"--{flag} must be a finite number {bound}, got {value!r}")


def validate_config(config: ThroughModelConfig) -> None:
    """Check every option that needs neither the model nor the env.

    Raises:
        VisforeError: the first bad option, naming its flag and what is allowed.
    """
    if config.model is None and not config.resume:
        raise VisforeError("--model RUN (a visfore train-model run directory) is required")
    config.check_choices()  # model_checkpoint, policy_net, loss_steps
    _int_at_least("policy-frames", config.policy_frames, 1)
    _int_at_least("hidden", config.hidden, 1)
    check_action_scale(config.action_scale)
    _int_at_least("mlp-size", config.mlp_size, 1)
    _int_at_least("horizon", config.horizon, 1)
    _int_at_least("iterations", config.iterations, 1, allow_none=True)
    _positive_float("time-budget", config.time_budget, allow_none=True)
    _int_at_least("batch-size", config.batch_size, 1)
    _positive_float("lr", config.lr)
    _positive_float("action-penalty", config.action_penalty, allow_zero=True)
    _int_at_least("loss-scales", config.loss_scales, 1)
    _positive_float("grad-clip", config.grad_clip)
    _int_at_least("val-every", config.val_every, 1)
    _int_at_least("val-batch", config.val_batch, 1)
    _int_at_least("eval-episodes", config.eval_episodes, 0)
    _int_at_least("eval-steps", config.eval_steps, 1, allow_none=True)
    _int_at_least("eval-seed", config.eval_seed, 0, allow_none=True)
    _positive_float("success-threshold", config.success_threshold, allow_none=True)
    _int_at_least("seed", config.seed, 0)
    _int_at_least("num-threads", config.num_threads, 1, allow_none=True)
    parse_device_spec(config.device)


def total_iterations(config: ThroughModelConfig) -> int | None:
    """The run's iteration target: ``iterations``; else 1000 without a time budget; else
    None (until the budget runs out)."""
    if config.iterations is not None:
        return int(config.iterations)
    return None if config.time_budget is not None else DEFAULT_ITERATIONS


# ---------------------------------------------------------------------------------------
# the policy network
# ---------------------------------------------------------------------------------------
class GoalPolicyNet(nn.Module):
    """Goal-conditioned deterministic policy on frames.

    Inputs (all on the net's device):

    * ``frames``: ``(B, F, 3, H, W)`` float in ``[0, 1]``, the last ``F`` frames, oldest
      first (the current frame last);
    * ``goal``: ``(B, 3, H, W)`` float in ``[0, 1]``, the goal frame;
    * ``prev_action``: ``(B, A)`` float, the previous action in the env's units (ignored
      unless ``prev_action=True``; zeros at an episode's start).

    Output: ``(B, A)`` actions ``low + (tanh(z) + 1) / 2 * (high - low)``, strictly inside
    the action bounds.

    Networks:

    * ``cnn``: the ``F + 1`` frames stacked on channels ``(B, 3(F+1), H, W)`` minus 0.5 ->
      4 convolutions 4x4 stride 2 (32, 64, 64, 64 channels, ReLU; H/16 x W/16) -> flatten,
      concatenated with the scaled previous action -> Linear(hidden) -> ReLU -> Linear(A)
      (the encoder of Mnih et al.'s DQN family, strided instead of pooled).
    * ``mlp``: every frame average-pooled to ``mlp_size x mlp_size`` -> flatten (with the
      previous action) -> Linear(hidden) -> ReLU -> Linear(hidden) -> ReLU -> Linear(A).

    The last layer starts at weights ``U(-3e-3, 3e-3)`` and bias 0 (DDPG's actor
    initialisation, Lillicrap et al. 2016), so initial actions are near the bounds' middle.

    Args:
        net: ``cnn`` or ``mlp``.
        image_size: ``(H, W)``; the cnn needs both >= 16.
        action_dim: A.
        action_low, action_high: ``(A,)`` bounds, ``low < high``.
        frames: F >= 1.
        prev_action: use the previous action.
        hidden: hidden width.
        mlp_size: pooled frame size of the mlp (<= H and W).

    Raises:
        ValueError: bad sizes or bounds (one line).
    """

    CNN_CHANNELS = (32, 64, 64, 64)

    action_low: torch.Tensor  # (A,) buffer
    action_high: torch.Tensor  # (A,) buffer

    def __init__(
        self,
        *,
        net: str = "cnn",
        image_size: Sequence[int] = (64, 64),
        action_dim: int = 2,
        action_low: Sequence[float] | np.ndarray | None = None,
        action_high: Sequence[float] | np.ndarray | None = None,
        frames: int = 1,
        prev_action: bool = True,
        hidden: int = 256,
        mlp_size: int = 16,
    ) -> None:
        super().__init__()
        if net not in POLICY_NETS:
            raise ValueError(f"policy net must be one of {', '.join(POLICY_NETS)}, got {net!r}")
        H, W = (int(image_size[0]), int(image_size[1]))
        A = int(action_dim)
        low = np.asarray([-1.0] * A if action_low is None else action_low, dtype=np.float32).reshape(-1)
        high = np.asarray([1.0] * A if action_high is None else action_high, dtype=np.float32).reshape(-1)
        if low.shape != (A,) or high.shape != (A,) or not np.all(low < high):
            raise ValueError(f"action bounds must be two ({A},) arrays with low < high, got {low} and {high}")
        self.net, self.image_size, self.action_dim = net, (H, W), A
        self.frames, self.use_prev_action, self.hidden, self.mlp_size = (
            int(frames),
            bool(prev_action),
            int(hidden),
            int(mlp_size),
        )
        self.register_buffer("action_low", torch.from_numpy(low))
        self.register_buffer("action_high", torch.from_numpy(high))
        in_ch = 3 * (self.frames + 1)
        extra = A if self.use_prev_action else 0
        if net == "cnn":
            n = len(self.CNN_CHANNELS)
            if H < 2**n or W < 2**n:
                raise ValueError(f"the cnn policy needs frames of at least {2**n}x{2**n}, got {H}x{W}")
            layers: list[nn.Module] = []
            c = in_ch
            for out in self.CNN_CHANNELS:
                layers += [nn.Conv2d(c, out, 4, stride=2, padding=1), nn.ReLU()]
                c = out
            self.encoder = nn.Sequential(*layers, nn.Flatten())
            flat = c * (H >> n) * (W >> n)
            self.head = nn.Sequential(nn.Linear(flat + extra, self.hidden), nn.ReLU(), nn.Linear(self.hidden, A))
        else:
            s = self.mlp_size
            if s > H or s > W:
                raise ValueError(f"mlp_size {s} exceeds the frame size {H}x{W}")
            self.encoder = nn.Sequential(nn.AdaptiveAvgPool2d((s, s)), nn.Flatten())
            self.head = nn.Sequential(
                nn.Linear(in_ch * s * s + extra, self.hidden),
                nn.ReLU(),
                nn.Linear(self.hidden, self.hidden),
                nn.ReLU(),
                nn.Linear(self.hidden, A),
            )
        last = self.head[-1]
        assert isinstance(last, nn.Linear)
        nn.init.uniform_(last.weight, -3e-3, 3e-3)
        nn.init.zeros_(last.bias)

    def config(self) -> dict[str, Any]:
        """Keyword arguments that rebuild this net (YAML/JSON-plain)."""
        return {
            "net": self.net,
            "image_size": list(self.image_size),
            "action_dim": self.action_dim,
            "action_low": [float(x) for x in self.action_low.cpu()],
            "action_high": [float(x) for x in self.action_high.cpu()],
            "frames": self.frames,
            "prev_action": self.use_prev_action,
            "hidden": self.hidden,
            "mlp_size": self.mlp_size,
        }

    def scale_action(self, action: torch.Tensor) -> torch.Tensor:
        """``(..., A)`` actions in the bounds -> ``[-1, 1]``."""
        mid = (self.action_high + self.action_low) / 2
        half = (self.action_high - self.action_low) / 2
        return (action - mid) / half

    def forward(
        self, frames: torch.Tensor, goal: torch.Tensor, prev_action: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Actions ``(B, A)`` for ``frames (B, F, 3, H, W)``, ``goal (B, 3, H, W)``,
        ``prev_action (B, A)`` (see the class docstring)."""
        B = frames.shape[0]
        x = torch.cat([frames.reshape(B, -1, *frames.shape[-2:]), goal], dim=1)
        if self.net == "cnn":
            x = x - 0.5
        z = self.encoder(x)
        if self.use_prev_action:
            prev = prev_action if prev_action is not None else z.new_zeros(B, self.action_dim)
            z = torch.cat([z, self.scale_action(prev.to(z.dtype))], dim=1)
        u = torch.tanh(self.head(z))
        return self.action_low + (u + 1.0) * 0.5 * (self.action_high - self.action_low)


def _last_frames(history: Sequence[torch.Tensor], n: int) -> torch.Tensor:
    """``(B, n, 3, H, W)``: the last ``n`` of ``history`` (each ``(B, 3, H, W)``), oldest
    first, the earliest repeated where fewer exist."""
    frames = list(history[-n:])
    frames = [frames[0]] * (n - len(frames)) + frames
    return torch.stack(frames, dim=1)


# ---------------------------------------------------------------------------------------
# closed-loop imagination
# ---------------------------------------------------------------------------------------
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
                -> (B, A)`` (e.g. a :class:`GoalPolicyNet`).
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


# ---------------------------------------------------------------------------------------
# batches of start clips and goals
# ---------------------------------------------------------------------------------------
def batch_rng(seed: int, iteration: int, stream: int = 0) -> np.random.Generator:
    """The generator of one batch: ``default_rng([seed, stream, iteration])`` (stream 0:
    training iterations, 1: the validation batch) -- a pure function, so resuming draws
    the same batches."""
    return np.random.default_rng([int(seed), int(stream), int(iteration)])


@dataclass
class _StartGoalSampler:
    """Start clips and goal frames from a :class:`visfore.data.clips.ClipSource`.

    ``episodes``: the episodes to draw from (each with at least C frames).
    """

    pixels: np.ndarray  # (N, 3, H, W) uint8
    actions: np.ndarray  # (N, A) float32
    starts: np.ndarray  # (E,) first row of each usable episode
    lengths: np.ndarray  # (E,) rows of each usable episode
    context: int

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(frames (n, C, 3, H, W) uint8, actions (n, C - 1, A) float32, goals (n, 3, H, W)
        uint8)``: start windows ``o_s..o_{s+C-1}`` with ``a_s..a_{s+C-2}`` and goal frames
        (uniform episode, then uniform row)."""
        C = self.context
        E = self.starts.shape[0]
        ep = rng.integers(0, E, size=n)
        s = self.starts[ep] + rng.integers(0, self.lengths[ep] - C + 1)
        rows = s[:, None] + np.arange(C)[None, :]
        frames = self.pixels[rows]
        actions = self.actions[rows[:, : C - 1]] if C > 1 else np.zeros((n, 0, self.actions.shape[1]), np.float32)
        gep = rng.integers(0, E, size=n)
        grow = self.starts[gep] + rng.integers(0, self.lengths[gep])
        goals = self.pixels[grow]
        return frames, actions.astype(np.float32), goals


def _sampler(source: Any, episodes: Sequence[int], context: int, what: str) -> _StartGoalSampler:
    eps = np.asarray(sorted(set(int(e) for e in episodes)), dtype=np.int64)
    eps = eps[source.episode_lengths[eps] >= context] if eps.size else eps
    if eps.size == 0:
        raise VisforeError(f"no {what} episode has at least {context} frames (the model's context)")
    return _StartGoalSampler(
        source.pixels, source.actions, source.episode_starts[eps], source.episode_lengths[eps], context
    )


def _to_float(x: np.ndarray, device: Any) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x)).to(device).to(torch.float32).div_(255.0)


# ---------------------------------------------------------------------------------------
# the controller for real episodes
# ---------------------------------------------------------------------------------------
class ThroughModelPolicy:
    """A trained :class:`GoalPolicyNet` as a :class:`visfore.planning.goal_reaching.GoalController`.

    Attributes:
        name: ``"through-model"``.
        net: the :class:`GoalPolicyNet` (eval mode).
        device: its ``torch.device``.
        image_size: (H, W) of the frames it takes.
        env_id, env_kwargs: the env of the training frames (from the model's dataset).
        run_dir: the run directory it was loaded from (None when built in memory).
        imagined: always None (the policy imagines nothing at run time).

    ``act`` keeps the last F real frames (the first one repeated at reset) and the previous
    action (zeros at reset) and returns ``(A,)`` float32 inside the action bounds, no
    randomness.
    """

    name = "through-model"
    imagined: np.ndarray | None = None

    def __init__(
        self,
        net: GoalPolicyNet,
        *,
        device: Any = "cpu",
        env_id: str | None = None,
        env_kwargs: Mapping[str, Any] | None = None,
        run_dir: Path | None = None,
        name: str = "through-model",
    ) -> None:
        self.net = net.eval()
        self.device = torch.device(device)
        self.env_id, self.env_kwargs, self.run_dir = env_id, dict(env_kwargs or {}), run_dir
        self.name = name
        self.image_size = tuple(net.image_size)
        self._history: list[torch.Tensor] = []
        self._goal: torch.Tensor | None = None
        self._prev: torch.Tensor | None = None
        self._fresh = True

    @property
    def action_low(self) -> np.ndarray:
        return self.net.action_low.cpu().numpy()

    @property
    def action_high(self) -> np.ndarray:
        return self.net.action_high.cpu().numpy()

    def _frame(self, frame: Any, what: str) -> torch.Tensor:
        frame = np.asarray(frame)
        H, W = self.image_size
        if frame.shape != (H, W, 3) or frame.dtype != np.uint8:
            raise VisforeError(
                f"the through-model policy takes ({H}, {W}, 3) uint8 frames; the {what} is {frame.dtype} {frame.shape}"
            )
        return _to_float(frame, self.device).permute(2, 0, 1).contiguous()

    def reset(self, env: Any, obs: dict, goal_frame: np.ndarray, rng: np.random.Generator) -> None:
        """Start an episode at ``obs["pixels"]`` toward ``goal_frame`` ((H, W, 3) uint8);
        ``env`` and ``rng`` are not used (the policy is deterministic)."""
        self._goal = self._frame(goal_frame, "goal frame")[None]
        self._history = [self._frame(obs["pixels"], "observation")[None]]
        self._prev = torch.zeros(1, self.net.action_dim, device=self.device)
        self._fresh = True

    @torch.no_grad()
    def act(self, obs: dict, info: dict) -> np.ndarray:
        """The action ``(A,)`` float32 for the current ``obs["pixels"]``.

        Raises:
            VisforeError: called before :meth:`reset`, or a frame of another size.
        """
        if self._goal is None or self._prev is None:
            raise VisforeError("ThroughModelPolicy.act called before reset")
        if not self._fresh:  # the first act sees the reset observation, already held
            self._history.append(self._frame(obs["pixels"], "observation")[None])
            del self._history[: -self.net.frames]
        self._fresh = False
        a = self.net(_last_frames(self._history, self.net.frames), self._goal, self._prev)
        self._prev = a
        return a[0].cpu().numpy().astype(np.float32)

    def __repr__(self) -> str:
        return f"ThroughModelPolicy(net={self.net.net!r}, run_dir={self.run_dir})"


def _read_run_config(run_dir: Path) -> dict[str, Any]:
    """config.yaml of a train-through-model run (see :func:`visfore.core.runs.read_run_config`)."""
    return runs.read_run_config(run_dir, COMMAND, "train-through-model run")


def _net_from_state(state: Mapping[str, Any], path: Path, device: Any) -> GoalPolicyNet:
    if state.get("format") != CHECKPOINT_FORMAT or not isinstance(state.get("policy"), dict):
        raise VisforeError(f"{path} is not a through-model policy checkpoint")
    try:
        net = GoalPolicyNet(**state["policy"]["config"])
        net.load_state_dict(state["policy"]["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise VisforeError(f"cannot rebuild the policy of {path}: {text}") from None
    return net.to(device).eval()


def load_through_model_policy(run_dir: str | Path, device: Any = None, checkpoint: str = "best") -> ThroughModelPolicy:
    """Load the policy of a ``visfore train-through-model`` run.

    Args:
        run_dir: the run directory (``runs/train-policy-through-model-...``).
        device: None or ``"cpu"`` (CPU), ``"auto"``, ``"cuda"``, ``"cuda:N"`` or a
            ``torch.device``.
        checkpoint: ``best`` (lowest validation goal MSE in imagination; falls back to
            ``last`` when missing) or ``last``.

    Returns:
        A :class:`ThroughModelPolicy` (eval mode) with the env id / kwargs of the training
        frames.

    Raises:
        VisforeError: not such a run, no or unreadable checkpoint, unknown ``checkpoint``,
            unavailable device (one line each).
    """
    if checkpoint not in ("best", "last"):
        raise VisforeError(f"unknown checkpoint {checkpoint!r}; valid: best, last")
    run_dir = Path(run_dir)
    saved = _read_run_config(run_dir)
    path = runs.best_checkpoint_path(run_dir) if checkpoint == "best" else runs.last_checkpoint_path(run_dir)
    if checkpoint == "best" and not path.is_file():
        path = runs.last_checkpoint_path(run_dir)
    if not path.is_file():
        raise VisforeError(f"{run_dir} has no trained policy ({runs.CHECKPOINT_DIR}/{path.name} is missing)")
    dev = device if isinstance(device, torch.device) else select_device(str(device or "cpu"))
    net = _net_from_state(runs.load_checkpoint(path, map_location=dev), path, dev)
    saved_env = saved.get("env")
    env: dict[str, Any] = saved_env if isinstance(saved_env, dict) else {}
    return ThroughModelPolicy(
        net, device=dev, env_id=env.get("id"), env_kwargs=env.get("kwargs") or {}, run_dir=run_dir
    )


# ---------------------------------------------------------------------------------------
# evaluation in the real env
# ---------------------------------------------------------------------------------------
def _json_safe(x: Any) -> Any:
    """NaN / inf -> None, recursively (metrics.json forbids them)."""
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(float(x)) else None
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def evaluate_in_env(
    policy: ThroughModelPolicy,
    env_id: str,
    env_kwargs: Mapping[str, Any] | None,
    size: Sequence[int],
    *,
    episodes: int,
    seed: int,
    steps: int | None = None,
    success_threshold: float | None = None,
    gif_dir: Path | None = None,
    progress: bool = False,
) -> tuple[list[Any], dict[str, Any]]:
    """Run ``policy`` for ``episodes`` real episodes (:func:`visfore.planning.goal_reaching.run_goal_episodes`,
    episode k reset with ``SeedSequence([seed, k])``, as ``visfore plan``).

    Returns:
        ``(episodes, summary)``: the :class:`visfore.planning.goal_reaching.GoalEpisode` list and the
        policy's entry of :func:`visfore.planning.goal_reaching.summarize_goal_episodes` (with
        ``success_rate@0.05``).

    Raises:
        VisforeError: the env cannot be made, frames of another size than the policy's.
    """
    with episode_progress(progress, "episodes") as bar:
        task = bar.add_task(f"eval {policy.name}", total=episodes)
        eps = run_goal_episodes(
            lambda: make_goal_env(env_id, env_kwargs, tuple(size)),
            policy,
            episodes=episodes,
            seed=seed,
            steps=steps,
            success_threshold=success_threshold,
            gif_dir=gif_dir,
            progress=lambda e: bar.advance(task),
        )
    summary = summarize_goal_episodes(eps, thresholds=EXTRA_THRESHOLDS)[policy.name]
    return eps, summary


def _write_episodes_csv(path: Path, episodes: Sequence[Any]) -> None:
    rows = [e.row() for e in episodes]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["controller"])
    writer.writeheader()
    writer.writerows(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    runs.atomic_write_text(path, buf.getvalue())


# ---------------------------------------------------------------------------------------
# the pipeline
# ---------------------------------------------------------------------------------------
def _resolve_env(config: ThroughModelConfig, attrs: Mapping[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """The evaluation env: the dataset's ``env_id`` / ``env_kwargs`` attrs (less collection
    options such as ``init_pose``: :func:`visfore.planning.goal_reaching.evaluation_env_kwargs`), or
    ``--env``.

    Raises:
        VisforeError: ``--env`` names another env than the dataset's, or no env is known
            while an evaluation is asked for.
    """
    data_env = attrs.get("env_id") if isinstance(attrs.get("env_id"), str) else None
    kwargs = evaluation_env_kwargs(attrs.get("env_kwargs")) if isinstance(attrs.get("env_kwargs"), dict) else {}
    if config.env is not None:
        env_id = resolve_env_id(config.env)
        if data_env is not None and data_env != env_id:
            raise VisforeError(
                f"--env {config.env} ({env_id}) is not the env of the model's dataset ({data_env}); "
                "omit --env or pass that one"
            )
        return env_id, kwargs
    if data_env is None and config.eval_episodes > 0:
        raise VisforeError("the model's dataset records no env_id; pass --env (e.g. reacher) or --eval-episodes 0")
    return data_env, kwargs


def _resolve_resume(config: ThroughModelConfig) -> tuple[ThroughModelConfig, dict[str, Any], list[str]]:
    """Options of a resumed run (saved ones + this call's runtime options,
    :func:`visfore.core.runs.merge_resumed_options`), the saved config.yaml, and the
    ignored options (one text each).

    Raises:
        VisforeError: not such a run, or it has no ``checkpoints/last.pt``.
    """
    if config.out is None and config.name is None:
        raise VisforeError("--resume needs the run directory: --resume --out RUN_DIR (or --resume RUN_DIR)")
    run_dir = runs.resolve_run_dir(COMMAND, out=config.out, name=config.name, root=config.out_dir)
    saved = _read_run_config(run_dir)
    if not runs.last_checkpoint_path(run_dir).is_file():
        raise VisforeError(
            f"cannot resume: {run_dir} has no {runs.CHECKPOINT_DIR}/{runs.LAST_CHECKPOINT}; start a new run instead"
        )
    # ("resume": runs written before it was a switch saved the run directory there)
    options = {k: v for k, v in (saved.get("options") or {}).items() if k not in ("resume", *LOCATION_OPTIONS)}
    if "through_model" in options and "model" not in options:  # runs of `train-policy --through-model`
        options["model"] = options.pop("through_model")
    eval_defaults = {f.name: f.default for f in fields(ThroughModelConfig) if f.name in EVAL_OPTIONS}
    runtime = [
        k
        for k in RUNTIME_OPTIONS
        if not (k in ("iterations", "time_budget") and getattr(config, k) is None)
        and not (k in eval_defaults and getattr(config, k) == eval_defaults[k])
    ]
    merged, ignored = runs.merge_resumed_options(
        options, config, runtime=runtime, skip=(*LOCATION_OPTIONS, "iterations", "time_budget")
    )
    return merged.replace(resume=True, out=str(run_dir), name=None), saved, ignored


@dataclass
class _Setup:
    """What a run needs, all loaded and checked before anything is written."""

    config: ThroughModelConfig
    saved: dict[str, Any] | None  # the config.yaml of a resumed run
    ignored: list[str]  # options --resume ignored
    device: Any  # torch.device
    mr: Any  # visfore.worldmodels.model_run.ModelRun
    ds: Any  # its dataset
    env_id: str | None
    env_kwargs: dict[str, Any]
    low: np.ndarray  # (A,) policy action bounds (env units)
    high: np.ndarray
    image_size: tuple[int, int]  # (H, W)
    run_dir: Path
    train_sampler: _StartGoalSampler
    val_sampler: _StartGoalSampler
    imagination: Imagination
    train_episodes: int
    val_episodes: int


def _prepare(config: ThroughModelConfig) -> _Setup:
    """Resolve ``--resume``, validate every option, load the model run, its dataset and the
    env, check that they fit together and pick the run directory -- writing nothing.

    Raises:
        VisforeError: the first problem, one line.
    """
    if config.model is not None and config.resume:
        raise VisforeError("give --model RUN for a new run or --resume --out RUN_DIR to continue one, not both")
    saved: dict[str, Any] | None = None
    ignored: list[str] = []
    if config.resume:
        config, saved, ignored = _resolve_resume(config)
    validate_config(config)
    assert config.model is not None
    device = select_device(config.device)
    if config.num_threads:
        torch.set_num_threads(int(config.num_threads))
    mr = load_model_run(config.model, config.model_checkpoint, device=device)
    ds = mr.open_dataset(config.data)
    env_id, env_kwargs = _resolve_env(config, ds.attrs)
    low, high = scale_action_box(*mr.action_bounds(ds), float(config.action_scale))
    H, W = mr.image_size
    if config.eval_episodes > 0:
        assert env_id is not None  # _resolve_env raises when an evaluation has no env
        _check_env_actions(env_id, env_kwargs, (H, W), mr.action_dim)
    if saved is None:
        run_dir = runs.resolve_run_dir(COMMAND, out=config.out, name=config.name, root=config.out_dir)
        runs.check_run_dir(run_dir, resume=False)
    else:
        assert config.out is not None  # _resolve_resume sets it to the run directory
        run_dir = Path(config.out)
    source = load_clip_source(ds)
    all_eps = list(range(source.num_episodes))
    train_eps = [e for e in mr.train_episodes if e < source.num_episodes] or all_eps
    val_eps = [e for e in mr.val_episodes if e < source.num_episodes] or train_eps
    return _Setup(
        config=config,
        saved=saved,
        ignored=ignored,
        device=device,
        mr=mr,
        ds=ds,
        env_id=env_id,
        env_kwargs=env_kwargs,
        low=low,
        high=high,
        image_size=(H, W),
        run_dir=run_dir,
        train_sampler=_sampler(source, train_eps, mr.context, "training"),
        val_sampler=_sampler(source, val_eps, mr.context, "validation"),
        imagination=Imagination(mr.model, mr.context),
        train_episodes=len(train_eps),
        val_episodes=len(val_eps),
    )


def _check_env_actions(env_id: str, env_kwargs: Mapping[str, Any], size: tuple[int, int], action_dim: int) -> None:
    """The evaluation env must take the model's ``(A,)`` actions.

    Raises:
        VisforeError: it cannot be made, or its action shape differs.
    """
    env = make_goal_env(env_id, env_kwargs, size)
    try:
        shape = tuple(env.action_space.shape)
    finally:
        env.close()
    if shape != (action_dim,):
        raise VisforeError(f"{env_id} has actions of shape {shape} but the model takes ({action_dim},)")


def _records(setup: _Setup) -> dict[str, dict[str, Any]]:
    """The ``model``, ``dataset`` and ``env`` records of config.yaml and metrics.json."""
    mr, ds, (H, W) = setup.mr, setup.ds, setup.image_size
    return {
        "model": {
            "run_dir": str(Path(mr.run_dir).resolve()),
            "checkpoint": mr.checkpoint,
            "name": mr.model_name,
            "epoch": mr.epoch,
            "context": mr.context,
            "trained_horizon": mr.horizon,
            "image_size": [H, W],
            "action_dim": mr.action_dim,
            "stochastic": mr.stochastic,
            "imagination": setup.imagination.mode,
            "parameters": int(sum(p.numel() for p in mr.model.parameters())),
        },
        "dataset": {
            "path": str(Path(ds.path).resolve()),
            "num_episodes": ds.num_episodes,
            "num_rows": ds.num_rows,
            "train_episodes": setup.train_episodes,
            "val_episodes": setup.val_episodes,
            "env_id": ds.attrs.get("env_id"),
            "frame_size": [H, W],
        },
        "env": {"id": setup.env_id, "kwargs": setup.env_kwargs},
    }


def _write_run_config(setup: _Setup, net: GoalPolicyNet) -> None:
    """Create the run directory and write its ``config.yaml`` (a new run only)."""
    config = setup.config
    runs.create_run_dir(setup.run_dir)
    pixel = "final" if config.loss_steps == "final" else "k/sum(k)-weighted"
    runs.write_config(
        setup.run_dir,
        {
            "command": COMMAND,
            "format": CONFIG_FORMAT,
            "version": CONFIG_VERSION,
            "created": runs.utc_timestamp(),
            "run_dir": str(setup.run_dir.resolve()),
            "command_line": provenance.command_line("train-through-model", config, exclude=("progress", "resume")),
            "options": _json_safe(config.to_dict()),
            **_records(setup),
            "policy": net.config(),
            "policy_parameters": int(sum(p.numel() for p in net.parameters())),
            "loss": {
                "pixel": f"MSE of the {pixel} imagined frame(s) to the goal, averaged over "
                f"{config.loss_scales} 2x avg-pool levels",
                "action": f"{config.action_penalty} * mean((action scaled to [-1, 1])**2)",
            },
            "seeding": "policy init: torch.manual_seed(seed); batch i: numpy.random.default_rng([seed, 0, i]); "
            "validation batch: default_rng([seed, 1, 0]); eval episode k: SeedSequence([eval_seed, k])",
            "runtime": {
                "device": str(setup.device),
                "torch_threads": torch.get_num_threads(),
                "versions": provenance.package_versions(),
            },
        },
    )


class ThroughModelTask(TrainTask):
    """The through-model policy's steps for :class:`visfore.core.trainer.Trainer`.

    One trainer "epoch" is a block of iterations ending at the next multiple of
    ``--val-every`` (or at the iteration target); its end validates on the fixed
    validation batch. A batch is the iteration number ``i``: the start clips and goals of
    iteration ``i`` are drawn from ``batch_rng(seed, i)``, so a resumed run trains on the
    same batches. The loss curve and the validation history live in
    ``TrainState.extra["curve"]`` / ``["validation"]`` (saved in every checkpoint).

    Args:
        setup: the loaded run (:func:`_prepare`).
        net, optimizer: the policy and its Adam optimiser.
        writer: a TensorBoard ``SummaryWriter`` (for ``val/goal_mse``).
    """

    def __init__(self, setup: _Setup, net: GoalPolicyNet, optimizer: torch.optim.Optimizer, writer: Any) -> None:
        self.setup, self.config, self.net, self.optimizer, self.writer = setup, setup.config, net, optimizer, writer
        self.total = total_iterations(self.config)
        frames_v, actions_v, goals_v = setup.val_sampler.sample(
            batch_rng(self.config.seed, 0, stream=1), self.config.val_batch
        )
        device = setup.device
        self.val_batch = (
            _to_float(frames_v, device),
            torch.from_numpy(actions_v).to(device),
            _to_float(goals_v, device),
        )
        #: MSE of the validation start frames to their goals (the do-nothing baseline).
        self.val_start_mse = float((self.val_batch[0][:, -1] - self.val_batch[2]).pow(2).mean())

    # -- the blocks -----------------------------------------------------------------------
    def block_end(self, start: int) -> int:
        """The iteration where the block starting at ``start`` ends (is validated)."""
        end = (start // int(self.config.val_every) + 1) * int(self.config.val_every)
        return end if self.total is None else min(end, self.total)

    def blocks_left(self, start: int) -> int:
        """Blocks from iteration ``start`` to the target (a very large number without one)."""
        if self.total is None:
            return 2**62
        n = 0
        while start < self.total:
            start, n = self.block_end(start), n + 1
        return n

    def epoch_batches(self, state: TrainState) -> Sequence[int]:
        start = state.global_step - state.epoch_step
        return range(start, self.block_end(start))

    # -- one iteration --------------------------------------------------------------------
    def _loss(
        self, frames0: torch.Tensor, actions0: torch.Tensor, goal: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        c = self.config
        preds, acts = self.setup.imagination.rollout(
            self.net, frames0, actions0, goal, c.horizon, frames=c.policy_frames
        )
        return goal_loss(
            preds,
            goal,
            self.net.scale_action(acts),
            steps=c.loss_steps,
            scales=c.loss_scales,
            action_penalty=c.action_penalty,
        )

    def train_step(self, batch: int, state: TrainState) -> StepResult:
        iteration, c, device = int(batch), self.config, self.setup.device
        f_np, a_np, g_np = self.setup.train_sampler.sample(batch_rng(c.seed, iteration), int(c.batch_size))
        loss, parts = self._loss(_to_float(f_np, device), torch.from_numpy(a_np).to(device), _to_float(g_np, device))
        value = float(loss.detach())
        if not math.isfinite(value):
            raise VisforeError(f"the loss became {value} at iteration {iteration}; try a smaller --lr")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.net.parameters(), float(c.grad_clip))
        self.optimizer.step()
        curve = state.extra["curve"]
        curve["iteration"].append(iteration + 1)
        curve["loss"].append(value)
        for key in ("pixel", "final_mse", "action"):
            curve[key].append(parts[key])
        return StepResult(loss=value, samples=int(c.batch_size), scalars={"train/final_mse": parts["final_mse"]})

    # -- validation and checkpoints ---------------------------------------------------------
    def validate(self, state: TrainState) -> dict[str, float]:
        """Imagine the fixed validation batch (no gradients) at ``state.global_step``;
        appends to ``state.extra["validation"]`` and returns ``val_goal_mse`` (full-resolution
        MSE of the final imagined frame to the goal) and ``val_loss``."""
        self.net.eval()
        with torch.no_grad(), sample_seed(self.config.seed if self.setup.mr.stochastic else None, self.setup.device):
            loss, parts = self._loss(*self.val_batch)
        self.net.train()
        validation = state.extra["validation"]
        validation["iteration"].append(state.global_step)
        validation["goal_mse"].append(parts["final_mse"])
        validation["loss"].append(float(loss))
        if self.writer is not None:
            self.writer.add_scalar("val/goal_mse", parts["final_mse"], state.global_step)
        return {"val_goal_mse": parts["final_mse"], "val_loss": float(loss)}

    def end_epoch(self, state: TrainState) -> dict[str, Any]:
        return self.validate(state)

    def save_checkpoint(self, paths: Sequence[Path], state: TrainState, record: Mapping[str, Any]) -> None:
        history = {"curve": state.extra["curve"], "validation": state.extra["validation"]}
        checkpoint = {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "policy": {"config": self.net.config(), "state_dict": self.net.state_dict()},
            "optimizer": self.optimizer.state_dict(),
            "iteration": state.global_step,
            "train_seconds": state.train_seconds,
            "history": history,
            "best_val_goal_mse": state.best if math.isfinite(state.best) else None,
            "best_iteration": best_iteration(state.extra["validation"]),
            "rng": {"torch": torch.get_rng_state()},
            "config": _json_safe(self.config.to_dict()),
        }
        for path in paths:
            runs.save_checkpoint(path, checkpoint)


def best_iteration(validation: Mapping[str, Sequence[float]]) -> int | None:
    """The iteration of the lowest validation goal MSE (the first one on ties), or None."""
    values = list(validation.get("goal_mse") or [])
    if not values:
        return None
    return int(validation["iteration"][int(np.argmin(values))])


class _ValidatingCheckpointer(Checkpointer):
    """:class:`~visfore.core.trainer.Checkpointer` that also validates where the loop stops
    inside a block (time budget, Ctrl-C), so every checkpoint holds the validation at its
    iteration and a resumed run starts a new block there."""

    def save_validated(self, task: ThroughModelTask, state: TrainState) -> None:
        """Validate at ``state.global_step``; save ``last`` (and ``best`` on a new best)."""
        record: dict[str, Any] = task.validate(state)
        paths = [self.last]
        if record["val_goal_mse"] < state.best:
            state.best = float(record["val_goal_mse"])
            record["improved"] = True
            if self.best is not None:
                paths.append(Path(self.best))
        task.save_checkpoint(paths, state, record)

    def on_stop_mid_epoch(self, trainer: Trainer, state: TrainState) -> None:
        task = trainer.task
        assert isinstance(task, ThroughModelTask)  # the only task this checkpointer is given
        self.save_validated(task, state)


class _IterationBar(Callback):
    """The progress bar: iterations done of the target, the loss, the last validation."""

    def __init__(self, console: Any, enabled: bool, total: int | None) -> None:
        self.console, self.enabled, self.total = console, enabled, total
        self.bar: Any = NoProgress(console)
        self.task_id: Any = 0

    def context(self) -> Any:
        if self.enabled:
            self.bar = Progress(
                TextColumn("iterations"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]:.5f}"),
                TextColumn("val goal MSE {task.fields[val]:.5f}"),
                TimeElapsedColumn(),
                console=self.console,
            )
        return self.bar

    def on_train_start(self, trainer: Trainer, state: TrainState) -> None:
        goal_mse = state.extra["validation"]["goal_mse"]
        self.task_id = self.bar.add_task(
            "train",
            total=self.total,
            completed=state.global_step,
            loss=math.nan,
            val=goal_mse[-1] if goal_mse else math.nan,
        )

    def on_step_end(self, trainer: Trainer, state: TrainState, result: StepResult) -> None:
        self.bar.update(
            self.task_id, completed=state.global_step, loss=result.loss, val=state.extra["validation"]["goal_mse"][-1]
        )


def _initial_state(setup: _Setup, net: GoalPolicyNet, optimizer: torch.optim.Optimizer) -> TrainState:
    """A fresh :class:`TrainState`, or (``--resume``) the one of ``checkpoints/last.pt``
    with the policy, the optimiser and torch's RNG restored. Every checkpoint is taken at
    a validated iteration, so a resumed run starts a new block there (``epoch_step`` 0)."""
    empty: dict[str, dict[str, list[float]]] = {
        "curve": {"iteration": [], "loss": [], "pixel": [], "final_mse": [], "action": []},
        "validation": {"iteration": [], "goal_mse": [], "loss": []},
    }
    if setup.saved is None:
        return TrainState(extra=empty)
    path = runs.last_checkpoint_path(setup.run_dir)
    ckpt = runs.load_checkpoint(path, map_location=setup.device)
    net.load_state_dict(_net_from_state(ckpt, path, setup.device).state_dict())
    optimizer.load_state_dict(ckpt["optimizer"])
    if isinstance(ckpt.get("rng"), dict) and ckpt["rng"].get("torch") is not None:
        torch.set_rng_state(ckpt["rng"]["torch"].cpu())
    history = ckpt["history"]
    validation = {k: list(v) for k, v in history["validation"].items()}
    best = ckpt.get("best_val_goal_mse")
    return TrainState(
        epoch=max(0, len(validation["iteration"]) - 1),
        global_step=int(ckpt["iteration"]),
        train_seconds=float(ckpt.get("train_seconds", 0.0)),
        best=float(best) if best is not None else math.inf,
        extra={"curve": {k: list(v) for k, v in history["curve"].items()}, "validation": validation},
    )


def _fit(setup: _Setup, task: ThroughModelTask, state: TrainState, writer: Any, console: Any) -> TrainState:
    """Validate the starting point (iteration 0, or a resumed run without validations),
    then train to the iteration target or the time budget (:class:`Trainer`).

    Raises:
        KeyboardInterrupt: after Ctrl-C, once ``checkpoints/last.pt`` holds the position.
    """
    config = setup.config
    checkpointer = _ValidatingCheckpointer(
        runs.last_checkpoint_path(setup.run_dir), runs.best_checkpoint_path(setup.run_dir), monitor="val_goal_mse"
    )
    if not state.extra["validation"]["iteration"]:
        checkpointer.save_validated(task, state)  # the untrained baseline
    callbacks = [
        StopOnInterrupt(),
        TimeBudget(config.time_budget),
        TensorBoardLogger(writer),
        checkpointer,
        _IterationBar(console, config.progress, task.total),
    ]
    trainer = Trainer(task, epochs=state.epoch + task.blocks_left(state.global_step), callbacks=callbacks)
    try:
        trainer.fit(state)
    except KeyboardInterrupt:
        if state.extra["validation"]["iteration"][-1] != state.global_step:  # a second Ctrl-C inside a step
            checkpointer.save_validated(task, state)
        log.warning(
            "interrupted at iteration %d; saved %s/%s; continue with --resume --out %s",
            state.global_step,
            runs.CHECKPOINT_DIR,
            runs.LAST_CHECKPOINT,
            setup.run_dir,
        )
        raise
    return state


def _evaluate(setup: _Setup) -> tuple[dict[str, Any] | None, int]:
    """Real-env episodes of the ``best`` policy (``--eval-episodes``), written to
    ``eval/episodes.csv``; returns ``(summary or None, evaluation seed)``."""
    config = setup.config
    eval_seed = int(config.eval_seed if config.eval_seed is not None else config.seed)
    if config.eval_episodes <= 0:
        return None, eval_seed
    assert setup.env_id is not None
    policy = load_through_model_policy(setup.run_dir, device=setup.device, checkpoint="best")
    episodes, summary = evaluate_in_env(
        policy,
        setup.env_id,
        setup.env_kwargs,
        setup.image_size,
        episodes=int(config.eval_episodes),
        seed=eval_seed,
        steps=config.eval_steps,
        success_threshold=config.success_threshold,
        gif_dir=setup.run_dir / EVAL_DIR / "gifs" if config.gifs else None,
        progress=config.progress,
    )
    _write_episodes_csv(setup.run_dir / EVAL_DIR / EPISODES_CSV, episodes)
    return summary, eval_seed


def _metrics(
    setup: _Setup,
    task: ThroughModelTask,
    state: TrainState,
    session: Mapping[str, Any],
    wall_seconds: float,
    eval_summary: dict[str, Any] | None,
    eval_seed: int,
) -> dict[str, Any]:
    """The content of ``metrics.json`` (see :func:`train_through_model`)."""
    config, validation, iteration = setup.config, state.extra["validation"], state.global_step
    return {
        "command": COMMAND,
        "run_dir": str(setup.run_dir),
        "iterations": iteration,
        "train_seconds": state.train_seconds,
        "seconds_per_iteration": state.train_seconds / iteration if iteration else None,
        "session": dict(session),
        "wall_seconds": wall_seconds,
        "horizon": config.horizon,
        "batch_size": config.batch_size,
        "val_start_mse": task.val_start_mse,
        "best_val_goal_mse": state.best if math.isfinite(state.best) else None,
        "best_iteration": best_iteration(validation),
        "final_val_goal_mse": validation["goal_mse"][-1],
        "validation": validation,
        "loss_curve": state.extra["curve"],
        **_records(setup),
        "eval": None
        if eval_summary is None
        else {
            "checkpoint": "best",
            "episodes": int(config.eval_episodes),
            "seed": eval_seed,
            "steps": config.eval_steps,
            "seeding": "episode k reset with SeedSequence([seed, k]) (visfore.planning.goal_reaching, as visfore plan)",
            "csv": f"{EVAL_DIR}/{EPISODES_CSV}",
            "summary": eval_summary,
        },
    }


def train_through_model(config: ThroughModelConfig) -> dict[str, Any]:
    """Train a goal-reaching policy through a forward model, evaluate it in the real env,
    write a run directory, return the metrics.

    Args:
        config: the options (:class:`~visfore.planning.config.ThroughModelConfig`).

    Returns:
        The content of ``metrics.json``: ``iterations``, ``train_seconds``,
        ``seconds_per_iteration``, ``loss_curve`` (``iteration``, ``loss``, ``pixel``,
        ``final_mse``, ``action`` per iteration), ``validation`` (``iteration``,
        ``goal_mse``, ``loss`` every ``val_every``), ``val_start_mse``,
        ``best_val_goal_mse`` / ``best_iteration``, ``eval`` (the summary of
        :func:`visfore.planning.goal_reaching.summarize_goal_episodes` for the policy, or None),
        ``model`` and ``env`` records, ``session``, ``run_dir``.

    Raises:
        VisforeError: bad options, not a model run, an unusable dataset or env -- all before
            anything is written; an existing run directory without ``--resume``.
        KeyboardInterrupt: after Ctrl-C, once ``checkpoints/last.pt`` is saved (``--resume``
            continues).
    """
    threads = torch.get_num_threads()
    try:
        return _train(config)
    finally:
        torch.set_num_threads(threads)  # the API must not leave the process changed


def _train(config: ThroughModelConfig) -> dict[str, Any]:
    """The pipeline: prepare (no writes) -> run directory -> train -> evaluate -> metrics."""
    t_begin = time.monotonic()
    setup = _prepare(config)
    config = setup.config
    torch.manual_seed(int(config.seed))
    net = GoalPolicyNet(
        net=config.policy_net,
        image_size=setup.image_size,
        action_dim=setup.mr.action_dim,
        action_low=setup.low,
        action_high=setup.high,
        frames=config.policy_frames,
        prev_action=config.prev_action,
        hidden=config.hidden,
        mlp_size=config.mlp_size,
    ).to(setup.device)
    optimizer = torch.optim.Adam(net.parameters(), lr=float(config.lr))
    state = _initial_state(setup, net, optimizer)
    net.train()
    if setup.saved is None:
        _write_run_config(setup, net)
    else:
        runs.ensure_run_subdirs(setup.run_dir)
        for line in setup.ignored:
            log.warning("--resume: ignored %s", line)
        log.info("resuming %s at iteration %d", setup.run_dir, state.global_step)
    writer = SummaryWriter(
        log_dir=str(setup.run_dir / "logs"), purge_step=state.global_step if setup.saved is not None else None
    )
    task = ThroughModelTask(setup, net, optimizer, writer)
    session_start, t_session = state.global_step, time.monotonic()
    console = stdout_console(quiet=not config.progress, highlight=False)
    try:
        _fit(setup, task, state, writer, console)
    finally:
        writer.flush()
        writer.close()
    session = {
        "iterations": state.global_step - session_start,
        "seconds": time.monotonic() - t_session,
        "resumed": setup.saved is not None,
    }
    eval_summary, eval_seed = _evaluate(setup)
    metrics = _metrics(setup, task, state, session, time.monotonic() - t_begin, eval_summary, eval_seed)
    runs.write_json(setup.run_dir / runs.METRICS_NAME, _json_safe(metrics))
    return metrics


def print_summary(metrics: Mapping[str, Any], console: Any = None) -> None:
    """Print the training result and the real-env evaluation as a rich table."""
    console = console or stdout_console()
    spi = metrics.get("seconds_per_iteration")
    console.print(
        f"{metrics['iterations']} iterations in {metrics['train_seconds']:.0f} s"
        + (f" ({spi:.2f} s/iteration)" if spi else "")
        + f"; imagined goal MSE {metrics['final_val_goal_mse']:.5f} (best {metrics['best_val_goal_mse']:.5f} at "
        f"{metrics['best_iteration']}; start frame {metrics['val_start_mse']:.5f}); run: {metrics['run_dir']}"
    )
    ev = metrics.get("eval")
    if not ev:
        return
    s = ev["summary"]
    table = Table(title=f"through-model policy on {metrics['env']['id']}: {s['n']} episodes (seed {ev['seed']})")
    for col in (
        "success",
        "success@0.05",
        "final dist. mean",
        "std",
        "median",
        "min dist. mean",
        "initial dist.",
        "s/step",
    ):
        table.add_column(col, justify="right")
    fd = s["final_distance"]

    def f(x: Any, spec: str) -> str:
        return "-" if x is None else format(x, spec)

    table.add_row(
        f(s["success_rate"], ".0%"),
        f(s.get("success_rate@0.05"), ".0%"),
        f(fd["mean"], ".3f"),
        f(fd["std"], ".3f"),
        f(fd["median"], ".3f"),
        f(s["min_distance_mean"], ".3f"),
        f(s["initial_distance_mean"], ".3f"),
        f(s["seconds_per_step_mean"], ".4f"),
    )
    console.print(table)
