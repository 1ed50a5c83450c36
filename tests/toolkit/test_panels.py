"""The shared labelled panel strips (visfore.reports.panels) of predict, plan and mimic."""

from __future__ import annotations

import numpy as np
import pytest

from visfore.reports.panels import (
    CAPTION_BG,
    CAPTION_HEIGHT,
    SEPARATOR,
    caption_strip,
    compose_panels,
    panel_columns,
    readable_scale,
    upscale,
)


def test_compose_panels_layout_upscaling_and_labels():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (8, 6, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (8, 10, 3), dtype=np.uint8)
    strip = compose_panels([a, b], ["goal", "observation t=3"], 3)
    assert strip.shape == (CAPTION_HEIGHT + 24, 18 + 1 + 30, 3) and strip.dtype == np.uint8
    (a0, a1), (b0, b1) = panel_columns([6, 10], 3)
    assert (a0, a1, b0, b1) == (0, 18, 19, 49)
    # each panel is its image, nearest-neighbour upscaled; a white column between them
    np.testing.assert_array_equal(strip[CAPTION_HEIGHT:, a0:a1], a.repeat(3, 0).repeat(3, 1))
    np.testing.assert_array_equal(strip[CAPTION_HEIGHT:, b0:b1][::3, ::3], b)
    assert np.all(strip[:, a1] == SEPARATOR)
    # the captions are drawn: text pixels differ from the band's background, and more
    # of them for the longer label
    bg = np.array(CAPTION_BG, np.uint8)
    ink = [int(np.any(strip[:CAPTION_HEIGHT, x0:x1] != bg, axis=-1).sum()) for x0, x1 in ((a0, a1), (b0, b1))]
    assert 0 < ink[0] < ink[1]
    assert np.all(caption_strip("", 20) == bg)


def test_readable_scale_and_upscale():
    assert [readable_scale(s, s) for s in (32, 64, 96, 128, 200)] == [4, 2, 2, 1, 1]
    assert readable_scale(24, 40) == 6 and readable_scale(32, 32, minimum=192) == 6
    assert upscale(np.zeros((2, 3, 3), np.uint8), 4).shape == (8, 12, 3)
    with pytest.raises(ValueError, match="scale must be an integer >= 1, got 0"):
        upscale(np.zeros((2, 2, 3), np.uint8), 0)
    with pytest.raises(ValueError, match="sizes must be >= 1 pixel"):
        readable_scale(0, 4)


def test_compose_panels_rejects_mismatched_input():
    f = np.zeros((4, 4, 3), np.uint8)
    with pytest.raises(ValueError, match="one caption per panel, got 2 panels, 1 captions"):
        compose_panels([f, f], ["x"], 1)
    with pytest.raises(ValueError, match=r"panel 1 is uint8 \(5, 4, 3\); every panel must be \(4, W, 3\) uint8"):
        compose_panels([f, np.zeros((5, 4, 3), np.uint8)], ["a", "b"], 1)
    with pytest.raises(ValueError, match="panel 0 is float32"):
        compose_panels([f.astype(np.float32)], ["a"], 1)
