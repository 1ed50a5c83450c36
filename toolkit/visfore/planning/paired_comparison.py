"""Paired comparison of two controllers from ``visfore plan`` outputs on the same episodes
(``visfore compare-plans``).

Two plan runs with the same ``--env`` and ``--seed`` reset episode k to the same initial
state and target (:data:`~visfore.planning.goal_reaching.SEEDING_SCHEME`), so their
episodes pair up by reset seed. A success is ``final_distance < threshold`` (metres). The
tests are one-sided, "A succeeds more often than B":

* **Fisher's exact test** on the 2x2 table of successes and failures of each side
  (``scipy.stats.fisher_exact``, ``alternative="greater"``); it ignores the pairing;
* **the exact McNemar test** on the discordant pairs: with ``only_a`` episodes that only A
  solves and ``only_b`` that only B solves, ``P(X >= only_a)`` for
  ``X ~ Binomial(only_a + only_b, 1/2)`` (``scipy.stats.binomtest``; McNemar 1947, the
  exact form in Fagerland et al. 2013, BMC Med. Res. Methodol. 13:91). With no discordant
  pair it is 1.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from visfore.core.errors import VisforeError

__all__ = ["PairedComparison", "compare_plans", "load_controller_episodes", "paired_test"]


@dataclass(frozen=True)
class PairedComparison:
    """The result of :func:`paired_test` (and :func:`compare_plans`).

    Attributes:
        a, b: the two sides' names (controller labels, or what the caller passed).
        threshold: the success threshold, metres.
        n: paired episodes.
        a_successes, b_successes: successes of each side over the ``n`` pairs.
        only_a, only_b: the discordant pairs (A succeeds and B fails; the reverse).
        a_closer: pairs where A's final distance is smaller than B's.
        fisher_p: one-sided Fisher exact p value (A better than B).
        mcnemar_p: one-sided exact McNemar p value (A better than B).
        a_mean_distance, b_mean_distance: mean final distance of each side, metres.
        unpaired: episodes of either side without a partner (left out of every number).
    """

    a: str
    b: str
    threshold: float
    n: int
    a_successes: int
    b_successes: int
    only_a: int
    only_b: int
    a_closer: int
    fisher_p: float
    mcnemar_p: float
    a_mean_distance: float
    b_mean_distance: float
    unpaired: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Every field, JSON-plain."""
        return asdict(self)


def paired_test(
    a_distance: Sequence[float],
    b_distance: Sequence[float],
    threshold: float,
    *,
    a: str = "A",
    b: str = "B",
    unpaired: int = 0,
) -> PairedComparison:
    """Successes, discordant pairs and both one-sided p values of paired episodes.

    Args:
        a_distance, b_distance: ``(n,)`` final distances (metres) of the same ``n``
            episodes under the two controllers, pair i in position i.
        threshold: success when the distance is below it (metres), > 0.
        a, b: names for the result.
        unpaired: carried into the result (episodes the caller could not pair).

    Raises:
        VisforeError: lengths differ, no pair, a non-finite distance or a threshold <= 0.
    """
    from scipy.stats import binomtest, fisher_exact

    if len(a_distance) != len(b_distance):
        raise VisforeError(
            f"paired episodes need as many distances on each side, got {len(a_distance)} and {len(b_distance)}"
        )
    if not a_distance:
        raise VisforeError("no paired episodes to compare")
    if not (threshold > 0 and math.isfinite(threshold)):
        raise VisforeError(f"--threshold must be a positive distance in metres, got {threshold}")
    for d in (*a_distance, *b_distance):
        if not math.isfinite(d):
            raise VisforeError(f"a final distance is not finite ({d}): the episode did not finish")
    sa = [d < threshold for d in a_distance]
    sb = [d < threshold for d in b_distance]
    n = len(sa)
    wins_a, wins_b = sum(sa), sum(sb)
    only_a = sum(x and not y for x, y in zip(sa, sb))
    only_b = sum(y and not x for x, y in zip(sa, sb))
    fisher = float(fisher_exact([[wins_a, n - wins_a], [wins_b, n - wins_b]], alternative="greater").pvalue)
    discordant = only_a + only_b
    mcnemar = float(binomtest(only_a, discordant, 0.5, alternative="greater").pvalue) if discordant else 1.0
    return PairedComparison(
        a=a,
        b=b,
        threshold=float(threshold),
        n=n,
        a_successes=wins_a,
        b_successes=wins_b,
        only_a=only_a,
        only_b=only_b,
        a_closer=sum(x < y for x, y in zip(a_distance, b_distance)),
        fisher_p=fisher,
        mcnemar_p=mcnemar,
        a_mean_distance=sum(a_distance) / n,
        b_mean_distance=sum(b_distance) / n,
        unpaired=unpaired,
    )


