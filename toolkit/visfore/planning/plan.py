"""``visfore plan``: visual model-predictive control with CEM on a learned forward model,
measured against CEM on the true simulator and a random policy.

Controllers (``--controllers``; all share the action bounds, the episodes and the
seeds, :mod:`visfore.planning.goal_reaching`):

* ``learned`` (``learned-cem``): CEM (:mod:`visfore.planning.cem`) over action sequences scored on
  the frames the forward model of ``--model RUN`` imagines (Finn & Levine 2017; Ebert et
  al. 2018). The model's context is the last C real frames and the C - 1 actions taken
  between them (at the start of an episode the reset frame repeated, with zero actions);
  all N candidate sequences are appended and predicted in one batched forward pass
  (``--batch-chunk`` splits it only to bound memory)::

      model(context (N, C, 3, H, W), actions (N, C - 1 + T, A)) -> (N, T, 3, H, W)

* ``oracle`` (``oracle-cem``): the same CEM and budget (iterations x samples x horizon x
  repeat), but each candidate is rolled out in the true MuJoCo model from the current
  state (``mujoco.rollout`` from ``mj_getState(..., mjSTATE_FULLPHYSICS)``, one C call for
  all N candidates, ``frame_skip`` physics steps per env step, exactly ``env.step``'s
  integration) and scored on frames rendered by the env's own renderer (pixel costs) or
  on the true key points (``--oracle-cost``). The gap between ``learned`` and ``oracle``
  is what the learned model costs.
* ``random``: independent uniform actions in the bounds (the floor to beat).
* ``through-model``: a policy trained by backpropagating through the model (``--policy
  RUN``, :func:`visfore.planning.through_model.load_through_model_policy`).

Costs (``--cost``; lower is better, per candidate):

* ``pixels``: MSE between predicted frames and the goal frame on [0, 1] intensities (mean
  over H, W, 3), of the final predicted frame (``--cost-frames final``) or the mean over
  every predicted frame (``all``), times ``--pixel-weight``;
* ``keypoints``: ``||kp(frame) - kp(goal)||_2`` (metres) through a key-point
  :class:`Translator` (``--translator RUN``, a ``visfore train-translator`` run of the
  same env, :class:`RunTranslator`), on the final frame or averaged over every frame,
  times ``--keypoint-weight``;
* ``pixels+keypoints``: the weighted sum.

``--pixel-blur SIGMA`` blurs predicted and goal frames with a Gaussian of SIGMA pixels before
the MSE (:func:`gaussian_blur`): a thin arm a few pixels off the goal pose then still
overlaps it, which widens the basin of the pixel cost (0, the default, is the plain MSE).

The oracle scores with ``--oracle-cost``: ``same`` (default: the learned controller's
pixel cost on rendered frames, so the learned/oracle gap isolates the model), ``pixels``,
``keypoints`` (true key points vs the env's target, metres: the best a planner can do with
this budget) or ``pixels+keypoints``.

MPC loop (receding horizon): plan T = ``blocks * repeat`` steps, execute the best sequence
for ``--replan-every`` steps, replan from the new frame, warm-starting from the previous
mean shifted by the executed steps (PETS; :func:`visfore.planning.cem.shift_mean`). With
``--shrink-horizon``, a plan made fewer than T steps before the env's time limit scores only
the steps left, so its cost is taken at the episode's last step, where success is measured
(shrinking-horizon MPC, the default); ``--fixed-horizon`` always scores step T.

Goals: without ``--goal``, the env's target pose rendered as an image
(``env.unwrapped.render_goal()``: the robot at the target configuration), so success can
be scored (final key-point distance under the env's threshold, 0.02 m for
ReacherPlane-v0). ``--goal image.png`` plans toward an image file instead (resized to the
model's frame size); the distances then still refer to the env's own random targets.

Output (``runs/plan-<UTC time>/`` or ``--out``): ``config.yaml``, ``episodes.csv`` /
``episodes.json`` (rewritten after every episode, atomically), ``summary.json``,
``report.md``, ``report.html`` (self-contained), ``distance.png``, and
``gifs/<controller>-epNNN.gif`` (real frame | imagined best rollout, last frame | goal).
Episodes run interleaved (episode k of every controller, then k + 1), so Ctrl-C keeps
balanced finished episodes and writes the report of them (exit 130).
"""

from __future__ import annotations

import base64
import functools
import html as _html
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence

import mujoco
import mujoco.rollout
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from rich.table import Table

from visfore.core import provenance, runs
from visfore.core.console import stdout_console
from visfore.core.device import parse_device_spec, select_device
from visfore.core.errors import VisforeError
from visfore.core.progress import episode_progress
from visfore.core.runs import resolve_run_dir
from visfore.data.envs import resolve_env_id
from visfore.perception.translator_run import load_translator_run
from visfore.planning.cem import CEMConfig, CEMResult, cem, shift_mean
from visfore.planning.config import (  # noqa: F401 (re-exported: the plan API)
    CONTROLLER_LABELS,
    DEFAULT_EXTRA_THRESHOLDS,
    PlanConfig,
    parse_controllers,
    parse_thresholds,
    resolve_blocks,
)
from visfore.planning.goal_reaching import (
    SEEDING_SCHEME,
    GoalEpisode,
    check_action_scale,
    evaluation_env_kwargs,
    make_goal_env,
    run_goal_episodes,
    scale_action_box,
    summarize_goal_episodes,
)
from visfore.planning.through_model import load_through_model_policy
from visfore.reports.report_html import (
    fmt,
    html_page,
    html_table,
    jsonable,
    md_table,
    png_data_uri,
    pyplot,
    save_figure,
    write_csv,
)
from visfore.worldmodels.model_run import frames_to_model, load_model_run, model_to_frames, sample_seed

