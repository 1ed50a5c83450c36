"""The report of ``visfore plan``: :func:`write_report` writes ``episodes.csv`` /
``episodes.json``, ``summary.json``, ``report.md``, a self-contained ``report.html`` (with
the first GIF of each controller) and ``distance.png``; :func:`print_summary` prints the
per-controller results as a table.
"""

from __future__ import annotations

import base64
import html as _html
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from rich.table import Table

from visfore.core import runs
from visfore.core.console import stdout_console
from visfore.planning.config import STATE_SUPERVISED
from visfore.planning.goal_reaching import GoalEpisode, summarize_goal_episodes
from visfore.reports.report_html import (
    fmt,
    html_page,
    html_table,
    jsonable,
    md_table,
    png_data_uri,
    pyplot,
    save_figure,
    write_csv,
)


def _fmt_list(values: Any) -> str:
    """``[-0.30000001, 0.3]`` -> ``[-0.3, 0.3]`` (4 significant digits)."""
    return "[" + ", ".join(f"{float(v):.4g}" for v in (values or [])) + "]"


def _mean_std(stats: Mapping[str, float], n: int, digits: int = 3) -> str:
    """``"0.123 ± 0.045"``; the mean alone for fewer than two episodes (the sample std of
    one value is undefined)."""
    if n < 2:
        return fmt(stats["mean"], digits)
    return f"{fmt(stats['mean'], digits)} ± {fmt(stats['std'], digits)}"


