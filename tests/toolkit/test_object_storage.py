"""Datasets on object storage: ``s3://`` URLs against a real S3 server on loopback.

The module starts moto's S3-compatible HTTP server (``moto.server.ThreadedMotoServer``) on
127.0.0.1 with a free port; visfore talks to it through s3fs / aiobotocore exactly as to
AWS or MinIO (``AWS_ENDPOINT_URL`` and fake credentials in the environment, set for this
module only). Nothing mocks the client. Skipped only when moto's server, boto3 or s3fs is
not installed (they are in the ``dev`` extra).
"""

from __future__ import annotations

import importlib.util
import json
import socket
import uuid
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

_MISSING = [m for m in ("moto.server", "boto3", "s3fs", "flask") if importlib.util.find_spec(m.split(".")[0]) is None]
pytestmark = pytest.mark.skipif(
    bool(_MISSING),
    reason=f"object-storage tests need moto[server], boto3 and s3fs (pip install -e '.[dev]'); missing: {_MISSING}",
)

from visfore.core.errors import VisforeError  # noqa: E402
from visfore.data import storage  # noqa: E402
from visfore.data.collect import EpisodeRunner, collect  # noqa: E402
from visfore.data.dataset import DATA_KEYS, open_dataset  # noqa: E402

runner = CliRunner()

#: The collection of the issue's example: 3 episodes of 5 actions, 16x16 frames.
OPTIONS = dict(env="reacher", episodes=3, steps=5, size=16, seed=0, policy="smooth", workers=1)
TINY = {"encoder_channels": [4, 8], "lstm_channels": [8], "decoder_channels": [8, 4], "num_kernels": 1}


def _args(out: str, **overrides) -> list[str]:
    opts = {**OPTIONS, **overrides}
    args = ["collect", "--out", out, "--quiet"]
    for key in ("env", "episodes", "steps", "size", "seed", "policy", "workers"):
        args += [f"--{key}", str(opts[key])]
    return args


def _app():
    from visfore.cli.app import app

    return app


