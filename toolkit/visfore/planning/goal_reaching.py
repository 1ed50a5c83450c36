"""Goal-reaching episodes: run controllers toward a target pose and score them alike.

Shared by ``visfore plan`` (:mod:`visfore.planning.plan`: CEM on a learned forward model, CEM on
the true simulator, a random policy) and the through-model policy
(:mod:`visfore.planning.through_model`). Everything here is controller-agnostic:

* :func:`make_goal_env` creates the *real* env (``obs_mode="state+pixels"``) with frames
  of the forward model's size, from the env id / kwargs recorded in the model's dataset
  attrs, so the frames look like the training data;
* :class:`GoalController` is the protocol a controller implements (``reset`` with the
  goal frame, then ``act`` per step);
* :func:`run_goal_episodes` runs episodes with common random numbers and returns one
  :class:`GoalEpisode` per episode (optionally a GIF of each);
* :func:`summarize_goal_episodes` aggregates them per controller.

Seeding (:data:`SEEDING_SCHEME`): episode ``k`` of a run with seed ``s`` is reset with
``int(numpy.random.SeedSequence([s, k]).generate_state(1, numpy.uint32)[0])``, the same
scheme as ``visfore evaluate``, so every controller sees the same initial states and
targets (common random numbers); the controller's own generator for that episode is
``numpy.random.default_rng(SeedSequence([s, k]).spawn(1)[0])`` (as ``visfore collect``).

Distances are ``info["distance"]`` of :class:`visfore_envs.core.KeypointTargetEnv`: the
p2-norm of the stacked key-point differences ``||k - k*||`` in metres; an episode is a
success when the distance after its last step is below the threshold (the env's
``success_threshold``, 0.02 m for ReacherPlane-v0, unless one is given).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence, runtime_checkable

import gymnasium as gym
import numpy as np
from PIL import Image

from visfore.core.errors import VisforeError
from visfore.data.envs import resolve_env_id
from visfore.reports.panels import compose_panels, readable_scale
from visfore.worldmodels.predict import save_animation

__all__ = [
    "SEEDING_SCHEME",
    "GoalController",
    "GoalEpisode",
    "controller_rng",
    "episode_reset_seed",
    "evaluation_env_kwargs",
    "check_action_scale",
    "scale_action_box",
    "gif_scale",
    "goal_panel",
    "make_goal_env",
    "run_goal_episodes",
    "summarize_goal_episodes",
]

SEEDING_SCHEME = (
    "visfore-goal-seeding-v1: episode k of seed s is reset with "
    "int(numpy.random.SeedSequence([s, k]).generate_state(1, numpy.uint32)[0]); the "
    "controller gets numpy.random.default_rng(SeedSequence([s, k]).spawn(1)[0])"
)
#: An episode longer than this without ``terminated``/``truncated`` is an error.
MAX_EPISODE_STEPS = 100_000
#: Smallest integer upscaling of the GIF panels (64 px frames are small on a screen);
#: smaller frames get more (:func:`gif_scale`).
GIF_SCALE = 3
#: GIF frame rate (frames per second).
GIF_FPS = 10.0


#: Env options that only say how a *dataset's* episodes start (a collection choice, not
#: the env the planner is judged on): dropped from the dataset's ``env_kwargs`` when a
#: model's env is rebuilt for evaluation, so episodes start from the env's nominal state.
COLLECTION_ONLY_KWARGS = ("init_pose",)


# ---------------------------------------------------------------------------------------
# env
# ---------------------------------------------------------------------------------------
def evaluation_env_kwargs(dataset_kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    """The dataset's env kwargs without :data:`COLLECTION_ONLY_KWARGS` (e.g. a translator
    or planning dataset collected with ``init_pose="random"`` is still evaluated from the
    env's home pose)."""
    return {k: v for k, v in dict(dataset_kwargs or {}).items() if k not in COLLECTION_ONLY_KWARGS}


def check_action_scale(scale: Any) -> float:
    """``scale`` as a float, checked to be a finite fraction in (0, 1].

    Raises:
        VisforeError: one line naming ``--action-scale`` and the bad value.
    """
    ok = isinstance(scale, (int, float)) and not isinstance(scale, bool) and math.isfinite(float(scale))
    if not (ok and 0 < float(scale) <= 1):
        raise VisforeError(f"--action-scale must be in (0, 1], got {scale!r}")
    return float(scale)


