"""Clip indexing (visfore.data.clips): shapes, episode boundaries, NaN padding, alignment, split."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from visfore.core.errors import VisforeError
from visfore.data.clips import (
    ClipDataset,
    clip_starts,
    dataset_mean_frame,
    frames_to_float,
    load_clip_source,
    split_clip,
    split_episodes,
)
from visfore.data.dataset import DatasetWriter, open_dataset

#: actions per episode of the row-coded dataset (episode 2 is too short for most clips)
EPISODE_STEPS = (6, 9, 2, 11, 7)
SIZE = 16


@pytest.fixture(scope="module")
def row_coded(tmp_path_factory: pytest.TempPathFactory):
    """A dataset whose frame at absolute row r has every pixel = r (so a frame names its
    row) and whose action at row r is (r, -r); the episodes' padding actions are NaN."""
    path = tmp_path_factory.mktemp("clips") / "rows.zarr"
    writer = DatasetWriter.create(
        path,
        frame_shape=(SIZE, SIZE, 3),
        state_dim=1,
        action_dim=2,
        attrs={"env_id": "synthetic-rows"},
        chunk_frames=16,
    )
    row = 0
    with writer:
        for steps in EPISODE_STEPS:
            rows = np.arange(row, row + steps + 1)
            pixels = np.broadcast_to(rows[:, None, None, None], (steps + 1, SIZE, SIZE, 3)).astype(np.uint8)
            writer.append_episode(
                pixels=pixels,
                state=rows[:, None].astype(np.float32),
                action=np.stack([rows[:-1], -rows[:-1]], axis=1).astype(np.float32),
                reward=np.zeros(steps, np.float32),
                terminated=np.zeros(steps, bool),
                truncated=np.zeros(steps, bool),
            )
            row += steps + 1
    ds = open_dataset(path)
    return ds, load_clip_source(ds)


def test_source_in_memory_uint8_channels_first(row_coded):
    ds, src = row_coded
    assert src.pixels.dtype == np.uint8 and src.pixels.shape == (ds.num_rows, 3, SIZE, SIZE)
    assert src.pixels.flags.c_contiguous
    assert src.actions.dtype == np.float32 and src.actions.shape == (ds.num_rows, 2)
    # the padding row of every episode is NaN in the dataset...
    assert np.isnan(src.actions[ds.episode_ends - 1]).all()


@pytest.mark.parametrize("context,horizon", [(1, 1), (2, 3), (3, 5)])
def test_shapes_dtypes_and_count(row_coded, context, horizon):
    ds, src = row_coded
    clips = ClipDataset(src, range(ds.num_episodes), context=context, horizon=horizon)
    L = context + horizon
    assert len(clips) == sum(max(0, steps + 1 - L + 1) for steps in EPISODE_STEPS)
    item = clips[0]
    assert item["frames"].dtype == torch.uint8 and item["frames"].shape == (L, 3, SIZE, SIZE)
    assert item["actions"].dtype == torch.float32 and item["actions"].shape == (L - 1, 2)
    batch = clips[np.array([0, 1, len(clips) - 1])]
    assert batch["frames"].shape == (3, L, 3, SIZE, SIZE) and batch["frames"].dtype == torch.uint8
    assert batch["actions"].shape == (3, L - 1, 2) and batch["start"].shape == (3,)
    ctx, tgt = split_clip(frames_to_float(batch["frames"]), context)
    assert ctx.shape == (3, context, 3, SIZE, SIZE) and tgt.shape == (3, horizon, 3, SIZE, SIZE)
    assert ctx.dtype == torch.float32 and 0.0 <= float(ctx.min()) and float(ctx.max()) <= 1.0


def test_clips_stay_in_their_episode_and_have_no_nan_action(row_coded):
    ds, src = row_coded
    starts, ends = ds.episode_starts, ds.episode_ends
    for context, horizon in [(1, 1), (2, 4), (2, 10), (4, 8)]:
        clips = ClipDataset(src, range(ds.num_episodes), context=context, horizon=horizon)
        batch = clips[np.arange(len(clips))]
        rows = batch["frames"][:, :, 0, 0, 0].numpy().astype(np.int64)  # frame value = row
        ep = batch["episode"].numpy()
        assert np.all(rows[:, 0] >= starts[ep]) and np.all(rows[:, -1] < ends[ep])
        assert torch.isfinite(batch["actions"]).all()
        # every valid start is used: the last clip of each episode ends on its last row
        for e in np.unique(ep):
            assert rows[ep == e, -1].max() == ends[e] - 1


