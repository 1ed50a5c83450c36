"""Model predictive path integral control (MPPI) over action sequences, batched in torch.

* G. Williams, P. Drews, B. Goldfain, J. M. Rehg, E. A. Theodorou, "Information Theoretic
  MPC for Model-Based Reinforcement Learning", ICRA 2017 -- the update: sample action
  sequences around the current mean, weight each by ``exp(-cost / lambda)`` (relative to
  the lowest cost, for numerical range) and move the mean to the weighted average of the
  samples; the controller executes that weighted mean and warm-starts the next plan from
  it, shifted by the steps executed;
* N. Hansen, H. Su, X. Wang, "TD-MPC2: Scalable, Robust World Models for Continuous
  Control", ICLR 2024, arXiv:2310.16828, and its planner ``TDMPC2._plan`` in
  github.com/nicklashansen/tdmpc2, ``tdmpc2/tdmpc2.py`` (settings in ``tdmpc2/config.yaml``)
  -- the variant used here: several iterations, the weights computed over the ``E``
  best samples only (``num_elites``), ``score = exp(temperature * (v - max v))`` normalised
  to sum to one, the std refit as the weighted standard deviation and clamped to
  ``[min_std, max_std]``, the first plan of an episode from std ``max_std``, the next from
  the previous mean shifted by one step. TD-MPC2's settings: ``iterations 6``,
  ``num_samples 512``, ``num_elites 64``, ``temperature 0.5``, ``min_std 0.05``, ``max_std
  2`` (actions in ``[-1, 1]``, so std in action half-ranges), horizon 3 (it adds a learned
  value at the end; this planner has none and plans 15 steps to the goal).

Differences from TD-MPC2, each for a reason:

* costs instead of values (``-cost`` where TD-MPC2 has ``v``);
* ``normalize=True`` (the default) divides the elites' costs by their standard deviation
  before the temperature is applied. TD-MPC2's values are returns of rewards near
  ``[0, 1]``; the costs of ``visfore plan`` range from a pixel MSE of ~1e-3 to a squared
  latent distance of ~10-100, so a fixed temperature on raw costs would weight the elites
  uniformly for one cost and pick one sample for another. Normalised, ``temperature 0.5``
  means the same sharpness for every cost: an elite one standard deviation worse than the
  best gets ``exp(-0.5)`` of its weight. ``normalize=False`` is TD-MPC2's raw form;
* action blocks held ``repeat`` steps (the CEM's parametrisation, :mod:`visfore.planning.cem`,
  so both optimizers search the same sequences at the same budget);
* the current mean is scored as sample 0 (as iCEM, ``include_mean``) and the best sample
  seen is kept, so ``execute="best"`` can run it; ``execute="mean"`` (MPPI's choice)
  runs the final weighted mean. TD-MPC2 samples one elite by its score instead.

:func:`mppi` has the interface of :func:`visfore.planning.cem.cem` (a cost callable
``cost(actions (N, T, A)) -> (N,)``, bounds, a config, a ``torch.Generator``, an optional
warm start) and returns the same :class:`~visfore.planning.cem.CEMResult`, so the
controllers (:mod:`visfore.planning.controllers`) use either with any cost.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch

from visfore.core.errors import VisforeError
from visfore.planning.cem import CEMResult, check_budget, check_positive, expand_blocks

__all__ = ["MPPIConfig", "mppi", "mppi_weights"]


@dataclass(frozen=True)
class MPPIConfig:
    """MPPI budget and update rule (defaults: TD-MPC2's planner, ``tdmpc2/config.yaml``).

    Attributes:
        iterations: updates of the sampling distribution (I >= 1; TD-MPC2: 6).
        samples: candidate sequences per iteration (N >= 2; TD-MPC2: 512).
        elites: best candidates the weights are computed over (2 <= E <= N; TD-MPC2: 64).
        blocks: free action blocks per sequence (B >= 1).
        repeat: steps each block's action is held (R >= 1); the horizon is T = B * R steps.
        temperature: ``tau`` in ``w_i ~ exp(-tau * (c_i - min c) / s)`` over the elites
            (> 0; TD-MPC2: 0.5), ``s`` the elites' cost std with ``normalize`` else 1.
        normalize: divide the elites' costs by their std first (see the module docstring).
        init_std: std of the first plan, in action half-ranges ``(high - low) / 2`` (> 0;
            TD-MPC2 starts from ``max_std`` = 2).
        min_std, max_std: clamp of the refit std, half-ranges (TD-MPC2: 0.05 and 2).
        include_mean: score the current (clipped) mean as sample 0 of each iteration.
        execute: ``"mean"`` (the final weighted mean, MPPI) or ``"best"`` (the
            lowest-cost sample seen).
    """

    iterations: int = 6
    samples: int = 512
    elites: int = 64
    blocks: int = 5
    repeat: int = 3
    temperature: float = 0.5
    normalize: bool = True
    init_std: float = 2.0
    min_std: float = 0.05
    max_std: float = 2.0
    include_mean: bool = True
    execute: str = "mean"

    @property
    def horizon(self) -> int:
        """T = blocks * repeat, steps per action sequence."""
        return self.blocks * self.repeat

    def validate(self) -> MPPIConfig:
        """Check every field; returns self.

        Raises:
            VisforeError: one line naming the bad value and the allowed range.
        """

        check_budget(self)
        check_positive("temperature", self.temperature)
        check_positive("init-std", self.init_std)
        check_positive("min-std", self.min_std, strict=False)
        check_positive("max-std", self.max_std)
        if self.min_std > self.max_std:
            raise VisforeError(f"--min-std {self.min_std} must be <= --max-std {self.max_std}")
        return self


def mppi_weights(costs: Any, temperature: float, normalize: bool = True) -> Any:
    """The MPPI weights of ``E`` costs: ``softmax(-temperature * (c - min c) / s)``.

    Args:
        costs: ``(E,)`` float tensor, lower is better.
        temperature: > 0 (TD-MPC2: 0.5).
        normalize: ``s`` = the costs' std (population, ``unbiased=False``; 1 when it is 0,
            i.e. equal costs weigh equally); False: ``s = 1`` (TD-MPC2's raw form).

    Returns:
        ``(E,)`` float tensor of non-negative weights summing to 1 (the lowest cost has the
        largest weight).
    """
    c = costs - costs.min()
    if normalize:
        s = costs.std(unbiased=False) if costs.numel() > 1 else costs.new_tensor(0.0)
        c = c / torch.where(s > 0, s, torch.ones_like(s))
    return torch.softmax(-float(temperature) * c, dim=0)


def mppi(
    cost: Callable[[Any], Any],
    low: Any,
    high: Any,
    config: MPPIConfig,
    generator: Any,
    *,
    init_mean: Any | None = None,
    init_std: Any | None = None,
) -> CEMResult:
    """Minimise ``cost`` over action sequences with MPPI (the module docstring).

    Each iteration draws ``N`` block sequences ``mean + std * eps`` (eps ~ N(0, 1) from
    ``generator``), clips them to ``[low, high]``, expands every block to ``repeat`` steps
    and scores all ``N`` in one call of ``cost``; the ``E`` lowest-cost ones get the
    weights :func:`mppi_weights`; the mean becomes their weighted mean and the std their
    weighted standard deviation, clamped to ``[min_std, max_std]`` half-ranges.

    Args:
        cost: ``cost(actions)`` with actions ``(N, T, A)`` float32 on the device of
            ``low`` -> ``(N,)`` costs (lower is better). Called ``iterations`` times.
        low, high: ``(A,)`` float tensors, the action bounds (low < high).
        config: an :class:`MPPIConfig`.
        generator: a ``torch.Generator`` on the device of ``low``; the only randomness.
        init_mean: ``(B, A)`` initial block mean (a warm start), default the centre of the
            bounds; clipped to them.
        init_std: ``(B, A)`` initial std in action units, default ``config.init_std``
            half-ranges.

    Returns:
        A :class:`~visfore.planning.cem.CEMResult`: ``actions`` the best sample seen,
        ``mean`` / ``std`` the final distribution, ``mean_actions`` the final weighted
        mean, clipped and expanded to steps; ``history`` per iteration ``{"best",
        "elite_mean", "mean_cost", "weight_max"}``.

    Raises:
        VisforeError: a bad config, bounds, initial mean/std shape, or a cost of the
            wrong shape or with NaN.
    """
    config.validate()
    low = torch.as_tensor(low)
    high = torch.as_tensor(high, device=low.device, dtype=low.dtype)
    if low.ndim != 1 or high.shape != low.shape or not bool(torch.all(low < high)):
        raise VisforeError("action bounds must be (A,) with low < high")
    A = low.shape[0]
    B, R, N, E = config.blocks, config.repeat, config.samples, config.elites
    half = (high - low) / 2
    centre = (high + low) / 2
    if init_mean is None:
        mean = centre.expand(B, A).clone()
    else:
        mean = torch.as_tensor(init_mean, device=low.device, dtype=low.dtype)
        if mean.shape != (B, A):
            raise VisforeError(f"init_mean has shape {tuple(mean.shape)}, expected ({B}, {A})")
        mean = torch.minimum(torch.maximum(mean, low), high)
    if init_std is None:
        std = (config.init_std * half).expand(B, A).clone()
    else:
        std = torch.as_tensor(init_std, device=low.device, dtype=low.dtype)
        if std.shape != (B, A):
            raise VisforeError(f"init_std has shape {tuple(std.shape)}, expected ({B}, {A})")
    min_std, max_std = config.min_std * half, config.max_std * half
    best_actions = None
    best_cost = math.inf
    history: list[dict[str, float]] = []
    for _ in range(config.iterations):
        eps = torch.randn((N, B, A), generator=generator, device=low.device, dtype=low.dtype)
        candidates = mean + std * eps
        if config.include_mean:
            candidates[0] = mean
        candidates = torch.minimum(torch.maximum(candidates, low), high)
        actions = expand_blocks(candidates, R)  # (N, T, A)
        costs = torch.as_tensor(cost(actions)).to(low.device).reshape(-1)
        if costs.shape != (N,):
            raise VisforeError(f"the cost returned shape {tuple(costs.shape)}, expected ({N},)")
        if bool(torch.isnan(costs).any()):
            raise VisforeError("the cost returned NaN")
        order = torch.argsort(costs, stable=True)
        elite_idx = order[:E]
        elites = candidates[elite_idx]  # (E, B, A)
        elite_costs = costs[elite_idx].to(low.dtype)
        i0 = int(order[0])
        c0 = float(costs[i0])
        if c0 < best_cost:
            best_cost = c0
            best_actions = actions[i0].clone()
        w = mppi_weights(elite_costs, config.temperature, config.normalize).view(E, 1, 1)
        mean = (w * elites).sum(dim=0)
        std = ((w * (elites - mean).square()).sum(dim=0)).sqrt()
        std = torch.minimum(torch.maximum(std, min_std), max_std)
        history.append(
            {
                "best": c0,
                "elite_mean": float(elite_costs.mean()),
                "mean_cost": float(costs.mean()),
                "weight_max": float(w.max()),
            }
        )
    return CEMResult(
        actions=best_actions,
        cost=best_cost,
        mean=mean,
        std=std,
        history=history,
        evaluations=config.iterations * N,
        mean_actions=expand_blocks(torch.minimum(torch.maximum(mean, low), high), R),
    )
