"""``visfore plan``: visual model-predictive control with CEM or MPPI on a learned forward
model (pixel or latent), measured against the same optimizer on the true simulator and a
random policy.

Controllers (``--controllers``, :mod:`visfore.planning.controllers`; all share the action
bounds, the episodes and the seeds, :mod:`visfore.planning.goal_reaching`):

* ``learned`` (``learned-cem``, ``learned-latent-mppi``, ...; the label names the cost
  terms unless the cost is pixels alone, then the optimizer, then ``state-supervised``
  when a term reads key points, :func:`~visfore.planning.config.controller_label`): the
  optimizer over action sequences scored on what the model of ``--model RUN`` imagines
  (Finn & Levine 2017; Ebert et al. 2018). The model's context is the last C real frames
  and the C - 1 actions taken between them (at the start of an episode the reset frame
  repeated, with zero actions); all N candidate sequences of an iteration are imagined in
  one batched call (``--batch-chunk`` splits it only to bound memory)::

      pixel model:  model(context (N, C, 3, H, W), actions (N, C - 1 + T, A)) -> (N, T, 3, H, W)
      latent model: model.imagine(init_state(context), actions (1, N, T, A), decode=False) -> (1, N, T, F)

  (a latent model filters the context once per plan; frames are decoded only for a
  ``pixels`` term or a translator).
* ``oracle`` (``oracle-cem`` / ``oracle-mppi``): the same optimizer and budget
  (iterations x samples x horizon x repeat), but each candidate is rolled out in the true
  MuJoCo model from the current state (``mujoco.rollout`` from ``mj_getState(...,
  mjSTATE_FULLPHYSICS)``, one C call for all N candidates, ``frame_skip`` physics steps
  per env step, exactly ``env.step``'s integration) and scored on frames rendered by the
  env's own renderer (pixel costs; a latent cost encodes them with the model) or on the
  true key points (``--oracle-cost``). The gap between ``learned`` and ``oracle`` is what
  the learned model costs.
* ``random``: independent uniform actions in the bounds (the floor to beat).
* ``through-model``: a policy trained by backpropagating through the model (``--policy
  RUN``, :func:`visfore.planning.through_model_policy.load_through_model_policy`).

Optimizers (``--optimizer``): ``cem`` (:mod:`visfore.planning.cem`: refit to the elites,
the best sample executed) and ``mppi`` (:mod:`visfore.planning.mppi`: Williams et al. 2017
with TD-MPC2's update, weights ``exp(-temperature * normalised cost)`` over the elites, std
clamped to ``[--min-std, --max-std]``, the weighted mean executed). Both search the same
block sequences with the same budget and warm start.

Costs (``--cost TERM[=W],...``, weights add; :mod:`visfore.planning.costs`,
:mod:`visfore.planning.latent_costs`; lower is better, per candidate), each of the final
imagined step (``--cost-steps final``, alias ``--cost-frames``) or the mean over every step
(``all``):

* ``pixels`` (default for pixel models): MSE between predicted (decoded) frames and the
  goal frame on [0, 1] intensities (mean over H, W, 3), weight ``--pixel-weight`` unless
  given;
* ``latent`` (default for latent models): ``||f - encode_goal(goal)||^2``, the squared L2
  distance of the imagined features to the goal image's, without decoding, weight 1
  unless given;
* ``keypoints``: ``||kp - kp(goal)||_2`` (metres) of the key points read by a translator
  from frames (``--translator RUN``, a ``visfore train-translator`` run of the same env,
  :class:`~visfore.planning.costs.RunTranslator`) or, without one, by the latent model's
  probe from its features (``train-model --probe keypoints``); weight
  ``--keypoint-weight`` unless given. Both are trained on the dataset's states, so the
  controller is labelled ``state-supervised``. Refused in one line when there is neither.

``--pixel-blur SIGMA`` blurs predicted and goal frames with a Gaussian of SIGMA pixels before
the MSE (:func:`~visfore.planning.costs.gaussian_blur`): a thin arm a few pixels off the goal
pose then still overlaps it, which widens the basin of the pixel cost (0, the default, is the plain MSE).

The oracle scores with ``--oracle-cost``: ``same`` (default: the learned controller's
terms on rendered frames, so the learned/oracle gap isolates the model; its key points are
the true ones), ``pixels``, ``keypoints`` (true key points vs the env's target, metres:
the best a planner can do with this budget) or ``pixels+keypoints``.

Budgets (``--iterations``, ``--samples``, ``--elites``; :func:`~visfore.planning.config.resolve_plan_defaults`):
pixel models 3 x 200 with 10 elites; latent models 3 x 256 with 32 elites, which keeps a
control step of the default-size rssm or jepa under 0.1 s on one CPU thread at 32x32
(``benchmarks/planning.py``). The horizon is 15 steps (5 blocks x 3) for both.

MPC loop (receding horizon): plan T = ``blocks * repeat`` steps, execute the chosen
sequence for ``--replan-every`` steps, replan from the new frame, warm-starting from the
previous mean shifted by the executed steps (PETS; :func:`visfore.planning.cem.shift_mean`).
With ``--shrink-horizon``, a plan made fewer than T steps before the env's time limit
scores only the steps left, so its cost is taken at the episode's last step, where success
is measured (shrinking-horizon MPC, the default); ``--fixed-horizon`` always scores step T.

Goals: without ``--goal``, the env's target pose rendered as an image
(``env.unwrapped.render_goal()``: the robot at the target configuration), so success can
be scored (final key-point distance under the env's threshold, 0.02 m for
ReacherPlane-v0). ``--goal image.png`` plans toward an image file instead (resized to the
model's frame size); the distances then still refer to the env's own random targets.

Output (``runs/plan-<UTC time>/`` or ``--out``): ``config.yaml``, ``episodes.csv`` /
``episodes.json`` (rewritten after every episode, atomically; ``seconds_per_step`` is the
controller's time per control step), ``summary.json``, ``report.md``, ``report.html``
(self-contained), ``distance.png``, and ``gifs/<controller>-epNNN.gif`` (observation |
imagined best rollout, last frame | goal; labelled panels upscaled to at least 128 pixels,
:func:`visfore.planning.goal_reaching.goal_panel`). The progress bar counts control steps
(episodes x controllers x steps) with the time remaining.
Episodes run interleaved (episode k of every controller, then k + 1), so Ctrl-C keeps
balanced finished episodes and writes the report of them (exit 130).

This module is the pipeline (:func:`plan`: options, set-up, episodes); the controllers are
:mod:`visfore.planning.controllers`, the costs and goal images :mod:`visfore.planning.costs`
and :mod:`visfore.planning.latent_costs`, and the report :mod:`visfore.planning.plan_report`.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from visfore.core import provenance, runs
from visfore.core.device import parse_device_spec, select_device
from visfore.core.errors import VisforeError
from visfore.core.progress import step_progress
from visfore.core.runs import resolve_run_dir
from visfore.core.threads import AdaptiveThreads, configure_torch_threads, restoring_torch_threads
from visfore.data.envs import resolve_env_id
from visfore.planning.config import (  # noqa: F401 (re-exported: the plan API)
    CONTROLLER_LABELS,
    DEFAULT_EXTRA_THRESHOLDS,
    STATE_SUPERVISED,
    PlanConfig,
    controller_label,
    cost_weights,
    parse_controllers,
    parse_thresholds,
    resolve_blocks,
    resolve_plan_defaults,
)
from visfore.planning.controllers import (
    LearnedCEMController,
    OracleCEMController,
    RandomController,
    action_bounds,
)
from visfore.planning.costs import load_goal_image, load_translator
from visfore.planning.goal_reaching import (
    SEEDING_SCHEME,
    check_action_scale,
    evaluation_env_kwargs,
    make_goal_env,
    run_goal_episodes,
)
from visfore.planning.plan_report import write_report
from visfore.planning.through_model_policy import load_through_model_policy
from visfore.reports.report_html import jsonable
from visfore.worldmodels.model_run import load_model_run

log = logging.getLogger(__name__)

COMMAND = "plan"
MAX_EPISODES = 10_000


def validate_config(config: PlanConfig, latent: bool = False) -> PlanConfig:
    """Check every option that needs no file; returns a normalised copy with the
    model-dependent defaults resolved (:func:`~visfore.planning.config.resolve_plan_defaults`;
    ``latent``: the model is a latent one).

    Raises:
        VisforeError: one line naming the bad value and what is allowed.
    """

    def integer(name: str, value: Any, low: int, high: int | None = None) -> None:
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, np.integer))
            or value < low
            or (high is not None and value > high)
        ):
            allowed = f">= {low}" if high is None else f"in {low}..{high}"
            raise VisforeError(f"--{name} must be an integer {allowed}, got {value!r}")

    def positive(name: str, value: float, strict: bool = True) -> None:
        ok = math.isfinite(value) and (value > 0 if strict else value >= 0)
        if not ok:
            raise VisforeError(f"--{name} must be {'>' if strict else '>='} 0, got {value!r}")

    c = replace(
        config,
        controllers=parse_controllers(config.controllers),
        extra_thresholds=parse_thresholds(config.extra_thresholds),
    )
    c = resolve_plan_defaults(c, latent)
    integer("episodes", c.episodes, 1, MAX_EPISODES)
    if c.steps is not None:
        integer("steps", c.steps, 1)
    integer("seed", c.seed, 0)
    c.check_choices()  # optimizer, cost_frames, oracle_cost, checkpoint, execute (Literal choices)
    positive("temperature", c.temperature)
    positive("max-std", c.max_std)
    c.optimizer_config.validate()
    integer("replan-every", c.replan_every, 1)
    if c.replan_every > c.horizon:
        raise VisforeError(f"--replan-every {c.replan_every} must be <= the horizon blocks x repeat = {c.horizon}")
    if c.filter_frames is not None:
        integer("filter-frames", c.filter_frames, 1, 1000)
    check_action_scale(c.action_scale)
    positive("pixel-weight", c.pixel_weight, strict=False)
    positive("keypoint-weight", c.keypoint_weight, strict=False)
    terms = cost_weights(c.cost, c.pixel_weight, c.keypoint_weight)
    positive("pixel-blur", c.pixel_blur, strict=False)
    if c.success_threshold is not None:
        positive("success-threshold", c.success_threshold)
    parse_device_spec(c.device)
    integer("batch-chunk", c.batch_chunk, 0)
    if c.num_threads is not None:
        integer("num-threads", c.num_threads, 1)
    if c.size is not None:
        integer("size", c.size, 8, 1024)
    if "learned" in c.controllers and not c.model:
        raise VisforeError("the learned controller needs --model RUN (a visfore train-model run)")
    if "through-model" in c.controllers and not c.policy:
        raise VisforeError("the through-model controller needs --policy RUN")
    if c.policy and "through-model" not in c.controllers:
        c = replace(c, controllers=(*c.controllers, "through-model"))
    if "latent" in terms and not c.model and ("learned" in c.controllers or (
            "oracle" in c.controllers and c.oracle_cost == "same")):  # fmt: skip
        raise VisforeError(f"--cost {c.cost} needs --model RUN (a model whose features it compares)")
    if c.model is None and c.env is None:
        raise VisforeError("give --env (or --model RUN, whose dataset names the env)")
    return c


def load_through_model_controller(run: str | Path, device: Any = None) -> Any:
    """The through-model policy of ``run`` as a :class:`~visfore.planning.goal_reaching.GoalController`
    (:func:`visfore.planning.through_model_policy.load_through_model_policy`).

    Raises:
        VisforeError: the run cannot be loaded.
    """
    controller = load_through_model_policy(run, device=device)
    if not getattr(controller, "name", None):
        controller.name = "through-model"
    # a latent policy trained through the probe's key points used privileged state labels
    if str(getattr(controller, "supervision", "")).startswith("state-supervised"):
        controller.name = f"{controller.name}-state-supervised"
    return controller


# ---------------------------------------------------------------------------------------
# the pipeline
# ---------------------------------------------------------------------------------------
def command_line(config: PlanConfig, out: Path) -> str:
    """The ``visfore plan`` command line that reproduces a run (every option explicit)."""
    return provenance.command_line(COMMAND, config, exclude=("progress", "name"), text={"out": str(out)})


def _default_out() -> Path:
    base = resolve_run_dir(COMMAND)
    out, n = base, 1
    while out.exists():
        n += 1
        out = base.with_name(f"{base.name}-{n}")
    return out


def _resolve_env(config: PlanConfig, model_run: Any) -> tuple[str, dict, tuple[int, int]]:
    """(env id, env kwargs, (H, W)) from the model's dataset attrs and the options.

    Raises:
        VisforeError: ``--env`` names another env than the model was trained on, or
            ``--size`` differs from the model's frame size.
    """
    env_id = resolve_env_id(config.env) if config.env else None
    env_kwargs: dict = {}
    size = (config.size, config.size) if config.size else (64, 64)
    if model_run is not None:
        dataset = model_run.config.get("dataset") or {}
        raw_attrs = dataset.get("attrs")
        attrs: dict[str, Any] = raw_attrs if isinstance(raw_attrs, dict) else {}
        trained_env = attrs.get("env_id")
        if trained_env:
            trained_env = resolve_env_id(str(trained_env))
            if env_id is not None and env_id != trained_env:
                raise VisforeError(
                    f"--env {config.env} ({env_id}) is not the env the model of {model_run.run_dir} "
                    f"was trained on ({trained_env})"
                )
            env_id = trained_env
        elif env_id is None:
            raise VisforeError(f"the dataset of {model_run.run_dir} records no env; pass --env")
        env_kwargs = evaluation_env_kwargs(attrs.get("env_kwargs"))
        H, W = model_run.image_size
        if config.size and (config.size, config.size) != (H, W):
            raise VisforeError(f"--size {config.size} differs from the model's frame size {H}x{W}")
        size = (H, W)
    assert env_id is not None
    return env_id, env_kwargs, size


def _make_controllers(config: PlanConfig, model_run: Any, translator: Any, device: Any) -> list[Any]:
    """The controllers of ``--controllers``, in order (the learned one refuses key points
    without a translator or a probe, in one line)."""
    cem_cfg = config.optimizer_config
    out: list[Any] = []
    goal_encoder = None
    if model_run is not None:
        model, dev = model_run.model, model_run.device

        def goal_encoder(frames: Any) -> Any:  # rendered frames (M, 3, H, W) -> (M, F) features
            return model.encode_goal(frames.to(dev))

    for name in config.controllers:
        if name == "learned":
            out.append(LearnedCEMController(
                model_run, cem_cfg, replan_every=config.replan_every,
                action_scale=config.action_scale, cost=config.cost or "pixels", cost_frames=config.cost_frames,
                pixel_weight=config.pixel_weight, keypoint_weight=config.keypoint_weight,
                translator=translator, batch_chunk=config.batch_chunk, pixel_blur=config.pixel_blur,
                amp=config.amp, shrink_horizon=config.shrink_horizon, filter_frames=config.filter_frames,
                goal_keypoints=config.goal_keypoints,
            ))  # fmt: skip
        elif name == "oracle":
            out.append(OracleCEMController(
                cem_cfg, replan_every=config.replan_every, action_scale=config.action_scale,
                cost=oracle_cost(config), cost_frames=config.cost_frames,
                pixel_weight=config.pixel_weight, keypoint_weight=config.keypoint_weight,
                pixel_blur=config.pixel_blur, shrink_horizon=config.shrink_horizon,
                goal_encoder=goal_encoder,
            ))  # fmt: skip
        elif name == "random":
            out.append(RandomController(config.action_scale))
        elif name == "through-model":
            assert config.policy is not None  # validate_config: through-model needs --policy
            out.append(load_through_model_controller(config.policy, device=device))
    return out


def oracle_cost(config: PlanConfig) -> str:
    """The oracle's cost: ``--oracle-cost``, with ``same`` resolved to ``--cost`` (the
    oracle's key points are the true ones, no translator needed; a latent term encodes the
    rendered frames with the model)."""
    cost = config.cost if config.cost is not None else "pixels"
    return cost if config.oracle_cost == "same" else config.oracle_cost


def _terms_text(cost: str, config: PlanConfig) -> str:
    """``"latent+keypoints"``: the terms of a cost, in :data:`~visfore.planning.config.COST_TERMS` order."""
    return "+".join(cost_weights(cost, config.pixel_weight, config.keypoint_weight))


@dataclass
class _PlanSetup:
    """What a plan run needs, loaded and checked before anything is written."""

    config: PlanConfig
    device: Any  # torch.device
    model_run: Any  # visfore.worldmodels.model_run.ModelRun or None
    env_id: str
    env_kwargs: dict[str, Any]
    size: tuple[int, int]  # (H, W) frames
    goal_frame: np.ndarray | None  # (H, W, 3) uint8 from --goal
    make_env: Callable[[], Any]
    low: np.ndarray  # (A,) action bounds after --action-scale
    high: np.ndarray
    threshold: float  # success threshold, metres
    steps: int | None  # actions per episode
    controllers: list[Any]


def _prepare(config: PlanConfig) -> _PlanSetup:
    """Validate the options, load the model run, translator, goal image and controllers,
    and probe the env (action size, bounds, threshold, time limit) -- writing nothing.

    Raises:
        VisforeError: the first problem, one line.
    """
    validate_config(config)  # every option as given, before anything is read
    device = select_device(config.device)
    configure_torch_threads(config.num_threads)
    model_run = load_model_run(config.model, config.checkpoint, device=device) if config.model else None
    latent = bool(getattr(model_run.model, "latent", False)) if model_run is not None else False
    config = validate_config(config, latent=latent)  # the defaults of this model
    if config.imagine == "mode":
        if model_run is None or not hasattr(model_run.model, "prior_mode"):
            name = model_run.model_name if model_run is not None else "no model"
            raise VisforeError(f"--imagine mode needs a stochastic latent model (rssm); got {name}")
        model_run.model.prior_mode = True
    env_id, env_kwargs, size = _resolve_env(config, model_run)
    translator = load_translator(config.translator, device, env_id) if config.translator else None
    goal_frame = load_goal_image(config.goal, size) if config.goal else None
    overrides: dict[str, Any] = {}
    if config.steps is not None:
        overrides["max_episode_steps"] = config.steps
    make_env = functools.partial(make_goal_env, env_id, env_kwargs, size, **overrides)
    probe = make_env()
    try:
        action_dim = int(np.prod(probe.action_space.shape))
        if model_run is not None and action_dim != model_run.action_dim:
            raise VisforeError(f"{env_id} has {action_dim}-dim actions but the model takes {model_run.action_dim}")
        low, high = action_bounds(probe, config.action_scale)
        threshold = float(
            config.success_threshold if config.success_threshold is not None else probe.unwrapped.success_threshold
        )
        steps = config.steps or getattr(probe.spec, "max_episode_steps", None)
    finally:
        probe.close()
    return _PlanSetup(
        config=config,
        device=device,
        model_run=model_run,
        env_id=env_id,
        env_kwargs=env_kwargs,
        size=size,
        goal_frame=goal_frame,
        make_env=make_env,
        low=low,
        high=high,
        threshold=threshold,
        steps=steps,
        controllers=_make_controllers(config, model_run, translator, device),
    )


def _output_dir(config: PlanConfig) -> Path:
    """The report directory (``--out``, ``runs/plan-NAME`` or a new ``runs/plan-<UTC>``),
    created empty.

    Raises:
        VisforeError: it exists and is not empty.
    """
    out = (
        Path(config.out)
        if config.out
        else (runs.resolve_run_dir(COMMAND, name=config.name) if config.name else _default_out())
    )
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise VisforeError(f"output directory {out} already exists and is not empty; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _plural(count: Any, word: str) -> str:
    """``"1 epoch"``, ``"3 epochs"``; a missing count (None) is ``"? epochs"``."""
    if count is None:
        return f"? {word}s"
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _model_budget(model_run: Any) -> str | None:
    """One line on what the forward model was trained on and for how long, e.g.
    ``"convlstm, context 2, trained 1 epoch (no time budget, device cpu) on 12 episodes x
    12 steps (156 frames, policy ...)"``; None without a model."""
    if model_run is None:
        return None
    ds = model_run.config.get("dataset") or {}
    attrs = ds.get("attrs") or {}
    opts = model_run.config.get("options") or {}
    budget = opts.get("time_budget")
    budget_text = "no time budget" if budget is None else f"time budget {float(budget):g} min"
    return (
        f"{model_run.model_name}, context {model_run.context}, trained {_plural(model_run.epoch, 'epoch')} "
        f"({budget_text}, device {opts.get('device')}) on "
        f"{_plural(ds.get('num_episodes'), 'episode')} x {_plural(attrs.get('steps_per_episode'), 'step')} "
        f"({_plural(ds.get('num_rows'), 'frame')}, policy {_json_text(attrs.get('policy'))})"
    )


