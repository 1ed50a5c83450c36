"""``visfore train-policy``: train a TD3, PPO or SAC policy (stable-baselines3) on a visfore env.

Pipeline (:func:`train_policy`):

1. Validate every option, resolve the env id and its keyword arguments, look up the tuned
   hyperparameters and apply the ``--hp`` overrides, build the vectorised envs and the
   model -- all *before* anything is written (bad input is a
   :class:`~visfore.core.errors.VisforeError`: one line, exit 2, nothing on disk touched).
2. Create the run directory and write ``config.yaml`` (every option resolved).
3. Train with ``model.learn``: an :class:`~stable_baselines3.common.callbacks.EvalCallback`
   evaluates the deterministic policy every ``--eval-freq`` env steps on a separate env at
   the nominal body (no randomisation; VecNormalize statistics synced from the training
   env, rewards not normalised) and keeps ``checkpoints/best_model.zip``;
   ``checkpoints/last_model.zip`` is saved every ``--save-freq`` steps and at the end.
   ``--time-budget MINUTES`` stops ``learn`` early (:class:`TimeBudgetCallback`); the run
   is then finished as at ``--timesteps`` (``metrics.json``: ``stopped_by``).
4. Evaluate the final policy deterministically on the nominal env and write
   ``metrics.json``. When the last periodic evaluation was not at the final timestep
   (``--eval-freq`` 0, or not a divisor of the steps done, or ``--eval-freq >=
   --timesteps``), this final evaluation runs through the same ``EvalCallback``
   (:meth:`FinalEvalCallback.evaluate_now`), so ``logs/evaluations.npz`` always exists at
   the end of a finished run and its last row is the evaluation of ``metrics.json``.

**Hyperparameters** (:mod:`visfore.rl.zoo`) come from ``visfore/rl/hyperparams/<algo>.yml``
(td3 and ppo: the RL Baselines3 Zoo's entries, copied verbatim from rl-baselines3-zoo
2.9.2, and visfore's own; sac: visfore's own file): the lookup key is the robot name
derived from the env id (``PerturbHopper-v0`` and ``Hopper-v5`` -> ``Hopper``), mapped to the zoo's
MuJoCo entry (``Hopper-v4``) or, with ``--backend pybullet``, to its PyBullet entry
(``HopperBulletEnv-v0``); then the exact env id; else stable-baselines3's defaults (with a
warning). ``--hyperparams KEY`` names the entry instead. An entry's ``env_kwargs``
(visfore's extension) are env options under ``--env-kwargs`` (the user's value wins); the
merged options are config.yaml's ``env.kwargs``, so evaluate, mimic and ``--resume``
rebuild the same env. ``replay_buffer_class: HerReplayBuffer`` (td3, sac) trains with
hindsight experience replay on a goal-conditioned env (checked up front,
:func:`_check_her`). Zoo conventions are interpreted as the zoo does (``rl_zoo3/exp_manager.py``):
``normalize`` -> :class:`~stable_baselines3.common.vec_env.VecNormalize` (its ``gamma`` set
to the algorithm's), ``noise_type``/``noise_std`` -> action noise, ``lin_<x>`` -> a linear
schedule from ``x`` to 0, ``policy_kwargs`` strings such as
``"dict(net_arch=[400, 300], activation_fn=nn.ReLU)"`` parsed safely (no ``eval``),
``train_freq`` lists -> tuples. ``n_timesteps`` is replaced by ``--timesteps`` and
``policy`` by the one ``--obs-mode`` needs (``MlpPolicy`` / ``CnnPolicy`` /
``MultiInputPolicy``).

**Run directory** ``--out``, else ``<runs-root>/train-policy-<name or UTC YYYYmmdd-HHMMSS>/``::

    config.yaml                       every option, resolved (see _config_record)
    checkpoints/last_model.zip        latest model (periodic and final; --resume reads it)
    checkpoints/vecnormalize.pkl      VecNormalize statistics saved with last_model.zip
    checkpoints/replay_buffer.pkl     replay buffer saved with last_model.zip (TD3, SAC)
    checkpoints/best_model.zip        highest mean evaluation return so far
    checkpoints/best_vecnormalize.pkl VecNormalize statistics saved with best_model.zip
    logs/                             TensorBoard (tb_1/) and EvalCallback's evaluations.npz
                                      (every evaluation, the final one included)
    metrics.json                      final deterministic evaluation on the nominal env

Every checkpoint file is written to a temporary file and renamed (:mod:`visfore.core.runs`), so an
interruption never leaves a truncated file. The training env is *always* wrapped in
``VecNormalize`` (a pass-through with ``norm_obs=False, norm_reward=False`` when the
hyperparameters do not ask for normalisation), so every run has the same layout and
:mod:`visfore.rl.policy_run` applies the saved statistics uniformly. Image observations are
never normalised by VecNormalize (``norm_obs=False`` for ``pixels``,
``norm_obs_keys=["state"]`` for ``state+pixels``); the policy scales pixels to [0, 1].

``--resume`` (with ``--out RUN_DIR``) loads ``last_model.zip`` with its VecNormalize statistics (and replay
buffer), takes every option from ``config.yaml`` and continues up to the run's total
timesteps (``reset_num_timesteps=False``); a larger ``--timesteps`` raises the total. The
first Ctrl-C stops training after the current step, saves ``last_model.zip`` (+ statistics
and replay buffer) and exits with code 130, so ``--resume`` can continue. A
``--time-budget`` given with ``--resume`` limits that session (the saved one does not
carry over).

The options are :class:`visfore.rl.config.PolicyTrainConfig`; the command line is
:mod:`visfore.cli.train_policy`. Training a policy through a learned forward model is
another command (``visfore train-through-model``, :mod:`visfore.planning.through_model`).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import pickle
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from stable_baselines3 import HerReplayBuffer
from stable_baselines3.common.callbacks import BaseCallback, CallbackList, EvalCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.preprocessing import is_image_space, is_image_space_channels_first
from stable_baselines3.common.vec_env import (
    DummyVecEnv,
    SubprocVecEnv,
    VecNormalize,
    VecTransposeImage,
    sync_envs_normalization,
)

import visfore_envs  # noqa: F401  (registers its ids, in spawned env workers too)
from visfore.core import runs
from visfore.core.console import stdout_console
from visfore.core.device import parse_device_spec, select_device
from visfore.core.errors import VisforeError
from visfore.core.interrupt import StopFlag
from visfore.core.provenance import command_line, package_versions
from visfore.core.threads import configure_torch_threads, restoring_torch_threads
from visfore.data.envs import (
    RESERVED_ENV_KWARGS,
    env_creation_error,
    is_visfore_env,
    parse_env_kwargs,
    parse_kwargs,
    resolve_env_id,
)
from visfore.rl.config import RANDOMIZE_PRESETS, PolicyTrainConfig, parse_randomize
from visfore.rl.zoo import (
    ALGOS,
    GOAL_KEYS,
    OFF_POLICY_ALGOS,
    Hyperparameters,
    algo_class,
    build_algo_kwargs,
    hyperparams_file,
    hyperparams_source,
    parse_hp_overrides,
    resolve_hyperparameters,
    robot_name,
)

__all__ = [
    "AfterEvalCallback",
    "FinalEvalCallback",
    "PolicyTrainConfig",
    "RANDOMIZE_PRESETS",
    "RichProgressCallback",
    "SaveBestCallback",
    "SaveLastCallback",
    "StopOnFlagCallback",
    "TimeBudgetCallback",
    "parse_randomize",
    "print_metrics",
    "train_policy",
    "validate_options",
]

log = logging.getLogger(__name__)

COMMAND = "train-policy"
CONFIG_FORMAT = "visfore-train-policy"
CONFIG_VERSION = 1

#: ``--obs-mode`` values and the stable-baselines3 policy each needs.
POLICY_FOR_OBS_MODE: dict[str, str] = {
    "state": "MlpPolicy",
    "pixels": "CnnPolicy",
    "state+pixels": "MultiInputPolicy",
}
#: Smallest frame side NatureCNN (the CnnPolicy / MultiInputPolicy image extractor: 8x8
#: stride 4, 4x4 stride 2, 3x3 stride 1) accepts.
MIN_CNN_SIZE = 36
BACKENDS = ("mujoco", "pybullet")
CHECKPOINT_DIR = "checkpoints"
LAST_MODEL = "last_model.zip"
BEST_MODEL = "best_model.zip"
VECNORMALIZE = "vecnormalize.pkl"
BEST_VECNORMALIZE = "best_vecnormalize.pkl"
REPLAY_BUFFER = "replay_buffer.pkl"
LOGS_DIR = "logs"
TB_LOG_NAME = "tb"
#: Offset of the evaluation env's seed from ``--seed`` (training envs use seed + rank).
EVAL_SEED_OFFSET = 10_000

#: Options that may change on ``--resume`` (they do not change what is trained);
#: ``time_budget`` limits the new session only (none unless given again).
RUNTIME_OPTIONS = ("resume", "device", "progress", "timesteps", "time_budget")
#: ``metrics.json``'s ``stopped_by``: what ended the last session's training.
STOPPED_BY_TIMESTEPS = "timesteps"
STOPPED_BY_TIME_BUDGET = "time budget"
#: Options that only locate the run directory (neither merged nor reported on resume).
LOCATION_OPTIONS = ("out", "name", "runs_root")


# ---------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------
def _at_least(flag: str, value: Any, minimum: int, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if value is None or isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise VisforeError(f"--{flag} must be an integer >= {minimum}, got {value}")


def _check_time_budget(value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
        raise VisforeError(f"--time-budget must be a number of minutes > 0, got {value}")


def validate_options(config: PolicyTrainConfig) -> None:
    """Check option values that need neither the env nor stable-baselines3.

    Raises:
        VisforeError: the first bad option, naming its flag.
    """
    if config.algo is None:
        raise VisforeError(f"--algo is required ({' or '.join(ALGOS)})")
    config.check_choices()  # algo, backend, obs_mode (a config changed after it was built)
    if config.env is None:
        raise VisforeError("--env is required (a visfore id such as PerturbHopper-v0, or a Gymnasium id)")
    if config.timesteps is None:
        raise VisforeError("--timesteps is required (total environment steps)")
    _at_least("timesteps", config.timesteps, 1)
    _check_time_budget(config.time_budget)
    if config.hyperparams is not None and not str(config.hyperparams).strip():
        raise VisforeError("--hyperparams needs the key of an entry of hyperparams/<algo>.yml")
    _at_least("seed", config.seed, 0)
    _at_least("size", config.size, 1)
    if (
        config.obs_mode != "state"
        and config.size < MIN_CNN_SIZE
        and "policy_kwargs" not in parse_hp_overrides(config.hp)
    ):
        raise VisforeError(
            f"--size {config.size} is too small for --obs-mode {config.obs_mode}: the policy's CNN "
            f"(stable-baselines3 NatureCNN) needs frames of at least {MIN_CNN_SIZE}x{MIN_CNN_SIZE} pixels"
        )
    _at_least("n-envs", config.n_envs, 1, allow_none=True)
    _at_least("eval-freq", config.eval_freq, 0)
    _at_least("eval-episodes", config.eval_episodes, 1)
    _at_least("save-freq", config.save_freq, 1, allow_none=True)
    parse_randomize(config.randomize)
    parse_hp_overrides(config.hp)
    parse_device_spec(config.device)


# ---------------------------------------------------------------------------------------
# environments
# ---------------------------------------------------------------------------------------
def make_single_env(env_id: str, **kwargs: Any) -> Any:
    """``gym.make(env_id, **kwargs)`` after importing :mod:`visfore_envs` (so its ids exist
    in spawned worker processes too); a 2-list ``randomize`` becomes a tuple."""
    kwargs = dict(kwargs)
    if isinstance(kwargs.get("randomize"), list):
        kwargs["randomize"] = tuple(kwargs["randomize"])
    return gym.make(env_id, **kwargs)


def env_kwargs_for(
    config: PolicyTrainConfig, *, visfore: bool, entry: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The training env's keyword arguments: the hyperparameter entry's ``env_kwargs``
    (``entry``), then ``--env-kwargs`` over them (the user's value wins for the same key),
    then ``backend`` and ``randomize`` only when given, ``obs_mode``/``width``/``height``
    only for pixel observations (YAML-plain: a range is a 2-list).

    Raises:
        VisforeError: ``--backend``, ``--randomize`` or pixel observations for a
            non-visfore env; an entry's env_kwargs with a key visfore sets itself.
    """
    kwargs: dict[str, Any] = parse_kwargs(
        dict(entry or {}), "the hyperparameter entry's env_kwargs", RESERVED_ENV_KWARGS
    )
    kwargs.update(parse_env_kwargs(dict(config.env_kwargs or {})))
    randomize = parse_randomize(config.randomize)
    if not visfore:
        given = [flag for flag, v in (("--backend", config.backend), ("--randomize", randomize)) if v is not None]
        if config.obs_mode != "state":
            given.append(f"--obs-mode {config.obs_mode}")
        if given:
            raise VisforeError(f"{' and '.join(given)} need a visfore env; {config.env} is a plain Gymnasium env")
    if config.backend is not None:
        kwargs["backend"] = config.backend
    if randomize is not None:
        kwargs["randomize"] = list(randomize) if isinstance(randomize, tuple) else randomize
    if config.obs_mode != "state":
        kwargs.update(obs_mode=config.obs_mode, width=config.size, height=config.size)
    return kwargs


