"""The real-env evaluation of a through-model policy and the run's summary:
:func:`evaluate_in_env` runs the policy for real episodes with
:func:`visfore.planning.goal_reaching.run_goal_episodes` (the same seeding, success
threshold and metrics as ``visfore plan``), ``eval/episodes.csv`` holds one row per
episode, and :func:`print_summary` prints the training result and the evaluation as a
rich table.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Mapping, Sequence

from rich.table import Table

from visfore.core import runs
from visfore.core.console import stdout_console
from visfore.core.progress import episode_progress
from visfore.planning.goal_reaching import (
    make_goal_env,
    run_goal_episodes,
    summarize_goal_episodes,
)
from visfore.planning.through_model_policy import LatentThroughModelPolicy, ThroughModelPolicy

__all__ = [
    "evaluate_in_env",
    "print_summary",
]

EVAL_DIR = "eval"
EPISODES_CSV = "episodes.csv"
#: Extra success thresholds reported next to the env's own (metres).
EXTRA_THRESHOLDS = (0.05,)


def evaluate_in_env(
    policy: ThroughModelPolicy | LatentThroughModelPolicy,
    env_id: str,
    env_kwargs: Mapping[str, Any] | None,
    size: Sequence[int],
    *,
    episodes: int,
    seed: int,
    steps: int | None = None,
    success_threshold: float | None = None,
    gif_dir: Path | None = None,
    progress: bool = False,
) -> tuple[list[Any], dict[str, Any]]:
    """Run ``policy`` for ``episodes`` real episodes (:func:`visfore.planning.goal_reaching.run_goal_episodes`,
    episode k reset with ``SeedSequence([seed, k])``, as ``visfore plan``).

    Returns:
        ``(episodes, summary)``: the :class:`visfore.planning.goal_reaching.GoalEpisode` list and the
        policy's entry of :func:`visfore.planning.goal_reaching.summarize_goal_episodes` (with
        ``success_rate@0.05``).

    Raises:
        VisforeError: the env cannot be made, frames of another size than the policy's.
    """
    with episode_progress(progress, "episodes") as bar:
        task = bar.add_task(f"eval {policy.name}", total=episodes)
        eps = run_goal_episodes(
            lambda: make_goal_env(env_id, env_kwargs, tuple(size)),
            policy,
            episodes=episodes,
            seed=seed,
            steps=steps,
            success_threshold=success_threshold,
            gif_dir=gif_dir,
            progress=lambda e: bar.advance(task),
        )
    summary = summarize_goal_episodes(eps, thresholds=EXTRA_THRESHOLDS)[policy.name]
    return eps, summary


def _write_episodes_csv(path: Path, episodes: Sequence[Any]) -> None:
    rows = [e.row() for e in episodes]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["controller"])
    writer.writeheader()
    writer.writerows(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    runs.atomic_write_text(path, buf.getvalue())


def _num(x: Any) -> str:
    return "-" if x is None else f"{float(x):.5f}"


def print_summary(metrics: Mapping[str, Any], console: Any = None) -> None:
    """Print the training result and the real-env evaluation as a rich table."""
    console = console or stdout_console()
    spi = metrics.get("seconds_per_iteration")
    head = f"{metrics['iterations']} iterations in {metrics['train_seconds']:.0f} s" + (
        f" ({spi:.2f} s/iteration)" if spi else ""
    )
    if "final_val_goal_cost" in metrics:  # a latent model
        start = metrics.get("val_start") or {}
        console.print(
            f"{head}; imagined goal cost {metrics['final_val_goal_cost']:.5f} (best "
            f"{_num(metrics.get('best_val_goal_cost'))} at {metrics['best_iteration']}; start state "
            f"{_num(start.get('goal_cost'))}), latent distance {metrics['final_val_goal_latent']:.5f} (start "
            f"{_num(start.get('latent'))}); {metrics.get('supervision', 'self-supervised')}; run: {metrics['run_dir']}"
        )
    else:
        console.print(
            f"{head}; imagined goal MSE {metrics['final_val_goal_mse']:.5f} (best {metrics['best_val_goal_mse']:.5f} at "
            f"{metrics['best_iteration']}; start frame {metrics['val_start_mse']:.5f}); run: {metrics['run_dir']}"
        )
    ev = metrics.get("eval")
    if not ev:
        return
    s = ev["summary"]
    label = " (state-supervised)" if str(metrics.get("supervision", "")).startswith("state-supervised") else ""
    table = Table(title=f"through-model policy{label} on {metrics['env']['id']}: {s['n']} episodes (seed {ev['seed']})")
    for col in (
        "success",
        "success@0.05",
        "final dist. mean",
        "std",
        "median",
        "min dist. mean",
        "initial dist.",
        "s/step",
    ):
        table.add_column(col, justify="right")
    fd = s["final_distance"]

    def f(x: Any, spec: str) -> str:
        return "-" if x is None else format(x, spec)

    table.add_row(
        f(s["success_rate"], ".0%"),
        f(s.get("success_rate@0.05"), ".0%"),
        f(fd["mean"], ".3f"),
        "n/a" if s["n"] == 1 else f(fd["std"], ".3f"),  # the spread of one episode is undefined
        f(fd["median"], ".3f"),
        f(s["min_distance_mean"], ".3f"),
        f(s["initial_distance_mean"], ".3f"),
        f(s["seconds_per_step_mean"], ".4f"),
    )
    console.print(table)
