"""The options of ``visfore plan`` and ``visfore train-through-model``, declared once
(:mod:`visfore.core.config`).

Imported by the CLI without torch; :mod:`visfore.planning.plan` and
:mod:`visfore.planning.through_model` run them. Units: distances in metres, action
scales as fractions of the action half-range, times in minutes.
"""

from __future__ import annotations

import math
from typing import Any, Literal, Optional, Sequence

from visfore.core.config import ConfigBase, option
from visfore.core.device import NUM_THREADS_HELP
from visfore.core.errors import VisforeError
from visfore.core.runs import DEFAULT_RUNS_ROOT

__all__ = [
    "CONTROLLER_LABELS",
    "DEFAULT_EXTRA_THRESHOLDS",
    "PlanConfig",
    "ThroughModelConfig",
    "parse_controllers",
    "parse_thresholds",
    "resolve_blocks",
]

#: ``--controllers`` names and the report label of each.
CONTROLLER_LABELS: dict[str, str] = {
    "learned": "learned-cem",
    "oracle": "oracle-cem",
    "random": "random",
    "through-model": "through-model",
}
#: Default looser success threshold reported next to the env's (metres).
DEFAULT_EXTRA_THRESHOLDS = (0.05,)
#: Default real-env evaluation episodes of ``train-through-model``.
DEFAULT_EVAL_EPISODES = 20

Cost = Literal["pixels", "keypoints", "pixels+keypoints"]
OracleCost = Literal["same", "pixels", "keypoints", "pixels+keypoints"]
CostFrames = Literal["final", "all"]
Checkpoint = Literal["best", "last"]


def parse_controllers(text: str | Sequence[str]) -> tuple[str, ...]:
    """``"learned,oracle,random"`` (or a sequence of names) -> a tuple of known names,
    duplicates dropped, ``through_model`` read as ``through-model``.

    Raises:
        VisforeError: an unknown or no name.
    """
    items = text.split(",") if isinstance(text, str) else list(text)
    names: list[str] = []
    for item in items:
        name = str(item).strip().lower()
        if not name:
            continue
        if name == "through_model":
            name = "through-model"
        if name not in CONTROLLER_LABELS:
            raise VisforeError(f"unknown controller {item!r}; valid: {', '.join(CONTROLLER_LABELS)}")
        if name not in names:
            names.append(name)
    if not names:
        raise VisforeError(f"--controllers names none; valid: {', '.join(CONTROLLER_LABELS)}")
    return tuple(names)


def parse_thresholds(text: str | Sequence[float] | None) -> tuple[float, ...]:
    """``"0.05,0.1"`` (or a sequence) -> (0.05, 0.1) metres; empty or None -> ().

    Raises:
        VisforeError: a value that is not a positive number.
    """
    if text is None:
        return ()
    items = [t for t in text.split(",") if t.strip()] if isinstance(text, str) else list(text)
    out = []
    for t in items:
        try:
            v = float(t)
        except (TypeError, ValueError):
            raise VisforeError(f"--extra-thresholds value {t!r} is not a number") from None
        if not (math.isfinite(v) and v > 0):
            raise VisforeError(f"--extra-thresholds value {t!r} must be > 0 metres")
        out.append(v)
    return tuple(out)


def resolve_blocks(blocks: int | None, repeat: int, horizon: int | None) -> int:
    """The number of action blocks from ``--blocks``, ``--repeat`` and ``--horizon``.

    ``--horizon T`` (steps) with ``--repeat R`` gives ``T / R`` blocks; without it,
    ``--blocks`` (default 5, so T = 15 with the default R = 3).

    Raises:
        VisforeError: ``T`` not divisible by ``R``, or ``--blocks`` contradicting them.
    """
    if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1:
        raise VisforeError(f"--repeat must be an integer >= 1, got {repeat!r}")
    if horizon is None:
        return 5 if blocks is None else blocks
    if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1:
        raise VisforeError(f"--horizon must be an integer >= 1, got {horizon!r}")
    if horizon % repeat:
        raise VisforeError(
            f"--horizon {horizon} is not divisible by --repeat {repeat} (the horizon is blocks x repeat steps)"
        )
    if blocks is not None and blocks * repeat != horizon:
        raise VisforeError(
            f"--blocks {blocks} x --repeat {repeat} = {blocks * repeat} steps contradicts --horizon {horizon}"
        )
    return horizon // repeat


