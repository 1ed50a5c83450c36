"""The records of a ``train-model`` run: ``config.yaml`` (:func:`config_record`) and
the core of ``metrics.json`` (:func:`metrics_record`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

import visfore
from visfore.core import runs
from visfore.core.trainer import TrainState
from visfore.data import storage
from visfore.worldmodels.config import TrainConfig
from visfore.worldmodels.evaluation import FOREGROUND_THRESHOLD, summary
from visfore.worldmodels.training_data import TrainingData, attrs_summary

__all__ = ["COMMAND", "config_record", "metrics_record"]

COMMAND = "train-model"


def config_record(
    config: TrainConfig, run_dir: Path, ds: Any, data: TrainingData, model: Any, device: Any, num_threads: int | None
) -> dict[str, Any]:
    options = json.loads(json.dumps(config.to_dict()))
    options["data"] = storage.resolve(config.data) if config.data else None  # abs path or URL
    options["out"] = str(run_dir)
    lengths = ds.episode_lengths
    return {
        "command": COMMAND,
        "created": runs.utc_timestamp(),
        "run_dir": str(run_dir.resolve()),
        "options": options,
        "dataset": {
            "path": options["data"],
            "num_episodes": ds.num_episodes,
            "num_rows": ds.num_rows,
            "frame_shape": list(ds.frame_shape),
            "action_dim": ds.action_dim,
            "episode_frames": {"min": int(lengths.min()), "max": int(lengths.max())},
            "attrs": attrs_summary(ds.attrs),
        },
        "split": {
            "by": "episode",
            "seed": config.seed,
            "val_fraction": config.val_fraction,
            "train_episodes": [int(e) for e in data.train_episodes],
            "val_episodes": [int(e) for e in data.val_episodes],
            "excluded_short_episodes": [int(e) for e in data.excluded_episodes],
            "num_train_clips": len(data.train),
            "num_val_clips": len(data.val),
            "num_padded_train_clips": int(data.train.num_padded),
            "num_padded_val_clips": int(data.val.num_padded),
        },
        "model": {
            "name": model.name,
            "config": json.loads(json.dumps(model.config())),
            "num_parameters": int(model.num_parameters()),
            "stochastic": bool(getattr(model, "stochastic", False)),
        },
        "runtime": {
            "device": str(device),
            "torch_threads": num_threads,
            "torch_version": str(torch.__version__),
            "visfore_version": visfore.__version__,
        },
    }


def metrics_record(
    config: TrainConfig,
    final: dict[str, Any],
    definitions: dict[str, str],
    model: Any,
    data: TrainingData,
    state: TrainState,
    eval_seconds: float,
    device: Any,
    run_dir: Path,
) -> dict[str, Any]:
    """The core of ``metrics.json``: the summaries of the final evaluation ``final``, the
    comparisons with the baselines and shuffled actions, counts and the loop's counters."""
    out: dict[str, Any] = {
        "evaluation": "open-loop on held-out validation episodes (the model feeds back its own "
        "predictions; no teacher forcing); per horizon step k = 1..K; padded steps of short "
        "episodes excluded",
        "data_range": 1.0,
        "context": config.context,
        "horizon": config.horizon,
        "foreground_threshold": FOREGROUND_THRESHOLD,
    }
    for part in ("model", "best_of_n", "copy_last_frame", "mean_frame", "shuffled_actions"):
        if part in final:
            out[part] = summary(final[part])
    out["valid_clips_per_step"] = [int(c) for c in final["valid_clips_per_step"]]

    _baseline_comparisons(out)
    note = final.get("lpips_note") or "LPIPS skipped: not requested"
    out["lpips"] = {"computed": "lpips" in final.get("model", {}), "note": note}
    out["definitions"] = dict(definitions)
    out["metric_definitions"] = dict(definitions)  # the earlier name, kept for readers of v1
    out.update(
        {
            "num_val_clips": final["num_clips"],
            "num_val_episodes": final["num_episodes"],
            "num_train_clips": len(data.train),
            "num_train_episodes": int(len(data.train_episodes)),
            "num_parameters": int(model.num_parameters()),
            "model_name": config.model,
            "epochs": config.epochs,
            "epochs_completed": state.epoch,
            "epoch_step": state.epoch_step,
            "global_step": state.global_step,
            "stopped_early": state.stopped_early,
            "train_seconds": state.train_seconds,
            "eval_seconds": eval_seconds,
            "device": str(device),
            "checkpoint": "checkpoints/last.pt",  # the evaluated weights
            "run_dir": str(run_dir),
            "history": state.history,
        }
    )
    return out


def _gain(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _baseline_comparisons(out: dict[str, Any]) -> None:
    """``beats_<baseline>`` and ``action_sensitivity`` of a metrics record (in place)."""
    gain = _gain
    m = out["model"]["mean"]
    for base in ("copy_last_frame", "mean_frame"):
        if base not in out:
            continue
        b = out[base]["mean"]
        psnr_ok = m["psnr"] is not None and b["psnr"] is not None and m["psnr"] > b["psnr"]
        ssim_ok = m["ssim"] is not None and b["ssim"] is not None and m["ssim"] > b["ssim"]
        out[f"beats_{base}"] = {
            "psnr": psnr_ok,
            "ssim": ssim_ok,
            "both": psnr_ok and ssim_ok,
            "psnr_gain_db": gain(m["psnr"], b["psnr"]),
            "ssim_gain": gain(m["ssim"], b["ssim"]),
            "foreground_psnr_gain_db": gain(m.get("foreground_psnr"), b.get("foreground_psnr")),
        }
    if "shuffled_actions" in out:
        s = out["shuffled_actions"]["mean"]
        drop_steps = [gain(a, b) for a, b in zip(out["model"]["psnr"], out["shuffled_actions"]["psnr"])]
        out["action_sensitivity"] = {
            "psnr_drop_db": gain(m["psnr"], s["psnr"]),
            "psnr_drop_db_per_step": drop_steps,
            "foreground_psnr_drop_db": gain(m.get("foreground_psnr"), s.get("foreground_psnr")),
            "ssim_drop": gain(m["ssim"], s["ssim"]),
            "mse_ratio": s["mse"] / m["mse"] if m["mse"] and s["mse"] is not None else None,
            "note": "shuffled_actions: each validation clip gets the whole action sequence of "
            "another validation clip (a seeded derangement); a model that uses its actions "
            "must get worse",
        }
