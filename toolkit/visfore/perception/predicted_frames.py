"""A forward model's open-loop predictions of a dataset's clips, as frames with true labels.

A planner that scores imagined frames with a learned reader (a key-point translator, a
reward or cost head) needs that reader to read *predicted* frames: blurred, faded, a little
off. A reader trained on real frames reads them poorly (measured on the reacher: key points
from the CDNA model's predictions planned worse than the pixel cost). Training the reader
on the model's own predictions, labelled with the true state of the frame each one
predicts, is the fix that world models use for their reward heads (PlaNet, Hafner et al.
2019, learns its reward model on the states its own dynamics model produces).

:func:`predict_clips` cuts every episode into non-overlapping clips of ``C + K`` frames
(C the run's context, K the prediction horizon) and rolls the model out open-loop from
each clip's first C real frames with the episode's true actions. In the dataset's row
convention (:mod:`visfore.data.dataset`, :mod:`visfore.worldmodels.predict`), a clip starting at row ``T``
of its episode has::

    context     o_T .. o_{T+C-1}            C true frames (kept as they are)
    actions     a_T .. a_{T+C+K-2}          C + K - 1 true actions
    prediction  ô_{T+C} .. ô_{T+C+K-1}      K predicted frames, labelled with the true
                                            state of o_{T+C} .. o_{T+C+K-1}

so every output frame has a dataset row (``source_rows``) whose state labels it. An
episode of ``L`` frames gives ``L // (C + K)`` clips; a shorter one gives none.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from visfore.core.errors import VisforeError
from visfore.data.clips import clip_starts
from visfore.worldmodels.model_run import ModelRun, frames_to_model, model_to_frames, sample_seed

__all__ = ["PredictedClips", "clip_layout", "predict_clips"]


@dataclass
class PredictedClips:
    """Clips of real context frames followed by the model's open-loop predictions.

    Attributes:
        frames: (M, H, W, 3) uint8, clip after clip, ``C + K`` frames each.
        source_rows: (M,) int64, the dataset row whose true frame each frame shows or
            predicts (index the dataset's states with it for labels).
        step: (M,) int64, 0 for a context frame, k = 1..K for the k-th predicted frame.
        clip_ends: (n,) int64, exclusive end of each clip in ``frames`` (the clips'
            "episode ends").
        clip_episode: (n,) int64, the dataset episode each clip was cut from.
        context, horizon: C and K.
    """

    frames: np.ndarray
    source_rows: np.ndarray
    step: np.ndarray
    clip_ends: np.ndarray
    clip_episode: np.ndarray
    context: int
    horizon: int


def clip_layout(episode_ends: np.ndarray, clip_length: int) -> tuple[np.ndarray, np.ndarray]:
    """Start rows and episodes of the non-overlapping clips of ``clip_length`` frames
    (:func:`visfore.data.clips.clip_starts` with a stride of one clip).

    Args:
        episode_ends: (E,) int, exclusive end row of each episode (``meta/episode_ends``).
        clip_length: frames per clip (C + K), >= 1.

    Returns:
        ``(starts, episodes)``: (n,) int64 each, the first dataset row of each clip and its
        episode, in dataset order (empty when no episode holds a clip).
    """
    ends = np.asarray(episode_ends, dtype=np.int64)
    begins = np.concatenate([[0], ends[:-1]]).astype(np.int64)
    return clip_starts(begins, ends - begins, np.arange(len(ends)), clip_length, stride=clip_length)


def predict_clips(
    model_run: ModelRun,
    pixels: np.ndarray,
    actions: np.ndarray,
    episode_ends: np.ndarray,
    horizon: int,
    *,
    batch_size: int = 256,
    amp: bool = False,
    seed: int | None = 0,
) -> PredictedClips:
    """Roll ``model_run``'s model out open-loop on every clip of a dataset.

    Args:
        model_run: a loaded ``visfore train-model`` run (:func:`visfore.worldmodels.model_run.load_model_run`).
        pixels: (N, H, W, 3) uint8, the dataset's frames (H, W the model's frame size).
        actions: (N, A) float32, the dataset's actions (row t: a_t, taken after o_t).
        episode_ends: (E,) int, exclusive end row of each episode.
        horizon: K, frames predicted per clip, >= 1.
        batch_size: clips per forward pass.
        amp: bfloat16 (CPU) / float16 (CUDA) autocast, as ``visfore plan --amp``.
        seed: seeds a stochastic model's samples (:func:`visfore.worldmodels.model_run.sample_seed`;
            None = torch's global RNG); a deterministic model ignores it.

    Returns:
        A :class:`PredictedClips` (its frames on the CPU).

    Raises:
        VisforeError: a horizon below 1, frames or actions of another size than the
            model's, or no episode long enough for one clip of ``C + K`` frames.
    """
    if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1:
        raise VisforeError(f"the prediction horizon must be an integer >= 1, got {horizon!r}")
    C, K = int(model_run.context), int(horizon)
    H, W = model_run.image_size
    if tuple(pixels.shape[1:3]) != (H, W):
        raise VisforeError(
            f"frames are {pixels.shape[1]}x{pixels.shape[2]} but the model of {model_run.run_dir} takes {H}x{W}"
        )
    if actions.shape[1] != model_run.action_dim:
        raise VisforeError(
            f"actions are {actions.shape[1]}-dim but the model of {model_run.run_dir} takes {model_run.action_dim}"
        )
    starts, episodes = clip_layout(episode_ends, C + K)
    if len(starts) == 0:
        longest = int(np.max(np.diff(np.concatenate([[0], episode_ends])))) if len(episode_ends) else 0
        raise VisforeError(f"no episode has {C + K} frames (context {C} + horizon {K}); the longest has {longest}")
    offsets = np.arange(C + K, dtype=np.int64)
    rows = starts[:, None] + offsets[None, :]  # (n, C + K)
    device = model_run.device
    dev = torch.device(device).type
    amp_dtype = torch.bfloat16 if dev == "cpu" else torch.float16
    out = np.empty((len(starts), C + K, H, W, 3), dtype=np.uint8)
    model_run.model.eval()
    with torch.no_grad(), sample_seed(seed, device), torch.autocast(dev, dtype=amp_dtype, enabled=amp):
        for i in range(0, len(starts), batch_size):
            r = rows[i : i + batch_size]
            context = frames_to_model(pixels[r[:, :C]], device)
            acts = torch.from_numpy(np.ascontiguousarray(actions[r[:, : C + K - 1]], dtype=np.float32)).to(device)
            prediction = model_run.model(context, acts).float()
            out[i : i + len(r), :C] = pixels[r[:, :C]]
            out[i : i + len(r), C:] = model_to_frames(prediction)
    n = len(starts)
    return PredictedClips(
        frames=out.reshape(n * (C + K), H, W, 3),
        source_rows=rows.reshape(-1),
        step=np.tile(np.concatenate([np.zeros(C, np.int64), np.arange(1, K + 1, dtype=np.int64)]), n),
        clip_ends=(C + K) * np.arange(1, n + 1, dtype=np.int64),
        clip_episode=episodes,
        context=C,
        horizon=K,
    )