def eval_kwargs_for(env_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The evaluation env's kwargs: the training ones at the nominal body (no
    ``randomize``, no ``perturbation``)."""
    return {k: v for k, v in env_kwargs.items() if k not in ("randomize", "perturbation")}


@dataclass
class _EnvInfo:
    """What :func:`_check_env` learnt from one env."""

    observation_space: Any
    action_space: Any
    max_episode_steps: int | None
    has_compute_reward: bool  #: a goal env (``compute_reward``, as HerReplayBuffer calls it)


def _check_env(env_id: str, kwargs: Mapping[str, Any]) -> _EnvInfo:
    """Create one env to validate the kwargs and read its spaces.

    Raises:
        VisforeError: the env rejects the kwargs, or its action space is not a Box.
    """
    try:
        env = make_single_env(env_id, **kwargs)
    except (TypeError, ValueError, KeyError, ImportError, gym.error.Error) as exc:
        raise env_creation_error(env_id, kwargs, exc) from None
    try:
        info = _EnvInfo(
            env.observation_space,
            env.action_space,
            env.spec.max_episode_steps if env.spec is not None else None,
            callable(getattr(env.unwrapped, "compute_reward", None)),
        )
    finally:
        env.close()
    if not isinstance(info.action_space, gym.spaces.Box):
        raise VisforeError(
            f"{env_id} has a {type(info.action_space).__name__} action space; {', '.join(ALGOS)} here need a Box"
        )
    return info


def _check_her(env_id: str, env: _EnvInfo, algo_kwargs: Mapping[str, Any], n_envs: int) -> None:
    """With ``replay_buffer_class: HerReplayBuffer``: the env must be goal-conditioned (a
    Dict observation with :data:`~visfore.rl.zoo.GOAL_KEYS` and ``compute_reward``), and
    ``learning_starts`` must cover a whole episode of every env (HER samples finished
    episodes only).

    Raises:
        VisforeError: one line, before anything is written.
    """
    if algo_kwargs.get("replay_buffer_class") is not HerReplayBuffer:
        return
    space = env.observation_space
    keys = sorted(space.spaces) if isinstance(space, spaces.Dict) else None
    if keys is None or not set(GOAL_KEYS) <= set(keys) or not env.has_compute_reward:
        has = f"Dict observations {{{', '.join(keys)}}}" if keys is not None else f"{type(space).__name__} observations"
        raise VisforeError(
            f"replay_buffer_class HerReplayBuffer needs a goal-conditioned env (Dict observation with "
            f"{', '.join(GOAL_KEYS)}, and compute_reward); {env_id} has {has}"
            + ("" if env.has_compute_reward else " and no compute_reward")
            + " (visfore key-point envs: --env-kwargs goal_conditioned=true)"
        )
    starts = algo_kwargs.get("learning_starts", 100)  # SB3's default for TD3 and SAC
    if (
        env.max_episode_steps is not None
        and isinstance(starts, (int, float))
        and starts < env.max_episode_steps * n_envs
    ):
        raise VisforeError(
            f"replay_buffer_class HerReplayBuffer samples finished episodes only: learning_starts ({starts}) "
            f"must be at least max_episode_steps x n_envs ({env.max_episode_steps} x {n_envs}) "
            f"(e.g. --hp learning_starts={env.max_episode_steps * n_envs})"
        )


def _make_venv(env_id: str, kwargs: Mapping[str, Any], n_envs: int, seed: int, *, subproc: bool) -> Any:
    vec_cls: type[DummyVecEnv | SubprocVecEnv] = DummyVecEnv
    vec_kwargs: dict[str, Any] | None = None
    if subproc and n_envs > 1:
        vec_cls, vec_kwargs = SubprocVecEnv, {"start_method": "spawn"}
    return make_vec_env(
        functools.partial(make_single_env, env_id),
        n_envs=n_envs,
        seed=seed,
        env_kwargs=dict(kwargs),
        vec_env_cls=vec_cls,
        vec_env_kwargs=vec_kwargs,
    )


def _vecnormalize_options(normalize: Mapping[str, Any], obs_mode: str) -> dict[str, Any]:
    """VecNormalize kwargs for an obs mode: images are never normalised."""
    options = dict(normalize)
    if obs_mode == "pixels":
        options["norm_obs"] = False
    elif obs_mode == "state+pixels" and options.get("norm_obs", False):
        options["norm_obs_keys"] = ["state"]
    return options


def _transpose_images(venv: Any) -> Any:
    """Wrap ``venv`` in :class:`VecTransposeImage` when it has channel-last image
    observations (the test stable-baselines3 applies itself), *before* VecNormalize: then
    ``VecNormalize.get_original_obs()``, which off-policy algorithms store in the replay
    buffer, has the policy's channel-first layout, and training and evaluation envs have
    the same wrapper chain for ``sync_envs_normalization``."""
    space = venv.observation_space
    subspaces = list(space.spaces.values()) if isinstance(space, spaces.Dict) else [space]
    if any(isinstance(s, spaces.Box) and is_image_space(s) and not is_image_space_channels_first(s) for s in subspaces):
        return VecTransposeImage(venv)
    return venv


# ---------------------------------------------------------------------------------------
# atomic saving
# ---------------------------------------------------------------------------------------
def save_model_atomic(model: Any, path: Path) -> None:
    """``model.save`` into a temp file in the same directory, then ``os.replace``."""
    runs.atomic_write(path, lambda f: model.save(f))


def save_vecnormalize_atomic(vec_normalize: Any, path: Path) -> None:
    """Pickle a VecNormalize as ``VecNormalize.save`` does (its ``__getstate__`` drops the
    wrapped env), atomically; :meth:`VecNormalize.load` reads it."""
    runs.atomic_write(path, lambda f: pickle.dump(vec_normalize, f))


def save_replay_buffer_atomic(model: Any, path: Path) -> None:
    """``model.save_replay_buffer`` into a temp file, then ``os.replace``."""
    runs.atomic_write(path, lambda f: model.save_replay_buffer(f))


def _save_last(model: Any, run_dir: Path, algo: str) -> None:
    ckpt = run_dir / CHECKPOINT_DIR
    if algo in OFF_POLICY_ALGOS and getattr(model, "replay_buffer", None) is not None:
        save_replay_buffer_atomic(model, ckpt / REPLAY_BUFFER)
    save_vecnormalize_atomic(model.get_vec_normalize_env(), ckpt / VECNORMALIZE)
    save_model_atomic(model, ckpt / LAST_MODEL)  # last: its presence marks a complete set


def _save_best(model: Any, run_dir: Path) -> None:
    ckpt = run_dir / CHECKPOINT_DIR
    save_vecnormalize_atomic(model.get_vec_normalize_env(), ckpt / BEST_VECNORMALIZE)
    save_model_atomic(model, ckpt / BEST_MODEL)


# ---------------------------------------------------------------------------------------
# callbacks of ``model.learn``
# ---------------------------------------------------------------------------------------
def _eval_parent(callback: BaseCallback) -> EvalCallback:
    """The :class:`EvalCallback` that runs ``callback`` (its ``callback_on_new_best`` or
    ``callback_after_eval``)."""
    parent = callback.parent
    if not isinstance(parent, EvalCallback):
        raise TypeError(f"{type(callback).__name__} must be a child callback of an EvalCallback")
    return parent


class SaveBestCallback(BaseCallback):
    """``callback_on_new_best`` of the :class:`EvalCallback`: saves
    ``checkpoints/best_model.zip`` and its VecNormalize statistics atomically and records
    the new best mean return and its timestep in ``state``.

    Args:
        run_dir: the run directory.
        state: the progress shared with the other callbacks (``best_mean_reward``,
            ``best_timesteps`` are set here).
    """

    def __init__(self, run_dir: Path, state: dict[str, Any]) -> None:
        super().__init__()
        self.run_dir, self.state = run_dir, state

    def _on_step(self) -> bool:
        _save_best(self.model, self.run_dir)
        self.state["best_mean_reward"] = float(_eval_parent(self).best_mean_reward)
        self.state["best_timesteps"] = int(self.model.num_timesteps)
        return True


class AfterEvalCallback(BaseCallback):
    """``callback_after_eval`` of the :class:`EvalCallback`: records the latest evaluation
    (``last_mean_reward``, ``last_eval_timesteps`` in ``state``) for the progress bar."""

    def __init__(self, state: dict[str, Any]) -> None:
        super().__init__()
        self.state = state

    def _on_step(self) -> bool:
        self.state["last_mean_reward"] = float(_eval_parent(self).last_mean_reward)
        self.state["last_eval_timesteps"] = int(self.model.num_timesteps)
        return True


class FinalEvalCallback(EvalCallback):
    """stable-baselines3's :class:`EvalCallback` that can also evaluate on demand
    (:meth:`evaluate_now`): the final evaluation of a run, when the last periodic one was
    not at the final timestep, goes through the same machinery (VecNormalize sync,
    ``evaluate_policy``, ``evaluations.npz``, ``callback_on_new_best``,
    ``callback_after_eval``, the logger), so it is appended to the same file."""

    def last_evaluated_at(self) -> int | None:
        """The timestep of the latest evaluation in ``evaluations.npz`` (None: none yet)."""
        return self.evaluations_timesteps[-1] if self.evaluations_timesteps else None

    def evaluate_now(self, model: Any) -> tuple[list[float], list[int]]:
        """Evaluate ``model`` now, at ``model.num_timesteps``, as a periodic evaluation would.

        Initialises the callback with ``model`` when ``learn`` did not (``--eval-freq 0``,
        or a resumed run that has nothing left to train); a loaded model that never
        trained gets a logger without outputs.

        Returns:
            ``(returns, lengths)``: per-episode undiscounted returns (float) and lengths
            (int, steps) of the ``n_eval_episodes`` episodes.
        """
        if not hasattr(model, "logger"):  # loaded by ALGO.load and never trained: no logger yet
            model.set_logger(Logger(folder=None, output_formats=[]))
        if getattr(self, "model", None) is not model:
            self.init_callback(model)
        self.num_timesteps = int(model.num_timesteps)
        freq, self.eval_freq = self.eval_freq, 1  # EvalCallback evaluates when n_calls % eval_freq == 0
        try:
            self._on_step()
        finally:
            self.eval_freq = freq
        return [float(r) for r in self.evaluations_results[-1]], [int(n) for n in self.evaluations_length[-1]]


class SaveLastCallback(BaseCallback):
    """Saves ``checkpoints/last_model.zip`` (with the VecNormalize statistics and, for an
    off-policy algorithm, the replay buffer) every ``save_freq`` calls, i.e. every
    ``save_freq * n_envs`` env steps.

    Args:
        run_dir: the run directory.
        algo: ``td3``, ``ppo`` or ``sac`` (whether there is a replay buffer to save).
        save_freq: calls of ``_on_step`` between saves (>= 1).
    """

    def __init__(self, run_dir: Path, algo: str, save_freq: int) -> None:
        super().__init__()
        self.run_dir, self.algo, self.save_freq = run_dir, algo, save_freq

    def _on_step(self) -> bool:
        if self.n_calls % self.save_freq == 0:
            _save_last(self.model, self.run_dir, self.algo)
        return True


class StopOnFlagCallback(BaseCallback):
    """Stops ``learn`` after the current step once ``stop.requested`` is set (the first
    Ctrl-C, :class:`~visfore.core.interrupt.StopFlag`)."""

    def __init__(self, stop: StopFlag) -> None:
        super().__init__()
        self.stop = stop

    def _on_step(self) -> bool:
        return not self.stop.requested


class TimeBudgetCallback(BaseCallback):
    """Stops ``learn`` once ``minutes`` of wall-clock time have passed since training
    started (``--time-budget``; None: never). ``time.monotonic`` is read once per call
    (every ``n_envs`` env steps): a negligible cost next to an env step.

    Attributes:
        reached: whether the budget stopped training.
    """

    def __init__(self, minutes: float | None) -> None:
        super().__init__()
        self.minutes = minutes
        self.seconds = None if minutes is None else float(minutes) * 60.0
        self.t0 = time.monotonic()
        self.reached = False

    def _on_training_start(self) -> None:
        self.t0 = time.monotonic()

    def _on_step(self) -> bool:
        if self.seconds is not None and time.monotonic() - self.t0 >= self.seconds:
            self.reached = True
        return not self.reached


class RichProgressCallback(BaseCallback):
    """A rich progress bar over the run's total timesteps: steps done, steps/s and the
    latest evaluation return (from ``state``, see :class:`AfterEvalCallback`).

    Args:
        console: the rich console to draw on.
        total: the run's total timesteps (a resumed run starts part-way).
        state: the progress shared with the evaluation callbacks.
    """

    def __init__(self, console: Console, total: int, state: dict[str, Any]) -> None:
        super().__init__()
        self.console, self.total, self.state = console, total, state
        self.bar: Progress | None = None
        self.task: TaskID | None = None
        self.t0, self.n0 = 0.0, 0

    def _on_training_start(self) -> None:
        self.t0, self.n0 = time.monotonic(), self.model.num_timesteps
        self.bar = Progress(
            TextColumn("steps"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[sps]:.0f} steps/s"),
            TextColumn("eval {task.fields[ev]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
        )
        self.bar.start()
        self.task = self.bar.add_task("train", total=self.total, completed=self.n0, sps=0.0, ev="-")

    def _on_step(self) -> bool:
        if self.bar is not None and self.task is not None:
            if self.n_calls % 16 == 0 or self.model.num_timesteps >= self.total:
                dt = max(time.monotonic() - self.t0, 1e-9)
                ev = self.state.get("last_mean_reward")
                self.bar.update(
                    self.task,
                    completed=min(self.model.num_timesteps, self.total),
                    sps=(self.model.num_timesteps - self.n0) / dt,
                    ev="-" if ev is None else f"{ev:.1f}",
                )
        return True

    def _on_training_end(self) -> None:
        self.close()

    def close(self) -> None:
        """Stop the bar at the timesteps done (idempotent)."""
        if self.bar is not None:
            if self.task is not None:
                self.bar.update(self.task, completed=min(self.model.num_timesteps, self.total))
            self.bar.stop()
            self.bar = None


# ---------------------------------------------------------------------------------------
# the pipeline
# ---------------------------------------------------------------------------------------
def _read_run_config(run_dir: Path) -> dict[str, Any]:
    """config.yaml of a train-policy run directory (see :func:`visfore.core.runs.read_run_config`)."""
    return runs.read_run_config(run_dir, COMMAND, "train-policy run directory")


def _run_dir_of(config: PolicyTrainConfig) -> Path:
    """The run directory: ``--out``, else ``runs_root/train-policy-<name or UTC time>``."""
    return runs.resolve_run_dir(COMMAND, out=config.out, name=config.name, root=config.runs_root)


def _resolve_resume(config: PolicyTrainConfig) -> tuple[PolicyTrainConfig, dict[str, Any], list[str]]:
    """The options of a resumed run (saved ones + runtime options of ``config``), the saved
    config.yaml, and the CLI options that were ignored because the run fixes them."""
    if config.out is None and config.name is None:
        raise VisforeError("--resume needs the run directory: --resume --out RUN_DIR (or --resume RUN_DIR)")
    run_dir = _run_dir_of(config)  # --out, or --name under --runs-root (as train-model)
    saved = _read_run_config(run_dir)
    if not (run_dir / CHECKPOINT_DIR / LAST_MODEL).is_file():
        raise VisforeError(f"cannot resume: {run_dir} has no {CHECKPOINT_DIR}/{LAST_MODEL}; start a new run instead")
    options = {k: v for k, v in saved["options"].items() if k not in ("resume", "out_dir", *LOCATION_OPTIONS)}
    merged, ignored = runs.merge_resumed_options(
        options,
        config.replace(timesteps=None),
        runtime=[k for k in RUNTIME_OPTIONS if k != "timesteps"],
        skip=LOCATION_OPTIONS,
    )
    total = int(saved.get("total_timesteps", merged.timesteps or 0))
    if config.timesteps is not None:
        _at_least("timesteps", config.timesteps, 1)
        if config.timesteps < total:
            ignored.append(f"--timesteps {config.timesteps} (below the run's total {total})")
        total = max(total, config.timesteps)
    return merged.replace(timesteps=total, out=str(run_dir), name=None), saved, ignored


@dataclass
class _Plan:
    """Everything a run needs, resolved and validated before anything is written."""

    config: PolicyTrainConfig
    algo: str  #: ``config.algo``, checked
    run_dir: Path
    saved: dict[str, Any] | None  #: the config.yaml of a resumed run, None for a new one
    ignored: list[str]  #: options a resumed run ignores (warned about)
    env_id: str
    visfore: bool
    env_kwargs: dict[str, Any]
    hyper: Hyperparameters
    n_envs: int
    device: Any
    max_steps: int | None
    algo_kwargs: dict[str, Any]
    vn_options: dict[str, Any]
    policy: str
    subproc: bool
    threads: int = 0
    t_begin: float = field(default_factory=time.monotonic)

    @property
    def resumed(self) -> bool:
        return self.saved is not None

    @property
    def vec_env_name(self) -> str:
        return "SubprocVecEnv(spawn)" if self.subproc else "DummyVecEnv"


def _saved_hyperparameters(saved: Mapping[str, Any]) -> Hyperparameters:
    h = saved["hyperparameters"]
    return Hyperparameters(
        h["zoo_key"],
        h["zoo"],
        h["overrides"],
        h["resolved"],
        int(saved["options"].get("n_envs") or 1),
        dict(h.get("env_kwargs") or {}),  # already in env.kwargs
        str(h.get("selected_by", "env id")),
    )


def _plan(config: PolicyTrainConfig) -> _Plan:
    """Step 1: resolve the options, the env, the hyperparameters and the device; check the
    env once. Nothing is written.

    Raises:
        VisforeError: bad input, an existing run directory without ``--resume``, or a run
            that cannot be resumed.
    """
    t_begin = time.monotonic()
    saved: dict[str, Any] | None = None
    ignored: list[str] = []
    if config.resume:
        config, saved, ignored = _resolve_resume(config)
    validate_options(config)
    assert config.algo is not None and config.env is not None and config.timesteps is not None
    run_dir = _run_dir_of(config)
    if saved is not None:
        env_id, visfore = str(saved["env"]["id"]), bool(saved["env"]["visfore"])
        env_kwargs, hyper = dict(saved["env"]["kwargs"]), _saved_hyperparameters(saved)
    else:
        env_id = resolve_env_id(config.env)
        visfore = is_visfore_env(env_id)
        hyper = resolve_hyperparameters(
            config.algo, env_id, config.backend, parse_hp_overrides(config.hp), config.hyperparams
        )
        env_kwargs = env_kwargs_for(config, visfore=visfore, entry=hyper.env_kwargs)
        if run_dir.exists() or run_dir.is_symlink():
            raise VisforeError(
                f"run directory {run_dir} already exists; continue it with --resume --out {run_dir}, "
                "or choose another --name"
            )
    n_envs = int(config.n_envs or hyper.n_envs)
    device = select_device(config.device)
    try:
        env_info = _check_env(env_id, env_kwargs)
    except VisforeError as exc:
        if not hyper.env_kwargs:
            raise
        # the entry's env options may be what clashes with the user's
        entry = ", ".join(f"{k}={v}" for k, v in hyper.env_kwargs.items())
        raise VisforeError(
            f"{exc} (the hyperparameter entry {hyper.zoo_key} sets {entry}; override with --env-kwargs "
            "or pick another entry with --hyperparams)"
        ) from None
    algo_kwargs, normalize = build_algo_kwargs(config.algo, hyper.resolved, env_info.action_space)
    _check_her(env_id, env_info, algo_kwargs, n_envs)
    policy = POLICY_FOR_OBS_MODE[config.obs_mode]
    if isinstance(env_info.observation_space, gym.spaces.Dict) and policy != "MultiInputPolicy":
        policy = "MultiInputPolicy"
    return _Plan(
        config=config,
        algo=config.algo,
        run_dir=run_dir,
        saved=saved,
        ignored=ignored,
        env_id=env_id,
        visfore=visfore,
        env_kwargs=env_kwargs,
        hyper=hyper,
        n_envs=n_envs,
        device=device,
        max_steps=env_info.max_episode_steps,
        algo_kwargs=algo_kwargs,
        vn_options=_vecnormalize_options(normalize, config.obs_mode),
        policy=policy,
        subproc=config.obs_mode != "state" and n_envs > 1,
        t_begin=t_begin,
    )


def _new_model(plan: _Plan) -> tuple[Any, Any]:
    """Step 2 (new run): the training env (VecNormalize over the vector env) and the model."""
    c = plan.config
    if plan.hyper.zoo_key is None:
        log.warning(
            "no %s hyperparameters for %s in %s; using stable-baselines3 defaults",
            c.algo,
            plan.env_id,
            hyperparams_file(plan.algo),
        )
    raw = _transpose_images(_make_venv(plan.env_id, plan.env_kwargs, plan.n_envs, c.seed, subproc=plan.subproc))
    train_env = VecNormalize(raw, **plan.vn_options)
    try:
        model = algo_class(plan.algo)(
            plan.policy,
            train_env,
            seed=c.seed,
            device=plan.device,
            verbose=0,
            tensorboard_log=str(plan.run_dir / LOGS_DIR),
            **plan.algo_kwargs,
        )
    except (TypeError, ValueError, AssertionError) as exc:
        train_env.close()
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise VisforeError(f"cannot build {c.algo} with these hyperparameters: {text}") from None
    return model, train_env


def _saved_num_timesteps(path: Path) -> int:
    """``num_timesteps`` of a stable-baselines3 ``.zip``, read from its JSON ``data`` entry
    (without loading the model)."""
    with zipfile.ZipFile(path) as archive:
        return int(json.loads(archive.read("data").decode("utf-8"))["num_timesteps"])


def _resumed_model(plan: _Plan) -> tuple[Any, Any]:
    """Step 2 (``--resume``): last_model.zip with its VecNormalize statistics and replay
    buffer; the training envs are reseeded with ``seed + timesteps done``.

    The model is loaded with its training env (a HerReplayBuffer needs the env to be
    built, and gets it again after its buffer is loaded)."""
    c, ckpt_dir = plan.config, plan.run_dir / CHECKPOINT_DIR
    load_errors = (OSError, ValueError, KeyError, RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile)
    try:
        offset = _saved_num_timesteps(ckpt_dir / LAST_MODEL)
    except load_errors as exc:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise VisforeError(f"cannot resume: {ckpt_dir / LAST_MODEL} cannot be loaded ({text})") from None
    if not (ckpt_dir / VECNORMALIZE).is_file():
        raise VisforeError(f"cannot resume: {ckpt_dir / VECNORMALIZE} is missing")
    raw = _transpose_images(
        _make_venv(plan.env_id, plan.env_kwargs, plan.n_envs, c.seed + offset, subproc=plan.subproc)
    )
    train_env = VecNormalize.load(str(ckpt_dir / VECNORMALIZE), raw)
    train_env.training = True
    try:
        model = algo_class(plan.algo).load(
            ckpt_dir / LAST_MODEL, env=train_env, device=plan.device, tensorboard_log=str(plan.run_dir / LOGS_DIR)
        )
    except (*load_errors, AssertionError) as exc:
        train_env.close()
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise VisforeError(f"cannot resume: {ckpt_dir / LAST_MODEL} cannot be loaded ({text})") from None
    model.set_random_seed(c.seed + offset)  # also reseeds train_env (load seeded it with the saved seed)
    if plan.algo in OFF_POLICY_ALGOS and (ckpt_dir / REPLAY_BUFFER).is_file():
        assert isinstance(model, OffPolicyAlgorithm)  # td3, sac
        # A HerReplayBuffer gets the env back here (SB3 does not pickle it) and its last,
        # unfinished episode is closed (SB3's truncate_last_trajectory).
        model.load_replay_buffer(ckpt_dir / REPLAY_BUFFER)
        assert model.replay_buffer is not None  # just loaded
        model.replay_buffer.device = model.device
    return model, train_env


def _make_eval_env(plan: _Plan, train_env: Any) -> Any:
    """The evaluation env: one env at the nominal body, seeded ``seed + 10000``, with the
    training env's observation statistics and unnormalised rewards."""
    raw = _transpose_images(
        _make_venv(plan.env_id, eval_kwargs_for(plan.env_kwargs), 1, plan.config.seed + EVAL_SEED_OFFSET, subproc=False)
    )
    eval_env = VecNormalize(raw, **{**plan.vn_options, "training": False, "norm_reward": False})
    if hasattr(train_env, "obs_rms"):  # only with norm_obs; EvalCallback also syncs a copy
        eval_env.obs_rms = train_env.obs_rms
    return eval_env


