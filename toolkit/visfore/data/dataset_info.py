"""``visfore dataset info PATH``: summary of a visfore dataset (rich table or JSON).

``PATH`` is a local directory or an fsspec URL (``s3://bucket/name.zarr``; see
:mod:`visfore.data.storage`); "size on disk" is then the total size of the dataset's objects.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import numpy as np
from rich.table import Table

from visfore.core.console import stdout_console
from visfore.data.dataset import DATA_KEYS, open_dataset
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


def dataset_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Summarise the dataset at ``path`` (a local path or an fsspec URL).

    Returns:
        JSON-serialisable dict: ``path``, ``episodes``, ``episodes_requested``, ``rows``
        (frames), ``steps_per_episode`` {min, mean, max} (actions, T), ``arrays``
        {key: {shape, dtype, chunks, compressors, nbytes}}, ``uncompressed_bytes``,
        ``size_on_disk`` (bytes of its files, or of its objects on object storage),
        ``compression_ratio`` (uncompressed / on disk),
        ``mean_episode_return`` and ``std_episode_return`` (NaN padding rows skipped;
        None without episodes), ``env_id``, ``env_kwargs``, ``obs_mode``, ``reward_mode``,
        ``policy``, ``seed``, ``created``, ``versions``, ``command``.

    Raises:
        VisforeError: the path is missing or not a visfore dataset, or (URLs) the storage
            cannot be reached (see :func:`visfore.data.dataset.open_dataset`).
    """
    ds = open_dataset(path)
    rows = ds.num_rows
    arrays = {key: _array_info(ds.array(key), rows) for key in DATA_KEYS}
    arrays["episode_ends"] = _array_info(ds.group["meta/episode_ends"], ds.num_episodes)
    uncompressed = sum(a["nbytes"] for a in arrays.values())
    on_disk = ds.size_on_disk()
    steps = ds.episode_lengths - 1
    returns = episode_returns(ds.read("reward"), ds.episode_ends)
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
    stdout_console().print(table)
