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
:class:`~visfore.planning.through_model_training.ThroughModelTask`: a trainer "epoch" is the block of iterations up to the next
validation), one Adam step per iteration:

1. Sample ``B`` start clips from the model's dataset (its training episodes): a random
   window ``o_s .. o_{s+C-1}`` (the model's ``C`` context frames) and the ``C - 1`` actions
   ``a_s .. a_{s+C-2}`` taken between them; and ``B`` random goal frames: any frame of a
   random episode (a reachable pose, rendered like the training frames). Both are pure
   functions of ``(seed, iteration)`` (:func:`~visfore.planning.through_model_training.batch_rng`), so a resumed run draws the same
   batches as an uninterrupted one.
2. Imagine ``--horizon`` ``K`` steps closed-loop (:class:`~visfore.planning.imagination.Imagination`): at step ``k`` the
   policy sees the last frame(s) of the imagined history (true context frames, then the
   model's own predictions), the goal frame and its previous action, and picks ``a_k``;
   the frozen model (eval mode, ``requires_grad=False`` parameters, but differentiable
   operations) predicts the next frame from it. Gradients flow from the loss through
   every prediction back into every action and the policy's weights.
3. Loss (:func:`~visfore.planning.imagination.goal_loss`): pixel MSE between the predicted frame(s) and the goal --
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

**Latent models** (``rssm``, ``jepa``: ``model.latent``, with ``features`` /
``encode_goal`` / ``imagine``) are trained through in their latent space, the analytic
gradients through the latent dynamics of DreamerV1 (Hafner et al. 2020, "Dream to
Control", arXiv:1912.01603) with a goal in place of a reward:

1. the same start clips and goal frames; the start state is ``init_state`` of the
   context frames and actions, the goal is ``encode_goal`` of the goal frame (both
   without gradients);
2. at each of the ``K`` steps the policy (:class:`~visfore.planning.through_model_policy.LatentPolicyNet`,
   an MLP of ``--policy-layers`` x ``--hidden``) maps ``[features(state), goal
   features, previous action]`` to an action in the bounds (tanh scaling) and the frozen
   model steps the latent once (``imagine(state, a (B, 1, A), decode=False)``, carrying
   the ``LatentState``; no frame is decoded):
   :class:`~visfore.planning.imagination.LatentImagination`;
3. the loss (:func:`~visfore.planning.imagination.latent_goal_loss`) is ``--cost``
   (``latent``: squared L2 of the features to the goal's, as ``visfore plan --cost
   latent``; ``keypoints``: the distance in metres of the key points the model's probe
   reads from both, *state-supervised*, so labelled in config.yaml, metrics.json and the
   summary) at the final step or every step (``--loss-steps``), plus the action penalty.

Validation: ``val_goal_cost`` (the final state's weighted cost) decides ``best.pt``;
beside it ``val_goal_latent`` (and ``val_goal_keypoints``) and the start state's costs
``val_start`` (the do-nothing baseline). In the real env the policy filters the real
frames into the latent state each step
(:class:`~visfore.planning.through_model_policy.LatentThroughModelPolicy`).

**Run directory** ``--out``, or ``<out-dir>/train-policy-through-model-<name or UTC
YYYYmmdd-HHMMSS>/`` (the prefix of the runs written before the command was renamed, so
they load and resume alike)::

    config.yaml               every option resolved, the model run, dataset, env, policy net
    checkpoints/last.pt       policy + optimizer + iteration + history (atomic, --resume)
    checkpoints/best.pt       the lowest val_goal_mse so far
    logs/                     TensorBoard scalars (train/loss, val/goal_mse)
    metrics.json              loss curve, validation history, eval summary
    eval/episodes.csv         one row per real-env episode (GoalEpisode.row())

:func:`~visfore.planning.through_model_policy.load_through_model_policy` reads a run back as a :class:`~visfore.planning.through_model_policy.ThroughModelPolicy`, a
:class:`visfore.planning.goal_reaching.GoalController` named ``"through-model"`` (``visfore plan
--policy RUN`` adds it to its comparison).

The imagination is :mod:`visfore.planning.imagination`, the policy and its loading
:mod:`visfore.planning.through_model_policy`, the training loop
:mod:`visfore.planning.through_model_training` and the real-env evaluation
:mod:`visfore.planning.through_model_evaluation`.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import fields
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter

from visfore.core import provenance, runs
from visfore.core.console import stdout_console
from visfore.core.device import parse_device_spec, select_device
from visfore.core.errors import VisforeError
from visfore.core.threads import configure_torch_threads, restoring_torch_threads
from visfore.core.trainer import (
    TrainState,
)
from visfore.data.clips import load_clip_source
from visfore.data.envs import resolve_env_id
from visfore.planning.config import STATE_SUPERVISED, ThroughModelConfig, cost_weights
from visfore.planning.goal_reaching import (
    check_action_scale,
    evaluation_env_kwargs,
    make_goal_env,
    scale_action_box,
)
from visfore.planning.imagination import LATENT_LOSS_TERMS, Imagination, LatentImagination, is_latent_model
from visfore.planning.latent_costs import probe_keypoint_coords
from visfore.planning.through_model_evaluation import EPISODES_CSV, EVAL_DIR, _write_episodes_csv, evaluate_in_env
from visfore.planning.through_model_policy import (
    COMMAND,
    GoalPolicyNet,
    LatentPolicyNet,
    _read_run_config,
    load_through_model_policy,
)
from visfore.planning.through_model_training import (
    ThroughModelTask,
    _fit,
    _initial_state,
    _json_safe,
    _sampler,
    _Setup,
    best_iteration,
)
from visfore.worldmodels.model_run import load_model_run

log = logging.getLogger(__name__)

__all__ = [
    "load_through_model_policy",
    "train_through_model",
    "validate_config",
]

CONFIG_FORMAT = "visfore-train-policy-through-model"
CONFIG_VERSION = 1
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
    _int_at_least("policy-layers", config.policy_layers, 1)
    _positive_float("keypoint-weight", config.keypoint_weight, allow_zero=True)
    if config.cost is not None:
        cost_weights(config.cost, keypoint_weight=config.keypoint_weight)  # the syntax and weights
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
    configure_torch_threads(config.num_threads)
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
    latent, weights, keypoint_coords, supervision = _latent_loss(config, mr)
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
        imagination=LatentImagination(mr.model, mr.context, keypoint_coords)
        if latent
        else Imagination(mr.model, mr.context),
        train_episodes=len(train_eps),
        val_episodes=len(val_eps),
        latent=latent,
        weights=weights,
        supervision=supervision,
    )


def _latent_loss(config: ThroughModelConfig, mr: Any) -> tuple[bool, dict[str, float] | None, int | None, str]:
    """``(latent, weights, keypoint_coords, supervision)`` of the model run: whether it is
    imagined in latent space, the ``--cost`` weights (default ``latent``), ``G`` for a
    keypoints term, and the supervision label (``state-supervised (...)`` when the loss
    reads the probe). Pixel models: ``(False, None, None, "self-supervised")``.

    Raises:
        VisforeError: ``--cost`` with a pixel model, a pixels term with a latent model, a
            keypoints term on a model without a probe, ``--policy-frames`` with a latent
            model (one line each).
    """
    model = mr.model
    where = f"the {mr.model_name} model of {mr.run_dir}"
    if not is_latent_model(model):
        if config.cost is not None:
            raise VisforeError(
                f"--cost is for latent models (rssm, jepa); {where} is a pixel model, trained through with the "
                "pixel MSE (--loss-scales)"
            )
        return False, None, None, "self-supervised"
    if config.policy_frames != 1:
        raise VisforeError(
            f"--policy-frames is for pixel models; {where} is a latent model, whose state already holds the history"
        )
    text = config.cost if config.cost is not None else "latent"
    weights = cost_weights(text, keypoint_weight=config.keypoint_weight)
    other = [t for t in weights if t not in LATENT_LOSS_TERMS]
    if other:
        raise VisforeError(
            f"--cost {text}: {', '.join(other)} needs decoded frames; a latent model is trained through without "
            f"decoding: use {' and/or '.join(LATENT_LOSS_TERMS)}"
        )
    if "keypoints" not in weights:
        return True, weights, None, "self-supervised"
    if int(getattr(model, "probe_dim", 0) or 0) < 1:
        raise VisforeError(
            f"--cost {text} needs a model with a probe (visfore train-model --probe keypoints); {where} has none"
        )
    layout = mr.probe if mr.probe is not None else (mr.config.get("probe") if isinstance(mr.config, dict) else None)
    coords = probe_keypoint_coords(model, None, layout)
    return True, weights, coords, f"{STATE_SUPERVISED} (keypoints cost through the model's probe)"


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
    latent: dict[str, Any] = {}
    if setup.latent:
        latent = {"latent": True, "feature_dim": int(mr.model.feature_dim), "probe": mr.probe is not None}
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
            **latent,
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


def _loss_record(setup: _Setup) -> dict[str, str]:
    """The ``loss`` record of config.yaml."""
    config = setup.config
    steps = "final" if config.loss_steps == "final" else "k/sum(k)-weighted"
    action = {"action": f"{config.action_penalty} * mean((action scaled to [-1, 1])**2)"}
    if not setup.latent:
        return {
            "pixel": f"MSE of the {steps} imagined frame(s) to the goal, averaged over "
            f"{config.loss_scales} 2x avg-pool levels",
            **action,
        }
    weights = setup.weights or {}
    out = {"cost": ",".join(f"{k}={v:g}" for k, v in weights.items())}
    if "latent" in weights:
        out["latent"] = (
            f"{weights['latent']:g} * squared L2 of the {steps} imagined state's features to encode_goal(goal)"
        )
    if "keypoints" in weights:
        out["keypoints"] = (
            f"{weights['keypoints']:g} * distance (m) of the probe's key points of the {steps} imagined state's "
            f"features to those of encode_goal(goal) ({STATE_SUPERVISED})"
        )
    return {**out, **action}


def _write_run_config(setup: _Setup, net: GoalPolicyNet | LatentPolicyNet) -> None:
    """Create the run directory and write its ``config.yaml`` (a new run only)."""
    config = setup.config
    runs.create_run_dir(setup.run_dir)
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
            "loss": _loss_record(setup),
            **({"supervision": setup.supervision} if setup.latent else {}),
            "seeding": "policy init: torch.manual_seed(seed); batch i: numpy.random.default_rng([seed, 0, i]); "
            "validation batch: default_rng([seed, 1, 0]); eval episode k: SeedSequence([eval_seed, k])",
            "runtime": {
                "device": str(setup.device),
                "torch_threads": torch.get_num_threads(),
                "versions": provenance.package_versions(),
            },
        },
    )


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
    best = state.best if math.isfinite(state.best) else None
    if setup.latent:
        start = task.val_start or {}
        measures: dict[str, Any] = {
            "supervision": setup.supervision,
            "cost": setup.weights,
            "val_start": start,
            "val_start_latent": start.get("latent"),
            "best_val_goal_cost": best,
            "best_iteration": best_iteration(validation, "goal_cost"),
            "final_val_goal_cost": validation["goal_cost"][-1],
            "final_val_goal_latent": validation["goal_latent"][-1],
        }
        if "goal_keypoints" in validation:
            measures["final_val_goal_keypoints"] = validation["goal_keypoints"][-1]
    else:
        measures = {
            "val_start_mse": task.val_start_mse,
            "best_val_goal_mse": best,
            "best_iteration": best_iteration(validation),
            "final_val_goal_mse": validation["goal_mse"][-1],
        }
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
        **measures,
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
        ``model`` and ``env`` records, ``session``, ``run_dir``. For a latent model the
        curve has ``latent``, ``final_latent`` (``keypoints``, ``final_keypoints``),
        ``goal_cost`` and ``action``; the validation ``goal_cost``, ``goal_latent``
        (``goal_keypoints``) and ``loss``; in place of the ``*_mse`` entries come
        ``val_start`` (the start states' costs), ``val_start_latent``,
        ``best_val_goal_cost`` / ``best_iteration``, ``final_val_goal_cost``,
        ``final_val_goal_latent``, and ``supervision`` / ``cost``.

    Raises:
        VisforeError: bad options, not a model run, an unusable dataset or env -- all before
            anything is written; an existing run directory without ``--resume``.
        KeyboardInterrupt: after Ctrl-C, once ``checkpoints/last.pt`` is saved (``--resume``
            continues).
    """
    with restoring_torch_threads():  # the API must not leave the process changed
        return _train(config)


def _train(config: ThroughModelConfig) -> dict[str, Any]:
    """The pipeline: prepare (no writes) -> run directory -> train -> evaluate -> metrics."""
    t_begin = time.monotonic()
    setup = _prepare(config)
    config = setup.config
    torch.manual_seed(int(config.seed))
    net: GoalPolicyNet | LatentPolicyNet
    if setup.latent:
        net = LatentPolicyNet(
            feature_dim=int(setup.mr.model.feature_dim),
            action_dim=setup.mr.action_dim,
            action_low=setup.low,
            action_high=setup.high,
            prev_action=config.prev_action,
            hidden=config.hidden,
            layers=config.policy_layers,
        ).to(setup.device)
    else:
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
