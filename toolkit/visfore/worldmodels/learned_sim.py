"""``LearnedSim-v0``: a Gymnasium environment whose frames come from a trained forward model.

The env is a *learned simulator of frames*: it starts from real frames of a dataset and
then shows what the model of a ``visfore train-model`` run predicts for the actions it is
given. It has no physics, no state and no reward of its own.

Registration: the ``visfore`` distribution registers the id (the env package
``visfore_envs`` knows nothing of it): :func:`register` adds ``LearnedSim-v0`` with the
entry point ``"visfore.worldmodels.learned_sim:LearnedSimEnv"`` and a ``TimeLimit`` of 50
steps. It runs when this module is imported, and it is declared as the distribution's
``gymnasium.envs`` entry point (``pyproject.toml``), the plugin group that gymnasium before
1.0 loaded on ``import gymnasium``. Gymnasium 1.x no longer loads plugins; there, with only
``import gymnasium``, use the module-qualified id, which imports this module first::

    gym.make("visfore.worldmodels.learned_sim:LearnedSim-v0", run=RUN_DIR)

(or ``import visfore.worldmodels.learned_sim`` once, then ``gym.make("LearnedSim-v0", ...)``).
Torch is imported only when an env is made. ``gym.make("LearnedSim-v0", run=..., max_steps=N, max_episode_steps=N)``
changes the episode length (``max_steps`` is the env's own limit, ``max_episode_steps`` the
registration's TimeLimit; the smaller one wins).

Spaces (``C`` = the run's context length, ``A`` = action dimension, ``H x W`` = frame size):

* observation: ``Box(0, 255, (H, W, 3), uint8)``, the current frame;
* action: ``Box(low, high, (A,), float32)`` with the dataset's action bounds (its attrs
  ``action_low`` / ``action_high``; ``[-1, 1]`` when absent). Actions are clipped to them;
  a non-finite action or one of another size raises ``ValueError``.

Dynamics. ``reset`` draws, from ``self.np_random``, an episode (uniformly among the
allowed episodes) and a start row ``s`` in it (uniformly in ``0 .. L - C`` for an episode of
``L`` frames), unless ``options={"episode": e, "start": s}`` names them. The context is the
true frames ``o_s .. o_{s+C-1}`` and the true actions ``a_s .. a_{s+C-2}`` taken between
them; the observation is the last context frame ``o_{s+C-1}``. Each ``step(a)`` feeds the
model the window of the last ``C`` frames (real or predicted) and the ``C`` actions that
followed each of them (the last one being the clipped ``a``), one call with ``K = 1``::

    state = model.init_state(frames (1, C, 3, H, W) float32 in [0, 1], actions (1, C - 1, A))
    frame, _ = model.imagine(state, a (1, 1, A))  # (1, 1, 3, H, W), = model(frames, actions + a)

and returns the prediction as uint8 (``round(255 * clamp(x, 0, 1))``); that uint8 frame
(divided by 255, exactly the training conversion) enters the window, so the env's whole
state is the last ``C`` observed frames and ``C - 1`` actions. The cost per step is one
model call on ``C`` frames, whatever the episode length. Note: the model reads its window
afresh at each call (a recurrent model's state is not carried from step to step), so a
rollout of this env is the sliding-window use of the model, like a planner that re-plans
from the last ``C`` frames; it can differ from the model's own ``K``-step open-loop rollout,
which carries its recurrent state through the ``K`` steps.

A stochastic model (``model.stochastic``) is sampled under a torch seed drawn from
``self.np_random`` at each step, so seeded runs repeat exactly. The model runs in eval mode
under ``torch.no_grad``.

Reward is always 0.0 and ``terminated`` always False: rewards come from wrappers or the
planner. ``truncated`` becomes True after ``max_steps`` steps (and from the TimeLimit of
the registration).

``info`` at reset: ``context`` ((C, H, W, 3) uint8 true frames), ``context_actions``
((C - 1, A) float32), ``episode``, ``start`` (s), ``frame_index`` (s + C - 1, the index
within the episode of the observation) and, when the dataset has states, ``state``
((S,) float32, the true state row of the observation). At each step: ``step`` (steps since
reset) and ``action`` (the clipped action, float32).

``render_mode="rgb_array"``: :meth:`render` returns a copy of the current frame.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from visfore.core.errors import VisforeError

__all__ = ["ENV_ID", "LearnedSimEnv", "register"]

#: The gymnasium id.
ENV_ID = "LearnedSim-v0"
#: Its ``TimeLimit`` (steps), as the reacher datasets' episodes.
MAX_EPISODE_STEPS = 50


def register() -> None:
    """Register :data:`ENV_ID` with gymnasium (a no-op when it is registered already).

    The ``gymnasium.envs`` entry point of the ``visfore`` distribution; also run on import.
    """
    if ENV_ID not in gym.registry:
        gym.register(
            id=ENV_ID, entry_point="visfore.worldmodels.learned_sim:LearnedSimEnv", max_episode_steps=MAX_EPISODE_STEPS
        )


class LearnedSimEnv(gym.Env):
    """Gymnasium env backed by a forward-model checkpoint (see the module docstring).

    Args:
        run: a ``visfore train-model`` run directory.
        data: the dataset that provides the initial frames, a path or an fsspec URL such as
            ``s3://bucket/x.zarr`` (default: the one the model was trained on, from the
            run's ``config.yaml``). Its frame size and action dimension
            must match the model's.
        checkpoint: ``best`` or ``last``.
        max_steps: steps after which ``step`` returns ``truncated=True`` (None: never;
            the registration adds a TimeLimit of 50 anyway).
        device: torch device of the model: ``cpu`` (default), ``auto``, ``cuda``, ``cuda:N``.
        render_mode: None or ``"rgb_array"``.
        episodes: which dataset episodes reset may start from: ``"all"`` (default),
            ``"train"`` or ``"val"`` (the run's split), or a sequence of episode indices.
            Episodes shorter than C frames are skipped.

    Raises:
        VisforeError: a bad run, dataset, checkpoint or episode selection (one line).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}
    observation_space: spaces.Box
    action_space: spaces.Box

    def __init__(
        self,
        run: str | os.PathLike[str],
        data: str | os.PathLike[str] | None = None,
        checkpoint: str = "best",
        max_steps: int | None = 50,
        device: str = "cpu",
        render_mode: str | None = None,
        episodes: str | Sequence[int] = "all",
    ) -> None:
        # lazy: gymnasium's plugin entry point imports this module; no torch until an env is made
        from visfore.worldmodels.model_run import load_model_run

        super().__init__()
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        if max_steps is not None and (isinstance(max_steps, bool) or int(max_steps) < 1):
            raise ValueError(f"max_steps must be a positive int or None, got {max_steps!r}")
        self.render_mode = render_mode
        self.max_steps = None if max_steps is None else int(max_steps)
        self.model_run = load_model_run(run, checkpoint, device=device)
        self.dataset = self.model_run.open_dataset(data)
        mr, ds = self.model_run, self.dataset
        self.context_length = mr.context
        H, W = mr.image_size
        A = mr.action_dim
        low, high = mr.action_bounds(ds)
        self.observation_space = spaces.Box(0, 255, (H, W, 3), np.uint8)
        self.action_space = spaces.Box(low.astype(np.float32), high.astype(np.float32), (A,), np.float32)

        self._starts = ds.episode_starts
        self._lengths = ds.episode_lengths
        self._episodes = self._select_episodes(episodes)
        self._pixels = ds.array("pixels")
        self._actions = ds.array("action")
        self._states = ds.group["data/state"] if "data/state" in ds.group else None
        if self._states is not None and (self._states.ndim != 2 or self._states.shape[1] == 0):
            self._states = None

        self._window: Any = None  # (C, 3, H, W) float32 on the model's device
        self._window_actions: Any = None  # (C - 1, A) float32 on the model's device
        self._frame: np.ndarray | None = None
        self._steps = 0

    # ------------------------------------------------------------------ helpers
    def _select_episodes(self, episodes: str | Sequence[int]) -> np.ndarray:
        mr, C = self.model_run, self.context_length
        n = len(self._lengths)
        if isinstance(episodes, str):
            if episodes == "all":
                chosen = np.arange(n)
            elif episodes in ("train", "val"):
                chosen = np.asarray(mr.train_episodes if episodes == "train" else mr.val_episodes, np.int64)
                if chosen.size == 0:
                    raise VisforeError(f"{mr.run_dir} records no {episodes} episodes")
            else:
                raise VisforeError(f"episodes must be 'all', 'train', 'val' or a list of indices, got {episodes!r}")
        else:
            chosen = np.asarray(list(episodes), dtype=np.int64)
        bad = chosen[(chosen < 0) | (chosen >= n)]
        if bad.size:
            raise VisforeError(f"episode {int(bad[0])} out of range; the dataset has {n} episodes")
        chosen = np.unique(chosen)
        chosen = chosen[self._lengths[chosen] >= C]
        if chosen.size == 0:
            raise VisforeError(f"no episode of {self.dataset.path} has the {C} frames of context the model needs")
        return chosen

    def _to_uint8(self, x: Any) -> np.ndarray:
        from visfore.worldmodels.model_run import model_to_frames  # lazy: see __init__

        return model_to_frames(x)

    # ------------------------------------------------------------------ gym API
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start from real frames (see the module docstring).

        Args:
            seed: seeds ``self.np_random``.
            options: optional ``{"episode": e, "start": s}`` (each optional) choosing the
                episode and the start row of the context instead of drawing them.

        Returns:
            ``(frame (H, W, 3) uint8, info)``.
        """
        import torch  # lazy: see __init__

        from visfore.worldmodels.model_run import frames_to_model

        super().reset(seed=seed)
        options = dict(options or {})
        C = self.context_length
        if options.get("episode") is not None:
            episode = int(options["episode"])
            if episode not in set(self._episodes.tolist()):
                raise ValueError(f"options['episode']={episode} is not one of the env's episodes")
        else:
            episode = int(self._episodes[self.np_random.integers(len(self._episodes))])
        L = int(self._lengths[episode])
        if options.get("start") is not None:
            start = int(options["start"])
            if not 0 <= start <= L - C:
                raise ValueError(f"options['start']={start} must be in 0..{L - C} for episode {episode}")
        else:
            start = int(self.np_random.integers(L - C + 1))
        row = int(self._starts[episode]) + start
        context = np.asarray(self._pixels[row : row + C], dtype=np.uint8)  # (C, H, W, 3)
        acts = np.asarray(self._actions[row : row + C - 1], dtype=np.float32).reshape(C - 1, self.action_space.shape[0])
        dev = self.model_run.device
        self._window = frames_to_model(context, dev)
        self._window_actions = torch.from_numpy(acts).to(dev)
        self._frame = context[-1].copy()
        self._steps = 0
        info: dict[str, Any] = {
            "context": context,
            "context_actions": acts,
            "episode": episode,
            "start": start,
            "frame_index": start + C - 1,
        }
        if self._states is not None:
            info["state"] = np.asarray(self._states[row + C - 1], dtype=np.float32)
        return self._frame.copy(), info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Predict the next frame for ``action`` (clipped to the action bounds).

        Returns:
            ``(frame (H, W, 3) uint8, 0.0, False, truncated, {"step", "action"})``.

        Raises:
            ValueError: an action of another size or with non-finite entries.
            gymnasium.error.ResetNeeded: ``step`` before ``reset``.
        """
        import torch  # lazy: see __init__

        from visfore.worldmodels.model_run import frames_to_model
        from visfore.worldmodels.model_run import sample_seed as seeded

        if self._window is None:
            raise gym.error.ResetNeeded("call reset() before step()")
        a = np.asarray(action, dtype=np.float32)
        if a.size != self.action_space.shape[0]:
            raise ValueError(f"action must have {self.action_space.shape[0]} entries, got shape {a.shape}")
        a = a.reshape(self.action_space.shape)
        if not np.all(np.isfinite(a)):
            raise ValueError(f"action must be finite, got {a}")
        a = np.clip(a, self.action_space.low, self.action_space.high).astype(np.float32)
        mr = self.model_run
        seed = int(self.np_random.integers(2**63 - 1)) if mr.stochastic else None
        new = torch.from_numpy(a).to(mr.device)[None]  # (1, A)
        with torch.no_grad(), seeded(seed, mr.device):
            state = mr.model.init_state(self._window[None], self._window_actions[None])
            pred, _ = mr.model.imagine(state, new[None])  # (1, 1, 3, H, W)
        frame = self._to_uint8(pred[0, 0])  # (H, W, 3) uint8
        # roll the window: drop the oldest frame and its action, append the new frame
        self._window = torch.cat([self._window[1:], frames_to_model(frame, mr.device)[None]], dim=0)
        self._window_actions = torch.cat([self._window_actions, new], dim=0)[1:]  # the C - 1 actions between them
        self._frame = frame
        self._steps += 1
        truncated = self.max_steps is not None and self._steps >= self.max_steps
        return frame.copy(), 0.0, False, bool(truncated), {"step": self._steps, "action": a.copy()}

    def render(self) -> np.ndarray | None:
        """A copy of the current frame ((H, W, 3) uint8) with ``render_mode="rgb_array"``,
        else None."""
        if self.render_mode != "rgb_array" or self._frame is None:
            return None
        return self._frame.copy()

    def close(self) -> None:
        """Nothing to free: the model and the dataset handle are dropped with the env."""
        super().close()


register()
