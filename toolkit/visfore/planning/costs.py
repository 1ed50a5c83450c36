"""The costs of ``visfore plan`` and the goals they compare against.

* goal images: :func:`load_goal_image` (``--goal image.png``, resized to the model's frames);
* key points: the :class:`Translator` protocol (frames -> key points, metres) and
  :class:`RunTranslator` / :func:`load_translator` (a ``visfore train-translator`` run);
* pixels: :func:`pixel_cost` (MSE to the goal frame on the final or every predicted frame),
  optionally on frames blurred by :func:`gaussian_blur` (``--pixel-blur``).

Used by the controllers (:mod:`visfore.planning.controllers`) and the pipeline
(:mod:`visfore.planning.plan`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from visfore.core.errors import VisforeError
from visfore.data.envs import resolve_env_id
from visfore.perception.translator_run import load_translator_run


def load_goal_image(path: str | Path, size: tuple[int, int]) -> np.ndarray:
    """Read an image file as the goal frame.

    Args:
        path: PNG / JPEG / ... readable by Pillow.
        size: ``(H, W)`` of the model's frames; the image is converted to RGB and resized
            (bilinear, Pillow) when it differs.

    Returns:
        ``(H, W, 3)`` uint8.

    Raises:
        VisforeError: missing file, a directory, or not a readable image.
    """
    p = Path(path)
    if not p.exists():
        raise VisforeError(f"--goal {p} does not exist")
    if not p.is_file():
        raise VisforeError(f"--goal {p} is not a file")
    try:
        with Image.open(p) as im:
            rgb = im.convert("RGB")
            H, W = size
            if rgb.size != (W, H):
                rgb = rgb.resize((W, H), Image.Resampling.BILINEAR)
            return np.asarray(rgb, dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise VisforeError(f"--goal {p} is not a readable image ({type(exc).__name__})") from None


class Translator(Protocol):
    """A key-point translator: frames -> key points (``visfore train-translator``; the
    frames-to-pose reading that ``visfore mimic`` also uses).

    ``translator(frames)`` with frames ``(B, 3, H, W)`` float32 in [0, 1] (a torch tensor
    on the planner's device) returns ``(B, G)`` key points in metres, in the env's layout
    (``[p0_x, p0_y(, p0_z), p1_x, ...]``, :class:`visfore_envs.core.KeypointTargetEnv`).
    """

    def __call__(self, frames: Any) -> Any: ...


class RunTranslator:
    """A ``visfore train-translator`` run (:class:`visfore.perception.translator_run.TranslatorRun`)
    as a :class:`Translator`.

    Frames of another size than the translator's are resized (bilinear,
    ``torch.nn.functional.interpolate``); each frame is read alone (a window of one frame,
    also for a translator with memory). Runs under ``torch.no_grad``.
    """

    def __init__(self, run: Any) -> None:
        self.run = run
        self.frame_size = tuple(run.frame_size)

    def __call__(self, frames: Any) -> Any:
        """``(B, 3, H, W)`` float in [0, 1] -> ``(B, G)`` key points (metres), float32,
        on the device of ``frames``."""
        x = frames.float()
        if tuple(x.shape[-2:]) != self.frame_size:
            x = F.interpolate(x, size=self.frame_size, mode="bilinear", align_corners=False)
        with torch.no_grad():
            out = self.run.model(x[:, None].to(self.run.device))
        return out["keypoints"].to(device=frames.device, dtype=torch.float32)


def load_translator(run: str | Path, device: Any = "cpu", env_id: str | None = None) -> Translator:
    """Load a key-point translator run (``visfore train-translator``) as a :class:`Translator`.

    Args:
        run: the translator run directory.
        device: torch device of the translator.
        env_id: the planning env; the translator must have been trained on frames of it.

    Raises:
        VisforeError: not a translator run (:func:`visfore.perception.translator_run.load_translator_run`),
            or one trained on another env.
    """
    tr = load_translator_run(run, device)
    if env_id is not None and tr.env_id and resolve_env_id(str(tr.env_id)) != env_id:
        raise VisforeError(f"--translator {run} was trained on {tr.env_id} frames, not {env_id}")
    return RunTranslator(tr)


def gaussian_blur(images: Any, sigma: float) -> Any:
    """Blur ``(..., 3, H, W)`` float images with a separable Gaussian of ``sigma`` pixels
    (kernel radius ``ceil(3 sigma)``, replicate padding); ``sigma <= 0`` returns them as is.

    Blurring widens the basin of a pixel cost: a thin arm a few pixels away from the goal
    pose still overlaps it after blurring (the role of the coarse levels of an image
    pyramid), while the minimum stays at the goal."""
    if sigma <= 0:
        return images
    r = max(1, int(math.ceil(3 * sigma)))
    x = torch.arange(-r, r + 1, dtype=images.dtype, device=images.device)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    k = k / k.sum()
    shape = images.shape
    flat = images.reshape(-1, shape[-3], shape[-2], shape[-1])
    c = shape[-3]
    flat = F.pad(flat, (r, r, r, r), mode="replicate")
    flat = F.conv2d(flat, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    flat = F.conv2d(flat, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return flat.reshape(shape)


def pixel_cost(frames: Any, goal: Any, cost_frames: str, blur: float = 0.0) -> Any:
    """Pixel cost of predicted frames.

    Args:
        frames: ``(N, T, 3, H, W)`` float in [0, 1] (torch).
        goal: ``(3, H, W)`` float in [0, 1]; pass it already blurred with the same
            ``blur`` (:func:`gaussian_blur`) when ``blur > 0``.
        cost_frames: ``"final"`` (MSE of frame T only) or ``"all"`` (mean MSE over T).
        blur: Gaussian sigma in pixels applied to ``frames`` first (0 = none).

    Returns:
        ``(N,)`` mean squared error over H, W, 3 (and frames).
    """
    sel = frames[:, -1:] if cost_frames == "final" else frames
    diff = gaussian_blur(sel, blur) - goal
    return diff.square().flatten(2).mean(dim=2).mean(dim=1)
