"""Robustness reports of ``visfore evaluate``: summary statistics and the report files.

Input: the evaluated cells (plain dicts, see :meth:`visfore.rl.evaluate.Cell.row`) and one
record per episode (see :data:`EPISODE_FIELDS`). Output, in a report directory::

    REPORT_DIR/
      episodes.csv, episodes.json   one row per episode (raw results)
      summary.csv, summary.json     one row per cell (statistics of the return; success
                                    and final distance for goal-reaching envs)
      report.md                     Markdown: run, env, budget, tables, most damaging cell
      report.html                   the same, self-contained (inline CSS, PNGs as data URIs)
      plots/return_vs_scale_<param>.png   mean return vs scale per parameter (sweeps, grids)
      plots/heatmap.png             normalised mean return, parameters x scales (or A x B)
      plots/return_by_cell.png      fixed evaluations: nominal vs perturbed

Statistics of a cell (:func:`cell_statistics`), over all its episodes (every seed):
``n``, ``mean``, ``median``, ``std`` (population standard deviation, ``ddof=0``), ``min``
and ``max`` of the undiscounted episode return; ``normalized_mean`` = mean / nominal mean
and ``normalized_min`` = min / nominal mean (the worst case as a fraction of the nominal
mean return; both None when the nominal cell is missing or its mean return is <= 0, where
a ratio means nothing); ``mean_length`` (steps); ``terminated_fraction``; ``seed_means``
(seed -> mean return over that seed's episodes) and their ``seed_mean_min`` /
``seed_mean_max``, the band drawn in the plots.

Goal-reaching envs (:func:`goal_statistics`): when the episodes carry ``success`` (the
last step's ``info["is_success"]``) and/or ``final_distance`` (its ``info["distance"]``,
metres), every cell also gets ``successes``, ``success_rate`` and its Wilson 95% interval
``success_ci_low`` / ``success_ci_high`` (:func:`wilson_interval`), and
``final_distance_mean`` / ``_std`` (ddof=0) / ``_median``; these columns appear in
``episodes.csv``, ``summary.csv``, the JSON files and the report tables only then.

Every file is written atomically (:mod:`visfore.core.runs`); matplotlib is switched to
the Agg backend when plots are drawn.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import re
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from matplotlib.colors import TwoSlopeNorm

from visfore.core import runs
from visfore.reports.report_html import BASE_CSS, fmt, jsonable, read_csv  # noqa: F401  (moved; public here too)
from visfore.reports.report_html import csv_value as _csv_value  # noqa: F401  (moved here; old name kept)
from visfore.reports.report_html import md_table as _md_table
from visfore.reports.report_html import pyplot as _pyplot
from visfore.reports.report_html import save_figure as _save
from visfore.reports.report_html import write_csv as _write_csv

#: Columns of ``episodes.csv`` before the ``body_mass.<body>`` columns (kg).
EPISODE_FIELDS = (
    "cell", "kind", "param", "scale", "param2", "scale2", "perturbation", "seed",
    "episode", "reset_seed", "return", "length", "terminated", "truncated",
    "applied_perturbation",
)  # fmt: skip
#: Columns of ``summary.csv`` (``seed_means`` is a JSON object ``{"seed": mean}``).
SUMMARY_FIELDS = (
    "cell", "kind", "param", "scale", "param2", "scale2", "perturbation", "n", "mean",
    "median", "std", "min", "max", "normalized_mean", "normalized_min", "mean_length",
    "terminated_fraction", "seed_mean_min", "seed_mean_max", "seed_means",
)  # fmt: skip
#: Optional episode columns of goal-reaching envs (after :data:`EPISODE_FIELDS`, only when
#: some episode has them): ``success`` (bool, the last step's ``info["is_success"]``) and
#: ``final_distance`` (metres, the last step's ``info["distance"]``).
GOAL_EPISODE_FIELDS = ("success", "final_distance")
#: Summary columns added when the episodes have ``success``.
SUCCESS_FIELDS = ("successes", "success_rate", "success_ci_low", "success_ci_high")
#: Summary columns added when the episodes have ``final_distance`` (metres).
DISTANCE_FIELDS = ("final_distance_mean", "final_distance_std", "final_distance_median")
#: The 0.975 quantile of the standard normal distribution (two-sided 95% intervals).
Z_95 = 1.959963984540054
#: Cell-identifying fields copied from the cell rows into episodes and summary rows.
CELL_FIELDS = ("cell", "kind", "param", "scale", "param2", "scale2", "perturbation")
PLOTS_DIR = "plots"


# -- statistics ------------------------------------------------------------------------
def cell_statistics(
    returns: Sequence[float],
    lengths: Sequence[int],
    seeds: Sequence[int],
    terminated: Sequence[bool] | None = None,
) -> dict[str, Any]:
    """Statistics of one cell's episodes.

    Args:
        returns: (n,) undiscounted episode returns.
        lengths: (n,) episode lengths in steps.
        seeds: (n,) the evaluation seed of each episode.
        terminated: (n,) whether each episode ended by termination (not the time limit).

    Returns:
        ``n``, ``mean``, ``median``, ``std`` (ddof=0), ``min``, ``max``, ``mean_length``,
        ``terminated_fraction``, ``seed_means`` {seed (int): mean return}, ``seed_mean_min``,
        ``seed_mean_max``; NaN for every statistic when n = 0.
    """
    r = np.asarray(returns, dtype=np.float64)
    n = int(r.size)
    nan = float("nan")
    if n == 0:
        return dict(
            n=0, mean=nan, median=nan, std=nan, min=nan, max=nan, mean_length=nan,
            terminated_fraction=nan, seed_means={}, seed_mean_min=nan, seed_mean_max=nan,
        )  # fmt: skip
    s = np.asarray(seeds)
    seed_means = {int(seed): float(r[s == seed].mean()) for seed in dict.fromkeys(s.tolist())}
    means = np.array(list(seed_means.values()))
    term = np.asarray(terminated if terminated is not None else np.zeros(n), dtype=bool)
    return {
        "n": n,
        "mean": float(r.mean()),
        "median": float(np.median(r)),
        "std": float(r.std()),
        "min": float(r.min()),
        "max": float(r.max()),
        "mean_length": float(np.mean(np.asarray(lengths, dtype=np.float64))),
        "terminated_fraction": float(term.mean()),
        "seed_means": seed_means,
        "seed_mean_min": float(means.min()),
        "seed_mean_max": float(means.max()),
    }


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (95% for the default ``z``).

    E. B. Wilson (1927), "Probable inference, the law of succession, and statistical
    inference", Journal of the American Statistical Association 22(158), 209-212. With
    p = successes / n::

        centre = (p + z^2 / 2n) / (1 + z^2 / n)
        half   = z / (1 + z^2 / n) * sqrt(p (1 - p) / n + z^2 / 4n^2)

    Unlike the normal (Wald) interval it stays inside [0, 1] and is not empty at 0 or n
    successes: 0 of 10 gives (0, 0.278), 5 of 10 (0.237, 0.763), 10 of 10 (0.722, 1).

    Args:
        successes: number of successes, 0 <= successes <= n.
        n: number of trials (>= 1).
        z: the standard normal quantile of the confidence level.

    Returns:
        (low, high), within [0, 1]; exactly 0 at 0 successes and 1 at n.

    Raises:
        ValueError: n < 1 or successes outside [0, n].
    """
    if n < 1 or not 0 <= successes <= n:
        raise ValueError(f"wilson_interval needs 0 <= successes <= n and n >= 1, got {successes} of {n}")
    p = successes / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1.0 - p) / n + z2 / (4 * n * n))
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


