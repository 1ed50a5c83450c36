"""Run directories (visfore.core.runs): naming, existence checks, atomic writes and checkpoints."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from visfore.core import runs
from visfore.core.errors import VisforeError


def test_resolve_run_dir(tmp_path: Path):
    assert runs.resolve_run_dir("train-model", out=tmp_path / "x") == tmp_path / "x"
    assert runs.resolve_run_dir("train-model", name="exp1", root=tmp_path) == tmp_path / "train-model-exp1"
    default = runs.resolve_run_dir("train-model", root=tmp_path)
    assert default.parent == tmp_path
    assert re.fullmatch(r"train-model-\d{8}-\d{6}", default.name)
    with pytest.raises(VisforeError, match="either"):
        runs.resolve_run_dir("train-model", out=tmp_path, name="a")
    with pytest.raises(VisforeError, match="run name"):
        runs.resolve_run_dir("train-model", name="../escape")


def test_check_and_create_run_dir(tmp_path: Path):
    run = tmp_path / "runs" / "r1"
    runs.check_run_dir(run, resume=False)  # does not exist: fine
    with pytest.raises(VisforeError, match="does not exist"):
        runs.check_run_dir(run, resume=True)
    runs.create_run_dir(run)
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "logs"]  # no empty images/
    with pytest.raises(VisforeError, match="already exists; pass --resume"):
        runs.check_run_dir(run, resume=False)
    with pytest.raises(VisforeError, match="no checkpoint"):
        runs.check_run_dir(run, resume=True)
    with pytest.raises(VisforeError, match="already exists"):
        runs.create_run_dir(run)
    runs.write_config(run, {"a": 1})
    runs.save_checkpoint(runs.last_checkpoint_path(run), {"epoch": 1})
    runs.check_run_dir(run, resume=True)
    runs.ensure_run_subdirs(run)  # --resume recreates what is missing, and no images/ either
    assert not (run / "images").exists()


def test_config_roundtrip(tmp_path: Path):
    cfg = {"options": {"lr": 0.001, "epochs": 3, "data": "/x.zarr", "kw": {"a": [1, 2]}}, "n": None}
    runs.write_config(tmp_path, cfg)
    assert runs.read_config(tmp_path) == cfg
    (tmp_path / "config.yaml").write_text("- just a list\n")
    with pytest.raises(VisforeError, match="mapping"):
        runs.read_config(tmp_path)


def test_checkpoint_roundtrip_weights_only(tmp_path: Path):
    import random

    state = {
        "epoch": 3,
        "metrics": {"val_mse": 0.1},
        "weights": {"w": torch.arange(4.0)},
        "rng": {"torch": torch.get_rng_state(), "python": random.getstate()},
    }
    path = runs.save_checkpoint(tmp_path / "checkpoints" / "last.pt", state)
    loaded = runs.load_checkpoint(path)
    assert loaded["epoch"] == 3 and torch.equal(loaded["weights"]["w"], torch.arange(4.0))
    assert torch.equal(loaded["rng"]["torch"], state["rng"]["torch"])
    random.setstate(loaded["rng"]["python"])


def test_checkpoint_write_failure_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = tmp_path / "last.pt"
    runs.save_checkpoint(path, {"epoch": 1, "w": torch.ones(3)})
    before = path.read_bytes()

    def exploding_save(obj, f, *args, **kwargs):
        f.write(b"partial garbage")  # something reached the disk before the failure
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(torch, "save", exploding_save)
    with pytest.raises(OSError, match="simulated"):
        runs.save_checkpoint(path, {"epoch": 2, "w": torch.zeros(3)})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert runs.load_checkpoint(path)["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temp file left


def test_atomic_text_failure_keeps_the_old_file(tmp_path: Path):
    path = tmp_path / "metrics.json"
    runs.write_json(path, {"a": 1})

    def fail(f):
        f.write(b"{")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        runs.atomic_write(path, fail)
    assert path.read_text() == '{\n  "a": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_load_checkpoint_errors(tmp_path: Path):
    with pytest.raises(VisforeError, match="not found"):
        runs.load_checkpoint(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(VisforeError, match="cannot read checkpoint"):
        runs.load_checkpoint(bad)
