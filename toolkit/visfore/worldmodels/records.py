"""The records of a ``train-model`` run: ``config.yaml`` (:func:`config_record`) and
the core of ``metrics.json`` (:func:`metrics_record`).

Both say how the run was supervised (:func:`supervision_label`), under the key
``supervision``: ``"self-supervised"`` (frames and actions only) or ``"state-supervised
(probe: keypoints)"`` (``--probe keypoints``: a read-out probe trained on the dataset's
states, the only privileged information; every downstream report should carry the label).
With a probe, ``config.yaml`` also has the probe's layout (``probe``:
:meth:`visfore.data.labels.ProbeLayout.to_dict`)."""

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
from visfore.worldmodels.evaluation import FOREGROUND_THRESHOLD, LATENT_DEFINITIONS, json_float, summary
from visfore.worldmodels.training_data import TrainingData, attrs_summary

__all__ = ["COMMAND", "SELF_SUPERVISED", "config_record", "metrics_record", "supervision_label"]

COMMAND = "train-model"
#: The label of a run without a probe.
SELF_SUPERVISED = "self-supervised"


def supervision_label(probe: str | None) -> str:
    """``"self-supervised"`` for ``--probe none`` (or None), else ``"state-supervised (probe:
    <kind>)"``: the words every report of the run carries."""
    return SELF_SUPERVISED if probe in (None, "none") else f"state-supervised (probe: {probe})"


def config_record(
    config: TrainConfig,
    run_dir: Path,
    ds: Any,
    data: TrainingData,
    model: Any,
    device: Any,
    num_threads: int | None,
    probe_layout: Any = None,
) -> dict[str, Any]:
    """``config.yaml`` of a new run; ``probe_layout`` (a
    :class:`visfore.data.labels.ProbeLayout`, with ``--probe``) becomes its ``probe``."""
    options = json.loads(json.dumps(config.to_dict()))
    options["data"] = storage.resolve(config.data) if config.data else None  # abs path or URL
    options["out"] = str(run_dir)
    lengths = ds.episode_lengths
    record: dict[str, Any] = {
        "command": COMMAND,
        "created": runs.utc_timestamp(),
        "run_dir": str(run_dir.resolve()),
        "supervision": supervision_label(config.probe),
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
            "latent": bool(getattr(model, "latent", False)),
        },
        "runtime": {
            "device": str(device),
            "torch_threads": num_threads,
            "torch_version": str(torch.__version__),
            "visfore_version": visfore.__version__,
        },
    }
    if probe_layout is not None:
        record["probe"] = probe_layout.to_dict()
    return record


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
    comparisons with the baselines and shuffled actions, counts and the loop's counters;
    ``supervision``; for latent models ``latent_action_sensitivity`` and, with a probe,
    ``probe`` (:func:`latent_records`)."""
    out: dict[str, Any] = {
        "supervision": supervision_label(config.probe),
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
    out.update(latent_records(final, config.probe))
    if "latent" in final:
        definitions = {**definitions, **LATENT_DEFINITIONS}
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


def _steps(values: Any) -> list[float | None]:
    return [json_float(v) for v in values]


def _step_mean(values: Any) -> float | None:
    finite = [v for v in _steps(values) if v is not None]
    return sum(finite) / len(finite) if finite else None


def latent_records(final: dict[str, Any], probe: str | None) -> dict[str, Any]:
    """The latent-space entries of ``metrics.json`` from an evaluation of a latent model
    (``{}`` for a pixel model):

    * ``latent_action_sensitivity``: ``relative`` (the mean over steps of
      ``relative_per_step``: feature distance between rollouts under the clips' own and
      shuffled actions over the feature scale), ``feature_distance_per_step``,
      ``feature_scale_per_step``, ``feature_scale``, ``feature_dim``, and for stochastic
      models ``resample_relative`` (the same for a second sample under the same actions:
      the noise floor) with its per-step lists;
    * ``probe`` (with ``--probe``): ``label`` (state-supervised), ``kind``, ``layout``
      (:meth:`~visfore.data.labels.ProbeLayout.to_dict`), ``model`` and
      ``copy_last_state`` (per-step ``keypoint_error_cm`` and ``joint_error_deg`` with
      their means, :func:`~visfore.worldmodels.evaluation.summary`), ``observed`` (the
      read-out error on real frames), ``beats_copy_last_state`` (mean key-point error lower).
    """
    out: dict[str, Any] = {}
    latent = final.get("latent")
    if latent is None:
        return out
    sens: dict[str, Any] = {
        "feature_dim": latent["feature_dim"],
        "feature_scale": json_float(latent["feature_scale_pooled"]),
        "feature_scale_per_step": _steps(latent["feature_scale"]),
    }
    if "relative_shuffled" in latent:
        sens["relative"] = _step_mean(latent["relative_shuffled"])
        sens["relative_per_step"] = _steps(latent["relative_shuffled"])
        sens["feature_distance_per_step"] = _steps(latent["feature_distance_shuffled"])
    if "relative_resample" in latent:
        sens["resample_relative"] = _step_mean(latent["relative_resample"])
        sens["resample_relative_per_step"] = _steps(latent["relative_resample"])
        sens["resample_distance_per_step"] = _steps(latent["feature_distance_resample"])
    sens["note"] = (
        "latent space: imagined features (model.features) under each clip's own actions vs the whole action "
        "sequence of another clip (the shuffled-actions derangement), mean distance / feature scale per step; "
        "0 = the actions change nothing"
    )
    out["latent_action_sensitivity"] = sens
    if "probe" in final:
        p = final["probe"]
        model_part, base = summary(p["model"]), summary(p["copy_last_state"])
        mine, theirs = model_part["mean"].get("keypoint_error_cm"), base["mean"].get("keypoint_error_cm")
        out["probe"] = {
            "label": supervision_label(probe),
            "kind": probe,
            "layout": p["layout"].to_dict(),
            "model": model_part,
            "copy_last_state": base,
            "observed": {k: json_float(v) for k, v in p["observed"].items()},
            "beats_copy_last_state": mine is not None and theirs is not None and mine < theirs,
            "note": "open loop: the probe read off the features of the imagined states at steps 1..K against "
            "the true key points (cm) and joint angles (degrees) of those frames",
        }
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