log = logging.getLogger(__name__)

COMMAND = "plan"
MAX_EPISODES = 10_000


def validate_config(config: PlanConfig) -> PlanConfig:
    """Check every option that needs no file; returns a normalised copy.

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
    integer("episodes", c.episodes, 1, MAX_EPISODES)
    if c.steps is not None:
        integer("steps", c.steps, 1)
    integer("seed", c.seed, 0)
    c.cem_config.validate()
    integer("replan-every", c.replan_every, 1)
    if c.replan_every > c.horizon:
        raise VisforeError(f"--replan-every {c.replan_every} must be <= the horizon blocks x repeat = {c.horizon}")
    check_action_scale(c.action_scale)
    c.check_choices()  # cost, cost_frames, oracle_cost, checkpoint, execute (Literal choices)
    positive("pixel-weight", c.pixel_weight, strict=False)
    positive("keypoint-weight", c.keypoint_weight, strict=False)
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
    if "keypoints" in c.cost and "learned" in c.controllers and not c.translator:
        raise VisforeError(f"--cost {c.cost} needs --translator RUN (a key-point translator)")
    if c.model is None and c.env is None:
        raise VisforeError("give --env (or --model RUN, whose dataset names the env)")
    return c


# ---------------------------------------------------------------------------------------
# goal images and translators
# ---------------------------------------------------------------------------------------
def load_goal_image(path: str | Path, size: tuple[int, int]) -> np.ndarray:
    """Read an image file as the goal frame.

    Args:
        path: PNG / JPEG / ... readable by Pillow.
        size: ``(H, W)`` of the model's frames; the image is converted to RGB and resized
            (bilinear, Pillow) when it differs.

    Returns:
        ``(H, W, 3)`` uint8.

    Raises:
        VisforeError: missing file, a directory, or not a readable image.
    """
    p = Path(path)
    if not p.exists():
        raise VisforeError(f"--goal {p} does not exist")
    if not p.is_file():
        raise VisforeError(f"--goal {p} is not a file")
    try:
        with Image.open(p) as im:
            rgb = im.convert("RGB")
            H, W = size
            if rgb.size != (W, H):
                rgb = rgb.resize((W, H), Image.Resampling.BILINEAR)
            return np.asarray(rgb, dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise VisforeError(f"--goal {p} is not a readable image ({type(exc).__name__})") from None


class Translator(Protocol):
    """A key-point translator: frames -> key points (``visfore train-translator``; the
    frames-to-pose reading that ``visfore mimic`` also uses).

    ``translator(frames)`` with frames ``(B, 3, H, W)`` float32 in [0, 1] (a torch tensor
    on the planner's device) returns ``(B, G)`` key points in metres, in the env's layout
    (``[p0_x, p0_y(, p0_z), p1_x, ...]``, :class:`visfore_envs.core.KeypointTargetEnv`).
    """

    def __call__(self, frames: Any) -> Any: ...


class RunTranslator:
    """A ``visfore train-translator`` run (:class:`visfore.perception.translator_run.TranslatorRun`)
    as a :class:`Translator`.

    Frames of another size than the translator's are resized (bilinear,
    ``torch.nn.functional.interpolate``); each frame is read alone (a window of one frame,
    also for a translator with memory). Runs under ``torch.no_grad``.
    """

    def __init__(self, run: Any) -> None:
        self.run = run
        self.frame_size = tuple(run.frame_size)

    def __call__(self, frames: Any) -> Any:
        """``(B, 3, H, W)`` float in [0, 1] -> ``(B, G)`` key points (metres), float32,
        on the device of ``frames``."""
        x = frames.float()
        if tuple(x.shape[-2:]) != self.frame_size:
            x = F.interpolate(x, size=self.frame_size, mode="bilinear", align_corners=False)
        with torch.no_grad():
            out = self.run.model(x[:, None].to(self.run.device))
        return out["keypoints"].to(device=frames.device, dtype=torch.float32)


def load_translator(run: str | Path, device: Any = "cpu", env_id: str | None = None) -> Translator:
    """Load a key-point translator run (``visfore train-translator``) as a :class:`Translator`.

    Args:
        run: the translator run directory.
        device: torch device of the translator.
        env_id: the planning env; the translator must have been trained on frames of it.

    Raises:
        VisforeError: not a translator run (:func:`visfore.perception.translator_run.load_translator_run`),
            or one trained on another env.
    """
    tr = load_translator_run(run, device)
    if env_id is not None and tr.env_id and resolve_env_id(str(tr.env_id)) != env_id:
        raise VisforeError(f"--translator {run} was trained on {tr.env_id} frames, not {env_id}")
    return RunTranslator(tr)


def gaussian_blur(images: Any, sigma: float) -> Any:
    """Blur ``(..., 3, H, W)`` float images with a separable Gaussian of ``sigma`` pixels
    (kernel radius ``ceil(3 sigma)``, replicate padding); ``sigma <= 0`` returns them as is.

    Blurring widens the basin of a pixel cost: a thin arm a few pixels away from the goal
    pose still overlaps it after blurring (the role of the coarse levels of an image
    pyramid), while the minimum stays at the goal."""
    if sigma <= 0:
        return images
    r = max(1, int(math.ceil(3 * sigma)))
    x = torch.arange(-r, r + 1, dtype=images.dtype, device=images.device)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    k = k / k.sum()
    shape = images.shape
    flat = images.reshape(-1, shape[-3], shape[-2], shape[-1])
    c = shape[-3]
    flat = F.pad(flat, (r, r, r, r), mode="replicate")
    flat = F.conv2d(flat, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    flat = F.conv2d(flat, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return flat.reshape(shape)


def pixel_cost(frames: Any, goal: Any, cost_frames: str, blur: float = 0.0) -> Any:
    """Pixel cost of predicted frames.

    Args:
        frames: ``(N, T, 3, H, W)`` float in [0, 1] (torch).
        goal: ``(3, H, W)`` float in [0, 1]; pass it already blurred with the same
            ``blur`` (:func:`gaussian_blur`) when ``blur > 0``.
        cost_frames: ``"final"`` (MSE of frame T only) or ``"all"`` (mean MSE over T).
        blur: Gaussian sigma in pixels applied to ``frames`` first (0 = none).

    Returns:
        ``(N,)`` mean squared error over H, W, 3 (and frames).
    """
    sel = frames[:, -1:] if cost_frames == "final" else frames
    diff = gaussian_blur(sel, blur) - goal
    return diff.square().flatten(2).mean(dim=2).mean(dim=1)


# ---------------------------------------------------------------------------------------
# controllers
# ---------------------------------------------------------------------------------------
def action_bounds(env: Any, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """``(low, high)`` (A,) float32: the env's action box shrunk around its centre by
    ``scale`` (1 = the whole box)."""
    return scale_action_box(env.action_space.low, env.action_space.high, scale)


class RandomController:
    """Independent uniform actions in ``[low, high]`` (scaled by ``action_scale``), drawn
    from the episode's generator."""

    name = "random"
    imagined = None

    def __init__(self, action_scale: float = 1.0) -> None:
        self.action_scale = float(action_scale)
        self._rng = np.random.default_rng(0)
        self._low: np.ndarray | None = None
        self._high: np.ndarray | None = None

    def reset(self, env: Any, obs: dict, goal_frame: np.ndarray, rng: np.random.Generator) -> None:
        self._rng = rng
        self._low, self._high = action_bounds(env, self.action_scale)

    def act(self, obs: dict, info: dict) -> np.ndarray:
        if self._low is None or self._high is None:
            raise RuntimeError("RandomController.act() before reset()")
        return self._rng.uniform(self._low, self._high).astype(np.float32)


