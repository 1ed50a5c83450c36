"""Clips of consecutive frames and actions from a visfore dataset, as a torch Dataset.

A clip of ``C`` context frames and horizon ``K`` starting at row ``s`` of an episode is::

    frames  = rows s .. s + C + K - 1          (C + K, 3, H, W) uint8   o_0 .. o_{C+K-1}
    actions = rows s .. s + C + K - 2          (C + K - 1, A) float32   a_0 .. a_{C+K-2}
    context = frames[:C]                       o_0 .. o_{C-1}
    targets = frames[C:]                       o_C .. o_{C+K-1}

(indices relative to the clip). With the dataset's row convention (row ``t`` holds ``o_t``
and the action ``a_t`` taken after it; see :mod:`visfore.data.dataset`), ``actions[C - 1]`` is
the action taken at the last context frame, the one that produced ``targets[0]``: a model
given ``o_0..o_t`` and ``a_0..a_t`` predicts ``o_{t+1}``, the next row, never ``o_t``.

A clip never crosses an episode boundary: valid starts in an episode of ``L`` rows
(``L - 1`` actions) are ``0 .. L - (C + K)``, so the last action used is row
``L - 2``; the episode's final row, whose action is the NaN padding, contributes its frame
only. :class:`ClipDataset` asserts that no clip action is NaN.

**Short episodes (padding).** With ``pad_short=True`` an episode of ``L`` rows with
``C + 1 <= L < C + K`` (too short for one clip, long enough for one real target)
contributes a single clip starting at its first row, *padded at the end*: frame rows past
the episode's last row repeat that last frame, and actions past row ``L - 2`` (the
episode's NaN padding row and beyond) are zero. Every item carries a ``(K,)`` bool
``"mask"``: ``mask[k]`` is True when target ``k`` (row ``start + C + k``) is a real frame of
the episode, i.e. ``start + C + k <= L - 1`` relative to the episode; all True for an
unpadded clip. Training losses and metrics must ignore masked-out steps (the padded frames
are never predicted from real actions). Episodes with ``L <= C`` rows contribute nothing.

Pixels are held in memory once, as uint8 ``(N, 3, H, W)`` (channels first, the layout the
models take), shared by every :class:`ClipDataset` built from the same :class:`ClipSource`;
convert batches to float ``[0, 1]`` on the fly with :func:`frames_to_float` (on the
training device, so only uint8 crosses the bus).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from visfore.core.errors import VisforeError
from visfore.data.dataset import Dataset

__all__ = [
    "ClipDataset",
    "ClipSource",
    "clip_starts",
    "dataset_mean_frame",
    "frames_to_float",
    "load_clip_source",
    "split_clip",
    "split_episodes",
]


@dataclass(frozen=True)
class ClipSource:
    """Every row of a dataset in memory.

    Attributes:
        pixels: (N, 3, H, W) uint8 observations, channels first (C-contiguous).
        actions: (N, A) float32 actions (NaN on the last row of every episode).
        episode_starts: (E,) int64 first row of each episode.
        episode_lengths: (E,) int64 rows (observations) per episode.
    """

    pixels: np.ndarray
    actions: np.ndarray
    episode_starts: np.ndarray
    episode_lengths: np.ndarray

    @property
    def num_episodes(self) -> int:
        return int(self.episode_starts.shape[0])

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        """(3, H, W)."""
        return tuple(self.pixels.shape[1:])  # type: ignore[return-value]

    @property
    def action_dim(self) -> int:
        return int(self.actions.shape[1])


def load_clip_source(dataset: Dataset) -> ClipSource:
    """Read all complete rows of ``dataset``'s pixels and actions into memory.

    Pixels are read as uint8 and transposed once to ``(N, 3, H, W)``; about
    ``N * H * W * 3`` bytes (7.4k frames of 64x64: ~91 MB). Each array is read in one call,
    so a dataset on object storage (``s3://...``) costs one request per chunk, issued
    concurrently by Zarr, and none while training (3.1k frames of 64x64 in 100 chunks:
    0.6 s from a loopback moto S3 server, 0.15 s from local disk).

    Raises:
        DatasetDamaged: (a VisforeError, one line) a chunk cannot be decoded; the message
            names the array, the chunk and its episodes
            (:class:`visfore.data.dataset.DatasetDamaged`). Missing chunks were refused
            when the dataset was opened (:func:`visfore.data.dataset.open_dataset`).
        VisforeError: the storage of a URL cannot be read.
    """
    pixels = np.ascontiguousarray(dataset.read("pixels").transpose(0, 3, 1, 2))
    actions = np.asarray(dataset.read("action"), dtype=np.float32)
    return ClipSource(
        pixels=pixels,
        actions=actions,
        episode_starts=np.asarray(dataset.episode_starts, dtype=np.int64),
        episode_lengths=np.asarray(dataset.episode_lengths, dtype=np.int64),
    )


def clip_starts(
    episode_starts: np.ndarray,
    episode_lengths: np.ndarray,
    episodes: Sequence[int] | np.ndarray,
    clip_length: int,
    stride: int = 1,
    min_length: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Every valid clip start in the given episodes.

    Args:
        episode_starts, episode_lengths: (E,) int64 first row and row count per episode.
        episodes: indices of the episodes to take clips from.
        clip_length: ``C + K`` frames per clip (>= 1).
        stride: distance in rows between consecutive starts in an episode (>= 1); starts
            are ``0, stride, 2 * stride, ...`` relative to the episode start.
        min_length: padding: an episode with ``min_length <= L < clip_length`` rows
            contributes one (padded) clip at its first row. None: no padding.

    Returns:
        ``(starts, episode_ids)``, both (M,) int64: the absolute first row of each clip and
        its episode, episode by episode in the given order. Episodes shorter than
        ``clip_length`` rows (and than ``min_length``, if given) contribute nothing.

    Raises:
        ValueError: ``clip_length`` or ``stride`` < 1, or ``min_length`` < 1.
    """
    if clip_length < 1 or stride < 1:
        raise ValueError(f"clip_length and stride must be >= 1, got {clip_length}, {stride}")
    if min_length is not None and min_length < 1:
        raise ValueError(f"min_length must be >= 1, got {min_length}")
    starts: list[np.ndarray] = []
    ids: list[np.ndarray] = []
    for e in np.asarray(episodes, dtype=np.int64):
        n_valid = int(episode_lengths[e]) - clip_length + 1
        if n_valid <= 0:
            if min_length is None or int(episode_lengths[e]) < min_length:
                continue
            n_valid = 1  # one padded clip at the episode start
        rel = np.arange(0, n_valid, stride, dtype=np.int64)
        starts.append(int(episode_starts[e]) + rel)
        ids.append(np.full(rel.shape, e, dtype=np.int64))
    if not starts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(starts), np.concatenate(ids)


def split_episodes(
    episodes: Sequence[int] | np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split episode indices into train and validation sets, by episode.

    A seeded permutation (``numpy.random.default_rng(seed)``) of ``episodes``; the first
    ``ceil(val_fraction * len(episodes))`` are validation. Deterministic for a given
    ``(episodes, val_fraction, seed)``; the sets are disjoint and their union is
    ``episodes``.

    Returns:
        ``(train, val)`` sorted int64 arrays.

    Raises:
        VisforeError: ``val_fraction`` not in (0, 1), or the split leaves no training or
            no validation episode.
    """
    episodes = np.asarray(episodes, dtype=np.int64)
    n = int(episodes.shape[0])
    if not 0.0 < val_fraction < 1.0:
        raise VisforeError(f"--val-fraction must be in (0, 1), got {val_fraction}")
    n_val = math.ceil(val_fraction * n - 1e-9)
    if n_val < 1 or n - n_val < 1:
        raise VisforeError(
            f"--val-fraction {val_fraction} of {n} usable episodes leaves "
            f"{n - n_val} training and {n_val} validation episodes; need at least one of each"
        )
    perm = np.random.default_rng(seed).permutation(episodes)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def dataset_mean_frame(source: ClipSource, episodes: Sequence[int] | np.ndarray) -> np.ndarray:
    """Mean frame of the given episodes: ``(3, H, W)`` float32 in ``[0, 1]``, the per-pixel,
    per-channel mean over every row (observation) of those episodes (the mean-frame
    baseline of :mod:`visfore_models.metrics`). Accumulated in float64.

    Raises:
        ValueError: no episode or no row.
    """
    total = np.zeros(source.frame_shape, dtype=np.float64)
    count = 0
    for e in np.asarray(episodes, dtype=np.int64):
        s, n = int(source.episode_starts[e]), int(source.episode_lengths[e])
        for lo in range(s, s + n, 1024):
            chunk = source.pixels[lo : min(s + n, lo + 1024)]
            total += chunk.sum(axis=0, dtype=np.float64)
            count += chunk.shape[0]
    if count == 0:
        raise ValueError("dataset_mean_frame needs at least one row")
    return (total / (255.0 * count)).astype(np.float32)


def frames_to_float(frames: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 frames (any shape) -> ``dtype`` in ``[0, 1]`` (divides by 255)."""
    return frames.to(dtype).div_(255.0)


def split_clip(frames: torch.Tensor, context: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split ``(B, C + K, 3, H, W)`` frames into context ``(B, C, ...)`` and targets
    ``(B, K, ...)`` (views)."""
    return frames[:, :context], frames[:, context:]


class ClipDataset(torch.utils.data.Dataset):
    """Clips ``(frames, actions)`` from chosen episodes of a :class:`ClipSource`.

    ``ds[i]`` with an int returns one clip; ``ds[idx]`` with a sequence / 1-D array of
    indices returns a batch gathered in one vectorised read (use it with a DataLoader
    whose sampler yields index batches and ``batch_size=None``). Items are dicts:

    * ``"frames"``: uint8 tensor ``(C + K, 3, H, W)`` (batched: ``(B, C + K, 3, H, W)``),
      rows ``start .. start + C + K - 1``;
    * ``"actions"``: float32 ``(C + K - 1, A)`` (batched ``(B, C + K - 1, A)``), rows
      ``start .. start + C + K - 2``;
    * ``"mask"``: bool ``(K,)`` (batched ``(B, K)``): True where target ``k`` is a real
      frame, False where it is padding (only in clips of short episodes, ``pad_short``);
    * ``"start"``: int64 absolute first row; ``"episode"``: int64 episode index.

    Args:
        source: the in-memory rows.
        episodes: episode indices to draw clips from.
        context: ``C`` >= 1; horizon: ``K`` >= 1.
        stride: rows between consecutive clip starts in an episode.
        max_clips: keep a seeded random subset of at most this many clips (order kept).
        seed: seed of that subset.
        pad_short: episodes of ``C + 1 .. C + K - 1`` rows give one padded clip each (see
            the module docstring); False: they give none.

    Raises:
        ValueError: ``context``/``horizon``/``stride`` < 1.
        AssertionError: a clip would contain a NaN action among its real steps (a clip
            crossing the padding row of an episode; impossible for a well-formed dataset).
    """

    def __init__(
        self,
        source: ClipSource,
        episodes: Sequence[int] | np.ndarray,
        *,
        context: int,
        horizon: int,
        stride: int = 1,
        max_clips: int | None = None,
        seed: int = 0,
        pad_short: bool = False,
    ) -> None:
        if context < 1 or horizon < 1:
            raise ValueError(f"context and horizon must be >= 1, got {context}, {horizon}")
        self.source = source
        self.context = int(context)
        self.horizon = int(horizon)
        self.clip_length = self.context + self.horizon
        self.pad_short = bool(pad_short)
        self.episodes = np.asarray(episodes, dtype=np.int64)
        starts, ids = clip_starts(
            source.episode_starts,
            source.episode_lengths,
            self.episodes,
            self.clip_length,
            stride,
            min_length=self.context + 1 if self.pad_short else None,
        )
        if max_clips is not None and starts.shape[0] > max_clips:
            keep = np.sort(np.random.default_rng(seed).permutation(starts.shape[0])[:max_clips])
            starts, ids = starts[keep], ids[keep]
        self.starts = starts
        self.episode_ids = ids
        #: exclusive end row of each clip's episode
        self.ends = (source.episode_starts[ids] + source.episode_lengths[ids]).astype(np.int64)
        self._frame_offsets = np.arange(self.clip_length, dtype=np.int64)
        self._action_offsets = np.arange(self.clip_length - 1, dtype=np.int64)
        self._target_offsets = np.arange(self.context, self.clip_length, dtype=np.int64)
        #: clips that need padding (their episode ends before the clip does)
        self.padded = starts + self.clip_length > self.ends
        self.num_padded = int(self.padded.sum())
        if starts.shape[0]:
            # Clips stay inside their episode: the real part never crosses the episode end,
            # and only short-episode clips are padded.
            assert np.all(starts < self.ends), "clip starts outside its episode"
            assert self.pad_short or not self.padded.any(), "clip crosses an episode boundary"
            assert np.all(starts + self.context < self.ends), "a clip has no real target frame"
            rows = starts[:, None] + self._action_offsets
            used = source.actions[np.minimum(rows, self.ends[:, None] - 1)]
            real = (rows < self.ends[:, None] - 1)[..., None]
            assert np.isfinite(np.where(real, used, 0.0)).all(), "a clip contains a NaN (padding) action"

    def __len__(self) -> int:
        return int(self.starts.shape[0])

    @property
    def num_episodes(self) -> int:
        """Episodes that contribute at least one clip."""
        return int(np.unique(self.episode_ids).shape[0])

    def rows(self, index: Any) -> np.ndarray:
        """Absolute first rows of clip(s) ``index``."""
        return self.starts[index]

    def _actions(self, s: np.ndarray, end: np.ndarray) -> np.ndarray:
        rows = s[..., None] + self._action_offsets
        last = end[..., None] - 1  # the episode's last row; its action is NaN padding
        actions = self.source.actions[np.minimum(rows, last)]
        if self.num_padded:
            actions = np.where((rows < last)[..., None], actions, np.float32(0.0))
        return actions

    def actions_for(self, index: Any) -> torch.Tensor:
        """Actions of clip(s) ``index``: float32 ``(..., C + K - 1, A)`` (zero where padded)."""
        if isinstance(index, torch.Tensor):
            index = index.numpy()
        s = np.asarray(self.starts[index])
        return torch.from_numpy(self._actions(s, np.asarray(self.ends[index])))

    def mask_for(self, index: Any) -> torch.Tensor:
        """Validity mask of clip(s) ``index``: bool ``(..., K)``, True for real target frames."""
        if isinstance(index, torch.Tensor):
            index = index.numpy()
        s = np.asarray(self.starts[index])
        end = np.asarray(self.ends[index])
        return torch.from_numpy(s[..., None] + self._target_offsets < end[..., None])

    def __getitem__(self, index: Any) -> dict[str, torch.Tensor]:
        if isinstance(index, torch.Tensor):
            index = index.numpy()
        s = np.asarray(self.starts[index])
        end = np.asarray(self.ends[index])
        rows = s[..., None] + self._frame_offsets
        if self.num_padded:
            rows = np.minimum(rows, end[..., None] - 1)  # repeat the last frame
        frames = self.source.pixels[rows]
        return {
            "frames": torch.from_numpy(frames),
            "actions": torch.from_numpy(self._actions(s, end)),
            "mask": torch.from_numpy(s[..., None] + self._target_offsets < end[..., None]),
            "start": torch.from_numpy(np.asarray(s, dtype=np.int64)),
            "episode": torch.from_numpy(np.asarray(self.episode_ids[index], dtype=np.int64)),
        }
