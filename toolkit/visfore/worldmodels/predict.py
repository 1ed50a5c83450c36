"""``visfore predict``: an open-loop rollout of a trained forward model on one dataset
episode, written as a side-by-side animation (truth | prediction | absolute difference).

Time alignment (the dataset's row convention, :mod:`visfore.data.dataset`; the model interface,
:mod:`visfore_models.base`). With ``--start T``, the run's context length ``C`` and
``--horizon K``, on episode ``N`` (``L`` frames o_0..o_{L-1}, ``L - 1`` actions)::

    context     o_T .. o_{T+C-1}            C true frames given to the model
    actions     a_T .. a_{T+C+K-2}          the episode's true actions (C + K - 1)
    prediction  ô_{T+C} .. ô_{T+C+K-1}      K frames, open-loop (the model feeds back
                                            its own predictions)

so ``T + C + K <= L``. The default horizon is the rest of the episode, ``L - T - C``.

The animation has ``C + K`` frames at ``--fps``: first the C context frames (shown in
the truth and prediction panels alike, difference zero), then the K predicted steps.
Each frame is ``(12 + H * s, 3 * W * s + 2)`` pixels (height, width) for frames of
``H x W`` and ``--scale s``: a 12-pixel caption row (panel name, frame index ``t``, the
step's PSNR) above three panels, each upscaled by nearest neighbour, separated by 1-pixel
white columns (:func:`visfore.reports.panels.compose_panels`, the layout ``plan`` and
``mimic --image`` use too). The difference panel is ``|truth - prediction|`` per channel in uint8 (not
amplified). ``--out`` ending in ``.gif`` is written with Pillow (palette per frame),
``.mp4`` with imageio's FFMPEG (imageio-ffmpeg) or PyAV backend (H.264, yuv420p; frames
padded to even sizes with black); with neither installed, ``.mp4`` is refused with a
one-line error before anything runs. The file is written atomically.

PSNR per step is ``10 log10(1 / MSE)`` in dB, pixels in ``[0, 1]`` (data range 1.0), of the
float prediction against the true frame; the copy-last-frame baseline (repeat o_{T+C-1})
is printed next to it.

Bad input (not a train-model run, a dataset of another frame size or action dimension,
an episode out of range, a start or horizon that leaves the episode, a bad ``--out``
extension or an unavailable MP4 backend) is one ``error:`` line and exit code 2, with
nothing written.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image

from visfore.core import runs
from visfore.core.errors import VisforeError
from visfore.core.threads import torch_threads
from visfore.data.dataset import Dataset
from visfore.reports.panels import CAPTION_HEIGHT, compose_panels, upscale
from visfore.worldmodels.config import PredictConfig
from visfore.worldmodels.model_run import ModelRun, frames_to_model, load_model_run, model_to_frames
from visfore.worldmodels.model_run import sample_seed as seeded
from visfore_models import metrics as vm_metrics

# CAPTION_HEIGHT, compose_panels and upscale are visfore.reports.panels', re-exported here.
__all__ = [
    "ANIMATION_SUFFIXES",
    "CAPTION_HEIGHT",
    "PredictResult",
    "check_animation_path",
    "compose_panels",
    "mp4_backend",
    "predict",
    "save_animation",
    "upscale",
]

#: Output extensions of animations.
ANIMATION_SUFFIXES = (".gif", ".mp4")


# ---------------------------------------------------------------------------------------
# animation files
# ---------------------------------------------------------------------------------------
def mp4_backend() -> str | None:
    """The imageio plugin that can write MP4 here: ``"FFMPEG"`` (needs ``imageio-ffmpeg``),
    ``"pyav"`` (needs ``av``), or None."""
    if importlib.util.find_spec("imageio_ffmpeg") is not None:
        return "FFMPEG"
    if importlib.util.find_spec("av") is not None:
        return "pyav"
    return None


def check_animation_path(out: str | os.PathLike[str]) -> Path:
    """Validate an animation path before any work: a ``.gif`` or ``.mp4`` suffix, not an
    existing directory, and an MP4 backend for ``.mp4``.

    Raises:
        VisforeError: one line; for ``.mp4`` without a backend it suggests ``.gif``.
    """
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in ANIMATION_SUFFIXES:
        raise VisforeError(f"--out {out} must end in .gif or .mp4")
    if out.is_dir():
        raise VisforeError(f"--out {out} is a directory")
    if suffix == ".mp4" and mp4_backend() is None:
        raise VisforeError(
            f"cannot write {out}: no MP4 writer for imageio (pip install imageio-ffmpeg, or av); "
            f"use --out {out.with_suffix('.gif').name} instead"
        )
    return out


def save_animation(out: str | os.PathLike[str], frames: Sequence[np.ndarray], fps: float) -> Path:
    """Write ``frames`` (each ``(h, w, 3)`` uint8, all the same size) as a GIF or an MP4.

    GIF: Pillow, ``1000 / fps`` ms per frame (GIF rounds to 10 ms), looping forever.
    Identical consecutive frames are merged by Pillow's GIF writer, so callers that need
    one GIF frame per image make each frame distinct (a caption with a counter).
    MP4: H.264 (yuv420p) at ``fps``, frames padded with black to even sizes.
    The file is written to a temporary name in the same directory, then renamed; the
    parent directory is created.

    Raises:
        VisforeError: a bad path or no MP4 backend (:func:`check_animation_path`), no
            frames, or the writer failed (one line; no partial file is left).
    """
    out = check_animation_path(out)
    if len(frames) == 0:
        raise VisforeError("no frames to write")
    if not fps > 0:
        raise VisforeError(f"--fps must be > 0, got {fps}")
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".gif":
        images = [Image.fromarray(np.ascontiguousarray(f, dtype=np.uint8)) for f in frames]
        duration = max(10, int(round(1000.0 / fps)))

        def write(f: Any) -> None:
            images[0].save(f, format="GIF", save_all=True, append_images=images[1:], duration=duration, loop=0)

        return runs.atomic_write(out, write)
    return _save_mp4(out, frames, fps)


def _save_mp4(out: Path, frames: Sequence[np.ndarray], fps: float) -> Path:
    backend = mp4_backend()
    h, w = frames[0].shape[:2]
    H, W = h + h % 2, w + w % 2
    padded = np.zeros((len(frames), H, W, 3), np.uint8)
    for i, f in enumerate(frames):
        padded[i, :h, :w] = f
    tmp = out.with_name(f".{out.stem}.tmp-{os.getpid()}.mp4")
    try:
        if backend == "FFMPEG":
            import imageio.v2 as iio2  # lazy: only for MP4, which needs an optional backend

            writer = iio2.get_writer(
                tmp,
                format="FFMPEG",
                mode="I",
                fps=float(fps),
                codec="libx264",
                pixelformat="yuv420p",
                macro_block_size=1,
            )
            with writer:  # not ``as writer``: the stub's __enter__ returns the base class
                for f in padded:
                    writer.append_data(f)
        else:
            import imageio.v3 as iio3  # lazy: only for MP4 (the optional av backend)

            iio3.imwrite(tmp, padded, plugin="pyav", codec="h264", fps=fps, out_pixel_format="yuv420p")
        os.replace(tmp, out)
    except Exception as exc:  # the backends raise many types (missing codec, ...)
        with contextlib.suppress(OSError):
            tmp.unlink()
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise VisforeError(
            f"cannot write {out} with imageio's {backend} backend ({text}); "
            f"use --out {out.with_suffix('.gif').name} instead"
        ) from None
    return out


# ---------------------------------------------------------------------------------------
# the pipeline
# ---------------------------------------------------------------------------------------
@dataclass
class PredictResult:
    """What :func:`predict` did.

    Attributes:
        out: the animation written.
        episode, start: the episode and the index ``T`` (within the episode) of the first
            context frame.
        context, horizon: C and K.
        psnr, mse: (K,) per predicted step, the model's PSNR (dB) and MSE (pixels in
            [0, 1]) against the true frames o_{T+C} .. o_{T+C+K-1}.
        copy_last_psnr: (K,) PSNR of the copy-last-frame baseline.
        num_frames: frames in the animation (C + K).
        frame_size: (height, width) of an animation frame in pixels.
        checkpoint: ``best`` or ``last`` (the one loaded).
        prediction: (K, H, W, 3) uint8 predicted frames; truth: (C + K, H, W, 3) uint8.
    """

    out: Path
    episode: int
    start: int
    context: int
    horizon: int
    psnr: list[float]
    mse: list[float]
    copy_last_psnr: list[float]
    num_frames: int
    frame_size: tuple[int, int]
    checkpoint: str
    prediction: np.ndarray = field(repr=False)
    truth: np.ndarray = field(repr=False)


def _check_int(name: str, value: int | None, minimum: int) -> None:
    if value is not None and (isinstance(value, bool) or value < minimum):
        raise VisforeError(f"--{name} must be >= {minimum}, got {value}")


def _check_options(config: PredictConfig) -> Path:
    """The checks that need neither the run nor the dataset; returns the animation path."""
    out = check_animation_path(config.out)
    _check_int("episode", config.episode, 0)
    _check_int("start", config.start, 0)
    _check_int("horizon", config.horizon, 1)
    _check_int("scale", config.scale, 1)
    if not config.fps > 0:
        raise VisforeError(f"--fps must be > 0, got {config.fps}")
    return out


def _episode_window(config: PredictConfig, rows: slice, C: int) -> tuple[int, int]:
    """``(first, K)``: the dataset row of the first context frame and the horizon, checked
    against the episode (``rows``) and the context length ``C``."""
    L = rows.stop - rows.start
    start, episode = config.start, config.episode
    if start + C > L - 1:
        raise VisforeError(
            f"--start {start} leaves no frame to predict: episode {episode} has {L} frames "
            f"(t = 0..{L - 1}) and the model takes {C} context frames, so --start must be <= {L - 1 - C}"
        )
    K = L - start - C if config.horizon is None else int(config.horizon)
    if start + C + K > L:
        raise VisforeError(
            f"--horizon {K} is too long: episode {episode} has {L} frames, and --start {start} + "
            f"context {C} + horizon {K} = {start + C + K}; use --horizon <= {L - start - C}"
        )
    return rows.start + start, K


def _read_clip(ds: Dataset, episode: int, first: int, C: int, K: int) -> tuple[np.ndarray, np.ndarray]:
    """``(truth (C+K, H, W, 3) uint8, actions (C+K-1, A) float32)`` from row ``first``."""
    truth = np.asarray(ds.array("pixels")[first : first + C + K], dtype=np.uint8)
    actions = np.asarray(ds.array("action")[first : first + C + K - 1], dtype=np.float32)
    if not np.all(np.isfinite(actions)):
        raise VisforeError(
            f"episode {episode} of {ds.path} has non-finite actions in rows {first}..{first + C + K - 2}"
        )
    return truth, actions


@dataclass
class _Rollout:
    """The open-loop prediction of one clip and its per-step scores, each (K,)."""

    predicted: np.ndarray  # (K, H, W, 3) uint8
    mse: np.ndarray
    psnr: np.ndarray
    copy_last_psnr: np.ndarray


def _rollout(mr: ModelRun, truth: np.ndarray, actions: np.ndarray, sample_seed: int | None) -> _Rollout:
    """Roll the model out open-loop from the first ``C`` frames of ``truth`` with the
    true ``actions``, through the public stepping API, and score it."""
    C = mr.context
    K = len(truth) - C
    frames = frames_to_model(truth, mr.device)  # (C+K, 3, H, W) in [0, 1]
    context, targets = frames[None, :C], frames[None, C:]
    acts = torch.from_numpy(actions).to(mr.device)[None]
    with torch.no_grad(), seeded(sample_seed if mr.stochastic else None, mr.device):
        state = mr.model.init_state(context, acts[:, : C - 1])
        pred, _ = mr.model.imagine(state, acts[:, C - 1 :])  # (1, K, 3, H, W)
    pred = pred.float()
    base = vm_metrics.copy_last_frame_baseline(context, K)
    return _Rollout(
        predicted=model_to_frames(pred[0]),
        mse=vm_metrics.mse_per_sample(pred, targets)[0].cpu().numpy(),
        psnr=vm_metrics.psnr_per_sample(pred, targets)[0].cpu().numpy(),
        copy_last_psnr=vm_metrics.psnr_per_sample(base, targets)[0].cpu().numpy(),
    )


def _animation_frames(truth: np.ndarray, rollout: _Rollout, start: int, C: int, scale: int) -> list[np.ndarray]:
    """The C context frames (truth | context | zero difference), then the K predicted steps
    (truth | prediction | difference, captioned with the step's PSNR)."""
    images = []
    for i in range(C):
        f = truth[i]
        images.append(compose_panels([f, f, np.zeros_like(f)], [f"truth t={start + i}", "context", "|diff|"], scale))
    for k, p in enumerate(rollout.predicted):
        f = truth[C + k]
        diff = np.abs(f.astype(np.int16) - p.astype(np.int16)).astype(np.uint8)
        captions = [f"truth t={start + C + k}", f"pred k={k + 1}", f"|diff| {rollout.psnr[k]:.1f} dB"]
        images.append(compose_panels([f, p, diff], captions, scale))
    return images


def predict(config: PredictConfig, *, echo: Callable[[str], None] | None = print) -> PredictResult:
    """Roll a trained model out open-loop on one episode and write the animation.

    Args:
        config: the options (:class:`~visfore.worldmodels.config.PredictConfig`: the run,
            ``episode``, ``out`` and the optional ``data``, ``start``, ``horizon``,
            ``checkpoint``, ``fps``, ``scale``, ``sample_seed``, ``device``).
        echo: prints the per-step PSNR table (None: silent; ``config.quiet`` is the
            command line's way to pass None).

    Returns:
        A :class:`PredictResult`.

    Raises:
        VisforeError: bad input (see the module docstring); nothing is written then.
        TypeError: ``config`` is not a :class:`PredictConfig`.
    """
    if not isinstance(config, PredictConfig):
        raise TypeError(
            f"predict takes a PredictConfig, e.g. predict(PredictConfig(run=..., episode=0, out=...)); "
            f"got {type(config).__name__}"
        )
    out = _check_options(config)
    mr = load_model_run(config.run, config.checkpoint, device=config.device)
    ds = mr.open_dataset(config.data)
    C = mr.context
    first, K = _episode_window(config, ds.episode_rows(int(config.episode)), C)
    truth, actions = _read_clip(ds, config.episode, first, C, K)
    with torch_threads(None):
        rollout = _rollout(mr, truth, actions, config.sample_seed)
    images = _animation_frames(truth, rollout, config.start, C, config.scale)
    save_animation(out, images, config.fps)

    result = PredictResult(
        out=out,
        episode=int(config.episode),
        start=int(config.start),
        context=C,
        horizon=K,
        psnr=[float(x) for x in rollout.psnr],
        mse=[float(x) for x in rollout.mse],
        copy_last_psnr=[float(x) for x in rollout.copy_last_psnr],
        num_frames=len(images),
        frame_size=(int(images[0].shape[0]), int(images[0].shape[1])),
        checkpoint=mr.checkpoint,
        prediction=rollout.predicted,
        truth=truth,
    )
    if echo is not None:
        _print_table(result, echo, mr)
    return result


def _print_table(r: PredictResult, echo: Callable[[str], None], mr: ModelRun) -> None:
    echo(
        f"open-loop rollout of {mr.model_name} ({r.checkpoint}.pt of {mr.run_dir}) on episode "
        f"{r.episode}: context t={r.start}..{r.start + r.context - 1}, {r.horizon} predicted frames"
    )
    echo(f"{'step':>4}  {'t':>4}  {'PSNR dB':>8}  {'copy-last dB':>12}  {'MSE':>9}")
    for k in range(r.horizon):
        echo(
            f"{k + 1:>4}  {r.start + r.context + k:>4}  {r.psnr[k]:>8.2f}  {r.copy_last_psnr[k]:>12.2f}  "
            f"{r.mse[k]:>9.6f}"
        )
    echo(f"mean  {'':>4}  {np.mean(r.psnr):>8.2f}  {np.mean(r.copy_last_psnr):>12.2f}  {np.mean(r.mse):>9.6f}")
    h, w = r.frame_size
    echo(f"wrote {r.out} ({r.num_frames} frames of {w}x{h}: truth | prediction | |difference|)")
