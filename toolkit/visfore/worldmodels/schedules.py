"""Training schedules of ``train-model``: what the rollout feeds back (teacher forcing,
scheduled sampling) and the learning rate per step.

* :func:`teacher_forcing_schedule`, :func:`inverse_sigmoid`, :func:`auto_sampling_k`,
  :func:`resolve_sampling`: ``step -> p``, the probability of feeding the true frame;
* :func:`lr_lambda`: the learning-rate multiplier per step (warm-up, cosine or constant),
  for ``torch.optim.lr_scheduler.LambdaLR`` (also used by ``train-translator``);
  :func:`extend_lr_schedule`: that schedule continued to a new ``--epochs`` target on
  ``--resume``.

Pure Python (no torch).
"""

from __future__ import annotations

import math
from typing import Any, Callable

from visfore.core.errors import VisforeError
from visfore.worldmodels.config import TrainConfig

__all__ = [
    "PAPER_SAMPLING_K",
    "SAMPLING_MODES",
    "auto_sampling_k",
    "extend_lr_schedule",
    "inverse_sigmoid",
    "lr_lambda",
    "resolve_sampling",
    "teacher_forcing_schedule",
]

#: ``--sampling`` modes.
SAMPLING_MODES = ("open-loop", "teacher", "scheduled")
#: Finn et al. 2016's inverse-sigmoid constant (their runs); ours is scaled to the run.
PAPER_SAMPLING_K = 900.0


def teacher_forcing_schedule(spec: str, *, total_steps: int) -> Callable[[int], float]:
    """Parse a teacher-forcing spec into ``step -> probability`` in ``[0, 1]``.

    The probability is that of feeding the true frame instead of the model's own
    prediction as the next input (per sample and step; see ``ForwardModel.forward``).
    Scheduled sampling: Bengio, Vinyals, Jaitly & Shazeer, "Scheduled Sampling for
    Sequence Prediction with Recurrent Neural Networks", NeurIPS 2015 (arXiv:1506.03099),
    as used for video prediction by Finn, Goodfellow & Levine 2016 (arXiv:1605.07157).

    Specs::

        ``"P"``: constant probability P (``"0"``: open-loop training).
        ``"inverse-sigmoid:k"``: ``k / (k + exp(step / k))`` (Bengio et al. 2015), k > 0 in
            optimisation steps (starts near 1, is 0.5 near ``step = k ln k``).
        ``"linear:P0:P1[:N]"``: linear from P0 to P1 over N steps (default: all
            ``total_steps``), P1 afterwards.

    Raises:
        VisforeError: an unparsable spec or a probability outside ``[0, 1]``.
    """
    text = str(spec).strip().lower()
    bad = VisforeError(
        f"--teacher-forcing {spec!r} is not a probability in [0, 1], 'inverse-sigmoid:K' or 'linear:P0:P1[:STEPS]'"
    )
    try:
        if text.startswith("inverse-sigmoid:"):
            k = float(text.split(":", 1)[1])
            if not (k > 0 and math.isfinite(k)):
                raise bad
            return inverse_sigmoid(k)
        if text.startswith("linear:"):
            parts = text.split(":")[1:]
            if len(parts) not in (2, 3):
                raise bad
            p0, p1 = float(parts[0]), float(parts[1])
            n = int(parts[2]) if len(parts) == 3 else max(1, total_steps)
            if not (0 <= p0 <= 1 and 0 <= p1 <= 1 and n >= 1):
                raise bad
            return lambda step: float(p0 + (p1 - p0) * min(step, n) / n)
        p = float(text)
    except ValueError:
        raise bad from None
    if not 0.0 <= p <= 1.0:
        raise bad
    return lambda step: p


def inverse_sigmoid(k: float) -> Callable[[int], float]:
    """``step -> k / (k + exp(step / k))``: the probability of feeding the ground truth at
    training step ``step`` in Finn et al. 2016's scheduled sampling (Bengio et al. 2015's
    inverse-sigmoid decay)."""
    return lambda step: float(k / (k + math.exp(min(step / k, 700.0))))


