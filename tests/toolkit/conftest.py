"""Shared fixtures for the toolkit tests.

``small_reacher_dataset`` builds one small dataset per test session (per xdist worker)
through the real collect pipeline, for every test that needs a dataset to read;
``model_run_dir`` trains one tiny ConvLSTM run on it for the tests that load a model run.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")

#: Options of the shared dataset (tests may rely on them).
SMALL_REACHER = dict(env="reacher", episodes=12, steps=12, size=32, seed=0, policy="smooth", workers=1)


@pytest.fixture(scope="session")
def small_reacher_options() -> dict:
    """The :func:`visfore.data.collect.collect` options ``small_reacher_dataset`` was built with."""
    return dict(SMALL_REACHER)


@pytest.fixture(scope="session")
def small_reacher_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path of a visfore dataset: ReacherPlane-v0, 12 episodes x 12 actions, 32x32, smooth.

    Rows: 12 * 13 = 156; pixels (156, 32, 32, 3) uint8. Built once per session in about
    a second; treat it as read-only.
    """
    from visfore.data.collect import collect

    path = tmp_path_factory.mktemp("datasets") / "small-reacher.zarr"
    collect(out=path, progress=False, **SMALL_REACHER)
    return path


#: Model kwargs of ``model_run_dir`` (a ConvLSTM of a few thousand parameters).
TINY_CONVLSTM = {"encoder_channels": [4, 8], "lstm_channels": [8], "decoder_channels": [8, 4], "num_kernels": 1}


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Run the test with one torch thread (xdist runs two workers on two cores)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def model_run_dir(small_reacher_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A `visfore train-model` run directory: ``TINY_CONVLSTM`` trained one epoch on
    ``small_reacher_dataset`` (context 2, horizon 2, 32x32). Read-only: copy it to change it."""
    from typer.testing import CliRunner

    from visfore.cli.app import app

    out = tmp_path_factory.mktemp("model-runs") / "tiny"
    result = CliRunner().invoke(app, [
        "train-model", "--data", str(small_reacher_dataset), "--out", str(out),
        "--model-kwargs", json.dumps(TINY_CONVLSTM), "--context", "2", "--horizon", "2", "--epochs", "1",
        "--batch-size", "4", "--clips-per-epoch", "8", "--max-val-clips", "4", "--epoch-val-clips", "4",
        "--val-fraction", "0.25", "--device", "cpu", "--num-threads", "1",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    return out
