"""Labelled, upscaled panel strips: the frames that ``predict``, ``play-model``, ``plan``
and ``mimic --image`` write, laid out alike.

A strip is ``n`` panels side by side, each an ``(H, W, 3)`` uint8 image upscaled by an
integer factor (nearest neighbour, so pixels stay sharp) under a caption row of
:data:`CAPTION_HEIGHT` pixels (light text on a dark band, Pillow's default font),
separated by 1-pixel white columns::

    +-----------+-+-----------+
    | caption 0 | | caption 1 |   CAPTION_HEIGHT rows
    +-----------+ +-----------+
    |  panel 0  | |  panel 1  |   H * scale rows
    +-----------+-+-----------+
      W * scale  1  W * scale   columns

:func:`compose_panels` builds one strip, :func:`readable_scale` picks the smallest
factor that makes a panel at least :data:`MIN_PANEL_PX` pixels on its short side, and
:func:`panel_columns` says where each panel lies in a strip (for tests and callers that
crop).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "CAPTION_BG",
    "CAPTION_FG",
    "CAPTION_HEIGHT",
    "MIN_PANEL_PX",
    "SEPARATOR",
    "caption_strip",
    "compose_panels",
    "panel_columns",
    "readable_scale",
    "upscale",
]

#: Height in pixels of the caption row above the panels.
CAPTION_HEIGHT = 12
#: Background and text colours (RGB) of the caption row.
CAPTION_BG = (24, 24, 24)
CAPTION_FG = (235, 235, 235)
#: Grey level of the 1-pixel columns between panels.
SEPARATOR = 255
#: The short side, in pixels, that :func:`readable_scale` makes a panel at least.
MIN_PANEL_PX = 128


def upscale(frame: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour upscaling of an ``(H, W, 3)`` uint8 frame by an integer ``scale``.

    Returns:
        ``(H * scale, W * scale, 3)`` uint8 (a contiguous copy, or ``frame`` itself made
        contiguous when ``scale`` is 1).

    Raises:
        ValueError: ``scale`` is not an integer >= 1.
    """
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 1:
        raise ValueError(f"scale must be an integer >= 1, got {scale!r}")
    if scale == 1:
        return np.ascontiguousarray(frame)
    return frame.repeat(scale, axis=0).repeat(scale, axis=1)


def readable_scale(height: int, width: int, minimum: int = MIN_PANEL_PX) -> int:
    """The smallest integer factor that makes an ``height x width`` panel (pixels) at
    least ``minimum`` pixels on its short side: ``ceil(minimum / min(height, width))``,
    and 1 for frames already that large (e.g. 32 px -> 4, 64 px -> 2, 200 px -> 1).

    Raises:
        ValueError: a size < 1.
    """
    if min(int(height), int(width)) < 1 or int(minimum) < 1:
        raise ValueError(f"sizes must be >= 1 pixel, got {height}x{width} and minimum {minimum}")
    return max(1, math.ceil(int(minimum) / min(int(height), int(width))))


def caption_strip(text: str, width: int) -> np.ndarray:
    """A ``(CAPTION_HEIGHT, width, 3)`` uint8 caption row: ``text`` in :data:`CAPTION_FG`
    on :data:`CAPTION_BG`, 2 pixels from the left, Pillow's default font; text wider than
    ``width`` pixels is clipped."""
    img = Image.new("RGB", (max(1, int(width)), CAPTION_HEIGHT), CAPTION_BG)
    ImageDraw.Draw(img).text((2, 0), text, fill=CAPTION_FG)
    return np.asarray(img)


def compose_panels(panels: Sequence[np.ndarray], captions: Sequence[str], scale: int) -> np.ndarray:
    """Lay ``panels`` side by side, each upscaled and under its caption.

    Args:
        panels: ``n`` images, each ``(H, W_i, 3)`` uint8, all of the same height ``H``
            (pixels).
        captions: ``n`` texts, one per panel (clipped to the panel's width).
        scale: integer nearest-neighbour upscaling (>= 1) of every panel.

    Returns:
        ``(CAPTION_HEIGHT + H * scale, sum(W_i) * scale + n - 1, 3)`` uint8: the caption
        rows on top, 1-pixel :data:`SEPARATOR` columns between panels (see
        :func:`panel_columns`).

    Raises:
        ValueError: no panels, a caption count other than the panel count, a panel that
            is not ``(H, W, 3)`` uint8 of the first panel's height, or a bad ``scale``.
    """
    if len(panels) == 0 or len(panels) != len(captions):
        raise ValueError(
            f"compose_panels needs one caption per panel, got {len(panels)} panels, {len(captions)} captions"
        )
    height = np.asarray(panels[0]).shape[0]
    columns = []
    for i, (panel, text) in enumerate(zip(panels, captions)):
        panel = np.asarray(panel)
        if panel.dtype != np.uint8 or panel.ndim != 3 or panel.shape[2] != 3 or panel.shape[0] != height:
            raise ValueError(f"panel {i} is {panel.dtype} {panel.shape}; every panel must be ({height}, W, 3) uint8")
        big = upscale(panel, scale)
        columns.append(np.concatenate([caption_strip(text, big.shape[1]), big], axis=0))
        if i < len(panels) - 1:
            columns.append(np.full((big.shape[0] + CAPTION_HEIGHT, 1, 3), SEPARATOR, np.uint8))
    return np.ascontiguousarray(np.concatenate(columns, axis=1))


def panel_columns(widths: Sequence[int], scale: int) -> list[tuple[int, int]]:
    """Where the panels of :func:`compose_panels` lie in its strip: one ``(start, stop)``
    column range (pixels, stop exclusive) per panel of width ``widths[i]`` (pixels, before
    upscaling); panel ``i`` is ``strip[CAPTION_HEIGHT:, start:stop]`` and its caption
    ``strip[:CAPTION_HEIGHT, start:stop]``."""
    out, x = [], 0
    for w in widths:
        out.append((x, x + int(w) * int(scale)))
        x += int(w) * int(scale) + 1
    return out