class PlanConfig(ConfigBase, command="plan"):
    """Every option of ``visfore plan``: visual MPC with CEM on a learned forward model,
    against CEM on the true simulator and a random policy.

    Units: ``success_threshold`` / ``extra_thresholds`` metres; ``action_scale`` a fraction
    of the action half-range; ``init_std`` / ``min_std`` in half-ranges. ``horizon_steps``
    (``--horizon``) is resolved into ``blocks`` when the config is built
    (:func:`resolve_blocks`) and then reads None; the horizon is :attr:`horizon`.
    """

    model: Optional[str] = option(
        default=None, help="Forward-model run (visfore train-model) for the learned controller."
    )
    env: Optional[str] = option(
        default=None,
        help="Env short name or id (default: the one the model's dataset was collected in; required without --model).",
    )
    size: Optional[int] = option(default=None, help="Frame size without --model (default 64).")
    episodes: int = option(
        default=20, help="Episodes per controller (the same initial states and targets for every controller)."
    )
    steps: Optional[int] = option(
        default=None, help="Actions per episode (default: the env's time limit, 50 for ReacherPlane-v0)."
    )
    seed: int = option(default=0, help="Seed: episode k is reset from (seed, k).")
    goal: Optional[str] = option(
        default=None, help="Goal image file (resized to the model's frames); default: the env's target pose rendered."
    )
    controllers: tuple[str, ...] = option(
        default=("learned", "oracle", "random"),
        help=f"Comma-separated: {', '.join(CONTROLLER_LABELS)}.",
        parse=parse_controllers,
        metavar="NAME,...",
    )
    policy: Optional[str] = option(
        default=None, help="Through-model policy run (visfore train-through-model); adds the through-model controller."
    )
    iterations: int = option(default=3, help="CEM iterations per plan.")
    samples: int = option(default=200, help="CEM candidate sequences per iteration (one batched forward pass).")
    elites: int = option(default=10, help="CEM elites the Gaussian is refit to.")
    blocks: Optional[int] = option(
        default=None, help="Free action blocks per sequence (default 5, or --horizon / --repeat)."
    )
    repeat: int = option(default=3, help="Steps each block's action is held; horizon = blocks x repeat.")
    horizon_steps: Optional[int] = option(
        default=None,
        help="Planning horizon in steps (a multiple of --repeat); default blocks x repeat = 15.",
        flags=("--horizon",),
    )
    replan_every: int = option(default=1, help="Steps executed between plans (1 = replan every step).")
    shrink_horizon: bool = option(
        default=True,
        help="Near the episode's end, score only the steps left, so the cost is taken at the last step, where success is measured (shrinking-horizon MPC; needs the env's time limit). --fixed-horizon always scores T steps.",
        flags=("--shrink-horizon/--fixed-horizon",),
    )
    init_std: float = option(default=0.5, help="Initial CEM std, in action half-ranges.")
    min_std: float = option(default=0.05, help="Floor of the CEM std, in action half-ranges.")
    alpha: float = option(default=0.0, help="Smoothing of the CEM refit (PETS), in [0, 1).")
    execute: Literal["best", "mean"] = option(
        default="best",
        help="Sequence executed after each plan: best (lowest-cost sample seen) or mean (final elite mean, PETS; averages out a learned model's cost errors).",
    )
    action_scale: float = option(
        default=1.0, help="Fraction of the env's action range every controller may use, (0, 1]."
    )
    cost: Cost = option(default="pixels", help="pixels, keypoints or pixels+keypoints (key points need --translator).")
    cost_frames: CostFrames = option(
        default="final", help="final (the last predicted frame) or all (mean over the horizon)."
    )
    pixel_weight: float = option(default=1.0, help="Weight of the pixel MSE term.")
    keypoint_weight: float = option(default=1.0, help="Weight of the key-point distance term (per metre).")
    pixel_blur: float = option(
        default=0.0,
        help="Gaussian blur (sigma, pixels) of predicted and goal frames before the pixel MSE; widens the cost's basin (0 = none).",
    )
    translator: Optional[str] = option(
        default=None,
        help="Key-point translator run (visfore train-translator) for --cost keypoints / pixels+keypoints.",
    )
    oracle_cost: OracleCost = option(
        default="same",
        help="Cost of the oracle: same (as --cost, on rendered frames), pixels, keypoints (true key points) or pixels+keypoints.",
    )
    success_threshold: Optional[float] = option(
        default=None,
        help="Success: final key-point distance below this (metres; default the env's, 0.02 for ReacherPlane-v0).",
    )
    extra_thresholds: tuple[float, ...] = option(
        default=DEFAULT_EXTRA_THRESHOLDS,
        help="Looser thresholds also reported (comma-separated metres).",
        parse=parse_thresholds,
        metavar="M,...",
    )
    checkpoint: Checkpoint = option(default="best", help="Model checkpoint: best or last.")
    device: str = option(default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N.")
    batch_chunk: int = option(
        default=0, help="Candidates per model forward pass (0 = all in one pass; lower only to save memory)."
    )
    amp: bool = option(
        default=False,
        help="Run the model under autocast: bfloat16 on CPU (about 1.7x faster for cdna here, predictions within 5e-6 MSE of float32), float16 on CUDA.",
        flags=("--amp/--no-amp",),
    )
    num_threads: Optional[int] = option(default=None, help=NUM_THREADS_HELP)
    gifs: bool = option(default=True, help="A GIF per episode and controller.")
    out: Optional[str] = option(
        default=None, help="Report directory (default runs/plan-<UTC time>).", flags=("--out", "-o")
    )
    name: Optional[str] = option(default=None, help="Report name: runs/plan-NAME.")
    progress: bool = option(
        default=True,
        help="Show the progress bar and the table (--quiet: no progress bar).",
        flags=("--progress/--quiet", " /-q"),
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.controllers, str):
            self.controllers = parse_controllers(self.controllers)
        if isinstance(self.extra_thresholds, str):
            self.extra_thresholds = parse_thresholds(self.extra_thresholds)
        self.blocks = resolve_blocks(self.blocks, self.repeat, self.horizon_steps)
        self.horizon_steps = None

    @property
    def cem_config(self) -> Any:
        """The :class:`~visfore.planning.cem.CEMConfig` of the planners."""
        from visfore.planning.cem import CEMConfig  # lazy: cem imports torch; config modules stay light

        return CEMConfig(
            iterations=self.iterations, samples=self.samples, elites=self.elites,
            blocks=int(self.blocks or 0), repeat=self.repeat, init_std=self.init_std,
            min_std=self.min_std, alpha=self.alpha, execute=self.execute,
        )  # fmt: skip

    @property
    def horizon(self) -> int:
        """Planning horizon T = blocks * repeat (steps)."""
        return int(self.blocks or 0) * self.repeat


class ThroughModelConfig(ConfigBase, command="train-through-model"):
    """Every option of ``visfore train-through-model``: a goal-reaching policy trained by
    backpropagating the goal cost through a frozen forward model, evaluated in the real env.

    ``--resume`` continues the run in ``--out`` (or ``--name``): the other options come
    from the run's ``config.yaml``; only the runtime options (:data:`visfore.planning.through_model.RUNTIME_OPTIONS`) may change
    (``iterations`` and ``time_budget`` only when given). ``iterations`` is the run's
    total, also on resume: above the iterations done it trains on to it (and
    ``config.yaml`` keeps the new target); at or below them nothing is trained and the run
    is only evaluated again, after one line saying so.
    """

    model: Optional[str] = option(
        default=None,
        help="The forward-model run directory (visfore train-model) to train through (required unless --resume).",
    )
    env: Optional[str] = option(
        default=None,
        help="The real env for evaluation: a short name (reacher) or id (default: the model dataset's env; given, it must be that env).",
    )
    model_checkpoint: Checkpoint = option(default="best", help="best or last checkpoint of the forward model.")
    data: Optional[str] = option(
        default=None, help="Dataset of start clips and goal frames (default: the model's training dataset)."
    )
    policy_net: Literal["cnn", "mlp"] = option(
        default="cnn", help="cnn (strided convolutions) or mlp (on frames average-pooled to --mlp-size)."
    )
    policy_frames: int = option(default=1, help="F, the last F frames the policy sees (1 = the current frame only).")
    prev_action: bool = option(default=True, help="Feed the previous action (scaled to [-1, 1]) to the policy.")
    action_scale: float = option(
        default=1.0,
        help="Fraction of the env's action half-range the policy may use, in (0, 1], like visfore plan --action-scale (keep the policy inside the actions the model was trained on).",
    )
    hidden: int = option(default=256, help="Width of the policy's hidden fully connected layer(s).")
    mlp_size: int = option(default=16, help="The mlp policy sees frames average-pooled to this size x this size.")
    horizon: int = option(default=8, help="K, imagined steps per training rollout (>= 1).")
    iterations: Optional[int] = option(
        default=None,
        help="Adam steps in total (default 1000, or unbounded with --time-budget). With --resume: the new total (more than the run has done trains on; default: the run's own).",
    )
    time_budget: Optional[float] = option(
        default=None, help="Minutes of training in this session (checkpointed; --resume continues)."
    )
    batch_size: int = option(default=16, help="Start clips per iteration.")
    lr: float = option(default=1e-3, help="Adam learning rate.")
    action_penalty: float = option(default=1e-3, help="Weight of the mean squared action scaled to [-1, 1].")
    loss_steps: Literal["final", "all"] = option(
        default="final", help="final (last imagined frame) or all (every frame, weights k / sum k)."
    )
    loss_scales: int = option(default=3, help="Levels of the 2x average-pool pyramid the pixel MSE averages (>= 1).")
    grad_clip: float = option(default=1.0, help="Gradient-norm clip (> 0).")
    val_every: int = option(default=50, help="Iterations between validations and checkpoints (>= 1).")
    val_batch: int = option(default=32, help="Start clips of the fixed validation batch.")
    eval_episodes: int = option(
        default=DEFAULT_EVAL_EPISODES, help="Real goal-reaching episodes after training (0 = none)."
    )
    eval_steps: Optional[int] = option(
        default=None, help="Actions per evaluation episode (default: the env's time limit)."
    )
    eval_seed: Optional[int] = option(
        default=None,
        help="Seed of the evaluation episodes (default --seed; use visfore plan's --seed for common random numbers).",
    )
    success_threshold: Optional[float] = option(
        default=None, help="Success threshold in metres (default: the env's, 0.02 for ReacherPlane-v0)."
    )
    gifs: bool = option(default=False, help="One GIF per evaluation episode in eval/gifs.")
    seed: int = option(default=0, help="Seed of the policy's initialisation, the batches and the evaluation episodes.")
    device: str = option(default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N.")
    num_threads: Optional[int] = option(default=None, help=NUM_THREADS_HELP)
    out: Optional[str] = option(
        default=None,
        help="Run directory (default OUT_DIR/train-policy-through-model-<name or UTC time>).",
        flags=("--out", "-o"),
    )
    name: Optional[str] = option(
        default=None, help="Run name: OUT_DIR/train-policy-through-model-NAME (default: UTC time)."
    )
    out_dir: str = option(default=str(DEFAULT_RUNS_ROOT), help="Parent directory of run directories (with --name).")
    resume: bool = option(
        default=False,
        help="Continue the run in --out (or --name) from checkpoints/last.pt (its options come from its config.yaml). The old form --resume RUN_DIR still works.",
        flags=("--resume",),
    )
    progress: bool = option(
        default=True,
        help="Show the progress bar and the summary (--quiet: neither).",
        flags=("--progress/--quiet", " /-q"),
        deprecated=(" /--no-progress",),
    )
