"""Collection policies: open-loop action generators, pure numpy, seeded per episode.

A policy is created once per env with the action bounds and reset at the start of every
episode with that episode's own ``numpy.random.Generator``, so an episode's actions
depend only on its seed (never on which worker ran it or what ran before).

* ``random``: a_t ~ Uniform(low, high), independent across steps.
* ``smooth``: a clipped Ornstein-Uhlenbeck process around the centre of the box, in
  units of the half-range ``(high - low) / 2``::

      u_0     ~ Uniform(-1, 1)
      u_{t+1} = u_t + theta * (0 - u_t) + sigma * N(0, 1),   then clipped to [-1, 1]
      a_t     = centre + half_range * scale * u_t

  Defaults ``theta = 0.3`` (correlation time about 1 / theta = 3 steps), ``sigma = 0.3``
  and ``scale = 0.3``: torques keep their sign for a few steps, so the arm makes smooth,
  visible swings instead of jittering. The amplitude is scaled down because the
  reacher's motors (gear 200, from gymnasium's Reacher) spin a lightly damped arm up to
  25-30 rad/s under full-range correlated torques, 15 px or more per 64x64 frame, too
  fast for a forward model to follow from two context frames. With these defaults,
  over 30-step ReacherPlane-v0 episodes, the median joint speed is about 2 rad/s and
  the 90th percentile about 7 rad/s (measured on a dataset collected with these defaults).

  ``min_scale`` (optional) draws each episode's amplitude log-uniformly from
  ``[min_scale, scale]`` instead: a dataset then also holds slow, nearly resting arms,
  which the defaults almost never produce (3 % of frames have both joint speeds under
  0.3 rad/s) but a planner converging on a goal visits all the time.
"""

from __future__ import annotations

import inspect
from typing import Any, Mapping

import numpy as np
from gymnasium import spaces

from visfore.core.errors import VisforeError
from visfore.data.envs import check_keyword_values, keyword_parameters, unknown_keys_error

#: Policy names accepted by ``--policy``.
POLICY_NAMES = ("random", "smooth")


class Policy:
    """Base class: ``reset(rng)`` at the start of an episode, then ``act(obs)`` per step.

    Args:
        low, high: (A,) finite action bounds.
        dtype: dtype of the returned actions (the action space's, usually float32).
    """

    name = "base"

    def __init__(self, low: np.ndarray, high: np.ndarray, dtype: Any = np.float32) -> None:
        self.low = np.asarray(low, dtype=np.float64)
        self.high = np.asarray(high, dtype=np.float64)
        if self.low.shape != self.high.shape or self.low.ndim != 1:
            raise VisforeError(f"policies need 1-D action bounds, got {self.low.shape}")
        if not (np.all(np.isfinite(self.low)) and np.all(np.isfinite(self.high))):
            raise VisforeError("policies need a bounded action space (finite low/high)")
        self.dtype = np.dtype(dtype)
        self.centre = (self.low + self.high) / 2
        self.half_range = (self.high - self.low) / 2
        self.rng = np.random.default_rng(0)

    @property
    def params(self) -> dict[str, Any]:
        """The policy's parameters (JSON-serialisable; stored in the dataset attrs)."""
        return {}

    def reset(self, rng: np.random.Generator) -> None:
        """Start an episode; every random draw of the episode comes from ``rng``."""
        self.rng = rng

    def act(self, obs: Any = None) -> np.ndarray:
        """The next action: (A,) array of ``dtype`` inside [low, high]."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """``{"name": ..., **params}`` for the dataset attrs."""
        return {"name": self.name, **self.params}


class RandomPolicy(Policy):
    """Independent uniform actions in [low, high]."""

    name = "random"

    def act(self, obs: Any = None) -> np.ndarray:
        return self.rng.uniform(self.low, self.high).astype(self.dtype)


class SmoothPolicy(Policy):
    """Clipped Ornstein-Uhlenbeck actions (see the module docstring).

    Args:
        theta: mean reversion per step, in (0, 1].
        sigma: noise std per step in half-range units, > 0.
        scale: action amplitude as a fraction of the half-range, in (0, 1].
        min_scale: None (every episode uses ``scale``) or a per-episode amplitude
            range: each episode draws its amplitude log-uniformly from
            ``[min_scale, scale]``, ``0 < min_scale <= scale``.
    """

    name = "smooth"

    def __init__(
        self,
        low: np.ndarray,
        high: np.ndarray,
        dtype: Any = np.float32,
        theta: float = 0.3,
        sigma: float = 0.3,
        scale: float = 0.3,
        min_scale: float | None = None,
    ) -> None:
        super().__init__(low, high, dtype)
        if not 0 < theta <= 1:
            raise VisforeError(f"smooth policy theta={theta} must be in (0, 1]")
        if not sigma > 0:
            raise VisforeError(f"smooth policy sigma={sigma} must be > 0")
        if not 0 < scale <= 1:
            raise VisforeError(f"smooth policy scale={scale} must be in (0, 1]")
        if min_scale is not None and not (
            isinstance(min_scale, (int, float)) and not isinstance(min_scale, bool) and 0 < min_scale <= scale
        ):
            raise VisforeError(f"smooth policy min_scale={min_scale!r} must be in (0, scale={scale}]")
        self.min_scale = None if min_scale is None else float(min_scale)
        self._episode_scale = float(scale)
        self.theta = float(theta)
        self.scale = float(scale)
        self.sigma = float(sigma)
        self._u = np.zeros_like(self.low)
        self._started = False

    @property
    def params(self) -> dict[str, Any]:
        return {
            "theta": self.theta,
            "sigma": self.sigma,
            "scale": self.scale,
            **({} if self.min_scale is None else {"min_scale": self.min_scale}),
            "process": "ornstein-uhlenbeck",
        }

    def reset(self, rng: np.random.Generator) -> None:
        super().reset(rng)
        self._u = rng.uniform(-1.0, 1.0, size=self.low.shape)
        self._started = False
        self._episode_scale = self.scale
        if self.min_scale is not None:  # drawn after u_0, so datasets without it keep their actions
            self._episode_scale = float(np.exp(rng.uniform(np.log(self.min_scale), np.log(self.scale))))

    @property
    def episode_scale(self) -> float:
        """The current episode's amplitude (fraction of the half-range)."""
        return self._episode_scale

    def act(self, obs: Any = None) -> np.ndarray:
        if self._started:
            noise = self.rng.standard_normal(self._u.shape)
            self._u = np.clip(self._u - self.theta * self._u + self.sigma * noise, -1.0, 1.0)
        self._started = True
        return (self.centre + self.half_range * (self._episode_scale * self._u)).astype(self.dtype)