class CEMController:
    """Receding-horizon CEM: plan ``blocks * repeat`` steps, execute ``replan_every`` of
    the best sequence, replan (warm start: previous mean shifted, PETS). Subclasses
    provide :meth:`_begin` (episode set-up), :meth:`_observe` (a new real frame after an
    action), :meth:`_cost` (``(N, T, A)`` -> ``(N,)``) and :meth:`_imagine`.

    Args:
        cem_config: the CEM budget and horizon T.
        replan_every: steps executed between plans (1 <= it <= T).
        action_scale: fraction of the env's action box searched, (0, 1].
        device: torch device of the candidates.
        warm_start: start each plan from the previous mean, shifted.
        shrink_horizon: near the env's time limit (``env.spec.max_episode_steps``), score
            only the first ``steps left`` actions (``_cost`` then gets ``(N, k, A)``,
            k < T), so the cost is taken at the episode's last step. The limit must be
            the episode's (``visfore plan`` sets it from ``--steps``); a shorter ``steps``
            given only to :func:`~visfore.planning.goal_reaching.run_goal_episodes` is not seen.
            False scores T steps in every plan (``--fixed-horizon``).

    Attributes:
        imagined: ``(k, H, W, 3)`` uint8, the best rollout of the latest plan over the
            k steps it scored (k = T unless the horizon shrank).
        plans: plans made in the current episode; last_result: the latest
            :class:`~visfore.planning.cem.CEMResult`.
    """

    name = "cem"

    def __init__(
        self,
        cem_config: CEMConfig,
        replan_every: int = 1,
        action_scale: float = 1.0,
        device: Any = "cpu",
        warm_start: bool = True,
        shrink_horizon: bool = True,
    ) -> None:
        self.cem_config = cem_config.validate()
        self.replan_every = int(replan_every)
        self.shrink_horizon = bool(shrink_horizon)
        self.action_scale = float(action_scale)
        self.device = torch.device(device)
        self.warm_start = bool(warm_start)
        self.imagined: np.ndarray | None = None
        self.plans = 0
        self.last_result: CEMResult | None = None

    # -- protocol ---------------------------------------------------------------------
    def reset(self, env: Any, obs: dict, goal_frame: np.ndarray, rng: np.random.Generator) -> None:
        low, high = action_bounds(env, self.action_scale)
        self._low = torch.from_numpy(low).to(self.device)
        self._high = torch.from_numpy(high).to(self.device)
        self._centre = (self._low + self._high) / 2
        self._gen = torch.Generator(device=self.device)
        self._gen.manual_seed(int(rng.integers(0, 2**63 - 1)))
        self._plan: torch.Tensor | None = None
        self._mean: torch.Tensor | None = None
        self._since = 0
        self._last_action: np.ndarray | None = None
        self._t = 0
        # the episode's time limit (None: unknown, the horizon never shrinks)
        self._limit = getattr(getattr(env, "spec", None), "max_episode_steps", None)
        self.imagined = None
        self.plans = 0
        self._begin(env, obs, goal_frame)

    def act(self, obs: dict, info: dict) -> np.ndarray:
        if self._last_action is not None:
            self._observe(obs, self._last_action)
        if self._plan is None or self._since >= self.replan_every:
            init = None
            if self.warm_start and self._mean is not None:
                init = shift_mean(self._mean, self._since, self.cem_config.repeat, self._centre)
            scored = self.scored_steps()
            result = cem(self._scored_cost(scored), self._low, self._high, self.cem_config, self._gen, init_mean=init)
            self.last_result = result
            self._plan = result.actions if self.cem_config.execute == "best" else result.mean_actions
            self._mean = result.mean
            self._since = 0
            self.plans += 1
            self.imagined = self._imagine(self._plan[:scored])  # the rollout that was scored
        action = self._plan[self._since].detach().cpu().numpy().astype(np.float32)
        self._since += 1
        self._t += 1
        self._last_action = action
        return action

    def scored_steps(self) -> int:
        """Steps of each candidate the next plan scores: the horizon T, or with
        ``shrink_horizon`` the steps left in the episode when fewer (so the cost is taken
        at the episode's last step, where success is measured)."""
        T = self.cem_config.horizon
        if not self.shrink_horizon or not self._limit:
            return T
        return max(1, min(T, int(self._limit) - self._t))

    def _scored_cost(self, k: int) -> Any:
        """``self._cost`` on the first ``k`` (:meth:`scored_steps`) steps of each candidate."""
        if k == self.cem_config.horizon:
            return self._cost
        return lambda actions: self._cost(actions[:, :k])

    # -- hooks --------------------------------------------------------------------------
    def _begin(self, env: Any, obs: dict, goal_frame: np.ndarray) -> None:
        raise NotImplementedError

    def _observe(self, obs: dict, action: np.ndarray) -> None:
        """Called before planning with the frame that followed ``action``."""

    def _cost(self, actions: Any) -> Any:
        raise NotImplementedError

    def _imagine(self, actions: Any) -> np.ndarray | None:
        return None