def goal_statistics(
    successes: Sequence[bool] | None = None, distances: Sequence[float] | None = None
) -> dict[str, Any]:
    """Success and final-distance statistics of one cell's episodes.

    Args:
        successes: (n,) whether each episode's last step was a success; None: no
            success fields.
        distances: (m,) each episode's final distance (metres); None: no distance fields.

    Returns:
        With ``successes``: :data:`SUCCESS_FIELDS` (``successes`` the count,
        ``success_rate`` the fraction, the Wilson 95% interval); with ``distances``:
        :data:`DISTANCE_FIELDS` (population std, ddof=0). NaN statistics for no episodes.
    """
    out: dict[str, Any] = {}
    nan = float("nan")
    if successes is not None:
        k, n = int(sum(bool(s) for s in successes)), len(successes)
        low, high = wilson_interval(k, n) if n else (nan, nan)
        out.update(successes=k, success_rate=k / n if n else nan, success_ci_low=low, success_ci_high=high)
    if distances is not None:
        d = np.asarray(distances, dtype=np.float64)
        if d.size:
            out.update(final_distance_mean=float(d.mean()), final_distance_std=float(d.std()),
                       final_distance_median=float(np.median(d)))  # fmt: skip
        else:
            out.update(dict.fromkeys(DISTANCE_FIELDS, nan))
    return out


def goal_fields(episodes: Iterable[Mapping[str, Any]]) -> tuple[bool, bool]:
    """(has success, has final distance): whether any episode carries ``success`` /
    ``final_distance``."""
    success = distance = False
    for ep in episodes:
        success = success or "success" in ep
        distance = distance or "final_distance" in ep
    return success, distance


def summary_fields(summary: Sequence[Mapping[str, Any]]) -> tuple[str, ...]:
    """Columns of ``summary.csv``: :data:`SUMMARY_FIELDS`, then :data:`SUCCESS_FIELDS` and
    :data:`DISTANCE_FIELDS` when the rows have them."""
    success, distance = _summary_goal(summary)
    return SUMMARY_FIELDS + (SUCCESS_FIELDS if success else ()) + (DISTANCE_FIELDS if distance else ())


