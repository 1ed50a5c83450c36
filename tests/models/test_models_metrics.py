"""Per-horizon-step metrics against known values, torchmetrics and a reference SSIM."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from visfore_models import metrics as M


def clips(B: int = 3, K: int = 4, H: int = 32, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, K, 3, H, H, generator=g, dtype=dtype)


def test_identical_frames() -> None:
    x = clips()
    assert torch.equal(M.mse_per_step(x, x), torch.zeros(4, dtype=torch.float64))
    assert torch.equal(M.psnr_per_step(x, x), torch.full((4,), M.PSNR_MAX_DB, dtype=torch.float64))
    torch.testing.assert_close(M.ssim_per_step(x, x), torch.ones(4, dtype=torch.float64), rtol=0, atol=1e-6)


def test_constant_offset_is_20_db() -> None:
    target = 0.2 + 0.6 * clips(dtype=torch.float64)
    pred = target + 0.1  # MSE = 0.01 -> 10 log10(1 / 0.01) = 20 dB
    torch.testing.assert_close(M.mse_per_step(pred, target), torch.full((4,), 0.01, dtype=torch.float64))
    torch.testing.assert_close(M.psnr_per_step(pred, target), torch.full((4,), 20.0, dtype=torch.float64), rtol=0, atol=1e-9)
    # float32 inputs: the offset itself is rounded, so only ~1e-5 dB
    t32 = target.float()
    torch.testing.assert_close(
        M.psnr_per_step(t32 + 0.1, t32), torch.full((4,), 20.0, dtype=torch.float64), rtol=0, atol=1e-4
    )


def test_known_mse_and_psnr() -> None:
    pred = torch.zeros(2, 3, 3, 16, 16)
    target = torch.full_like(pred, 0.5)
    torch.testing.assert_close(M.mse_per_step(pred, target), torch.full((3,), 0.25, dtype=torch.float64))
    torch.testing.assert_close(M.psnr_per_step(pred, target), torch.full((3,), 10 * math.log10(4), dtype=torch.float64))


def test_shapes_and_per_step_is_mean_of_per_sample() -> None:
    pred, target = clips(seed=1), clips(seed=2)
    per_sample = M.per_sample_metrics(pred, target)
    per_step = M.per_step_metrics(pred, target)
    assert set(per_sample) == set(per_step) == {"mse", "psnr", "ssim"}
    for name in per_sample:
        assert per_sample[name].shape == (3, 4) and per_sample[name].dtype == torch.float64
        assert per_step[name].shape == (4,)
        torch.testing.assert_close(per_step[name], per_sample[name].mean(0))
    torch.testing.assert_close(per_sample["mse"], M.mse_per_sample(pred, target))
    torch.testing.assert_close(per_sample["psnr"], M.psnr_per_sample(pred, target))
    torch.testing.assert_close(per_sample["ssim"], M.ssim_per_sample(pred, target))


def test_psnr_is_averaged_per_frame_not_from_mean_mse() -> None:
    target = torch.zeros(2, 1, 3, 16, 16)
    pred = target.clone()
    pred[0] += 0.1  # 20 dB
    pred[1] += 0.01  # 40 dB
    assert M.psnr_per_step(pred, target).item() == pytest.approx(30.0, abs=1e-5)
    # (not 10 log10(1 / mean(0.01, 0.0001)) ~ 22.97 dB)


def test_per_step_values_are_per_horizon_step() -> None:
    target = torch.zeros(2, 3, 3, 16, 16)
    pred = target.clone()
    pred[:, 1] += 0.1
    pred[:, 2] += 0.2
    torch.testing.assert_close(
        M.mse_per_step(pred, target), torch.tensor([0.0, 0.01, 0.04], dtype=torch.float64), rtol=1e-6, atol=1e-8
    )


def test_psnr_agrees_with_torchmetrics() -> None:
    pred, target = clips(seed=3), clips(seed=4)
    ours = M.psnr_per_sample(pred, target)
    for b in range(pred.shape[0]):
        for k in range(pred.shape[1]):
            ref = peak_signal_noise_ratio(pred[b, k], target[b, k], data_range=1.0)
            assert ours[b, k].item() == pytest.approx(ref.item(), abs=1e-4)


def test_ssim_agrees_with_torchmetrics_per_step() -> None:
    target = clips(seed=5)
    pred = (target + 0.1 * clips(seed=6)).clamp(0, 1)
    ours = M.ssim_per_step(pred, target)
    for k in range(pred.shape[1]):
        ref = structural_similarity_index_measure(pred[:, k], target[:, k], data_range=1.0)
        assert isinstance(ref, torch.Tensor)
        assert ours[k].item() == pytest.approx(ref.item(), abs=1e-5)


def _reference_ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Independent SSIM (Wang et al. 2004): 11x11 Gaussian window, sigma 1.5, data range 1,
    k1 = 0.01, k2 = 0.03, per channel, on inputs reflect-padded by 5 px so the SSIM map is
    H x W, mean over channels and pixels. x, y: (N, 3, H, W) float64 -> (N,)."""
    coords = torch.arange(11, dtype=torch.float64) - 5
    g = torch.exp(-(coords**2) / (2 * 1.5**2))
    g = g / g.sum()
    w = (g[:, None] * g[None, :]).expand(3, 1, 11, 11)

    def blur(z: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(z, (5, 5, 5, 5), mode="reflect"), w, groups=3)

    c1, c2 = 0.01**2, 0.03**2
    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx**2
    syy = blur(y * y) - my**2
    sxy = blur(x * y) - mx * my
    ssim_map = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return ssim_map.mean(dim=(1, 2, 3))


