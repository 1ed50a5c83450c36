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
      meta/episode_checksums (E, 6, 32) uint8      sha256 of each episode's rows of each
                                                   data array (optional, see below)

Row convention. An episode of T actions occupies T + 1 consecutive rows
``start .. start + T``: row ``start + t`` holds o_t, s_t and the action a_t taken after
it, the reward r_t and the terminated / truncated flags of that step. The last row holds
the final observation o_T; it has no action, so its action and reward are **NaN**
(padding marked in-band: any accidental use shows up as NaN) and its flags are False.
So a model given o_0..o_t and a_0..a_t predicts o_{t+1}, the next row of the same
episode. Clips must never cross ``episode_ends``.

Durability. :class:`DatasetWriter` writes whole episodes, a few at a time (Zarr pays
milliseconds per write, whatever its size), data arrays first, then their checksums,
``meta/episode_ends`` last, so ``episode_ends`` is the commit record: rows past
``episode_ends[-1]`` belong to episodes that were being written when the process died,
and :meth:`DatasetWriter.open` cuts them off. Buffered episodes are flushed on close, on Ctrl-C and on exceptions (use
the writer as a context manager); a hard kill (SIGKILL, power loss) loses at most the
buffer, ``flush_rows`` rows or ``flush_seconds`` of collection.

Integrity. Zarr reads a chunk that is not stored as the fill value (a deleted pixel
chunk reads as black frames), so readers check the store themselves:

- :func:`open_dataset` lists the stored chunks (one listing of the store, no decoding)
  and refuses a dataset missing any chunk of its committed rows with a one-line
  :class:`DatasetDamaged` naming the array, the chunk and the episodes it holds;
- every read (:meth:`Dataset.read`, :meth:`Dataset.episode`, ``Dataset.array(key)[...]``)
  turns a chunk that cannot be decoded (a truncated file: ``Zstd decompression error``)
  into the same kind of one-line error;
- a malformed ``zarr.json`` is reported with the file's name;
- ``meta/episode_checksums[e, k]`` is the sha256 digest of the raw little-endian bytes
  of episode ``e``'s rows (its T + 1 rows, padding included, C order) of
  ``data/<DATA_KEYS[k]>``, written with the episode (before its ``episode_ends`` entry)
  and checked by ``visfore dataset verify`` (:mod:`visfore.data.verify`). An all-zero row
  means "no checksum recorded" (episodes written by a visfore without checksums;
  datasets made before checksums have no such array and still open and verify).

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

import hashlib
import itertools
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import numpy as np
import zarr
from zarr.codecs import ZstdCodec
from zarr.core.sync import sync

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
#: The committed episode ends (the commit record) and the per-episode checksums.
ENDS_KEY = "meta/episode_ends"
CHECKSUMS_KEY = "meta/episode_checksums"
#: Checksum algorithm (:mod:`hashlib` name) and digest size in bytes.
CHECKSUM_ALGORITHM = "sha256"
DIGEST_SIZE = 32
#: Episodes per chunk of ``meta/episode_checksums`` (192 bytes each).
_CHECKSUM_CHUNK_EPISODES = 1024
#: Key of an episode's checksums in the writer's buffer.
_DIGESTS = "checksums"


def _zstd(level: int = 3):
    return ZstdCodec(level=level)


def _write_all_chunks(array: Any) -> Any:
    """``array`` with ``write_empty_chunks=True`` where Zarr has ``Array.with_config``."""
    with_config = getattr(array, "with_config", None)
    return with_config({"write_empty_chunks": True}) if with_config else array


def episode_digests(values: Mapping[str, np.ndarray]) -> np.ndarray:
    """The checksums of one episode: ``(len(DATA_KEYS), 32)`` uint8, row ``k`` the sha256
    digest of ``values[DATA_KEYS[k]]``'s raw bytes (cast to the stored dtype, little-endian,
    C order).

    Args:
        values: every key of :data:`DATA_KEYS`, each the episode's ``T + 1`` stored rows
            (padding row included), e.g. ``pixels`` (T + 1, H, W, 3) uint8.
    """
    out = np.empty((len(DATA_KEYS), DIGEST_SIZE), dtype=np.uint8)
    for i, key in enumerate(DATA_KEYS):
        rows = np.ascontiguousarray(values[key], dtype=np.dtype(_DTYPES[key]).newbyteorder("<"))
        digest = hashlib.new(CHECKSUM_ALGORITHM, rows.reshape(-1).view(np.uint8).data).digest()
        out[i] = np.frombuffer(digest, np.uint8)
    return out


