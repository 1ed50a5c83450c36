"""Tiny synthetic, action-dependent video data for the forward-model tests.

A coloured 6x6 square on a dark, static two-tone background moves by
``sign(a) * ceil(2 * |a|)`` pixels per step along each axis (``a`` in ``[-1, 1]^2``, so 1 or 2
px in y and x, never 0) and bounces off the frame's edges (reflection). ``o_{t+1}`` is a
deterministic function of ``o_t`` and ``a_t``: the motion depends on the action.
"""

from __future__ import annotations

import torch


def moving_square_clips(
    n: int, length: int, size: int = 32, square: int = 6, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``frames (n, length, 3, size, size)`` float32 in [0, 1] and
    ``actions (n, length - 1, 2)`` float32 in [-1, 1] where ``actions[:, t]`` moves
    ``frames[:, t]`` to ``frames[:, t + 1]``.

    Clips in which two frames are identical (the square came back to an earlier position)
    are dropped and replaced, so no per-frame PSNR of the copy-last-frame baseline is capped.
    """
    g = torch.Generator().manual_seed(seed)
    frames, actions, positions = _generate(2 * n + 16, length, size, square, g)
    same = (positions[:, :, None] == positions[:, None, :]).all(-1)  # (N, L, L)
    keep = same.sum(dim=(1, 2)) == length  # only the diagonal matches
    idx = torch.nonzero(keep).flatten()[:n]
    if idx.numel() < n:
        raise RuntimeError("moving_square_clips: too few clips without repeated frames")
    return frames[idx].contiguous(), actions[idx].contiguous()


def _generate(
    n: int, length: int, size: int, square: int, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    frames = torch.empty(n, length, 3, size, size)
    positions = torch.empty(n, length, 2, dtype=torch.long)
    actions = torch.rand(n, length - 1, 2, generator=g) * 2.0 - 1.0
    background = torch.full((3, size, size), 0.1)
    background[:, size // 2 :, :] = 0.2
    colours = 0.5 + 0.5 * torch.rand(n, 3, generator=g)
    hi = size - square
    pos = torch.randint(0, hi + 1, (n, 2), generator=g)
    for t in range(length):
        if t > 0:
            a = actions[:, t - 1]
            pos = pos + (torch.sign(a) * torch.ceil(2.0 * a.abs())).long()
            pos = torch.where(pos < 0, -pos, pos)
            pos = torch.where(pos > hi, 2 * hi - pos, pos)
        frame = background.expand(n, 3, size, size).clone()
        for i in range(n):
            y, x = int(pos[i, 0]), int(pos[i, 1])
            frame[i, :, y : y + square, x : x + square] = colours[i, :, None, None]
        frames[:, t] = frame
        positions[:, t] = pos
    return frames, actions, positions
