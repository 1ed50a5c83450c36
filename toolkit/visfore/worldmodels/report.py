"""The results table of ``train-model`` (printed by the command, not by the pipeline)."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from visfore.core.console import stdout_console
from visfore.worldmodels.evaluation import FOREGROUND_THRESHOLD

__all__ = ["latent_lines", "print_metrics_table", "summary_line"]


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
    copy-last-frame on both PSNR and SSIM. A first line names the model and the run's
    supervision (``rssm, state-supervised (probe: keypoints)``); latent models add the
    action sensitivity in latent space and, with a probe, its key-point error
    (:func:`latent_lines`)."""
    console = console or stdout_console()
    K = metrics["horizon"]
    with_lpips = bool(metrics.get("lpips", {}).get("computed"))
    supervision = metrics.get("supervision")
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
    if supervision:
        console.print(f"{metrics['model_name']}, {supervision}", markup=False)
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
    for line in latent_lines(metrics):
        console.print(line, markup=False)
    if not with_lpips and metrics.get("lpips"):
        console.print(metrics["lpips"]["note"])
    console.print(summary_line(metrics))


def latent_lines(metrics: dict[str, Any]) -> list[str]:
    """The latent-space lines of the table (none for pixel models):

    ``shuffled actions move the imagined features by 0.42 x their scale (sampling noise
    alone: 0.10 x)`` and, with a probe, ``state-supervised probe: key-point error 1.23 cm at step 1, 3.45 cm at step K, mean 2.34 cm (copy-last-state
    2.00 cm; on observed frames 0.80 cm); joint error 5.6 deg``."""
    lines = []
    sens = metrics.get("latent_action_sensitivity")
    if sens and sens.get("relative") is not None:
        noise = sens.get("resample_relative")
        lines.append(
            f"latent space: shuffled actions move the imagined features by {_fmt(sens['relative'], '.2f')} x "
            f"their scale" + (f" (sampling noise alone: {_fmt(noise, '.2f')} x)" if noise is not None else "")
        )
    probe = metrics.get("probe")
    if probe:
        kp = probe["model"].get("keypoint_error_cm") or []
        base = probe["copy_last_state"]["mean"].get("keypoint_error_cm")
        observed = probe.get("observed", {}).get("keypoint_error_cm")
        joint = probe["model"]["mean"].get("joint_error_deg")
        velocity = probe["model"]["mean"].get("velocity_error_rad_s")
        K = len(kp)
        lines.append(
            f"state-supervised probe: key-point error {_fmt(kp[0] if kp else None, '.2f')} cm at step 1, "
            f"{_fmt(kp[-1] if kp else None, '.2f')} cm at step {K}, mean "
            f"{_fmt(probe['model']['mean'].get('keypoint_error_cm'), '.2f')} cm (copy-last-state "
            f"{_fmt(base, '.2f')} cm; on observed frames {_fmt(observed, '.2f')} cm)"
            + (f"; joint error {_fmt(joint, '.1f')} deg" if joint is not None else "")
            + (f"; joint velocity error {_fmt(velocity, '.2f')} rad/s" if velocity is not None else "")
        )
    return lines


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
