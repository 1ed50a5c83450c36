"""Load a ``visfore train-model`` run for use: the forward model and what it was trained on.

:func:`load_model_run` reads a run directory written by :mod:`visfore.worldmodels.training`
(``config.yaml`` and ``checkpoints/best.pt`` or ``checkpoints/last.pt``; the layout is in
:mod:`visfore.core.runs`) and returns a :class:`ModelRun`:

* ``model``: the :class:`visfore_models.ForwardModel` in eval mode on the chosen device
  (rebuilt with :func:`visfore_models.load_model` from the checkpoint's ``model`` entry);
* ``context`` (C) and ``horizon`` (K) it was trained with, its ``image_size`` (H, W) and
  ``action_dim`` (A);
* ``data_path``: the dataset it was trained on (absolute, from ``config.yaml``; a URL
  string for a dataset on object storage, see :mod:`visfore.data.storage`), and the
  train / validation episode split;
* ``action_low`` / ``action_high``: the action bounds of that dataset (its attrs
  ``action_low`` / ``action_high``, else ``[-1, 1]``);
* ``supervision``: ``"self-supervised"`` or ``"state-supervised (probe: keypoints)"`` (a
  run trained with ``--probe keypoints``; label everything built on it so), and
  ``probe``: the :class:`visfore.data.labels.ProbeLayout` of the model's probe (what each
  output of ``model.probe(model.features(state))`` is: key points in metres, then joint
  angles in radians), None without one.

Frames cross the model boundary as in :mod:`visfore_models.base`: ``(B, C, 3, H, W)``
float32 in ``[0, 1]`` (uint8 / 255, exactly the training conversion of
:func:`visfore.data.clips.frames_to_float`); :func:`frames_to_model` and :func:`model_to_frames`
convert from and to the datasets' ``(T, H, W, 3)`` uint8 layout.

Every problem (not a directory, not a train-model run, missing or unreadable checkpoint,
a dataset of another frame size or action dimension) is a one-line
:class:`~visfore.core.errors.VisforeError`. Checkpoints are read with ``weights_only=True``.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import torch

from visfore.core import runs
from visfore.core.device import select_device
from visfore.core.errors import VisforeError
from visfore.data import storage
from visfore.data.dataset import Dataset, open_dataset
from visfore.data.labels import ProbeLayout
from visfore_models import load_model

__all__ = [
    "CHECKPOINTS",
    "ModelRun",
    "frames_to_model",
    "load_model_run",
    "model_to_frames",
    "sample_seed",
]

#: ``checkpoint`` values of :func:`load_model_run`.
CHECKPOINTS = ("best", "last")
#: ``config.yaml`` ``command`` of a train-model run.
TRAIN_MODEL_COMMAND = "train-model"
_CHECKPOINT_FORMAT = "visfore-train-model-checkpoint"


@dataclass
class ModelRun:
    """A trained forward model and what it was trained on.

    Attributes:
        run_dir: the run directory.
        config: the ``config.yaml`` contents (a dict).
        checkpoint: ``"best"`` or ``"last"``: the checkpoint loaded (``best`` falls back to
            ``last`` when the run has no ``best.pt`` yet).
        checkpoint_path: the ``.pt`` file loaded.
        model: the ``visfore_models.ForwardModel``, in eval mode, on ``device``.
        device: the ``torch.device`` of the model.
        context: C, context frames per clip in training.
        horizon: K, frames predicted per clip in training (the model can roll out any K).
        data_path: absolute path of the training dataset, its URL string (``s3://...``), or
            None if the config lacks it.
        train_episodes, val_episodes: the episode split of training (dataset indices).
        action_low, action_high: (A,) float32 bounds of the training dataset's actions
            (its attrs ``action_low`` / ``action_high``; ``[-1, 1]`` when absent).
        epoch: epochs completed when the checkpoint was written.
        probe: the layout of the model's probe (``--probe keypoints``;
            ``model.probe(features)`` gives ``(..., probe.dim)``: ``probe.keypoint_slice``
            in metres, ``probe.joint_slice`` in radians), or None.
        supervision: ``"self-supervised"`` or ``"state-supervised (probe: keypoints)"``.
    """

    run_dir: Path
    config: dict = field(repr=False)
    checkpoint: str
    checkpoint_path: Path
    model: Any = field(repr=False)
    device: Any
    context: int
    horizon: int
    data_path: Path | str | None
    action_low: np.ndarray = field(repr=False)
    action_high: np.ndarray = field(repr=False)
    train_episodes: list[int] = field(default_factory=list, repr=False)
    val_episodes: list[int] = field(default_factory=list, repr=False)
    epoch: int = 0
    probe: ProbeLayout | None = field(default=None, repr=False)
    supervision: str = "self-supervised"

    @property
    def state_supervised(self) -> bool:
        """Whether the run used privileged state labels (a probe)."""
        return self.probe is not None

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of the frames the model takes, pixels."""
        return tuple(self.model.image_size)  # type: ignore[return-value]

    @property
    def action_dim(self) -> int:
        """A, the size of one action vector."""
        return int(self.model.action_dim)

    @property
    def stochastic(self) -> bool:
        """Whether the model samples (``getattr(model, "stochastic", False)``): its
        predictions then depend on torch's RNG (see :func:`sample_seed`)."""
        return bool(getattr(self.model, "stochastic", False))

    @property
    def model_name(self) -> str:
        return str(getattr(self.model, "name", type(self.model).__name__))

    # -- datasets -------------------------------------------------------------------------
    def check_dataset(self, ds: Dataset) -> None:
        """Check that ``ds`` fits the model: frame size (H, W) and action dimension A.

        Raises:
            VisforeError: naming both sizes.
        """
        H, W = self.image_size
        h, w, _ = ds.frame_shape
        if (h, w) != (H, W):
            raise VisforeError(f"dataset {ds.path} has {h}x{w} frames but the model of {self.run_dir} takes {H}x{W}")
        if ds.action_dim != self.action_dim:
            raise VisforeError(
                f"dataset {ds.path} has {ds.action_dim}-dim actions but the model of {self.run_dir} "
                f"takes {self.action_dim}"
            )

    def open_dataset(self, data: str | os.PathLike[str] | None = None) -> Dataset:
        """Open ``data`` (a path or URL; default: the dataset the model was trained on) and
        check that it fits the model (:meth:`check_dataset`).

        Raises:
            VisforeError: no dataset given and the run records none, the dataset cannot be
                opened, or it does not fit the model.
        """
        if data is None:
            if self.data_path is None:
                raise VisforeError(f"{self.run_dir / runs.CONFIG_NAME} records no dataset; pass --data")
            data = self.data_path
            if not storage.exists(data):
                raise VisforeError(f"the training dataset of {self.run_dir} ({data}) does not exist; pass --data")
        ds = open_dataset(data)
        self.check_dataset(ds)
        return ds

    def action_bounds(self, ds: Dataset | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(low, high), each (A,) float32: the attrs ``action_low`` / ``action_high`` of
        ``ds`` when it has valid ones, else those of the training dataset, else [-1, 1]."""
        if ds is not None:
            bounds = _bounds_from_attrs(ds.attrs, self.action_dim)
            if bounds is not None:
                return bounds
        return self.action_low.copy(), self.action_high.copy()


def _bounds_from_attrs(attrs: Any, action_dim: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(low, high) float32 (A,) from ``attrs["action_low"/"action_high"]``, or None when
    missing, of another length, non-finite or not low < high."""
    if not isinstance(attrs, dict):
        return None
    try:
        low = np.asarray(attrs["action_low"], dtype=np.float32).reshape(-1)
        high = np.asarray(attrs["action_high"], dtype=np.float32).reshape(-1)
    except (KeyError, TypeError, ValueError):
        return None
    if low.shape != (action_dim,) or high.shape != (action_dim,):
        return None
    if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high)) and np.all(low < high)):
        return None
    return low, high