class LearnedCEMController(CEMController):
    """CEM on the frames imagined by a forward model (:class:`visfore.worldmodels.model_run.ModelRun`).

    Args:
        model_run: the loaded run (its model, context C, device).
        cem_config, replan_every, action_scale: see :class:`CEMController`.
        cost_frames: ``"final"`` or ``"all"`` (:func:`pixel_cost`).
        cost: ``pixels``, ``keypoints`` or ``pixels+keypoints``.
        pixel_weight, keypoint_weight: weights of the two terms.
        translator: a :class:`Translator` (needed for key-point costs).
        batch_chunk: candidates per forward pass (0 = all N in one pass).
    """

    name = "learned-cem"

    def __init__(self, model_run: Any, cem_config: CEMConfig, *, replan_every: int = 1,
                 action_scale: float = 1.0, cost: str = "pixels", cost_frames: str = "final",
                 pixel_weight: float = 1.0, keypoint_weight: float = 1.0,
                 translator: Translator | None = None, batch_chunk: int = 0,
                 pixel_blur: float = 0.0, amp: bool = False,
                 shrink_horizon: bool = True) -> None:  # fmt: skip
        super().__init__(cem_config, replan_every, action_scale, model_run.device, shrink_horizon=shrink_horizon)
        if "keypoints" in cost and translator is None:
            raise VisforeError(f"--cost {cost} needs a translator (--translator RUN)")
        self.model_run = model_run
        self.cost = cost
        self.cost_frames = cost_frames
        self.pixel_weight = float(pixel_weight)
        self.keypoint_weight = float(keypoint_weight)
        self.translator = translator
        self.batch_chunk = int(batch_chunk)
        self.pixel_blur = float(pixel_blur)
        self.amp = bool(amp)
        self.forward_seconds = 0.0

    def _begin(self, env: Any, obs: dict, goal_frame: np.ndarray) -> None:
        mr = self.model_run
        H, W = mr.image_size
        frame = np.asarray(obs["pixels"], np.uint8)
        if frame.shape[:2] != (H, W):
            raise VisforeError(f"the env's frames are {frame.shape[0]}x{frame.shape[1]} but the model takes {H}x{W}")
        C, A = mr.context, mr.action_dim
        self._frames = frames_to_model(np.repeat(frame[None], C, axis=0), self.device)  # (C, 3, H, W)
        self._actions = torch.zeros((C - 1, A), dtype=torch.float32, device=self.device)
        self._goal = frames_to_model(np.asarray(goal_frame, np.uint8), self.device)  # (3, H, W)
        self._goal_blurred = gaussian_blur(self._goal, self.pixel_blur)
        self._goal_kp = None
        if self.translator is not None and "keypoints" in self.cost:
            with torch.no_grad():
                self._goal_kp = self.translator(self._goal[None])[0]

    def _observe(self, obs: dict, action: np.ndarray) -> None:
        new = frames_to_model(np.asarray(obs["pixels"], np.uint8), self.device)
        self._frames = torch.cat([self._frames[1:], new[None]], dim=0)
        if self._actions.shape[0] > 0:
            a = torch.from_numpy(np.asarray(action, np.float32)).to(self.device)
            self._actions = torch.cat([self._actions[1:], a[None]], dim=0)

    def _predict(self, actions: Any) -> Any:
        """``(n, T, A)`` -> ``(n, T, 3, H, W)`` predicted frames from the current context."""
        n = actions.shape[0]
        C = self._frames.shape[0]
        ctx = self._frames[None].expand(n, *self._frames.shape)
        hist = self._actions[None].expand(n, C - 1, actions.shape[2])
        seq = torch.cat([hist, actions.to(torch.float32)], dim=1)
        seed = None
        if self.model_run.stochastic:
            seed = int(torch.randint(0, 2**62, (1,), generator=self._gen, device=self.device))
        dev = self.device.type
        amp_dtype = torch.bfloat16 if dev == "cpu" else torch.float16
        with torch.no_grad(), sample_seed(seed, self.device), torch.autocast(dev, dtype=amp_dtype, enabled=self.amp):
            return self.model_run.model(ctx, seq).float()

    def _score(self, frames: Any) -> Any:
        total = torch.zeros(frames.shape[0], device=frames.device)
        if "pixels" in self.cost:
            total = total + self.pixel_weight * pixel_cost(
                frames, self._goal_blurred, self.cost_frames, self.pixel_blur
            )
        if "keypoints" in self.cost:
            assert self.translator is not None  # __init__ requires one for key-point costs
            sel = frames[:, -1:] if self.cost_frames == "final" else frames
            n, k = sel.shape[:2]
            kp = self.translator(sel.reshape(n * k, *sel.shape[2:])).reshape(n, k, -1)
            dist = (kp - self._goal_kp).norm(dim=-1).mean(dim=1)
            total = total + self.keypoint_weight * dist
        return total

    def _cost(self, actions: Any) -> Any:
        t0 = time.perf_counter()
        n = actions.shape[0]
        chunk = self.batch_chunk or n
        out = torch.cat([self._score(self._predict(actions[i : i + chunk])) for i in range(0, n, chunk)])
        self.forward_seconds += time.perf_counter() - t0
        return out

    def _imagine(self, actions: Any) -> np.ndarray:
        return model_to_frames(self._predict(actions[None])[0])


