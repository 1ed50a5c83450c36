"""The cross-entropy method (CEM) over action sequences, batched in torch.

Sampling-based trajectory optimisation as used for visual model-predictive control:

* C. Finn, S. Levine, "Deep Visual Foresight for Planning Robot Motion", ICRA 2017,
  arXiv:1610.00696 -- CEM over action sequences scored on the frames a learned
  video-prediction model imagines (3 iterations, Gaussian refit to the elites, the best
  sequence executed, re-planned from the new frame);
* F. Ebert, C. Finn, S. Dasari, A. Xie, A. Lee, S. Levine, "Visual Foresight: Model-Based
  Deep Reinforcement Learning for Vision-Based Robotic Control", 2018, arXiv:1812.00568,
  Sec. 4 -- the defaults here: 3 iterations of 200 samples, 10 elites, a horizon of 15
  steps made of 5 action blocks each *repeated* 3 steps (fewer free parameters, smoother
  motion);
* K. Chua, R. Calandra, R. McAllister, S. Levine, "Deep Reinforcement Learning in a Handful
  of Trials using Probabilistic Dynamics Models" (PETS), NeurIPS 2018, arXiv:1805.12114 --
  the smoothed refit ``mean <- alpha * mean + (1 - alpha) * elite_mean`` (same for the std;
  PETS uses alpha = 0.1) and the warm start of the next plan from the previous mean
  shifted by the steps executed (:func:`shift_mean`), with the std reset;
* C. Pinneri et al., "Sample-efficient Cross-Entropy Method for Real-time Planning" (iCEM),
  CoRL 2020, arXiv:2008.06389 -- the current mean is scored as one of the samples of every
  iteration (``include_mean``), so the warm-started plan is never lost to sampling noise,
  and the best sequence seen over all iterations is returned.

:func:`cem` is a pure function of a cost callable ``cost(actions (N, T, A)) -> (N,)``; the
sampling noise comes only from the ``torch.Generator`` passed in, so the same generator
state gives the same result bit for bit (for a deterministic cost).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from visfore.core.errors import VisforeError

#: What the controller executes: the best sample seen, or the final elite mean.
EXECUTE = ("best", "mean")

__all__ = ["EXECUTE", "CEMConfig", "CEMResult", "cem", "check_budget", "check_positive", "expand_blocks", "shift_mean"]


def check_positive(name: str, value: Any, strict: bool = True) -> None:
    """Raise :class:`VisforeError` (``--name must be > 0, got ...``) unless ``value`` is a
    finite real number ``> 0`` (``>= 0`` when not ``strict``)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not (value > 0 if strict else value >= 0):
        raise VisforeError(f"--{name} must be {'>' if strict else '>='} 0, got {value!r}")