def test_alignment_targets_are_the_rows_after_the_context(row_coded):
    """DESIGN.md: given o_0..o_t and a_0..a_t the model predicts o_{t+1}, never o_t."""
    ds, src = row_coded
    C, K = 3, 4
    clips = ClipDataset(src, range(ds.num_episodes), context=C, horizon=K)
    batch = clips[np.arange(len(clips))]
    start = batch["start"].numpy()
    frame_rows = batch["frames"][:, :, 0, 0, 0].numpy().astype(np.int64)
    action_rows = batch["actions"][:, :, 0].numpy().astype(np.int64)  # action at row r = (r, -r)
    np.testing.assert_array_equal(frame_rows, start[:, None] + np.arange(C + K))
    np.testing.assert_array_equal(action_rows, start[:, None] + np.arange(C + K - 1))
    context, targets = split_clip(batch["frames"], C)
    # target k is row start + C + k; the action producing it is actions[:, C - 1 + k]
    np.testing.assert_array_equal(targets[:, 0, 0, 0, 0].numpy(), start + C)
    np.testing.assert_array_equal(context[:, -1, 0, 0, 0].numpy(), start + C - 1)
    np.testing.assert_array_equal(action_rows[:, C - 1], start + C - 1)
    # an "oracle" one-step model o_{t+1} = a_t + 1 reproduces every target exactly
    oracle = action_rows[:, C - 1 :] + 1
    np.testing.assert_array_equal(oracle, targets[:, :, 0, 0, 0].numpy())


def test_stride_and_subset(row_coded):
    ds, src = row_coded
    full = ClipDataset(src, range(ds.num_episodes), context=2, horizon=2)
    strided = ClipDataset(src, range(ds.num_episodes), context=2, horizon=2, stride=3)
    rel = strided.starts - ds.episode_starts[strided.episode_ids]
    assert np.all(rel % 3 == 0) and set(strided.starts) <= set(full.starts)
    sub = ClipDataset(src, range(ds.num_episodes), context=2, horizon=2, max_clips=5, seed=1)
    again = ClipDataset(src, range(ds.num_episodes), context=2, horizon=2, max_clips=5, seed=1)
    assert len(sub) == 5 and np.array_equal(sub.starts, again.starts)
    assert set(sub.starts) <= set(full.starts)


def test_short_episodes_contribute_nothing(row_coded):
    ds, src = row_coded
    clips = ClipDataset(src, [2], context=2, horizon=2)  # episode 2 has 3 frames < 4
    assert len(clips) == 0
    starts, ids = clip_starts(ds.episode_starts, ds.episode_lengths, [2, 3], 4)
    assert set(ids) == {3}


def test_nan_action_inside_a_clip_is_refused(row_coded):
    ds, src = row_coded
    broken = type(src)(
        pixels=src.pixels,
        actions=src.actions.copy(),
        episode_starts=src.episode_starts,
        episode_lengths=src.episode_lengths,
    )
    broken.actions[int(ds.episode_starts[1]) + 2] = np.nan
    with pytest.raises(AssertionError, match="NaN"):
        ClipDataset(broken, [1], context=2, horizon=2)


def test_split_by_episode_disjoint_and_deterministic():
    eps = np.arange(40)
    train, val = split_episodes(eps, 0.1, seed=0)
    assert len(val) == 4 and len(train) == 36
    assert not set(train) & set(val) and set(train) | set(val) == set(eps)
    t2, v2 = split_episodes(eps, 0.1, seed=0)
    assert np.array_equal(train, t2) and np.array_equal(val, v2)
    _, v3 = split_episodes(eps, 0.1, seed=1)
    assert not np.array_equal(val, v3)
    assert list(val) == sorted(val)
    # ceil: a small dataset still gets one validation episode
    assert len(split_episodes(np.arange(5), 0.1, seed=0)[1]) == 1


