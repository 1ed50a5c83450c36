"""Load a ``visfore train-policy`` run for evaluation: the policy, its observation
normalisation and the env it was trained on.

:func:`load_policy_run` reads ``config.yaml`` and a checkpoint of a run directory
(:mod:`visfore.rl.train_policy` describes the layout) and returns a :class:`PolicyRun`:

* :meth:`PolicyRun.make_env` creates the training env (same id, observation mode and
  kwargs) at the nominal body or with a *fixed* perturbation, never randomised, optionally
  on another physics backend;
* :meth:`PolicyRun.predict` maps one observation, as returned by ``env.reset`` /
  ``env.step``, to the deterministic action, after the VecNormalize observation
  normalisation saved with the checkpoint (``(obs - mean) / sqrt(var + eps)`` clipped to
  ``[-clip_obs, clip_obs]``, exactly as VecNormalize does; images untouched).

The model is loaded on the CPU by default and torch is set to one thread: evaluation
workers run in parallel processes, and the policies are small MLPs.

The checkpoint files are pickles (stable-baselines3's own format): load only run
directories you trust.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.vec_env import VecNormalize  # noqa: F401  (class for pickle)

from visfore.core import runs
from visfore.core.errors import VisforeError
from visfore.data.envs import env_creation_error
from visfore.rl import train_policy as tp
from visfore.rl.zoo import algo_class

#: ``checkpoint`` values of :func:`load_policy_run`.
CHECKPOINTS = ("best", "last")


@dataclass
class PolicyRun:
    """A trained policy and how to build its env.

    Attributes:
        run_dir: the run directory.
        config: the ``config.yaml`` contents.
        env_id: the Gymnasium id trained on.
        env_kwargs: keyword arguments of the training env, without ``randomize``
            (``backend``, ``obs_mode``/``width``/``height`` when they were given).
        algo: ``td3``, ``ppo`` or ``sac``.
        checkpoint: ``best`` or ``last``: which model was loaded.
        model_path: the ``.zip`` loaded.
        model: the stable-baselines3 model (on ``device``).
        vec_normalize: the VecNormalize object holding the saved observation statistics
            (no env attached), or None when the checkpoint has none.
    """

    run_dir: Path
    config: dict = field(repr=False)
    env_id: str
    env_kwargs: dict
    algo: str
    checkpoint: str = "best"
    model_path: Path | None = None
    model: Any = field(default=None, repr=False)
    vec_normalize: Any = field(default=None, repr=False)

    @property
    def is_visfore_env(self) -> bool:
        """Whether the env is a visfore env (accepts perturbation / backend kwargs)."""
        return bool(self.config.get("env", {}).get("visfore", False))

    @property
    def action_space(self) -> Any:
        """The policy's action space (a Box)."""
        return self.model.action_space

    def make_env(
        self,
        perturbation: Mapping[str, float] | None = None,
        backend: str | None = None,
        render_mode: str | None = None,
    ) -> Any:
        """A single env (``gym.make``, so the TimeLimit of the registration applies) with
        the training observation mode and kwargs, a FIXED perturbation, no randomisation.

        Args:
            perturbation: body-part scales, e.g. ``{"thigh.length": 1.3}`` (None = nominal).
            backend: ``mujoco`` or ``pybullet``; overrides the trained backend (a run
                trained on mujoco can be evaluated on pybullet: the env then produces the
                trained backend's observation layout and action order, ``obs_layout``).
                None = as trained.
            render_mode: passed to the env (e.g. ``"rgb_array"``).

        Returns:
            The ``gymnasium.Env``; its observations go to :meth:`predict` unchanged.

        Raises:
            VisforeError: a perturbation or backend for a non-visfore env, or the env
                rejects the kwargs (its message, one line).
        """
        kwargs = {k: v for k, v in self.env_kwargs.items() if k not in ("randomize", "perturbation")}
        if perturbation is not None:
            if not self.is_visfore_env:
                raise VisforeError(f"{self.env_id} is not a visfore env: it takes no perturbation")
            kwargs["perturbation"] = {str(k): float(v) for k, v in perturbation.items()}
        if backend is not None:
            if not self.is_visfore_env:
                raise VisforeError(f"{self.env_id} is not a visfore env: it has no --backend choice")
            trained = self.env_kwargs.get("backend") or "mujoco"
            if backend != trained and "obs_layout" not in kwargs:
                # The policy reads the observation layout of the backend it was trained on;
                # the other backend can produce it (visfore_envs.locomotion.OBS_LAYOUTS).
                kwargs["obs_layout"] = "v5" if trained == "mujoco" else "roboschool"
            kwargs["backend"] = backend
        if render_mode is not None:
            kwargs["render_mode"] = render_mode
        try:
            env = tp.make_single_env(self.env_id, **kwargs)
        except (TypeError, ValueError, KeyError, ImportError, gym.error.Error) as exc:
            raise env_creation_error(self.env_id, kwargs, exc) from None
        if not _spaces_compatible(env.observation_space, self.model.observation_space):
            env.close()
            raise VisforeError(
                f"{self.env_id} with {kwargs} has observations {_describe(env.observation_space)}, but the "
                f"policy of {self.run_dir} takes {_describe(self.model.observation_space)}"
            )
        return env

    def normalize_obs(self, obs: Any) -> Any:
        """Apply the saved VecNormalize observation statistics to one observation (no
        update of the statistics); identity when the run does not normalise."""
        if self.vec_normalize is None or not getattr(self.vec_normalize, "norm_obs", False):
            return obs
        return self.vec_normalize.normalize_obs(obs)

    def predict(self, obs: Any) -> np.ndarray:
        """Deterministic action for ONE observation.

        Args:
            obs: unbatched, as returned by ``env.reset()[0]`` / ``env.step(...)[0]`` of
                :meth:`make_env`: an array of the state shape, an (H, W, 3) uint8 frame, or
                a dict ``{"state", "pixels"}``.

        Returns:
            float32 action of shape ``action_space.shape``, inside the action bounds
            (stable-baselines3 clips Box actions).
        """
        if isinstance(obs, Mapping):
            obs = {k: np.asarray(v) for k, v in obs.items()}
        else:
            obs = np.asarray(obs)
        try:
            action, _ = self.model.predict(self.normalize_obs(obs), deterministic=True)
        except ValueError as exc:  # e.g. an observation of another shape
            raise VisforeError(str(exc).splitlines()[0].removeprefix("Error: ")) from None
        return np.asarray(action, dtype=np.float32).reshape(self.action_space.shape)