class OracleCEMController(CEMController):
    """CEM on the true simulator: candidates rolled out from the env's current MuJoCo state.

    Rollouts: ``mujoco.rollout.rollout`` of all N candidates from ``mj_getState(model,
    data, mjSTATE_FULLPHYSICS)`` of the env, each action held ``frame_skip`` physics steps
    (what ``env.step`` does); the env itself is never touched. Frames are drawn with the
    env's renderer from a private scene ``MjData`` (ghost posed like the env's); key points
    come from ``mj_kinematics`` on a private ``MjData``.

    Args:
        cem_config, replan_every, action_scale: see :class:`CEMController`.
        cost: ``pixels``, ``keypoints`` (true key points vs the env's target, metres) or
            ``pixels+keypoints``; cost_frames: ``final`` or ``all``.
        pixel_weight, keypoint_weight: weights of the terms.
    """

    name = "oracle-cem"

    def __init__(self, cem_config: CEMConfig, *, replan_every: int = 1, action_scale: float = 1.0,
                 cost: str = "pixels", cost_frames: str = "final", pixel_weight: float = 1.0,
                 keypoint_weight: float = 1.0, pixel_blur: float = 0.0,
                 shrink_horizon: bool = True) -> None:  # fmt: skip
        super().__init__(cem_config, replan_every, action_scale, "cpu", shrink_horizon=shrink_horizon)
        self.pixel_blur = float(pixel_blur)
        self.cost = cost
        self.cost_frames = cost_frames
        self.pixel_weight = float(pixel_weight)
        self.keypoint_weight = float(keypoint_weight)
        self.render_seconds = 0.0
        self.rollout_seconds = 0.0

    def _begin(self, env: Any, obs: dict, goal_frame: np.ndarray) -> None:
        base = env.unwrapped
        for attr in ("model", "data", "scene_model", "scene_data", "frame_skip", "keypoint_sites"):
            if not hasattr(base, attr):
                raise VisforeError(
                    f"the oracle needs a visfore MuJoCo key-point env (no {attr!r} on {type(base).__name__})"
                )
        renderer = getattr(base, "_renderer", None)
        if renderer is None:
            raise VisforeError(f"the oracle needs the env's renderer ({type(base).__name__} has none)")
        self._base = base
        self._renderer = renderer
        m = base.model
        if getattr(self, "_model", None) is not m:
            self._model = m
            self._roll_data = mujoco.MjData(m)
            self._kin_data = mujoco.MjData(m)
            self._scene = mujoco.MjData(base.scene_model)
            self._spec = int(mujoco.mjtState.mjSTATE_FULLPHYSICS)
            self._state = np.empty(mujoco.mj_stateSize(m, self._spec))
            self._site_ids = np.array(
                [mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_SITE, s) for s in base.keypoint_sites], np.intp
            )
            self._axes = np.array(tuple(getattr(base, "keypoint_axes", (0, 1, 2))), np.intp)
        # the target ghost of this episode, as the env poses it
        self._scene.mocap_pos[:] = base.scene_data.mocap_pos
        self._scene.mocap_quat[:] = base.scene_data.mocap_quat
        self._target_kp = np.asarray(base.target_keypoints, np.float64)
        self._goal = gaussian_blur(frames_to_model(np.asarray(goal_frame, np.uint8)), self.pixel_blur)
        self._H, self._W = np.asarray(goal_frame).shape[:2]

    def rollout_qpos(self, actions: np.ndarray) -> np.ndarray:
        """``(N, T, A)`` actions -> ``(N, T, nq)`` joint positions after each env step,
        rolled out from the env's current state (float64)."""
        m, fs = self._model, int(self._base.frame_skip)
        mujoco.mj_getState(m, self._base.data, self._state, self._spec)
        control = np.repeat(np.asarray(actions, np.float64), fs, axis=1)
        t0 = time.perf_counter()
        state, _ = mujoco.rollout.rollout(m, self._roll_data, self._state, control)
        self.rollout_seconds += time.perf_counter() - t0
        # FULLPHYSICS state = [time (1), qpos (nq), qvel (nv), ...]
        return state[:, fs - 1 :: fs, 1 : 1 + m.nq]

    def render(self, qpos: np.ndarray) -> np.ndarray:
        """``(M, nq)`` joint positions -> ``(M, H, W, 3)`` uint8 frames (the env's view)."""
        sm, sd = self._base.scene_model, self._scene
        out = np.empty((len(qpos), self._H, self._W, 3), np.uint8)
        t0 = time.perf_counter()
        for i, q in enumerate(qpos):
            sd.qpos[:] = q
            mujoco.mj_kinematics(sm, sd)
            mujoco.mj_camlight(sm, sd)
            out[i] = self._renderer.render(sd)
        self.render_seconds += time.perf_counter() - t0
        return out

    def keypoints(self, qpos: np.ndarray) -> np.ndarray:
        """``(M, nq)`` -> ``(M, G)`` key points (metres), the env's layout."""
        m, d = self._model, self._kin_data
        out = np.empty((len(qpos), len(self._site_ids) * len(self._axes)))
        for i, q in enumerate(qpos):
            d.qpos[:] = q
            mujoco.mj_kinematics(m, d)
            out[i] = d.site_xpos[self._site_ids][:, self._axes].reshape(-1)
        return out

    def _cost(self, actions: Any) -> Any:
        acts = actions.detach().cpu().numpy()
        qpos = self.rollout_qpos(acts)  # (N, T, nq)
        N, T = qpos.shape[:2]
        sel = qpos[:, -1:] if self.cost_frames == "final" else qpos
        k = sel.shape[1]
        flat = sel.reshape(N * k, -1)
        total = torch.zeros(N, dtype=torch.float64)
        if "pixels" in self.cost:
            frames = frames_to_model(self.render(flat)).reshape(N, k, 3, self._H, self._W)
            mse = pixel_cost(frames, self._goal, "all", self.pixel_blur)  # over the k selected
            total += self.pixel_weight * mse.double()
        if "keypoints" in self.cost:
            kp = self.keypoints(flat)
            dist = np.linalg.norm(kp - self._target_kp, axis=1).reshape(N, k).mean(axis=1)
            total += self.keypoint_weight * torch.from_numpy(dist)
        return total

    def _imagine(self, actions: Any) -> np.ndarray:
        qpos = self.rollout_qpos(actions.detach().cpu().numpy()[None])[0]
        return self.render(qpos)


