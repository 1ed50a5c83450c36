"""``visfore dataset info PATH``: summary of a visfore dataset (rich table or JSON).

``PATH`` is a local directory or an fsspec URL (``s3://bucket/name.zarr``; see
:mod:`visfore.data.storage`); "size on disk" is then the total size of the dataset's objects.

A damaged dataset is still summarised: the chunks that are not stored are listed (one
listing of the store, nothing decoded) under ``integrity`` and the table says
"damaged", pointing to ``visfore dataset verify`` (:mod:`visfore.data.verify`), which also
decodes every chunk and checks the checksums.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import numpy as np
from rich.markup import escape
from rich.table import Table

from visfore.core.console import stdout_console
from visfore.data.dataset import (
    CHECKSUMS_KEY,
    DATA_KEYS,
    ChunkProblem,
    Dataset,
    DatasetArray,
    DatasetDamaged,
    open_dataset,
)
from visfore.data.storage import display_name


def _array_info(array: Any, rows: int) -> dict[str, Any]:
    shape = (rows, *array.shape[1:])
    compressors = [type(c).__name__.replace("Codec", "").lower() for c in array.compressors]
    return {
        "shape": list(shape),
        "dtype": str(array.dtype),
        "chunks": list(array.chunks),
        "compressors": compressors,
        "nbytes": int(np.prod(shape, dtype=np.int64)) * np.dtype(str(array.dtype)).itemsize,
    }


def episode_returns(rewards: np.ndarray, episode_ends: np.ndarray) -> np.ndarray:
    """(E,) float64 sum of rewards per episode, skipping the NaN padding rows.

    Args:
        rewards: (N,) per-row rewards (the last row of each episode is NaN).
        episode_ends: (E,) int64 exclusive end row of each episode.
    """
    if len(episode_ends) == 0:
        return np.zeros(0)
    starts = np.concatenate([[0], episode_ends[:-1]]).astype(np.int64)
    filled = np.nan_to_num(rewards.astype(np.float64), nan=0.0)
    return np.add.reduceat(filled, starts) if len(filled) else np.zeros(len(episode_ends))


def _checksums_info(ds: Dataset) -> dict[str, Any] | None:
    """``{"algorithm", "episodes"}`` (episodes with a recorded checksum), None without
    ``meta/episode_checksums``; ``episodes`` is None when the array cannot be read."""
    if not ds.has_checksums:
        return None
    array = ds.group[CHECKSUMS_KEY]
    n = ds.committed_length(CHECKSUMS_KEY)
    try:
        rows = DatasetArray(ds, CHECKSUMS_KEY, array)[:n]
        recorded: int | None = int(np.asarray(rows).reshape(n, -1).any(axis=1).sum()) if n else 0
    except DatasetDamaged:
        recorded = None
    return {"algorithm": array.attrs.get("algorithm", "sha256"), "episodes": recorded}


def dataset_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Summarise the dataset at ``path`` (a local path or an fsspec URL).

    Returns:
        JSON-serialisable dict: ``path``, ``episodes``, ``episodes_requested``, ``rows``
        (frames), ``steps_per_episode`` {min, mean, max} (actions, T), ``arrays``
        {key: {shape, dtype, chunks, compressors, nbytes}}, ``uncompressed_bytes``,
        ``size_on_disk`` (bytes of its files, or of its objects on object storage),
        ``compression_ratio`` (uncompressed / on disk),
        ``mean_episode_return`` and ``std_episode_return`` (NaN padding rows skipped;
        None without episodes, or when the rewards are damaged), ``env_id``,
        ``env_kwargs``, ``obs_mode``, ``reward_mode``, ``policy``, ``seed``, ``created``,
        ``versions``, ``command``; ``damaged`` (bool), ``integrity`` {``chunks``
        (stored chunks expected), ``problems`` (one line each: missing chunks, an
        undecodable reward chunk), ``decoded``: False (run ``visfore dataset verify``)};
        ``checksums`` ({``algorithm``, ``episodes`` with one recorded}, or None for a
        dataset collected before checksums).

    Raises:
        VisforeError: the path is missing or not a visfore dataset, a ``zarr.json`` is
            malformed or the episode boundaries are damaged, or (URLs) the storage cannot
            be reached (see :func:`visfore.data.dataset.open_dataset`).
    """
    ds = open_dataset(path, check_chunks=False)
    problems: list[ChunkProblem] = ds.missing_chunks()
    rows = ds.num_rows
    arrays = {key: _array_info(ds.array(key), rows) for key in DATA_KEYS}
    arrays["episode_ends"] = _array_info(ds.group["meta/episode_ends"], ds.num_episodes)
    if ds.has_checksums:
        arrays["episode_checksums"] = _array_info(ds.group[CHECKSUMS_KEY], ds.committed_length(CHECKSUMS_KEY))
    uncompressed = sum(a["nbytes"] for a in arrays.values())
    on_disk = ds.size_on_disk()
    steps = ds.episode_lengths - 1
    returns: np.ndarray = np.zeros(0)
    if not any(p.array == "data/reward" for p in problems):  # a missing chunk reads as NaN
        try:
            returns = episode_returns(ds.read("reward"), ds.episode_ends)
        except DatasetDamaged as exc:
            problems += exc.problems
    attrs = ds.attrs

    def stat(values: np.ndarray, fn: Any) -> float | None:
        return float(fn(values)) if len(values) else None

    return {
        "path": display_name(path),
        "episodes": ds.num_episodes,
        "episodes_requested": attrs.get("episodes_requested"),
        "rows": rows,
        "steps_per_episode": {
            "min": stat(steps, np.min),
            "mean": stat(steps, np.mean),
            "max": stat(steps, np.max),
        },
        "frame_shape": list(ds.frame_shape),
        "arrays": arrays,
        "uncompressed_bytes": uncompressed,
        "size_on_disk": on_disk,
        "compression_ratio": uncompressed / on_disk if on_disk else None,
        "mean_episode_return": stat(returns, np.mean),
        "std_episode_return": stat(returns, np.std),
        "env_id": attrs.get("env_id"),
        "env_kwargs": attrs.get("env_kwargs"),
        "obs_mode": attrs.get("obs_mode"),
        "reward_mode": attrs.get("reward_mode"),
        "policy": attrs.get("policy"),
        "seed": attrs.get("seed"),
        "created": attrs.get("created"),
        "versions": attrs.get("versions"),
        "command": attrs.get("command"),
        "format": f"{attrs.get('format')} v{attrs.get('format_version')}",
        "damaged": bool(problems),
        "integrity": {
            "chunks": ds.chunk_count(),
            "problems": [p.describe() for p in problems],
            "decoded": False,
        },
        "checksums": _checksums_info(ds),
    }