def _write_run_dir(plan: _Plan) -> None:
    """Step 3: the first write: a new run directory with config.yaml, or (resume) its
    missing sub-directories and the raised total."""
    c = plan.config
    if plan.saved is None:
        runs.create_run_dir(plan.run_dir)
        runs.write_config(plan.run_dir, _config_record(plan))
        return
    runs.ensure_run_subdirs(plan.run_dir)
    for line in plan.ignored:
        log.warning("--resume: ignored %s", line)
    if int(plan.saved.get("total_timesteps", 0)) != c.timesteps:
        plan.saved["total_timesteps"] = int(c.timesteps or 0)
        plan.saved["options"]["timesteps"] = int(c.timesteps or 0)
        runs.write_config(plan.run_dir, plan.saved)


def _config_record(plan: _Plan) -> dict[str, Any]:
    """The content of config.yaml (every option resolved, env, hyperparameters, runtime)."""
    c, hyper = plan.config, plan.hyper
    options = json.loads(json.dumps(c.to_dict()))
    options["n_envs"] = plan.n_envs
    checkpoints = {
        "last": f"{CHECKPOINT_DIR}/{LAST_MODEL}",
        "best": f"{CHECKPOINT_DIR}/{BEST_MODEL}",
        "vecnormalize": f"{CHECKPOINT_DIR}/{VECNORMALIZE}",
        "best_vecnormalize": f"{CHECKPOINT_DIR}/{BEST_VECNORMALIZE}",
        "replay_buffer": f"{CHECKPOINT_DIR}/{REPLAY_BUFFER}" if c.algo in OFF_POLICY_ALGOS else None,
    }
    return {
        "command": COMMAND,
        "format": CONFIG_FORMAT,
        "version": CONFIG_VERSION,
        "created": runs.utc_timestamp(),
        "run_dir": str(plan.run_dir.resolve()),
        "command_line": command_line(
            COMMAND, c.replace(out=str(plan.run_dir), name=None), exclude=("resume", "runs_root", "name")
        ),
        "options": options,
        "env": {
            "id": plan.env_id,
            "visfore": plan.visfore,
            "robot": robot_name(plan.env_id),
            "kwargs": plan.env_kwargs,
            "eval_kwargs": eval_kwargs_for(plan.env_kwargs),
            "max_episode_steps": plan.max_steps,
            "vec_env": plan.vec_env_name,
            "n_envs": plan.n_envs,
            "seeds": {"train": f"{c.seed} + rank (+ timesteps done, on resume)", "eval": c.seed + EVAL_SEED_OFFSET},
        },
        "algo": c.algo,
        "policy": plan.policy,
        "hyperparameters": {
            "source": hyperparams_source(plan.algo, hyper.zoo_key) if hyper.zoo_key else "stable-baselines3 defaults",
            "zoo_key": hyper.zoo_key,
            "selected_by": hyper.selected,
            "env_kwargs": hyper.env_kwargs,
            "zoo": hyper.zoo,
            "overrides": hyper.overrides,
            "resolved": hyper.resolved,
        },
        "normalize": plan.vn_options,
        "total_timesteps": int(c.timesteps or 0),
        "eval": {
            "freq": c.eval_freq,
            "episodes": c.eval_episodes,
            "deterministic": True,
            "env": "nominal body (training kwargs without randomize)",
        },
        "checkpoints": checkpoints,
        "runtime": {
            "device": str(plan.device),
            "torch_threads": plan.threads,
            "torch_threads_note": "1 for MLP policies on CPU (small nets are faster single-threaded); "
            "torch's default for CNN policies",
            "versions": package_versions(),
            "torch_version": str(torch.__version__),
        },
    }