def load_through_model_controller(run: str | Path, device: Any = None) -> Any:
    """The through-model policy of ``run`` as a :class:`~visfore.planning.goal_reaching.GoalController`
    (:func:`visfore.planning.through_model.load_through_model_policy`).

    Raises:
        VisforeError: the run cannot be loaded.
    """
    controller = load_through_model_policy(run, device=device)
    if not getattr(controller, "name", None):
        controller.name = "through-model"
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


def _fmt_list(values: Any) -> str:
    """``[-0.30000001, 0.3]`` -> ``[-0.3, 0.3]`` (4 significant digits)."""
    return "[" + ", ".join(f"{float(v):.4g}" for v in (values or [])) + "]"


def _summary_rows(summary: Mapping[str, dict], thresholds: Sequence[float]) -> tuple[list[str], list[list[str]]]:
    header = ["controller", "episodes", "success"]
    header += [f"success @{t:g} m" for t in thresholds]
    header += ["final dist. mean ± std (m)", "median (m)", "min dist. mean (m)",
               "initial dist. (m)", "s/step"]  # fmt: skip
    rows = []
    for name, s in summary.items():
        fd = s["final_distance"]
        row = [name, str(s["n"]), f"{100 * s['success_rate']:.0f}%"]
        row += [f"{100 * s.get(f'success_rate@{t:g}', math.nan):.0f}%" for t in thresholds]
        row += [
            f"{fmt(fd['mean'], 3)} ± {fmt(fd['std'], 3)}", fmt(fd["median"], 3),
            fmt(s["min_distance_mean"], 3), fmt(s["initial_distance_mean"], 3),
            fmt(s["seconds_per_step_mean"], 3),
        ]  # fmt: skip
        rows.append(row)
    return header, rows


