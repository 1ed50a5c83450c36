"""The ``train-model`` checkpoint: what ``checkpoints/last.pt`` and ``best.pt`` hold.

A checkpoint is a dict (``torch.save``-d atomically by :func:`visfore.core.runs.save_checkpoint`)::

    format, version          CHECKPOINT_FORMAT, CHECKPOINT_VERSION
    model                    visfore_models.model_state(model): name, config, state_dict
    optimizer, scheduler, scaler   their state dicts (scaler None without a GradScaler)
    epoch, epoch_step, global_step, train_seconds, train_clips, best_val_mse, history
                             the loop's counters (visfore.core.trainer.TrainState)
    partial_loss             [loss sum, clip count, reconstruction-MSE sum] of the unfinished epoch
    partial_aux              {auxiliary-loss key (or "probe"): sum over clips} of the unfinished
                             epoch (absent in checkpoints written before it: empty)
    sampling                 {"mode", "k", "step", "total_steps"}: the scheduled-sampling
                             position and the schedule's span (the first target's steps)
    lr_schedule              {"schedule", "warmup_steps", "total_steps", "from_step",
                             "from_factor"}: the LR schedule (visfore.worldmodels.schedules.lr_lambda;
                             continued to a new --epochs target on resume)
    epochs, metrics, config, world_size
    rng, rng_per_rank        torch / python / CUDA RNG states (of rank 0; of every rank under DDP)

The layout is the one of version 2 (before the port onto :mod:`visfore.core.trainer`), so
runs started before it resume unchanged; :func:`train_state` maps it onto a
:class:`~visfore.core.trainer.TrainState`. ``sampling.total_steps`` and ``lr_schedule``
were added later (still version 2): without them the schedules span ``epochs``.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any, Mapping

import torch

from visfore.core.errors import VisforeError
from visfore.core.trainer import TrainState

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "check_checkpoint",
    "counters",
    "rng_state",
    "set_rng_state",
    "train_state",
]

CHECKPOINT_FORMAT = "visfore-train-model-checkpoint"
CHECKPOINT_VERSION = 2


def rng_state() -> dict[str, Any]:
    """This process's torch, Python and (when present) CUDA RNG states."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Inverse of :func:`rng_state` (CUDA states only when the device count matches)."""
    torch.set_rng_state(state["torch"].cpu())
    random.setstate(tuple(state["python"]) if not isinstance(state["python"], tuple) else state["python"])
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])


def check_checkpoint(ckpt: Mapping[str, Any], path: Path, world_size: int, run_dir: Path) -> None:
    """Refuse a checkpoint that is not a train-model one, of a newer version, or of another
    number of processes.

    Raises:
        VisforeError: one line naming the problem.
    """
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise VisforeError(f"{path} is not a train-model checkpoint")
    version = int(ckpt.get("version", 1))
    if version > CHECKPOINT_VERSION:
        raise VisforeError(
            f"{path} is a version {version} checkpoint; this visfore reads up to "
            f"version {CHECKPOINT_VERSION} (upgrade visfore)"
        )
    saved_world = int(ckpt.get("world_size", 1))
    if saved_world != world_size:
        raise VisforeError(
            f"{run_dir} was trained with {saved_world} process(es); resume it with the same "
            f"number (now {world_size}) to continue exactly"
        )


def counters(state: TrainState) -> dict[str, Any]:
    """The checkpoint's counter entries for ``state`` (the inverse of :func:`train_state`)."""
    partial = (
        [float(state.loss_sum), int(state.loss_count), float(state.extra.get("mse_sum", 0.0))]
        if state.epoch_step
        else [0.0, 0, 0.0]
    )
    aux = {str(k): float(v) for k, v in (state.extra.get("aux_sums") or {}).items()} if state.epoch_step else {}
    return {
        "epoch": state.epoch,
        "epoch_step": state.epoch_step,
        "global_step": state.global_step,
        "train_seconds": state.train_seconds,
        "train_clips": state.train_samples,
        "partial_loss": partial,
        "partial_aux": aux,
        "best_val_mse": state.best,
        "history": state.history,
    }


def train_state(ckpt: Mapping[str, Any]) -> TrainState:
    """The loop's counters saved in ``ckpt`` (``extra``: ``sampling_step``, ``mse_sum``,
    ``aux_sums``)."""
    partial = list(ckpt.get("partial_loss", (0.0, 0)))
    global_step = int(ckpt["global_step"])
    return TrainState(
        epoch=int(ckpt["epoch"]),
        epoch_step=int(ckpt["epoch_step"]),
        global_step=global_step,
        train_seconds=float(ckpt.get("train_seconds", 0.0)),
        train_samples=int(ckpt.get("train_clips", 0)),
        best=float(ckpt.get("best_val_mse", math.inf)),
        history=list(ckpt.get("history", [])),
        loss_sum=float(partial[0]),
        loss_count=int(partial[1]),
        extra={
            "sampling_step": int((ckpt.get("sampling") or {}).get("step", global_step)),
            "mse_sum": float(partial[2]) if len(partial) > 2 else float(partial[0]),
            "aux_sums": {str(k): float(v) for k, v in (ckpt.get("partial_aux") or {}).items()},
        },
    )