def _read_episodes(run: str) -> list[dict[str, Any]]:
    path = Path(run) / "episodes.json"
    if not path.is_file():
        raise VisforeError(f"{run} is not a visfore plan output: it has no episodes.json")
    try:
        episodes = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise VisforeError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(episodes, list):
        raise VisforeError(f"{path} does not hold a list of episodes")
    return episodes


def _pick_controller(run: str, labels: Sequence[str], wanted: str | None) -> str:
    """The one controller label of ``labels`` that ``wanted`` names: the label itself, or
    its kind (``learned``, ``oracle``, ``random``, ``through-model``) when one label has it.
    ``wanted`` may be None when the run has a single controller."""
    names = ", ".join(labels) or "none"
    if wanted is None:
        if len(labels) == 1:
            return labels[0]
        raise VisforeError(f"{run} has the controllers {names}: name one with --a-controller / --b-controller")
    if wanted in labels:
        return wanted
    matches = [label for label in labels if label.split("-")[0] == wanted or label.startswith(wanted + "-")]
    if len(matches) == 1:
        return matches[0]
    raise VisforeError(f"controller {wanted!r} is not one of {run}'s controllers ({names})")


def load_controller_episodes(runs: Sequence[str], controller: str | None) -> tuple[str, dict[int, float], set[float]]:
    """One controller's final distances from one or more plan outputs.

    Args:
        runs: ``visfore plan`` output directories (each with ``episodes.json``).
        controller: a controller label or kind (see :func:`_pick_controller`); None when
            every run has one controller.

    Returns:
        (label, {reset seed: final distance in metres}, the success thresholds those
        episodes were scored with, metres). The label is the runs' label when they agree,
        else the labels joined by ``,``.

    Raises:
        VisforeError: no runs, a run that is not a plan output (or an episode entry
        without ``controller``, ``reset_seed`` and ``final_distance``), an ambiguous or
        unknown controller, or one reset seed in two runs (the same episodes twice).
    """
    if not runs:
        raise VisforeError("each side needs at least one plan output directory")
    labels: list[str] = []
    distances: dict[int, float] = {}
    thresholds: set[float] = set()
    for run in runs:
        episodes = _read_episodes(run)
        if not all(
            isinstance(e, dict) and {"controller", "reset_seed", "final_distance"} <= e.keys() for e in episodes
        ):
            raise VisforeError(
                f"{run}/episodes.json has an entry without controller, reset_seed and final_distance: "
                "not a visfore plan output"
            )
        label = _pick_controller(run, sorted({str(e["controller"]) for e in episodes}), controller)
        if label not in labels:
            labels.append(label)
        for e in episodes:
            if e["controller"] != label:
                continue
            seed = int(e["reset_seed"])
            if seed in distances:
                raise VisforeError(f"{run} repeats episode reset seed {seed}: each episode may count once per side")
            distances[seed] = float(e["final_distance"])
            threshold = e.get("success_threshold")
            if threshold is not None and math.isfinite(float(threshold)):
                thresholds.add(float(threshold))
    return ",".join(labels), distances, thresholds


def compare_plans(
    a_runs: Sequence[str],
    b_runs: Sequence[str],
    *,
    a_controller: str | None = None,
    b_controller: str | None = None,
    threshold: float | None = None,
) -> PairedComparison:
    """Compare controller A (in ``a_runs``) with controller B (in ``b_runs``) on the
    episodes both ran, paired by reset seed (:func:`paired_test`).

    ``threshold`` (metres) defaults to the runs' own success threshold (``visfore plan
    --success-threshold``), which must then be the same in all of them.

    Raises:
        VisforeError: see :func:`load_controller_episodes`; no episode in common; runs
        with different thresholds and no ``threshold``.
    """
    name_a, a, thresholds_a = load_controller_episodes(a_runs, a_controller)
    name_b, b, thresholds_b = load_controller_episodes(b_runs, b_controller)
    common = sorted(set(a) & set(b))
    if not common:
        raise VisforeError("the two sides share no episode: run visfore plan with the same --env and --seed for both")
    if threshold is None:
        values = thresholds_a | thresholds_b
        if len(values) != 1:
            raise VisforeError(
                f"the runs use {len(values) or 'no'} success thresholds ({sorted(values)}): give one with --threshold"
            )
        threshold = values.pop()
    unpaired = len(set(a) ^ set(b))
    return paired_test([a[s] for s in common], [b[s] for s in common], threshold, a=name_a, b=name_b, unpaired=unpaired)
