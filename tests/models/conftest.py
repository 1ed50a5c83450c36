"""Shared setup for the visfore_models tests."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

try:  # installed (pip install -e .) in the project venv; fall back to the source tree
    import visfore_models  # noqa: F401
except ModuleNotFoundError:  # pragma: no cover - depends on the environment
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "models"))

sys.path.insert(0, str(Path(__file__).resolve().parent))  # visfore_models_testutils


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """These models are tiny: one intra-op thread is as fast and does not oversubscribe the
    cores when pytest-xdist runs two workers. Restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)
