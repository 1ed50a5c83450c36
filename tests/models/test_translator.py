"""visfore_models.translator: shapes, angle decoding across the wrap-around, memory
padding, (de)serialisation, seeded determinism, and learning on a tiny synthetic batch."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from visfore_models.translator import (
    FrameTranslator,
    angles_from_cos_sin,
    load_translator,
    translator_loss,
    translator_state,
    wrap_angle,
)

TINY = dict(channels=(4, 8), hidden=16, lstm_channels=4)


def _model(memory: int = 1, *, nq: int = 2, g: int = 4, size: int = 16, seed: int = 0) -> FrameTranslator:
    torch.manual_seed(seed)
    return FrameTranslator(num_joints=nq, num_keypoint_coords=g, image_size=size, memory=memory, **TINY)


@pytest.mark.parametrize("memory", [1, 3])
def test_output_shapes_for_one_frame_and_for_windows(memory):
    model = _model(memory, nq=3, g=6).eval()
    for frames in (torch.rand(5, 3, 16, 16), torch.rand(5, 2, 3, 16, 16), torch.rand(5, 4, 3, 16, 16)):
        out = model(frames)
        assert out["cos_sin"].shape == (5, 3, 2)
        assert out["qpos"].shape == (5, 3)
        assert out["keypoints_norm"].shape == (5, 6)
        assert out["keypoints"].shape == (5, 6)
        assert bool((out["qpos"].abs() <= math.pi).all())
        torch.testing.assert_close(out["qpos"], torch.atan2(out["cos_sin"][..., 1], out["cos_sin"][..., 0]))


def test_angle_decoding_handles_the_wrap_around():
    q = torch.tensor([-math.pi + 1e-4, -3.0, -1.0, 0.0, 2.0, 3.0, math.pi - 1e-4, math.pi])
    cs = torch.stack([torch.cos(q), torch.sin(q)], dim=-1)
    decoded = angles_from_cos_sin(cs)
    assert bool((decoded.abs() <= math.pi).all())
    # every angle comes back up to a whole turn (float32 pi may come back as -pi)
    torch.testing.assert_close(wrap_angle(decoded - q), torch.zeros_like(q), atol=1e-6, rtol=0)
    torch.testing.assert_close(decoded[1:-1], q[1:-1], atol=1e-6, rtol=0)
    # scale does not matter: only the direction of (c, s) is read
    torch.testing.assert_close(angles_from_cos_sin(3.7 * cs), decoded, atol=1e-6, rtol=0)
    # wrap_angle: a difference across the cut is small, not ~2 pi
    d = wrap_angle(torch.tensor(math.pi - 0.01) - torch.tensor(-math.pi + 0.01))
    assert abs(float(d) + 0.02) < 1e-5
    assert float(wrap_angle(torch.tensor(3 * math.pi))) == pytest.approx(-math.pi)


def test_angle_loss_is_small_across_the_cut_and_large_for_opposite_angles():
    model = _model()
    keypoints = torch.zeros(1, 4)

    def angle_loss(pred_q: float, true_q: float) -> float:
        pq = torch.tensor([[pred_q, pred_q]])
        out = {"cos_sin": torch.stack([torch.cos(pq), torch.sin(pq)], -1), "keypoints_norm": torch.zeros(1, 4)}
        return float(translator_loss(out, torch.tensor([[true_q, true_q]]), keypoints, model=model)["angle"])

    near = angle_loss(-math.pi + 0.01, math.pi - 0.01)  # 0.02 rad apart across the cut
    assert near == pytest.approx(1 - math.cos(0.02), rel=1e-3)  # mean over (c, s) of 2 - 2cos
    assert angle_loss(0.0, math.pi) == pytest.approx(2.0, rel=1e-6)
    assert near < 1e-3


def test_memory_pads_short_windows_with_the_first_frame_and_drops_old_frames():
    model = _model(memory=3).eval()
    frames = torch.rand(2, 2, 3, 16, 16)
    padded = torch.cat([frames[:, :1], frames], dim=1)
    torch.testing.assert_close(model(frames)["keypoints"], model(padded)["keypoints"])
    longer = torch.cat([torch.rand(2, 4, 3, 16, 16), padded], dim=1)
    torch.testing.assert_close(model(longer)["keypoints"], model(padded)["keypoints"])
    # memory 1 reads the last frame only
    single = _model(memory=1).eval()
    torch.testing.assert_close(single(frames)["qpos"], single(frames[:, -1])["qpos"])


def test_keypoint_stats_scale_the_output_and_survive_serialisation():
    model = _model().eval()
    x = torch.rand(3, 3, 16, 16)
    z = model(x)["keypoints_norm"]
    mean, std = np.array([0.1, -0.2, 0.3, 0.0]), np.array([0.05, 0.1, 2.0, 1e-6])
    model.set_keypoint_stats(mean, std)
    expected = z * torch.tensor([0.05, 0.1, 2.0, 1e-3]) + torch.tensor(mean, dtype=torch.float32)
    torch.testing.assert_close(model(x)["keypoints"], expected)  # std clamped at 1e-3
    state = translator_state(model)
    assert state["name"] == "frame_translator"
    clone = load_translator(state)
    assert not clone.training
    for key in ("qpos", "keypoints"):
        torch.testing.assert_close(clone(x)[key], model(x)[key], rtol=0, atol=0)


def test_same_seed_same_weights_and_outputs():
    x = torch.rand(2, 3, 16, 16)
    a, b, c = _model(seed=3).eval(), _model(seed=3).eval(), _model(seed=4).eval()
    assert torch.equal(a(x)["keypoints"], b(x)["keypoints"])
    assert not torch.equal(a(x)["keypoints"], c(x)["keypoints"])


def test_loss_falls_on_a_tiny_synthetic_batch():
    """A bright 2x2 square whose position is the key point and whose position angle is the
    joint: 80 Adam steps on 32 frames cut the loss by at least 5x."""
    rng = np.random.default_rng(0)
    n, size = 32, 16
    pos = rng.integers(0, size - 2, size=(n, 2))
    frames = torch.zeros(n, 3, size, size)
    for i, (r, c) in enumerate(pos):
        frames[i, :, r : r + 2, c : c + 2] = 1.0
    kp = torch.tensor((pos - size / 2) / 100.0, dtype=torch.float32)  # metres
    q = torch.atan2(kp[:, 1:2], kp[:, 0:1])
    model = _model(nq=1, g=2)
    model.set_keypoint_stats(kp.mean(0), kp.std(0))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(80):
        loss = translator_loss(model(frames), q, kp, model=model)["total"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0] / 5, (losses[0], losses[-1])


def test_bad_input_raises_one_line_value_errors():
    with pytest.raises(ValueError, match="divisible by 4"):
        FrameTranslator(num_joints=2, num_keypoint_coords=4, image_size=18, **TINY)
    with pytest.raises(ValueError, match="memory must be a positive int"):
        FrameTranslator(num_joints=2, num_keypoint_coords=4, image_size=16, memory=0, **TINY)
    model = _model()
    with pytest.raises(ValueError, match=r"expects frames \(B, 3, 16, 16\)"):
        model(torch.rand(2, 3, 32, 32))
    with pytest.raises(ValueError, match="float frames"):
        model(torch.zeros(2, 3, 16, 16, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        model.set_keypoint_stats([0.0] * 3, [1.0] * 3)
    with pytest.raises(ValueError, match="not a frame translator"):
        load_translator({"name": "convlstm", "config": {}, "state_dict": {}})