def _distance_plot(episodes: Sequence[Any], path: Path, threshold: float) -> Path | None:
    groups: dict[str, list[list[float]]] = {}
    for e in episodes:
        if e.distances:
            groups.setdefault(e.controller, []).append([e.initial_distance, *e.distances])
    if not groups:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, rows in groups.items():
        L = max(len(r) for r in rows)
        arr = np.full((len(rows), L), np.nan)
        for i, r in enumerate(rows):
            arr[i, : len(r)] = r
        mean = np.nanmean(arr, axis=0)
        ax.plot(np.arange(L), mean, label=f"{name} (n={len(rows)})")
        lo, hi = np.nanpercentile(arr, 25, axis=0), np.nanpercentile(arr, 75, axis=0)
        ax.fill_between(np.arange(L), lo, hi, alpha=0.15)
    if math.isfinite(threshold):
        ax.axhline(threshold, color="k", ls=":", lw=1, label=f"success threshold {threshold:g} m")
    ax.set_xlabel("step")
    ax.set_ylabel("key-point distance to target (m)")
    ax.set_title("mean distance per step (band: 25-75th percentile)")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def write_report(out: Path, meta: Mapping[str, Any], episodes: Sequence[Any]) -> dict[str, Any]:
    """Write ``episodes.csv/.json``, ``summary.json``, ``report.md``, ``report.html`` and
    ``distance.png`` into ``out`` (atomically). Returns ``{"summary", "files"}``."""
    thresholds = tuple(meta.get("extra_thresholds") or ())
    summary = summarize_goal_episodes(episodes, thresholds)
    files: dict[str, Path] = {}
    fields = list(GoalEpisode.__dataclass_fields__)
    fields.remove("distances")
    files["episodes.csv"] = write_csv(out / "episodes.csv", fields, [e.row() for e in episodes])
    files["episodes.json"] = runs.write_json(out / "episodes.json", jsonable([e.to_dict() for e in episodes]))
    files["summary.json"] = runs.write_json(
        out / "summary.json", jsonable({"meta": dict(meta), "controllers": summary})
    )
    threshold = float(meta.get("success_threshold") or math.nan)
    plot = _distance_plot(episodes, out / "distance.png", threshold)
    if plot is not None:
        files["distance.png"] = plot
    header, rows = _summary_rows(summary, thresholds)

    budget = meta.get("budget", {})
    facts = [
        ("env", f"{meta.get('env_id')} {meta.get('env_kwargs') or ''}".strip()),
        ("frames", f"{meta['frame_size'][0]}x{meta['frame_size'][1]}"),
        ("model", meta.get("model") or "-"),
        ("model budget", meta.get("model_budget") or "-"),
        ("goal", meta.get("goal")),
        (
            "CEM",
            f"{budget.get('iterations')} iterations x {budget.get('samples')} samples, "
            f"{budget.get('elites')} elites, horizon {budget.get('horizon')} steps "
            f"({budget.get('blocks')} blocks x {budget.get('repeat')} repeat), replan every "
            f"{budget.get('replan_every')} step(s)"
            f"{' (horizon shrinks to the episode end)' if budget.get('shrink_horizon') else ''}, init std {budget.get('init_std')} / min std "
            f"{budget.get('min_std')} half-ranges, alpha {budget.get('alpha')}, executes the "
            f"{'final elite mean' if budget.get('execute') == 'mean' else 'best sample'}",
        ),
        (
            "action bounds",
            f"{_fmt_list(meta.get('action_low'))} .. {_fmt_list(meta.get('action_high'))} (action scale "
            f"{meta.get('action_scale')}; CEM and random; a through-model policy "
            "keeps its own bounds)",
        ),
        (
            "cost (learned)",
            f"{meta.get('cost')} on {meta.get('cost_frames')} frame(s), "
            f"Gaussian blur sigma {meta.get('pixel_blur')} px"
            + (f", translator {meta.get('translator')}" if meta.get("translator") else ""),
        ),
        ("cost (oracle)", str(meta.get("oracle_cost_resolved"))),
        (
            "episodes",
            f"{meta.get('episodes_done')} of {meta.get('episodes')} per controller, "
            f"{meta.get('steps_per_episode')} steps, seed {meta.get('seed')}"
            + (" (interrupted)" if meta.get("interrupted") else ""),
        ),
        ("success", f"final key-point distance < {threshold:g} m"),
        (
            "device",
            f"{meta.get('device')}, {meta.get('torch_threads')} torch thread(s)"
            + (", mixed precision (autocast)" if meta.get("amp") else ""),
        ),
        ("wall time", f"{meta.get('seconds', 0):.0f} s"),
        ("created", str(meta.get("created"))),
        ("command", f"`{meta.get('command')}`"),
    ]
    gifs = sorted((out / "gifs").glob("*.gif")) if (out / "gifs").is_dir() else []
    md = [f"# visfore plan: {meta.get('env_id')}", ""]
    md += [f"- **{k}:** {v}" for k, v in facts]
    md += ["", "## Results", "", md_table(header, rows), ""]
    md += [
        "## Definitions", "",
        "- **success:** final key-point distance ||k - k*|| (elbow and fingertip vs the target "
        "pose, metres) below the threshold after the last step",
        "- **final dist.:** that distance after the last step (mean ± sample std over episodes); "
        "**min dist.:** the smallest distance during the episode",
        "- **s/step:** wall time the controller spent choosing actions, per step (planning "
        "time amortised over the steps between replans)",
        "- **oracle-cem:** the same CEM budget on the true simulator (cloned MuJoCo state); "
        "**random:** uniform actions in the bounds; every controller sees the same initial "
        "states and targets (common random numbers)",
        "",
    ]  # fmt: skip
    if plot is not None:
        md += ["![distance](distance.png)", ""]
    if gifs:
        md += ["## GIFs (real | imagined best rollout, last frame | goal)", ""]
        md += [f"- [{g.name}](gifs/{g.name})" for g in gifs]
        md.append("")
    files["report.md"] = runs.atomic_write_text(out / "report.md", "\n".join(md))

    esc = _html.escape
    body = [f"<h1>visfore plan: {esc(str(meta.get('env_id')))}</h1><dl>"]
    body += [f"<dt>{esc(k)}</dt><dd>{esc(str(v).strip('`'))}</dd>" for k, v in facts]
    body += ["</dl><h2>Results</h2>", html_table(header, rows)]
    if plot is not None:
        body.append(f'<img alt="distance" src="{png_data_uri(plot)}">')
    if gifs:
        body.append("<h2>First episode of each controller (real | imagined | goal)</h2>")
        shown = set()
        for g in gifs:
            ctrl = g.name.rsplit("-ep", 1)[0]
            if ctrl in shown:
                continue
            shown.add(ctrl)
            uri = "data:image/gif;base64," + base64.b64encode(g.read_bytes()).decode("ascii")
            body.append(f'<p>{esc(g.name)}<br><img alt="{esc(g.name)}" src="{uri}"></p>')
    files["report.html"] = runs.atomic_write_text(out / "report.html", html_page("visfore plan", body))
    return {"summary": summary, "files": files}