@dataclass(frozen=True)
class ChunkProblem:
    """One damaged piece of a dataset.

    Attributes:
        kind: ``"missing"`` (the chunk is not stored: Zarr would read fill values),
            ``"undecodable"`` (stored but cannot be read or decoded) or ``"checksum"``
            (an episode's rows of the array differ from the digest recorded when it was
            collected); ``"metadata"`` (the node's ``zarr.json`` is not valid JSON).
        array: the array's (node's) path in the dataset (``"data/pixels"``, ``"meta/episode_ends"``).
        chunk: the chunk's grid coordinates (``(7, 0, 0, 0)``); for ``"checksum"`` the
            first chunk holding the episode's rows.
        rows: ``(start, stop)`` rows (entries of the ``meta/`` arrays) the chunk or
            episode covers, stop exclusive; None when unknown.
        episodes: ``(first, last)`` episodes concerned, inclusive; None when unknown
            (the episode boundaries themselves are damaged).
        detail: the underlying error, one line (``"RuntimeError: Zstd decompression error"``).
    """

    kind: Literal["missing", "undecodable", "checksum", "metadata"]
    array: str
    chunk: tuple[int, ...]
    rows: tuple[int, int] | None = None
    episodes: tuple[int, int] | None = None
    detail: str = ""

    def describe(self) -> str:
        """One line without the dataset's name, e.g. ``chunk 1 of data/pixels (rows 6-11,
        episode 1) is missing``."""
        if self.kind == "metadata":
            node = f"{self.array}/zarr.json" if self.array else "zarr.json"
            return f"{node} is not valid JSON" + (f" ({self.detail})" if self.detail else "")
        where = [_span("entries" if self.array.startswith("meta/") else "rows", self.rows)]
        if self.kind == "checksum":
            episode = _span("episode", self.episodes)
            where.append(f"chunk {_chunk_label(self.chunk)}")
            return f"{episode} of {self.array} ({', '.join(w for w in where if w)}) differs from its checksum recorded at collection"
        where.append(_span("episode", self.episodes))
        inside = ", ".join(w for w in where if w)
        head = f"chunk {_chunk_label(self.chunk)} of {self.array}" + (f" ({inside})" if inside else "")
        if self.kind == "missing":
            return f"{head} is missing"
        return f"{head} cannot be decoded" + (f" ({self.detail})" if self.detail else "")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form: the attributes (``rows`` as ``[start, stop]``, stop
        exclusive; ``episodes`` as ``[first, last]``, inclusive) and ``line``
        (:meth:`describe`)."""
        return {
            "kind": self.kind,
            "array": self.array,
            "chunk": list(self.chunk),
            "rows": list(self.rows) if self.rows else None,
            "episodes": list(self.episodes) if self.episodes else None,
            "detail": self.detail,
            "line": self.describe(),
        }


def _span(noun: str, span: tuple[int, int] | None) -> str:
    """``"rows 6-11"`` for rows (6, 12) stop-exclusive, ``"episode 3"`` / ``"episodes 3-5"``
    for inclusive episode spans; ``""`` for None or an empty span."""
    if span is None:
        return ""
    first, last = (span[0], span[1] - 1) if noun in ("rows", "entries") else span
    if last < first:
        return ""
    if first == last:
        return f"{noun.rstrip('s') if noun != 'entries' else 'entry'} {first}"
    plural = noun if noun.endswith("s") else f"{noun}s"
    return f"{plural} {first}-{last}"


def _chunk_label(coords: tuple[int, ...]) -> str:
    """``"7"`` for a chunk of a grid chunked along rows only, else ``"(7, 0, 1)"``."""
    if all(c == 0 for c in coords[1:]):
        return str(coords[0]) if coords else "0"
    return "(" + ", ".join(str(c) for c in coords) + ")"


class DatasetDamaged(VisforeError):
    """A dataset with missing, undecodable or changed chunks; the message is one line
    naming the dataset, the array, the chunk and its episodes, and suggesting
    ``visfore dataset verify``.

    Attributes:
        problems: the :class:`ChunkProblem` s found (possibly more than the message names).
    """

    def __init__(self, message: str, problems: Sequence[ChunkProblem] = ()) -> None:
        super().__init__(message)
        self.problems = list(problems)


def _damaged(path: Path | str, problems: Sequence[ChunkProblem]) -> DatasetDamaged:
    """The one-line error for ``problems`` (at least one) of the dataset at ``path``."""
    name = storage.display_name(path)
    more = f" ({len(problems)} damaged chunks in all)" if len(problems) > 1 else ""
    first = problems[0].describe()
    return DatasetDamaged(
        f"{name} is damaged: {first}{more}; run `visfore dataset verify {name}` for a full report", problems
    )


def error_summary(exc: BaseException) -> str:
    """``"RuntimeError: Zstd decompression error: invalid input data"``: the exception's
    type and the first line of its message."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