def _summary_goal(summary: Sequence[Mapping[str, Any]]) -> tuple[bool, bool]:
    """(has success, has final distance) of summary rows."""
    return (any("success_rate" in r for r in summary), any("final_distance_mean" in r for r in summary))


def normalize(value: float, nominal_mean: float | None) -> float | None:
    """``value / nominal_mean``; None when the nominal mean is missing, NaN or <= 0."""
    if nominal_mean is None or not math.isfinite(nominal_mean) or nominal_mean <= 0:
        return None
    if value is None or not math.isfinite(value):
        return None
    return float(value) / float(nominal_mean)


def summarize(cells: Sequence[Mapping[str, Any]], episodes: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One summary row per cell that has episodes, in cell order.

    Args:
        cells: cell rows (``cell``, ``kind``, ``param``, ``scale``, ``param2``, ``scale2``,
            ``perturbation``); the cell of kind ``nominal`` is the reference.
        episodes: episode records with ``cell``, ``seed``, ``return``, ``length`` and
            ``terminated`` (and ``success`` / ``final_distance`` for goal-reaching envs).

    Returns:
        Rows with the :data:`SUMMARY_FIELDS` (see :func:`cell_statistics`), plus the
        :data:`SUCCESS_FIELDS` / :data:`DISTANCE_FIELDS` (:func:`goal_statistics`, over
        the episodes that have the key) when any episode has ``success`` /
        ``final_distance``; a cell without episodes (an interrupted evaluation) is left out.
    """
    episodes = list(episodes)
    has_success, has_distance = goal_fields(episodes)
    by_cell: dict[int, list[Mapping[str, Any]]] = {}
    for ep in episodes:
        by_cell.setdefault(int(ep["cell"]), []).append(ep)
    rows = []
    for cell in cells:
        eps = by_cell.get(int(cell["cell"]), [])
        if not eps:
            continue
        stats = cell_statistics(
            [e["return"] for e in eps],
            [e["length"] for e in eps],
            [e["seed"] for e in eps],
            [bool(e["terminated"]) for e in eps],
        )
        goal = goal_statistics(
            [bool(e["success"]) for e in eps if "success" in e] if has_success else None,
            [float(e["final_distance"]) for e in eps if "final_distance" in e] if has_distance else None,
        )
        rows.append({**{k: cell.get(k) for k in CELL_FIELDS}, **stats, **goal})
    nominal = nominal_row(rows)
    nominal_mean = nominal["mean"] if nominal else None
    for row in rows:
        row["normalized_mean"] = normalize(row["mean"], nominal_mean)
        row["normalized_min"] = normalize(row["min"], nominal_mean)
    fields = SUMMARY_FIELDS + (SUCCESS_FIELDS if has_success else ()) + (DISTANCE_FIELDS if has_distance else ())
    return [{k: row.get(k) for k in fields} for row in rows]


def nominal_row(summary: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The summary row of the nominal (unperturbed) cell, or None."""
    return next((row for row in summary if row["kind"] == "nominal"), None)


def perturbation_of(row: Mapping[str, Any]) -> dict[str, float]:
    """The ``perturbation`` {key: scale} of a cell, episode or summary row (a dict, or its
    JSON text as read back from a CSV)."""
    pert = row.get("perturbation") or {}
    return dict(json.loads(pert) if isinstance(pert, str) else pert)


def _is_nominal_model(row: Mapping[str, Any]) -> bool:
    """True for the nominal cell and for cells whose every scale is 1.0."""
    if row["kind"] == "nominal":
        return True
    return all(float(v) == 1.0 for v in perturbation_of(row).values())


def most_damaging(summary: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The perturbed cell with the lowest mean return (cells equal to the nominal model
    excluded), or None when there is none."""
    candidates = [r for r in summary if not _is_nominal_model(r) and r["n"]]
    return min(candidates, key=lambda r: (r["mean"], r["cell"])) if candidates else None


# -- formatting helpers ----------------------------------------------------------------
def fmt_scale(value: Any) -> str:
    """A scale factor for tables (``0.5``, ``1.25``; ``-`` when missing)."""
    if value is None or value == "":
        return "-"
    return f"{float(value):g}"


def cell_label(row: Mapping[str, Any]) -> str:
    """``nominal``, ``thigh.length x 0.5`` or ``thigh.length x 0.5, torso.mass x 1.5``."""
    if row["kind"] == "nominal":
        return "nominal"
    pert = perturbation_of(row)
    return ", ".join(f"{k} x {v:g}" for k, v in pert.items())


def plot_name(param: str) -> str:
    """File name of the return-vs-scale plot of ``param`` (unsafe characters -> ``_``)."""
    return f"return_vs_scale_{re.sub(r'[^A-Za-z0-9._-]', '_', param)}.png"


def episode_csv_rows(episodes: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[dict]]:
    """Columns and rows of ``episodes.csv``: :data:`EPISODE_FIELDS`, the
    :data:`GOAL_EPISODE_FIELDS` that some episode has, then one ``body_mass.<body>``
    column per body (kg, in first-seen order)."""
    bodies: dict[str, None] = {}
    for ep in episodes:
        bodies.update(dict.fromkeys(ep.get("body_mass") or {}))
    present = goal_fields(episodes)
    goal = [k for k, has in zip(GOAL_EPISODE_FIELDS, present) if has]
    fields = [*EPISODE_FIELDS, *goal, *(f"body_mass.{b}" for b in bodies)]
    rows = []
    for ep in episodes:
        row = {k: ep.get(k) for k in (*EPISODE_FIELDS, *goal)}
        for body, mass in (ep.get("body_mass") or {}).items():
            row[f"body_mass.{body}"] = mass
        rows.append(row)
    return fields, rows


# -- plots -------------------------------------------------------------------------------
def _sweep_rows(summary: Sequence[Mapping[str, Any]], param: str) -> list[Mapping[str, Any]]:
    rows = [r for r in summary if r["kind"] == "sweep" and r["param"] == param]
    return sorted(rows, key=lambda r: float(r["scale"]))


def _heat_value(row: Mapping[str, Any] | None, normalized: bool) -> float:
    if row is None:
        return float("nan")
    value = row["normalized_mean"] if normalized else row["mean"]
    return float("nan") if value is None else float(value)


def plot_return_vs_scale(summary: Sequence[Mapping[str, Any]], param: str, path: Path, title: str) -> Path:
    """Mean return vs scale of one swept parameter, with a band over the seed means
    (min..max; over episodes when there is a single seed) and dashed lines at the nominal
    mean return and at scale 1.0."""
    plt = _pyplot()
    rows = _sweep_rows(summary, param)
    x = np.array([float(r["scale"]) for r in rows])
    y = np.array([r["mean"] for r in rows], dtype=float)
    single_seed = all(len(r["seed_means"]) <= 1 for r in rows)
    lo_key, hi_key = ("min", "max") if single_seed else ("seed_mean_min", "seed_mean_max")
    lo = np.array([r[lo_key] for r in rows], dtype=float)
    hi = np.array([r[hi_key] for r in rows], dtype=float)
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    band = "min-max over episodes" if single_seed else "min-max over seed means"
    ax.fill_between(x, lo, hi, alpha=0.25, color="tab:blue", label=band)
    ax.plot(x, y, "o-", color="tab:blue", label="mean return")
    nominal = nominal_row(summary)
    if nominal is not None:
        ax.axhline(nominal["mean"], color="black", ls="--", lw=1, label="nominal mean")
    ax.axvline(1.0, color="gray", ls=":", lw=1)
    ax.set_xlabel(f"{param} scale")
    ax.set_ylabel("episode return")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_grid_slices(summary: Sequence[Mapping[str, Any]], param: str, other: str, path: Path, title: str) -> Path:
    """2-D grid: mean return vs the scale of ``param``, one line per scale of ``other``,
    with a dashed line at the nominal mean return."""
    plt = _pyplot()
    rows = [r for r in summary if r["kind"] == "grid"]
    pos, opos = ("scale", "scale2") if rows and rows[0]["param"] == param else ("scale2", "scale")
    others = sorted({float(r[opos]) for r in rows})
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    cmap = plt.get_cmap("viridis")
    for i, ov in enumerate(others):
        line = sorted((r for r in rows if float(r[opos]) == ov), key=lambda r: float(r[pos]))
        ax.plot(
            [float(r[pos]) for r in line], [r["mean"] for r in line], "o-", ms=3,
            color=cmap(i / max(len(others) - 1, 1)), label=f"{other} x {ov:g}",
        )  # fmt: skip
    nominal = nominal_row(summary)
    if nominal is not None:
        ax.axhline(nominal["mean"], color="black", ls="--", lw=1, label="nominal mean")
    ax.axvline(1.0, color="gray", ls=":", lw=1)
    ax.set_xlabel(f"{param} scale")
    ax.set_ylabel("mean episode return")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _heatmap(
    values: np.ndarray, row_labels: Sequence[str], col_labels: Sequence[str], path: Path,
    title: str, normalized: bool, xlabel: str, ylabel: str,
) -> Path:  # fmt: skip
    plt = _pyplot()
    finite = values[np.isfinite(values)]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.7 * len(col_labels) + 2.5), max(2.2, 0.45 * len(row_labels) + 1.6)))
    if normalized and finite.size:
        # fixed floor at 0 and ceiling at 1.25 (wider when the data are): colours of two
        # reports compare, and a 1% change does not look like a collapse
        vmin, vmax = min(float(finite.min()), 0.0), max(float(finite.max()), 1.25)
        norm = TwoSlopeNorm(vcenter=1.0, vmin=vmin, vmax=vmax)
        image = ax.imshow(values, cmap="RdYlGn", norm=norm, aspect="auto")
    else:
        image = ax.imshow(values, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(col_labels)), col_labels, fontsize=8)
    ax.set_yticks(range(len(row_labels)), row_labels, fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if values.size <= 400:
        for (i, j), v in np.ndenumerate(values):
            if np.isfinite(v):
                r, g, b, _ = image.cmap(image.norm(v))
                color = "white" if 0.299 * r + 0.587 * g + 0.114 * b < 0.5 else "black"
                ax.text(j, i, f"{v:.2f}" if normalized else f"{v:.0f}", ha="center",
                        va="center", fontsize=7, color=color)  # fmt: skip
    fig.colorbar(image, ax=ax, label="mean return / nominal" if normalized else "mean return")
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def plot_heatmap(
    summary: Sequence[Mapping[str, Any]], mode: str, params: Sequence[str], path: Path, title: str
) -> Path:
    """Heatmap of the normalised mean return (the raw mean when it cannot be normalised):
    parameters x scales for sweeps, ``params[0]`` (rows) x ``params[1]`` (columns) for a
    2-D grid."""
    normalized = any(r["normalized_mean"] is not None for r in summary)
    if mode == "grid":
        a, b = params
        rows = [r for r in summary if r["kind"] == "grid"]
        a_scales = sorted({float(r["scale"]) for r in rows})
        b_scales = sorted({float(r["scale2"]) for r in rows})
        index = {(float(r["scale"]), float(r["scale2"])): r for r in rows}
        values = np.array([[_heat_value(index.get((x, y)), normalized) for y in b_scales] for x in a_scales])
        return _heatmap(values, [f"{x:g}" for x in a_scales], [f"{y:g}" for y in b_scales],
                        path, title, normalized, f"{b} scale", f"{a} scale")  # fmt: skip
    scales = sorted({float(r["scale"]) for r in summary if r["kind"] == "sweep"})
    by_param = {(r["param"], float(r["scale"])): r for r in summary if r["kind"] == "sweep"}
    values = np.array([[_heat_value(by_param.get((p, s)), normalized) for s in scales] for p in params])
    return _heatmap(values, list(params), [f"{s:g}" for s in scales], path, title, normalized,
                    "scale", "parameter")  # fmt: skip


def plot_cells_bar(summary: Sequence[Mapping[str, Any]], path: Path, title: str) -> Path:
    """Fixed evaluations: mean return per cell with min-max whiskers and the seed means."""
    plt = _pyplot()
    labels = [cell_label(r) for r in summary]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.6 * len(summary) + 1.5), 3.6))
    x = np.arange(len(summary))
    means = np.array([r["mean"] for r in summary], dtype=float)
    err = np.array([[m - r["min"], r["max"] - m] for m, r in zip(means, summary)]).T
    ax.bar(x, means, color=["gray" if r["kind"] == "nominal" else "tab:orange" for r in summary])
    ax.errorbar(x, means, yerr=err, fmt="none", ecolor="black", capsize=4, label="min-max")
    for i, r in enumerate(summary):
        seed_means = list(r["seed_means"].values())
        ax.plot([i] * len(seed_means), seed_means, "k.", ms=5)
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylabel("episode return")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)


# -- Markdown and HTML ---------------------------------------------------------------------
_TABLE_HEADER = ("scale", "n", "mean", "median", "std", "min", "max", "mean / nominal",
                 "min / nominal", "mean length")  # fmt: skip


def std_text(row: Mapping[str, Any]) -> str:
    """The std of a summary row as printed: ``n/a`` for a single episode (the spread of one
    sample is undefined; ``summary.json`` keeps the population std, 0.0)."""
    return "n/a" if row.get("n") == 1 else fmt(row["std"])


def _pct(value: Any) -> str:
    if value is None or not math.isfinite(float(value)):
        return "-"
    return f"{100 * float(value):.1f}"


def goal_header(success: bool, distance: bool) -> list[str]:
    """Table columns of the goal statistics: ``success``, ``95% CI`` (with ``success``),
    ``final dist. (m)``, ``dist. std``, ``dist. median`` (with ``distance``)."""
    return (["success", "95% CI"] if success else []) + (
        ["final dist. (m)", "dist. std", "dist. median"] if distance else []
    )


def goal_cells(row: Mapping[str, Any], success: bool, distance: bool) -> list[str]:
    """The :func:`goal_header` cells of a summary row: the success rate in percent
    (``80.0%``), its Wilson 95% interval (``58.4-91.9%``), the final distance mean, std
    (``n/a`` for one episode) and median in metres (3 decimals)."""
    cells = []
    if success:
        rate, low, high = row.get("success_rate"), row.get("success_ci_low"), row.get("success_ci_high")
        cells += [f"{_pct(rate)}%" if _pct(rate) != "-" else "-",
                  f"{_pct(low)}-{_pct(high)}%" if _pct(low) != "-" else "-"]  # fmt: skip
    if distance:
        std = "n/a" if row.get("n") == 1 else fmt(row.get("final_distance_std"), 3)
        cells += [fmt(row.get("final_distance_mean"), 3), std, fmt(row.get("final_distance_median"), 3)]
    return cells


def _table_cells(row: Mapping[str, Any], first: str, goal: tuple[bool, bool] = (False, False)) -> list[str]:
    return [
        first, str(row["n"]), fmt(row["mean"]), fmt(row["median"]), std_text(row),
        fmt(row["min"]), fmt(row["max"]), fmt(row["normalized_mean"], 3),
        fmt(row["normalized_min"], 3), fmt(row["mean_length"]), *goal_cells(row, *goal),
    ]  # fmt: skip


def report_sections(
    summary: Sequence[Mapping[str, Any]], mode: str | None, params: Sequence[str]
) -> list[tuple[str, list[str], list[list[str]]]]:
    """Tables of the report: (title, header, rows), one per swept parameter (nominal row
    first, marked) for ``mode == "sweep"``, one per scale of the first parameter for a
    2-D grid (``"grid"``), or a single table of every cell for a fixed evaluation
    (``"fixed"``, ``"nominal"``, or no mode). With goal statistics in the rows, every
    table ends with the :func:`goal_header` columns."""
    goal = _summary_goal(summary)
    columns = [*_TABLE_HEADER, *goal_header(*goal)]
    nominal = nominal_row(summary)
    nominal_cells = [_table_cells(nominal, "nominal (1)", goal)] if nominal else []
    sections = []
    if mode == "sweep":
        for param in params:
            rows = [_table_cells(r, fmt_scale(r["scale"]), goal) for r in _sweep_rows(summary, param)]
            sections.append((param, list(columns), nominal_cells + rows))
    elif mode == "grid":
        a, b = params
        grid = [r for r in summary if r["kind"] == "grid"]
        for sa in sorted({float(r["scale"]) for r in grid}):
            line = sorted((r for r in grid if float(r["scale"]) == sa), key=lambda r: float(r["scale2"]))
            header = [f"{b} scale", *columns[1:]]
            sections.append((f"{a} x {sa:g}", header, [_table_cells(r, fmt_scale(r["scale2"]), goal) for r in line]))
        if nominal:
            sections.insert(0, ("nominal", ["cell", *columns[1:]], nominal_cells))
    else:
        header = ["cell", *columns[1:]]
        sections.append(("cells", header, [_table_cells(r, cell_label(r), goal) for r in summary]))
    return sections


def overview(meta: Mapping[str, Any], summary: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """(field, value) lines at the top of the report: run, env, budget, nominal return."""
    items = [
        ("run", f"{meta.get('run_dir')} ({meta.get('algo')}, checkpoint {meta.get('checkpoint')})"),
        ("env", f"{meta.get('env_id')} (backend {meta.get('backend')})"),
    ]
    if meta.get("training_timesteps") is not None:
        items.append(("training budget", f"{meta['training_timesteps']} timesteps"))
    if meta.get("mode") == "fixed":
        pert = ", ".join(f"{k} x {v:g}" for k, v in (meta.get("fixed") or {}).items())
        items.append(("evaluation", f"fixed perturbation {pert} vs nominal"))
    elif meta.get("mode") == "nominal":
        items.append(("evaluation", "nominal env only (no perturbation)"))
    else:
        lo, hi = meta.get("perturb_range") or (None, None)
        what = "2-D grid of" if meta.get("mode") == "grid" else "sweep of"
        items.append((
            "evaluation",
            f"{what} {', '.join(meta.get('params') or [])} over scales {lo:g}-{hi:g} "
            f"({meta.get('points')} points) plus nominal",
        ))  # fmt: skip
    seeds = meta.get("seeds") or []
    total, finished, ran = meta.get("cells_total"), meta.get("cells_finished"), meta.get("cells_run")
    cells = f"{finished} of {total} cells" if finished != total else f"{total} cells"
    if ran is not None and ran != finished:
        k = finished - ran
        cells += f" ({ran} run; {k} with every scale 1 {'reuses' if k == 1 else 'reuse'} the nominal episodes)"
    items.append((
        "budget",
        f"{cells}, each {len(seeds)} seeds ({', '.join(map(str, seeds))}) x "
        f"{meta.get('episodes')} episodes: {meta.get('episodes_run')} episodes, "
        f"{meta.get('steps_run')} steps in {fmt(meta.get('seconds'))} s on "
        f"{meta.get('workers')} worker(s)",
    ))  # fmt: skip
    nominal = nominal_row(summary)
    if nominal is not None:
        items.append((
            "nominal return",
            f"mean {fmt(nominal['mean'])}, median {fmt(nominal['median'])}, std "
            f"{std_text(nominal)}, min {fmt(nominal['min'])}, max {fmt(nominal['max'])} "
            f"(n = {nominal['n']})",
        ))  # fmt: skip
        if nominal.get("success_rate") is not None:
            items.append((
                "nominal success",
                f"{_pct(nominal['success_rate'])}% ({nominal['successes']} of {nominal['n']}; "
                f"Wilson 95% CI {_pct(nominal['success_ci_low'])}-{_pct(nominal['success_ci_high'])}%)",
            ))  # fmt: skip
        if nominal.get("final_distance_mean") is not None:
            std = "n/a" if nominal["n"] == 1 else fmt(nominal["final_distance_std"], 3)
            items.append((
                "nominal final distance",
                f"mean {fmt(nominal['final_distance_mean'], 3)} m, std {std}, median "
                f"{fmt(nominal['final_distance_median'], 3)}",
            ))  # fmt: skip
        if nominal["mean"] <= 0 and meta.get("mode") != "nominal":
            items.append(("note", "nominal mean return <= 0: returns are not normalised"))
    if meta.get("interrupted"):
        items.append(("note", "interrupted: this report holds the finished cells only"))
    items.append(("created", str(meta.get("created"))))
    items.append(("command", f"`{meta.get('command')}`"))
    return items


def damage_text(summary: Sequence[Mapping[str, Any]]) -> str:
    """One sentence naming the most damaging perturbation."""
    worst = most_damaging(summary)
    if worst is None:
        return "No perturbed cell was evaluated."
    norm = worst["normalized_mean"]
    rel = f" ({100 * norm:.1f}% of nominal)" if norm is not None else ""
    return (
        f"{cell_label(worst)}: mean return {fmt(worst['mean'])}{rel}, worst episode "
        f"{fmt(worst['min'])}, mean length {fmt(worst['mean_length'])} steps."
    )


def render_markdown(meta: Mapping[str, Any], summary: Sequence[Mapping[str, Any]], plots: Sequence[Path]) -> str:
    """The text of ``report.md`` (plots linked relative to the report directory)."""
    mode, params = meta.get("mode"), meta.get("params") or []
    out = [f"# Robustness report: {meta.get('run_name')}", ""]
    out += [f"- **{k}:** {v}" for k, v in overview(meta, summary)]
    if mode != "nominal":
        out += ["", "## Most damaging perturbation", "", damage_text(summary)]
    note = "Statistics over every episode of every seed; std is the population std (ddof 0), n/a for one episode"
    if mode == "nominal":
        note += "."
    else:
        note += (
            "; `/ nominal` divides by the nominal mean return. Cells at scale 1 are the nominal "
            "model and repeat the nominal cell's episodes."
        )
    out += ["", note, ""]
    if any(_summary_goal(summary)):
        out += [GOAL_NOTE, ""]
    for title, header, rows in report_sections(summary, mode, params):
        out += [f"## {title}", "", _md_table(header, rows), ""]
    if plots:
        out += ["## Plots", ""]
        out += [f"![{p.stem}]({PLOTS_DIR}/{p.name})" for p in plots]
        out.append("")
    return "\n".join(out)


#: The explanation of the goal columns under the report's overview.
GOAL_NOTE = (
    "success: the share of episodes whose last step had `info['is_success']`, with its Wilson (1927) "
    "95% score interval; final dist.: `info['distance']` at the last step (metres), mean, "
    "population std and median."
)

# The shared report styles, plus the nominal row and the "most damaging" box.
_CSS = (
    BASE_CSS
    + "\ntr.nominal td{background:#f7f7e8;font-style:italic}"
    + "\n.damage{background:#fdecea;border-left:4px solid #d9534f;padding:.5em 1em}"
)


def render_html(meta: Mapping[str, Any], summary: Sequence[Mapping[str, Any]], plots: Sequence[Path]) -> str:
    """The text of ``report.html``: self-contained, inline CSS, every plot embedded as a
    base64 ``data:image/png`` URI, no external link or resource."""
    esc = html.escape
    mode, params = meta.get("mode"), meta.get("params") or []
    title = f"Robustness report: {meta.get('run_name')}"
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{esc(title)}</h1><dl>",
    ]  # fmt: skip
    for key, value in overview(meta, summary):
        value = value.strip("`") if key == "command" else value
        inner = f"<code>{esc(value)}</code>" if key == "command" else esc(value)
        parts.append(f"<dt>{esc(key)}</dt><dd>{inner}</dd>")
    if mode != "nominal":
        parts.append("</dl><h2>Most damaging perturbation</h2>")
        parts.append(f'<p class="damage">{esc(damage_text(summary))}</p>')
    else:
        parts.append("</dl>")
    if any(_summary_goal(summary)):
        parts.append(f"<p>{esc(GOAL_NOTE.replace('`', ''))}</p>")
    for section, header, rows in report_sections(summary, mode, params):
        parts.append(f"<h2>{esc(section)}</h2><table><tr>")
        parts += [f"<th>{esc(h)}</th>" for h in header]
        parts.append("</tr>")
        for row in rows:
            cls = ' class="nominal"' if row[0].startswith("nominal") else ""
            parts.append(f"<tr{cls}>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>")
        parts.append("</table>")
    if plots:
        parts.append("<h2>Plots</h2>")
        for path in plots:
            data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
            parts.append(f'<img alt="{esc(path.stem)}" src="data:image/png;base64,{data}">')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


# -- the writer --------------------------------------------------------------------------
def write_report(
    out_dir: str | os.PathLike[str],
    meta: Mapping[str, Any],
    cells: Sequence[Mapping[str, Any]],
    episodes: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """Write every report file into ``out_dir`` (created with its parents when missing).

    Args:
        out_dir: the report directory.
        meta: run and evaluation description: ``run_dir``, ``run_name``, ``env_id``,
            ``algo``, ``checkpoint``, ``backend``, ``mode`` (``sweep``, ``grid``,
            ``fixed`` or ``nominal``), ``params``, ``perturb_range``, ``points``, ``fixed``, ``seeds``,
            ``episodes`` (per seed and cell), ``cells_total``, ``cells_finished``,
            ``cells_run`` (finished cells that were run, not repeats of nominal),
            ``episodes_run``, ``steps_run``, ``workers``, ``seconds``, ``interrupted``,
            ``created``, ``command`` (and anything else, stored in the JSON files).
        cells: every cell row of the evaluation (finished or not), nominal first.
        episodes: episode records of the finished cells (:data:`EPISODE_FIELDS`,
            ``body_mass`` {body: kg}, optionally :data:`GOAL_EPISODE_FIELDS`).

    Returns:
        ``summary`` (rows, :func:`summarize`), ``most_damaging`` (a row or None) and
        ``files`` {name: path} of everything written.
    """
    out = Path(out_dir)
    (out / PLOTS_DIR).mkdir(parents=True, exist_ok=True)
    summary = summarize(cells, episodes)
    worst = most_damaging(summary)
    files: dict[str, Path] = {}

    fields, rows = episode_csv_rows(episodes)
    _write_csv(out / "episodes.csv", fields, rows)
    files["episodes.csv"] = out / "episodes.csv"
    files["episodes.json"] = runs.write_json(
        out / "episodes.json", jsonable({"meta": meta, "cells": cells, "episodes": episodes})
    )
    _write_csv(out / "summary.csv", summary_fields(summary), summary)
    files["summary.csv"] = out / "summary.csv"
    nominal = nominal_row(summary)
    files["summary.json"] = runs.write_json(
        out / "summary.json",
        jsonable({"meta": meta, "nominal": nominal, "most_damaging": worst, "cells": summary}),
    )

    plots: list[Path] = []
    mode, params = meta.get("mode"), list(meta.get("params") or [])
    name = f"{meta.get('run_name')} on {meta.get('env_id')}"
    plot_dir = out / PLOTS_DIR
    if summary:
        if mode == "sweep":
            for param in params:
                if _sweep_rows(summary, param):
                    plots.append(plot_return_vs_scale(summary, param, plot_dir / plot_name(param), name))
        elif mode == "grid" and any(r["kind"] == "grid" for r in summary):
            a, b = params
            plots.append(plot_grid_slices(summary, a, b, plot_dir / plot_name(a), name))
            plots.append(plot_grid_slices(summary, b, a, plot_dir / plot_name(b), name))
        if mode in ("sweep", "grid") and any(r["kind"] in ("sweep", "grid") for r in summary):
            plots.append(plot_heatmap(summary, mode, params, plot_dir / "heatmap.png", name))
        if mode == "fixed":
            plots.append(plot_cells_bar(summary, plot_dir / "return_by_cell.png", name))
    for path in plots:
        files[f"{PLOTS_DIR}/{path.name}"] = path

    files["report.md"] = runs.atomic_write_text(out / "report.md", render_markdown(meta, summary, plots))
    files["report.html"] = runs.atomic_write_text(out / "report.html", render_html(meta, summary, plots))
    return {"summary": summary, "most_damaging": worst, "files": files}