def _make_controllers(config: PlanConfig, model_run: Any, translator: Any, device: Any) -> list[Any]:
    cem_cfg = config.cem_config
    out: list[Any] = []
    for name in config.controllers:
        if name == "learned":
            out.append(LearnedCEMController(
                model_run, cem_cfg, replan_every=config.replan_every,
                action_scale=config.action_scale, cost=config.cost, cost_frames=config.cost_frames,
                pixel_weight=config.pixel_weight, keypoint_weight=config.keypoint_weight,
                translator=translator, batch_chunk=config.batch_chunk, pixel_blur=config.pixel_blur,
                amp=config.amp, shrink_horizon=config.shrink_horizon,
            ))  # fmt: skip
        elif name == "oracle":
            out.append(OracleCEMController(
                cem_cfg, replan_every=config.replan_every, action_scale=config.action_scale,
                cost=oracle_cost(config), cost_frames=config.cost_frames,
                pixel_weight=config.pixel_weight, keypoint_weight=config.keypoint_weight,
                pixel_blur=config.pixel_blur, shrink_horizon=config.shrink_horizon,
            ))  # fmt: skip
        elif name == "random":
            out.append(RandomController(config.action_scale))
        elif name == "through-model":
            assert config.policy is not None  # validate_config: through-model needs --policy
            out.append(load_through_model_controller(config.policy, device=device))
    return out


def oracle_cost(config: PlanConfig) -> str:
    """The oracle's cost: ``--oracle-cost``, with ``same`` resolved to ``--cost`` (the
    oracle's key points are the true ones, no translator needed)."""
    return config.cost if config.oracle_cost == "same" else config.oracle_cost


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
    config = validate_config(config)
    device = select_device(config.device)
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    model_run = load_model_run(config.model, config.checkpoint, device=device) if config.model else None
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


def _model_budget(model_run: Any) -> str | None:
    """One line on what the forward model was trained on and for how long."""
    if model_run is None:
        return None
    ds = model_run.config.get("dataset") or {}
    attrs = ds.get("attrs") or {}
    opts = model_run.config.get("options") or {}
    return (
        f"{model_run.model_name}, context {model_run.context}, trained {model_run.epoch} epochs "
        f"(time budget {opts.get('time_budget')} min, device {opts.get('device')}) on "
        f"{ds.get('num_episodes')} episodes x {attrs.get('steps_per_episode')} steps "
        f"({ds.get('num_rows')} frames, policy {_json_text(attrs.get('policy'))})"
    )


def _meta(setup: _PlanSetup, out: Path) -> dict[str, Any]:
    """The report's ``meta`` record: model, env, goal, controllers, CEM budget, costs,
    thresholds, seeding, the command line and the package versions."""
    config, model_run = setup.config, setup.model_run
    return {
        "command_name": COMMAND,
        "model": str(model_run.run_dir) if model_run is not None else None,
        "model_name": model_run.model_name if model_run is not None else None,
        "checkpoint": model_run.checkpoint if model_run is not None else None,
        "model_budget": _model_budget(model_run),
        "env_id": setup.env_id,
        "env_kwargs": setup.env_kwargs,
        "frame_size": list(setup.size),
        "goal": str(config.goal) if config.goal else "the env's target pose rendered (render_goal)",
        "controllers": [getattr(c, "name", "?") for c in setup.controllers],
        "budget": {
            "iterations": config.iterations,
            "samples": config.samples,
            "elites": config.elites,
            "blocks": config.blocks,
            "repeat": config.repeat,
            "horizon": config.horizon,
            "replan_every": config.replan_every,
            "shrink_horizon": config.shrink_horizon,
            "init_std": config.init_std,
            "min_std": config.min_std,
            "alpha": config.alpha,
            "execute": config.execute,
        },  # fmt: skip
        "action_scale": config.action_scale,
        "action_low": setup.low.tolist(),
        "action_high": setup.high.tolist(),
        "cost": config.cost,
        "cost_frames": config.cost_frames,
        "pixel_weight": config.pixel_weight,
        "keypoint_weight": config.keypoint_weight,
        "pixel_blur": config.pixel_blur,
        "translator": str(config.translator) if config.translator else None,
        "oracle_cost": config.oracle_cost,
        "oracle_cost_resolved": f"{oracle_cost(config)} on {config.cost_frames} frame(s)",
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
    episodes); returns True when Ctrl-C ended the loop."""
    config = setup.config
    gif_dir = out / "gifs" if config.gifs else None
    bar = episode_progress(config.progress, "episodes")
    try:
        with bar:
            task = bar.add_task(f"plan {setup.env_id}", total=config.episodes * len(setup.controllers))
            for k in range(config.episodes):
                for ctrl in setup.controllers:
                    bar.update(task, description=f"plan {getattr(ctrl, 'name', '?')} ep {k}")
                    run_goal_episodes(
                        setup.make_env, ctrl, episodes=1, first_episode=k, seed=config.seed,
                        steps=config.steps, success_threshold=setup.threshold, gif_dir=gif_dir,
                        goal_frame=setup.goal_frame, progress=episodes.add,
                    )  # fmt: skip
                    bar.update(task, advance=1)
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
        log.warning("interrupted: wrote the report of %d finished episodes to %s", len(episodes), out)
        raise KeyboardInterrupt
    return {"out": out, "summary": report["summary"], "episodes": episodes, "files": report["files"], "meta": meta}


def _json_text(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _plain(value: Any) -> Any:
    return jsonable(value)


def print_summary(result: Mapping[str, Any], console: Any = None) -> None:
    """Print the per-controller results as a rich table and the report path."""
    console = console or stdout_console()
    meta = result["meta"]
    header, rows = _summary_rows(result["summary"], meta.get("extra_thresholds") or ())
    table = Table(title=f"visfore plan: {meta['env_id']} (success: final distance < {meta['success_threshold']:g} m)")
    for i, h in enumerate(header):
        table.add_column(h, justify="left" if i == 0 else "right", no_wrap=i == 0)
    for row in rows:
        table.add_row(*row)
    console.print(table)
    console.print(f"report: {result['out']}/report.md", highlight=False, soft_wrap=True)
