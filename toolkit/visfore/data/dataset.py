"""The visfore dataset format: episodes of frames, states and actions in a Zarr v3 group.

Layout::

    NAME.zarr/
      attrs                  format, format_version, env_id, env_kwargs, obs/reward mode,
                             frame_size, policy, seed, package versions, created, ...
      data/pixels            (N, H, W, 3) uint8    observation o_t, chunks of whole frames
      data/state             (N, S) float32        state observation s_t
      data/action            (N, A) float32        a_t, the action taken after o_t
      data/reward            (N,) float32          r_t, received after a_t
      data/terminated        (N,) bool             the step after a_t terminated
      data/truncated         (N,) bool             the step after a_t was truncated
      meta/episode_ends      (E,) int64            exclusive end row of each episode

Row convention. An episode of T actions occupies T + 1 consecutive rows
``start .. start + T``: row ``start + t`` holds o_t, s_t and the action a_t taken after
it, the reward r_t and the terminated / truncated flags of that step. The last row holds
the final observation o_T; it has no action, so its action and reward are **NaN**
(padding marked in-band: any accidental use shows up as NaN) and its flags are False.
So a model given o_0..o_t and a_0..a_t predicts o_{t+1}, the next row of the same
episode. Clips must never cross ``episode_ends``.

Durability. :class:`DatasetWriter` writes whole episodes, a few at a time (Zarr pays
milliseconds per write, whatever its size), data arrays first and ``meta/episode_ends``
last, so ``episode_ends`` is the commit record: rows past ``episode_ends[-1]`` belong to
episodes that were being written when the process died, and :meth:`DatasetWriter.open`
cuts them off. Buffered episodes are flushed on close, on Ctrl-C and on exceptions (use
the writer as a context manager); a hard kill (SIGKILL, power loss) loses at most the
buffer, ``flush_rows`` rows or ``flush_seconds`` of collection.

Locations. Every function taking a dataset path also takes an fsspec URL
(``s3://bucket/name.zarr``, ``gs://...``, ``memory://...``; ``file://`` URLs are local
paths), opened through :mod:`visfore.data.storage` with :class:`zarr.storage.FsspecStore`;
credentials and endpoints come from the environment (see :mod:`visfore.data.storage`).
:attr:`Dataset.path` is then the URL string instead of a :class:`~pathlib.Path`.

The commit order above holds on object stores too: Zarr writes every chunk and every
``zarr.json`` as one whole object (one PUT), S3, GCS and Azure Blob replace an object
atomically (a reader gets the old or the new object, never part of one) and read after
write consistently, so a reader that sees an ``episode_ends`` entry also sees every row
of that episode, and :func:`_committed_ends` reads ``episode_ends`` before the data
arrays' shapes. Readers load whole arrays or episodes per call (one request per chunk,
issued concurrently by Zarr), never one request per frame: :func:`visfore.data.clips.load_clip_source`
reads pixels and actions once into memory.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping

import numpy as np
import zarr
from zarr.codecs import ZstdCodec

from visfore.core.errors import VisforeError
from visfore.data import storage

FORMAT_NAME = "visfore-dataset"
FORMAT_VERSION = 1

#: Per-row arrays under ``data/`` and their dtypes (pixels and state/action widths vary).
DATA_KEYS = ("pixels", "state", "action", "reward", "terminated", "truncated")
_DTYPES = {
    "pixels": "uint8",
    "state": "float32",
    "action": "float32",
    "reward": "float32",
    "terminated": "bool",
    "truncated": "bool",
}
#: Rows per chunk for the small per-row arrays (state, action, reward, flags).
_SMALL_CHUNK_ROWS = 8192


def _zstd(level: int = 3):
    return ZstdCodec(level=level)


def _write_all_chunks(array: Any) -> Any:
    """``array`` with ``write_empty_chunks=True`` where Zarr has ``Array.with_config``."""
    with_config = getattr(array, "with_config", None)
    return with_config({"write_empty_chunks": True}) if with_config else array


@dataclass(frozen=True)
class Episode:
    """One episode read from a dataset; T actions, T + 1 observations.

    Attributes:
        pixels: (T + 1, H, W, 3) uint8 observations o_0..o_T.
        state: (T + 1, S) float32 state observations.
        action: (T, A) float32, a_t taken after o_t (the NaN padding row is dropped).
        reward: (T,) float32 rewards r_t.
        terminated, truncated: (T,) bool flags of each step.
    """

    pixels: np.ndarray
    state: np.ndarray
    action: np.ndarray
    reward: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray


class Dataset:
    """Read access to a visfore Zarr dataset (see the module docstring for the layout).

    Open with :func:`open_dataset`. Arrays are read lazily from Zarr: ``ds.array("pixels")``
    is the ``zarr.Array`` of shape (N, H, W, 3).

    Attributes:
        path: the location: a :class:`~pathlib.Path`, or the URL string of a dataset on
            object storage (see :mod:`visfore.data.storage`).
        group: the ``zarr.Group``.
        attrs: the group attrs (provenance), a dict.
        episode_ends: (E,) int64 committed episode ends (see the module docstring).
    """

    def __init__(self, path: Path | str, group: Any) -> None:
        self.path = path
        self.group = group
        self.attrs: dict[str, Any] = dict(group.attrs)
        self.episode_ends = _committed_ends(group)

    # -- shape of the data -------------------------------------------------------------
    @property
    def num_episodes(self) -> int:
        """E, the number of complete episodes."""
        return int(self.episode_ends.shape[0])

    @property
    def num_rows(self) -> int:
        """N, observation rows of complete episodes (T + 1 per episode)."""
        return int(self.episode_ends[-1]) if self.num_episodes else 0

    @property
    def episode_starts(self) -> np.ndarray:
        """(E,) int64 first row of each episode."""
        return np.concatenate([[0], self.episode_ends[:-1]]).astype(np.int64)

    @property
    def episode_lengths(self) -> np.ndarray:
        """(E,) int64 observations per episode (T + 1)."""
        return self.episode_ends - self.episode_starts

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        """(H, W, 3) of ``data/pixels``."""
        return tuple(self.group["data/pixels"].shape[1:])  # type: ignore[return-value]

    @property
    def state_dim(self) -> int:
        return int(self.group["data/state"].shape[1])

    @property
    def action_dim(self) -> int:
        return int(self.group["data/action"].shape[1])

    def array(self, key: str) -> Any:
        """The ``zarr.Array`` ``data/<key>``; raises VisforeError for an unknown key."""
        if key not in DATA_KEYS:
            raise VisforeError(f"unknown dataset array {key!r}; valid: {', '.join(DATA_KEYS)}")
        return self.group[f"data/{key}"]

    # -- reading -----------------------------------------------------------------------
    def episode_rows(self, index: int) -> slice:
        """Rows of episode ``index`` (0 <= index < E); raises VisforeError when out of range."""
        if not 0 <= index < self.num_episodes:
            raise VisforeError(f"episode {index} out of range; the dataset has {self.num_episodes} episodes")
        start = 0 if index == 0 else int(self.episode_ends[index - 1])
        return slice(start, int(self.episode_ends[index]))

    def episode(self, index: int) -> Episode:
        """Read one whole episode into memory (see :class:`Episode` for shapes)."""
        rows = self.episode_rows(index)
        get = lambda key: self.group[f"data/{key}"][rows]  # noqa: E731
        action_rows = slice(0, rows.stop - rows.start - 1)
        with storage.storage_errors(self.path, "read"):
            return Episode(
                pixels=get("pixels"),
                state=get("state"),
                action=get("action")[action_rows],
                reward=get("reward")[action_rows],
                terminated=get("terminated")[action_rows],
                truncated=get("truncated")[action_rows],
            )

    def read(self, key: str) -> np.ndarray:
        """All complete rows of ``data/<key>`` as a numpy array ((N, ...)), in one call
        (Zarr fetches the chunks concurrently; on object storage one request per chunk).

        Raises:
            VisforeError: unknown ``key``; the storage cannot be read (URL locations).
        """
        array = self.array(key)
        with storage.storage_errors(self.path, "read"):
            return array[: self.num_rows]

    def size_on_disk(self) -> int:
        """Bytes the store takes: its files on local disk, or its objects (fsspec ``du``)
        on object storage."""
        return storage.size_on_disk(self.path)

    def __repr__(self) -> str:
        return (
            f"Dataset({storage.display_name(self.path)!r}, episodes={self.num_episodes}, "
            f"rows={self.num_rows}, frame_shape={self.frame_shape})"
        )


def _committed_ends(group: Any) -> np.ndarray:
    """``meta/episode_ends`` cut to its committed prefix, (E,) int64.

    An interrupted commit can leave trailing entries that are not strictly increasing
    (the fill value 0 after a resize) or that point past the stored rows; those
    episodes were never committed.
    """
    ends = np.asarray(group["meta/episode_ends"][:], dtype=np.int64)
    rows = min(group[f"data/{key}"].shape[0] for key in DATA_KEYS)
    previous = np.concatenate([[0], ends[:-1]])
    bad = np.flatnonzero((ends <= previous) | (ends > rows))
    return ends[: bad[0]] if len(bad) else ends


def _open_group(path: Path | str, mode: Literal["r", "r+"]) -> Any:
    """Open the Zarr group at a normalized location (:func:`visfore.data.storage.normalize`) and
    check that it is a visfore dataset. Storage errors of URLs are left to the caller's
    :func:`visfore.data.storage.storage_errors` block."""
    if not (path.exists() if isinstance(path, Path) else storage.exists(path)):
        storage.check_bucket(path)
        raise VisforeError(f"dataset not found: {storage.display_name(path)}")
    remote = storage.is_url(path)
    try:
        store = storage.zarr_store(path, read_only=mode == "r") if remote else str(path)
        group = zarr.open_group(store, mode=mode)
    except VisforeError:
        raise
    except Exception as exc:  # zarr raises several types for a non-Zarr directory
        if remote and storage.is_storage_error(exc):
            raise  # unreachable endpoint, credentials ...: storage_errors reports it
        path = storage.display_name(path)
        raise VisforeError(f"{path} is not a Zarr group ({type(exc).__name__})") from None
    path = storage.display_name(path)
    if group.attrs.get("format") != FORMAT_NAME:
        raise VisforeError(f"{path} is not a visfore dataset (attrs['format'] != {FORMAT_NAME!r})")
    version = group.attrs.get("format_version")
    if version != FORMAT_VERSION:
        raise VisforeError(f"{path} has dataset format version {version}; this visfore reads {FORMAT_VERSION}")
    missing = [k for k in DATA_KEYS if f"data/{k}" not in group] + (
        [] if "meta/episode_ends" in group else ["meta/episode_ends"]
    )
    if missing:
        raise VisforeError(f"{path} is missing arrays: {', '.join(missing)}")
    return group


def open_dataset(path: str | os.PathLike[str]) -> Dataset:
    """Open a visfore dataset for reading.

    Args:
        path: a local path, a ``file://`` URL, or an fsspec URL (``s3://bucket/x.zarr``;
            see :mod:`visfore.data.storage`).

    Raises:
        VisforeError: the path does not exist, is not a Zarr group, or is not a visfore
            dataset of a format version this package reads; for URLs also: the
            filesystem package is missing, the bucket does not exist, the endpoint cannot
            be reached or the credentials are missing or refused.
    """
    location = storage.normalize(path)
    with storage.storage_errors(location, "open"):
        return Dataset(location, _open_group(location, mode="r"))


class DatasetWriter:
    """Append whole episodes to a visfore dataset; safe against interruption.

    Create a new dataset with :meth:`create` or continue one with :meth:`open`.
    :meth:`append_episode` buffers an episode; :meth:`flush` writes the buffered rows,
    then commits them by writing their end rows to ``meta/episode_ends``.
    """

    def __init__(self, path: Path | str, group: Any) -> None:
        self.path = path
        self.group = group
        # write_empty_chunks: skip Zarr's per-chunk "all fill value?" scan before each
        # write (about 2.5 ms per 64x64 episode chunk, more than compressing it); a chunk
        # that happens to equal the fill value then costs a few stored bytes, and reading
        # is the same either way.
        self._arrays = {k: _write_all_chunks(group[f"data/{k}"]) for k in DATA_KEYS}
        self._ends = group["meta/episode_ends"]
        ends = _committed_ends(group)
        self._num_rows = int(ends[-1]) if len(ends) else 0
        self._num_episodes = int(len(ends))
        self.flush_rows = 512
        self.flush_seconds = 5.0
        self._buffer: list[dict[str, np.ndarray]] = []
        self._buffered_rows = 0
        self._buffer_since = 0.0

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        *,
        frame_shape: tuple[int, int, int],
        state_dim: int,
        action_dim: int,
        attrs: Mapping[str, Any],
        chunk_frames: int = 64,
        compression_level: int = 3,
    ) -> DatasetWriter:
        """Create an empty dataset at ``path`` (which must not exist).

        Args:
            path: a local path (parents must exist), a ``file://`` URL, or an fsspec URL
                (``s3://bucket/x.zarr``: the bucket must exist; see :mod:`visfore.data.storage`).
            frame_shape: (H, W, 3) of the pixel observations.
            state_dim, action_dim: S and A.
            attrs: provenance stored in the group attrs (JSON-serialisable); ``format``
                and ``format_version`` are added.
            chunk_frames: frames per pixel chunk along time (whole frames; use the
                episode length T + 1 so each episode write fills whole chunks).
            compression_level: zstd level (lossless).

        Raises:
            VisforeError: ``path`` exists, or a size is not positive; for URLs also the
                errors of :func:`open_dataset` (missing bucket, package, credentials ...).
        """
        path = storage.normalize(path)
        if storage.exists(path):
            raise VisforeError(f"{storage.display_name(path)} already exists")
        h, w, c = frame_shape
        if min(h, w, state_dim, action_dim, chunk_frames) <= 0 or c != 3:
            raise VisforeError(f"bad dataset shape: frame {frame_shape}, state {state_dim}, action {action_dim}")
        storage.check_bucket(path)
        with storage.storage_errors(path, "create"):
            return cls._create(
                path,
                frame_shape=frame_shape,
                state_dim=state_dim,
                action_dim=action_dim,
                attrs=attrs,
                chunk_frames=chunk_frames,
                compression_level=compression_level,
            )

    @classmethod
    def _create(
        cls,
        path: Path | str,
        *,
        frame_shape: tuple[int, int, int],
        state_dim: int,
        action_dim: int,
        attrs: Mapping[str, Any],
        chunk_frames: int,
        compression_level: int,
    ) -> DatasetWriter:
        h, w, _ = frame_shape
        store = storage.zarr_store(path, read_only=False) if storage.is_url(path) else str(path)
        group = zarr.open_group(store, mode="w-", zarr_format=3)
        codec = _zstd(compression_level)
        widths = {"pixels": (h, w, 3), "state": (state_dim,), "action": (action_dim,)}
        for key in DATA_KEYS:
            tail = widths.get(key, ())
            rows = chunk_frames if key == "pixels" else _SMALL_CHUNK_ROWS
            fill = np.nan if key in ("action", "reward") else None
            group.create_array(
                f"data/{key}",
                shape=(0, *tail),
                chunks=(rows, *tail),
                dtype=_DTYPES[key],
                compressors=codec,
                fill_value=fill,
                # Flat chunk keys (c.7.0.0.0): the default "/" makes three directories per
                # episode chunk, which doubled the cost of each pixel chunk write.
                chunk_key_encoding={"name": "default", "separator": "."},
            )
        group.create_array(
            "meta/episode_ends",
            shape=(0,),
            chunks=(_SMALL_CHUNK_ROWS,),
            dtype="int64",
            compressors=codec,
        )
        # One metadata write (attrs.update writes zarr.json once per key).
        group.update_attributes({**dict(attrs), "format": FORMAT_NAME, "format_version": FORMAT_VERSION})
        return cls(path, group)

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> DatasetWriter:
        """Reopen a dataset to append more episodes.

        Rows of an episode that was being written when an earlier run stopped (past the
        last committed ``episode_ends``) are cut off.

        Raises:
            VisforeError: as :func:`open_dataset`.
        """
        path = storage.normalize(path)
        with storage.storage_errors(path, "open"):
            writer = cls(path, _open_group(path, mode="r+"))
            for array in writer._arrays.values():
                if array.shape[0] != writer._num_rows:
                    array.resize((writer._num_rows, *array.shape[1:]))
            if writer._ends.shape[0] != writer._num_episodes:
                writer._ends.resize((writer._num_episodes,))
        return writer

    @property
    def num_episodes(self) -> int:
        """Episodes committed to the store (buffered ones not counted)."""
        return self._num_episodes

    @property
    def attrs(self) -> dict[str, Any]:
        return dict(self.group.attrs)

    def update_attrs(self, attrs: Mapping[str, Any]) -> None:
        """Merge ``attrs`` into the group attrs."""
        self.group.update_attributes(dict(attrs))

    def append_episode(
        self,
        *,
        pixels: np.ndarray,
        state: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
    ) -> int:
        """Buffer one finished episode of T actions; it is committed by the next flush.

        The writer flushes by itself once ``flush_rows`` rows or ``flush_seconds`` have
        accumulated, and on :meth:`close` / leaving a ``with`` block (also on Ctrl-C or an
        exception). Zarr pays a fixed cost of milliseconds per array write, so batching
        episodes keeps the store from dominating collection time.

        Args:
            pixels: (T + 1, H, W, 3) uint8 observations o_0..o_T.
            state: (T + 1, S) state observations (stored as float32).
            action: (T, A) actions a_0..a_{T-1} (stored as float32).
            reward: (T,) rewards; terminated, truncated: (T,) bool.

        Returns:
            The index the episode will have in the dataset.

        Raises:
            ValueError: the arrays' lengths or widths do not match the dataset.
        """
        steps = int(np.shape(action)[0])
        rows = steps + 1

        def pad(x: np.ndarray, fill: Any) -> np.ndarray:
            return np.concatenate([x, np.full((1, *x.shape[1:]), fill, dtype=x.dtype)])

        values: dict[str, np.ndarray] = {
            "pixels": np.asarray(pixels, dtype=np.uint8),
            "state": np.asarray(state, dtype=np.float32),
            "action": pad(np.asarray(action, dtype=np.float32), np.nan),
            "reward": pad(np.asarray(reward, dtype=np.float32), np.nan),
            "terminated": pad(np.asarray(terminated, dtype=bool), False),
            "truncated": pad(np.asarray(truncated, dtype=bool), False),
        }
        for key, value in values.items():
            expected = (rows, *self._arrays[key].shape[1:])
            if value.shape != expected:
                raise ValueError(f"episode array {key!r} has shape {value.shape}; expected {expected}")
        if not self._buffer:
            self._buffer_since = time.monotonic()
        self._buffer.append(values)
        self._buffered_rows += rows
        index = self._num_episodes + len(self._buffer) - 1
        if self._buffered_rows >= self.flush_rows or time.monotonic() - self._buffer_since >= self.flush_seconds:
            self.flush()
        return index

    def flush(self) -> None:
        """Write and commit every buffered episode (one write per array).

        Idempotent for the same buffer: if it is interrupted (Ctrl-C) and called again,
        it rewrites the same rows and the same ``episode_ends`` entries.

        Raises:
            VisforeError: the storage of a URL location cannot be written (the buffer is
                kept; episodes committed earlier stay valid).
        """
        if not self._buffer:
            return
        with storage.storage_errors(self.path, "write to"):
            self._write_buffer()

    def _write_buffer(self) -> None:
        start = self._num_rows
        stop = start + self._buffered_rows
        for key, array in self._arrays.items():
            block = np.concatenate([episode[key] for episode in self._buffer])
            array.resize((stop, *array.shape[1:]))
            array[start:stop] = block
        ends = start + np.cumsum([len(episode["state"]) for episode in self._buffer])
        # Commit last: a crash before these lines leaves rows that open() cuts off; a
        # crash between the resize and the write leaves zero entries that
        # _committed_ends() ignores.
        first, last = self._num_episodes, self._num_episodes + len(self._buffer)
        self._ends.resize((last,))
        self._ends[first:last] = ends.astype(np.int64)
        self._num_rows = stop
        self._num_episodes = last
        self._buffer.clear()
        self._buffered_rows = 0

    def close(self) -> None:
        """Flush buffered episodes."""
        self.flush()

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()
