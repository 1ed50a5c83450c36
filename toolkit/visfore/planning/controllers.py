"""The controllers of ``visfore plan``, each a :class:`~visfore.planning.goal_reaching.GoalController`:

* :class:`RandomController`: independent uniform actions in the bounds (the floor to beat);
* :class:`CEMController`: receding-horizon sampling-based MPC with warm starts and a
  shrinking horizon, optimised by CEM (:mod:`visfore.planning.cem`, a
  :class:`~visfore.planning.cem.CEMConfig`) or MPPI (:mod:`visfore.planning.mppi`, an
  :class:`~visfore.planning.mppi.MPPIConfig`), specialised by
* :class:`LearnedCEMController`: candidates scored on what a learned forward model
  imagines: decoded frames (``pixels``), features without decoding (``latent``) or key
  points (``keypoints``, through the model's probe or a translator), any weighted sum of
  them; and
* :class:`OracleCEMController`: candidates rolled out in the true MuJoCo model
  (``mujoco.rollout``) and scored on rendered frames (pixels, or latent: the frames
  encoded by the model) or the true key points.

All share :func:`action_bounds`; the costs are :mod:`visfore.planning.costs` and
:mod:`visfore.planning.latent_costs`. The through-model controller is
:func:`visfore.planning.through_model.load_through_model_policy`.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping

import mujoco
import mujoco.rollout
import numpy as np
import torch

from visfore.core.errors import VisforeError
from visfore.planning.cem import CEMConfig, CEMResult, cem, shift_mean
from visfore.planning.config import GOAL_KEYPOINTS, controller_label, cost_weights
from visfore.planning.costs import Translator, gaussian_blur, pixel_cost
from visfore.planning.goal_reaching import scale_action_box
from visfore.planning.latent_costs import (
    keypoint_cost,
    latent_cost,
    probe_goal_keypoints,
    probe_keypoint_coords,
    probe_keypoints,
    select_steps,
    weighted_sum,
)
from visfore.planning.mppi import MPPIConfig, mppi
from visfore.worldmodels.model_run import frames_to_model, model_to_frames, sample_seed


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
    """Receding-horizon sampling-based MPC: plan ``blocks * repeat`` steps, execute
    ``replan_every`` of the chosen sequence, replan (warm start: previous mean shifted,
    PETS). The optimizer is CEM (:func:`~visfore.planning.cem.cem`) for a
    :class:`~visfore.planning.cem.CEMConfig` and MPPI (:func:`~visfore.planning.mppi.mppi`)
    for an :class:`~visfore.planning.mppi.MPPIConfig`; both call :meth:`_cost` once per
    iteration with all ``N`` candidates. Subclasses provide :meth:`_begin` (episode
    set-up), :meth:`_observe` (a new real frame after an action), :meth:`_cost` (``(N, T,
    A)`` -> ``(N,)``) and :meth:`_imagine`.

    Args:
        cem_config: the optimizer's budget and horizon T (a ``CEMConfig`` or ``MPPIConfig``).
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
        plans: plans made in the current episode; last_result: the latest
            :class:`~visfore.planning.cem.CEMResult`.
        optimizer: ``"cem"`` or ``"mppi"``.
    """

    name = "cem"

    def __init__(
        self,
        cem_config: CEMConfig | MPPIConfig,
        replan_every: int = 1,
        action_scale: float = 1.0,
        device: Any = "cpu",
        warm_start: bool = True,
        shrink_horizon: bool = True,
    ) -> None:
        if not isinstance(cem_config, (CEMConfig, MPPIConfig)):
            raise VisforeError(f"the planner needs a CEMConfig or MPPIConfig, got {type(cem_config).__name__}")
        self.cem_config = cem_config.validate()
        self.optimizer = "mppi" if isinstance(cem_config, MPPIConfig) else "cem"
        self.replan_every = int(replan_every)
        self.shrink_horizon = bool(shrink_horizon)
        self.action_scale = float(action_scale)
        self.device = torch.device(device)
        self.warm_start = bool(warm_start)
        self._imagined: np.ndarray | None = None
        self._pending: Callable[[], np.ndarray | None] | None = None
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

    @property
    def imagined(self) -> np.ndarray | None:
        """``(k, H, W, 3)`` uint8, the best rollout of the latest plan over the k steps it
        scored (k = T unless the horizon shrank), or None before the first plan. A learned
        model's frames are decoded when this is first read after a plan (for GIFs), not in
        the control step, so ``--no-gifs`` runs never decode them; the oracle renders them
        at once (its rollout starts from the env's current state)."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self._imagined = pending()
        return self._imagined

    @imagined.setter
    def imagined(self, value: np.ndarray | None) -> None:
        self._imagined = value
        self._pending = None

    def act(self, obs: dict, info: dict) -> np.ndarray:
        if self._last_action is not None:
            self._observe(obs, self._last_action)
        if self._plan is None or self._since >= self.replan_every:
            init = None
            if self.warm_start and self._mean is not None:
                init = shift_mean(self._mean, self._since, self.cem_config.repeat, self._centre)
            scored = self.scored_steps()
            cost = self._scored_cost(scored)
            if isinstance(self.cem_config, MPPIConfig):
                result = mppi(cost, self._low, self._high, self.cem_config, self._gen, init_mean=init)
            else:
                result = cem(cost, self._low, self._high, self.cem_config, self._gen, init_mean=init)
            self.last_result = result
            self._plan = result.actions if self.cem_config.execute == "best" else result.mean_actions
            self._mean = result.mean
            self._since = 0
            self.plans += 1
            self._imagined = None
            self._pending = self._defer_imagine(self._plan[:scored])  # the rollout that was scored
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

    def _defer_imagine(self, actions: Any) -> Callable[[], np.ndarray | None]:
        """What :attr:`imagined` computes when read; the default imagines at once (the
        oracle's rollout needs the env's current state)."""
        frames = self._imagine(actions)
        return lambda: frames


class LearnedCEMController(CEMController):
    """CEM or MPPI on what a forward model (:class:`visfore.worldmodels.model_run.ModelRun`)
    imagines: pixel or latent, with any weighted sum of the cost terms.

    Per optimizer iteration, all ``N`` candidates are imagined in one batched call
    (``--batch-chunk`` splits it only to bound memory):

    * a pixel model: ``model(context (N, C, 3, H, W), actions (N, C - 1 + T, A))`` -> frames
      ``(N, T, 3, H, W)``; its features (for ``latent``) are the flattened frames;
    * a latent model (``model.latent``): the state after the context frames
      (``init_state``, once per plan), then ``imagine(state, actions (1, N, T, A),
      decode=False)`` -> features ``(1, N, T, F)``, no decoding, for the ``latent`` and
      probe ``keypoints`` terms; frames (``pixels``, translator key points) come from
      ``imagine(..., decode=True)``, under the same random draws when both are needed.

    Terms (:mod:`visfore.planning.latent_costs`, :func:`~visfore.planning.costs.pixel_cost`),
    each at the final step or averaged over the steps (``cost_frames``):

    * ``pixels``: MSE of the (blurred) frames to the goal image;
    * ``latent``: squared L2 of the features to ``model.encode_goal(goal)``;
    * ``keypoints``: distance (metres) of the key points to the goal's, read by
      ``translator`` from frames when one is given, else by the model's probe from the
      features (the first ``G`` probe outputs, :func:`~visfore.planning.latent_costs.probe_keypoint_coords`)
      -- state-supervised either way, and so labelled.

    Args:
        model_run: the loaded run (its model, context C, device).
        cem_config: a ``CEMConfig`` (CEM) or ``MPPIConfig`` (MPPI).
        replan_every, action_scale, shrink_horizon: see :class:`CEMController`.
        cost: ``--cost`` text (``"latent=1,keypoints=0.5"``, ``"pixels+keypoints"``,
            :func:`~visfore.planning.config.parse_cost`) or a ``{term: weight}`` mapping.
        cost_frames: ``"final"`` or ``"all"`` (``--cost-steps``).
        pixel_weight, keypoint_weight: the weights of terms given without one.
        translator: a :class:`Translator` for the key points (else the model's probe).
        batch_chunk: candidates per model call (0 = all N in one call).
        pixel_blur: Gaussian sigma (pixels) of the pixel term.
        amp: autocast (bfloat16 on CPU, float16 on CUDA).
        keypoint_coords: ``G``, the probe's key-point outputs (default: from the run's
            probe layout or the env, at the first :meth:`reset`).
        filter_frames: latent models: how many of the last real frames (and the actions
            between them) ``init_state`` filters before each plan, ``>= C`` (default ``C``,
            the model's context); a recurrent model reads velocities better from more.
        goal_keypoints: where the probe reads the goal's key points: ``"rest"`` (default)
            from the goal frame filtered ``window`` times at rest
            (:func:`~visfore.planning.latent_costs.probe_goal_keypoints`), ``"embedding"``
            from ``encode_goal`` of it (before 2026-12-07 the only way; reads 2.7 cm off
            against 1.1 cm on the reacher).

    Attributes:
        name: the report label (:func:`~visfore.planning.config.controller_label`, e.g.
            ``learned-cem``, ``learned-latent-mppi``,
            ``learned-latent+keypoints-cem-state-supervised``).
        weights: ``{term: weight}`` of the cost; keypoint_source: ``"translator"``,
            ``"probe"`` or None.
        forward_seconds: time spent in cost evaluations (model calls and scoring), seconds.

    Raises:
        VisforeError: a bad cost, key points without a translator or a probe, or
            ``filter_frames`` below C or with a pixel model (one line).
    """

    name = "learned-cem"

    def __init__(self, model_run: Any, cem_config: CEMConfig | MPPIConfig, *, replan_every: int = 1,
                 action_scale: float = 1.0, cost: str | Mapping[str, float] = "pixels",
                 cost_frames: str = "final", pixel_weight: float = 1.0, keypoint_weight: float = 1.0,
                 translator: Translator | None = None, batch_chunk: int = 0,
                 pixel_blur: float = 0.0, amp: bool = False,
                 shrink_horizon: bool = True, keypoint_coords: int | None = None,
                 filter_frames: int | None = None, goal_keypoints: str = "rest") -> None:  # fmt: skip
        super().__init__(cem_config, replan_every, action_scale, model_run.device, shrink_horizon=shrink_horizon)
        if isinstance(cost, Mapping):
            self.weights = {str(k): float(v) for k, v in cost.items()}
            text = "+".join(self.weights)
            cost_weights(",".join(f"{k}={v}" for k, v in self.weights.items()))  # checks the terms
        else:
            text = str(cost)
            self.weights = cost_weights(text, pixel_weight, keypoint_weight)
        model = model_run.model
        self.keypoint_source: str | None = None
        if "keypoints" in self.weights:
            if translator is not None:
                self.keypoint_source = "translator"
            elif int(getattr(model, "probe_dim", 0) or 0) > 0:
                self.keypoint_source = "probe"
            else:
                raise VisforeError(
                    f"--cost {text} needs --translator RUN (a key-point translator) or a model with a probe "
                    f"(visfore train-model --probe keypoints); the {model_run.model_name} model of "
                    f"{model_run.run_dir} has none"
                )
        self.model_run = model_run
        self.latent = bool(getattr(model, "latent", False))
        C = int(model_run.context)
        if filter_frames is not None and not self.latent:
            raise VisforeError(
                f"--filter-frames {filter_frames} needs a latent model; {model_run.model_name} is a pixel model "
                f"(its context is its {C} frames)"
            )
        if filter_frames is not None and filter_frames < C:
            raise VisforeError(f"--filter-frames must be >= the model's context {C}, got {filter_frames}")
        #: real frames in the window init_state filters (a pixel model: its context C)
        self.window = C if filter_frames is None else int(filter_frames)
        if goal_keypoints not in GOAL_KEYPOINTS:
            raise VisforeError(f"--goal-keypoints must be one of {', '.join(GOAL_KEYPOINTS)}, got {goal_keypoints!r}")
        self.goal_keypoints = goal_keypoints
        self.cost = "+".join(self.weights)
        self.cost_frames = cost_frames
        self.pixel_weight = float(pixel_weight)
        self.keypoint_weight = float(keypoint_weight)
        self.translator = translator
        self.batch_chunk = int(batch_chunk)
        self.pixel_blur = float(pixel_blur)
        self.amp = bool(amp)
        self.keypoint_coords = keypoint_coords
        self.needs_frames = "pixels" in self.weights or self.keypoint_source == "translator"
        self.needs_features = "latent" in self.weights or self.keypoint_source == "probe"
        self.name = controller_label("learned", tuple(self.weights), self.optimizer)
        self.forward_seconds = 0.0
        self._state: Any = None

    # -- episode --------------------------------------------------------------------------
    def _begin(self, env: Any, obs: dict, goal_frame: np.ndarray) -> None:
        mr = self.model_run
        H, W = mr.image_size
        frame = np.asarray(obs["pixels"], np.uint8)
        if frame.shape[:2] != (H, W):
            raise VisforeError(f"the env's frames are {frame.shape[0]}x{frame.shape[1]} but the model takes {H}x{W}")
        L, A = self.window, mr.action_dim
        # before the first step the window holds the first frame L times, at rest
        self._frames = frames_to_model(np.repeat(frame[None], L, axis=0), self.device)  # (L, 3, H, W)
        self._actions = torch.zeros((L - 1, A), dtype=torch.float32, device=self.device)
        self._state = None
        self._goal = frames_to_model(np.asarray(goal_frame, np.uint8), self.device)  # (3, H, W)
        self._goal_blurred = gaussian_blur(self._goal, self.pixel_blur)
        self._goal_features = None
        self._goal_kp = None
        model = mr.model
        with torch.no_grad(), self._autocast():
            if self.needs_features:
                self._goal_features = model.encode_goal(self._goal[None])[0].float()  # (F,)
            if self.keypoint_source == "translator":
                assert self.translator is not None
                self._goal_kp = self.translator(self._goal[None])[0]
            elif self.keypoint_source == "probe":
                if self.keypoint_coords is None:
                    layout = getattr(mr, "probe", None)  # the run's ProbeLayout (load_model_run)
                    if layout is None and isinstance(getattr(mr, "config", None), dict):
                        layout = mr.config.get("probe")
                    self.keypoint_coords = probe_keypoint_coords(model, env, layout)
                if self.goal_keypoints == "rest":
                    with sample_seed(self._draw_seed(), self.device):
                        self._goal_kp = probe_goal_keypoints(
                            model, self._goal[None], self.window, self.keypoint_coords
                        )[0]
                else:
                    assert self._goal_features is not None
                    self._goal_kp = probe_keypoints(model, self._goal_features[None], self.keypoint_coords)[0]

    def _observe(self, obs: dict, action: np.ndarray) -> None:
        new = frames_to_model(np.asarray(obs["pixels"], np.uint8), self.device)
        self._frames = torch.cat([self._frames[1:], new[None]], dim=0)
        if self._actions.shape[0] > 0:
            a = torch.from_numpy(np.asarray(action, np.float32)).to(self.device)
            self._actions = torch.cat([self._actions[1:], a[None]], dim=0)
        self._state = None  # a latent model filters the new context at the next plan

    # -- model calls ----------------------------------------------------------------------
    def _autocast(self) -> Any:
        dev = self.device.type
        amp_dtype = torch.bfloat16 if dev == "cpu" else torch.float16
        return torch.autocast(dev, dtype=amp_dtype, enabled=self.amp)

    def _draw_seed(self) -> int | None:
        """A seed for a stochastic model's draws, from the episode's generator (None for a
        deterministic model, which draws nothing)."""
        if not self.model_run.stochastic:
            return None
        return int(torch.randint(0, 2**62, (1,), generator=self._gen, device=self.device))

    def _predict(self, actions: Any, seed: Any = "draw", frames: Any = None, past: Any = None) -> Any:
        """Pixel model: ``(n, T, A)`` -> ``(n, T, 3, H, W)`` predicted frames from the current
        context (one forward pass), or from ``frames`` ``(C, 3, H, W)`` / ``past`` ``(C - 1,
        A)`` when given; ``seed`` for a stochastic model's draws (default: drawn now)."""
        frames = self._frames if frames is None else frames
        past = self._actions if past is None else past
        n = actions.shape[0]
        C = frames.shape[0]
        ctx = frames[None].expand(n, *frames.shape)
        hist = past[None].expand(n, C - 1, actions.shape[2])
        seq = torch.cat([hist, actions.to(torch.float32)], dim=1)
        if seed == "draw":
            seed = self._draw_seed()
        with torch.no_grad(), sample_seed(seed, self.device), self._autocast():
            return self.model_run.model(ctx, seq).float()

    def latent_state(self) -> Any:
        """Latent model: the :class:`~visfore_models.base.LatentState` after the current
        context (``init_state`` of the last ``window`` real frames and the actions between them),
        computed once per plan and reused by every iteration."""
        if self._state is None:
            seed = self._draw_seed()
            with torch.no_grad(), sample_seed(seed, self.device), self._autocast():
                self._state = self.model_run.model.init_state(self._frames[None], self._actions[None])
        return self._state

    def _rollout(self, actions: Any) -> dict[str, Any]:
        """``(n, T, A)`` -> ``{"frames": (n, T', 3, H, W), "features": (n, T', F)}`` (each
        only when a term needs it), in one model call per kind (see the class docstring);
        ``T' = 1`` (step T only) for a latent model with a final-step cost, else ``T``."""
        out: dict[str, Any] = {}
        if not self.latent:
            frames = self._predict(actions)
            if self.needs_frames:
                out["frames"] = frames
            if self.needs_features:
                out["features"] = frames.flatten(-3)
            return out
        model = self.model_run.model
        state = self.latent_state()
        seed = self._draw_seed()
        batch = actions[None].to(torch.float32)  # (1, n, T, A): n candidates of one state
        # a final-step cost reads only step T: the other steps are neither decoded nor featurised
        last = self.cost_frames == "final"
        with torch.no_grad(), self._autocast():
            if self.needs_features:
                with sample_seed(seed, self.device):
                    out["features"] = model.imagine(state, batch, decode=False, last_only=last)[0][0].float()
            if self.needs_frames:
                with sample_seed(seed, self.device):
                    out["frames"] = model.imagine(state, batch, decode=True, last_only=last)[0][0].float()
        return out

    def _score(self, out: Mapping[str, Any]) -> Any:
        """The weighted cost of one rollout (:meth:`_rollout`): ``(n,)`` float32."""
        terms: dict[str, Any] = {}
        if "pixels" in self.weights:
            terms["pixels"] = pixel_cost(out["frames"], self._goal_blurred, self.cost_frames, self.pixel_blur)
        if "latent" in self.weights:
            terms["latent"] = latent_cost(out["features"], self._goal_features, self.cost_frames)
        if self.keypoint_source == "translator":
            assert self.translator is not None  # __init__ requires one for key-point costs
            sel = select_steps(out["frames"], self.cost_frames)
            n, k = sel.shape[:2]
            kp = self.translator(sel.reshape(n * k, *sel.shape[2:])).reshape(n, k, -1)
            terms["keypoints"] = keypoint_cost(kp, self._goal_kp, "all")
        elif self.keypoint_source == "probe":
            sel = select_steps(out["features"], self.cost_frames)
            with torch.no_grad():
                kp = probe_keypoints(self.model_run.model, sel, int(self.keypoint_coords or 0))
            terms["keypoints"] = keypoint_cost(kp, self._goal_kp, "all")
        return weighted_sum(terms, self.weights).float()

    def _cost(self, actions: Any) -> Any:
        t0 = time.perf_counter()
        n = actions.shape[0]
        chunk = self.batch_chunk or n
        out = torch.cat([self._score(self._rollout(actions[i : i + chunk])) for i in range(0, n, chunk)])
        self.forward_seconds += time.perf_counter() - t0
        return out

    def _imagine(self, actions: Any) -> np.ndarray:
        """The frames of one plan (``(k, A)`` -> ``(k, H, W, 3)`` uint8), decoded now."""
        return self._defer_imagine(actions)()

    def _defer_imagine(self, actions: Any) -> Callable[[], np.ndarray]:
        """The plan's frames, decoded when called: the context (pixel model) or latent
        state and the seed are taken now, so a later read gives the frames of this plan
        and the generator's draws do not depend on whether GIFs are made."""
        seed = self._draw_seed()
        if not self.latent:
            frames, past = self._frames, self._actions
            return lambda: model_to_frames(self._predict(actions[None], seed, frames, past)[0])
        state = self.latent_state()
        model = self.model_run.model

        def decode() -> np.ndarray:
            with torch.no_grad(), sample_seed(seed, self.device), self._autocast():
                out, _ = model.imagine(state, actions[None, None].to(torch.float32))
            return model_to_frames(out[0, 0].float())

        return decode


class OracleCEMController(CEMController):
    """CEM or MPPI on the true simulator: candidates rolled out from the env's current
    MuJoCo state.

    Rollouts: ``mujoco.rollout.rollout`` of all N candidates from ``mj_getState(model,
    data, mjSTATE_FULLPHYSICS)`` of the env, each action held ``frame_skip`` physics steps
    (what ``env.step`` does); the env itself is never touched. Frames are drawn with the
    env's renderer from a private scene ``MjData`` (ghost posed like the env's); key points
    come from ``mj_kinematics`` on a private ``MjData``.

    Args:
        cem_config, replan_every, action_scale: see :class:`CEMController`.
        cost: ``--cost``-style terms (text or ``{term: weight}``): ``pixels`` (rendered
            frames vs the goal image), ``latent`` (rendered frames encoded by
            ``goal_encoder`` vs the encoded goal image, squared L2: the learned
            controller's latent cost with the true dynamics) and ``keypoints`` (true key
            points vs the env's target, metres); cost_frames: ``final`` or ``all``.
        pixel_weight, keypoint_weight: weights of terms given without one.
        goal_encoder: ``frames (M, 3, H, W) float in [0, 1] -> (M, F)``, e.g. a latent
            model's ``encode_goal``; needed for the ``latent`` term.

    Raises:
        VisforeError: a bad cost, or ``latent`` without ``goal_encoder``.
    """

    name = "oracle-cem"

    def __init__(self, cem_config: CEMConfig | MPPIConfig, *, replan_every: int = 1, action_scale: float = 1.0,
                 cost: str | Mapping[str, float] = "pixels", cost_frames: str = "final",
                 pixel_weight: float = 1.0, keypoint_weight: float = 1.0, pixel_blur: float = 0.0,
                 shrink_horizon: bool = True,
                 goal_encoder: Callable[[Any], Any] | None = None) -> None:  # fmt: skip
        super().__init__(cem_config, replan_every, action_scale, "cpu", shrink_horizon=shrink_horizon)
        if isinstance(cost, Mapping):
            self.weights = {str(k): float(v) for k, v in cost.items()}
        else:
            self.weights = cost_weights(str(cost), pixel_weight, keypoint_weight)
        if "latent" in self.weights and goal_encoder is None:
            raise VisforeError("the oracle's latent cost needs a model to encode its frames (--model RUN)")
        self.goal_encoder = goal_encoder
        self.pixel_blur = float(pixel_blur)
        self.cost = "+".join(self.weights)
        self.cost_frames = cost_frames
        self.pixel_weight = float(pixel_weight)
        self.keypoint_weight = float(keypoint_weight)
        self.name = controller_label("oracle", tuple(self.weights), self.optimizer)
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
        goal = frames_to_model(np.asarray(goal_frame, np.uint8))
        self._goal = gaussian_blur(goal, self.pixel_blur)
        self._goal_features = None
        if "latent" in self.weights:
            assert self.goal_encoder is not None  # __init__ requires one
            with torch.no_grad():
                self._goal_features = self.goal_encoder(goal[None])[0].float().cpu()
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
        if "pixels" in self.weights or "latent" in self.weights:
            frames = frames_to_model(self.render(flat)).reshape(N, k, 3, self._H, self._W)
            if "pixels" in self.weights:
                mse = pixel_cost(frames, self._goal, "all", self.pixel_blur)  # over the k selected
                total += self.weights["pixels"] * mse.double()
            if "latent" in self.weights:
                assert self.goal_encoder is not None and self._goal_features is not None
                with torch.no_grad():
                    feats = self.goal_encoder(frames.reshape(N * k, 3, self._H, self._W)).float().cpu()
                dist = latent_cost(feats.reshape(N, k, -1), self._goal_features, "all")
                total += self.weights["latent"] * dist.double()
        if "keypoints" in self.weights:
            kp = self.keypoints(flat)
            dist = np.linalg.norm(kp - self._target_kp, axis=1).reshape(N, k).mean(axis=1)
            total += self.weights["keypoints"] * torch.from_numpy(dist)
        return total

    def _imagine(self, actions: Any) -> np.ndarray:
        qpos = self.rollout_qpos(actions.detach().cpu().numpy()[None])[0]
        return self.render(qpos)