def auto_sampling_k(total_steps: int) -> float:
    """``k`` such that ``k / (k + exp(i / k))`` is 0.5 at ``i = total_steps / 2``, i.e. the
    root of ``k ln k = total_steps / 2`` (bisection, ``k > 1``).

    Finn et al. 2016 used k = 900 over runs of about 10^5 steps; our runs are hundreds to a
    few thousand steps, where k = 900 would never leave teacher forcing. With this k the
    probability starts at ``k / (k + 1)`` (about 0.99 for 1,000 steps), crosses 0.5 half-way
    and ends at ``1 / (1 + k)`` (about 0.01 for 1,000 steps).
    """
    target = max(1, int(total_steps)) / 2.0
    lo, hi = 1.0, max(math.e, target)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid * math.log(mid) < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def resolve_sampling(
    config: TrainConfig, *, total_steps: int, k: float | None = None
) -> tuple[dict[str, Any], Callable[[int], float]]:
    """The training-time sampling schedule of ``config``: ``(description, step -> p)``.

    ``p`` is the probability of feeding the true frame ``o_t`` instead of the model's own
    prediction at each rollout step (per sample; ``ForwardModel.forward``'s
    ``teacher_forcing_prob``), as a function of the optimisation step ``i`` (the global
    step, saved in checkpoints):

    * ``open-loop``: p = 0; ``teacher``: p = 1;
    * ``scheduled``: p = k / (k + exp(i / k)) (Finn, Goodfellow & Levine 2016, "Unsupervised
      Learning for Physical Interaction through Video Prediction", after Bengio et al. 2015),
      with ``k = config.sampling_k`` or :func:`auto_sampling_k` ``(total_steps)``. (Finn et
      al. feed round(B p) ground-truth clips per batch; here each clip and step draws
      independently with probability p, the same in expectation.)
    * ``teacher_forcing`` set: its spec (:func:`teacher_forcing_schedule`).

    ``k`` overrides the computed k (a resumed run keeps its checkpoint's k).
    """
    if config.teacher_forcing is not None:
        fn = teacher_forcing_schedule(config.teacher_forcing, total_steps=total_steps)
        return {
            "mode": "custom",
            "spec": str(config.teacher_forcing),
            "k": None,
            "formula": "teacher_forcing_schedule(spec)",
        }, fn
    if config.sampling == "teacher":
        return {"mode": "teacher", "k": None, "formula": "p = 1"}, lambda step: 1.0
    if config.sampling == "scheduled":
        if k is None:
            k = float(config.sampling_k) if config.sampling_k is not None else auto_sampling_k(total_steps)
        auto = config.sampling_k is None
        return {
            "mode": "scheduled",
            "k": float(k),
            "k_source": f"auto: k ln k = total_steps / 2 = {total_steps / 2:g}" if auto else "--sampling-k",
            "formula": "p(i) = k / (k + exp(i / k)), i = optimisation step (Finn et al. 2016)",
            "p_first_step": inverse_sigmoid(k)(0),
            "p_last_step": inverse_sigmoid(k)(max(0, total_steps - 1)),
        }, inverse_sigmoid(float(k))
    return {"mode": "open-loop", "k": None, "formula": "p = 0"}, lambda step: 0.0


# select_device, parse_device_spec and physical_cpu_cores live in visfore.core.device.
def lr_lambda(
    schedule: str,
    warmup: int,
    total_steps: int,
    *,
    from_step: int | None = None,
    from_factor: float | None = None,
) -> Callable[[int], float]:
    """LR multiplier per step: linear warm-up over ``warmup`` steps, then constant or a
    cosine decay to 0.1 at ``total_steps`` (Loshchilov & Hutter, SGDR, ICLR 2017).

    ``from_step``/``from_factor`` (a run resumed with a new ``--epochs`` target after its
    warm-up): from step ``from_step`` on, the cosine starts at ``from_factor`` (the
    multiplier the run had reached there) and decays to 0.1 at ``total_steps``, so the
    learning rate goes on without a jump (a finished run, at 0.1, stays at 0.1). Steps
    before ``from_step`` follow the plain schedule (a resumed run never goes back there).
    """

    def factor(step: int) -> float:
        if warmup > 0 and step < warmup:
            return (step + 1) / warmup
        if schedule == "constant":
            return 1.0
        if from_step is not None and from_factor is not None and step >= from_step:
            progress = min(1.0, (step - from_step) / max(1, total_steps - from_step))
            return 0.1 + (from_factor - 0.1) * 0.5 * (1.0 + math.cos(math.pi * progress))
        span = max(1, total_steps - warmup)
        progress = min(1.0, (step - warmup) / span)
        return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def extend_lr_schedule(record: dict[str, Any], step: int, total_steps: int) -> dict[str, Any]:
    """The LR schedule of a run resumed at optimisation step ``step`` with a new target
    of ``total_steps``: ``record`` (``{"schedule", "warmup_steps", "total_steps",
    "from_step", "from_factor"}``, the keyword arguments of :func:`lr_lambda`) unchanged
    when the target is the same; else one that continues from the multiplier reached at
    ``step`` and ends at ``total_steps`` (a plain schedule over the new total while still
    in the warm-up, which does not depend on the total)."""
    if int(record["total_steps"]) == int(total_steps):
        return dict(record)
    new = dict(record, total_steps=int(total_steps), from_step=None, from_factor=None)
    if record["schedule"] != "constant" and step >= int(record["warmup_steps"]):
        current = lr_lambda(
            record["schedule"],
            int(record["warmup_steps"]),
            int(record["total_steps"]),
            from_step=record.get("from_step"),
            from_factor=record.get("from_factor"),
        )(step)
        new.update(from_step=int(step), from_factor=float(current))
    return new


# ---------------------------------------------------------------------------------------
