"""The dataset format (visfore.data.dataset) and ``visfore dataset info``."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from visfore.core.errors import VisforeError
from visfore.data.dataset import DATA_KEYS, DatasetWriter, open_dataset
from visfore.data.dataset_info import dataset_info, episode_returns

runner = CliRunner()
H = W = 8
S, A = 4, 2


@pytest.fixture(scope="module")
def app():
    from visfore.cli.app import app

    return app


def fake_episode(steps: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "pixels": rng.integers(0, 256, (steps + 1, H, W, 3), dtype=np.uint8),
        "state": rng.standard_normal((steps + 1, S)).astype(np.float32),
        "action": rng.uniform(-1, 1, (steps, A)).astype(np.float32),
        "reward": rng.standard_normal(steps).astype(np.float32),
        "terminated": np.zeros(steps, dtype=bool),
        "truncated": np.eye(1, steps, steps - 1, dtype=bool)[0],
    }


def create(path, chunk_frames=6):
    return DatasetWriter.create(
        path, frame_shape=(H, W, 3), state_dim=S, action_dim=A,
        attrs={"env_id": "Fake-v0", "seed": 1}, chunk_frames=chunk_frames,
    )  # fmt: skip


def test_writer_roundtrip_shapes_dtypes_and_padding(tmp_path):
    path = tmp_path / "d.zarr"
    episodes = [fake_episode(5, 0), fake_episode(3, 1), fake_episode(5, 2)]
    with create(path) as writer:
        for i, ep in enumerate(episodes):
            assert writer.append_episode(**ep) == i
    ds = open_dataset(path)
    assert ds.num_episodes == 3 and ds.num_rows == 16
    np.testing.assert_array_equal(ds.episode_ends, [6, 10, 16])
    np.testing.assert_array_equal(ds.episode_lengths, [6, 4, 6])
    assert ds.frame_shape == (H, W, 3) and ds.state_dim == S and ds.action_dim == A
    dtypes = {
        "pixels": np.uint8,
        "state": np.float32,
        "action": np.float32,
        "reward": np.float32,
        "terminated": np.bool_,
        "truncated": np.bool_,
    }
    for key in DATA_KEYS:
        assert ds.read(key).dtype == dtypes[key] and ds.read(key).shape[0] == 16
    for i, ep in enumerate(episodes):
        got = ds.episode(i)
        for key in DATA_KEYS:
            np.testing.assert_array_equal(getattr(got, key), ep[key])
    last = ds.episode_ends - 1
    assert np.isnan(ds.read("action")[last]).all() and np.isnan(ds.read("reward")[last]).all()
    assert ds.attrs["format"] == "visfore-dataset" and ds.attrs["env_id"] == "Fake-v0"
    assert ds.array("pixels").chunks == (6, H, W, 3)
    with pytest.raises(VisforeError, match="out of range"):
        ds.episode(3)


def test_writer_append_checks_shapes(tmp_path):
    with create(tmp_path / "d.zarr") as writer:
        bad = fake_episode(4, 0)
        bad["state"] = bad["state"][:, :3]
        with pytest.raises(ValueError, match="state"):
            writer.append_episode(**bad)


def test_open_cuts_uncommitted_rows_and_appends(tmp_path):
    path = tmp_path / "d.zarr"
    with create(path) as writer:
        writer.append_episode(**fake_episode(5, 0))
    import zarr

    group = zarr.open_group(str(path), mode="r+")
    for key in DATA_KEYS:  # rows of an episode whose commit never happened
        array = group[f"data/{key}"]
        array.resize((array.shape[0] + 4, *array.shape[1:]))
    with DatasetWriter.open(path) as writer:
        assert writer.num_episodes == 1
        writer.append_episode(**fake_episode(2, 1))
    ds = open_dataset(path)
    np.testing.assert_array_equal(ds.episode_ends, [6, 9])
    for key in DATA_KEYS:
        assert ds.array(key).shape[0] == 9
    np.testing.assert_array_equal(ds.episode(1).pixels, fake_episode(2, 1)["pixels"])


def test_interrupt_inside_writer_keeps_buffered_episodes(tmp_path):
    path = tmp_path / "d.zarr"
    with pytest.raises(KeyboardInterrupt):
        with create(path) as writer:
            writer.append_episode(**fake_episode(3, 0))
            writer.append_episode(**fake_episode(3, 1))
            raise KeyboardInterrupt
    assert open_dataset(path).num_episodes == 2


def test_create_refuses_existing_path_and_open_refuses_non_datasets(tmp_path):
    (tmp_path / "exists").mkdir()
    with pytest.raises(VisforeError, match="exists"):
        create(tmp_path / "exists")
    with pytest.raises(VisforeError, match="not found"):
        open_dataset(tmp_path / "missing.zarr")
    with pytest.raises(VisforeError, match="not a Zarr group"):
        open_dataset(tmp_path / "exists")


def test_episode_returns_skip_padding():
    rewards = np.array([1, 2, np.nan, 3, np.nan, 0.5, 0.5, np.nan], dtype=np.float32)
    np.testing.assert_allclose(episode_returns(rewards, np.array([3, 5, 8])), [3, 3, 1])


# -- dataset info ----------------------------------------------------------------------
def test_dataset_info_function(small_reacher_dataset, small_reacher_options):
    info = dataset_info(small_reacher_dataset)
    e, t = small_reacher_options["episodes"], small_reacher_options["steps"]
    assert info["episodes"] == e and info["rows"] == e * (t + 1)
    assert info["steps_per_episode"] == {"min": t, "mean": t, "max": t}
    assert info["arrays"]["pixels"]["shape"] == [e * (t + 1), 32, 32, 3]
    assert info["arrays"]["pixels"]["dtype"] == "uint8"
    assert info["arrays"]["pixels"]["compressors"] == ["zstd"]
    assert info["compression_ratio"] > 1.5
    assert info["env_id"] == "ReacherPlane-v0" and info["seed"] == 0
    assert info["policy"]["name"] == "smooth"
    ds = open_dataset(small_reacher_dataset)
    rewards = ds.read("reward").astype(np.float64)
    manual = np.mean([np.nansum(rewards[r]) for r in map(ds.episode_rows, range(e))])
    assert math.isclose(info["mean_episode_return"], manual, rel_tol=1e-9)


def test_dataset_info_cli_table_and_json(app, small_reacher_dataset):
    result = runner.invoke(app, ["dataset", "info", str(small_reacher_dataset)])
    assert result.exit_code == 0, result.output
    assert "episodes" in result.stdout and "12" in result.stdout
    assert "compression ratio" in result.stdout and "ReacherPlane-v0" in result.stdout

    result = runner.invoke(app, ["dataset", "info", str(small_reacher_dataset), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["episodes"] == 12 and info["rows"] == 156
    assert math.isfinite(info["mean_episode_return"])
    assert set(info["versions"]) >= {"gymnasium", "mujoco", "zarr", "numpy"}


@pytest.mark.parametrize("kind", ["missing", "dir", "file"])
def test_dataset_info_bad_path_exits_2(app, tmp_path, kind):
    path = tmp_path / "thing"
    if kind == "dir":
        path.mkdir()
    elif kind == "file":
        path.write_text("x")
    result = runner.invoke(app, ["dataset", "info", str(path)])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0]


def test_half_written_commit_is_ignored_and_cut_on_reopen(tmp_path):
    """A commit interrupted after resizing episode_ends (fill value 0) loses no episode."""
    from visfore.data.dataset import DatasetWriter, open_dataset

    path = tmp_path / "d.zarr"
    rng = np.random.default_rng(0)
    with DatasetWriter.create(
        path, frame_shape=(8, 8, 3), state_dim=2, action_dim=1, attrs={}, chunk_frames=4
    ) as writer:
        for _ in range(3):
            writer.append_episode(
                pixels=rng.integers(0, 255, (4, 8, 8, 3), dtype=np.uint8),
                state=rng.random((4, 2)),
                action=rng.random((3, 1)),
                reward=rng.random(3),
                terminated=np.zeros(3, bool),
                truncated=np.array([False, False, True]),
            )
    # Simulate the crash: data rows for a 4th episode and a resized, unwritten end entry.
    writer.group["meta/episode_ends"].resize((4,))
    for key in ("pixels", "state", "action", "reward", "terminated", "truncated"):
        array = writer.group[f"data/{key}"]
        array.resize((16, *array.shape[1:]))

    assert open_dataset(path).num_episodes == 3
    reopened = DatasetWriter.open(path)
    assert reopened.num_episodes == 3
    assert reopened.group["meta/episode_ends"].shape == (3,)
    assert reopened.group["data/pixels"].shape[0] == 12
    np.testing.assert_array_equal(open_dataset(path).episode_ends, [4, 8, 12])


def test_flush_twice_with_same_buffer_commits_once(tmp_path):
    """flush() is idempotent for its buffer, so a retry after Ctrl-C cannot duplicate ends."""
    from visfore.data.dataset import DatasetWriter, open_dataset

    path = tmp_path / "d.zarr"
    writer = DatasetWriter.create(path, frame_shape=(8, 8, 3), state_dim=2, action_dim=1, attrs={}, chunk_frames=4)
    writer.flush_rows = 10**6
    writer.append_episode(
        pixels=np.zeros((3, 8, 8, 3), np.uint8),
        state=np.zeros((3, 2)),
        action=np.zeros((2, 1)),
        reward=np.zeros(2),
        terminated=np.zeros(2, bool),
        truncated=np.array([False, True]),
    )
    buffered = list(writer._buffer)
    writer.flush()
    # Replay the same buffer as if the first flush had been interrupted after committing.
    writer._buffer, writer._buffered_rows = buffered, 3
    writer._num_rows, writer._num_episodes = 0, 0
    writer.flush()
    np.testing.assert_array_equal(open_dataset(path).episode_ends, [3])
    assert open_dataset(path).group["meta/episode_checksums"].shape == (1, 6, 32)
