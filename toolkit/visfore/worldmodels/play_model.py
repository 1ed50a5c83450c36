"""``visfore play-model``: drive a trained forward model as an environment (``LearnedSim-v0``).

Policies (``--policy``):

* ``keyboard`` (default): with a display, a live matplotlib window; keys set action
  components while held (released: the middle of the bounds, 0 for symmetric bounds):

  ====================  ===============  ====================
  action component      lower bound key  upper bound key
  ====================  ===============  ====================
  0                     left arrow       right arrow
  1                     down arrow       up arrow
  2                     a                d
  3                     s                w
  4                     j                l
  5                     k                i
  6                     z                x
  7                     c                v
  ====================  ===============  ====================

  Further components stay at the middle. ``r`` starts a new episode, ``q`` or Escape (or
  closing the window) ends the session. matplotlib's own key bindings are switched off in
  that window. Without a display (see below) the keyboard policy cannot read keys: the
  random policy plays instead, and the command says so.
* ``random``: ``env.action_space.sample()``, the space seeded with ``--seed``.
* a ``visfore train-policy`` run directory: its deterministic policy
  (:func:`visfore.rl.policy_run.load_policy_run`), when its action space (shape and bounds)
  is the model's and it takes ``(H, W, 3)`` pixel observations of the model's frame size;
  else a one-line error.

Display: ``DISPLAY`` or ``WAYLAND_DISPLAY`` set (non-empty), macOS or Windows. With a
display and the keyboard policy a window opens (``--out`` is then optional and written
when the window closes). Otherwise (headless, or ``--headless``, or another policy) the
frames go to the GIF/MP4 ``--out``, by default ``play-<run name>.gif`` in the current
directory (:func:`default_out`; ``play-<run name>-1.gif``, ``-2``, ... when that name is
taken). Nothing is written into the run directory (the model's record) unless ``--out``
says so, and nothing is overwritten: an existing ``--out`` is an error before anything
runs.

The animation holds one frame per step: frame ``i`` is the observation the policy acted
on at step ``i`` (so it starts with the reset frame), upscaled by ``--scale`` (nearest
neighbour) under a 12-pixel caption with the step, the episode and the action. When an
episode is truncated (``LearnedSim-v0`` has a TimeLimit of 50 steps) the env is reset
(unseeded, continuing the seeded RNG) and play goes on until ``--steps`` steps.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import gymnasium as gym
import matplotlib
import matplotlib.pyplot as plt
import numpy as np
from gymnasium import spaces

from visfore.core.errors import VisforeError
from visfore.core.threads import torch_threads
from visfore.worldmodels import learned_sim  # noqa: F401  (registers LearnedSim-v0)
from visfore.worldmodels.config import PlayModelConfig
from visfore.worldmodels.predict import check_animation_path, compose_panels, save_animation

__all__ = [
    "KEY_BINDINGS",
    "PlayResult",
    "default_out",
    "has_display",
    "keyboard_action",
    "play_model",
    "result_line",
]

#: (decrease key, increase key) of action components 0, 1, ... (matplotlib key names).
KEY_BINDINGS: tuple[tuple[str, str], ...] = (
    ("left", "right"),
    ("down", "up"),
    ("a", "d"),
    ("s", "w"),
    ("j", "l"),
    ("k", "i"),
    ("z", "x"),
    ("c", "v"),
)
_QUIT_KEYS = ("q", "escape")
_RESET_KEY = "r"
ENV_ID = "LearnedSim-v0"


def has_display() -> bool:
    """Whether a window can open: ``DISPLAY`` or ``WAYLAND_DISPLAY`` set and non-empty, or
    macOS / Windows."""
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def default_out(run: str | os.PathLike[str], directory: str | os.PathLike[str] | None = None) -> Path:
    """Where ``play-model`` writes without ``--out``: ``play-<run name>.gif`` in
    ``directory`` (default: the current directory), or the first free
    ``play-<run name>-N.gif`` (N = 1, 2, ...) when that exists, so no earlier animation is
    overwritten.

    Args:
        run: the train-model run directory; its (resolved) name names the file.
        directory: where the file goes (default: :func:`pathlib.Path.cwd`).

    Returns:
        An absolute path that does not exist (yet).
    """
    name = Path(run).resolve().name or "model"
    folder = Path.cwd() if directory is None else Path(directory).absolute()
    path, n = folder / f"play-{name}.gif", 0
    while path.exists() or path.is_symlink():
        n += 1
        path = folder / f"play-{name}-{n}.gif"
    return path


def keyboard_action(keys: Iterable[str], low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """The action for the keys held (see :data:`KEY_BINDINGS`).

    Args:
        keys: matplotlib key names currently held (e.g. ``{"left", "w"}``).
        low, high: (A,) action bounds.

    Returns:
        (A,) float32: ``low[i]`` / ``high[i]`` where the decrease / increase key of component
        ``i`` is held (both held: the middle), else ``(low + high) / 2``.
    """
    low = np.asarray(low, np.float32)
    high = np.asarray(high, np.float32)
    action = (low + high) / 2
    held = {str(k).lower() for k in keys}
    for i, (down, up) in enumerate(KEY_BINDINGS[: len(action)]):
        if down in held and up not in held:
            action[i] = low[i]
        elif up in held and down not in held:
            action[i] = high[i]
    return action.astype(np.float32)


@dataclass
class PlayResult:
    """What :func:`play_model` did.

    Attributes:
        out: the animation written (``--out``, else :func:`default_out`), or None (a window
            session without ``--out``).
        steps: env steps taken; frames: frames in the animation (= steps).
        episodes: episodes started (resets).
        policy: ``keyboard``, ``random`` or the policy run directory.
        window: whether a live window was shown.
    """

    out: Path | None
    steps: int
    frames: int
    episodes: int
    policy: str
    window: bool


def _caption_frame(obs: np.ndarray, text: str, scale: int) -> np.ndarray:
    return compose_panels([obs], [text], scale)


def _format_action(a: np.ndarray) -> str:
    return "[" + " ".join(f"{x:+.2f}" for x in np.asarray(a).reshape(-1)) + "]"


def _policy_fn(
    policy: str, env: Any, seed: int, echo: Callable[[str], None], load_policy: Callable[[Path], Any] | None = None
) -> tuple[str, Callable[[np.ndarray], np.ndarray]]:
    """(label, obs -> action) for ``random`` or a train-policy run directory (loaded by
    ``load_policy``, e.g. :func:`visfore.rl.policy_run.load_policy_run`: policies belong to
    a higher layer, so the caller hands the loader in)."""
    if policy == "random":
        env.action_space.seed(seed)
        return "random", lambda obs: env.action_space.sample()
    path = Path(policy)
    if not path.is_dir():
        raise VisforeError(f"--policy must be keyboard, random or a train-policy run directory, got {policy!r}")
    if load_policy is None:
        raise VisforeError(
            "playing a train-policy run needs a policy loader (the visfore play-model command passes one)"
        )
    pr = load_policy(path)
    _check_policy_spaces(pr, env, path)
    return str(path), pr.predict


def _check_policy_spaces(pr: Any, env: Any, path: Path) -> None:
    """One-line errors when the policy's action or observation space does not fit."""
    mine, theirs = env.action_space, pr.action_space
    if (
        not isinstance(theirs, spaces.Box)
        or tuple(theirs.shape) != tuple(mine.shape)
        or not np.allclose(theirs.low, mine.low)
        or not np.allclose(theirs.high, mine.high)
    ):
        desc = (
            f"Box{tuple(theirs.shape)} in [{_format_action(theirs.low)}, {_format_action(theirs.high)}]"
            if isinstance(theirs, spaces.Box)
            else type(theirs).__name__
        )
        raise VisforeError(
            f"the policy of {path} acts in {desc} but the model takes Box{tuple(mine.shape)} in "
            f"[{_format_action(mine.low)}, {_format_action(mine.high)}]"
        )
    obs_space = pr.model.observation_space
    H, W, _ = env.observation_space.shape
    shape = tuple(getattr(obs_space, "shape", None) or ())
    if isinstance(obs_space, spaces.Dict) or shape not in ((H, W, 3), (3, H, W)):
        desc = "a Dict" if isinstance(obs_space, spaces.Dict) else str(shape)
        raise VisforeError(f"the policy of {path} takes observations {desc}, but the model gives ({H}, {W}, 3) frames")