# -- the server -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def s3_endpoint():
    """``http://127.0.0.1:PORT`` of a moto S3 server, with this module's AWS environment."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    with pytest.MonkeyPatch.context() as mp:
        for name in (
            "AWS_PROFILE",
            "AWS_SESSION_TOKEN",
            "AWS_ENDPOINT_URL_S3",
            "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
            "AWS_MAX_ATTEMPTS",
        ):
            mp.delenv(name, raising=False)
        mp.setenv("AWS_ACCESS_KEY_ID", "visfore-test")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "visfore-test-secret")
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        mp.setenv("AWS_ENDPOINT_URL", endpoint)
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/visfore-test-credentials")
        mp.setenv("AWS_CONFIG_FILE", "/nonexistent/visfore-test-config")
        mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
        try:
            yield endpoint
        finally:
            server.stop()


@pytest.fixture
def s3(s3_endpoint):
    """A boto3 client of the server (for checking what really is in the bucket)."""
    import boto3

    return boto3.client("s3", endpoint_url=s3_endpoint)


@pytest.fixture
def bucket(s3) -> str:
    """A fresh, empty bucket."""
    name = f"visfore-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


def _objects(s3, bucket: str, prefix: str) -> dict[str, int]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return {o["Key"]: o["Size"] for page in pages for o in page.get("Contents", [])}


def assert_same_dataset(a, b) -> None:
    """Every array of the two datasets equal bit for bit (NaN padding included)."""
    da, db = open_dataset(a), open_dataset(b)
    np.testing.assert_array_equal(da.episode_ends, db.episode_ends)
    for key in DATA_KEYS:
        x, y = da.read(key), db.read(key)
        assert x.dtype == y.dtype and x.shape == y.shape, key
        assert x.tobytes() == y.tobytes(), key
    skip = {"created", "command", "collect_runs"}
    assert {k: v for k, v in da.attrs.items() if k not in skip} == {k: v for k, v in db.attrs.items() if k not in skip}


@pytest.fixture(scope="module")
def local_reference(tmp_path_factory):
    """Local one-shot collections of OPTIONS: 3 and 4 episodes."""
    root = tmp_path_factory.mktemp("local")
    collect(out=root / "three.zarr", progress=False, **OPTIONS)
    collect(out=root / "four.zarr", progress=False, **{**OPTIONS, "episodes": 4})
    return {3: root / "three.zarr", 4: root / "four.zarr"}


# -- collect, dataset info ---------------------------------------------------------------
def test_cli_collect_to_s3_equals_local_and_dataset_info_reads_it(s3, bucket, local_reference, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a URL mangled into a local path would land here
    url = f"s3://{bucket}/runs/x.zarr"
    result = runner.invoke(_app(), _args(url))
    assert result.exit_code == 0, result.output
    assert f"-> {url} (3 episodes)" in result.stdout
    assert list(tmp_path.iterdir()) == []  # nothing written locally

    objects = _objects(s3, bucket, "runs/x.zarr/")
    assert "runs/x.zarr/zarr.json" in objects and "runs/x.zarr/meta/episode_ends/zarr.json" in objects
    assert any(k.startswith("runs/x.zarr/data/pixels/c.") for k in objects)

    ds = open_dataset(url)
    assert ds.path == url and ds.num_episodes == 3 and ds.frame_shape == (16, 16, 3)
    assert ds.attrs["command"].split("--out ")[1].startswith(url)
    assert_same_dataset(url, local_reference[3])
    assert ds.size_on_disk() == sum(objects.values())

    info = runner.invoke(_app(), ["dataset", "info", url, "--json"])
    assert info.exit_code == 0, info.output
    data = json.loads(info.stdout)
    assert data["path"] == url and data["episodes"] == 3 and data["rows"] == 18
    assert data["arrays"]["pixels"]["shape"] == [18, 16, 16, 3]
    assert data["size_on_disk"] == sum(objects.values())
    table = runner.invoke(_app(), ["dataset", "info", url])
    assert table.exit_code == 0, table.output
    assert bucket in table.stdout and "size on disk" in table.stdout


def test_resume_on_s3_continues_to_exactly_four_episodes(s3, bucket, local_reference, monkeypatch):
    url = f"s3://{bucket}/resume.zarr"
    first = runner.invoke(_app(), _args(url, episodes=2))
    assert first.exit_code == 0, first.output
    assert open_dataset(url).num_episodes == 2

    # A killed writer: rows of an episode stored past episode_ends, never committed.
    import zarr

    group = zarr.open_group(storage.zarr_store(url, read_only=False), mode="r+")
    for key in DATA_KEYS:
        array = group[f"data/{key}"]
        rows = array.shape[0]
        array.resize((rows + 4, *array.shape[1:]))
        array[rows:] = np.ones((4, *array.shape[1:]), dtype=array.dtype)
    seen = open_dataset(url)  # a reader never sees the half-written episode
    assert seen.num_episodes == 2 and seen.read("pixels").shape[0] == 12

    # Ctrl-C during the third episode: the finished ones stay on S3.
    run = EpisodeRunner.run

    def interrupt_at_3(self, index):
        if index == 3:
            raise KeyboardInterrupt
        return run(self, index)

    monkeypatch.setattr(EpisodeRunner, "run", interrupt_at_3)
    interrupted = runner.invoke(_app(), _args(url, episodes=4))
    assert interrupted.exit_code == 130
    assert open_dataset(url).num_episodes == 3
    monkeypatch.undo()

    again = runner.invoke(_app(), _args(url, episodes=4))
    assert again.exit_code == 0, again.output
    assert "resumed after 3" in again.stdout
    assert_same_dataset(url, local_reference[4])
    assert [r["episodes_before"] for r in open_dataset(url).attrs["collect_runs"]] == [0, 2, 3]
    done = runner.invoke(_app(), _args(url, episodes=4))
    assert done.exit_code == 0 and "already holds 4 episodes" in done.stdout


def test_verify_on_s3_names_a_deleted_and_a_truncated_chunk_and_collect_refuses(s3, bucket):
    url = f"s3://{bucket}/damaged.zarr"
    assert runner.invoke(_app(), _args(url)).exit_code == 0
    healthy = runner.invoke(_app(), ["dataset", "verify", url, "--quiet"])
    assert healthy.exit_code == 0 and healthy.stdout.strip() == "ok: 3 episodes, 8 arrays, 10 chunks, checksums match"

    s3.delete_object(Bucket=bucket, Key="damaged.zarr/data/pixels/c.1.0.0.0")
    key = "damaged.zarr/data/pixels/c.2.0.0.0"
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    s3.put_object(Bucket=bucket, Key=key, Body=body[: len(body) // 2])
    result = runner.invoke(_app(), ["dataset", "verify", url, "--quiet"])
    assert result.exit_code == 1, result.output
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "chunk 1 of data/pixels (rows 6-11, episode 1) is missing"
    assert lines[1].startswith("chunk 2 of data/pixels (rows 12-17, episode 2) cannot be decoded (RuntimeError")
    assert lines[2].startswith("damaged: 2 problems (1 missing chunk, 1 undecodable chunk) in 3 episodes")

    before = _objects(s3, bucket, "damaged.zarr/")
    again = runner.invoke(_app(), _args(url, episodes=4))
    assert again.exit_code == 2
    assert f"{url} is damaged: chunk 1 of data/pixels (rows 6-11, episode 1) is missing" in again.output
    assert _objects(s3, bucket, "damaged.zarr/") == before


# -- train-model ---------------------------------------------------------------------------
def _train_args(data: str, out: Path) -> list[str]:
    return [
        "train-model", "--data", data, "--out", str(out), "--model", "convlstm",
        "--model-kwargs", json.dumps(TINY), "--context", "2", "--horizon", "3", "--epochs", "1",
        "--batch-size", "4", "--clips-per-epoch", "4", "--max-val-clips", "4",
        "--epoch-val-clips", "2", "--image-clips", "1", "--val-fraction", "0.34",
        "--device", "cpu", "--num-threads", "1",
    ]  # fmt: skip


def test_train_model_from_s3_matches_training_on_the_local_copy(s3, bucket, local_reference, tmp_path):
    import yaml

    url = f"s3://{bucket}/train.zarr"
    collect(out=url, progress=False, **OPTIONS)
    result = runner.invoke(_app(), _train_args(url, tmp_path / "s3-run"))
    assert result.exit_code == 0, result.output
    config = yaml.safe_load((tmp_path / "s3-run" / "config.yaml").read_text())
    assert config["options"]["data"] == url and config["dataset"]["path"] == url
    assert config["dataset"]["num_episodes"] == 3
    assert (tmp_path / "s3-run" / "checkpoints" / "best.pt").is_file()

    local = runner.invoke(_app(), _train_args(str(local_reference[3]), tmp_path / "local-run"))
    assert local.exit_code == 0, local.output
    s3_metrics = json.loads((tmp_path / "s3-run" / "metrics.json").read_text())
    local_metrics = json.loads((tmp_path / "local-run" / "metrics.json").read_text())
    assert s3_metrics["model"] == local_metrics["model"]  # same data, same run

    # --resume reads the URL back from config.yaml; the same --data is accepted.
    resumed = runner.invoke(
        _app(),
        [
            "train-model",
            "--out",
            str(tmp_path / "s3-run"),
            "--resume",
            "--data",
            url,
            "--device",
            "cpu",
            "--num-threads",
            "1",
        ],
    )
    assert resumed.exit_code == 0, resumed.output

    from visfore.worldmodels.model_run import load_model_run

    mr = load_model_run(tmp_path / "s3-run")
    assert mr.data_path == url and mr.open_dataset().num_episodes == 3


def test_train_eval_all_sweeps_a_dataset_on_s3(s3, bucket, tmp_path):
    import yaml

    url = f"s3://{bucket}/sweep.zarr"
    collect(out=url, progress=False, **OPTIONS)
    spec = {"name": "s3", "data": url, "context": 2, "horizon": 3, "epochs": 1, "batch_size": 4,
            "clips_per_epoch": 4, "max_val_clips": 4, "epoch_val_clips": 2, "image_clips": 1,
            "val_fraction": 0.34, "device": "cpu", "num_threads": 1,
            "models": [{"convlstm": TINY}], "seeds": [0]}  # fmt: skip
    config = tmp_path / "s3.yaml"
    config.write_text(yaml.safe_dump(spec, sort_keys=False))
    result = runner.invoke(
        _app(), ["train-eval-all", "--config", str(config), "--out-dir", str(tmp_path / "runs"), "--quiet"]
    )
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "train-eval-all-s3" / "convlstm-seed0"
    assert yaml.safe_load((run / "config.yaml").read_text())["options"]["data"] == url
    assert (run / "metrics.json").is_file()


# -- other locations and errors ------------------------------------------------------------
def test_file_url_is_a_local_path(local_reference, tmp_path):
    path = tmp_path / "nested" / "f.zarr"
    summary = collect(out=f"file://{path}", progress=False, **OPTIONS)
    assert summary["path"] == str(path) and path.is_dir()
    ds = open_dataset(f"file://{path}")
    assert ds.path == path and isinstance(ds.path, Path)
    assert ds.size_on_disk() == sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    assert_same_dataset(path, local_reference[3])
    info = runner.invoke(_app(), ["dataset", "info", f"file://{path}", "--json"])
    assert info.exit_code == 0 and json.loads(info.stdout)["path"] == str(path)


@pytest.mark.skipif(importlib.util.find_spec("gcsfs") is not None, reason="gcsfs is installed")
def test_gs_without_gcsfs_names_the_package(tmp_path):
    for args in (
        ["dataset", "info", "gs://bucket/x.zarr"],
        _args("gs://bucket/x.zarr"),
        ["train-model", "--data", "gs://bucket/x.zarr", "--out", str(tmp_path / "run")],
    ):
        result = runner.invoke(_app(), args)
        assert result.exit_code == 2, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and "gcsfs" in lines[0] and "pip install" in lines[0], lines
    assert not (tmp_path / "run").exists()
    with pytest.raises(VisforeError, match="unknown storage protocol 'nosuchfs'"):
        open_dataset("nosuchfs://bucket/x.zarr")


def test_missing_bucket_and_missing_dataset_are_one_line_errors(s3_endpoint, bucket, tmp_path):
    missing = "s3://visfore-no-such-bucket/x.zarr"
    for args in (
        ["dataset", "info", missing],
        _args(missing),
        ["train-model", "--data", missing, "--out", str(tmp_path / "run")],
    ):
        result = runner.invoke(_app(), args)
        assert result.exit_code == 2, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and "bucket 'visfore-no-such-bucket'" in lines[0], lines
        assert "does not exist" in lines[0]
    assert not (tmp_path / "run").exists()
    with pytest.raises(VisforeError, match=f"dataset not found: s3://{bucket}/none.zarr"):
        open_dataset(f"s3://{bucket}/none.zarr")


def test_unreachable_endpoint_and_missing_credentials(s3_endpoint, bucket, monkeypatch):
    with socket.socket() as sock:  # a loopback port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    result = runner.invoke(_app(), ["dataset", "info", f"s3://{bucket}/x.zarr"])
    assert result.exit_code == 2, result.output
    line = result.output.strip()
    assert "\n" not in line and f"cannot reach the storage of s3://{bucket}/x.zarr" in line, line
    assert f"127.0.0.1:{closed}" in line

    # The same server under another name: fsspec caches filesystems by their options
    # (the endpoint among them), so this one is new and looks for credentials now.
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint.replace("127.0.0.1", "localhost"))
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(VisforeError, match="no credentials for .*AWS_ACCESS_KEY_ID"):
        open_dataset(f"s3://{bucket}/x.zarr")


# -- location parsing ------------------------------------------------------------------------
def test_locations():
    assert storage.normalize("s3://b/x.zarr/") == "s3://b/x.zarr"
    assert storage.normalize("file:///tmp/x.zarr") == Path("/tmp/x.zarr")
    assert storage.normalize("file://rel/x.zarr") == Path("rel/x.zarr")
    assert storage.normalize(Path("data/x.zarr")) == Path("data/x.zarr")
    assert storage.is_url("s3://b/x") and storage.is_url("memory://x") and storage.is_url("gs://b/x")
    assert not storage.is_url("file:///x") and not storage.is_url("data/x.zarr")
    assert not storage.is_url(Path("s3:/b/x"))
    assert storage.display_name("s3://key:secret@b/x.zarr") == "s3://b/x.zarr"
    assert storage.bucket_of("s3://b/x.zarr") == "b" and storage.bucket_of("memory://x") is None
    assert storage.resolve("rel.zarr") == str(Path("rel.zarr").resolve())
    assert storage.same_location("s3://b/x.zarr/", "s3://b/x.zarr")
    for bad in ("", "s3://", "s3:///"):
        with pytest.raises(VisforeError):
            storage.normalize(bad)


def test_endpoint_from_the_environment(monkeypatch):
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS"):
        monkeypatch.delenv(name, raising=False)
    assert storage.storage_options("s3://b/x") == {}
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://general:9000")
    assert storage.storage_options("s3://b/x") == {"endpoint_url": "http://general:9000"}
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://s3-only:9000")  # botocore's precedence
    assert storage.storage_options("s3://b/x") == {"endpoint_url": "http://s3-only:9000"}
    assert storage.storage_options("gs://b/x") == {}
    monkeypatch.setenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true")
    assert storage.storage_options("s3://b/x") == {}
