"""``visfore dataset verify PATH``: is every chunk of a dataset there, readable and unchanged?

Zarr reads a chunk that is not stored as the array's fill value, so a deleted pixel chunk
silently becomes an episode of black frames; a truncated chunk fails deep inside the
codec. :func:`verify_dataset` checks, for the dataset at a local path or an fsspec URL
(``s3://``, ``memory://`` ...; :mod:`visfore.data.storage`):

1. every ``zarr.json`` of the group parses as JSON;
2. every chunk of every array (``data/*``, ``meta/episode_ends``,
   ``meta/episode_checksums``) that holds committed rows is stored: one listing of the
   store through Zarr's ``Store.list_prefix``, compared with the chunk keys of the array's
   grid (``ArrayV3Metadata.encode_chunk_key``);
3. every such chunk decodes, read chunk by chunk in row order (memory: one chunk per
   array at a time, whatever the dataset's size);
4. every episode's rows of every data array hash to the sha256 digest recorded when it
   was collected (``meta/episode_checksums``, see :mod:`visfore.data.dataset`). Datasets
   collected before checksums verify on chunks alone, and the summary says so.

Each problem is a :class:`~visfore.data.dataset.ChunkProblem` naming the array, the
chunk and the episodes it holds. :func:`verify_tail` runs steps 2-4 on the last episode
only: ``collect`` calls it before it appends to an existing dataset.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from visfore.core.errors import VisforeError
from visfore.core.progress import progress_bar
from visfore.data import storage
from visfore.data.dataset import (
    CHECKSUMS_KEY,
    DATA_KEYS,
    ChunkProblem,
    Dataset,
    DatasetDamaged,
    episode_digests,
    error_summary,
    malformed_metadata,
    open_dataset,
    stored_keys,
)

__all__ = ["VerifyReport", "verify_dataset", "verify_tail"]


@dataclass
class VerifyReport:
    """What :func:`verify_dataset` found.

    Attributes:
        path: the dataset's location, for messages.
        episodes: committed episodes (None when the dataset cannot be opened: a malformed
            ``zarr.json`` or damaged episode boundaries; nothing else was checked).
        arrays: arrays checked.
        chunks: chunks of committed rows over those arrays.
        has_checksums: the dataset has ``meta/episode_checksums``.
        checksums_matched: episodes whose every array matched its recorded digest.
        checksums_absent: episodes with no digest recorded.
        problems: every problem, in the order found (metadata, missing chunks, then in row
            order undecodable chunks and checksum mismatches).
    """

    path: str
    episodes: int | None = None
    arrays: int = 0
    chunks: int = 0
    has_checksums: bool = False
    checksums_matched: int = 0
    checksums_absent: int = 0
    problems: list[ChunkProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No problem found."""
        return not self.problems

    def damaged_episodes(self) -> list[int]:
        """Sorted episodes named by any problem."""
        found: set[int] = set()
        for p in self.problems:
            if p.episodes is not None:
                found.update(range(p.episodes[0], p.episodes[1] + 1))
        return sorted(found)

    def _checksum_text(self) -> str:
        if not self.has_checksums:
            return "no checksums (collected before visfore recorded them): chunks checked only"
        if self.episodes is None:
            return "checksums not checked"
        if self.checksums_absent == 0 and self.checksums_matched == self.episodes:
            return "checksums match"
        differ = len({p.episodes for p in self.problems if p.kind == "checksum"})
        unchecked = self.episodes - self.checksums_matched - self.checksums_absent - differ
        notes = [
            f"{differ:,} differ" if differ else "",
            f"{unchecked:,} not checked: damaged chunks" if unchecked > 0 else "",
            f"{self.checksums_absent:,} have none recorded" if self.checksums_absent else "",
        ]
        text = f"checksums match for {self.checksums_matched:,} of {self.episodes:,} episodes"
        notes = [n for n in notes if n]
        return text + (f" ({'; '.join(notes)})" if notes else "")

    def summary_line(self) -> str:
        """One line: ``ok: 240 episodes, 8 arrays, 1,234 chunks, checksums match`` or
        ``damaged: 2 problems (...) ...; damaged episodes: 1, 7``."""
        if self.episodes is None:
            return f"damaged: {_problem_counts(self.problems)}; the dataset cannot be opened, nothing else was checked"
        body = f"{self.episodes:,} episodes, {self.arrays} arrays, {self.chunks:,} chunks, {self._checksum_text()}"
        if self.ok:
            return f"ok: {body}"
        episodes = self.damaged_episodes()
        shown = ", ".join(str(e) for e in episodes[:10]) + (
            f" and {len(episodes) - 10} more" if len(episodes) > 10 else ""
        )
        return f"damaged: {_problem_counts(self.problems)} in {body}" + (
            f"; damaged episodes: {shown}" if episodes else ""
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form: the attributes, ``ok``, ``summary`` and ``problems`` as
        dicts (:meth:`~visfore.data.dataset.ChunkProblem.to_dict`)."""
        return {
            "path": self.path,
            "ok": self.ok,
            "episodes": self.episodes,
            "arrays": self.arrays,
            "chunks": self.chunks,
            "has_checksums": self.has_checksums,
            "checksums_matched": self.checksums_matched,
            "checksums_absent": self.checksums_absent,
            "damaged_episodes": self.damaged_episodes(),
            "problems": [p.to_dict() for p in self.problems],
            "summary": self.summary_line(),
        }


def _problem_counts(problems: list[ChunkProblem]) -> str:
    names = {
        "metadata": ("malformed zarr.json", "malformed zarr.json files"),
        "missing": ("missing chunk", "missing chunks"),
        "undecodable": ("undecodable chunk", "undecodable chunks"),
        "checksum": ("checksum mismatch", "checksum mismatches"),
    }
    parts = []
    for kind, (one, many) in names.items():
        n = sum(p.kind == kind for p in problems)
        if n:
            parts.append(f"{n} {one if n == 1 else many}")
    total = len(problems)
    return f"{total} problem{'s' if total != 1 else ''} ({', '.join(parts)})"


class _ChunkCursor:
    """Rows of one array, decoded one chunk (row band) at a time, each band once while
    the rows asked for move forward; a band that is missing or fails to decode gives
    None and is reported once."""

    def __init__(self, dataset: Dataset, name: str, bad: set[tuple[str, int]], problems: list[ChunkProblem]) -> None:
        self.dataset, self.name = dataset, name
        self.array = dataset.group[name]
        self.band = int(self.array.chunks[0])
        self.bad, self.problems = bad, problems
        self.current = -1
        self.data: np.ndarray | None = None
        self.decoded = 0

    def _load(self, c: int) -> np.ndarray | None:
        if c != self.current:
            self.current, self.data = c, None
            if (self.name, c) not in self.bad:
                try:
                    with storage.storage_errors(self.dataset.path, "read"):
                        self.data = self.array[c * self.band : min((c + 1) * self.band, int(self.array.shape[0]))]
                    self.decoded += 1
                except VisforeError:
                    raise  # the storage cannot be reached: nothing more can be checked
                except Exception as exc:
                    coords = (c, *([0] * (self.array.ndim - 1)))
                    rows, episodes = self.dataset.chunk_span(self.name, coords)
                    self.problems.append(
                        ChunkProblem("undecodable", self.name, coords, rows, episodes, error_summary(exc))
                    )
                    self.bad.add((self.name, c))
        return self.data

    def rows(self, start: int, stop: int) -> np.ndarray | None:
        """Rows ``[start, stop)`` (start >= every earlier call's start), or None when a
        chunk holding them is damaged."""
        pieces = [self._load(c) for c in range(start // self.band, (stop - 1) // self.band + 1)]
        if any(p is None for p in pieces):
            return None
        first = (start // self.band) * self.band
        block = pieces[0] if len(pieces) == 1 else np.concatenate(pieces)  # type: ignore[arg-type]
        assert block is not None
        return block[start - first : stop - first]


def _check_episodes(
    dataset: Dataset,
    episodes: Iterable[int],
    bad: set[tuple[str, int]],
    problems: list[ChunkProblem],
    report: VerifyReport | None = None,
    advance: Any = None,
) -> None:
    """Decode every chunk holding ``episodes``' rows (ascending) and compare each
    episode's digests with the recorded ones; append problems."""
    names = [f"data/{k}" for k in DATA_KEYS]
    cursors = {n: _ChunkCursor(dataset, n, bad, problems) for n in names}
    sums = _ChunkCursor(dataset, CHECKSUMS_KEY, bad, problems) if dataset.has_checksums else None
    with_sums = dataset.committed_length(CHECKSUMS_KEY) if sums is not None else 0
    for e in episodes:
        rows = dataset.episode_rows(e)
        values = {key: cursors[n].rows(rows.start, rows.stop) for key, n in zip(DATA_KEYS, names)}
        recorded, sums_damaged = None, False
        if sums is not None and e < with_sums:
            row = sums.rows(e, e + 1)
            sums_damaged = row is None  # reported as a damaged chunk of the checksums
            recorded = row if row is not None and row.any() else None  # all zero: none recorded
        if recorded is None:
            if report is not None and not sums_damaged:
                report.checksums_absent += 1
        elif all(v is not None for v in values.values()):
            digests = episode_digests(values)  # type: ignore[arg-type]
            differ = [k for k in range(len(DATA_KEYS)) if not np.array_equal(digests[k], recorded[0, k])]
            for k in differ:
                array = cursors[names[k]].array
                coords = (rows.start // cursors[names[k]].band, *([0] * (array.ndim - 1)))
                problems.append(ChunkProblem("checksum", names[k], coords, (rows.start, rows.stop), (e, e)))
            if not differ and report is not None:
                report.checksums_matched += 1
        if advance is not None:
            advance()


def verify_dataset(path: str | os.PathLike[str], *, progress: bool = False) -> VerifyReport:
    """Check every chunk and checksum of the dataset at ``path`` (see the module docstring).

    Args:
        path: a local path or an fsspec URL.
        progress: show a progress bar (episodes) on stderr.

    Returns:
        The :class:`VerifyReport`; damage is reported in it, not raised.

    Raises:
        VisforeError: the path does not exist or is not a visfore dataset; the storage of a
            URL cannot be reached or listed.
    """
    location = storage.normalize(path)
    report = VerifyReport(path=storage.display_name(location))
    try:
        dataset = open_dataset(location, check_chunks=False)
    except DatasetDamaged as exc:  # malformed zarr.json, unreadable episode boundaries
        if not exc.problems:
            raise
        report.problems.extend(exc.problems)
        return report
    names = dataset.array_names()
    report.episodes, report.arrays = dataset.num_episodes, len(names)
    report.has_checksums = dataset.has_checksums
    report.chunks = dataset.chunk_count()
    with storage.storage_errors(location, "list"):
        stored = stored_keys(dataset.group)
    nodes = sorted({k.rsplit("/", 1)[0] if "/" in k else "" for k in stored if k.endswith("zarr.json")})
    for node in nodes:
        bad_node = malformed_metadata(location, [node])
        if bad_node is not None:
            report.problems.append(bad_node)
    missing = dataset.missing_chunks(stored)
    report.problems.extend(missing)
    bad = {(p.array, p.chunk[0]) for p in missing}
    bar = progress_bar(enabled=progress, unit="episodes")
    with bar:
        task = bar.add_task(f"verify {report.path}", total=dataset.num_episodes)
        _check_episodes(
            dataset,
            range(dataset.num_episodes),
            bad,
            report.problems,
            report,
            advance=lambda: bar.advance(task),
        )
    return report


def verify_tail(dataset: Dataset, episodes: int = 1, *, check_chunks: bool = True) -> None:
    """Check the last ``episodes`` episodes of ``dataset`` before more are appended: the
    chunks holding their rows (which include every array's last chunk, the one the next
    write rewrites) are stored and decode, and their checksums match.

    Args:
        dataset: the dataset to continue.
        episodes: how many of its last episodes to check (>= 1).
        check_chunks: also check that every chunk of the dataset is stored (one listing
            of the store); False when :func:`~visfore.data.dataset.open_dataset` just did.

    Raises:
        DatasetDamaged: one line naming the first problem (array, chunk, episodes) and
            suggesting ``visfore dataset verify``; nothing is written.
        VisforeError: the storage of a URL cannot be reached.
    """
    total = dataset.num_episodes
    if total == 0:
        return
    missing = dataset.missing_chunks() if check_chunks else []
    problems = list(missing)
    bad = {(p.array, p.chunk[0]) for p in missing}
    _check_episodes(dataset, range(max(0, total - episodes), total), bad, problems)
    if problems:
        name = storage.display_name(dataset.path)
        raise DatasetDamaged(
            f"{name} is damaged, so the collection cannot continue it: {problems[0].describe()}"
            + (f" ({len(problems)} problems in all)" if len(problems) > 1 else "")
            + f"; nothing was written; run `visfore dataset verify {name}` for a full report",
            problems,
        )
