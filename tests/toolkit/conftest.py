"""Shared fixtures for the toolkit tests.

``small_reacher_dataset`` builds one small dataset per test session (per xdist worker)
through the real collect pipeline, for every test that needs a dataset to read.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")

#: Options of the shared dataset (tests may rely on them).
SMALL_REACHER = dict(
    env="reacher", episodes=12, steps=12, size=32, seed=0, policy="smooth", workers=1
)


@pytest.fixture(scope="session")
def small_reacher_options() -> dict:
    """The :func:`visfore.collect.collect` options ``small_reacher_dataset`` was built with."""
    return dict(SMALL_REACHER)


@pytest.fixture(scope="session")
def small_reacher_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path of a visfore dataset: ReacherPlane-v0, 12 episodes x 12 actions, 32x32, smooth.

    Rows: 12 * 13 = 156; pixels (156, 32, 32, 3) uint8. Built once per session in about
    a second; treat it as read-only.
    """
    from visfore.collect import collect

    path = tmp_path_factory.mktemp("datasets") / "small-reacher.zarr"
    collect(out=path, progress=False, **SMALL_REACHER)
    return path
