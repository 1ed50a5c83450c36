"""Every forward model on the same reacher dataset under the same wall-clock budget.

Each model of ``visfore_models.MODELS`` is trained by ``visfore.worldmodels.training.train_model``
(the API of ``visfore train-model``) on the same dataset, split and seed, for ``--minutes``
of training (``--time-budget``; the epoch count is only an upper bound and the learning
rate is constant, so the budget alone sets the run length). The same final weights
(``checkpoints/last.pt``) are then scored open-loop on the held-out episodes at two
horizons:

* 10 steps: the trainer's own final evaluation (``metrics.json``);
* 28 steps: :func:`visfore.worldmodels.evaluation.evaluate_open_loop` on clips of context 2 + 28
  frames of the same validation episodes (episodes need >= 30 frames; otherwise "-").

One table: PSNR / SSIM / foreground PSNR / action sensitivity (PSNR lost with shuffled
actions) at both horizons, parameters, training samples/s and inference frames/s, next to
the copy-last-frame and mean-frame baselines. Floors, checked on the best model (highest
10-step PSNR):

1. it beats copy-last-frame by >= 1.5 dB PSNR over 10 steps;
2. its action sensitivity over 10 steps is >= 1 dB.

PASS/FAIL is printed; the exit status is 1 on FAIL (2 on bad input).

Dataset: ``--data`` (default ``data/demo-reacher.zarr``, the dataset of ``make demo``). If
``--data`` is not given and the default does not exist, it is collected first, as
``make demo`` does: ``visfore collect --env reacher --episodes 240 --steps 30 --size 64
--policy smooth --seed 0``.

Output: ``runs/bench-forward-models-<UTC time>/`` (or ``--out``): one train-model run
directory per model, ``results.json`` and the comparison report of the 10-step
evaluation (:mod:`visfore.reports.comparison_report`).

    python benchmarks/forward_models.py                   # 6 models x 5 min: ~35 min on 2 cores
    python benchmarks/forward_models.py --minutes 0.2 --data small.zarr   # smoke run
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")

DEFAULT_DATA = Path("data/demo-reacher.zarr")
#: The demo collection (Makefile ``demo``): 240 episodes of 30 steps (31 frames), 64x64.
COLLECT = dict(env="reacher", episodes=240, steps=30, size=64, policy="smooth", seed=0)
CONTEXT = 2
SHORT, LONG = 10, 28
GAIN_FLOOR_DB = 1.5
SENSITIVITY_FLOOR_DB = 1.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data", type=Path, default=None, help=f"dataset (default {DEFAULT_DATA}, collected when missing)")
    p.add_argument("--minutes", type=float, default=5.0, help="training minutes per model (default 5)")
    p.add_argument("--models", default=None, help="comma-separated model names (default: every model)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--out", type=Path, default=None, help="output directory (default runs/bench-forward-models-<UTC time>)"
    )
    p.add_argument("--device", default="cpu", help="cpu (default, the CPU budget), auto, cuda")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: physical cores)")
    p.add_argument("--max-val-clips", type=int, default=256, help="evaluation clips per horizon (default 256)")
    p.add_argument("--workers", type=int, default=2, help="processes collecting the dataset when it is missing")
    p.add_argument("--quiet", action="store_true", help="no training progress bars")
    return p.parse_args(argv)


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def ensure_dataset(args: argparse.Namespace) -> Path:
    if args.data is not None:
        if not args.data.exists():
            fail(f"dataset {args.data} does not exist")
        return args.data
    if DEFAULT_DATA.exists():
        return DEFAULT_DATA
    from visfore.data.collect import collect

    print(f"collecting {DEFAULT_DATA} ({COLLECT}) ...", flush=True)
    collect(out=DEFAULT_DATA, workers=args.workers, progress=not args.quiet, **COLLECT)
    return DEFAULT_DATA


def _nanmean(values: Any) -> float | None:
    arr = np.asarray(values, dtype=np.float64)
    finite = arr[np.isfinite(arr)]
    return float(finite.mean()) if finite.size else None


def _means(part: dict[str, Any] | None) -> dict[str, float | None]:
    """Mean over horizon steps of each per-step metric array of ``evaluate_open_loop``."""
    if not part:
        return {}
    return {k: _nanmean(v) for k, v in part.items()}


def evaluate_long(run_dir: Path, horizon: int, *, max_clips: int, seed: int, device: str) -> dict[str, Any] | None:
    """Open-loop metrics of the run's last weights at ``horizon`` on its validation
    episodes (None when no validation episode has ``context + horizon`` frames)."""
    import torch

    from visfore.data.clips import ClipDataset, dataset_mean_frame, load_clip_source
    from visfore.worldmodels.evaluation import FOREGROUND_THRESHOLD, evaluate_open_loop
    from visfore.worldmodels.model_run import load_model_run

    run = load_model_run(run_dir, "last", device=device)
    ds = run.open_dataset()
    source = load_clip_source(ds)
    val = np.asarray(run.val_episodes, dtype=np.int64)
    val = val[source.episode_lengths[val] >= run.context + horizon]
    if val.size == 0:
        return None
    clips = ClipDataset(
        source, val, context=run.context, horizon=horizon, stride=1, max_clips=max_clips, seed=seed + 1, pad_short=False
    )
    if len(clips) == 0:
        return None
    mean_frame = torch.from_numpy(dataset_mean_frame(source, np.asarray(run.train_episodes, dtype=np.int64)))
    eval_samples = int(run.config.get("options", {}).get("eval_samples", 5) or 1)
    result = evaluate_open_loop(
        run.model,
        clips,
        device=run.device,
        batch_size=32,
        shuffle_seed=seed,
        baseline=True,
        mean_frame=mean_frame,
        samples=eval_samples,
        foreground_threshold=FOREGROUND_THRESHOLD,
        seed=seed,
    )
    parts = {
        part: _means(result.get(part))
        for part in ("model", "copy_last_frame", "mean_frame", "shuffled_actions", "best_of_n")
    }
    model_psnr, shuffled_psnr = parts["model"].get("psnr"), parts["shuffled_actions"].get("psnr")
    out: dict[str, Any] = dict(parts)
    out["action_sensitivity_db"] = (
        model_psnr - shuffled_psnr if model_psnr is not None and shuffled_psnr is not None else None
    )
    out["num_clips"] = int(result["num_clips"])
    out["horizon"] = horizon
    return out


def short_from_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """The 10-step numbers from train_model's metrics.json content (missing keys: None)."""

    def mean(part: str, key: str) -> float | None:
        value = ((metrics.get(part) or {}).get("mean") or {}).get(key)
        return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None

    out: dict[str, Any] = {
        part: {k: mean(part, k) for k in ("psnr", "ssim", "mse", "foreground_psnr")}
        for part in ("model", "copy_last_frame", "mean_frame", "best_of_n")
    }
    out["action_sensitivity_db"] = (metrics.get("action_sensitivity") or {}).get("psnr_drop_db")
    out["num_clips"] = metrics.get("num_val_clips")
    out["horizon"] = metrics.get("horizon")
    return out