def make_policy(name: str, action_space: Any, **params: Any) -> Policy:
    """Create the policy ``name`` for a Gymnasium ``Box`` action space.

    Args:
        name: one of :data:`POLICY_NAMES`.
        action_space: a ``gymnasium.spaces.Box`` with finite bounds, shape (A,).
        params: policy parameters (``theta``, ``sigma``, ``scale``, ``min_scale`` for
            ``smooth``).

    Raises:
        VisforeError: unknown name, unsupported action space or bad parameters: an
            unknown key (``"bad parameters for policy 'smooth': unknown key 'wobble';
            valid keys: theta (float, default 0.3), ..."``), a value of the wrong type
            (``"... theta='abc': expected float, got str"``) or out of range.
    """
    if name not in POLICY_NAMES:
        raise VisforeError(f"unknown policy {name!r}; valid: {', '.join(POLICY_NAMES)}")
    if not isinstance(action_space, spaces.Box) or len(action_space.shape) != 1:
        raise VisforeError(f"policies need a 1-D Box action space, got {action_space}")
    cls = POLICY_CLASSES[name]
    try:
        check_policy_params(name, params)
    except VisforeError as exc:
        raise VisforeError(f"bad parameters for policy {name!r}: {exc}") from None
    return cls(action_space.low, action_space.high, action_space.dtype, **params)


#: The policy class of each name of :data:`POLICY_NAMES`.
POLICY_CLASSES: dict[str, type[Policy]] = {"random": RandomPolicy, "smooth": SmoothPolicy}


def policy_parameters(name: str) -> dict[str, inspect.Parameter]:
    """The parameters of policy ``name`` (``--policy-kwargs`` keys) from its constructor's
    signature: name -> :class:`inspect.Parameter` (resolved annotation, default); the
    action bounds and dtype, which :func:`make_policy` passes, are left out."""
    params, _ = keyword_parameters(POLICY_CLASSES[name], skip=("low", "high", "dtype"))
    return params


def check_policy_params(name: str, params: Mapping[str, Any]) -> None:
    """Check the keys and value types of ``params`` for policy ``name``.

    Raises:
        VisforeError: ``"unknown key 'wobble'; valid keys: theta (float, default 0.3), ..."``
            or ``"theta='abc': expected float, got str"``.
    """
    valid = policy_parameters(name)
    unknown = unknown_keys_error(params, valid)
    if unknown is not None:
        raise VisforeError(unknown)
    check_keyword_values(params, valid)
