"""The controllers of ``visfore plan``, each a :class:`~visfore.planning.goal_reaching.GoalController`:

* :class:`RandomController`: independent uniform actions in the bounds (the floor to beat);
* :class:`CEMController`: receding-horizon CEM (:mod:`visfore.planning.cem`) with warm starts
  and a shrinking horizon, specialised by
* :class:`LearnedCEMController`: candidates scored on the frames a learned forward model
  imagines, and
* :class:`OracleCEMController`: candidates rolled out in the true MuJoCo model
  (``mujoco.rollout``) and scored on rendered frames or the true key points.

All share :func:`action_bounds`; the costs are :mod:`visfore.planning.costs`. The
through-model controller is :func:`visfore.planning.through_model.load_through_model_policy`.
"""

from __future__ import annotations

import time
from typing import Any

import mujoco
import mujoco.rollout
import numpy as np
import torch

from visfore.core.errors import VisforeError
from visfore.planning.cem import CEMConfig, CEMResult, cem, shift_mean
from visfore.planning.costs import Translator, gaussian_blur, pixel_cost
from visfore.planning.goal_reaching import scale_action_box
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