def scale_action_box(low: Any, high: Any, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """``(centre - scale * half, centre + scale * half)``, each (A,) float32: the box
    ``[low, high]`` (action units) shrunk around its centre by ``scale`` (1 = the box)."""
    low, high = np.asarray(low, np.float64), np.asarray(high, np.float64)
    centre, half = (low + high) / 2, (high - low) / 2
    return (centre - scale * half).astype(np.float32), (centre + scale * half).astype(np.float32)


def make_goal_env(
    env_id: str, env_kwargs: Mapping[str, Any] | None, size: Sequence[int] | int, **overrides: Any
) -> Any:
    """The real goal-reaching env with ``(H, W)`` frames in ``obs_mode="state+pixels"``.

    Args:
        env_id: a short name (``reacher``) or registered id (``ReacherPlane-v0``); normally
            the ``env_id`` attr of the forward model's dataset.
        env_kwargs: the dataset's ``env_kwargs`` attr (camera, ``show_target`` ...), so
            frames look like the training data. May be None.
        size: ``(H, W)`` of the model's frames (pixels), or one int for square frames.
        **overrides: more ``gymnasium.make`` keyword arguments, winning over
            ``env_kwargs`` (e.g. ``success_threshold=0.05``, ``max_episode_steps=30``).
            ``obs_mode``, ``width`` and ``height`` are set here and may not be given.

    Returns:
        A ``gymnasium.Env`` whose ``unwrapped`` is a
        :class:`visfore_envs.core.KeypointTargetEnv` (it has ``render_goal()``,
        ``success_threshold``, ``model`` / ``data``); observations are ``{"state": (S,)
        float64, "pixels": (H, W, 3) uint8}``.

    Raises:
        VisforeError: unknown env id, bad kwargs (the env's own message), a reserved key
            in ``overrides``, a bad size, or an env that is not a key-point goal env.
    """
    if isinstance(size, (int, np.integer)):
        H = W = int(size)
    else:
        dims = [int(s) for s in size]
        if len(dims) != 2:
            raise VisforeError(f"size must be (H, W) or one int, got {size!r}")
        H, W = dims
    if H < 1 or W < 1:
        raise VisforeError(f"frame size must be positive, got {H}x{W}")
    reserved = sorted({"obs_mode", "width", "height"} & set(overrides))
    if reserved:
        raise VisforeError(f"make_goal_env sets {', '.join(reserved)} itself")
    env_id = resolve_env_id(str(env_id))
    kwargs = dict(env_kwargs or {})
    for key in ("obs_mode", "width", "height", "render_mode"):
        kwargs.pop(key, None)
    kwargs.update(overrides)
    kwargs.update(obs_mode="state+pixels", width=W, height=H)
    try:
        env = gym.make(env_id, **kwargs)
    except (TypeError, ValueError, gym.error.Error) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        message = message.split(" was raised from the environment creator")[0]
        raise VisforeError(f"cannot create {env_id} with {kwargs}: {message}") from None
    if not callable(getattr(env.unwrapped, "render_goal", None)):
        env.close()
        raise VisforeError(
            f"{env_id} is not a goal-reaching env (no render_goal(); use a KeypointTargetEnv such as ReacherPlane-v0)"
        )
    return env


# ---------------------------------------------------------------------------------------
# controllers and episodes
# ---------------------------------------------------------------------------------------
@runtime_checkable
class GoalController(Protocol):
    """What :func:`run_goal_episodes` drives.

    Attributes:
        name: short label in reports (``"learned-cem"``, ``"oracle-cem"``, ``"random"``,
            ``"through-model"``, ...).
        imagined: optional ``(K, H, W, 3)`` uint8, the latest imagined best rollout (for
            GIFs), or None.
    """

    name: str

    def reset(self, env: Any, obs: dict, goal_frame: np.ndarray, rng: np.random.Generator) -> None:
        """Start an episode. ``obs`` is the reset observation ``{"state", "pixels"}``,
        ``goal_frame`` ``(H, W, 3)`` uint8 the robot at the target pose
        (``env.unwrapped.render_goal()``) or an image file's content, ``rng`` the
        episode's generator (every random draw of the controller comes from it)."""
        ...

    def act(self, obs: dict, info: dict) -> np.ndarray:
        """The next action: ``(A,)`` float32 inside the env's action bounds."""
        ...


@dataclass
class GoalEpisode:
    """One episode of one controller.

    Attributes:
        controller: the controller's name.
        episode: episode index k.
        reset_seed: the env's reset seed (:func:`episode_reset_seed`).
        steps: actions taken.
        final_distance: ``info["distance"]`` after the last step, metres.
        min_distance: the smallest distance over the episode (reset included), metres.
        success: ``final_distance < success_threshold``.
        episode_return: sum of the env rewards (the env's reward mode).
        seconds_per_step: wall time spent in ``controller.act``, per step (seconds).
        initial_distance: the distance at reset, metres.
        success_threshold: the threshold used, metres.
        distances: the distance after each step (``steps`` values, metres).
    """

    controller: str
    episode: int
    reset_seed: int
    steps: int
    final_distance: float
    min_distance: float
    success: bool
    episode_return: float
    seconds_per_step: float
    initial_distance: float = math.nan
    success_threshold: float = math.nan
    distances: list[float] = field(default_factory=list, repr=False)

    def row(self) -> dict[str, Any]:
        """A flat dict for CSV (without the per-step ``distances``)."""
        d = asdict(self)
        d.pop("distances")
        return d

    def to_dict(self) -> dict[str, Any]:
        """Everything, JSON-plain."""
        return asdict(self)


def episode_reset_seed(seed: int, episode: int) -> int:
    """The env reset seed of episode ``episode`` (see :data:`SEEDING_SCHEME`), in [0, 2**32)."""
    return int(np.random.SeedSequence([int(seed), int(episode)]).generate_state(1, np.uint32)[0])


def controller_rng(seed: int, episode: int) -> np.random.Generator:
    """The controller's generator for episode ``episode`` (see :data:`SEEDING_SCHEME`)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(episode)]).spawn(1)[0])


def gif_scale(height: int, width: int) -> int:
    """The upscaling of a GIF panel for ``height x width`` frames (pixels): at least
    :data:`GIF_SCALE`, and enough for :data:`~visfore.reports.panels.MIN_PANEL_PX` pixels on
    the short side (32 px frames -> 4, 64 px -> 3)."""
    return max(GIF_SCALE, readable_scale(height, width))


def goal_panel(
    real: np.ndarray,
    goal: np.ndarray,
    imagined: np.ndarray | None = None,
    *,
    step: int | None = None,
    scale: int | None = None,
    imagined_caption: str = "imagined (plan end)",
) -> np.ndarray:
    """One GIF frame: ``[observation | imagined | goal]`` side by side, labelled
    (:func:`visfore.reports.panels.compose_panels`).

    Args:
        real: ``(H, W, 3)`` uint8, the env's frame (captioned ``observation t=<step>``, or
            ``observation`` when ``step`` is None).
        goal: the goal frame (uint8, resized to ``H x W`` by nearest neighbour if needed).
        imagined: None (panel left out) or the last frame of the controller's imagined
            best rollout, captioned ``imagined_caption``.
        step: actions taken before ``real`` (0 = the reset frame).
        scale: integer upscaling; None: :func:`gif_scale` of ``H x W``.

    Returns:
        ``(CAPTION_HEIGHT + s * H, n * s * W + n - 1, 3)`` uint8 for ``n`` panels (2 or 3)
        and scale ``s``, 1-pixel white columns between panels.
    """
    real = np.asarray(real, dtype=np.uint8)
    H, W = real.shape[:2]
    panels = [real]
    captions = ["observation" if step is None else f"observation t={int(step)}"]
    if imagined is not None:
        panels.append(imagined)
        captions.append(imagined_caption)
    panels.append(goal)
    captions.append("goal")
    fitted = []
    for p in panels:
        p = np.asarray(p, dtype=np.uint8)
        if p.shape[:2] != (H, W):
            p = np.asarray(Image.fromarray(p).resize((W, H), Image.Resampling.NEAREST))
        fitted.append(p)
    return compose_panels(fitted, captions, gif_scale(H, W) if scale is None else int(scale))


def _imagined_frame(controller: Any) -> np.ndarray | None:
    imagined = getattr(controller, "imagined", None)
    if imagined is None:
        return None
    imagined = np.asarray(imagined)
    if imagined.ndim != 4 or imagined.shape[0] == 0:
        return None
    return imagined[-1]


def _gif_panels(frames: Sequence[tuple[np.ndarray, np.ndarray | None]], goal: np.ndarray) -> list[np.ndarray]:
    """GIF frames of one episode (frame ``t`` after ``t`` actions): an imagined panel in
    every frame when any step has one (mid-grey, captioned ``no plan yet``, before the
    first plan), none otherwise."""
    any_imagined = any(im is not None for _, im in frames)
    blank = np.full_like(np.asarray(goal, np.uint8), 128)
    out = []
    for t, (real, im) in enumerate(frames):
        if any_imagined and im is None:
            out.append(goal_panel(real, goal, blank, step=t, imagined_caption="imagined: no plan yet"))
        else:
            out.append(goal_panel(real, goal, im, step=t))
    return out


def run_goal_episodes(
    make_env: Callable[[], Any],
    controller: GoalController,
    *,
    episodes: int,
    seed: int,
    steps: int | None = None,
    success_threshold: float | None = None,
    gif_dir: Path | None = None,
    progress: Callable[[GoalEpisode], None] | None = None,
    goal_frame: np.ndarray | None = None,
    first_episode: int = 0,
    on_step: Callable[[int, int], None] | None = None,
) -> list[GoalEpisode]:
    """Run ``episodes`` episodes of ``controller`` in one env made by ``make_env()``.

    Args:
        make_env: returns the real env (e.g. ``lambda: make_goal_env(...)``); called once,
            closed at the end.
        controller: a :class:`GoalController`.
        episodes: number of episodes (>= 1).
        seed: run seed; episode k is reset with :func:`episode_reset_seed` ``(seed, k)``
            whatever the controller (common random numbers).
        steps: actions per episode; None: until the env truncates or terminates (its
            TimeLimit). An episode also ends early when the env terminates or truncates.
        success_threshold: metres (> 0); None: the env's ``success_threshold``.
        gif_dir: when given, ``gif_dir/<controller>-ep<k>.gif``: one frame per step,
            ``[real frame | imagined best rollout, last frame (if the controller has one)
            | goal]``, labelled and upscaled (:func:`goal_panel`); the first frame shows the
            reset observation.
        progress: called with each finished :class:`GoalEpisode` (e.g. to save results as
            they come, so Ctrl-C keeps finished episodes).
        goal_frame: ``(H, W, 3)`` uint8 to plan toward instead of the env's rendered
            target pose (``--goal image.png``); the distance to the env's own target is
            still what is scored.
        first_episode: index of the first episode (to continue an interrupted run).
        on_step: called as ``on_step(k, t)`` after each control step (``env.step``) of
            episode ``k``, ``t`` the actions taken so far in it (1, 2, ...), e.g. to
            advance a progress bar per step; its time is not counted in
            ``seconds_per_step``.

    Returns:
        One :class:`GoalEpisode` per episode, in order.

    Raises:
        VisforeError: ``episodes < 1``, a bad ``steps`` / ``success_threshold``, an action
            of the wrong shape, or an episode that never ends (``steps=None`` and no time
            limit, after :data:`MAX_EPISODE_STEPS`).
    """
    if isinstance(episodes, bool) or int(episodes) < 1:
        raise VisforeError(f"episodes must be >= 1, got {episodes!r}")
    if steps is not None and (isinstance(steps, bool) or int(steps) < 1):
        raise VisforeError(f"steps must be >= 1 or None, got {steps!r}")
    if success_threshold is not None and not (float(success_threshold) > 0):
        raise VisforeError(f"success threshold must be > 0 metres, got {success_threshold!r}")
    name = str(getattr(controller, "name", type(controller).__name__))
    env = make_env()
    results: list[GoalEpisode] = []
    try:
        base = env.unwrapped
        threshold = float(
            success_threshold if success_threshold is not None else getattr(base, "success_threshold", math.nan)
        )
        A = int(np.prod(env.action_space.shape))
        limit = int(steps) if steps is not None else MAX_EPISODE_STEPS
        for k in range(int(first_episode), int(first_episode) + int(episodes)):
            reset_seed = episode_reset_seed(seed, k)
            obs, info = env.reset(seed=reset_seed)
            goal = base.render_goal() if goal_frame is None else np.asarray(goal_frame, np.uint8)
            controller.reset(env, obs, goal, controller_rng(seed, k))
            d0 = float(info.get("distance", math.nan))
            distances: list[float] = []
            ret = 0.0
            spent = 0.0
            frames: list[tuple[np.ndarray, np.ndarray | None]] = []  # (real, imagined)
            if gif_dir is not None:
                frames.append((obs["pixels"], _imagined_frame(controller)))
            t = 0
            while t < limit:
                t0 = time.perf_counter()
                action = np.asarray(controller.act(obs, info), dtype=np.float32)
                spent += time.perf_counter() - t0
                if action.shape != (A,):
                    raise VisforeError(f"controller {name} returned an action of shape {action.shape}, expected ({A},)")
                obs, reward, terminated, truncated, info = env.step(action)
                t += 1
                ret += float(reward)
                distances.append(float(info.get("distance", math.nan)))
                if on_step is not None:
                    on_step(k, t)
                if gif_dir is not None:
                    frames.append((obs["pixels"], _imagined_frame(controller)))
                if terminated or truncated:
                    break
            else:
                if steps is None:
                    raise VisforeError(f"episode {k} did not end after {MAX_EPISODE_STEPS} steps; give steps")
            final = distances[-1] if distances else d0
            result = GoalEpisode(
                controller=name,
                episode=k,
                reset_seed=reset_seed,
                steps=t,
                final_distance=final,
                min_distance=float(np.nanmin([d0, *distances])),
                success=bool(final < threshold),
                episode_return=ret,
                seconds_per_step=spent / max(t, 1),
                initial_distance=d0,
                success_threshold=threshold,
                distances=distances,
            )
            if gif_dir is not None:
                Path(gif_dir).mkdir(parents=True, exist_ok=True)
                save_animation(Path(gif_dir) / f"{name}-ep{k:03d}.gif", _gif_panels(frames, goal), GIF_FPS)
            results.append(result)
            if progress is not None:
                progress(result)
    finally:
        env.close()
    return results


def _stats(values: Sequence[float]) -> dict[str, float]:
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return {"mean": math.nan, "std": math.nan, "median": math.nan}
    return {
        "mean": float(x.mean()),
        "std": float(x.std(ddof=1)) if x.size > 1 else 0.0,
        "median": float(np.median(x)),
    }


def summarize_goal_episodes(episodes: Sequence[GoalEpisode], thresholds: Sequence[float] = ()) -> dict[str, dict]:
    """Aggregate episodes per controller (in order of first appearance).

    Args:
        episodes: :class:`GoalEpisode` of any number of controllers.
        thresholds: extra success thresholds (metres) to report as
            ``success_rate@<t>`` (e.g. a looser 0.05 m).

    Returns:
        ``{controller: {"n", "success_rate", "final_distance": {"mean", "std", "median"},
        "min_distance_mean", "initial_distance_mean", "return_mean", "seconds_per_step_mean",
        "steps_mean", "success_threshold", "success_rate@<t>" ...}}``; rates in [0, 1],
        distances in metres, times in seconds (std: sample std, ddof 1; 0 for one episode).
    """
    out: dict[str, dict] = {}
    groups: dict[str, list[GoalEpisode]] = {}
    for e in episodes:
        groups.setdefault(e.controller, []).append(e)
    for name, eps in groups.items():
        final = [e.final_distance for e in eps]
        entry: dict[str, Any] = {
            "n": len(eps),
            "success_rate": float(np.mean([e.success for e in eps])),
            "success_threshold": float(eps[0].success_threshold),
            "final_distance": _stats(final),
            "min_distance_mean": float(np.mean([e.min_distance for e in eps])),
            "initial_distance_mean": float(np.mean([e.initial_distance for e in eps])),
            "return_mean": float(np.mean([e.episode_return for e in eps])),
            "seconds_per_step_mean": float(np.mean([e.seconds_per_step for e in eps])),
            "steps_mean": float(np.mean([e.steps for e in eps])),
        }
        for t in thresholds:
            entry[f"success_rate@{float(t):g}"] = float(np.mean([d < float(t) for d in final]))
        out[name] = entry
    return out
