"""Damaged datasets: ``visfore dataset verify``, per-episode checksums, and readers,
``train-model``, ``dataset info`` and ``collect`` refusing damage in one line.

Every damaged dataset is made here from a healthy one (``visfore collect``: 4 episodes of
5 actions, 16x16 frames, so pixel chunk ``i`` holds rows ``6i .. 6i+5``, episode ``i``) by
deleting, truncating or rewriting a chunk, or breaking a ``zarr.json``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from pathlib import Path

import numpy as np
import pytest
import zarr
from visfore_cli_testutils import invoke, one_error_line

from visfore.data.dataset import (
    CHECKSUMS_KEY,
    DATA_KEYS,
    DatasetDamaged,
    DatasetWriter,
    episode_digests,
    open_dataset,
)
from visfore.data.verify import verify_dataset

#: 4 episodes x 6 rows: 4 pixel chunks, one chunk of each other array.
OPTIONS = ["--episodes", "4", "--steps", "5", "--size", "16", "--seed", "0", "--quiet"]
HEALTHY = "ok: 4 episodes, 8 arrays, 11 chunks, checksums match"
TINY = {"encoder_channels": [4, 8], "lstm_channels": [8], "decoder_channels": [8, 4], "num_kernels": 1}


@pytest.fixture(scope="module")
def healthy(tmp_path_factory) -> Path:
    """A healthy dataset made by ``visfore collect`` (read-only: copy it to damage it)."""
    path = tmp_path_factory.mktemp("verify") / "healthy.zarr"
    result = invoke("collect", "--out", path, *OPTIONS)
    assert result.exit_code == 0, result.output
    return path


@pytest.fixture
def copy(healthy, tmp_path) -> Path:
    """A fresh copy of ``healthy`` to damage."""
    out = tmp_path / "d.zarr"
    shutil.copytree(healthy, out)
    return out


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def files(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def train_args(data: Path, out: Path) -> list:
    return [
        "train-model", "--data", data, "--out", out, "--model-kwargs", json.dumps(TINY),
        "--context", "2", "--horizon", "2", "--epochs", "1", "--batch-size", "2",
        "--val-fraction", "0.25", "--device", "cpu", "--num-threads", "1",
    ]  # fmt: skip


# -- (f) healthy -----------------------------------------------------------------------
def test_healthy_dataset_verifies_ok_and_checksums_are_the_sha256_of_each_array(healthy):
    result = invoke("dataset", "verify", healthy, "--quiet")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == HEALTHY

    report = json.loads(invoke("dataset", "verify", healthy, "--json").stdout)
    assert report["ok"] is True and report["problems"] == [] and report["checksums_matched"] == 4

    ds = open_dataset(healthy)
    sums = ds.group[CHECKSUMS_KEY]
    assert sums.shape == (4, len(DATA_KEYS), 32) and sums.attrs["algorithm"] == "sha256"
    rows = ds.episode_rows(2)
    pixels = ds.read("pixels")[rows]
    assert bytes(sums[2, DATA_KEYS.index("pixels")]) == hashlib.sha256(pixels.tobytes()).digest()
    values = {key: ds.read(key)[rows] for key in DATA_KEYS}
    np.testing.assert_array_equal(sums[2], episode_digests(values))


# -- (a) a deleted chunk ---------------------------------------------------------------
def test_deleted_pixel_chunk_is_named_by_verify_refused_by_train_model_and_flagged_by_info(copy, tmp_path):
    (copy / "data/pixels/c.1.0.0.0").unlink()

    result = invoke("dataset", "verify", copy, "--quiet")
    assert result.exit_code == 1, result.output
    lines = result.stdout.strip().splitlines()
    assert lines == [
        "chunk 1 of data/pixels (rows 6-11, episode 1) is missing",
        "damaged: 1 problem (1 missing chunk) in 4 episodes, 8 arrays, 11 chunks, checksums match for 3 of 4 "
        "episodes (1 not checked: damaged chunks); damaged episodes: 1",
    ]

    run = tmp_path / "run"
    line = one_error_line(invoke(*train_args(copy, run)))
    assert line == (
        f"error: {copy} is damaged: chunk 1 of data/pixels (rows 6-11, episode 1) is missing; "
        f"run `visfore dataset verify {copy}` for a full report"
    )
    assert not run.exists()  # refused before anything was written

    info = invoke("dataset", "info", copy, "--json")
    assert info.exit_code == 0, info.output
    data = json.loads(info.stdout)
    assert data["damaged"] is True
    assert data["integrity"]["problems"] == ["chunk 1 of data/pixels (rows 6-11, episode 1) is missing"]
    table = invoke("dataset", "info", copy)
    assert "DAMAGED: chunk 1 of data/pixels (rows 6-11, episode 1) is missing" in table.stdout
    assert "visfore dataset verify" in table.stdout


def test_deleted_episode_ends_chunk_is_refused_and_a_writer_cuts_nothing(copy):
    (copy / "meta/episode_ends/c/0").unlink()
    before = files(copy)
    with pytest.raises(DatasetDamaged, match=r"chunk 0 of meta/episode_ends \(entries 0-3, episodes 0-3\) is missing"):
        open_dataset(copy)
    with pytest.raises(DatasetDamaged, match="meta/episode_ends"):
        DatasetWriter.open(copy)  # it would have cut every row as uncommitted
    assert files(copy) == before
    result = invoke("dataset", "verify", copy, "--quiet")
    assert result.exit_code == 1
    assert result.stdout.splitlines()[0] == "chunk 0 of meta/episode_ends (entries 0-3, episodes 0-3) is missing"


# -- (b) a truncated chunk -------------------------------------------------------------
def test_truncated_chunk_is_named_by_verify_and_reading_it_is_one_line(healthy, copy, tmp_path):
    truncate(copy / "data/pixels/c.1.0.0.0")

    result = invoke("dataset", "verify", copy, "--quiet")
    assert result.exit_code == 1, result.output
    first, summary = result.stdout.strip().splitlines()
    assert first.startswith("chunk 1 of data/pixels (rows 6-11, episode 1) cannot be decoded (RuntimeError: Zstd")
    assert summary.startswith("damaged: 1 problem (1 undecodable chunk) in 4 episodes")

    ds = open_dataset(copy)  # stored: the cheap check passes
    np.testing.assert_array_equal(ds.episode(0).pixels, open_dataset(healthy).episode(0).pixels)
    assert ds.array("pixels")[12:18].shape == (6, 16, 16, 3)  # other chunks read as usual
    message = f"{copy} is damaged: chunk 1 of data/pixels (rows 6-11, episode 1) cannot be decoded (RuntimeError: Zstd"
    for read in (lambda: ds.read("pixels"), lambda: ds.episode(1), lambda: ds.array("pixels")[8]):
        with pytest.raises(DatasetDamaged) as caught:
            read()
        assert str(caught.value).startswith(message) and "\n" not in str(caught.value)
        assert str(caught.value).endswith(f"run `visfore dataset verify {copy}` for a full report")

    run = tmp_path / "run"
    line = one_error_line(invoke(*train_args(copy, run)))
    assert line.startswith(f"error: {message}")


def test_truncated_small_array_chunk_names_every_episode_it_holds(copy):
    truncate(copy / "data/state/c.0.0")
    report = verify_dataset(copy)
    assert [p.describe().split(" cannot")[0] for p in report.problems] == [
        "chunk 0 of data/state (rows 0-23, episodes 0-3)"
    ]
    assert report.damaged_episodes() == [0, 1, 2, 3] and report.checksums_matched == 0


# -- (c) a chunk rewritten with other valid data ---------------------------------------
def test_rewritten_chunk_is_a_checksum_mismatch_naming_array_chunk_and_episode(copy):
    group = zarr.open_group(str(copy), mode="r+")
    pixels, state = group["data/pixels"], group["data/state"]
    pixels[12:18] = 255 - pixels[12:18]  # episode 2: decodes fine, other frames
    state[3] = state[3] + 1.0  # episode 0, row 3
    assert open_dataset(copy).read("pixels").shape == (24, 16, 16, 3)  # readers cannot tell

    result = invoke("dataset", "verify", copy, "--quiet")
    assert result.exit_code == 1, result.output
    assert result.stdout.strip().splitlines() == [
        "episode 0 of data/state (rows 0-5, chunk 0) differs from its checksum recorded at collection",
        "episode 2 of data/pixels (rows 12-17, chunk 2) differs from its checksum recorded at collection",
        "damaged: 2 problems (2 checksum mismatches) in 4 episodes, 8 arrays, 11 chunks, checksums match for "
        "2 of 4 episodes (2 differ); damaged episodes: 0, 2",
    ]


# -- (d) a malformed zarr.json ---------------------------------------------------------
@pytest.mark.parametrize("node", ["data/pixels/zarr.json", "zarr.json"])
def test_malformed_zarr_json_is_one_line_naming_the_file(copy, tmp_path, node):
    meta = copy / node
    meta.write_text(meta.read_text().replace(",", "", 1))
    expected = f"error: {copy}/{node} is not valid JSON (Expecting ',' delimiter"

    assert one_error_line(invoke("dataset", "info", copy)).startswith(expected)
    assert one_error_line(invoke(*train_args(copy, tmp_path / "run"))).startswith(expected)
    assert one_error_line(invoke("collect", "--out", copy, *OPTIONS)).startswith(expected)
    result = invoke("dataset", "verify", copy, "--quiet")
    assert result.exit_code == 1
    assert result.stdout.splitlines()[0].startswith(f"{node} is not valid JSON (Expecting ',' delimiter")
    assert result.stdout.splitlines()[1] == (
        "damaged: 1 problem (1 malformed zarr.json); the dataset cannot be opened, nothing else was checked"
    )


# -- (e) collect onto a damaged dataset ------------------------------------------------
@pytest.mark.parametrize(
    "damage, named",
    [
        ("truncate data/pixels/c.3.0.0.0", "chunk 3 of data/pixels (rows 18-23, episode 3) cannot be decoded"),
        ("truncate data/action/c.0.0", "chunk 0 of data/action (rows 0-23, episodes 0-3) cannot be decoded"),
        ("rewrite data/pixels 18", "episode 3 of data/pixels (rows 18-23, chunk 3) differs from its checksum"),
        ("delete data/pixels/c.1.0.0.0", "chunk 1 of data/pixels (rows 6-11, episode 1) is missing"),
    ],
)
def test_collect_refuses_to_resume_a_damaged_dataset_and_changes_nothing(copy, damage, named):
    verb, what = damage.split(" ", 1)
    if verb == "truncate":
        truncate(copy / what)
    elif verb == "delete":
        (copy / what).unlink()
    else:
        array = zarr.open_group(str(copy), mode="r+")[what.split()[0]]
        array[18] = 255 - array[18]
    before = files(copy)
    line = one_error_line(invoke("collect", "--out", copy, *OPTIONS[:1], "6", *OPTIONS[2:]))
    assert line.startswith(f"error: {copy} is damaged") and named in line
    assert line.endswith(f"run `visfore dataset verify {copy}` for a full report")
    assert files(copy) == before


def test_resumed_collection_keeps_checksums_consistent(healthy, tmp_path):
    out = tmp_path / "r.zarr"
    assert invoke("collect", "--out", out, *OPTIONS[:1], "2", *OPTIONS[2:]).exit_code == 0
    result = invoke("collect", "--out", out, *OPTIONS)
    assert result.exit_code == 0 and "resumed after 2" in result.stdout
    assert invoke("dataset", "verify", out, "--quiet").stdout.strip() == HEALTHY
    a, b = open_dataset(out).group[CHECKSUMS_KEY], open_dataset(healthy).group[CHECKSUMS_KEY]
    np.testing.assert_array_equal(a[:], b[:])


def test_dataset_without_checksums_opens_verifies_and_gets_them_for_new_episodes(copy):
    shutil.rmtree(copy / CHECKSUMS_KEY)  # as collected before checksums
    result = invoke("dataset", "verify", copy, "--quiet")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == (
        "ok: 4 episodes, 7 arrays, 10 chunks, no checksums (collected before visfore recorded them): chunks checked only"
    )
    assert json.loads(invoke("dataset", "info", copy, "--json").stdout)["checksums"] is None

    assert invoke("collect", "--out", copy, *OPTIONS[:1], "6", *OPTIONS[2:]).exit_code == 0
    assert invoke("dataset", "verify", copy, "--quiet").stdout.strip() == (
        "ok: 6 episodes, 8 arrays, 13 chunks, checksums match for 2 of 6 episodes (4 have none recorded)"
    )


# -- (g) object storage ----------------------------------------------------------------
def test_verify_and_readers_on_object_storage(tmp_path):
    import fsspec

    url = f"memory://verify-{uuid.uuid4().hex[:8]}/d.zarr"
    assert invoke("collect", "--out", url, *OPTIONS).exit_code == 0
    assert invoke("dataset", "verify", url, "--quiet").stdout.strip() == HEALTHY

    fs = fsspec.filesystem("memory")
    root = url.split("://", 1)[1]
    fs.rm(f"{root}/data/pixels/c.2.0.0.0")
    chunk = f"{root}/data/reward/c.0"
    data = fs.cat_file(chunk)
    fs.pipe_file(chunk, data[: len(data) // 2])

    result = invoke("dataset", "verify", url, "--quiet")
    assert result.exit_code == 1, result.output
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "chunk 2 of data/pixels (rows 12-17, episode 2) is missing"
    assert lines[1].startswith("chunk 0 of data/reward (rows 0-23, episodes 0-3) cannot be decoded (RuntimeError")
    assert lines[2].startswith("damaged: 2 problems (1 missing chunk, 1 undecodable chunk)")
    line = one_error_line(invoke(*train_args(url, tmp_path / "run")))
    assert line.startswith(f"error: {url} is damaged: chunk 2 of data/pixels (rows 12-17, episode 2) is missing")
    fs.rm(root, recursive=True)