def _meta(setup: _PlanSetup, out: Path) -> dict[str, Any]:
    """The report's ``meta`` record: model, env, goal, controllers, CEM budget, costs,
    thresholds, seeding, the command line and the package versions."""
    config, model_run = setup.config, setup.model_run
    learned = next((c for c in setup.controllers if hasattr(c, "weights") and hasattr(c, "model_run")), None)
    weights = cost_weights(config.cost, config.pixel_weight, config.keypoint_weight)
    return {
        "command_name": COMMAND,
        "model": str(model_run.run_dir) if model_run is not None else None,
        "model_name": model_run.model_name if model_run is not None else None,
        "checkpoint": model_run.checkpoint if model_run is not None else None,
        "model_budget": _model_budget(model_run),
        "model_supervision": getattr(model_run, "supervision", None) if model_run is not None else None,
        "env_id": setup.env_id,
        "env_kwargs": setup.env_kwargs,
        "frame_size": list(setup.size),
        "goal": str(config.goal) if config.goal else "the env's target pose rendered (render_goal)",
        "controllers": [getattr(c, "name", "?") for c in setup.controllers],
        "model_latent": bool(getattr(model_run.model, "latent", False)) if model_run is not None else None,
        "probe_dim": int(getattr(model_run.model, "probe_dim", 0) or 0) if model_run is not None else None,
        "optimizer": config.optimizer,
        "budget": {
            "optimizer": config.optimizer,
            "iterations": config.iterations,
            "samples": config.samples,
            "elites": config.elites,
            "blocks": config.blocks,
            "repeat": config.repeat,
            "horizon": config.horizon,
            "replan_every": config.replan_every,
            "filter_frames": config.filter_frames,
            "goal_keypoints": config.goal_keypoints,
            "imagine": config.imagine,
            "shrink_horizon": config.shrink_horizon,
            "init_std": config.init_std,
            "min_std": config.min_std,
            "alpha": config.alpha,
            "execute": config.execute,
            "temperature": config.temperature if config.optimizer == "mppi" else None,
            "max_std": config.max_std if config.optimizer == "mppi" else None,
        },  # fmt: skip
        "action_scale": config.action_scale,
        "action_low": setup.low.tolist(),
        "action_high": setup.high.tolist(),
        "cost": "+".join(weights),
        "cost_weights": weights,
        "cost_option": config.cost,
        "keypoint_source": getattr(learned, "keypoint_source", None),
        "state_supervised": "keypoints" in weights and "learned" in config.controllers,
        "cost_frames": config.cost_frames,
        "pixel_weight": config.pixel_weight,
        "keypoint_weight": config.keypoint_weight,
        "pixel_blur": config.pixel_blur,
        "translator": str(config.translator) if config.translator else None,
        "oracle_cost": config.oracle_cost,
        "oracle_cost_resolved": f"{_terms_text(oracle_cost(config), config)} on {config.cost_frames} frame(s)",
        "success_threshold": setup.threshold,
        "extra_thresholds": list(config.extra_thresholds),
        "episodes": config.episodes,
        "steps_per_episode": setup.steps,
        "seed": config.seed,
        "device": str(setup.device),
        "amp": config.amp,
        "torch_threads": torch.get_num_threads(),
        "seeding": SEEDING_SCHEME,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command_line(config, out),
        "versions": provenance.package_versions(),
    }