def _summary(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    return {
        "mean": float(a.mean()),
        "std": float(a.std()),
        "min": float(a.min()),
        "max": float(a.max()),
        "median": float(np.median(a)),
    }


def _restore_eval_history(eval_cb: EvalCallback, log_dir: Path) -> tuple[float, int | None]:
    """Reload ``evaluations.npz`` into the EvalCallback (so a resumed run appends to it and
    keeps the best so far); returns the best mean return (-inf if none) and its timestep."""
    path = log_dir / "evaluations.npz"
    if not path.is_file():
        return -math.inf, None
    with np.load(path) as data:
        eval_cb.evaluations_timesteps = [int(t) for t in data["timesteps"]]
        eval_cb.evaluations_results = [list(map(float, r)) for r in data["results"]]
        eval_cb.evaluations_length = [list(map(int, r)) for r in data["ep_lengths"]]
        # EvalCallback rewrites the file from its lists: keep the is_success history too
        # (key-point envs report it), or a resumed run would save successes for the new
        # evaluations only, misaligned with the timesteps.
        if "successes" in data.files and len(data["successes"]) == len(data["timesteps"]):
            eval_cb.evaluations_successes = [list(map(bool, r)) for r in data["successes"]]
    means = [float(np.mean(r)) for r in eval_cb.evaluations_results]
    if not means:
        return -math.inf, None
    i = int(np.argmax(means))
    return means[i], eval_cb.evaluations_timesteps[i]


def train_policy(config: PolicyTrainConfig | Mapping[str, Any]) -> dict[str, Any]:
    """Train a policy and evaluate it; write a run directory; return the metrics.

    Args:
        config: the options (see :class:`~visfore.rl.config.PolicyTrainConfig`), or a
            mapping of its fields.

    Returns:
        The content of ``metrics.json``: ``return`` and ``length`` summaries (mean, std, min,
        max, median over ``eval_episodes`` deterministic episodes on the nominal env, last
        model) with the per-episode lists, ``best_eval_mean_return``, ``num_timesteps``,
        ``train_seconds``, ``wall_seconds``, ``steps_per_second``, ``run_dir``.

    Raises:
        VisforeError: bad options, env or hyperparameters (before anything is written), an
            existing run directory without ``--resume``, or a run directory that cannot be
            resumed.
        KeyboardInterrupt: after Ctrl-C, once ``last_model.zip`` has been saved.
    """
    if not isinstance(config, PolicyTrainConfig):
        config = PolicyTrainConfig.from_dict(config)
    with restoring_torch_threads():  # the API must not leave the process changed
        return _train_policy(config)


def _train_policy(config: PolicyTrainConfig) -> dict[str, Any]:
    plan = _plan(config)
    if plan.device.type == "cpu":
        # A small MLP runs fastest on one thread (SB3's advice for CPU PPO); a CNN policy
        # gets the cores other processes leave free (visfore.core.threads).
        configure_torch_threads(1 if plan.policy == "MlpPolicy" else None)
    plan.threads = torch.get_num_threads()
    train_env = eval_env = None
    try:
        model, train_env = (_resumed_model if plan.resumed else _new_model)(plan)
        eval_env = _make_eval_env(plan, train_env)
        _write_run_dir(plan)
        return _learn_and_evaluate(plan, model, eval_env)
    finally:
        for env in (train_env, eval_env):
            if env is not None:
                env.close()


@dataclass
class _Progress:
    """What the callbacks report during ``learn`` (best and latest evaluation)."""

    state: dict[str, Any] = field(default_factory=dict)
    eval_cb: FinalEvalCallback | None = None
    best: float = -math.inf
    best_at: int | None = None
    budget: TimeBudgetCallback | None = None

    @property
    def stopped_by(self) -> str:
        """What ended training: :data:`STOPPED_BY_TIME_BUDGET` or :data:`STOPPED_BY_TIMESTEPS`."""
        return STOPPED_BY_TIME_BUDGET if self.budget is not None and self.budget.reached else STOPPED_BY_TIMESTEPS


def _callbacks(
    plan: _Plan, eval_env: Any, stop: StopFlag, console: Console
) -> tuple[list[BaseCallback], _Progress, RichProgressCallback | None]:
    """Step 4a: the callbacks of ``learn``: periodic evaluation (best model), periodic
    last-model saves, Ctrl-C, the time budget, the progress bar. A resumed run restores its evaluation
    history and best-so-far. The evaluation callback exists even with ``--eval-freq 0``
    (then outside ``learn``): the final evaluation may run through it."""
    c, run_dir = plan.config, plan.run_dir
    progress = _Progress()
    log_dir = run_dir / LOGS_DIR
    callbacks: list[BaseCallback] = []
    eval_cb = FinalEvalCallback(
        eval_env,
        callback_on_new_best=SaveBestCallback(run_dir, progress.state),
        callback_after_eval=AfterEvalCallback(progress.state),
        n_eval_episodes=c.eval_episodes,
        eval_freq=max(c.eval_freq // plan.n_envs, 1) if c.eval_freq > 0 else 0,
        log_path=str(log_dir),
        best_model_save_path=None,
        deterministic=True,
        verbose=0,
    )
    if plan.resumed:
        progress.best, progress.best_at = _restore_eval_history(eval_cb, log_dir)
    progress.eval_cb = eval_cb
    if c.eval_freq > 0:
        callbacks.append(eval_cb)
    if plan.resumed:
        prior, prior_at = _best_from_metrics(run_dir)
        if prior > progress.best:  # e.g. the final evaluation of a session before evaluations.npz held it
            progress.best, progress.best_at = prior, prior_at
        eval_cb.best_mean_reward = progress.best  # a new best must beat best_model.zip, wherever it came from
        if math.isfinite(progress.best):
            progress.state["best_mean_reward"], progress.state["best_timesteps"] = progress.best, progress.best_at
    save_every = c.save_freq or c.eval_freq or 10_000
    callbacks.append(SaveLastCallback(run_dir, plan.algo, max(save_every // plan.n_envs, 1)))
    callbacks.append(StopOnFlagCallback(stop))
    if c.time_budget is not None:
        progress.budget = TimeBudgetCallback(c.time_budget)
        callbacks.append(progress.budget)
    bar = None
    if c.progress:
        bar = RichProgressCallback(console, int(c.timesteps or 0), progress.state)
        callbacks.append(bar)
    return callbacks, progress, bar


def _learn(plan: _Plan, model: Any, eval_env: Any, console: Console) -> tuple[float, _Progress]:
    """Step 4b: ``model.learn`` up to the run's total; saves last_model.zip at the end.
    Returns the training seconds and the callbacks' progress.

    Raises:
        KeyboardInterrupt: after Ctrl-C, once last_model.zip is saved.
    """
    c, run_dir = plan.config, plan.run_dir
    total, start_steps = int(c.timesteps or 0), int(model.num_timesteps)
    stop = StopFlag()
    callbacks, progress, bar = _callbacks(plan, eval_env, stop, console)
    if plan.resumed:
        log.info("resuming %s at %d/%d timesteps", run_dir, start_steps, total)
    t_train = time.monotonic()
    if total - start_steps <= 0:
        log.info(
            "%s already has %d/%d timesteps; evaluating only (pass a larger --timesteps to continue)",
            run_dir,
            start_steps,
            total,
        )
        return time.monotonic() - t_train, progress
    try:
        with stop.catch_sigint():
            model.learn(
                total_timesteps=total - start_steps,
                callback=CallbackList(callbacks),
                tb_log_name=TB_LOG_NAME,
                reset_num_timesteps=not plan.resumed,
                progress_bar=False,
            )
    except KeyboardInterrupt:
        stop.requested = True
    finally:
        if bar is not None:
            bar.close()
    _save_last(model, run_dir, plan.algo)
    if progress.budget is not None and progress.budget.reached:
        log.info("time budget of %g min reached at %d/%d timesteps", c.time_budget, model.num_timesteps, total)
    if stop.requested:
        # The CLI prints this note on its one "interrupted" line.
        raise KeyboardInterrupt(
            f"at {model.num_timesteps}/{total} timesteps; saved {run_dir}/{CHECKPOINT_DIR}/{LAST_MODEL}; "
            f"continue with --resume --out {run_dir}"
        )
    return time.monotonic() - t_train, progress


def _final_evaluation(
    plan: _Plan, model: Any, eval_env: Any, progress: _Progress
) -> tuple[list[float], list[int], float]:
    """Step 5a: ``eval_episodes`` deterministic episodes of the last model on the nominal
    env (seed + 10000); keeps it as best_model.zip when it beats the best so far (or
    none exists). Returns (returns, lengths, best mean return).

    When ``evaluations.npz`` has no evaluation at the final timestep, this one runs
    through the evaluation callback (:meth:`FinalEvalCallback.evaluate_now`) and is
    appended to it; else (the last periodic evaluation was at the final timestep) it is
    :func:`~stable_baselines3.common.evaluation.evaluate_policy` alone. Both evaluate the
    same episodes (the env is reseeded first)."""
    c = plan.config
    sync_envs_normalization(model.get_env(), eval_env)
    eval_env.seed(c.seed + EVAL_SEED_OFFSET)
    eval_cb = progress.eval_cb
    if eval_cb is not None and eval_cb.last_evaluated_at() != int(model.num_timesteps):
        returns, lengths = eval_cb.evaluate_now(model)
    else:
        episode_returns, episode_lengths = evaluate_policy(
            model,
            eval_env,
            n_eval_episodes=c.eval_episodes,
            deterministic=True,
            return_episode_rewards=True,
            warn=False,
        )
        # return_episode_rewards=True: per-episode lists, not the (mean, std) floats
        assert isinstance(episode_returns, list) and isinstance(episode_lengths, list)
        returns, lengths = [float(r) for r in episode_returns], [int(n) for n in episode_lengths]
    final_mean = float(np.mean(returns))
    best = progress.best
    if progress.eval_cb is not None:
        best = max(best, float(progress.eval_cb.best_mean_reward))
    best = max(best, float(progress.state.get("best_mean_reward", -math.inf)))
    if final_mean > best or not (plan.run_dir / CHECKPOINT_DIR / BEST_MODEL).is_file():
        _save_best(model, plan.run_dir)
        progress.state["best_mean_reward"], progress.state["best_timesteps"] = final_mean, int(model.num_timesteps)
        best = max(best, final_mean)
    return returns, lengths, best


def _learn_and_evaluate(plan: _Plan, model: Any, eval_env: Any) -> dict[str, Any]:
    """Steps 4-5: train, evaluate, write metrics.json (and print it unless quiet)."""
    c, run_dir = plan.config, plan.run_dir
    console = _console(c.progress)
    start_steps = int(model.num_timesteps)
    train_seconds, progress = _learn(plan, model, eval_env, console)
    returns, lengths, best = _final_evaluation(plan, model, eval_env, progress)
    trained = int(model.num_timesteps) - start_steps
    metrics: dict[str, Any] = {
        "evaluation": f"{c.eval_episodes} deterministic episodes of the last model on the nominal "
        "env (no randomisation), VecNormalize statistics of training, rewards not normalised",
        "env_id": _env_id_of(run_dir),
        "algo": c.algo,
        "episodes": len(returns),
        "return": _summary(returns),
        "length": _summary([float(n) for n in lengths]),
        "returns": returns,
        "lengths": lengths,
        "best_eval_mean_return": best if math.isfinite(best) else None,
        "best_eval_timesteps": progress.state.get("best_timesteps"),
        "num_timesteps": int(model.num_timesteps),
        "total_timesteps": int(c.timesteps or 0),
        "timesteps_this_session": trained,
        "stopped_by": progress.stopped_by,
        "time_budget_minutes": c.time_budget,
        "train_seconds": train_seconds,
        "wall_seconds": time.monotonic() - plan.t_begin,
        "steps_per_second": trained / train_seconds if train_seconds > 0 and trained > 0 else None,
        "resumed": plan.resumed,
        "checkpoint": f"{CHECKPOINT_DIR}/{LAST_MODEL}",
        "run_dir": str(run_dir),
    }
    runs.write_json(run_dir / runs.METRICS_NAME, metrics)
    return metrics


def _env_id_of(run_dir: Path) -> str | None:
    try:
        return str(runs.read_config(run_dir)["env"]["id"])
    except (VisforeError, KeyError, TypeError):
        return None


def _best_from_metrics(run_dir: Path) -> tuple[float, int | None]:
    """Best evaluation of a previous session, from its metrics.json (-inf if none)."""
    try:
        data = json.loads((run_dir / runs.METRICS_NAME).read_text())
        value, at = data["best_eval_mean_return"], data.get("best_eval_timesteps")
        return (float(value), at) if value is not None else (-math.inf, None)
    except (OSError, ValueError, KeyError, TypeError):
        return -math.inf, None


# ---------------------------------------------------------------------------------------
# console output
# ---------------------------------------------------------------------------------------
def _console(enabled: bool) -> Console:
    """The stdout console of the run (silent when not ``enabled``)."""
    return stdout_console(quiet=not enabled, highlight=False)


def print_metrics(metrics: Mapping[str, Any], console: Console | None = None) -> None:
    """Print the final evaluation as a rich table (return and episode length); the std of
    a single episode is undefined and shows as ``n/a``."""
    console = console or stdout_console()
    table = Table(
        title=f"{metrics['algo']} on {metrics['env_id']}: {metrics['episodes']} deterministic episodes, nominal body"
    )
    table.add_column("")
    for col in ("mean", "std", "min", "median", "max"):
        table.add_column(col, justify="right")
    for key in ("return", "length"):
        r = metrics[key]
        table.add_row(
            key,
            *(
                "n/a" if c == "std" and metrics["episodes"] < 2 else f"{r[c]:.1f}"
                for c in ("mean", "std", "min", "median", "max")
            ),
        )
    console.print(table)
    best = metrics["best_eval_mean_return"]
    sps = metrics["steps_per_second"]
    budget = (
        f" (stopped by the time budget of {metrics['time_budget_minutes']:g} min)"
        if metrics.get("stopped_by") == STOPPED_BY_TIME_BUDGET
        else ""
    )
    console.print(
        f"{metrics['num_timesteps']}/{metrics['total_timesteps']} timesteps{budget}; best eval mean return "
        f"{'-' if best is None else f'{best:.1f}'}; trained {metrics['timesteps_this_session']} steps in "
        f"{metrics['train_seconds']:.0f} s" + (f" ({sps:.0f} steps/s)" if sps else "") + f"; run: {metrics['run_dir']}"
    )
