"""``visfore train-policy``: train a TD3 or PPO policy (stable-baselines3) on a visfore env.

Pipeline (:func:`train_policy`; the Typer command :func:`train_policy_command` is a thin
wrapper):

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
4. Evaluate the final policy deterministically on the nominal env and write
   ``metrics.json``.

**Hyperparameters** (:mod:`visfore.rl.zoo`) come from the RL Baselines3 Zoo (``visfore/hyperparams/{td3,ppo}.yml``,
copied verbatim from rl-baselines3-zoo 2.9.2): the lookup key is the robot name derived from
the env id (``PerturbHopper-v0`` and ``Hopper-v5`` -> ``Hopper``), mapped to the zoo's
MuJoCo entry (``Hopper-v4``) or, with ``--backend pybullet``, to its PyBullet entry
(``HopperBulletEnv-v0``); then the exact env id; else stable-baselines3's defaults (with a
warning). Zoo conventions are interpreted as the zoo does (``rl_zoo3/exp_manager.py``):
``normalize`` -> :class:`~stable_baselines3.common.vec_env.VecNormalize` (its ``gamma`` set
to the algorithm's), ``noise_type``/``noise_std`` -> action noise, ``lin_<x>`` -> a linear
schedule from ``x`` to 0, ``policy_kwargs`` strings such as
``"dict(net_arch=[400, 300], activation_fn=nn.ReLU)"`` parsed safely (no ``eval``),
``train_freq`` lists -> tuples. ``n_timesteps`` is replaced by ``--timesteps`` and
``policy`` by the one ``--obs-mode`` needs (``MlpPolicy`` / ``CnnPolicy`` /
``MultiInputPolicy``).

**Run directory** ``<out-dir>/train-policy-<name or UTC YYYYmmdd-HHMMSS>/``::

    config.yaml                       every option, resolved (see _config_record)
    checkpoints/last_model.zip        latest model (periodic and final; --resume reads it)
    checkpoints/vecnormalize.pkl      VecNormalize statistics saved with last_model.zip
    checkpoints/replay_buffer.pkl     replay buffer saved with last_model.zip (TD3 only)
    checkpoints/best_model.zip        highest mean evaluation return so far
    checkpoints/best_vecnormalize.pkl VecNormalize statistics saved with best_model.zip
    logs/                             TensorBoard (tb_1/) and EvalCallback's evaluations.npz
    metrics.json                      final deterministic evaluation on the nominal env

Every checkpoint file is written to a temporary file and renamed (:mod:`visfore.core.runs`), so an
interruption never leaves a truncated file. The training env is *always* wrapped in
``VecNormalize`` (a pass-through with ``norm_obs=False, norm_reward=False`` when the
hyperparameters do not ask for normalisation), so every run has the same layout and
:mod:`visfore.rl.policy_run` applies the saved statistics uniformly. Image observations are
never normalised by VecNormalize (``norm_obs=False`` for ``pixels``,
``norm_obs_keys=["state"]`` for ``state+pixels``); the policy scales pixels to [0, 1].

``--resume RUN_DIR`` loads ``last_model.zip`` with its VecNormalize statistics (and replay
buffer), takes every option from ``config.yaml`` and continues up to the run's total
timesteps (``reset_num_timesteps=False``); a larger ``--timesteps`` raises the total. The
first Ctrl-C stops training after the current step, saves ``last_model.zip`` (+ statistics
and replay buffer) and exits with code 130, so ``--resume`` can continue.

stable-baselines3, torch and gymnasium are imported inside functions so ``visfore --help``
stays fast.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
import json
import math
import pickle
import re
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Mapping, Optional

import numpy as np
import typer

from visfore.core.console import stdout_console
from visfore.core import runs
from visfore.cli.errors import handle_errors  # moves with the command into visfore.cli
from visfore.core.errors import VisforeError
from visfore.rl.zoo import (
    ALGOS,
    Hyperparameters,
    OFF_POLICY_ALGOS,
    ZOO_SOURCE,
    _algo_class,
    build_algo_kwargs,
    parse_hp_overrides,
    resolve_hyperparameters,
    robot_name,
)

COMMAND = "train-policy"
CONFIG_FORMAT = "visfore-train-policy"
CONFIG_VERSION = 1

#: ``--obs-mode`` values and the stable-baselines3 policy each needs.
POLICY_FOR_OBS_MODE: dict[str, str] = {
    "state": "MlpPolicy",
    "pixels": "CnnPolicy",
    "state+pixels": "MultiInputPolicy",
}
#: Randomisation presets of the locomotion envs (``--randomize NAME``).
RANDOMIZE_PRESETS = ("default", "random", "extreme")
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

#: Options that may change on ``--resume`` (they do not change what is trained).
RUNTIME_OPTIONS = ("resume", "device", "progress", "timesteps")


# ---------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------
@dataclass
class PolicyTrainConfig:
    """Every option of ``visfore train-policy`` (CLI flag = field name with dashes).

    Attributes:
        env: a visfore id (``PerturbHopper-v0``, ...), a short name of :mod:`visfore.data.envs`,
            or any registered Gymnasium id (e.g. ``Hopper-v5``, ``Pendulum-v1``).
        algo: ``td3`` or ``ppo``.
        timesteps: total environment steps (replaces the zoo's ``n_timesteps``); required
            for a new run; on ``--resume`` it may raise the run's total.
        seed: seeds the model, the training envs (``seed + rank``) and the evaluation env
            (``seed + 10000``).
        backend: ``mujoco`` or ``pybullet`` (visfore locomotion envs; None = env default).
        randomize: body randomisation during training: a preset (``default``, ``random``,
            ``extreme``) or a scale range ``LOW-HIGH`` applied to every body-part length
            and width (e.g. ``0.8-1.2``). None = nominal body. Evaluation is always nominal.
        obs_mode: ``state``, ``pixels`` or ``state+pixels`` (visfore envs only for pixels).
        size: frame width and height in pixels (pixel observation modes only).
        n_envs: parallel training envs (None = the zoo's ``n_envs``, else 1).
        hp: ``key=value`` hyperparameter overrides (values parsed as YAML).
        eval_freq: evaluate every this many env steps (0 = only the final evaluation).
        eval_episodes: episodes per evaluation (periodic and final).
        save_freq: save ``last_model.zip`` every this many env steps (None = eval_freq,
            or 10000 when eval_freq is 0).
        name / out_dir: run directory ``out_dir/train-policy-<name or UTC timestamp>``.
        resume: run directory to continue (options then come from its config.yaml).
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``.
        progress: show the rich progress bar and the summary.
        env_kwargs: extra ``gymnasium.make`` keyword arguments of the training and
            evaluation envs (``--env-kwargs``, parsed by :func:`visfore.data.envs.parse_env_kwargs`),
            e.g. ``{"potential_shaping": true}``; applied before the options above.
    """

    env: Optional[str] = None
    algo: Optional[str] = None
    timesteps: Optional[int] = None
    seed: int = 0
    backend: Optional[str] = None
    randomize: Optional[str] = None
    obs_mode: str = "state"
    size: int = 64
    n_envs: Optional[int] = None
    hp: list[str] = field(default_factory=list)
    eval_freq: int = 10_000
    eval_episodes: int = 5
    save_freq: Optional[int] = None
    name: Optional[str] = None
    out_dir: str = str(runs.DEFAULT_RUNS_ROOT)
    resume: Optional[str] = None
    device: str = "auto"
    progress: bool = True
    env_kwargs: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain-typed dict of every field (YAML/JSON-safe)."""
        return dataclasses.asdict(self)


def _at_least(flag: str, value: Any, minimum: int, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if value is None or isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise VisforeError(f"--{flag} must be an integer >= {minimum}, got {value}")


def validate_options(config: PolicyTrainConfig) -> None:
    """Check option values that need neither the env nor stable-baselines3.

    Raises:
        VisforeError: the first bad option, naming its flag.
    """
    if config.algo is None:
        raise VisforeError(f"--algo is required ({' or '.join(ALGOS)})")
    if config.algo not in ALGOS:
        raise VisforeError(f"unknown algo {config.algo!r}; valid: {', '.join(ALGOS)}")
    if config.env is None:
        raise VisforeError("--env is required (a visfore id such as PerturbHopper-v0, or a Gymnasium id)")
    if config.timesteps is None:
        raise VisforeError("--timesteps is required (total environment steps)")
    _at_least("timesteps", config.timesteps, 1)
    _at_least("seed", config.seed, 0)
    _at_least("size", config.size, 1)
    _at_least("n-envs", config.n_envs, 1, allow_none=True)
    _at_least("eval-freq", config.eval_freq, 0)
    _at_least("eval-episodes", config.eval_episodes, 1)
    _at_least("save-freq", config.save_freq, 1, allow_none=True)
    if config.obs_mode not in POLICY_FOR_OBS_MODE:
        raise VisforeError(
            f"unknown obs mode {config.obs_mode!r}; valid: {', '.join(POLICY_FOR_OBS_MODE)}"
        )
    if config.backend is not None and config.backend not in BACKENDS:
        raise VisforeError(f"unknown backend {config.backend!r}; valid: {', '.join(BACKENDS)}")
    parse_randomize(config.randomize)
    parse_hp_overrides(config.hp)
    from visfore.worldmodels.train_model import _parse_device_spec

    _parse_device_spec(config.device)


# ---------------------------------------------------------------------------------------
# parsing: --randomize, --hp, policy_kwargs, schedules
# ---------------------------------------------------------------------------------------
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_RANGE_RE = re.compile(rf"^\s*({_NUMBER})\s*(?:-|:|,|\.\.)\s*({_NUMBER})\s*$")


def parse_randomize(text: str | None) -> str | tuple[float, float] | None:
    """Parse ``--randomize``: a preset name or a ``LOW-HIGH`` scale range.

    Args:
        text: ``None``; one of :data:`RANDOMIZE_PRESETS`; or two positive numbers
            ``LOW-HIGH`` (also ``LOW:HIGH``, ``LOW,HIGH``), ``0 < LOW <= HIGH``, the range
            of the uniform scale drawn per episode for every body-part length and width.

    Returns:
        None, the preset name, or ``(low, high)``.

    Raises:
        VisforeError: anything else.
    """
    if text is None:
        return None
    key = str(text).strip()
    if key.lower() in RANDOMIZE_PRESETS:
        return key.lower()
    match = _RANGE_RE.match(key)
    if match:
        low, high = float(match.group(1)), float(match.group(2))
        if 0.0 < low <= high and math.isfinite(high):
            return (low, high)
    raise VisforeError(
        f"--randomize {text!r} is neither a preset ({', '.join(RANDOMIZE_PRESETS)}) nor a "
        "scale range LOW-HIGH with 0 < LOW <= HIGH (e.g. 0.8-1.2)"
    )


# ---------------------------------------------------------------------------------------
# environments
# ---------------------------------------------------------------------------------------
def make_single_env(env_id: str, **kwargs: Any) -> Any:
    """``gym.make(env_id, **kwargs)`` after importing :mod:`visfore_envs` (so its ids exist
    in spawned worker processes too); a 2-list ``randomize`` becomes a tuple."""
    import gymnasium as gym

    try:
        import visfore_envs  # noqa: F401  (registers the ids)
    except ImportError:  # pragma: no cover - the toolkit depends on it
        pass
    kwargs = dict(kwargs)
    if isinstance(kwargs.get("randomize"), list):
        kwargs["randomize"] = tuple(kwargs["randomize"])
    return gym.make(env_id, **kwargs)


def env_kwargs_for(config: PolicyTrainConfig, *, visfore: bool) -> dict[str, Any]:
    """The training env's keyword arguments: ``backend`` and ``randomize`` only when given,
    ``obs_mode``/``width``/``height`` only for pixel observations (YAML-plain: a range is a
    2-list).

    Raises:
        VisforeError: ``--backend``, ``--randomize`` or pixel observations for a
            non-visfore env.
    """
    from visfore.data.envs import parse_env_kwargs

    kwargs: dict[str, Any] = parse_env_kwargs(dict(config.env_kwargs or {}))
    randomize = parse_randomize(config.randomize)
    if not visfore:
        given = [flag for flag, v in (("--backend", config.backend), ("--randomize", randomize)) if v is not None]
        if config.obs_mode != "state":
            given.append(f"--obs-mode {config.obs_mode}")
        if given:
            raise VisforeError(
                f"{' and '.join(given)} need a visfore env; {config.env} is a plain Gymnasium env"
            )
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


def _env_error(env_id: str, kwargs: Mapping[str, Any], exc: BaseException) -> VisforeError:
    message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    message = message.split(" was raised from the environment creator")[0]
    return VisforeError(f"cannot create {env_id} with {json.dumps(dict(kwargs))}: {message}")


def _check_env(env_id: str, kwargs: Mapping[str, Any]) -> tuple[Any, Any, int | None]:
    """Create one env to validate the kwargs; returns (observation_space, action_space,
    max_episode_steps).

    Raises:
        VisforeError: the env rejects the kwargs, or its action space is not a Box.
    """
    import gymnasium as gym

    try:
        env = make_single_env(env_id, **kwargs)
    except (TypeError, ValueError, KeyError, ImportError, gym.error.Error) as exc:
        raise _env_error(env_id, kwargs, exc) from None
    try:
        obs_space, act_space = env.observation_space, env.action_space
        max_steps = env.spec.max_episode_steps if env.spec is not None else None
    finally:
        env.close()
    if not isinstance(act_space, gym.spaces.Box):
        raise VisforeError(f"{env_id} has a {type(act_space).__name__} action space; td3 and ppo here need a Box")
    return obs_space, act_space, max_steps


def _make_venv(env_id: str, kwargs: Mapping[str, Any], n_envs: int, seed: int, *, subproc: bool) -> Any:
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    vec_cls, vec_kwargs = DummyVecEnv, None
    if subproc and n_envs > 1:
        vec_cls, vec_kwargs = SubprocVecEnv, {"start_method": "spawn"}
    return make_vec_env(
        functools.partial(make_single_env, env_id), n_envs=n_envs, seed=seed,
        env_kwargs=dict(kwargs), vec_env_cls=vec_cls, vec_env_kwargs=vec_kwargs,
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
    from gymnasium import spaces
    from stable_baselines3.common.preprocessing import is_image_space, is_image_space_channels_first
    from stable_baselines3.common.vec_env import VecTransposeImage

    space = venv.observation_space
    subspaces = list(space.spaces.values()) if isinstance(space, spaces.Dict) else [space]
    if any(is_image_space(s) and not is_image_space_channels_first(s) for s in subspaces):
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
# callbacks (classes built on first use: stable-baselines3 is imported lazily)
# ---------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _callback_classes() -> dict[str, type]:
    from stable_baselines3.common.callbacks import BaseCallback

    class SaveBest(BaseCallback):
        """``callback_on_new_best`` of the EvalCallback: atomic best_model.zip + stats."""

        def __init__(self, run_dir: Path, state: dict[str, Any]) -> None:
            super().__init__()
            self.run_dir, self.state = run_dir, state

        def _on_step(self) -> bool:
            _save_best(self.model, self.run_dir)
            self.state["best_mean_reward"] = float(self.parent.best_mean_reward)
            self.state["best_timesteps"] = int(self.model.num_timesteps)
            return True

    class AfterEval(BaseCallback):
        """``callback_after_eval``: shows the latest evaluation in the progress bar."""

        def __init__(self, state: dict[str, Any]) -> None:
            super().__init__()
            self.state = state

        def _on_step(self) -> bool:
            self.state["last_mean_reward"] = float(self.parent.last_mean_reward)
            self.state["last_eval_timesteps"] = int(self.model.num_timesteps)
            return True

    class SaveLast(BaseCallback):
        """Saves last_model.zip (+ VecNormalize, replay buffer) every ``save_freq`` calls."""

        def __init__(self, run_dir: Path, algo: str, save_freq: int) -> None:
            super().__init__()
            self.run_dir, self.algo, self.save_freq = run_dir, algo, save_freq

        def _on_step(self) -> bool:
            if self.n_calls % self.save_freq == 0:
                _save_last(self.model, self.run_dir, self.algo)
            return True

    class StopOnFlag(BaseCallback):
        """Stops ``learn`` after the current step once the Ctrl-C flag is set."""

        def __init__(self, stop: Any) -> None:
            super().__init__()
            self.stop = stop

        def _on_step(self) -> bool:
            return not self.stop.requested

    class RichProgress(BaseCallback):
        """A rich progress bar over the run's total timesteps (steps/s, last eval return)."""

        def __init__(self, console: Any, total: int, state: dict[str, Any]) -> None:
            super().__init__()
            self.console, self.total, self.state = console, total, state
            self.bar: Any = None
            self.task: Any = None

        def _on_training_start(self) -> None:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)

            self.t0, self.n0 = time.monotonic(), self.model.num_timesteps
            self.bar = Progress(
                TextColumn("steps"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[sps]:.0f} steps/s"), TextColumn("eval {task.fields[ev]}"),
                TimeElapsedColumn(), TimeRemainingColumn(), console=self.console,
            )
            self.bar.start()
            self.task = self.bar.add_task("train", total=self.total, completed=self.n0, sps=0.0, ev="-")

        def _on_step(self) -> bool:
            if self.bar is not None and (self.n_calls % 16 == 0 or self.model.num_timesteps >= self.total):
                dt = max(time.monotonic() - self.t0, 1e-9)
                ev = self.state.get("last_mean_reward")
                self.bar.update(self.task, completed=min(self.model.num_timesteps, self.total),
                                sps=(self.model.num_timesteps - self.n0) / dt,
                                ev="-" if ev is None else f"{ev:.1f}")
            return True

        def _on_training_end(self) -> None:
            self.close()

        def close(self) -> None:
            if self.bar is not None:
                self.bar.update(self.task, completed=min(self.model.num_timesteps, self.total))
                self.bar.stop()
                self.bar = None

    return {"SaveBest": SaveBest, "AfterEval": AfterEval, "SaveLast": SaveLast,
            "StopOnFlag": StopOnFlag, "RichProgress": RichProgress}


# ---------------------------------------------------------------------------------------
# the pipeline
# ---------------------------------------------------------------------------------------
def _package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in ("visfore", "visfore-envs", "stable-baselines3", "gymnasium", "torch", "numpy",
                 "mujoco", "pybullet"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    out["python"] = sys.version.split()[0]
    return out


def _read_run_config(run_dir: Path) -> dict[str, Any]:
    """config.yaml of a train-policy run directory (see :func:`visfore.core.runs.read_run_config`)."""
    return runs.read_run_config(run_dir, COMMAND, "train-policy run directory")


def _resolve_resume(config: PolicyTrainConfig) -> tuple[PolicyTrainConfig, dict[str, Any], list[str]]:
    """The options of a resumed run (saved ones + runtime options of ``config``), the saved
    config.yaml, and the CLI options that were ignored because the run fixes them."""
    run_dir = Path(config.resume)  # type: ignore[arg-type]
    saved = _read_run_config(run_dir)
    if not (run_dir / CHECKPOINT_DIR / LAST_MODEL).is_file():
        raise VisforeError(f"cannot resume: {run_dir} has no {CHECKPOINT_DIR}/{LAST_MODEL}; start a new run instead")
    known = {f.name for f in dataclasses.fields(PolicyTrainConfig)}
    merged = PolicyTrainConfig(**{k: v for k, v in saved["options"].items() if k in known})
    defaults = PolicyTrainConfig()
    ignored = []
    for f in dataclasses.fields(PolicyTrainConfig):
        if f.name in RUNTIME_OPTIONS or f.name in ("name", "out_dir"):
            continue
        mine, theirs = getattr(config, f.name), getattr(merged, f.name)
        if mine != theirs and mine != getattr(defaults, f.name):
            ignored.append(f"--{f.name.replace('_', '-')} {mine} (the run uses {theirs})")
    merged.resume, merged.device, merged.progress = str(run_dir), config.device, config.progress
    total = int(saved.get("total_timesteps", merged.timesteps or 0))
    if config.timesteps is not None:
        _at_least("timesteps", config.timesteps, 1)
        if config.timesteps < total:
            ignored.append(f"--timesteps {config.timesteps} (below the run's total {total})")
        total = max(total, config.timesteps)
    merged.timesteps = total
    return merged, saved, ignored


def _config_record(config: PolicyTrainConfig, run_dir: Path, env_id: str, visfore: bool,
                   env_kwargs: dict[str, Any], max_steps: int | None, hyper: Hyperparameters,
                   policy: str, normalize: dict[str, Any], n_envs: int, vec_env: str,
                   device: Any, threads: int) -> dict[str, Any]:
    import torch

    options = json.loads(json.dumps(config.to_dict()))
    options["n_envs"] = n_envs
    return {
        "command": COMMAND,
        "format": CONFIG_FORMAT,
        "version": CONFIG_VERSION,
        "created": runs.utc_timestamp(),
        "run_dir": str(run_dir.resolve()),
        "command_line": shlex.join(["visfore", *sys.argv[1:]]) if Path(sys.argv[0]).name == "visfore"
        else shlex.join(sys.argv),
        "options": options,
        "env": {
            "id": env_id,
            "visfore": visfore,
            "robot": robot_name(env_id),
            "kwargs": env_kwargs,
            "eval_kwargs": eval_kwargs_for(env_kwargs),
            "max_episode_steps": max_steps,
            "vec_env": vec_env,
            "n_envs": n_envs,
            "seeds": {"train": f"{config.seed} + rank (+ timesteps done, on resume)",
                      "eval": config.seed + EVAL_SEED_OFFSET},
        },
        "algo": config.algo,
        "policy": policy,
        "hyperparameters": {
            "source": ZOO_SOURCE.format(algo=config.algo) if hyper.zoo_key else "stable-baselines3 defaults",
            "zoo_key": hyper.zoo_key,
            "zoo": hyper.zoo,
            "overrides": hyper.overrides,
            "resolved": hyper.resolved,
        },
        "normalize": normalize,
        "total_timesteps": int(config.timesteps or 0),
        "eval": {"freq": config.eval_freq, "episodes": config.eval_episodes, "deterministic": True,
                 "env": "nominal body (training kwargs without randomize)"},
        "checkpoints": {"last": f"{CHECKPOINT_DIR}/{LAST_MODEL}", "best": f"{CHECKPOINT_DIR}/{BEST_MODEL}",
                        "vecnormalize": f"{CHECKPOINT_DIR}/{VECNORMALIZE}",
                        "best_vecnormalize": f"{CHECKPOINT_DIR}/{BEST_VECNORMALIZE}",
                        "replay_buffer": f"{CHECKPOINT_DIR}/{REPLAY_BUFFER}" if config.algo in OFF_POLICY_ALGOS else None},
        "runtime": {"device": str(device), "torch_threads": threads,
                    "torch_threads_note": "1 for MLP policies on CPU (small nets are faster single-threaded); "
                                          "torch's default for CNN policies",
                    "versions": _package_versions(), "torch_version": str(torch.__version__)},
    }


def _summary(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    return {"mean": float(a.mean()), "std": float(a.std()), "min": float(a.min()),
            "max": float(a.max()), "median": float(np.median(a))}


def _restore_eval_history(eval_cb: Any, log_dir: Path) -> tuple[float, int | None]:
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


def train_policy(config: PolicyTrainConfig) -> dict[str, Any]:
    """Train a policy and evaluate it; write a run directory; return the metrics.

    Args:
        config: the options (see :class:`PolicyTrainConfig`).

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
    import torch

    threads = torch.get_num_threads()
    try:
        return _train_policy(config)
    finally:
        torch.set_num_threads(threads)  # the API must not leave the process changed


def _train_policy(config: PolicyTrainConfig) -> dict[str, Any]:  # noqa: C901 - a linear pipeline
    import torch

    t_begin = time.monotonic()
    console = _console(config.progress)
    ignored: list[str] = []
    saved: dict[str, Any] | None = None
    if config.resume is not None:
        config, saved, ignored = _resolve_resume(config)
        run_dir = Path(config.resume)  # type: ignore[arg-type]
    validate_options(config)
    assert config.algo is not None and config.env is not None and config.timesteps is not None

    from visfore.data.envs import is_visfore_env, resolve_env_id
    from visfore.worldmodels.train_model import select_device

    if saved is not None:
        env_id = str(saved["env"]["id"])
        visfore = bool(saved["env"]["visfore"])
        env_kwargs = dict(saved["env"]["kwargs"])
        hyper = Hyperparameters(saved["hyperparameters"]["zoo_key"], saved["hyperparameters"]["zoo"],
                                saved["hyperparameters"]["overrides"], saved["hyperparameters"]["resolved"],
                                int(saved["options"].get("n_envs") or 1))
    else:
        env_id = resolve_env_id(config.env)
        visfore = is_visfore_env(env_id)
        env_kwargs = env_kwargs_for(config, visfore=visfore)
        hyper = resolve_hyperparameters(config.algo, env_id, config.backend, parse_hp_overrides(config.hp))
        run_dir = runs.resolve_run_dir(COMMAND, name=config.name, root=config.out_dir)
        if run_dir.exists() or run_dir.is_symlink():
            raise VisforeError(f"run directory {run_dir} already exists; continue it with --resume {run_dir}, "
                               "or choose another --name")
    n_envs = int(config.n_envs or hyper.n_envs)
    device = select_device(config.device)
    obs_space, act_space, max_steps = _check_env(env_id, env_kwargs)
    algo_kwargs, normalize = build_algo_kwargs(config.algo, hyper.resolved, act_space)
    vn_options = _vecnormalize_options(normalize, config.obs_mode)
    policy = POLICY_FOR_OBS_MODE[config.obs_mode]
    import gymnasium as gym

    if isinstance(obs_space, gym.spaces.Dict) and policy != "MultiInputPolicy":
        policy = "MultiInputPolicy"
    pixels = config.obs_mode != "state"
    subproc = pixels and n_envs > 1
    vec_env_name = "SubprocVecEnv(spawn)" if subproc else "DummyVecEnv"
    if device.type == "cpu" and policy == "MlpPolicy":
        torch.set_num_threads(1)
    n_threads = torch.get_num_threads()
    AlgoClass = _algo_class(config.algo)

    from stable_baselines3.common.vec_env import VecNormalize

    model = None
    train_env = eval_env = None
    ckpt_dir = run_dir / CHECKPOINT_DIR
    log_dir = run_dir / LOGS_DIR
    try:
        if saved is None:
            if hyper.zoo_key is None:
                _warn(f"no rl-baselines3-zoo {config.algo} hyperparameters for {env_id}; "
                      "using stable-baselines3 defaults")
            raw = _transpose_images(_make_venv(env_id, env_kwargs, n_envs, config.seed, subproc=subproc))
            train_env = VecNormalize(raw, **vn_options)
            try:
                model = AlgoClass(policy, train_env, seed=config.seed, device=device, verbose=0,
                                  tensorboard_log=str(log_dir), **algo_kwargs)
            except (TypeError, ValueError, AssertionError) as exc:
                text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise VisforeError(f"cannot build {config.algo} with these hyperparameters: {text}") from None
        else:
            try:
                model = AlgoClass.load(ckpt_dir / LAST_MODEL, device=device, tensorboard_log=str(log_dir))
            except (OSError, ValueError, KeyError, RuntimeError, pickle.UnpicklingError) as exc:
                text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise VisforeError(f"cannot resume: {ckpt_dir / LAST_MODEL} cannot be loaded ({text})") from None
            offset = int(model.num_timesteps)
            raw = _transpose_images(_make_venv(env_id, env_kwargs, n_envs, config.seed + offset, subproc=subproc))
            if not (ckpt_dir / VECNORMALIZE).is_file():
                raw.close()
                raise VisforeError(f"cannot resume: {ckpt_dir / VECNORMALIZE} is missing")
            train_env = VecNormalize.load(str(ckpt_dir / VECNORMALIZE), raw)
            train_env.training = True
            model.set_env(train_env)
            model.set_random_seed(config.seed + offset)
            if config.algo in OFF_POLICY_ALGOS and (ckpt_dir / REPLAY_BUFFER).is_file():
                model.load_replay_buffer(ckpt_dir / REPLAY_BUFFER)
                model.replay_buffer.device = model.device

        eval_raw = _transpose_images(
            _make_venv(env_id, eval_kwargs_for(env_kwargs), 1, config.seed + EVAL_SEED_OFFSET, subproc=False))
        eval_env = VecNormalize(eval_raw, **{**vn_options, "training": False, "norm_reward": False})
        if hasattr(train_env, "obs_rms"):  # only with norm_obs; EvalCallback also syncs a copy
            eval_env.obs_rms = train_env.obs_rms

        # -- run directory (first write) ---------------------------------------------
        if saved is None:
            runs.create_run_dir(run_dir)
            record = _config_record(config, run_dir, env_id, visfore, env_kwargs, max_steps, hyper,
                                    policy, vn_options, n_envs, vec_env_name, device, n_threads)
            runs.write_config(run_dir, record)
        else:
            runs.ensure_run_subdirs(run_dir)
            for line in ignored:
                _warn(f"--resume: ignored {line}")
            if int(saved.get("total_timesteps", 0)) != config.timesteps:
                saved["total_timesteps"] = int(config.timesteps)
                saved["options"]["timesteps"] = int(config.timesteps)
                runs.write_config(run_dir, saved)

        metrics = _learn_and_evaluate(config, model, train_env, eval_env, run_dir, n_envs, console,
                                      resumed=saved is not None, t_begin=t_begin)
    finally:
        for env in (train_env, eval_env):
            if env is not None:
                env.close()
    return metrics


def _learn_and_evaluate(config: PolicyTrainConfig, model: Any, train_env: Any, eval_env: Any,
                        run_dir: Path, n_envs: int, console: Any, *, resumed: bool,
                        t_begin: float) -> dict[str, Any]:
    from stable_baselines3.common.callbacks import CallbackList, EvalCallback
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.vec_env import sync_envs_normalization

    from visfore.worldmodels.train_model import _StopFlag

    assert config.algo is not None and config.timesteps is not None
    classes = _callback_classes()
    state: dict[str, Any] = {}
    log_dir = run_dir / LOGS_DIR
    total = int(config.timesteps)
    start_steps = int(model.num_timesteps)
    remaining = total - start_steps

    save_every = config.save_freq or config.eval_freq or 10_000
    callbacks: list[Any] = []
    eval_cb = None
    best, best_at = -math.inf, None
    if config.eval_freq > 0:
        eval_cb = EvalCallback(
            eval_env, callback_on_new_best=classes["SaveBest"](run_dir, state),
            callback_after_eval=classes["AfterEval"](state), n_eval_episodes=config.eval_episodes,
            eval_freq=max(config.eval_freq // n_envs, 1), log_path=str(log_dir),
            best_model_save_path=None, deterministic=True, verbose=0,
        )
        if resumed:
            best, best_at = _restore_eval_history(eval_cb, log_dir)
            eval_cb.best_mean_reward = best
        callbacks.append(eval_cb)
    if resumed:
        prior, prior_at = _best_from_metrics(run_dir)
        if prior > best:  # e.g. the final evaluation of the previous session
            best, best_at = prior, prior_at
    if resumed and math.isfinite(best):
        state["best_mean_reward"], state["best_timesteps"] = best, best_at
    stop = _StopFlag()
    callbacks.append(classes["SaveLast"](run_dir, config.algo, max(save_every // n_envs, 1)))
    callbacks.append(classes["StopOnFlag"](stop))
    progress_cb = None
    if config.progress:
        progress_cb = classes["RichProgress"](console, total, state)
        callbacks.append(progress_cb)

    if resumed:
        console.print(f"resuming {run_dir} at {start_steps}/{total} timesteps")
    t_train = time.monotonic()
    if remaining > 0:
        try:
            with stop.catch_sigint():
                model.learn(total_timesteps=remaining, callback=CallbackList(callbacks),
                            tb_log_name=TB_LOG_NAME, reset_num_timesteps=not resumed, progress_bar=False)
        except KeyboardInterrupt:
            stop.requested = True
        finally:
            if progress_cb is not None:
                progress_cb.close()
        _save_last(model, run_dir, config.algo)
        if stop.requested:
            _warn(f"interrupted at {model.num_timesteps}/{total} timesteps; saved {CHECKPOINT_DIR}/{LAST_MODEL}; "
                  f"continue with --resume {run_dir}")
            raise KeyboardInterrupt
    else:
        console.print(f"{run_dir} already has {start_steps}/{total} timesteps; evaluating only "
                      "(pass a larger --timesteps to continue)")
    train_seconds = time.monotonic() - t_train

    # -- final evaluation (last model, nominal env) --------------------------------------
    sync_envs_normalization(model.get_env(), eval_env)
    eval_env.seed(config.seed + EVAL_SEED_OFFSET)
    returns, lengths = evaluate_policy(model, eval_env, n_eval_episodes=config.eval_episodes,
                                       deterministic=True, return_episode_rewards=True, warn=False)
    returns = [float(r) for r in returns]
    lengths = [int(n) for n in lengths]
    final_mean = float(np.mean(returns))
    if eval_cb is not None:
        best = max(best, float(eval_cb.best_mean_reward))
    best = max(best, float(state.get("best_mean_reward", -math.inf)))
    if final_mean > best or not (run_dir / CHECKPOINT_DIR / BEST_MODEL).is_file():
        _save_best(model, run_dir)
        state["best_mean_reward"], state["best_timesteps"] = final_mean, int(model.num_timesteps)
        best = max(best, final_mean)
    trained = int(model.num_timesteps) - start_steps
    metrics: dict[str, Any] = {
        "evaluation": f"{config.eval_episodes} deterministic episodes of the last model on the nominal "
                      "env (no randomisation), VecNormalize statistics of training, rewards not normalised",
        "env_id": _env_id_of(run_dir),
        "algo": config.algo,
        "episodes": len(returns),
        "return": _summary(returns),
        "length": _summary([float(n) for n in lengths]),
        "returns": returns,
        "lengths": lengths,
        "best_eval_mean_return": best if math.isfinite(best) else None,
        "best_eval_timesteps": state.get("best_timesteps"),
        "num_timesteps": int(model.num_timesteps),
        "total_timesteps": total,
        "timesteps_this_session": trained,
        "train_seconds": train_seconds,
        "wall_seconds": time.monotonic() - t_begin,
        "steps_per_second": trained / train_seconds if train_seconds > 0 and trained > 0 else None,
        "resumed": resumed,
        "checkpoint": f"{CHECKPOINT_DIR}/{LAST_MODEL}",
        "run_dir": str(run_dir),
    }
    runs.write_json(run_dir / runs.METRICS_NAME, metrics)
    if config.progress:
        print_metrics(metrics, console)
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
def _warn(message: str) -> None:
    """``warning: message`` on stderr (shown also with --no-progress)."""
    typer.secho(f"warning: {message}", fg=typer.colors.YELLOW, err=True)


def _console(enabled: bool) -> Any:

    return stdout_console(quiet=not enabled, highlight=False)


def print_metrics(metrics: Mapping[str, Any], console: Any = None) -> None:
    """Print the final evaluation as a rich table (return and episode length)."""
    from rich.table import Table

    console = console or stdout_console()
    table = Table(title=f"{metrics['algo']} on {metrics['env_id']}: {metrics['episodes']} deterministic "
                        "episodes, nominal body")
    table.add_column("")
    for col in ("mean", "std", "min", "median", "max"):
        table.add_column(col, justify="right")
    for key in ("return", "length"):
        r = metrics[key]
        table.add_row(key, *(f"{r[c]:.1f}" for c in ("mean", "std", "min", "median", "max")))
    console.print(table)
    best = metrics["best_eval_mean_return"]
    sps = metrics["steps_per_second"]
    console.print(
        f"{metrics['num_timesteps']}/{metrics['total_timesteps']} timesteps; best eval mean return "
        f"{'-' if best is None else f'{best:.1f}'}; trained {metrics['timesteps_this_session']} steps in "
        f"{metrics['train_seconds']:.0f} s" + (f" ({sps:.0f} steps/s)" if sps else "")
        + f"; run: {metrics['run_dir']}"
    )


# ---------------------------------------------------------------------------------------
# Typer command
# ---------------------------------------------------------------------------------------
#: Options of the SB3 path only: an error together with ``--through-model``.
SB3_ONLY_OPTIONS = ("algo", "timesteps", "backend", "randomize", "obs_mode", "size", "n_envs", "hp",
                    "eval_freq", "save_freq", "env_kwargs")
#: Options of ``--through-model`` only: an error without it.
THROUGH_MODEL_OPTIONS = ("model_checkpoint", "data", "policy_net", "policy_frames", "prev_action", "action_scale",
                         "horizon", "iterations", "time_budget", "batch_size", "lr", "action_penalty", "loss_steps",
                         "loss_scales", "val_every", "eval_steps", "eval_seed", "success_threshold", "gifs",
                         "num_threads")


def _given(ctx: typer.Context, names: tuple[str, ...]) -> list[str]:
    """The options among ``names`` that were given on the command line (or by env var)."""
    given = []
    for name in names:
        source = ctx.get_parameter_source(name)  # an enum of typer's vendored click: compare names
        if getattr(source, "name", None) in ("COMMANDLINE", "ENVIRONMENT"):
            given.append("--" + name.replace("_", "-"))
    return given


def _is_through_model_run(path: Path) -> bool:
    try:
        from visfore.planning.through_model import COMMAND as THROUGH_MODEL_COMMAND

        return runs.read_config(path).get("command") == THROUGH_MODEL_COMMAND
    except (VisforeError, OSError):
        return False


@handle_errors
def train_policy_command(
    ctx: typer.Context,
    env: Annotated[Optional[str], typer.Option(help="Env id: PerturbHopper-v0, PerturbWalker2d-v0, PerturbAnt-v0, PerturbHalfCheetah-v0, or any registered Gymnasium id. With --through-model: the evaluation env (default: the model dataset's env; reacher = ReacherPlane-v0).")] = None,
    algo: Annotated[Optional[str], typer.Option(help="td3 or ppo.")] = None,
    timesteps: Annotated[Optional[int], typer.Option(help="Total environment steps (required; on --resume it may raise the total).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the model and the envs (with --through-model: of the policy, the batches and the evaluation episodes).")] = 0,
    backend: Annotated[Optional[str], typer.Option(help="Physics of the visfore locomotion envs: mujoco or pybullet.")] = None,
    randomize: Annotated[Optional[str], typer.Option(help="Randomise the body in training: default, random, extreme, or a scale range LOW-HIGH (e.g. 0.8-1.2). Evaluation is nominal.")] = None,
    obs_mode: Annotated[str, typer.Option(help="state, pixels or state+pixels.")] = "state",
    size: Annotated[int, typer.Option(help="Frame size in pixels (pixel observation modes).")] = 64,
    n_envs: Annotated[Optional[int], typer.Option(help="Parallel training envs (default: the zoo's n_envs, else 1).")] = None,
    hp: Annotated[Optional[list[str]], typer.Option(help="Hyperparameter override key=value (YAML value), repeatable: --hp learning_rate=1e-3 --hp batch_size=64.")] = None,
    eval_freq: Annotated[int, typer.Option(help="Evaluate every this many env steps (0: only at the end).")] = 10_000,
    eval_episodes: Annotated[Optional[int], typer.Option(help="Episodes per evaluation (default 5; with --through-model: real goal-reaching episodes after training, default 20, 0 = none).")] = None,
    save_freq: Annotated[Optional[int], typer.Option(help="Save last_model.zip every this many env steps (default: --eval-freq).")] = None,
    name: Annotated[Optional[str], typer.Option(help="Run name: OUT_DIR/train-policy-NAME (with --through-model: OUT_DIR/train-policy-through-model-NAME; default: UTC time).")] = None,
    out_dir: Annotated[Path, typer.Option(help="Parent directory of run directories.")] = runs.DEFAULT_RUNS_ROOT,
    resume: Annotated[Optional[Path], typer.Option(help="Continue this run directory (SB3: checkpoints/last_model.zip; a --through-model run: checkpoints/last.pt).")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show the progress bar and summary.")] = True,
    through_model: Annotated[Optional[Path], typer.Option("--through-model", help="Train a goal-reaching policy by backpropagating through the forward model of this visfore train-model run (seed 004) instead of SB3.")] = None,
    model_checkpoint: Annotated[Optional[str], typer.Option(help="[--through-model] best or last checkpoint of the forward model (default best).")] = None,
    data: Annotated[Optional[Path], typer.Option(help="[--through-model] Dataset of start clips and goal frames (default: the model's training dataset).")] = None,
    policy_net: Annotated[Optional[str], typer.Option(help="[--through-model] cnn (default) or mlp.")] = None,
    policy_frames: Annotated[Optional[int], typer.Option(help="[--through-model] Last frames the policy sees (default 1).")] = None,
    prev_action: Annotated[Optional[bool], typer.Option("--prev-action/--no-prev-action", help="[--through-model] Feed the previous action to the policy (default yes).")] = None,
    action_scale: Annotated[Optional[float], typer.Option(help="[--through-model] Fraction of the env's action half-range the policy may use, in (0, 1] (default 1), like visfore plan --action-scale.")] = None,
    horizon: Annotated[Optional[int], typer.Option(help="[--through-model] Imagined steps per training rollout (default 8).")] = None,
    iterations: Annotated[Optional[int], typer.Option(help="[--through-model] Adam steps in total (default 1000, or unbounded with --time-budget).")] = None,
    time_budget: Annotated[Optional[float], typer.Option(help="[--through-model] Minutes of training in this session.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="[--through-model] Start clips per iteration (default 16).")] = None,
    lr: Annotated[Optional[float], typer.Option(help="[--through-model] Adam learning rate (default 1e-3).")] = None,
    action_penalty: Annotated[Optional[float], typer.Option(help="[--through-model] Weight of the mean squared action scaled to [-1, 1] (default 1e-3).")] = None,
    loss_steps: Annotated[Optional[str], typer.Option(help="[--through-model] final (last imagined frame, default) or all (every frame, weights k/sum k).")] = None,
    loss_scales: Annotated[Optional[int], typer.Option(help="[--through-model] Levels of the 2x average-pool pyramid of the pixel MSE (default 3).")] = None,
    val_every: Annotated[Optional[int], typer.Option(help="[--through-model] Iterations between validations and checkpoints (default 50).")] = None,
    eval_steps: Annotated[Optional[int], typer.Option(help="[--through-model] Actions per evaluation episode (default: the env's time limit).")] = None,
    eval_seed: Annotated[Optional[int], typer.Option(help="[--through-model] Seed of the evaluation episodes (default --seed; use visfore plan's --seed for common random numbers).")] = None,
    success_threshold: Annotated[Optional[float], typer.Option(help="[--through-model] Success threshold in metres (default: the env's, 0.02 for ReacherPlane-v0).")] = None,
    gifs: Annotated[Optional[bool], typer.Option("--gifs/--no-gifs", help="[--through-model] One GIF per evaluation episode in eval/gifs (default no).")] = None,
    num_threads: Annotated[Optional[int], typer.Option(help="[--through-model] torch CPU threads (default: torch's).")] = None,
    env_kwargs: Annotated[Optional[list[str]], typer.Option("--env-kwargs", help="Extra env options (training and evaluation envs): JSON or key=value[,key=value], repeatable, e.g. --env-kwargs potential_shaping=true.")] = None,
) -> None:
    """Train a TD3 or PPO policy with tuned RL-Zoo hyperparameters; evaluate it on the nominal body.

    With --through-model RUN: train a goal-reaching policy through that learned forward model
    and evaluate it in the real env (success rate, final distance, time per step)."""
    resume_through = resume is not None and through_model is None and _is_through_model_run(resume)
    if through_model is not None or resume_through:
        sb3 = _given(ctx, SB3_ONLY_OPTIONS)
        if sb3:
            raise VisforeError(f"{', '.join(sb3)} {'is an option' if len(sb3) == 1 else 'are options'} of the "
                               "SB3 path (--algo); not valid with --through-model")
        if through_model is not None and resume is not None:
            raise VisforeError("give --through-model RUN for a new run or --resume RUN_DIR to continue one, not both")
        from visfore.planning.through_model import ThroughModelConfig, train_through_model

        given = {
            "model_checkpoint": model_checkpoint, "data": str(data) if data is not None else None,
            "policy_net": policy_net.lower() if policy_net else policy_net, "policy_frames": policy_frames,
            "prev_action": prev_action, "action_scale": action_scale, "horizon": horizon, "iterations": iterations,
            "time_budget": time_budget,
            "batch_size": batch_size, "lr": lr, "action_penalty": action_penalty, "loss_steps": loss_steps,
            "loss_scales": loss_scales, "val_every": val_every, "eval_episodes": eval_episodes,
            "eval_steps": eval_steps, "eval_seed": eval_seed, "success_threshold": success_threshold,
            "gifs": gifs, "num_threads": num_threads,
        }
        config = ThroughModelConfig(
            through_model=str(through_model) if through_model is not None else None, env=env, seed=seed,
            name=name, out_dir=str(out_dir), resume=str(resume) if resume is not None else None,
            device=device, progress=progress,
            **{k: v for k, v in given.items() if v is not None},
        )
        train_through_model(config)
        return
    from visfore.data.envs import parse_env_kwargs

    only = _given(ctx, THROUGH_MODEL_OPTIONS)
    if only:
        raise VisforeError(f"{', '.join(only)} {'needs' if len(only) == 1 else 'need'} --through-model RUN")
    config = PolicyTrainConfig(
        env=env, algo=algo.lower() if algo else algo, timesteps=timesteps, seed=seed, backend=backend,
        randomize=randomize, obs_mode=obs_mode, size=size, n_envs=n_envs, hp=list(hp or []),
        eval_freq=eval_freq, eval_episodes=5 if eval_episodes is None else eval_episodes, save_freq=save_freq,
        name=name, out_dir=str(out_dir), resume=str(resume) if resume is not None else None, device=device,
        progress=progress, env_kwargs=parse_env_kwargs(env_kwargs),
    )
    train_policy(config)