def _describe(space: Any) -> str:
    if isinstance(space, spaces.Dict):
        return "{" + ", ".join(f"{k}: {v.shape}" for k, v in space.spaces.items()) + "}"
    return str(tuple(space.shape))


def _spaces_compatible(env_space: Any, policy_space: Any) -> bool:
    """Whether the env's observations fit the policy: same shapes, image spaces also in
    the policy's channel-first layout (stable-baselines3 transposes them itself)."""
    if isinstance(env_space, spaces.Dict) or isinstance(policy_space, spaces.Dict):
        return (
            isinstance(env_space, spaces.Dict)
            and isinstance(policy_space, spaces.Dict)
            and set(env_space.spaces) == set(policy_space.spaces)
            and all(_spaces_compatible(env_space[k], policy_space[k]) for k in env_space.spaces)
        )
    shape, target = tuple(env_space.shape or ()), tuple(policy_space.shape or ())
    return shape == target or (len(shape) == 3 and (shape[2], shape[0], shape[1]) == target)


def _load_vecnormalize(path: Path) -> Any:
    """Unpickle a VecNormalize saved by train-policy (as ``VecNormalize.load`` does, without
    attaching an env)."""
    try:
        with open(path, "rb") as f:
            return pickle.load(f)
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError) as exc:
        raise VisforeError(f"cannot read {path} ({type(exc).__name__})") from None


def load_policy_run(run_dir: str | os.PathLike[str], checkpoint: str = "best", *, device: str = "cpu") -> PolicyRun:
    """Load a train-policy run for evaluation.

    Args:
        run_dir: the run directory (``runs/train-policy-...``).
        checkpoint: ``"best"`` (``checkpoints/best_model.zip``; falls back to ``"last"``
            when the run has no best model yet) or ``"last"``
            (``checkpoints/last_model.zip``). Each model is paired with the VecNormalize
            statistics saved with it.
        device: torch device of the model (default ``"cpu"``).

    Returns:
        A :class:`PolicyRun`. Side effect: ``torch.set_num_threads(1)``.

    Raises:
        VisforeError: ``run_dir`` is not a train-policy run directory, has no model, or a
            file cannot be read; an unknown ``checkpoint``.
    """
    if checkpoint not in CHECKPOINTS:
        raise VisforeError(f"unknown checkpoint {checkpoint!r}; valid: {', '.join(CHECKPOINTS)}")
    run_dir = Path(run_dir)
    config = tp._read_run_config(run_dir)
    try:
        env_id = str(config["env"]["id"])
        env_kwargs = dict(config["env"]["kwargs"] or {})
        algo = str(config["algo"])
    except (KeyError, TypeError):
        raise VisforeError(f"{run_dir / runs.CONFIG_NAME} lacks env id/kwargs or algo") from None
    if algo not in tp.ALGOS:
        raise VisforeError(f"{run_dir / runs.CONFIG_NAME}: unknown algo {algo!r}")
    ckpt = run_dir / tp.CHECKPOINT_DIR
    chosen = checkpoint
    if chosen == "best" and not (ckpt / tp.BEST_MODEL).is_file():
        chosen = "last"
    model_path = ckpt / (tp.BEST_MODEL if chosen == "best" else tp.LAST_MODEL)
    if not model_path.is_file():
        raise VisforeError(f"{run_dir} has no trained model ({tp.CHECKPOINT_DIR}/{tp.LAST_MODEL} is missing)")
    stats_path = ckpt / (tp.BEST_VECNORMALIZE if chosen == "best" else tp.VECNORMALIZE)
    if not stats_path.is_file():
        stats_path = ckpt / tp.VECNORMALIZE
    vec_normalize = _load_vecnormalize(stats_path) if stats_path.is_file() else None

    torch.set_num_threads(1)
    custom_objects: dict[str, Any] = {
        # not needed for prediction; avoids unpickling training-only objects
        "learning_rate": 0.0,
        "lr_schedule": lambda _: 0.0,
        "clip_range": lambda _: 0.0,
    }
    if algo in tp.OFF_POLICY_ALGOS:
        custom_objects["buffer_size"] = 1  # no replay buffer memory for evaluation
        # The default buffer instead of a saved HerReplayBuffer, which cannot be built
        # without the training env (stable-baselines3 asserts one); prediction needs none.
        custom_objects["replay_buffer_class"] = None
        custom_objects["replay_buffer_kwargs"] = {}
    try:
        model = algo_class(algo).load(model_path, device=device, custom_objects=custom_objects)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise VisforeError(f"cannot load {model_path}: {text}") from None
    env_kwargs.pop("randomize", None)
    return PolicyRun(
        run_dir=run_dir,
        config=config,
        env_id=env_id,
        env_kwargs=env_kwargs,
        algo=algo,
        checkpoint=chosen,
        model_path=model_path,
        model=model,
        vec_normalize=vec_normalize,
    )
