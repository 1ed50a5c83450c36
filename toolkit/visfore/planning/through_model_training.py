"""The training of the through-model policy on :class:`visfore.core.trainer.Trainer`:
batches of start clips and goal frames drawn from the model's dataset
(:func:`batch_rng`, a pure function of ``(seed, iteration)``), :class:`ThroughModelTask`
(one Adam step per iteration through the imagination, validation on a fixed batch,
checkpoints), the callbacks (validating checkpointer, progress bar) and the resumable
loop (:func:`_initial_state`, :func:`_fit`). The pipeline that prepares a run and calls it
is :func:`visfore.planning.through_model.train_through_model`.

A pixel model's validation measure is ``goal_mse`` (the final imagined frame's MSE to the
goal); a latent model's (``setup.latent``) is ``goal_cost``, the final imagined state's
weighted cost (``--cost``) to the goal, with ``goal_latent`` (and ``goal_keypoints``)
beside it (:func:`visfore.planning.imagination.latent_goal_loss`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from visfore.core import runs
from visfore.core.errors import VisforeError
from visfore.core.progress import NoProgress
from visfore.core.threads import adaptive_threads
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
from visfore.planning.config import ThroughModelConfig
from visfore.planning.imagination import Imagination, LatentImagination, goal_loss, latent_goal_loss, latent_start_cost
from visfore.planning.through_model_policy import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    GoalPolicyNet,
    LatentPolicyNet,
    _net_from_state,
    _to_float,
)
from visfore.worldmodels.model_run import sample_seed

log = logging.getLogger(__name__)

__all__ = [
    "ThroughModelTask",
    "batch_rng",
    "best_iteration",
    "total_iterations",
]

#: Default iterations when neither --iterations nor --time-budget is given.
DEFAULT_ITERATIONS = 1000


def total_iterations(config: ThroughModelConfig) -> int | None:
    """The run's iteration target: ``iterations``; else 1000 without a time budget; else
    None (until the budget runs out)."""
    if config.iterations is not None:
        return int(config.iterations)
    return None if config.time_budget is not None else DEFAULT_ITERATIONS


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
    imagination: Imagination | LatentImagination
    train_episodes: int
    val_episodes: int
    latent: bool = False  # imagined in latent space (a LatentImagination)
    weights: dict[str, float] | None = None  # latent: the --cost terms and weights
    supervision: str = "self-supervised"  # "state-supervised (...)" when the loss reads the probe

    @property
    def metric(self) -> str:
        """The validation measure: ``goal_mse`` (pixel models) or ``goal_cost`` (latent)."""
        return "goal_cost" if self.latent else "goal_mse"

    @property
    def curve_keys(self) -> tuple[str, ...]:
        """The per-iteration parts of the loss curve (besides ``iteration`` and ``loss``)."""
        if not self.latent:
            return ("pixel", "final_mse", "action")
        kp = ("keypoints", "final_keypoints") if "keypoints" in (self.weights or {}) else ()
        return ("latent", "final_latent", *kp, "goal_cost", "action")

    @property
    def validation_keys(self) -> tuple[str, ...]:
        """The validation history's measures (besides ``iteration`` and ``loss``)."""
        if not self.latent:
            return ("goal_mse",)
        kp = ("goal_keypoints",) if "keypoints" in (self.weights or {}) else ()
        return ("goal_cost", "goal_latent", *kp)