def _plural(count: Any, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


#: What the state-supervised label means, in the report's definitions.
STATE_SUPERVISED_NOTE = (
    "the learned controller's cost reads key points through a probe (train-model --probe "
    "keypoints) or a translator (train-translator), both trained on the dataset's states "
    "(privileged labels), so it does not plan from pixels alone"
)


def _optimizer_text(budget: Mapping[str, Any]) -> str:
    """One line on the optimizer and its budget (``budget`` is ``meta["budget"]``)."""
    opt = str(budget.get("optimizer") or "cem")
    head = (
        f"MPPI (temperature {budget.get('temperature')} on costs normalised by the elites' std, "
        f"std clamped to [{budget.get('min_std')}, {budget.get('max_std')}] half-ranges)"
        if opt == "mppi"
        else f"CEM (min std {budget.get('min_std')} half-ranges, alpha {budget.get('alpha')})"
    )
    executes = "final elite mean" if opt == "cem" else "final weighted mean"
    return (
        f"{head}: {budget.get('iterations')} iterations x {budget.get('samples')} samples, "
        f"{budget.get('elites')} elites, horizon {budget.get('horizon')} steps "
        f"({budget.get('blocks')} blocks x {budget.get('repeat')} repeat), replan every "
        f"{budget.get('replan_every')} step(s)"
        f"{' (horizon shrinks to the episode end)' if budget.get('shrink_horizon') else ''}, init std "
        f"{budget.get('init_std')} half-ranges, executes the "
        f"{executes if budget.get('execute') == 'mean' else 'best sample'}"
    )


def _cost_text(meta: Mapping[str, Any]) -> str:
    """One line on the learned controller's cost: weighted terms, steps, key-point source."""
    weights = meta.get("cost_weights") or {}
    terms = " + ".join(f"{float(w):g} x {t}" for t, w in weights.items()) or str(meta.get("cost"))
    text = f"{terms} on {meta.get('cost_frames')} step(s)"
    if "pixels" in weights:
        text += f", Gaussian blur sigma {meta.get('pixel_blur')} px"
    if "latent" in weights:
        text += ", latent: squared L2 of imagined features to the goal image's (no decoding)"
    if meta.get("translator"):
        text += f", translator {meta.get('translator')}"
    if meta.get("keypoint_source") == "probe":
        text += ", key points from the model's probe"
    if meta.get("state_supervised"):
        text += f" ({STATE_SUPERVISED})"
    return text


def _summary_rows(summary: Mapping[str, dict], thresholds: Sequence[float]) -> tuple[list[str], list[list[str]]]:
    header = ["controller", "episodes", "success"]
    header += [f"success @{t:g} m" for t in thresholds]
    header += ["final dist. mean ± std (m)", "median (m)", "min dist. mean (m)",
               "initial dist. (m)", "s/step"]  # fmt: skip
    rows = []
    for name, s in summary.items():
        fd = s["final_distance"]
        row = [name, str(s["n"]), f"{100 * s['success_rate']:.0f}%"]
        row += [f"{100 * s.get(f'success_rate@{t:g}', math.nan):.0f}%" for t in thresholds]
        row += [
            _mean_std(fd, int(s["n"])), fmt(fd["median"], 3),
            fmt(s["min_distance_mean"], 3), fmt(s["initial_distance_mean"], 3),
            fmt(s["seconds_per_step_mean"], 3),
        ]  # fmt: skip
        rows.append(row)
    return header, rows


def _distance_plot(episodes: Sequence[Any], path: Path, threshold: float) -> Path | None:
    groups: dict[str, list[list[float]]] = {}
    for e in episodes:
        if e.distances:
            groups.setdefault(e.controller, []).append([e.initial_distance, *e.distances])
    if not groups:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, rows in groups.items():
        L = max(len(r) for r in rows)
        arr = np.full((len(rows), L), np.nan)
        for i, r in enumerate(rows):
            arr[i, : len(r)] = r
        mean = np.nanmean(arr, axis=0)
        ax.plot(np.arange(L), mean, label=f"{name} (n={len(rows)})")
        lo, hi = np.nanpercentile(arr, 25, axis=0), np.nanpercentile(arr, 75, axis=0)
        ax.fill_between(np.arange(L), lo, hi, alpha=0.15)
    if math.isfinite(threshold):
        ax.axhline(threshold, color="k", ls=":", lw=1, label=f"success threshold {threshold:g} m")
    ax.set_xlabel("step")
    ax.set_ylabel("key-point distance to target (m)")
    ax.set_title("mean distance per step (band: 25-75th percentile)")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def write_report(out: Path, meta: Mapping[str, Any], episodes: Sequence[Any]) -> dict[str, Any]:
    """Write ``episodes.csv/.json``, ``summary.json``, ``report.md``, ``report.html`` and
    ``distance.png`` into ``out`` (atomically). Returns ``{"summary", "files"}``."""
    thresholds = tuple(meta.get("extra_thresholds") or ())
    summary = summarize_goal_episodes(episodes, thresholds)
    files: dict[str, Path] = {}
    fields = list(GoalEpisode.__dataclass_fields__)
    fields.remove("distances")
    files["episodes.csv"] = write_csv(out / "episodes.csv", fields, [e.row() for e in episodes])
    files["episodes.json"] = runs.write_json(out / "episodes.json", jsonable([e.to_dict() for e in episodes]))
    files["summary.json"] = runs.write_json(
        out / "summary.json", jsonable({"meta": dict(meta), "controllers": summary})
    )
    threshold = float(meta.get("success_threshold") or math.nan)
    plot = _distance_plot(episodes, out / "distance.png", threshold)
    if plot is not None:
        files["distance.png"] = plot
    header, rows = _summary_rows(summary, thresholds)

    budget = meta.get("budget", {})
    facts = [
        ("env", f"{meta.get('env_id')} {meta.get('env_kwargs') or ''}".strip()),
        ("frames", f"{meta['frame_size'][0]}x{meta['frame_size'][1]}"),
        ("model", meta.get("model") or "-"),
        ("model budget", meta.get("model_budget") or "-"),
        *([("model supervision", str(meta["model_supervision"]))] if meta.get("model_supervision") else []),
        ("goal", meta.get("goal")),
        ("optimizer", _optimizer_text(budget)),
        (
            "action bounds",
            f"{_fmt_list(meta.get('action_low'))} .. {_fmt_list(meta.get('action_high'))} (action scale "
            f"{meta.get('action_scale')}; CEM and random; a through-model policy "
            "keeps its own bounds)",
        ),
        ("cost (learned)", _cost_text(meta)),
        ("cost (oracle)", str(meta.get("oracle_cost_resolved"))),
        (
            "episodes",
            f"{meta.get('episodes_done')} of {meta.get('episodes')} per controller, "
            f"{_plural(meta.get('steps_per_episode'), 'step')}, seed {meta.get('seed')}"
            + (" (interrupted)" if meta.get("interrupted") else ""),
        ),
        ("success", f"final key-point distance < {threshold:g} m"),
        (
            "device",
            f"{meta.get('device')}, {meta.get('torch_threads')} torch thread(s)"
            + (", mixed precision (autocast)" if meta.get("amp") else ""),
        ),
        ("wall time", f"{meta.get('seconds', 0):.0f} s"),
        ("created", str(meta.get("created"))),
        ("command", f"`{meta.get('command')}`"),
    ]
    gifs = sorted((out / "gifs").glob("*.gif")) if (out / "gifs").is_dir() else []
    md = [f"# visfore plan: {meta.get('env_id')}", ""]
    md += [f"- **{k}:** {v}" for k, v in facts]
    md += ["", "## Results", "", md_table(header, rows), ""]
    md += [
        "## Definitions", "",
        "- **success:** final key-point distance ||k - k*|| (elbow and fingertip vs the target "
        "pose, metres) below the threshold after the last step",
        "- **final dist.:** that distance after the last step (mean ± sample std over episodes, "
        "the mean alone for one episode); "
        "**min dist.:** the smallest distance during the episode",
        "- **s/step:** wall time the controller spent choosing actions, per step (planning "
        "time amortised over the steps between replans)",
        "- **oracle-cem / oracle-mppi:** the same optimizer and budget on the true simulator "
        "(cloned MuJoCo state); "
        "**random:** uniform actions in the bounds; every controller sees the same initial "
        "states and targets (common random numbers)",
    ]  # fmt: skip
    if meta.get("state_supervised"):
        md.append(f"- **{STATE_SUPERVISED}:** {STATE_SUPERVISED_NOTE}")
    md.append("")
    if plot is not None:
        md += ["![distance](distance.png)", ""]
    if gifs:
        md += ["## GIFs (observation | imagined best rollout, last frame | goal)", ""]
        md += [f"- [{g.name}](gifs/{g.name})" for g in gifs]
        md.append("")
    files["report.md"] = runs.atomic_write_text(out / "report.md", "\n".join(md))

    esc = _html.escape
    body = [f"<h1>visfore plan: {esc(str(meta.get('env_id')))}</h1><dl>"]
    body += [f"<dt>{esc(k)}</dt><dd>{esc(str(v).strip('`'))}</dd>" for k, v in facts]
    body += ["</dl><h2>Results</h2>", html_table(header, rows)]
    if plot is not None:
        body.append(f'<img alt="distance" src="{png_data_uri(plot)}">')
    if gifs:
        body.append("<h2>First episode of each controller (observation | imagined | goal)</h2>")
        shown = set()
        for g in gifs:
            ctrl = g.name.rsplit("-ep", 1)[0]
            if ctrl in shown:
                continue
            shown.add(ctrl)
            uri = "data:image/gif;base64," + base64.b64encode(g.read_bytes()).decode("ascii")
            body.append(f'<p>{esc(g.name)}<br><img alt="{esc(g.name)}" src="{uri}"></p>')
    files["report.html"] = runs.atomic_write_text(out / "report.html", html_page("visfore plan", body))
    return {"summary": summary, "files": files}


def print_summary(result: Mapping[str, Any], console: Any = None) -> None:
    """Print the per-controller results as a rich table and the report path."""
    console = console or stdout_console()
    meta = result["meta"]
    header, rows = _summary_rows(result["summary"], meta.get("extra_thresholds") or ())
    table = Table(title=f"visfore plan: {meta['env_id']} (success: final distance < {meta['success_threshold']:g} m)")
    for i, h in enumerate(header):
        table.add_column(h, justify="left" if i == 0 else "right", no_wrap=i == 0)
    for row in rows:
        table.add_row(*row)
    console.print(table)
    console.print(f"report: {result['out']}/report.md", highlight=False, soft_wrap=True)