def _section(mapping: Mapping[str, Any], key: str) -> dict[str, Any]:
    """``mapping[key]`` when it is a dict, else ``{}`` (a missing or malformed section)."""
    value = mapping.get(key)
    return value if isinstance(value, dict) else {}


def _int(value: Any, what: str, path: Path) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise VisforeError(f"{path}: {what} must be a positive int, got {value!r}")
    return value


def load_model_run(run_dir: str | os.PathLike[str], checkpoint: str = "best", *, device: Any = "cpu") -> ModelRun:
    """Load a train-model run.

    Args:
        run_dir: the run directory (``runs/train-model-...``).
        checkpoint: ``"best"`` (``checkpoints/best.pt``, the epoch with the lowest
            validation MSE; falls back to ``last`` when the run has none yet) or
            ``"last"`` (``checkpoints/last.pt``).
        device: ``"cpu"`` (default), ``"auto"``, ``"cuda"``, ``"cuda:N"`` or a
            ``torch.device``.

    Returns:
        A :class:`ModelRun`; its model is in eval mode on ``device``.

    Raises:
        VisforeError: ``run_dir`` is not a train-model run directory (no directory, no
            ``config.yaml``, another command's run), has no checkpoint, the checkpoint is
            unreadable or not a train-model checkpoint, an unknown ``checkpoint``, or the
            device is unavailable. One line each.
    """
    if checkpoint not in CHECKPOINTS:
        raise VisforeError(f"unknown checkpoint {checkpoint!r}; valid: {', '.join(CHECKPOINTS)}")
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise VisforeError(f"{run_dir} is not a directory (expected a train-model run directory)")
    config_path = run_dir / runs.CONFIG_NAME
    if not config_path.is_file():
        raise VisforeError(f"{run_dir} is not a train-model run directory (no {runs.CONFIG_NAME})")
    config = runs.read_config(run_dir)
    command = config.get("command")
    if command != TRAIN_MODEL_COMMAND:
        raise VisforeError(f"{run_dir} is not a train-model run directory ({runs.CONFIG_NAME} has command {command!r})")
    options = config.get("options")
    if not isinstance(options, dict):
        raise VisforeError(f"{config_path} has no 'options' section")

    chosen = checkpoint
    if chosen == "best" and not runs.best_checkpoint_path(run_dir).is_file():
        chosen = "last"
    path = runs.best_checkpoint_path(run_dir) if chosen == "best" else runs.last_checkpoint_path(run_dir)
    if not path.is_file():
        raise VisforeError(f"{run_dir} has no trained model ({runs.CHECKPOINT_DIR}/{path.name} is missing)")

    dev = device if isinstance(device, torch.device) else select_device(str(device))
    state = runs.load_checkpoint(path, map_location=dev)
    if state.get("format", _CHECKPOINT_FORMAT) != _CHECKPOINT_FORMAT or "model" not in state:
        raise VisforeError(f"{path} is not a train-model checkpoint")
    try:
        model = load_model(state["model"], device=dev)
    except (ValueError, KeyError, TypeError, RuntimeError) as exc:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise VisforeError(f"cannot rebuild the model of {path}: {text}") from None
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)

    saved = _section(state, "config")
    context = _int(options.get("context", saved.get("context")), "context", config_path)
    horizon = _int(options.get("horizon", saved.get("horizon")), "horizon", config_path)
    dataset = _section(config, "dataset")
    data = dataset.get("path") or options.get("data")
    data_path = storage.normalize(data) if data else None  # Path, or URL string
    split = _section(config, "split")
    probe = _probe_layout(config, model, config_path)
    bounds = _bounds_from_attrs(dataset.get("attrs"), int(model.action_dim))
    if bounds is None:
        A = int(model.action_dim)
        bounds = (np.full(A, -1.0, np.float32), np.full(A, 1.0, np.float32))
    return ModelRun(
        run_dir=run_dir,
        config=config,
        checkpoint=chosen,
        checkpoint_path=path,
        model=model,
        device=dev,
        context=context,
        horizon=horizon,
        data_path=data_path,
        train_episodes=[int(e) for e in split.get("train_episodes", []) or []],
        val_episodes=[int(e) for e in split.get("val_episodes", []) or []],
        action_low=bounds[0],
        action_high=bounds[1],
        epoch=int(state.get("epoch", 0) or 0),
        probe=probe,
        supervision=f"state-supervised (probe: {probe.kind})" if probe is not None else "self-supervised",
    )


