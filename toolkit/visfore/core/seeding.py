"""The one seeding rule of the episode pipelines (``collect``, ``evaluate``, ``plan``,
``mimic``, the through-model evaluation).

Episode ``k`` of a run (or evaluation seed) ``s`` draws from
``ss = numpy.random.SeedSequence([s, k])`` alone (:data:`SEEDING_SCHEME`):

- the env is reset with ``seed=int(ss.generate_state(1, numpy.uint32)[0])``
  (:func:`episode_reset_seed`), an int in ``[0, 2**32)``;
- the policy / controller draws from ``numpy.random.default_rng(ss.spawn(1)[0])``
  (:func:`episode_rng`).

An episode therefore depends only on ``(s, k)``: results are bit-identical whatever the
number of workers, the backend (processes or Ray), the order episodes finish in, or how
often a run was interrupted and resumed; and two commands given the same seed see the
same start states (common random numbers).
"""

from __future__ import annotations

import numpy as np

__all__ = ["SEEDING_SCHEME", "episode_reset_seed", "episode_rng", "episode_seeds"]

SEEDING_SCHEME = (
    "visfore-seeding-v1: ss = numpy.random.SeedSequence([seed, episode_index]); "
    "env.reset(seed=int(ss.generate_state(1, numpy.uint32)[0])); "
    "policy rng = numpy.random.default_rng(ss.spawn(1)[0])"
)


def _sequence(seed: int, episode: int) -> np.random.SeedSequence:
    return np.random.SeedSequence([int(seed), int(episode)])


def episode_reset_seed(seed: int, episode: int) -> int:
    """The ``env.reset(seed=...)`` value of episode ``episode`` of seed ``seed``, in [0, 2**32)."""
    return int(_sequence(seed, episode).generate_state(1, np.uint32)[0])


def episode_rng(seed: int, episode: int) -> np.random.Generator:
    """A fresh generator for the policy / controller of episode ``episode`` of seed ``seed``."""
    return np.random.default_rng(_sequence(seed, episode).spawn(1)[0])


def episode_seeds(seed: int, episode: int) -> tuple[int, np.random.Generator]:
    """``(episode_reset_seed(seed, episode), episode_rng(seed, episode))`` in one call."""
    ss = _sequence(seed, episode)
    return int(ss.generate_state(1, np.uint32)[0]), np.random.default_rng(ss.spawn(1)[0])