class ThroughModelTask(TrainTask):
    """The through-model policy's steps for :class:`visfore.core.trainer.Trainer`.

    One trainer "epoch" is a block of iterations ending at the next multiple of
    ``--val-every`` (or at the iteration target); its end validates on the fixed
    validation batch. A batch is the iteration number ``i``: the start clips and goals of
    iteration ``i`` are drawn from ``batch_rng(seed, i)``, so a resumed run trains on the
    same batches. The loss curve and the validation history live in
    ``TrainState.extra["curve"]`` / ``["validation"]`` (saved in every checkpoint).

    Args:
        setup: the loaded run (:func:`visfore.planning.through_model._prepare`).
        net, optimizer: the policy and its Adam optimiser.
        writer: a TensorBoard ``SummaryWriter`` (for ``val/goal_mse``).
    """

    def __init__(
        self, setup: _Setup, net: GoalPolicyNet | LatentPolicyNet, optimizer: torch.optim.Optimizer, writer: Any
    ) -> None:
        self.setup, self.config, self.net, self.optimizer, self.writer = setup, setup.config, net, optimizer, writer
        self.metric = setup.metric
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
        #: latent models: the costs of the validation start states to their goals
        #: (``latent``, ``keypoints``, ``goal_cost``; the do-nothing baseline), else None.
        self.val_start: dict[str, float] | None = None
        if isinstance(setup.imagination, LatentImagination):
            imagination = setup.imagination
            with sample_seed(self.config.seed if setup.mr.stochastic else None, device):
                _, start, goal = imagination.begin(*self.val_batch)
                goal_kp = imagination.goal_keypoints(self.val_batch[2]) if self._keypoints() else None
            self.val_start = latent_start_cost(start, goal, self._weights(), self._keypoints(), goal_kp)

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
    def _weights(self) -> dict[str, float]:
        return dict(self.setup.weights or {"latent": 1.0})

    def _keypoints(self) -> Any:
        imagination = self.setup.imagination
        if isinstance(imagination, LatentImagination) and imagination.keypoint_coords:
            return imagination.keypoints
        return None

    def _loss(
        self, frames0: torch.Tensor, actions0: torch.Tensor, goal: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        c = self.config
        imagination = self.setup.imagination
        if isinstance(imagination, LatentImagination):
            rollout = imagination.rollout(self.net, frames0, actions0, goal, c.horizon)
            return latent_goal_loss(
                rollout,
                self.net.scale_action(rollout.actions),
                weights=self._weights(),
                steps=c.loss_steps,
                action_penalty=c.action_penalty,
                keypoints=self._keypoints(),
            )
        preds, acts = imagination.rollout(self.net, frames0, actions0, goal, c.horizon, frames=c.policy_frames)
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
        for key in self.setup.curve_keys:
            curve[key].append(parts[key])
        if self.setup.latent:
            scalars = {"train/final_latent": parts["final_latent"], "train/goal_cost": parts["goal_cost"]}
        else:
            scalars = {"train/final_mse": parts["final_mse"]}
        return StepResult(loss=value, samples=int(c.batch_size), scalars=scalars)

    # -- validation and checkpoints ---------------------------------------------------------
    def validate(self, state: TrainState) -> dict[str, float]:
        """Imagine the fixed validation batch (no gradients) at ``state.global_step``;
        appends to ``state.extra["validation"]`` and returns ``val_goal_mse`` (full-resolution
        MSE of the final imagined frame to the goal) and ``val_loss`` -- for a latent model
        ``val_goal_cost`` (the final imagined state's weighted cost), ``val_goal_latent``
        (its latent distance), ``val_goal_keypoints`` (with a keypoints term) and
        ``val_loss``."""
        self.net.eval()
        with torch.no_grad(), sample_seed(self.config.seed if self.setup.mr.stochastic else None, self.setup.device):
            loss, parts = self._loss(*self.val_batch)
        self.net.train()
        if self.setup.latent:
            measures = {"goal_cost": parts["goal_cost"], "goal_latent": parts["final_latent"]}
            if "final_keypoints" in parts:
                measures["goal_keypoints"] = parts["final_keypoints"]
        else:
            measures = {"goal_mse": parts["final_mse"]}
        validation = state.extra["validation"]
        validation["iteration"].append(state.global_step)
        for key, value in measures.items():
            validation[key].append(value)
        validation["loss"].append(float(loss))
        if self.writer is not None:
            for key, value in measures.items():
                self.writer.add_scalar(f"val/{key}", value, state.global_step)
        return {**{f"val_{k}": v for k, v in measures.items()}, "val_loss": float(loss)}

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
            f"best_val_{self.metric}": state.best if math.isfinite(state.best) else None,
            "best_iteration": best_iteration(state.extra["validation"], self.metric),
            "rng": {"torch": torch.get_rng_state()},
            "config": _json_safe(self.config.to_dict()),
        }
        for path in paths:
            runs.save_checkpoint(path, checkpoint)


def best_iteration(validation: Mapping[str, Sequence[float]], metric: str = "goal_mse") -> int | None:
    """The iteration of the lowest validation ``metric`` (goal MSE; the first one on ties),
    or None."""
    values = list(validation.get(metric) or [])
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
        if record[f"val_{task.metric}"] < state.best:
            state.best = float(record[f"val_{task.metric}"])
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

    def __init__(self, console: Any, enabled: bool, total: int | None, metric: str = "goal_mse") -> None:
        self.console, self.enabled, self.total, self.metric = console, enabled, total, metric
        self.bar: Any = NoProgress(console)
        self.task_id: Any = 0

    def context(self) -> Any:
        if self.enabled:
            self.bar = Progress(
                TextColumn("iterations"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]:.5f}"),
                TextColumn(
                    ("val goal MSE" if self.metric == "goal_mse" else "val goal cost") + " {task.fields[val]:.5f}"
                ),
                TimeElapsedColumn(),
                console=self.console,
            )
        return self.bar

    def on_train_start(self, trainer: Trainer, state: TrainState) -> None:
        goal = state.extra["validation"][self.metric]
        self.task_id = self.bar.add_task(
            "train",
            total=self.total,
            completed=state.global_step,
            loss=math.nan,
            val=goal[-1] if goal else math.nan,
        )

    def on_step_end(self, trainer: Trainer, state: TrainState, result: StepResult) -> None:
        self.bar.update(
            self.task_id, completed=state.global_step, loss=result.loss, val=state.extra["validation"][self.metric][-1]
        )