class _EpisodeLog:
    """The finished episodes, rewritten to ``episodes.json`` (atomically) after each one."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.episodes: list[Any] = []

    def add(self, episode: Any) -> None:
        self.episodes.append(episode)
        runs.write_json(self.path, jsonable([e.to_dict() for e in self.episodes]))


def _run_episodes(setup: _PlanSetup, out: Path, episodes: _EpisodeLog) -> bool:
    """Episode k of every controller, then k + 1 (so an interruption keeps balanced
    episodes); returns True when Ctrl-C ended the loop.

    The progress bar (:func:`~visfore.core.progress.step_progress`) counts control steps:
    its total is episodes x controllers x steps per episode (unknown, so no total, when
    the env has no time limit), it advances after every ``env.step``, and its
    description names the controller and the episode (``episode 2/20``). An episode that
    ends early counts its remaining steps as done.
    """
    config = setup.config
    gif_dir = out / "gifs" if config.gifs else None
    steps = int(setup.steps) if setup.steps else None
    n = config.episodes
    bar = step_progress(config.progress)
    # Without --num-threads, follow the load of other processes while planning runs.
    adaptive = AdaptiveThreads() if config.num_threads is None else None

    def on_step(_k: int, _t: int) -> None:
        bar.advance(task)
        if adaptive is not None:
            adaptive.maybe_adjust()

    try:
        with bar:
            total = n * len(setup.controllers) * steps if steps else None
            task = bar.add_task(f"plan {setup.env_id}", total=total)
            done = 0
            for k in range(n):
                for ctrl in setup.controllers:
                    bar.update(task, description=f"plan {getattr(ctrl, 'name', '?')} episode {k + 1}/{n}")
                    run_goal_episodes(
                        setup.make_env, ctrl, episodes=1, first_episode=k, seed=config.seed,
                        steps=config.steps, success_threshold=setup.threshold, gif_dir=gif_dir,
                        goal_frame=setup.goal_frame, progress=episodes.add,
                        on_step=on_step,
                    )  # fmt: skip
                    if steps:
                        done += steps
                        bar.update(task, completed=done)
    except KeyboardInterrupt:
        return True
    return False


def plan(config: PlanConfig) -> dict[str, Any]:
    """Run ``visfore plan`` (see the module docstring) and write its report.

    Returns:
        ``{"out": Path, "summary": {controller: {...}}, "episodes": [GoalEpisode],
        "files": {name: Path}, "meta": {...}}``.

    Raises:
        VisforeError: bad input, before anything is written.
        KeyboardInterrupt: after writing the report of the finished episodes.
    """
    with restoring_torch_threads():  # the API must not leave the process changed
        return _plan(config)


def _plan(config: PlanConfig) -> dict[str, Any]:
    setup = _prepare(config)
    config = setup.config
    out = _output_dir(config)
    meta = _meta(setup, out)
    runs.write_config(out, {"command": COMMAND, "created": meta["created"], "options": _plain(asdict(config)),
                            "meta": _plain(meta)})  # fmt: skip
    log_ = _EpisodeLog(out / "episodes.json")
    t_start = time.perf_counter()
    interrupted = _run_episodes(setup, out, log_)
    episodes = log_.episodes
    meta["seconds"] = time.perf_counter() - t_start
    meta["interrupted"] = interrupted
    done: dict[str, int] = {}
    for e in episodes:
        done[e.controller] = done.get(e.controller, 0) + 1
    meta["episodes_done"] = min(done.values()) if done else 0
    report = write_report(out, meta, episodes)
    if interrupted:
        # The CLI prints this note on its one "interrupted" line.
        raise KeyboardInterrupt(f"wrote the report of {len(episodes)} finished episodes to {out}")
    return {"out": out, "summary": report["summary"], "episodes": episodes, "files": report["files"], "meta": meta}


def _json_text(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _plain(value: Any) -> Any:
    return jsonable(value)