def _probe_layout(config: Mapping[str, Any], model: Any, config_path: Path) -> ProbeLayout | None:
    """The probe layout of ``config.yaml`` (its ``probe`` section), checked against the
    model's ``probe_dim``; None for a run without a probe.

    Raises:
        VisforeError: a malformed section, or one that does not match the model (one line).
    """
    section = config.get("probe")
    probe_dim = int(getattr(model, "probe_dim", 0) or 0)
    if section is None:
        if probe_dim:
            raise VisforeError(f"{config_path} has no 'probe' section but its model has a {probe_dim}-output probe")
        return None
    if not isinstance(section, dict):
        raise VisforeError(f"{config_path}: 'probe' must be a mapping, got {type(section).__name__}")
    try:
        layout = ProbeLayout.from_dict(section)
    except VisforeError as exc:
        raise VisforeError(f"{config_path}: {exc}") from None
    if layout.dim != probe_dim:
        raise VisforeError(
            f"{config_path}: the probe layout has {layout.dim} outputs but the model's probe {probe_dim}"
        )
    return layout


# ---------------------------------------------------------------------------------------
# tensors <-> frames
# ---------------------------------------------------------------------------------------
def frames_to_model(frames: np.ndarray, device: Any = "cpu") -> torch.Tensor:
    """``(..., H, W, 3)`` uint8 frames -> ``(..., 3, H, W)`` float32 in ``[0, 1]`` on
    ``device`` (value / 255, as in training), C-contiguous (the layout of the training
    batches: convolutions on other memory layouts can differ in the last bits)."""
    x = torch.from_numpy(np.ascontiguousarray(frames, dtype=np.uint8)).to(device)
    return x.movedim(-1, -3).contiguous().to(torch.float32).div_(255.0)


def model_to_frames(x: torch.Tensor) -> np.ndarray:
    """``(..., 3, H, W)`` float in ``[0, 1]`` -> ``(..., H, W, 3)`` uint8 numpy
    (clamped to [0, 1], times 255, rounded to nearest)."""
    u8 = x.detach().clamp(0.0, 1.0).mul(255.0).round_().to(torch.uint8)
    return np.ascontiguousarray(u8.movedim(-3, -1).cpu().numpy())


@contextlib.contextmanager
def sample_seed(seed: int | None, device: Any = "cpu") -> Iterator[None]:
    """Seed torch's RNG for one stochastic prediction without changing the caller's RNG.

    With ``seed=None`` nothing is seeded (the global RNG is used and advanced). Otherwise
    the CPU RNG (and the CUDA RNG of ``device``) is forked, seeded with ``seed`` and
    restored afterwards.
    """
    if seed is None:
        yield
        return
    dev = torch.device(device)
    devices = [dev] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(seed))
        yield
