"""Comparison reports of forward-model runs (``visfore train-eval-all``, benchmarks).

Input: one *row* per run (:func:`run_row`), read defensively from the run's
``metrics.json`` (written by :mod:`visfore.worldmodels.training`): a key the trainer does not
produce is None, shown as ``-``. Output, in a report directory::

    OUT_DIR/
      comparison.csv, comparison.json   one row per run (status ok / failed / interrupted)
      comparison.md                     Markdown: overview, aggregated table, runs, failures
      comparison.html                   the same, self-contained (inline CSS, PNG data URIs)
      psnr_per_step.png                 open-loop PSNR per horizon step: one line per group
                                        (mean over seeds, band min-max over seeds),
                                        copy-last-frame dashed
      ssim_per_step.png                 the same for SSIM
      action_sensitivity.png            PSNR lost with shuffled actions, per group
      params_vs_psnr.png                parameters vs mean PSNR over the horizon

A *group* is a model label with one hyperparameter combination; its seeds are aggregated
(:func:`aggregate`) as mean and sample standard deviation (``ddof=1``; None with one seed).
Every file is written atomically (:mod:`visfore.core.runs`).
"""

from __future__ import annotations

import html
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib.ticker import MaxNLocator
from rich import box
from rich.table import Table

from visfore.core import runs
from visfore.core.console import stdout_console
from visfore.reports.report_html import (
    BASE_CSS,
    fmt,
    html_page,
    html_table,
    jsonable,
    md_table,
    png_data_uri,
    pyplot,
    read_csv,
    save_figure,
    write_csv,
)

__all__ = [
    "AGGREGATE_FIELDS",
    "ROW_FIELDS",
    "aggregate",
    "format_hyperparameters",
    "print_comparison",
    "read_csv",
    "run_row",
    "write_comparison",
    "write_rows",
]

#: Columns of ``comparison.csv`` (``hyperparameters`` is ``key=value`` text; the JSON
#: file keeps it as an object, plus the per-step series of every run).
ROW_FIELDS = (
    "run", "status", "model", "label", "hyperparameters", "seed", "parameters",
    "train_seconds", "epochs_completed", "global_step", "samples_per_second",
    "inference_frames_per_second", "context", "horizon", "psnr", "ssim", "mse",
    "psnr_step1", "psnr_last", "ssim_step1", "ssim_last", "foreground_psnr", "lpips",
    "action_sensitivity_db", "copy_last_psnr", "copy_last_ssim", "copy_last_mse",
    "copy_last_psnr_last", "copy_last_foreground_psnr", "psnr_gain_over_copy_last_db",
    "mean_frame_psnr", "mean_frame_ssim", "stochastic", "eval_samples", "best_of_n_psnr",
    "best_of_n_ssim", "reused", "run_dir", "error",
)  # fmt: skip

#: Numeric row fields aggregated over the seeds of a group (mean, std, n).
AGGREGATE_FIELDS = (
    "parameters", "train_seconds", "samples_per_second", "inference_frames_per_second",
    "psnr", "ssim", "mse", "psnr_step1", "psnr_last", "ssim_step1", "ssim_last",
    "foreground_psnr", "lpips", "action_sensitivity_db", "copy_last_psnr", "copy_last_ssim",
    "copy_last_psnr_last", "psnr_gain_over_copy_last_db", "mean_frame_psnr", "mean_frame_ssim",
    "best_of_n_psnr", "best_of_n_ssim",
)  # fmt: skip

#: Column meanings, written into the Markdown/HTML reports and comparison.json.
DEFINITIONS = {
    "psnr / ssim / mse": "open-loop prediction on held-out episodes, mean over the horizon "
    "steps (PSNR in dB and SSIM with data range 1.0); for a stochastic model the mean over "
    "its evaluation samples",
    "PSNR@1 / PSNR@K": "PSNR of the first and of the last predicted frame",
    "FG PSNR": "foreground PSNR: PSNR over the pixels that differ from the last context frame",
    "act. sens.": "action sensitivity: PSNR lost when each clip gets another clip's actions "
    "(a model that uses its actions must get worse)",
    "copy-last / mean-frame": "baselines: repeat the last context frame / predict the mean training frame",
    "best-of-N": "stochastic models: the best of N samples per clip",
    "samples/s": "training clips per second of training time",
    "frames/s": "predicted frames per second of model forward passes in the final evaluation",
    "mean ± std": "over the seeds of a group (sample std, ddof 1)",
}


