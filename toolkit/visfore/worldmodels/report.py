"""The results table of ``train-model`` (printed by the command, not by the pipeline)."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from visfore.core.console import stdout_console
from visfore.worldmodels.evaluation import FOREGROUND_THRESHOLD

__all__ = ["print_metrics_table", "summary_line"]


def _fmt(value: Any, spec: str) -> str:
    """``value`` formatted with ``spec``; ``-`` for None. A value that rounds to zero
    prints without a minus sign (``0.00``, ``+0.00``; never ``-0.00``)."""
    if value is None:
        return "-"
    text = format(value, spec)
    try:
        if float(text) == 0.0:
            return format(0.0, spec)
    except ValueError:  # not a plain number (e.g. inf, nan)
        pass
    return text


def print_metrics_table(metrics: dict[str, Any], console: Any = None) -> None:
    """Print the open-loop evaluation as a rich table (model / best-of-N / copy-last-frame /
    mean-frame / shuffled actions: mean PSNR, foreground PSNR, SSIM, MSE (and LPIPS) over
    the K-step horizon, PSNR at steps 1 and K) and a line saying whether the model beats
    copy-last-frame on both PSNR and SSIM."""
    console = console or stdout_console()
    K = metrics["horizon"]
    with_lpips = bool(metrics.get("lpips", {}).get("computed"))
    table = Table(
        title=f"open-loop {K}-step prediction, {metrics['num_val_clips']} clips of "
        f"{metrics['num_val_episodes']} held-out episodes",
        caption=f"means over the {K} horizon steps; PSNR and SSIM with data range 1.0; "
        f"FG = foreground PSNR (pixels that move, threshold {metrics.get('foreground_threshold', FOREGROUND_THRESHOLD)})",
    )
    table.add_column("predictor", no_wrap=True)
    for title in ("PSNR dB", "FG PSNR", "SSIM", "MSE") + (("LPIPS",) if with_lpips else ()) + ("PSNR@1", f"PSNR@{K}"):
        table.add_column(title, justify="right", no_wrap=True)
    stochastic = metrics.get("stochastic", {})
    n = stochastic.get("eval_samples", 1)
    model_label = f"model ({metrics['model_name']}" + (f", mean of {n})" if stochastic.get("stochastic") else ")")
    names = {
        "model": model_label,
        "best_of_n": f"best of {n} samples",
        "copy_last_frame": "copy-last-frame",
        "mean_frame": "mean-frame",
        "shuffled_actions": "shuffled-actions",
    }
    for part, label in names.items():
        if part not in metrics:
            continue
        r = metrics[part]
        mean = r["mean"]
        row = [
            label,
            _fmt(mean["psnr"], ".2f"),
            _fmt(mean.get("foreground_psnr"), ".2f"),
            _fmt(mean["ssim"], ".4f"),
            _fmt(mean["mse"], ".5f"),
        ]
        if with_lpips:
            row.append(_fmt(mean.get("lpips"), ".4f"))
        row += [_fmt(r["psnr"][0], ".2f"), _fmt(r["psnr"][-1], ".2f")]
        table.add_row(*row)
    console.print(table)
    beat = metrics["beats_copy_last_frame"]
    verdict = "[green]yes[/green]" if beat["both"] else "[red]no[/red]"
    console.print(
        f"model beats copy-last-frame on both PSNR and SSIM: {verdict} "
        f"(PSNR {_fmt(beat['psnr_gain_db'], '+.2f')} dB, SSIM {_fmt(beat['ssim_gain'], '+.4f')})"
    )
    if "action_sensitivity" in metrics:
        a = metrics["action_sensitivity"]
        console.print(
            f"shuffled actions cost {_fmt(a['psnr_drop_db'], '.2f')} dB PSNR and {_fmt(a['ssim_drop'], '.4f')} SSIM"
        )
    if not with_lpips and metrics.get("lpips"):
        console.print(metrics["lpips"]["note"])
    console.print(summary_line(metrics))


def summary_line(metrics: dict[str, Any]) -> str:
    """The run's one-line result (epochs, steps, speed, run directory): the table's last
    line, and all that ``train-model --quiet`` prints. A resumed run that trained nothing
    this time (``metrics["session"]["evaluate_only"]``) says it only evaluated."""
    sps = metrics.get("samples_per_second")
    fps = metrics.get("inference_frames_per_second")
    done = f"{metrics['epochs_completed']}/{metrics['epochs']} epochs ({metrics['global_step']} steps)"
    seconds = f"{metrics['train_seconds']:.0f} s"
    if (metrics.get("session") or {}).get("evaluate_only"):
        head = f"nothing to train: {done} already trained in {seconds}; evaluated only"
    else:
        head = f"trained {done} in {seconds}" + (f" ({sps:.1f} clips/s)" if sps else "") + ", evaluated"
    return (
        head
        + f" in {metrics['eval_seconds']:.0f} s"
        + (f" ({fps:.0f} predicted frames/s)" if fps else "")
        + f"; run: {metrics['run_dir']}"
    )
