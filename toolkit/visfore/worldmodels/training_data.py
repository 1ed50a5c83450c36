"""The data of a ``train-model`` run: open and check the dataset, split it by episode,
index the training and validation clips (:mod:`visfore.data.clips`). No writes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from visfore.core.errors import VisforeError
from visfore.data.clips import ClipDataset, load_clip_source, split_episodes
from visfore.data.dataset import open_dataset
from visfore.worldmodels.config import TrainConfig

__all__ = [
    "TrainingData",
    "attrs_summary",
    "min_episode_frames",
    "open_and_check_dataset",
    "prepare_data",
    "split_usable_episodes",
]


@dataclass
class TrainingData:
    """The clips of a train-model run (frames in memory as uint8) and its episode split."""

    dataset: Any
    source: Any
    train: ClipDataset
    val: ClipDataset
    train_episodes: np.ndarray
    val_episodes: np.ndarray
    excluded_episodes: np.ndarray


def open_and_check_dataset(config: TrainConfig) -> Any:
    if config.data is None:
        raise VisforeError("--data is required (path of a visfore dataset)")
    ds = open_dataset(config.data)
    if ds.num_episodes == 0:
        raise VisforeError(f"{config.data} has no complete episode")
    lengths = ds.episode_lengths
    clip_len = config.context + config.horizon
    longest, shortest = int(lengths.max()), int(lengths.min())
    if clip_len > longest:
        span = (
            f"{longest} frames ({longest - 1} actions)"
            if longest == shortest
            else f"{shortest} to {longest} frames ({shortest - 1} to {longest - 1} actions)"
        )
        raise VisforeError(
            f"--context {config.context} + --horizon {config.horizon} = {clip_len} frames per clip, "
            f"but the episodes of {config.data} have {span}; use context + horizon <= {longest}"
        )
    return ds


def min_episode_frames(config: TrainConfig) -> int:
    """Frames an episode needs to give a clip: C + K, or C + 1 with padding."""
    return config.context + 1 if config.pad_short_episodes else config.context + config.horizon


def split_usable_episodes(config: TrainConfig, ds: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    lengths = ds.episode_lengths
    need = min_episode_frames(config)
    usable = np.flatnonzero(lengths >= need)
    excluded = np.flatnonzero(lengths < need)
    train_eps, val_eps = split_episodes(usable, config.val_fraction, config.seed)
    return train_eps, val_eps, excluded


def prepare_data(
    config: TrainConfig, ds: Any, train_eps: np.ndarray, val_eps: np.ndarray, excluded: np.ndarray
) -> TrainingData:
    source = load_clip_source(ds)
    train = ClipDataset(
        source,
        train_eps,
        context=config.context,
        horizon=config.horizon,
        stride=config.clip_stride,
        max_clips=config.max_train_clips,
        seed=config.seed,
        pad_short=config.pad_short_episodes,
    )
    val = ClipDataset(
        source,
        val_eps,
        context=config.context,
        horizon=config.horizon,
        stride=1,
        max_clips=config.max_val_clips,
        seed=config.seed + 1,
        pad_short=config.pad_short_episodes,
    )
    if len(train) == 0 or len(val) == 0:
        raise VisforeError("the split left no training or no validation clip")
    return TrainingData(ds, source, train, val, train_eps, val_eps, excluded)


def attrs_summary(attrs: dict[str, Any]) -> dict[str, Any]:
    """The dataset attrs, JSON-plain (they come from Zarr JSON), long values shortened."""
    out: dict[str, Any] = {}
    for key, value in attrs.items():
        text = json.dumps(value, default=str)
        out[str(key)] = json.loads(text) if len(text) <= 2000 else text[:2000] + "..."
    return out