def check_budget(config: Any) -> None:
    """Check the sampling budget shared by the CEM and MPPI configs: ``iterations >= 1``,
    ``2 <= elites <= samples``, ``blocks >= 1``, ``repeat >= 1`` (integers) and ``execute``
    in :data:`EXECUTE`.

    Raises:
        VisforeError: one line naming the bad value and the allowed range.
    """

    def integer(name: str, value: Any, low: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise VisforeError(f"--{name} must be an integer >= {low}, got {value!r}")

    integer("iterations", config.iterations, 1)
    integer("samples", config.samples, 2)
    integer("elites", config.elites, 2)
    integer("blocks", config.blocks, 1)
    integer("repeat", config.repeat, 1)
    if config.elites > config.samples:
        raise VisforeError(f"--elites {config.elites} must be <= --samples {config.samples}")
    if config.execute not in EXECUTE:
        raise VisforeError(f"--execute must be one of {', '.join(EXECUTE)}, got {config.execute!r}")


@dataclass(frozen=True)
class CEMConfig:
    """CEM budget and update rule.

    Attributes:
        iterations: refits of the sampling distribution (I >= 1).
        samples: candidate sequences per iteration (N >= 2).
        elites: best candidates the Gaussian is refit to (2 <= E <= N).
        blocks: free action blocks per sequence (B >= 1).
        repeat: steps each block's action is held (R >= 1); the horizon is T = B * R steps.
        init_std: initial std of every block, in units of the action half-range
            ``(high - low) / 2`` (> 0).
        min_std: floor of the std after a refit, same units (>= 0).
        alpha: smoothing of the refit (PETS): ``new = alpha * old + (1 - alpha) * elites``,
            in [0, 1).
        include_mean: score the current (clipped) mean as sample 0 of each iteration (iCEM).
        execute: which sequence the controller executes: ``"best"``, the lowest-cost sample
            seen (Finn & Levine 2017; iCEM), or ``"mean"``, the final elite mean (PETS),
            which averages out the errors of a learned model's cost instead of selecting
            for them.
    """

    iterations: int = 3
    samples: int = 200
    elites: int = 10
    blocks: int = 5
    repeat: int = 3
    init_std: float = 0.5
    min_std: float = 0.05
    alpha: float = 0.0
    include_mean: bool = True
    execute: str = "best"

    @property
    def horizon(self) -> int:
        """T = blocks * repeat, steps per action sequence."""
        return self.blocks * self.repeat

    def validate(self) -> CEMConfig:
        """Check every field; returns self.

        Raises:
            VisforeError: one line naming the bad value and the allowed range.
        """

        check_budget(self)
        check_positive("init-std", self.init_std)
        check_positive("min-std", self.min_std, strict=False)
        if not (0.0 <= self.alpha < 1.0):
            raise VisforeError(f"--alpha must be in [0, 1), got {self.alpha!r}")
        return self


@dataclass
class CEMResult:
    """What :func:`cem` found.

    Attributes:
        actions: (T, A) the best sequence seen (lowest cost over all iterations), inside
            the bounds, on the cost's device.
        cost: its cost (float).
        mean: (B, A) the final block mean (for a warm start), std: (B, A) the final std.
        mean_actions: (T, A) that mean, clipped to the bounds and expanded to steps (not
            scored).
        history: per iteration ``{"best", "elite_mean", "mean_cost"}`` costs (floats).
        evaluations: candidate sequences scored (I * N).
    """

    actions: Any
    cost: float
    mean: Any
    std: Any
    history: list[dict[str, float]] = field(default_factory=list)
    evaluations: int = 0
    mean_actions: Any = None


def expand_blocks(blocks: Any, repeat: int) -> Any:
    """``(..., B, A)`` block actions -> ``(..., B * repeat, A)`` per-step actions (each block
    held ``repeat`` steps)."""
    return blocks.repeat_interleave(int(repeat), dim=-2)


def shift_mean(mean: Any, steps: int, repeat: int, fill: Any) -> Any:
    """Warm start (PETS): the block mean of the previous plan, advanced by ``steps``
    executed steps.

    The ``(B, A)`` mean is expanded to ``(B * repeat, A)`` steps, shifted left by ``steps``,
    padded at the end with ``fill`` ((A,), e.g. the centre of the bounds), and averaged back
    into blocks of ``repeat`` steps.

    Raises:
        VisforeError: ``steps < 0``.
    """
    if steps < 0:
        raise VisforeError(f"cannot shift a plan by {steps} steps")
    B = mean.shape[0]
    per_step = expand_blocks(mean, repeat)
    pad = fill.to(mean).expand(min(int(steps), per_step.shape[0]), -1)
    shifted = torch.cat([per_step[int(steps) :], pad], dim=0)
    return shifted.reshape(B, int(repeat), -1).mean(dim=1)


def cem(
    cost: Callable[[Any], Any],
    low: Any,
    high: Any,
    config: CEMConfig,
    generator: Any,
    *,
    init_mean: Any | None = None,
    init_std: Any | None = None,
) -> CEMResult:
    """Minimise ``cost`` over action sequences with the cross-entropy method.

    Each iteration draws ``N`` block sequences ``mean + std * eps`` (eps ~ N(0, 1) from
    ``generator``), clips them to ``[low, high]``, expands every block to ``repeat`` steps
    and scores all ``N`` in one call of ``cost``; the Gaussian (independent per block and
    action dimension) is refit to the ``E`` lowest-cost candidates (smoothed by ``alpha``,
    std floored at ``min_std``).

    Args:
        cost: ``cost(actions)`` with actions ``(N, T, A)`` float32 on the device of
            ``low`` -> ``(N,)`` costs (lower is better). Called ``iterations`` times.
        low, high: ``(A,)`` float tensors, the action bounds (low < high).
        config: a :class:`CEMConfig`.
        generator: a ``torch.Generator`` on the device of ``low``; the only randomness.
        init_mean: ``(B, A)`` initial block mean (a warm start), default the centre of the
            bounds; clipped to them.
        init_std: ``(B, A)`` initial std, default ``config.init_std`` half-ranges.

    Returns:
        A :class:`CEMResult`.

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
    min_std = config.min_std * half
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
        elites = candidates[elite_idx]
        i0 = int(order[0])
        c0 = float(costs[i0])
        if c0 < best_cost:
            best_cost = c0
            best_actions = actions[i0].clone()
        new_mean = elites.mean(dim=0)
        new_std = elites.std(dim=0, unbiased=True)
        a = config.alpha
        mean = a * mean + (1 - a) * new_mean
        std = torch.maximum(a * std + (1 - a) * new_std, min_std)
        history.append(
            {
                "best": c0,
                "elite_mean": float(costs[elite_idx].mean()),
                "mean_cost": float(costs.mean()),
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