# -- rows --------------------------------------------------------------------------------
def _get(data: Any, *keys: Any) -> Any:
    """``data[k0][k1]...`` or None when any level is missing or of the wrong type."""
    for key in keys:
        if isinstance(key, int):
            if not isinstance(data, (list, tuple)) or not -len(data) <= key < len(data):
                return None
        elif not isinstance(data, Mapping) or key not in data:
            return None
        data = data[key]
    return data


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _series(data: Any, *keys: str) -> list[float | None] | None:
    values = _get(data, *keys)
    if not isinstance(values, (list, tuple)):
        return None
    return [_num(v) for v in values]


def format_hyperparameters(hp: Mapping[str, Any] | None) -> str:
    """``lr=0.001 batch_size=16`` (empty string for none)."""
    if not hp:
        return ""
    parts = []
    for key, value in hp.items():
        if isinstance(value, float):
            text = f"{value:g}"
        elif isinstance(value, bool):
            text = str(value).lower()
        else:
            text = str(value)
        parts.append(f"{key}={text}")
    return " ".join(parts)


def run_row(
    metrics: Mapping[str, Any] | None,
    *,
    run: str,
    model: str,
    label: str | None = None,
    hyperparameters: Mapping[str, Any] | None = None,
    seed: int | None = None,
    status: str = "ok",
    error: str | None = None,
    run_dir: str | os.PathLike[str] | None = None,
    reused: bool = False,
) -> dict[str, Any]:
    """One comparison row of a run from its ``metrics.json`` content (None for a run that
    failed or was interrupted). Missing metrics are None.

    The returned dict has every :data:`ROW_FIELDS` key plus ``hyperparameters_dict`` and
    ``per_step`` (``model_psnr``, ``model_ssim``, ``copy_last_psnr``, ``copy_last_ssim``:
    lists over the horizon steps, or None).
    """
    m = metrics if isinstance(metrics, Mapping) else {}
    psnr_steps = _series(m, "model", "psnr")
    ssim_steps = _series(m, "model", "ssim")
    copy_psnr = _series(m, "copy_last_frame", "psnr")
    stochastic = _get(m, "stochastic", "stochastic")
    row: dict[str, Any] = {
        "run": run,
        "status": status,
        "model": _get(m, "model_name") or model,
        "label": label or model,
        "hyperparameters": format_hyperparameters(hyperparameters),
        "hyperparameters_dict": dict(hyperparameters or {}),
        "seed": seed,
        "parameters": _num(_get(m, "num_parameters")),
        "train_seconds": _num(_get(m, "train_seconds")),
        "epochs_completed": _num(_get(m, "epochs_completed")),
        "global_step": _num(_get(m, "global_step")),
        "samples_per_second": _num(_get(m, "samples_per_second")),
        "inference_frames_per_second": _num(_get(m, "inference_frames_per_second")),
        "context": _num(_get(m, "context")),
        "horizon": _num(_get(m, "horizon")),
        "psnr": _num(_get(m, "model", "mean", "psnr")),
        "ssim": _num(_get(m, "model", "mean", "ssim")),
        "mse": _num(_get(m, "model", "mean", "mse")),
        "psnr_step1": psnr_steps[0] if psnr_steps else None,
        "psnr_last": psnr_steps[-1] if psnr_steps else None,
        "ssim_step1": ssim_steps[0] if ssim_steps else None,
        "ssim_last": ssim_steps[-1] if ssim_steps else None,
        "foreground_psnr": _num(_get(m, "model", "mean", "foreground_psnr")),
        "lpips": _num(_get(m, "model", "mean", "lpips")),
        "action_sensitivity_db": _num(_get(m, "action_sensitivity", "psnr_drop_db")),
        "copy_last_psnr": _num(_get(m, "copy_last_frame", "mean", "psnr")),
        "copy_last_ssim": _num(_get(m, "copy_last_frame", "mean", "ssim")),
        "copy_last_mse": _num(_get(m, "copy_last_frame", "mean", "mse")),
        "copy_last_psnr_last": copy_psnr[-1] if copy_psnr else None,
        "copy_last_foreground_psnr": _num(_get(m, "copy_last_frame", "mean", "foreground_psnr")),
        "psnr_gain_over_copy_last_db": _num(_get(m, "beats_copy_last_frame", "psnr_gain_db")),
        "mean_frame_psnr": _num(_get(m, "mean_frame", "mean", "psnr")),
        "mean_frame_ssim": _num(_get(m, "mean_frame", "mean", "ssim")),
        "stochastic": bool(stochastic) if isinstance(stochastic, bool) else None,
        "eval_samples": _num(_get(m, "stochastic", "eval_samples")),
        "best_of_n_psnr": _num(_get(m, "best_of_n", "mean", "psnr")),
        "best_of_n_ssim": _num(_get(m, "best_of_n", "mean", "ssim")),
        "reused": bool(reused),
        "run_dir": str(run_dir) if run_dir is not None else _get(m, "run_dir"),
        "error": error,
        "per_step": {
            "model_psnr": psnr_steps,
            "model_ssim": ssim_steps,
            "copy_last_psnr": copy_psnr,
            "copy_last_ssim": _series(m, "copy_last_frame", "ssim"),
        },
    }
    if row["psnr_gain_over_copy_last_db"] is None and row["psnr"] is not None and row["copy_last_psnr"] is not None:
        row["psnr_gain_over_copy_last_db"] = row["psnr"] - row["copy_last_psnr"]
    for key in ("epochs_completed", "global_step", "context", "horizon", "eval_samples", "parameters"):
        if row[key] is not None:
            row[key] = int(row[key])
    return row