def stored_keys(group: Any, prefix: str = "") -> set[str]:
    """Keys of every object stored under ``prefix`` of the group's store (relative to the
    store root: ``"data/pixels/c.7.0.0.0"``), from one listing of the store
    (``Store.list_prefix``; an fsspec ``find`` on object storage, a directory walk locally),
    run on Zarr's own event loop (``zarr.core.sync.sync``, as Zarr's synchronous API does:
    an fsspec store's async filesystem is bound to that loop)."""
    store = group.store_path.store
    base = "/".join(p for p in (group.store_path.path, prefix) if p)

    async def listing() -> list[str]:
        return [key async for key in store.list_prefix(base)]

    return set(sync(listing()))


def _chunk_grid(array: Any, length: int) -> Any:
    """Grid coordinates of the chunks of ``array`` that hold its first ``length`` rows."""
    chunks, shape = array.chunks, array.shape
    axes = [range(-(-length // chunks[0]) if length > 0 else 0)]
    axes += [range(-(-n // c) if n > 0 else 0) for n, c in zip(shape[1:], chunks[1:])]
    return itertools.product(*axes)


def _chunk_key(array: Any, coords: tuple[int, ...]) -> str:
    return (
        f"{array.path}/{array.metadata.encode_chunk_key(coords)}"
        if array.path
        else array.metadata.encode_chunk_key(coords)
    )


def _episodes_of_rows(ends: np.ndarray, start: int, stop: int) -> tuple[int, int] | None:
    """``(first, last)`` episodes whose rows intersect ``[start, stop)``, inclusive."""
    if stop <= start or not len(ends) or start >= int(ends[-1]):
        return None
    first = int(np.searchsorted(ends, start, side="right"))
    last = int(np.searchsorted(ends, min(stop, int(ends[-1])) - 1, side="right"))
    return first, last


class DatasetArray:
    """A ``zarr.Array`` of a dataset whose reads report damage in one line.

    ``array[selection]`` reads like the Zarr array; a chunk that cannot be read or
    decoded raises :class:`DatasetDamaged` naming the array, the chunk and its episodes.
    Every other attribute (``shape``, ``chunks``, ``dtype``, ``compressors`` ...) is the
    Zarr array's; :attr:`zarr_array` is the array itself.
    """

    def __init__(self, dataset: Dataset, name: str, array: Any) -> None:
        self.dataset = dataset
        self.name = name
        self.zarr_array = array

    def __getitem__(self, selection: Any) -> Any:
        return self.dataset._read(self.name, self.zarr_array, selection)

    def __len__(self) -> int:
        return len(self.zarr_array)

    def __getattr__(self, attr: str) -> Any:
        array = self.__dict__.get("zarr_array")
        if array is None or attr.startswith("__"):
            raise AttributeError(attr)
        return getattr(array, attr)

    def __repr__(self) -> str:
        return f"DatasetArray({self.name!r}, shape={self.zarr_array.shape})"


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
        self.episode_ends = _committed_ends(group, path)

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

    def array(self, key: str) -> DatasetArray:
        """``data/<key>`` as a :class:`DatasetArray`: the ``zarr.Array`` (shape (N, ...),
        lazily read), whose reads report a damaged chunk in one line.

        Raises:
            VisforeError: unknown ``key``.
        """
        if key not in DATA_KEYS:
            raise VisforeError(f"unknown dataset array {key!r}; valid: {', '.join(DATA_KEYS)}")
        return DatasetArray(self, f"data/{key}", self.group[f"data/{key}"])

    # -- integrity ---------------------------------------------------------------------
    @property
    def has_checksums(self) -> bool:
        """Whether the dataset has ``meta/episode_checksums`` (collected with checksums)."""
        return CHECKSUMS_KEY in self.group

    def array_names(self) -> list[str]:
        """Every array of the dataset: ``data/<key>`` for :data:`DATA_KEYS`,
        ``meta/episode_ends`` and, when present, ``meta/episode_checksums``."""
        return [f"data/{k}" for k in DATA_KEYS] + [ENDS_KEY] + ([CHECKSUMS_KEY] if self.has_checksums else [])

    def committed_length(self, name: str) -> int:
        """Rows of array ``name`` that belong to committed episodes: N for ``data/*``, E for
        ``meta/episode_ends``, the episodes that have a checksum row for
        ``meta/episode_checksums``."""
        if name == ENDS_KEY:
            return self.num_episodes
        if name == CHECKSUMS_KEY:
            return min(self.num_episodes, int(self.group[CHECKSUMS_KEY].shape[0]))
        return self.num_rows

    def chunk_span(self, name: str, coords: tuple[int, ...]) -> tuple[tuple[int, int], tuple[int, int] | None]:
        """``((start, stop), episodes)`` of chunk ``coords`` of array ``name``: the committed
        rows (entries) it holds, stop exclusive, and the ``(first, last)`` episodes they
        belong to (None when it holds none)."""
        rows = int(self.group[name].chunks[0])
        start = coords[0] * rows
        stop = min(start + rows, self.committed_length(name))
        if name in (ENDS_KEY, CHECKSUMS_KEY):
            return (start, stop), ((start, stop - 1) if stop > start else None)
        return (start, stop), _episodes_of_rows(self.episode_ends, start, stop)

    def chunk_count(self) -> int:
        """Chunks holding committed rows, over every array (:meth:`array_names`)."""
        return sum(sum(1 for _ in _chunk_grid(self.group[n], self.committed_length(n))) for n in self.array_names())

    def missing_chunks(self, stored: set[str] | None = None) -> list[ChunkProblem]:
        """The chunks of committed rows that are not stored, array by array, in grid order.

        One listing of the store (no chunk is read or decoded): cheap enough to run on
        every open, also on object storage (one paginated LIST).

        Args:
            stored: the store's keys (:func:`stored_keys`) when already listed.

        Raises:
            VisforeError: the storage cannot be listed (URL locations).
        """
        if stored is None:
            with storage.storage_errors(self.path, "list"):
                stored = stored_keys(self.group)
        problems = []
        for name in self.array_names():
            array = self.group[name]
            for coords in _chunk_grid(array, self.committed_length(name)):
                if _chunk_key(array, coords) not in stored:
                    rows, episodes = self.chunk_span(name, coords)
                    problems.append(ChunkProblem("missing", name, tuple(coords), rows, episodes))
        return problems

    def check_chunks(self) -> None:
        """Raise :class:`DatasetDamaged` (one line) when a chunk of committed rows is not
        stored (:meth:`missing_chunks`); nothing is decoded."""
        missing = self.missing_chunks()
        if missing:
            raise _damaged(self.path, missing)

    def _read(self, name: str, array: Any, selection: Any) -> Any:
        """``array[selection]`` with storage errors as one line (URLs) and a chunk that
        cannot be decoded as :class:`DatasetDamaged` naming it."""
        try:
            with storage.storage_errors(self.path, "read"):
                return array[selection]
        except VisforeError:
            raise
        except Exception:
            problem = self._locate_bad_chunk(name, array, selection)
            if problem is None:
                raise  # no chunk fails on its own: not damage (e.g. a bad selection)
            raise _damaged(self.path, [problem]) from None

    def _locate_bad_chunk(self, name: str, array: Any, selection: Any) -> ChunkProblem | None:
        """The first chunk of ``selection``'s rows that fails to read on its own, or None."""
        start, stop = _selection_rows(selection, int(array.shape[0]))
        rows = int(array.chunks[0])
        for c in range(start // rows, -(-stop // rows)):
            try:
                with storage.storage_errors(self.path, "read"):
                    array[c * rows : min((c + 1) * rows, int(array.shape[0]))]
            except VisforeError:
                raise
            except Exception as exc:
                coords = (c, *([0] * (array.ndim - 1)))
                span, episodes = self.chunk_span(name, coords)
                return ChunkProblem("undecodable", name, coords, span, episodes, error_summary(exc))
        return None

    # -- reading -----------------------------------------------------------------------
    def episode_rows(self, index: int) -> slice:
        """Rows of episode ``index`` (0 <= index < E); raises VisforeError when out of range."""
        if not 0 <= index < self.num_episodes:
            raise VisforeError(f"episode {index} out of range; the dataset has {self.num_episodes} episodes")
        start = 0 if index == 0 else int(self.episode_ends[index - 1])
        return slice(start, int(self.episode_ends[index]))

    def episode(self, index: int) -> Episode:
        """Read one whole episode into memory (see :class:`Episode` for shapes).

        Raises:
            VisforeError: ``index`` out of range; the storage cannot be read (URLs).
            DatasetDamaged: a chunk of the episode cannot be decoded.
        """
        rows = self.episode_rows(index)
        get = lambda key: self.array(key)[rows]  # noqa: E731
        action_rows = slice(0, rows.stop - rows.start - 1)
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
            DatasetDamaged: a chunk cannot be decoded (the message names it and its
                episodes).
        """
        return self.array(key)[: self.num_rows]

    def size_on_disk(self) -> int:
        """Bytes the store takes: its files on local disk, or its objects (fsspec ``du``)
        on object storage."""
        return storage.size_on_disk(self.path)

    def __repr__(self) -> str:
        return (
            f"Dataset({storage.display_name(self.path)!r}, episodes={self.num_episodes}, "
            f"rows={self.num_rows}, frame_shape={self.frame_shape})"
        )


def _selection_rows(selection: Any, length: int) -> tuple[int, int]:
    """``(start, stop)`` rows along axis 0 that ``selection`` touches (all rows when it
    cannot tell)."""
    if isinstance(selection, tuple):
        return _selection_rows(selection[0], length) if selection else (0, length)
    if isinstance(selection, slice):
        start, stop, step = selection.indices(length)
        return (start, stop) if step > 0 else (stop + 1, start + 1)
    if isinstance(selection, (int, np.integer)):
        i = int(selection) + (length if int(selection) < 0 else 0)
        return i, i + 1
    try:
        index = np.asarray(selection)
    except Exception:
        return 0, length
    if index.dtype.kind in "iu" and index.size:
        index = np.where(index < 0, index + length, index)
        return int(index.min()), int(index.max()) + 1
    return 0, length


def _committed_ends(group: Any, path: Path | str | None = None) -> np.ndarray:
    """``meta/episode_ends`` cut to its committed prefix, (E,) int64.

    An interrupted commit can leave trailing entries that are not strictly increasing
    (the fill value 0 after a resize) or that point past the stored rows; those
    episodes were never committed.

    With ``path`` (the dataset's location, for messages), the commit record is checked
    first: a chunk of ``meta/episode_ends`` that is not stored would read as zeros and
    silently drop every later episode (and a resumed collection would cut their rows).

    Raises:
        DatasetDamaged: (with ``path``) a chunk of ``meta/episode_ends`` is missing or
            cannot be decoded.
    """
    array = group[ENDS_KEY]
    if path is not None:
        stored = stored_keys(group, ENDS_KEY)
        missing = [
            ChunkProblem("missing", ENDS_KEY, tuple(c), *_entries_span(array, c))
            for c in _chunk_grid(array, int(array.shape[0]))
            if _chunk_key(array, tuple(c)) not in stored
        ]
        if missing:
            raise _damaged(path, missing)
    try:
        values = array[:]
    except Exception as exc:
        if path is None or storage.is_storage_error(exc):
            raise
        rows = int(array.chunks[0])
        for c in range(-(-int(array.shape[0]) // rows)):
            try:
                array[c * rows : (c + 1) * rows]
            except Exception as chunk_exc:
                problem = ChunkProblem(
                    "undecodable", ENDS_KEY, (c,), *_entries_span(array, (c,)), error_summary(chunk_exc)
                )
                raise _damaged(path, [problem]) from None
        raise
    ends = np.asarray(values, dtype=np.int64)
    rows = min(group[f"data/{key}"].shape[0] for key in DATA_KEYS)
    previous = np.concatenate([[0], ends[:-1]])
    bad = np.flatnonzero((ends <= previous) | (ends > rows))
    return ends[: bad[0]] if len(bad) else ends


def _entries_span(array: Any, coords: tuple[int, ...]) -> tuple[tuple[int, int], tuple[int, int] | None]:
    """Entries ``(start, stop)`` of chunk ``coords`` of a per-episode array, and the
    episodes ``(first, last)`` they are."""
    rows = int(array.chunks[0])
    start, stop = coords[0] * rows, min((coords[0] + 1) * rows, int(array.shape[0]))
    return (start, stop), ((start, stop - 1) if stop > start else None)


def _metadata_text(path: Path | str, key: str) -> bytes | None:
    """The bytes of ``<key>/zarr.json`` (``zarr.json`` for key ``""``) of the dataset at
    ``path``, or None when it cannot be read."""
    rel = f"{key}/zarr.json" if key else "zarr.json"
    try:
        if isinstance(path, Path):
            return (path / rel).read_bytes()
        fs, root = storage.filesystem(path)
        return bytes(fs.cat_file(f"{root.rstrip('/')}/{rel}"))
    except Exception:
        return None


def malformed_metadata(path: Path | str, keys: Sequence[str]) -> ChunkProblem | None:
    """The first of the nodes ``keys`` whose ``zarr.json`` exists but is not valid JSON."""
    for key in keys:
        text = _metadata_text(path, key)
        if text is None:
            continue
        try:
            json.loads(text)
        except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
            return ChunkProblem("metadata", key, (), detail=str(exc).splitlines()[0])
    return None


def _metadata_error(path: Path | str, key: str, exc: BaseException) -> VisforeError:
    """One line for a node ``key`` whose metadata Zarr cannot read: the malformed
    ``zarr.json`` named (the node's own, or a parent's), else Zarr's error."""
    parents = [key.rsplit("/", i)[0] for i in range(1, key.count("/") + 1)] if key else []
    bad = malformed_metadata(path, [key, *parents, ""] if key else [""])
    name = storage.display_name(path)
    if bad is not None:
        return DatasetDamaged(f"{name}/{bad.describe()}; restore that file or collect the dataset again", [bad])
    node = f"{name}/{key}/zarr.json" if key else f"{name}/zarr.json"
    return VisforeError(f"cannot read {node}: {error_summary(exc)}")


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
        bad = malformed_metadata(path, [""])
        if bad is not None:
            raise _metadata_error(path, "", exc) from None
        raise VisforeError(f"{storage.display_name(path)} is not a Zarr group ({type(exc).__name__})") from None
    name = storage.display_name(path)
    if group.attrs.get("format") != FORMAT_NAME:
        raise VisforeError(f"{name} is not a visfore dataset (attrs['format'] != {FORMAT_NAME!r})")
    version = group.attrs.get("format_version")
    if version != FORMAT_VERSION:
        raise VisforeError(f"{name} has dataset format version {version}; this visfore reads {FORMAT_VERSION}")
    missing = []
    for key in [*(f"data/{k}" for k in DATA_KEYS), ENDS_KEY, CHECKSUMS_KEY]:
        try:
            group[key]
        except KeyError:
            if key != CHECKSUMS_KEY:  # optional: datasets collected before checksums
                missing.append(key)
        except Exception as exc:  # a malformed zarr.json: name the file
            if remote and storage.is_storage_error(exc):
                raise
            raise _metadata_error(path, key, exc) from None
    if missing:
        raise VisforeError(f"{name} is missing arrays: {', '.join(m.split('/', 1)[1] for m in missing)}")
    return group


def open_dataset(path: str | os.PathLike[str], *, check_chunks: bool = True) -> Dataset:
    """Open a visfore dataset for reading.

    Args:
        path: a local path, a ``file://`` URL, or an fsspec URL (``s3://bucket/x.zarr``;
            see :mod:`visfore.data.storage`).
        check_chunks: refuse a dataset that misses a chunk of its committed rows
            (:meth:`Dataset.check_chunks`: one listing of the store, nothing decoded).
            ``dataset info`` and ``dataset verify`` pass False to report the damage
            themselves.

    Raises:
        VisforeError: the path does not exist, is not a Zarr group, or is not a visfore
            dataset of a format version this package reads; for URLs also: the
            filesystem package is missing, the bucket does not exist, the endpoint cannot
            be reached or the credentials are missing or refused.
        DatasetDamaged: (a VisforeError) a ``zarr.json`` is malformed (the message names
            the file), a chunk of ``meta/episode_ends`` is missing or undecodable, or
            (``check_chunks``) a chunk of committed rows is missing (the message names
            the array, chunk and episodes and suggests ``visfore dataset verify``).
    """
    location = storage.normalize(path)
    with storage.storage_errors(location, "open"):
        dataset = Dataset(location, _open_group(location, mode="r"))
        if check_chunks:
            dataset.check_chunks()
        return dataset


def _create_checksums(group: Any) -> Any:
    """Create ``meta/episode_checksums`` ((E, len(DATA_KEYS), 32) uint8, E = the committed
    episodes, all-zero rows = none recorded) in ``group``, its attributes describing the
    digest; returns the array."""
    episodes = len(_committed_ends(group))
    array = group.create_array(
        CHECKSUMS_KEY,
        shape=(episodes, len(DATA_KEYS), DIGEST_SIZE),
        chunks=(_CHECKSUM_CHUNK_EPISODES, len(DATA_KEYS), DIGEST_SIZE),
        dtype="uint8",
        compressors=_zstd(),  # digests do not compress, but the chunk's unused rows (zeros) do
        chunk_key_encoding={"name": "default", "separator": "."},
        attributes={
            "algorithm": CHECKSUM_ALGORITHM,
            "arrays": [f"data/{k}" for k in DATA_KEYS],
            "covers": "each episode's T + 1 rows of each array, padding row included, raw "
            "little-endian bytes in C order; an all-zero row means no checksum recorded",
        },
    )
    if episodes:  # store every chunk of the existing episodes (zeros: none recorded)
        _write_all_chunks(array)[:] = np.zeros(array.shape, np.uint8)
    return array


class DatasetWriter:
    """Append whole episodes to a visfore dataset; safe against interruption.

    Create a new dataset with :meth:`create` or continue one with :meth:`open`.
    :meth:`append_episode` buffers an episode (and computes its checksums,
    :func:`episode_digests`); :meth:`flush` writes the buffered rows and their checksums,
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
        self._ends = group[ENDS_KEY]
        self._sums = _write_all_chunks(group[CHECKSUMS_KEY]) if CHECKSUMS_KEY in group else None
        ends = _committed_ends(group, path)
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
            ENDS_KEY,
            shape=(0,),
            chunks=(_SMALL_CHUNK_ROWS,),
            dtype="int64",
            compressors=codec,
        )
        _create_checksums(group)
        # One metadata write (attrs.update writes zarr.json once per key).
        group.update_attributes({**dict(attrs), "format": FORMAT_NAME, "format_version": FORMAT_VERSION})
        return cls(path, group)

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> DatasetWriter:
        """Reopen a dataset to append more episodes.

        Rows of an episode that was being written when an earlier run stopped (past the
        last committed ``episode_ends``) are cut off. A dataset collected before
        checksums gets ``meta/episode_checksums`` here, with all-zero rows ("none
        recorded") for its existing episodes; episodes appended from now on get theirs.

        Raises:
            VisforeError: as :func:`open_dataset` (a missing chunk included: nothing is
                changed then).
        """
        path = storage.normalize(path)
        with storage.storage_errors(path, "open"):
            group = _open_group(path, mode="r+")
            Dataset(path, group).check_chunks()
            writer = cls(path, group)
            for array in writer._arrays.values():
                if array.shape[0] != writer._num_rows:
                    array.resize((writer._num_rows, *array.shape[1:]))
            if writer._ends.shape[0] != writer._num_episodes:
                writer._ends.resize((writer._num_episodes,))
            if writer._sums is None:
                writer._sums = _write_all_chunks(_create_checksums(group))
            have = int(writer._sums.shape[0])
            if have != writer._num_episodes:
                writer._sums.resize((writer._num_episodes, *writer._sums.shape[1:]))
                if have < writer._num_episodes:  # episodes written without checksums
                    writer._sums[have:] = np.zeros((writer._num_episodes - have, *writer._sums.shape[1:]), np.uint8)
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
        # The episode's checksums travel with its rows (a replayed buffer rewrites both).
        self._buffer.append({**values, _DIGESTS: episode_digests(values)})
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
        first, last = self._num_episodes, self._num_episodes + len(self._buffer)
        if self._sums is not None:  # before the commit: a committed episode has its checksums
            self._sums.resize((last, *self._sums.shape[1:]))
            self._sums[first:last] = np.stack([episode[_DIGESTS] for episode in self._buffer])
        # Commit last: a crash before these lines leaves rows that open() cuts off; a
        # crash between the resize and the write leaves zero entries that
        # _committed_ends() ignores.
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
