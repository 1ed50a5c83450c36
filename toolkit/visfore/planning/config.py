"""The options of ``visfore plan`` and ``visfore train-through-model``, declared once
(:mod:`visfore.core.config`).

Imported by the CLI without torch; :mod:`visfore.planning.plan` and
:mod:`visfore.planning.through_model` run them. Units: distances in metres, action
scales as fractions of the action half-range, times in minutes.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal, Optional, Sequence

from visfore.core.config import ConfigBase, option
from visfore.core.device import NUM_THREADS_HELP
from visfore.core.errors import VisforeError
from visfore.core.runs import DEFAULT_RUNS_ROOT

__all__ = [
    "CONTROLLER_LABELS",
    "COST_TERMS",
    "DEFAULT_EXTRA_THRESHOLDS",
    "LATENT_BUDGET",
    "PIXEL_BUDGET",
    "STATE_SUPERVISED",
    "ComparePlansConfig",
    "PlanConfig",
    "ThroughModelConfig",
    "controller_label",
    "cost_weights",
    "parse_controllers",
    "parse_cost",
    "parse_thresholds",
    "resolve_blocks",
    "resolve_plan_defaults",
]

#: ``--controllers`` names and the report label of each with the default pixel cost and
#: CEM (:func:`controller_label` gives the label of other costs and optimizers).
CONTROLLER_LABELS: dict[str, str] = {
    "learned": "learned-cem",
    "oracle": "oracle-cem",
    "random": "random",
    "through-model": "through-model",
}
#: The terms of ``--cost``, in the order labels and reports name them.
COST_TERMS = ("pixels", "latent", "keypoints")
#: ``--goal-keypoints``: where a latent model's probe reads the goal image's key points
#: (:class:`visfore.planning.controllers.LearnedCEMController`)
GOAL_KEYPOINTS = ("rest", "embedding")
#: Suffix of the label of a controller whose cost reads key points (a probe or a
#: translator trained on the dataset's states: privileged labels, not pixels alone).
STATE_SUPERVISED = "state-supervised"
#: Default budget of a pixel model's planner: Ebert et al. 2018's 3 iterations x 200
#: samples with 10 elites (cdna: ~1.9 s per control step on one CPU thread at 32x32).
PIXEL_BUDGET = {"iterations": 3, "samples": 200, "elites": 10}
#: Default budget of a latent model's planner (rssm, jepa): 3 iterations x 256 samples x
#: the 15-step horizon, 32 elites (TD-MPC2's elite fraction 64/512), chosen so that a
#: control step of the default-size rssm takes <= 0.1 s on one CPU thread at 32x32
#: (measured by benchmarks/planning.py; jepa is about twice as fast). TD-MPC2's own
#: budget (6 x 512, horizon 3 plus a value function) does not fit with a 15-step horizon.
LATENT_BUDGET = {"iterations": 3, "samples": 256, "elites": 32}
#: MPPI's update settings (TD-MPC2, Hansen et al. 2024, tdmpc2/config.yaml).
MPPI_TEMPERATURE = 0.5
MPPI_MAX_STD = 2.0
#: Initial std (action half-ranges) of each optimizer: CEM 0.5 (as before), MPPI
#: TD-MPC2's max_std 2.
INIT_STD = {"cem": 0.5, "mppi": 2.0}
#: What each optimizer executes by default: CEM the best sample (Finn & Levine 2017),
#: MPPI the weighted mean (Williams et al. 2017).
EXECUTE_DEFAULT = {"cem": "best", "mppi": "mean"}
#: Default looser success threshold reported next to the env's (metres).
DEFAULT_EXTRA_THRESHOLDS = (0.05,)
#: Default real-env evaluation episodes of ``train-through-model``.
DEFAULT_EVAL_EPISODES = 20

OracleCost = Literal["same", "pixels", "keypoints", "pixels+keypoints"]
CostFrames = Literal["final", "all"]
Checkpoint = Literal["best", "last"]
Optimizer = Literal["cem", "mppi"]
Execute = Literal["best", "mean"]


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


def parse_cost(text: str | None) -> dict[str, float | None]:
    """``--cost`` text -> ``{term: weight or None}`` in the order given.

    Terms are :data:`COST_TERMS`, separated by ``,`` or ``+``, each ``TERM`` or
    ``TERM=WEIGHT`` (``"latent=1,keypoints=0.5"``, ``"pixels+keypoints"``); a term without
    a weight gets its default later (:func:`cost_weights`).

    Raises:
        VisforeError: no term, an unknown or repeated term, or a weight that is not a
            finite number >= 0 (one line naming it and what is allowed).
    """
    allowed = f"valid: {', '.join(COST_TERMS)}, as TERM or TERM=WEIGHT separated by commas"
    if text is None or not str(text).strip():
        raise VisforeError(f"--cost names no term; {allowed}")
    out: dict[str, float | None] = {}
    for item in str(text).replace("+", ",").split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, value = item.partition("=")
        name = name.strip().lower()
        if name not in COST_TERMS:
            raise VisforeError(f"--cost {text}: unknown term {name!r}; {allowed}")
        if name in out:
            raise VisforeError(f"--cost {text}: {name} is given twice")
        weight: float | None = None
        if sep:
            try:
                weight = float(value)
            except ValueError:
                weight = math.nan
            if not (math.isfinite(weight) and weight >= 0):
                raise VisforeError(f"--cost {text}: the weight of {name} must be a number >= 0, got {value.strip()!r}")
        out[name] = weight
    if not out:
        raise VisforeError(f"--cost names no term; {allowed}")
    return out


def cost_weights(text: str | None, pixel_weight: float = 1.0, keypoint_weight: float = 1.0) -> dict[str, float]:
    """The weight of every term of ``--cost`` (:func:`parse_cost`): the one given with
    ``TERM=WEIGHT``, else ``--pixel-weight`` for pixels, ``--keypoint-weight`` for key points
    and 1 for latent. Terms come in the order of :data:`COST_TERMS`.

    Raises:
        VisforeError: bad ``--cost`` text, or every weight zero.
    """
    parsed = parse_cost(text)
    defaults = {"pixels": float(pixel_weight), "latent": 1.0, "keypoints": float(keypoint_weight)}
    weights: dict[str, float] = {}
    for t in COST_TERMS:
        if t in parsed:
            given = parsed[t]
            weights[t] = float(given) if given is not None else defaults[t]
    if not any(w > 0 for w in weights.values()):
        raise VisforeError(f"--cost {text}: every weight is zero; give at least one term a weight > 0")
    return weights


def controller_label(kind: str, terms: Sequence[str] = ("pixels",), optimizer: str = "cem") -> str:
    """The report label of a planning controller.

    ``kind`` is ``"learned"`` or ``"oracle"``. A learned controller's label names its cost
    terms unless the cost is pixels alone (the historical ``learned-cem``), then the
    optimizer, then ``-state-supervised`` when a term reads key points
    (``learned-latent-mppi``, ``learned-latent+keypoints-cem-state-supervised``,
    ``learned-mppi``). The oracle's is ``oracle-<optimizer>`` (it plans on the true
    simulator).
    """
    if kind == "oracle":
        return f"oracle-{optimizer}"
    ordered = [t for t in COST_TERMS if t in terms]
    label = "learned" + ("" if ordered == ["pixels"] else "-" + "+".join(ordered)) + f"-{optimizer}"
    if "keypoints" in ordered:
        label += f"-{STATE_SUPERVISED}"
    return label


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
    """Every option of ``visfore plan``: visual MPC with CEM or MPPI on a learned forward
    model (pixel or latent), against the same optimizer on the true simulator and a random
    policy.

    Units: ``success_threshold`` / ``extra_thresholds`` metres; ``action_scale`` a fraction
    of the action half-range; ``init_std`` / ``min_std`` / ``max_std`` in half-ranges.
    ``horizon_steps`` (``--horizon``) is resolved into ``blocks`` when the config is built
    (:func:`resolve_blocks`) and then reads None; the horizon is :attr:`horizon`. Options
    whose default depends on the model (``iterations``, ``samples``, ``elites``, ``cost``,
    ``init_std``, ``execute``) are None until :func:`resolve_plan_defaults`.
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
    optimizer: Optimizer = option(
        default="cem",
        help="cem (cross-entropy method, refit to the elites) or mppi (Williams et al. 2017 with TD-MPC2's update: weights exp(-temperature x normalised cost) over the elites).",
    )
    iterations: Optional[int] = option(
        default=None,
        help="Optimizer iterations per plan (default 3). Default budget: pixel models 3 x 200 samples, latent models 3 x 256, with the 15-step horizon.",
    )
    samples: Optional[int] = option(
        default=None,
        help="Candidate sequences per iteration, scored in one batched model call (default 200 for pixel models, 256 for latent models: <= 0.1 s per step on one thread).",
    )
    elites: Optional[int] = option(
        default=None,
        help="Elites the distribution is refit to (default 10 for pixel models, samples / 8 for latent models, as TD-MPC2's 64 of 512).",
    )
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
    imagine: Literal["sample", "mode"] = option(
        default="sample",
        help="Stochastic latent models (rssm): sample (each imagined step draws its latent, as in training) or mode (each step takes the prior's most likely class: one deterministic rollout per candidate, so candidates are compared without sampling noise).",
    )
    filter_frames: Optional[int] = option(
        default=None,
        help="Latent models: how many of the last real frames (with the actions between them) are filtered into the latent state before each plan; default the model's context C. A recurrent model (rssm) reads the arm's velocity from more.",
    )
    goal_keypoints: Literal["rest", "embedding"] = option(
        default="rest",
        help="--cost keypoints through a latent model's probe: where the goal image's key points are read. rest (default): the probe on the state of the goal frame filtered --filter-frames times at rest, the kind of state the probe was trained on; embedding: the probe on encode_goal of the frame (the only way before 2026-12-07, about 2.5 times as far off on the reacher).",
    )
    shrink_horizon: bool = option(
        default=True,
        help="Near the episode's end, score only the steps left, so the cost is taken at the last step, where success is measured (shrinking-horizon MPC; needs the env's time limit). --fixed-horizon always scores T steps.",
        flags=("--shrink-horizon/--fixed-horizon",),
    )
    init_std: Optional[float] = option(
        default=None, help="Initial std, in action half-ranges (default: cem 0.5, mppi 2 as TD-MPC2)."
    )
    min_std: float = option(default=0.05, help="Floor of the std, in action half-ranges.")
    max_std: float = option(default=MPPI_MAX_STD, help="MPPI: ceiling of the std, in action half-ranges (TD-MPC2: 2).")
    temperature: float = option(
        default=MPPI_TEMPERATURE,
        help="MPPI: weights exp(-temperature x (cost - best) / std of the elites' costs) (TD-MPC2: 0.5).",
    )
    alpha: float = option(default=0.0, help="Smoothing of the CEM refit (PETS), in [0, 1).")
    execute: Optional[Execute] = option(
        default=None,
        help="Sequence executed after each plan: best (lowest-cost sample seen; cem's default) or mean (the final elite or weighted mean; mppi's default, PETS; averages out a learned model's cost errors).",
    )
    action_scale: float = option(
        default=1.0, help="Fraction of the env's action range every controller may use, (0, 1]."
    )
    cost: Optional[str] = option(
        default=None,
        help="Cost terms with weights, e.g. latent=1,keypoints=0.5: pixels (decoded frames vs the goal image, MSE), latent (imagined features vs the goal image's, squared L2; no decoding), keypoints (the model's probe or --translator; state-supervised). Default: pixels for pixel models, latent for latent models.",
        metavar="TERM[=W],...",
    )
    cost_frames: CostFrames = option(
        default="final",
        help="final (the last imagined step) or all (the mean over every step of the horizon).",
        flags=("--cost-steps", "--cost-frames"),
    )
    pixel_weight: float = option(default=1.0, help="Weight of a pixels term given without =W.")
    keypoint_weight: float = option(default=1.0, help="Weight of a keypoints term given without =W (per metre).")
    pixel_blur: float = option(
        default=0.0,
        help="Gaussian blur (sigma, pixels) of predicted and goal frames before the pixel MSE; widens the cost's basin (0 = none).",
    )
    translator: Optional[str] = option(
        default=None,
        help="Key-point translator run (visfore train-translator) for a keypoints cost term, read from decoded frames (without it: the latent model's probe).",
    )
    oracle_cost: OracleCost = option(
        default="same",
        help="Cost of the oracle: same (as --cost, on rendered frames: latent encodes them with the model, keypoints are the true ones), pixels, keypoints (true key points) or pixels+keypoints.",
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
    def optimizer_config(self) -> Any:
        """The optimizer's config: a :class:`~visfore.planning.cem.CEMConfig` (``--optimizer
        cem``) or :class:`~visfore.planning.mppi.MPPIConfig` (``mppi``), with the pixel
        model's defaults for budget options still None (:func:`resolve_plan_defaults`
        resolves them per model first)."""
        # lazy: cem and mppi import torch; config modules stay light
        from visfore.planning.cem import CEMConfig
        from visfore.planning.mppi import MPPIConfig

        c = resolve_plan_defaults(self, latent=False)
        shared: dict[str, Any] = {
            "iterations": c.iterations, "samples": c.samples, "elites": c.elites,
            "blocks": int(c.blocks or 0), "repeat": c.repeat, "init_std": c.init_std,
            "min_std": c.min_std, "execute": c.execute,
        }  # fmt: skip
        if c.optimizer == "mppi":
            return MPPIConfig(temperature=c.temperature, max_std=c.max_std, **shared)
        return CEMConfig(alpha=c.alpha, **shared)

    @property
    def cem_config(self) -> Any:
        """The optimizer's config (:attr:`optimizer_config`; the name of the CEM-only days)."""
        return self.optimizer_config

    @property
    def horizon(self) -> int:
        """Planning horizon T = blocks * repeat (steps)."""
        return int(self.blocks or 0) * self.repeat


def resolve_plan_defaults(config: PlanConfig, latent: bool) -> PlanConfig:
    """``config`` with every option left None set for the model it plans with.

    ``latent``: the model of ``--model`` is a latent model (``rssm``, ``jepa``). Budget
    (``iterations``, ``samples``, ``elites``): :data:`LATENT_BUDGET` for latent models,
    :data:`PIXEL_BUDGET` otherwise (without ``--samples``/``--elites`` the elites are
    ``min(10, samples)`` for pixel models, ``max(2, samples // 8)`` for latent models).
    ``cost``: ``latent`` for latent models, ``pixels`` otherwise. ``init_std`` and
    ``execute``: per optimizer (:data:`INIT_STD`, :data:`EXECUTE_DEFAULT`). Options given
    are kept.
    """
    budget = LATENT_BUDGET if latent else PIXEL_BUDGET
    samples = config.samples if config.samples is not None else budget["samples"]
    if config.elites is not None:
        elites = config.elites
    elif isinstance(samples, int) and not isinstance(samples, bool):
        elites = max(2, samples // 8) if latent else min(budget["elites"], samples)
    else:
        elites = budget["elites"]
    optimizer = config.optimizer if config.optimizer in INIT_STD else "cem"
    return dataclasses.replace(
        config,
        iterations=config.iterations if config.iterations is not None else budget["iterations"],
        samples=samples,
        elites=elites,
        cost=config.cost if config.cost is not None else ("latent" if latent else "pixels"),
        init_std=config.init_std if config.init_std is not None else INIT_STD[optimizer],
        execute=config.execute if config.execute is not None else EXECUTE_DEFAULT[optimizer],  # type: ignore[arg-type]
    )


class ThroughModelConfig(ConfigBase, command="train-through-model"):
    """Every option of ``visfore train-through-model``: a goal-reaching policy trained by
    backpropagating the goal cost through a frozen forward model, evaluated in the real env.

    ``--resume`` continues the run in ``--out`` (or ``--name``): the other options come
    from the run's ``config.yaml``; only the runtime options (:data:`visfore.planning.through_model.RUNTIME_OPTIONS`) may change
    (``iterations`` and ``time_budget`` only when given). ``iterations`` is the run's
    total, also on resume: above the iterations done it trains on to it (and
    ``config.yaml`` keeps the new target); at or below them nothing is trained and the run
    is only evaluated again, after one line saying so.

    A latent model (``rssm``, ``jepa``) is trained through in latent space: the policy
    is an MLP on ``[features, goal features, previous action]`` (``hidden`` wide,
    ``policy_layers`` deep) and the loss is ``cost`` (:func:`parse_cost` terms ``latent``
    and ``keypoints``); ``policy_net``, ``policy_frames``, ``mlp_size`` and
    ``loss_scales`` are options of pixel models only.
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
        default="cnn",
        help="Pixel models: cnn (strided convolutions) or mlp (on frames average-pooled to --mlp-size); a latent model's policy is an MLP on its features (--policy-layers).",
    )
    policy_frames: int = option(default=1, help="F, the last F frames the policy sees (1 = the current frame only).")
    prev_action: bool = option(default=True, help="Feed the previous action (scaled to [-1, 1]) to the policy.")
    action_scale: float = option(
        default=1.0,
        help="Fraction of the env's action half-range the policy may use, in (0, 1], like visfore plan --action-scale (keep the policy inside the actions the model was trained on).",
    )
    hidden: int = option(default=256, help="Width of the policy's hidden fully connected layer(s).")
    policy_layers: int = option(
        default=2,
        help="Latent models: hidden layers (each --hidden wide) of the policy's MLP on the state's features, the goal's and the previous action.",
    )
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
        default="final",
        help="final (the last imagined frame or latent state) or all (every step, weights k / sum k).",
    )
    loss_scales: int = option(default=3, help="Levels of the 2x average-pool pyramid the pixel MSE averages (>= 1).")
    cost: Optional[str] = option(
        default=None,
        help="Latent models: the loss's cost terms with weights, as visfore plan --cost: latent (imagined features vs the goal image's, squared L2) and keypoints (the model's probe; state-supervised), e.g. latent=1,keypoints=0.5 (default latent).",
        metavar="TERM[=W],...",
    )
    keypoint_weight: float = option(default=1.0, help="Weight of a keypoints term given without =W (per metre).")
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


class ComparePlansConfig(ConfigBase, command="compare-plans"):
    """Every option of ``visfore compare-plans``: is controller A better than controller B
    on the same episodes? Pairs the episodes of ``visfore plan`` outputs by reset seed and
    prints successes, discordant pairs, a one-sided Fisher exact test and an exact
    McNemar test (:mod:`visfore.planning.paired_comparison`). Units: ``threshold`` metres.
    """

    a: list[str] = option(
        help="A plan output directory of side A; repeatable (e.g. one per seed).",
        default_factory=list,
        repeatable=True,
        flags=("--a",),
        metavar="DIR",
    )
    b: list[str] = option(
        help="A plan output directory of side B; repeatable.",
        default_factory=list,
        repeatable=True,
        flags=("--b",),
        metavar="DIR",
    )
    a_controller: Optional[str] = option(
        default=None,
        help="Side A's controller: its label or kind (learned, oracle, random, through-model); needed when a run has several.",
    )
    b_controller: Optional[str] = option(default=None, help="Side B's controller, as --a-controller.")
    threshold: Optional[float] = option(
        default=None, help="Success threshold in metres (default: the runs' own, which must agree)."
    )
    as_json: bool = option(default=False, help="Print the result as JSON instead of a table.", flags=("--json",))

    def __post_init__(self) -> None:
        super().__post_init__()
        for side in ("a", "b"):
            if not getattr(self, side):
                raise VisforeError(f"--{side} is required: give at least one visfore plan output directory")
        if self.threshold is not None and not (self.threshold > 0 and math.isfinite(self.threshold)):
            raise VisforeError(f"--threshold must be a positive distance in metres, got {self.threshold}")