def _initial_state(setup: _Setup, net: GoalPolicyNet | LatentPolicyNet, optimizer: torch.optim.Optimizer) -> TrainState:
    """A fresh :class:`TrainState`, or (``--resume``) the one of ``checkpoints/last.pt``
    with the policy, the optimiser and torch's RNG restored. Every checkpoint is taken at
    a validated iteration, so a resumed run starts a new block there (``epoch_step`` 0)."""
    empty: dict[str, dict[str, list[float]]] = {
        "curve": {"iteration": [], "loss": [], **{k: [] for k in setup.curve_keys}},
        "validation": {"iteration": [], **{k: [] for k in setup.validation_keys}, "loss": []},
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
    best = ckpt.get(f"best_val_{setup.metric}")
    return TrainState(
        epoch=max(0, len(validation["iteration"]) - 1),
        global_step=int(ckpt["iteration"]),
        train_seconds=float(ckpt.get("train_seconds", 0.0)),
        best=float(best) if best is not None else math.inf,
        extra={"curve": {k: list(v) for k, v in history["curve"].items()}, "validation": validation},
    )


def _resume_target(setup: _Setup, task: ThroughModelTask, state: TrainState) -> None:
    """On ``--resume``: one line when the iteration target is not above the iterations
    done (nothing to train; the run is only evaluated again), else, when ``--iterations``
    set a new target, ``config.yaml`` rewritten (atomically) with it in
    ``options.iterations`` and the change appended to ``targets``, so a later
    ``--resume`` without ``--iterations`` keeps it."""
    if setup.saved is None:
        return
    done = state.global_step
    options = setup.saved.get("options")
    saved = options.get("iterations") if isinstance(options, dict) else None
    if task.blocks_left(done) == 0:
        if setup.config.iterations != saved:
            log.warning(
                "--iterations %s: %s has already done %d iterations; nothing to train, evaluating only "
                "(pass --iterations above %d to train on)",
                setup.config.iterations,
                setup.run_dir,
                done,
                done,
            )
        else:
            log.info(
                "%s already finished %d/%s iterations; nothing to train, evaluating only "
                "(pass --iterations above %d to train on)",
                setup.run_dir,
                done,
                task.total,
                done,
            )
        return
    if not isinstance(options, dict) or saved == setup.config.iterations:
        return
    record = dict(setup.saved)
    record["options"] = dict(options, iterations=setup.config.iterations)
    record["targets"] = [
        *(setup.saved.get("targets") or []),
        {
            "iterations": setup.config.iterations,
            "previous_iterations": saved,
            "from_iteration": done,
            "at": runs.utc_timestamp(),
        },
    ]
    runs.write_config(setup.run_dir, record)
    log.info("%s: new target %s iterations (was %s)", setup.run_dir, setup.config.iterations, saved)


def _fit(setup: _Setup, task: ThroughModelTask, state: TrainState, writer: Any, console: Any) -> TrainState:
    """Validate the starting point (iteration 0, or a resumed run without validations),
    then train to the iteration target or the time budget (:class:`Trainer`). On
    ``--resume`` the target is ``--iterations`` when given (a larger one trains on; one
    not above the iterations done trains nothing, :func:`_resume_target`).

    Raises:
        KeyboardInterrupt: after Ctrl-C, once ``checkpoints/last.pt`` holds the position;
            its message says where and how to continue (the CLI prints it on its one
            ``interrupted`` line).
    """
    config = setup.config
    checkpointer = _ValidatingCheckpointer(
        runs.last_checkpoint_path(setup.run_dir), runs.best_checkpoint_path(setup.run_dir), monitor=f"val_{task.metric}"
    )
    _resume_target(setup, task, state)
    if not state.extra["validation"]["iteration"]:
        checkpointer.save_validated(task, state)  # the untrained baseline
    callbacks = [
        StopOnInterrupt(),
        *adaptive_threads(config.num_threads, setup.device),
        TimeBudget(config.time_budget),
        TensorBoardLogger(writer),
        checkpointer,
        _IterationBar(console, config.progress, task.total, task.metric),
    ]
    trainer = Trainer(task, epochs=state.epoch + task.blocks_left(state.global_step), callbacks=callbacks)
    try:
        trainer.fit(state)
    except KeyboardInterrupt as exc:
        if state.extra["validation"]["iteration"][-1] != state.global_step:  # a second Ctrl-C inside a step
            checkpointer.save_validated(task, state)
        raise KeyboardInterrupt(
            f"at iteration {state.global_step}; saved {runs.last_checkpoint_path(setup.run_dir)}; "
            f"continue with --resume --out {setup.run_dir}"
        ) from exc
    return state