def test_ssim_matches_stated_definition() -> None:
    target = clips(B=2, K=2, H=32, seed=7)
    pred = (0.8 * target + 0.2 * clips(B=2, K=2, H=32, seed=8)).clamp(0, 1)
    ours = M.ssim_per_sample(pred, target)
    ref = _reference_ssim(pred.flatten(0, 1).double(), target.flatten(0, 1).double()).reshape(2, 2)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5)
    assert (ours < 0.99).all()


def test_copy_last_frame_baseline() -> None:
    context = clips(B=2, K=3, seed=9)
    base = M.copy_last_frame_baseline(context, 5)
    assert base.shape == (2, 5, 3, 32, 32)
    for k in range(5):
        assert torch.equal(base[:, k], context[:, -1])
    base[:, 0] = 0  # a new tensor, not a view of the context
    assert not torch.equal(context[:, -1], torch.zeros_like(context[:, -1]))
    with pytest.raises(ValueError, match="K must be a positive int"):
        M.copy_last_frame_baseline(context, 0)
    with pytest.raises(ValueError, match="context must be"):
        M.copy_last_frame_baseline(context[0], 2)


@pytest.mark.parametrize(
    ("pshape", "tshape", "fragment"),
    [
        ((2, 3, 3, 16, 16), (2, 4, 3, 16, 16), "!= target shape"),
        ((2, 3, 16, 16), (2, 3, 16, 16), "must be (B, K, 3, H, W)"),
        ((2, 3, 1, 16, 16), (2, 3, 1, 16, 16), "must be (B, K, 3, H, W)"),
    ],
)
def test_bad_shapes_raise(pshape: tuple[int, ...], tshape: tuple[int, ...], fragment: str) -> None:
    for fn in (M.mse_per_step, M.psnr_per_step, M.ssim_per_step, M.mse_per_sample, M.per_step_metrics):
        with pytest.raises(ValueError) as info:
            fn(torch.rand(pshape), torch.rand(tshape))
        assert fragment in str(info.value)


def test_ssim_needs_frames_of_window_size() -> None:
    x = torch.rand(1, 1, 3, 8, 8)
    with pytest.raises(ValueError, match="at least 11x11"):
        M.ssim_per_step(x, x)


def test_metric_definitions_are_json_text() -> None:
    assert {"mse", "psnr", "ssim", "copy_last_frame"} <= set(M.METRIC_DEFINITIONS)
    assert json.loads(json.dumps(M.METRIC_DEFINITIONS)) == M.METRIC_DEFINITIONS
    assert "1.5" in M.METRIC_DEFINITIONS["ssim"] and "11" in M.METRIC_DEFINITIONS["ssim"]
    assert "data_range 1.0" in M.METRIC_DEFINITIONS["psnr"]