def _bytes(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _num(x: float | None, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.{digits}f}"


def render_info(info: dict[str, Any]) -> None:
    table = Table(title=f"visfore dataset {info['path']}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    steps = info["steps_per_episode"]
    requested = info["episodes_requested"]
    table.add_row("episodes", f"{info['episodes']}" + (f" (requested {requested})" if requested else ""))
    table.add_row("frames (rows)", str(info["rows"]))
    table.add_row(
        "steps per episode",
        f"min {_num(steps['min'], 0)} / mean {_num(steps['mean'], 1)} / max {_num(steps['max'], 0)}",
    )
    for key, arr in info["arrays"].items():
        table.add_row(
            key,
            f"{tuple(arr['shape'])} {arr['dtype']}  chunks {tuple(arr['chunks'])}  "
            f"{'+'.join(arr['compressors']) or 'uncompressed'}",
        )
    table.add_row("size on disk", _bytes(info["size_on_disk"]))
    table.add_row("uncompressed", _bytes(info["uncompressed_bytes"]))
    table.add_row("compression ratio", _num(info["compression_ratio"]) + "x")
    table.add_row("mean episode return", _num(info["mean_episode_return"], 3))
    table.add_row("env", f"{info['env_id']}  {json.dumps(info['env_kwargs'])}")
    table.add_row("obs / reward mode", f"{info['obs_mode']} / {info['reward_mode']}")
    table.add_row("policy", json.dumps(info["policy"]))
    table.add_row("seed", str(info["seed"]))
    table.add_row("created", str(info["created"]))
    versions = info["versions"] or {}
    table.add_row("versions", ", ".join(f"{k} {v}" for k, v in versions.items()))
    table.add_row("format", info["format"])
    checksums = info.get("checksums")
    table.add_row(
        "checksums",
        "none (collected before visfore recorded them)"
        if checksums is None
        else f"{checksums['algorithm']} per episode and array, "
        + (
            "unreadable" if checksums["episodes"] is None else f"{checksums['episodes']} of {info['episodes']} episodes"
        ),
    )
    integrity = info.get("integrity") or {}
    problems = integrity.get("problems") or []
    verify = f"visfore dataset verify {info['path']}"
    if problems:
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        table.add_row("integrity", f"[bold red]DAMAGED[/]: {escape(problems[0])}{more}; run {escape(verify)}")
    else:
        table.add_row(
            "integrity",
            f"all {integrity.get('chunks', 0):,} chunks stored (not decoded: {escape(verify)} "
            "decodes them and checks the checksums)",
        )
    stdout_console().print(table)