@pytest.mark.parametrize("n,fraction", [(1, 0.5), (4, 0.9), (10, 0.0), (10, 1.0)])
def test_split_that_leaves_a_side_empty_is_an_error(n, fraction):
    with pytest.raises(VisforeError, match="val-fraction"):
        split_episodes(np.arange(n), fraction, seed=0)


# -- short episodes: padding and masks ------------------------------------------------------
def test_padded_clip_of_a_short_episode(row_coded):
    """Episode 2 has 3 rows (2 actions): with C = 2, K = 5 it gives one clip whose frames
    repeat its last row, whose actions after the episode's last real action are 0, and
    whose mask marks the one real target."""
    ds, src = row_coded
    C, K = 2, 5
    clips = ClipDataset(src, [2], context=C, horizon=K, pad_short=True)
    assert len(clips) == 1 and clips.num_padded == 1 and clips.padded.tolist() == [True]
    s = int(ds.episode_starts[2])
    item = clips[0]
    rows = item["frames"][:, 0, 0, 0].numpy().astype(np.int64)
    assert rows.tolist() == [s, s + 1, s + 2] + [s + 2] * 4
    assert item["actions"][:, 0].tolist() == [s, s + 1, 0, 0, 0, 0]
    assert torch.isfinite(item["actions"]).all()
    assert item["mask"].dtype == torch.bool and item["mask"].tolist() == [True, False, False, False, False]
    assert torch.equal(clips.mask_for(0), item["mask"]) and torch.equal(clips.actions_for(0), item["actions"])
    # without padding the episode gives nothing (the earlier behaviour)
    assert len(ClipDataset(src, [2], context=C, horizon=K)) == 0


def test_padding_leaves_long_episodes_alone(row_coded):
    ds, src = row_coded
    C, K = 2, 6  # clip of 8 rows: episodes 0 (7 rows) and 2 (3 rows) are short
    plain = ClipDataset(src, range(ds.num_episodes), context=C, horizon=K)
    padded = ClipDataset(src, range(ds.num_episodes), context=C, horizon=K, pad_short=True)
    assert len(padded) == len(plain) + 2 and padded.num_padded == 2
    assert set(padded.episode_ids[padded.padded]) == {0, 2}
    full = padded[np.flatnonzero(~padded.padded)]
    ref = plain[np.arange(len(plain))]
    for key in ("frames", "actions", "start", "episode"):
        assert torch.equal(full[key], ref[key])
    assert full["mask"].all() and ref["mask"].all()
    batch = padded[np.flatnonzero(padded.padded)]
    # episode 0: 7 rows -> targets are rows 2..6 real, the 6th target (row 7) padding
    assert batch["mask"].sum(1).tolist() == [5, 1]
    # real target k of a padded clip is row start + C + k, as in an unpadded one
    tgt_rows = batch["frames"][:, C:, 0, 0, 0].numpy().astype(np.int64)
    start = batch["start"].numpy()
    m = batch["mask"].numpy()
    np.testing.assert_array_equal(tgt_rows[m], (start[:, None] + C + np.arange(K))[m])


def test_too_short_for_one_target_gives_nothing(row_coded):
    ds, src = row_coded
    # episode 2 has 3 rows: with C = 3 no target frame is real
    assert len(ClipDataset(src, [2], context=3, horizon=2, pad_short=True)) == 0
    starts, ids = clip_starts(ds.episode_starts, ds.episode_lengths, [2, 3], 20, min_length=3)
    assert ids.tolist() == [2, 3] and starts.tolist() == [int(ds.episode_starts[2]), int(ds.episode_starts[3])]
    with pytest.raises(ValueError, match="min_length"):
        clip_starts(ds.episode_starts, ds.episode_lengths, [2], 4, min_length=0)


def test_dataset_mean_frame(row_coded):
    ds, src = row_coded
    mean = dataset_mean_frame(src, [0, 2])
    rows = np.concatenate([np.arange(ds.episode_starts[e], ds.episode_ends[e]) for e in (0, 2)])
    assert mean.shape == (3, SIZE, SIZE) and mean.dtype == np.float32
    np.testing.assert_allclose(mean, rows.mean() / 255.0, rtol=1e-6)
    with pytest.raises(ValueError):
        dataset_mean_frame(src, [])