# -- aggregation -------------------------------------------------------------------------
def _group_key(row: Mapping[str, Any]) -> tuple[str, str]:
    return (str(row.get("label") or row.get("model")), str(row.get("hyperparameters") or ""))


def _mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), (float(arr.std(ddof=1)) if arr.size > 1 else None)


def _stack_steps(series: Sequence[Sequence[float | None] | None]) -> np.ndarray | None:
    """(n, K_max) float array of per-step series (NaN where missing), or None."""
    present = [s for s in series if s]
    if not present:
        return None
    k = max(len(s) for s in present)
    out = np.full((len(present), k), np.nan)
    for i, s in enumerate(present):
        out[i, : len(s)] = [np.nan if v is None else v for v in s]
    return out


def _nan_stat(arr: np.ndarray, fn: Any) -> list[float | None]:
    result = []
    for col in arr.T:
        finite = col[np.isfinite(col)]
        result.append(float(fn(finite)) if finite.size else None)
    return result


def aggregate(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One entry per group (model label x hyperparameters), in first-seen order.

    Each has ``group`` (display name), ``label``, ``model``, ``hyperparameters``,
    ``runs`` (rows in the group), ``ok`` (finished runs), ``seeds`` (of the finished
    runs), ``<field>_mean`` / ``<field>_std`` / ``<field>_n`` for every
    :data:`AGGREGATE_FIELDS` (over the finished runs that have the value), and
    ``per_step`` {series: {"mean", "min", "max"} lists} over the finished runs.
    """
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(_group_key(row), []).append(row)
    several_hp = len({hp for _, hp in groups}) > 1
    out = []
    for (label, hp), members in groups.items():
        ok = [r for r in members if r.get("status") == "ok"]
        entry: dict[str, Any] = {
            "group": f"{label} {hp}".strip() if several_hp else label,
            "label": label,
            "model": members[0].get("model"),
            "hyperparameters": hp,
            "runs": len(members),
            "ok": len(ok),
            "seeds": [r.get("seed") for r in ok],
            "stochastic": any(bool(r.get("stochastic")) for r in ok),
        }
        for field in AGGREGATE_FIELDS:
            values = [float(r[field]) for r in ok if r.get(field) is not None]
            mean, std = _mean_std(values)
            entry[f"{field}_mean"], entry[f"{field}_std"], entry[f"{field}_n"] = mean, std, len(values)
        per_step: dict[str, Any] = {}
        for series in ("model_psnr", "model_ssim", "copy_last_psnr", "copy_last_ssim"):
            arr = _stack_steps([_get(r, "per_step", series) for r in ok])
            if arr is not None:
                per_step[series] = {
                    "mean": _nan_stat(arr, np.mean),
                    "min": _nan_stat(arr, np.min),
                    "max": _nan_stat(arr, np.max),
                }
        entry["per_step"] = per_step
        out.append(entry)
    return out


def pm(entry: Mapping[str, Any], field: str, digits: int = 2) -> str:
    """``mean ± std`` of an aggregated field (``mean`` alone with one value, ``-`` none)."""
    mean, std = entry.get(f"{field}_mean"), entry.get(f"{field}_std")
    if mean is None:
        return "-"
    if field == "parameters" and not std:  # the same model in every seed
        std = None
    return fmt(mean, digits) + (f" ± {fmt(std, digits)}" if std is not None else "")


#: (header, field, digits) of the aggregated table (stdout, Markdown, HTML).
AGG_COLUMNS = (
    ("params", "parameters", 0), ("train s", "train_seconds", 1), ("samples/s", "samples_per_second", 1),
    ("frames/s", "inference_frames_per_second", 0), ("PSNR", "psnr", 2), ("SSIM", "ssim", 4),
    ("PSNR@1", "psnr_step1", 2), ("PSNR@K", "psnr_last", 2), ("FG PSNR", "foreground_psnr", 2),
    ("act. sens. dB", "action_sensitivity_db", 2), ("copy-last PSNR", "copy_last_psnr", 2),
    ("copy-last SSIM", "copy_last_ssim", 4), ("mean-frame PSNR", "mean_frame_psnr", 2),
    ("best-of-N PSNR", "best_of_n_psnr", 2),
)  # fmt: skip

#: (header, field, digits) of the per-run table.
RUN_COLUMNS = (
    ("seed", "seed", 0), ("status", "status", None), ("params", "parameters", 0),
    ("train s", "train_seconds", 1), ("epochs", "epochs_completed", 0),
    ("samples/s", "samples_per_second", 1), ("frames/s", "inference_frames_per_second", 0),
    ("PSNR", "psnr", 2), ("SSIM", "ssim", 4), ("MSE", "mse", 5), ("PSNR@1", "psnr_step1", 2),
    ("PSNR@K", "psnr_last", 2), ("FG PSNR", "foreground_psnr", 2),
    ("act. sens. dB", "action_sensitivity_db", 2), ("copy-last PSNR", "copy_last_psnr", 2),
    ("mean-frame PSNR", "mean_frame_psnr", 2), ("best-of-N PSNR", "best_of_n_psnr", 2),
)  # fmt: skip


def _agg_table(groups: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[str]]]:
    header = ["model", "seeds ok", *(h for h, _, _ in AGG_COLUMNS)]
    rows = []
    for g in groups:
        cells = [g["group"], f"{g['ok']}/{g['runs']}"]
        for _, field, digits in AGG_COLUMNS:
            cells.append(pm(g, field, digits))
        rows.append(cells)
    return header, rows


def _cell(row: Mapping[str, Any], field: str, digits: int | None) -> str:
    value = row.get(field)
    if digits is None or value is None or isinstance(value, str):
        return "-" if value is None or value == "" else str(value)
    return fmt(value, digits) if digits else fmt(int(value) if float(value).is_integer() else value, 0)


def _run_table(rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[str]]]:
    several_hp = len({r.get("hyperparameters") or "" for r in rows}) > 1
    header = ["run", "model", *(["hyperparameters"] if several_hp else []), *(h for h, _, _ in RUN_COLUMNS)]
    out = []
    for r in rows:
        cells = [str(r.get("run")), str(r.get("label") or r.get("model"))]
        if several_hp:
            cells.append(r.get("hyperparameters") or "-")
        cells += [_cell(r, field, digits) for _, field, digits in RUN_COLUMNS]
        out.append(cells)
    return header, out


# -- plots -------------------------------------------------------------------------------
def _copy_last_steps(groups: Sequence[Mapping[str, Any]], series: str) -> list[float | None] | None:
    """Copy-last-frame per step, the mean over every group's mean (None if absent)."""
    arr = _stack_steps([_get(g, "per_step", series, "mean") for g in groups])
    return _nan_stat(arr, np.mean) if arr is not None else None


def _arr(values: Sequence[float | None]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def plot_per_step(groups: Sequence[Mapping[str, Any]], metric: str, path: Path, title: str) -> Path | None:
    """``metric`` (``psnr`` or ``ssim``) per horizon step: one line per group (mean over
    seeds, band min-max over seeds), copy-last-frame dashed. None when no group has it."""
    series = f"model_{metric}"
    have = [g for g in groups if series in g.get("per_step", {})]
    if not have:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    cmap = plt.get_cmap("tab10")
    for i, g in enumerate(have):
        s = g["per_step"][series]
        y, lo, hi = _arr(s["mean"]), _arr(s["min"]), _arr(s["max"])
        x = np.arange(1, len(y) + 1)
        color = cmap(i % 10)
        ax.plot(x, y, "o-", ms=3, color=color, label=f"{g['group']} (n={g['ok']})")
        if g["ok"] > 1:
            ax.fill_between(x, lo, hi, color=color, alpha=0.18, lw=0)
    copy = _copy_last_steps(have, f"copy_last_{metric}")
    if copy:
        yc = _arr(copy)
        ax.plot(np.arange(1, len(yc) + 1), yc, "--", color="black", lw=1.5, label="copy-last-frame")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("horizon step (predicted frame)")
    ax.set_ylabel("PSNR (dB)" if metric == "psnr" else "SSIM")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return save_figure(fig, path)


def plot_action_sensitivity(
    groups: Sequence[Mapping[str, Any]], path: Path, title: str, rows: Sequence[Mapping[str, Any]] = ()
) -> Path | None:
    """Bar chart: PSNR lost with shuffled actions per group (mean over seeds, std whiskers,
    each seed a dot)."""
    have = [g for g in groups if g.get("action_sensitivity_db_mean") is not None]
    if not have:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(4.5, 0.9 * len(have) + 2.0), 3.8))
    x = np.arange(len(have))
    means = np.array([g["action_sensitivity_db_mean"] for g in have], dtype=float)
    stds = np.array([g["action_sensitivity_db_std"] or 0.0 for g in have], dtype=float)
    ax.bar(x, means, color="tab:blue", alpha=0.8)
    ax.errorbar(x, means, yerr=stds, fmt="none", ecolor="black", capsize=4)
    for i, g in enumerate(have):
        pts = [
            r["action_sensitivity_db"]
            for r in rows
            if r.get("status") == "ok"
            and _group_key(r) == (g["label"], g["hyperparameters"])
            and r.get("action_sensitivity_db") is not None
        ]
        ax.plot([i] * len(pts), pts, "k.", ms=5)
    ax.axhline(0.0, color="gray", lw=0.8)
    ax.set_xticks(x, [g["group"] for g in have], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("PSNR drop with shuffled actions (dB)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    return save_figure(fig, path)


def plot_params_vs_psnr(groups: Sequence[Mapping[str, Any]], path: Path, title: str) -> Path | None:
    """Parameters (log x) vs mean open-loop PSNR per group (std whiskers), copy-last-frame
    PSNR dashed."""
    have = [g for g in groups if g.get("parameters_mean") and g.get("psnr_mean") is not None]
    if not have:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    cmap = plt.get_cmap("tab10")
    for i, g in enumerate(have):
        ax.errorbar(
            [g["parameters_mean"]],
            [g["psnr_mean"]],
            yerr=[g["psnr_std"] or 0.0],
            fmt="o",
            color=cmap(i % 10),
            capsize=3,
            label=g["group"],
        )
    copies = [g["copy_last_psnr_mean"] for g in have if g.get("copy_last_psnr_mean") is not None]
    if copies:
        ax.axhline(float(np.mean(copies)), color="black", ls="--", lw=1.2, label="copy-last-frame")
    ax.set_xscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel("mean PSNR over the horizon (dB)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="best")
    return save_figure(fig, path)


# -- Markdown and HTML ---------------------------------------------------------------------
def overview(meta: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """(field, value) lines at the top of the report."""
    counts = {s: sum(1 for r in rows if r.get("status") == s) for s in ("ok", "failed", "interrupted")}
    reused = sum(1 for r in rows if r.get("reused"))
    items = [("sweep", str(meta.get("name", "-")))]
    if meta.get("config"):
        items.append(("config", str(meta["config"])))
    if meta.get("data"):
        items.append(("data", str(meta["data"])))
    if meta.get("shared"):
        items.append(("shared options", ", ".join(f"{k}={v}" for k, v in meta["shared"].items())))
    total = meta.get("configurations", len(rows))
    text = f"{total} configurations: {counts['ok']} finished"
    if reused:
        text += f" ({reused} from an earlier invocation, --continue)"
    if counts["failed"]:
        text += f", {counts['failed']} failed"
    if counts["interrupted"]:
        text += f", {counts['interrupted']} interrupted"
    not_run = total - len(rows)
    if not_run > 0:
        text += f", {not_run} not run"
    items.append(("runs", text))
    if meta.get("seconds") is not None:
        items.append(("time", f"{fmt(meta['seconds'], 0)} s"))
    if meta.get("interrupted"):
        items.append(("note", "interrupted (Ctrl-C): this report holds the runs finished before"))
    if meta.get("created"):
        items.append(("created", str(meta["created"])))
    if meta.get("command"):
        items.append(("command", str(meta["command"])))
    return items


def _failures(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    return [f"{r['run']}: {r.get('error') or r.get('status')}" for r in rows if r.get("status") != "ok"]


def render_markdown(
    meta: Mapping[str, Any],
    rows: Sequence[Mapping[str, Any]],
    groups: Sequence[Mapping[str, Any]],
    plots: Sequence[Path],
) -> str:
    """The text of ``comparison.md`` (plots linked by file name)."""
    out = [f"# Forward-model comparison: {meta.get('name', '-')}", ""]
    out += [f"- **{k}:** {v}" if k != "command" else f"- **{k}:** `{v}`" for k, v in overview(meta, rows)]
    out += ["", "## Aggregated over seeds (mean ± std)", ""]
    out += [md_table(*_agg_table(groups)), ""]
    out += ["## Runs", "", md_table(*_run_table(rows)), ""]
    failures = _failures(rows)
    if failures:
        out += ["## Failed or interrupted", ""] + [f"- {line}" for line in failures] + [""]
    out += ["## Definitions", ""] + [f"- **{k}:** {v}" for k, v in DEFINITIONS.items()] + [""]
    if plots:
        out += ["## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots] + [""]
    return "\n".join(out)


_CSS = (
    BASE_CSS
    + "\ntr.failed td{background:#fdecea}\n.fail{background:#fdecea;border-left:4px solid #d9534f;padding:.5em 1em}"
)


def render_html(
    meta: Mapping[str, Any],
    rows: Sequence[Mapping[str, Any]],
    groups: Sequence[Mapping[str, Any]],
    plots: Sequence[Path],
) -> str:
    """The text of ``comparison.html``: self-contained (inline CSS, PNGs as data URIs)."""
    esc = html.escape
    title = f"Forward-model comparison: {meta.get('name', '-')}"
    body = [f"<h1>{esc(title)}</h1><dl>"]
    for key, value in overview(meta, rows):
        inner = f"<code>{esc(value)}</code>" if key == "command" else esc(value)
        body.append(f"<dt>{esc(key)}</dt><dd>{inner}</dd>")
    body.append("</dl><h2>Aggregated over seeds (mean ± std)</h2>")
    body.append(html_table(*_agg_table(groups)))
    header, table = _run_table(rows)
    body.append("<h2>Runs</h2>")
    body.append(html_table(header, table, ["failed" if r.get("status") != "ok" else None for r in rows]))
    failures = _failures(rows)
    if failures:
        body.append("<h2>Failed or interrupted</h2>")
        body += [f'<p class="fail">{esc(line)}</p>' for line in failures]
    body.append("<h2>Definitions</h2><dl>")
    body += [f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in DEFINITIONS.items()]
    body.append("</dl>")
    if plots:
        body.append("<h2>Plots</h2>")
        body += [f'<img alt="{esc(p.stem)}" src="{png_data_uri(p)}">' for p in plots]
    return html_page(title, body, css=_CSS)


# -- writers -------------------------------------------------------------------------------
def _json_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        d = {k: r.get(k) for k in ROW_FIELDS}
        d["hyperparameters"] = r.get("hyperparameters_dict", {})
        d["per_step"] = r.get("per_step")
        out.append(d)
    return out


def write_rows(
    out_dir: str | os.PathLike[str], meta: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]
) -> dict[str, Path]:
    """Write only ``comparison.csv`` and ``comparison.json`` (cheap; after every run)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    groups = aggregate(rows)
    files = {"comparison.csv": write_csv(out / "comparison.csv", ROW_FIELDS, rows)}
    files["comparison.json"] = runs.write_json(
        out / "comparison.json",
        jsonable(
            {
                "meta": meta,
                "definitions": DEFINITIONS,
                "runs": _json_rows(rows),
                "aggregate": [{k: v for k, v in g.items()} for g in groups],
            }
        ),
    )
    return files


def write_comparison(
    out_dir: str | os.PathLike[str], meta: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """Write every comparison file into ``out_dir`` (created when missing).

    Args:
        out_dir: the report directory.
        meta: ``name``, ``config``, ``data``, ``shared`` (options shared by every run),
            ``configurations`` (total), ``seconds``, ``interrupted``, ``created``,
            ``command`` (and anything else, stored in ``comparison.json``).
        rows: :func:`run_row` rows.

    Returns:
        ``groups`` (:func:`aggregate`) and ``files`` {name: path}. Plots without data (no
        finished run) are not drawn.
    """
    out = Path(out_dir)
    files: dict[str, Any] = dict(write_rows(out, meta, rows))
    groups = aggregate(rows)
    name = str(meta.get("name", ""))
    drawn = [
        plot_per_step(groups, "psnr", out / "psnr_per_step.png", f"{name}: open-loop PSNR per step"),
        plot_per_step(groups, "ssim", out / "ssim_per_step.png", f"{name}: open-loop SSIM per step"),
        plot_action_sensitivity(groups, out / "action_sensitivity.png", f"{name}: action sensitivity", rows),
        plot_params_vs_psnr(groups, out / "params_vs_psnr.png", f"{name}: size vs PSNR"),
    ]
    plots = [p for p in drawn if p is not None]
    for p in plots:
        files[p.name] = p
    files["comparison.md"] = runs.atomic_write_text(out / "comparison.md", render_markdown(meta, rows, groups, plots))
    files["comparison.html"] = runs.atomic_write_text(out / "comparison.html", render_html(meta, rows, groups, plots))
    return {"groups": groups, "files": files}


#: (header, field, digits) of the table printed on stdout (a subset, to fit a terminal).
CONSOLE_COLUMNS = (
    ("params", "parameters", 0), ("samples\n/s", "samples_per_second", 1),
    ("frames\n/s", "inference_frames_per_second", 0), ("PSNR", "psnr", 2), ("SSIM", "ssim", 3),
    ("PSNR\n@K", "psnr_last", 2), ("FG\nPSNR", "foreground_psnr", 2), ("act.\nsens.", "action_sensitivity_db", 2),
    ("copy-\nlast", "copy_last_psnr", 2), ("mean-\nframe", "mean_frame_psnr", 2), ("best\nof N", "best_of_n_psnr", 2),
)  # fmt: skip


def print_comparison(groups: Sequence[Mapping[str, Any]], console: Any = None, title: str | None = None) -> None:
    """Print the aggregated table with rich: per group, mean over seeds with ``± std``
    under it; PSNR columns in dB (``copy-last`` / ``mean-frame``: the baselines' PSNR)."""
    console = console or stdout_console()
    columns = [c for c in CONSOLE_COLUMNS if any(g.get(f"{c[1]}_mean") is not None for g in groups)]
    table = Table(
        title=title or "forward models, aggregated over seeds (mean ± std)",
        box=box.SIMPLE_HEAD,
        caption="open-loop on held-out episodes, means over the horizon; PSNR in dB; act. sens. = "
        "PSNR lost with shuffled actions; copy-last / mean-frame = the baselines' PSNR",
    )
    table.add_column("model")
    table.add_column("seeds", justify="right")
    for header, _, _ in columns:
        table.add_column(header, justify="right")
    for g in groups:
        cells = [g["group"], f"{g['ok']}/{g['runs']}"]
        for _, f, digits in columns:
            mean, std = g.get(f"{f}_mean"), g.get(f"{f}_std")
            if f == "parameters" and not std:
                std = None
            cells.append(
                "-" if mean is None else fmt(mean, digits) + (f"\n±{fmt(std, digits)}" if std is not None else "")
            )
        table.add_row(*cells)
    console.print(table)