def play_model(
    config: PlayModelConfig,
    *,
    echo: Callable[[str], None] | None = print,
    load_policy: Callable[[Path], Any] | None = None,
) -> PlayResult:
    """Run ``LearnedSim-v0`` on a trained model with a policy (see the module docstring).

    Args:
        config: the options (:class:`~visfore.worldmodels.config.PlayModelConfig`: the
            run, ``data``, ``policy`` (``keyboard``, ``random`` or a train-policy run
            directory), ``steps``, ``out`` (without a window, default :func:`default_out`:
            ``play-<run name>.gif`` in the current directory, numbered when taken; an
            existing file is never overwritten),
            ``seed``, ``checkpoint``, ``fps``, ``scale``, ``device``, ``headless``: a
            window opens only with a display, the keyboard policy and no ``headless``).
        echo: where messages go (None: silent; ``config.quiet`` is the command line's way
            to pass None).
        load_policy: ``run_dir -> policy run`` (with ``predict``, ``action_space`` and
            ``model.observation_space``) for a train-policy ``policy``.

    Returns:
        A :class:`PlayResult`.

    Raises:
        VisforeError: bad input (one line), before anything is written; an existing
            ``--out`` is bad input.
        TypeError: ``config`` is not a :class:`PlayModelConfig`.
    """
    if not isinstance(config, PlayModelConfig):
        raise TypeError(
            f"play_model takes a PlayModelConfig, e.g. play_model(PlayModelConfig(run=...)); "
            f"got {type(config).__name__}"
        )
    run, data, policy, steps, seed = config.run, config.data, config.policy, config.steps, config.seed
    fps, scale, headless = config.fps, config.scale, config.headless
    say = echo or (lambda _msg: None)
    if isinstance(steps, bool) or steps < 1:
        raise VisforeError(f"--steps must be >= 1, got {steps}")
    if isinstance(scale, bool) or scale < 1:
        raise VisforeError(f"--scale must be >= 1, got {scale}")
    if not fps > 0:
        raise VisforeError(f"--fps must be > 0, got {fps}")
    out = None if config.out is None else check_animation_path(config.out)
    if out is not None and (out.exists() or out.is_symlink()):
        raise VisforeError(
            f"--out {out} already exists and play-model does not overwrite; choose another --out, "
            "or leave it out for a new numbered play-<run name>.gif in the current directory"
        )
    window = policy == "keyboard" and not headless and has_display()

    with torch_threads(None):  # LearnedSim steps the model: use the cores others leave free
        env = gym.make(
            ENV_ID,
            run=str(run),
            data=None if data is None else str(data),
            checkpoint=config.checkpoint,
            device=config.device,
            render_mode="rgb_array",
        )
        try:
            if policy == "keyboard" and not window:
                why = "--headless given" if headless else "no display (DISPLAY and WAYLAND_DISPLAY unset)"
                say(f"{why}: the keyboard policy needs a window, so the random policy plays instead")
                policy = "random"
            if window:
                result = _play_window(env, steps=steps, seed=seed, fps=fps, scale=scale, say=say)
                frames, n_episodes, taken = result
                label = "keyboard"
            else:
                label, act = _policy_fn(policy, env, seed, say, load_policy)
                frames, n_episodes, taken = _play_headless(env, act, steps=steps, seed=seed, scale=scale)
                if out is None:
                    out = default_out(run)  # chosen once the frames exist: the first free name then
        finally:
            env.close()
    if out is not None and frames:
        save_animation(out, frames, fps)
    played = PlayResult(
        out=Path(out) if out is not None and frames else None,
        steps=taken,
        frames=len(frames),
        episodes=n_episodes,
        policy=label,
        window=window,
    )
    if played.out is not None:
        say(result_line(played))
    return played