def fmt(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.minutes > 0:
        fail(f"--minutes must be > 0, got {args.minutes}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import visfore_models
    from rich.console import Console
    from rich.table import Table

    from visfore.core import runs
    from visfore.reports import comparison_report as cr
    from visfore.worldmodels.training import train_model

    models = args.models.split(",") if args.models else list(visfore_models.MODELS)
    unknown = [m for m in models if m not in visfore_models.MODELS]
    if unknown:
        fail(f"unknown model(s) {', '.join(unknown)}; valid: {', '.join(visfore_models.MODELS)}")
    data = ensure_dataset(args)
    from visfore.data.dataset import open_dataset

    ds = open_dataset(data)
    longest = int(ds.episode_lengths.max())
    if CONTEXT + SHORT > longest:
        fail(f"the episodes of {data} have at most {longest} frames; the benchmark needs >= {CONTEXT + SHORT}")
    out_dir = args.out or runs.resolve_run_dir("bench-forward-models")
    if out_dir.exists():
        fail(f"{out_dir} already exists")
    out_dir.mkdir(parents=True)
    console = Console(highlight=False)
    if not console.is_terminal:  # log files: no wrapping at 80 columns
        console = Console(highlight=False, width=max(console.width, 150))
    console.print(
        f"{len(models)} models x {args.minutes:g} min of training on {data} ({ds.num_episodes} episodes, "
        f"{ds.frame_shape[0]}x{ds.frame_shape[1]}, up to {longest} frames) -> {out_dir}"
    )

    results: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    t0 = time.monotonic()
    for name in models:
        console.rule(name)
        run_dir = out_dir / name
        entry: dict[str, Any] = {"model": name, "run_dir": str(run_dir)}
        try:
            metrics = train_model(
                dict(
                    data=str(data),
                    model=name,
                    context=CONTEXT,
                    horizon=SHORT,
                    epochs=100_000,
                    time_budget=args.minutes,
                    lr_schedule="constant",
                    seed=args.seed,
                    out=str(run_dir),
                    device=args.device,
                    num_threads=args.threads,
                    max_val_clips=args.max_val_clips,
                    progress=not args.quiet,
                )
            )
            entry.update(
                status="ok",
                parameters=metrics.get("num_parameters"),
                train_seconds=metrics.get("train_seconds"),
                samples_per_second=metrics.get("samples_per_second"),
                inference_frames_per_second=metrics.get("inference_frames_per_second"),
                short=short_from_metrics(metrics),
            )
            rows.append(cr.run_row(metrics, run=name, model=name, seed=args.seed, run_dir=run_dir))
            entry["long"] = (
                evaluate_long(
                    run_dir,
                    LONG,
                    max_clips=args.max_val_clips,
                    seed=args.seed,
                    device="cpu" if args.device == "cpu" else "auto",
                )
                if CONTEXT + LONG <= longest
                else None
            )
        except KeyboardInterrupt:
            entry.update(status="interrupted")
            results.append(entry)
            console.print("[yellow]interrupted; reporting the models finished so far[/yellow]")
            break
        except Exception as exc:  # noqa: BLE001 - one model failing must not end the benchmark
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            entry.update(status="failed", error=f"{type(exc).__name__}: {message}")
            rows.append(
                cr.run_row(
                    None, run=name, model=name, seed=args.seed, status="failed", error=entry["error"], run_dir=run_dir
                )
            )
            console.print(f"[red]{name} failed: {entry['error']}[/red]")
        results.append(entry)

    # -- table -----------------------------------------------------------------------------
    ok = [r for r in results if r.get("status") == "ok"]
    long_note = f"{LONG}-step: needs episodes of >= {CONTEXT + LONG} frames" if CONTEXT + LONG > longest else ""
    table = Table(
        title=f"forward models, {args.minutes:g} min of training each, open-loop on held-out episodes",
        caption="PSNR in dB; FG = foreground PSNR; act. = PSNR lost with shuffled actions; "
        "samples/s = training clips per second; frames/s = predicted frames per second"
        + (f"; {long_note}" if long_note else ""),
    )
    for col in (
        "predictor",
        "params",
        "samples/s",
        "frames/s",
        f"PSNR@{SHORT}",
        f"SSIM@{SHORT}",
        f"FG@{SHORT}",
        f"act.@{SHORT}",
        f"PSNR@{LONG}",
        f"SSIM@{LONG}",
        f"FG@{LONG}",
        f"act.@{LONG}",
    ):
        table.add_column(col, justify="left" if col == "predictor" else "right")

    def part(entry: dict[str, Any], horizon: str, name: str, key: str) -> Any:
        return ((entry.get(horizon) or {}).get(name) or {}).get(key)

    for r in results:
        if r.get("status") != "ok":
            table.add_row(f"{r['model']} ({r.get('status')})", *["-"] * 11)
            continue
        table.add_row(
            r["model"],
            str(r.get("parameters") or "-"),
            fmt(r.get("samples_per_second"), 1),
            fmt(r.get("inference_frames_per_second"), 0),
            fmt(part(r, "short", "model", "psnr")),
            fmt(part(r, "short", "model", "ssim"), 4),
            fmt(part(r, "short", "model", "foreground_psnr")),
            fmt((r.get("short") or {}).get("action_sensitivity_db")),
            fmt(part(r, "long", "model", "psnr")),
            fmt(part(r, "long", "model", "ssim"), 4),
            fmt(part(r, "long", "model", "foreground_psnr")),
            fmt((r.get("long") or {}).get("action_sensitivity_db")),
        )
    for base, label in (("copy_last_frame", "copy-last-frame"), ("mean_frame", "mean-frame")):

        def avg(horizon: str, key: str, base: str = base) -> float | None:
            values = [part(r, horizon, base, key) for r in ok]
            return _nanmean([v for v in values if v is not None]) if any(v is not None for v in values) else None

        table.add_row(
            label,
            "",
            "",
            "",
            fmt(avg("short", "psnr")),
            fmt(avg("short", "ssim"), 4),
            fmt(avg("short", "foreground_psnr")),
            "",
            fmt(avg("long", "psnr")),
            fmt(avg("long", "ssim"), 4),
            fmt(avg("long", "foreground_psnr")),
            "",
        )
    console.print(table)

    # -- floors ----------------------------------------------------------------------------
    verdict: dict[str, Any] = {"pass": False}
    scored = [r for r in ok if part(r, "short", "model", "psnr") is not None]
    if scored:
        best = max(scored, key=lambda r: part(r, "short", "model", "psnr"))
        psnr, copy = part(best, "short", "model", "psnr"), part(best, "short", "copy_last_frame", "psnr")
        gain = psnr - copy if copy is not None else None
        sens = (best.get("short") or {}).get("action_sensitivity_db")
        gain_ok = gain is not None and gain >= GAIN_FLOOR_DB
        sens_ok = sens is not None and sens >= SENSITIVITY_FLOOR_DB
        verdict = {
            "pass": gain_ok and sens_ok,
            "best_model": best["model"],
            "psnr_gain_db": gain,
            "action_sensitivity_db": sens,
            "gain_floor_db": GAIN_FLOOR_DB,
            "sensitivity_floor_db": SENSITIVITY_FLOOR_DB,
        }
        console.print(f"best model: {best['model']} ({SHORT}-step PSNR {fmt(psnr)} dB)")
        console.print(
            f"  beats copy-last-frame by {fmt(gain)} dB over {SHORT} steps (floor {GAIN_FLOOR_DB} dB): "
            + ("[green]PASS[/green]" if gain_ok else "[red]FAIL[/red]")
        )
        console.print(
            f"  action sensitivity {fmt(sens)} dB over {SHORT} steps (floor {SENSITIVITY_FLOOR_DB} dB): "
            + ("[green]PASS[/green]" if sens_ok else "[red]FAIL[/red]")
        )
    else:
        console.print("[red]FAIL: no model finished[/red]")

    meta = {
        "name": out_dir.name,
        "data": str(data),
        "configurations": len(models),
        "shared": {
            "context": CONTEXT,
            "horizon": SHORT,
            "minutes": args.minutes,
            "seed": args.seed,
            "device": args.device,
            "lr_schedule": "constant",
        },
        "seconds": time.monotonic() - t0,
        "created": runs.utc_timestamp(),
        "command": "python benchmarks/forward_models.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "interrupted": any(r.get("status") == "interrupted" for r in results),
    }
    if rows:
        cr.write_comparison(out_dir, meta, rows)
    from visfore.reports.report_html import jsonable

    runs.write_json(out_dir / "results.json", jsonable({"meta": meta, "verdict": verdict, "models": results}))
    console.print(
        f"{'PASS' if verdict['pass'] else 'FAIL'}; results: {out_dir / 'results.json'}, "
        f"report: {out_dir / 'comparison.html'}"
    )
    return 0 if verdict["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
