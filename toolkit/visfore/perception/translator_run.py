"""Load a ``visfore train-translator`` run for use: frames in, joint angles and key points out.

:func:`load_translator_run` reads a run directory written by
:mod:`visfore.perception.train_translator` (``config.yaml`` and ``checkpoints/last.pt`` or
``checkpoints/best.pt``) and returns a :class:`TranslatorRun`, whose
:meth:`TranslatorRun.predict` turns uint8 frames (the layout of datasets and of
``env.render()``) into ``{"qpos": (B, nq) rad, "keypoints": (B, G) m}``::

    from visfore.perception.translator_run import load_translator_run
    run = load_translator_run("runs/train-translator-reacher")
    pose = run.predict(frame)            # frame (64, 64, 3) uint8 -> {"qpos": (2,), "keypoints": (4,)}
    run.env_id, run.frame_size           # "ReacherPlane-v0", (64, 64)

The default checkpoint is ``last``: the weights ``metrics.json`` reports on. Every problem
(not a directory, not a translator run, missing or unreadable checkpoint, frames of
another size) is a one-line :class:`~visfore.core.errors.VisforeError`. Checkpoints are read
with ``weights_only=True``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from visfore.core import runs
from visfore.core.device import select_device
from visfore.core.errors import VisforeError
from visfore_models.translator import load_translator

__all__ = ["CHECKPOINTS", "TranslatorRun", "load_translator_run"]

#: ``checkpoint`` values of :func:`load_translator_run`.
CHECKPOINTS = ("last", "best")
_COMMAND = "train-translator"
_CHECKPOINT_FORMAT = "visfore-train-translator-checkpoint"


@dataclass
class TranslatorRun:
    """A trained frame translator and what it was trained for.

    Attributes:
        run_dir: the run directory; config: its ``config.yaml`` (a dict).
        checkpoint: ``"last"`` or ``"best"``; checkpoint_path: the ``.pt`` file loaded.
        model: the :class:`visfore_models.translator.FrameTranslator`, eval mode, on ``device``.
        device: the ``torch.device`` of the model.
        env_id: the env the training frames came from (e.g. ``"ReacherPlane-v0"``);
            env_kwargs: the env options of that dataset (e.g. ``{"show_target": False}``).
        frame_size: (H, W) of the frames it reads.
        memory: frames it looks at (1 = single frame).
        joint_names: nq names in ``qpos`` order; keypoint_names: key-point names, each
            ``axes_per_keypoint`` coordinates in the ``keypoints`` vector (G = names x axes).
        epoch: epochs completed when the checkpoint was written.
        metrics: ``metrics.json`` of the run (None if the run did not finish).
    """

    run_dir: Path
    config: dict[str, Any]
    checkpoint: str
    checkpoint_path: Path
    model: Any
    device: Any
    env_id: str
    env_kwargs: dict[str, Any]
    frame_size: tuple[int, int]
    memory: int
    joint_names: list[str]
    keypoint_names: list[str]
    axes_per_keypoint: int
    epoch: int
    metrics: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def num_joints(self) -> int:
        """nq, joint angles predicted."""
        return int(self.model.num_joints)

    @property
    def goal_dim(self) -> int:
        """G, key-point coordinates predicted."""
        return int(self.model.num_keypoint_coords)

    def predict(self, frames: Any, *, batch_size: int = 256) -> dict[str, np.ndarray]:
        """Joint angles and key points seen in ``frames``.

        Args:
            frames: uint8 RGB, ``(H, W, 3)`` (one frame), ``(B, H, W, 3)`` (B frames, each
                read alone) or ``(B, T, H, W, 3)`` (B windows of T consecutive frames, the
                last one translated; a translator with ``memory`` M uses the last M, and
                repeats the first frame on the left when T < M).
            batch_size: frames per forward pass.

        Returns:
            ``{"qpos": (B, nq) float64 rad in [-pi, pi], "keypoints": (B, G) float64 m}``;
            without the batch axis for a single ``(H, W, 3)`` frame.

        Raises:
            VisforeError: not uint8, or a shape other than the above with this run's
                ``frame_size``.
        """
        x = np.asarray(frames)
        H, W = self.frame_size
        if x.dtype != np.uint8:
            raise VisforeError(f"translator frames must be uint8 RGB (H, W, 3) arrays, got dtype {x.dtype}")
        if x.ndim not in (3, 4, 5) or x.shape[-3:] != (H, W, 3):
            raise VisforeError(
                f"translator frames must be (H, W, 3), (B, H, W, 3) or (B, T, H, W, 3) with "
                f"H, W = {H}, {W} (the frame size it was trained on), got shape {x.shape}"
            )
        single = x.ndim == 3
        if x.ndim == 3:
            x = x[None, None]
        elif x.ndim == 4:
            x = x[:, None]
        if x.shape[0] == 0 or x.shape[1] == 0:
            raise VisforeError(f"translator frames are empty (shape {x.shape})")
        qs, ks = [], []
        with torch.no_grad():
            for i in range(0, x.shape[0], max(1, int(batch_size))):
                t = torch.from_numpy(np.ascontiguousarray(x[i : i + batch_size])).to(self.device)
                out = self.model(t.permute(0, 1, 4, 2, 3).float().div_(255.0))
                qs.append(out["qpos"].double().cpu().numpy())
                ks.append(out["keypoints"].double().cpu().numpy())
        q, k = np.concatenate(qs), np.concatenate(ks)
        if single:
            return {"qpos": q[0], "keypoints": k[0]}
        return {"qpos": q, "keypoints": k}


def load_translator_run(
    run_dir: str | os.PathLike[str],
    device: torch.device | str | None = None,
    *,
    checkpoint: str = "last",
) -> TranslatorRun:
    """Load a ``visfore train-translator`` run.

    Args:
        run_dir: the run directory.
        device: where to put the model (a ``torch.device`` or ``"cpu"``, ``"cuda"``,
            ``"auto"``; default CPU).
        checkpoint: ``"last"`` (default: the weights ``metrics.json`` reports on) or
            ``"best"`` (lowest held-out loss; falls back to ``last`` when absent).

    Raises:
        VisforeError: not a directory, not a train-translator run, a bad ``checkpoint``
            name, a missing or unreadable checkpoint, an unavailable device.
    """
    run_dir = Path(run_dir)
    if checkpoint not in CHECKPOINTS:
        raise VisforeError(f"checkpoint must be one of {', '.join(CHECKPOINTS)}, got {checkpoint!r}")
    if not run_dir.is_dir():
        raise VisforeError(f"translator run {run_dir} is not a directory")
    config = runs.read_config(run_dir)
    if config.get("command") != _COMMAND:
        raise VisforeError(f"{run_dir} is not a train-translator run (config.yaml command {config.get('command')!r})")
    path = runs.best_checkpoint_path(run_dir) if checkpoint == "best" else runs.last_checkpoint_path(run_dir)
    if checkpoint == "best" and not path.is_file():
        checkpoint, path = "last", runs.last_checkpoint_path(run_dir)
    state = runs.load_checkpoint(path)
    if state.get("format") != _CHECKPOINT_FORMAT or "translator" not in state:
        raise VisforeError(f"{path} is not a train-translator checkpoint")
    if device is None:
        dev = torch.device("cpu")
    elif isinstance(device, torch.device):
        dev = device
    else:
        dev = select_device(str(device))
    try:
        model = load_translator(state["translator"], device=dev)
    except (ValueError, RuntimeError, TypeError) as exc:
        raise VisforeError(
            f"cannot rebuild the translator of {path} ({type(exc).__name__}: {exc})".splitlines()[0]
        ) from None
    metrics = None
    metrics_path = run_dir / runs.METRICS_NAME
    if metrics_path.is_file():
        try:
            metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            metrics = None
    frame_size = tuple(int(v) for v in state.get("frame_size") or model.image_size)
    return TranslatorRun(
        run_dir=run_dir,
        config=config,
        checkpoint=checkpoint,
        checkpoint_path=path,
        model=model,
        device=dev,
        env_id=str(state.get("env_id", config.get("env_id", ""))),
        env_kwargs=dict(state.get("env_kwargs") or {}),
        frame_size=(frame_size[0], frame_size[1]),
        memory=int(model.memory),
        joint_names=list(state.get("joint_names") or [f"q{i}" for i in range(model.num_joints)]),
        keypoint_names=list(state.get("keypoint_names") or []),
        axes_per_keypoint=int(state.get("axes_per_keypoint") or 1),
        epoch=int(state.get("epoch", 0)),
        metrics=metrics,
    )