def result_line(result: PlayResult) -> str:
    """``wrote N frames (...) to OUT``: the line ``play-model`` prints (``--quiet`` too)."""
    return (
        f"wrote {result.frames} frames ({result.steps} steps, {result.episodes} episode(s), "
        f"policy {result.policy}) to {result.out}"
    )


def _play_headless(
    env: Any, act: Callable[[np.ndarray], np.ndarray], *, steps: int, seed: int, scale: int
) -> tuple[list[np.ndarray], int, int]:
    frames: list[np.ndarray] = []
    obs, info = env.reset(seed=seed)
    episode, episodes, t = info["episode"], 1, 0
    for i in range(steps):
        action = np.asarray(act(obs), dtype=np.float32)
        frames.append(_caption_frame(obs, f"{i} ep{episode} t{t} {_format_action(action)}", scale))
        obs, _, terminated, truncated, info = env.step(action)
        t += 1
        if (terminated or truncated) and i < steps - 1:
            obs, info = env.reset()
            episode, episodes, t = info["episode"], episodes + 1, 0
    return frames, episodes, steps


def _play_window(
    env: Any, *, steps: int, seed: int, fps: float, scale: int, say: Callable[[str], None]
) -> tuple[list[np.ndarray], int, int]:  # pragma: no cover - needs a display
    if matplotlib.get_backend().lower() in ("agg", "pdf", "svg", "ps", "cairo", "template"):
        for backend in ("MacOSX", "QtAgg", "TkAgg", "GTK4Agg", "GTK3Agg", "WXAgg"):
            try:
                plt.switch_backend(backend)
                break
            except Exception:  # noqa: BLE001 - try the next interactive backend
                continue
        else:
            raise VisforeError("no interactive matplotlib backend (install tkinter or PyQt); use --headless")
    low, high = env.action_space.low, env.action_space.high
    keys = ", ".join(f"{d}/{u} -> a[{i}]" for i, (d, u) in enumerate(KEY_BINDINGS[: len(low)]))
    say(f"keys: {keys}; r: new episode; q/Esc: quit")

    held: set[str] = set()
    state = {"quit": False, "reset": False}

    def on_press(event: Any) -> None:
        key = (event.key or "").lower()
        if key in _QUIT_KEYS:
            state["quit"] = True
        elif key == _RESET_KEY:
            state["reset"] = True
        else:
            held.add(key)

    def on_release(event: Any) -> None:
        held.discard((event.key or "").lower())

    def on_close(event: Any) -> None:
        state["quit"] = True

    with matplotlib.rc_context({k: [] for k in matplotlib.rcParams if k.startswith("keymap.")}):
        fig, ax = plt.subplots(figsize=(5, 5))
        manager = fig.canvas.manager
        handler_id = None if manager is None else manager.key_press_handler_id
        if handler_id is not None:
            fig.canvas.mpl_disconnect(handler_id)
        fig.canvas.mpl_connect("key_press_event", on_press)
        fig.canvas.mpl_connect("key_release_event", on_release)
        fig.canvas.mpl_connect("close_event", on_close)
        ax.axis("off")
        obs, info = env.reset(seed=seed)
        episode, episodes, t = info["episode"], 1, 0
        image = ax.imshow(obs, interpolation="nearest")
        title = ax.set_title("")
        frames: list[np.ndarray] = []
        taken = 0
        plt.show(block=False)
        while taken < steps and not state["quit"]:
            action = keyboard_action(held, low, high)
            text = f"{taken} ep{episode} t{t} {_format_action(action)}"
            frames.append(_caption_frame(obs, text, scale))
            image.set_data(obs)
            title.set_text(text)
            fig.canvas.draw_idle()
            plt.pause(1.0 / fps)
            obs, _, terminated, truncated, info = env.step(action)
            taken += 1
            t += 1
            if terminated or truncated or state["reset"]:
                state["reset"] = False
                obs, info = env.reset()
                episode, episodes, t = info["episode"], episodes + 1, 0
        plt.close(fig)
    return frames, episodes, taken
