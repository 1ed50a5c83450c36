"""Per-horizon-step metrics against known values, torchmetrics and a reference SSIM."""

from __future__ import annotations

import json
import math
import sys
import types
from pathlib import Path

import numpy as np
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
    torch.testing.assert_close(
        M.psnr_per_step(pred, target), torch.full((4,), 20.0, dtype=torch.float64), rtol=0, atol=1e-9
    )
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


# -- masks ------------------------------------------------------------------------------
def test_mask_excludes_padded_steps_exactly() -> None:
    target = clips(B=3, K=4, H=16, seed=10, dtype=torch.float64)
    pred = (target + 0.05 * clips(B=3, K=4, H=16, seed=11, dtype=torch.float64)).clamp(0, 1)
    pred[0, 2:] = 1.0 - target[0, 2:]  # padded frames: huge error that must not count
    pred[1, 3] = 0.0
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 0]], dtype=torch.bool)
    per_sample = M.per_sample_metrics(pred, target, mask)
    full = M.per_sample_metrics(pred, target)
    for name in ("mse", "psnr", "ssim"):
        assert torch.isnan(per_sample[name][~mask]).all()
        torch.testing.assert_close(per_sample[name][mask], full[name][mask])
    steps = M.per_step_metrics(pred, target, mask)
    # step 1 and 2: all clips; step 3: clips 1, 2 only; step 4: no valid clip -> NaN
    for name in ("mse", "psnr", "ssim"):
        v = full[name]
        torch.testing.assert_close(steps[name][:2], v[:, :2].mean(0))
        torch.testing.assert_close(steps[name][2], v[1:, 2].mean())
        assert math.isnan(steps[name][3].item())
    torch.testing.assert_close(M.mse_per_step(pred, target, mask), steps["mse"], equal_nan=True)
    torch.testing.assert_close(M.psnr_per_step(pred, target, mask), steps["psnr"], equal_nan=True)
    torch.testing.assert_close(M.ssim_per_step(pred, target, mask), steps["ssim"], equal_nan=True)
    # an all-True mask changes nothing
    for name, v in M.per_step_metrics(pred, target, torch.ones(3, 4, dtype=torch.bool)).items():
        torch.testing.assert_close(v, M.per_step_metrics(pred, target)[name])


def test_step_sum_count_ignores_invalid_nan_but_keeps_valid_nan() -> None:
    values = torch.tensor([[1.0, float("nan")], [3.0, 5.0]], dtype=torch.float64)
    s, c = M.step_sum_count(values, torch.tensor([[True, False], [True, True]]))
    assert s.tolist() == [4.0, 5.0] and c.tolist() == [2, 1]
    s, c = M.step_sum_count(values)  # a NaN of a valid entry is not hidden
    assert s[0].item() == 4.0 and math.isnan(s[1].item()) and c.tolist() == [2, 2]


def test_bad_mask_is_refused() -> None:
    x = clips(B=2, K=3, H=16)
    with pytest.raises(ValueError, match="mask must be a"):
        M.mse_per_step(x, x, torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask must be a"):
        M.psnr_per_sample(x, x, torch.ones(2, 3))  # not bool


# -- foreground PSNR ----------------------------------------------------------------------
def _moving_square(K: int = 3, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Context (1, 2, 3, H, W): a 4x4 white square at (2, 2) on grey 0.5; targets (1, K, ...):
    the square moved right by 2 px per step (at x = 4, 6, 8)."""
    frames = torch.full((1, 2 + K, 3, size, size), 0.5, dtype=torch.float64)
    for t in range(2 + K):
        x = 2 + 2 * max(0, t - 1)
        frames[0, t, :, 2:6, x : x + 4] = 1.0
    return frames[:, :2], frames[:, 2:]


def test_foreground_mask_on_a_moving_square() -> None:
    context, target = _moving_square()
    fg = M.foreground_mask(context, target)
    assert fg.shape == (1, 3, 16, 16) and fg.dtype == torch.bool
    for k in range(3):
        x = 4 + 2 * k  # square of o_0 covers columns 2..5, the target's x..x+3
        expected = torch.zeros(16, 16, dtype=torch.bool)
        expected[2:6, 2:6] = True
        expected[2:6, x : x + 4] = True
        expected[2:6, max(2, x) : 6] = False  # white in both frames: no change
        assert torch.equal(fg[0, k], expected), k
    # a change below the threshold is background
    assert not M.foreground_mask(context, context[:, :1] + 0.015).any()
    assert M.foreground_mask(context, context[:, :1] + 0.025).all()


def test_foreground_psnr_known_values() -> None:
    context, target = _moving_square()
    fg = M.foreground_mask(context, target)
    pred = target.clone()
    pred = torch.where(fg[:, :, None], pred - 0.1, pred)  # error 0.1 on the foreground only
    per = M.foreground_psnr_per_sample(pred, target, context)
    torch.testing.assert_close(per, torch.full((1, 3), 20.0, dtype=torch.float64), rtol=0, atol=1e-9)
    # full-frame PSNR is higher: the error covers only a fraction of the pixels
    frac = fg.double().mean(dim=(2, 3))
    torch.testing.assert_close(M.psnr_per_sample(pred, target), 20.0 - 10 * torch.log10(frac), rtol=0, atol=1e-9)
    # a perfect prediction hits the cap; a frame without foreground is NaN and excluded
    assert M.foreground_psnr_per_sample(target, target, context).eq(M.PSNR_MAX_DB).all()
    static_ctx = target[:, :1].expand(1, 2, 3, 16, 16)
    static_tgt = target[:, :1].expand(1, 3, 3, 16, 16)
    assert torch.isnan(M.foreground_psnr_per_sample(static_tgt, static_tgt, static_ctx)).all()
    both_pred = torch.cat([pred, static_tgt]).contiguous()
    both_tgt = torch.cat([target, static_tgt]).contiguous()
    both_ctx = torch.cat([context, static_ctx]).contiguous()
    step = M.foreground_psnr_per_step(both_pred, both_tgt, both_ctx)
    torch.testing.assert_close(step, torch.full((3,), 20.0, dtype=torch.float64), rtol=0, atol=1e-9)
    none = M.foreground_psnr_per_step(static_tgt, static_tgt, static_ctx)
    assert torch.isnan(none).all()
    # with a mask: step 3 of the moving clip is padding -> NaN there
    masked = M.foreground_psnr_per_step(pred, target, context, mask=torch.tensor([[True, True, False]]))
    assert masked[:2].tolist() == pytest.approx([20.0, 20.0]) and math.isnan(masked[2].item())
    with_fg = M.per_step_metrics(both_pred, both_tgt, context=both_ctx)
    torch.testing.assert_close(with_fg["foreground_psnr"], step)


# -- baselines ----------------------------------------------------------------------------
def test_mean_frame_baseline() -> None:
    mean = torch.full((3, 16, 16), 0.25)
    base = M.mean_frame_baseline(mean, 2, 3)
    assert base.shape == (2, 3, 3, 16, 16) and torch.equal(base[1, 2], mean)
    target = torch.full((2, 3, 3, 16, 16), 0.5)
    torch.testing.assert_close(
        M.psnr_per_step(base, target), torch.full((3,), 10 * math.log10(1 / 0.0625), dtype=torch.float64)
    )
    with pytest.raises(ValueError, match="mean_frame must be"):
        M.mean_frame_baseline(torch.zeros(16, 16), 1, 1)
    with pytest.raises(ValueError, match="K must be"):
        M.mean_frame_baseline(mean, 1, 0)


# -- action sensitivity -------------------------------------------------------------------
def test_derangement() -> None:
    for n in (2, 3, 10):
        p = M.derangement(n, seed=3)
        assert sorted(p.tolist()) == list(range(n)) and all(p[i] != i for i in range(n))
        assert np.array_equal(p, M.derangement(n, seed=3))
    assert M.derangement(1, 0).tolist() == [0] and M.derangement(0, 0).tolist() == []


def test_action_sensitivity_known_drop() -> None:
    """A 'model' whose frame is the value of its last action: exact with its own actions,
    off by |v_i - v_perm(i)| with shuffled ones."""
    values = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64)
    B, K = 3, 2
    target = values[:, None, None, None, None].expand(B, K, 3, 16, 16).clone()
    actions = values[:, None, None].expand(B, 2 + K - 1, 1).clone()

    def predict(a: torch.Tensor) -> torch.Tensor:
        return a[:, -1, 0][:, None, None, None, None].expand(B, K, 3, 16, 16)

    res = M.action_sensitivity(predict, actions, target, seed=0)
    perm = res["permutation"]
    assert all(perm[i] != i for i in range(B))
    expected_shuffled = (-10 * torch.log10((values - values[perm]) ** 2)).mean()
    torch.testing.assert_close(res["psnr"], torch.full((K,), 100.0, dtype=torch.float64))
    torch.testing.assert_close(res["psnr_shuffled"], expected_shuffled.expand(K))
    torch.testing.assert_close(res["psnr_drop_db"], 100.0 - expected_shuffled.expand(K))
    assert res["mean_psnr_drop_db"] == pytest.approx(float(100.0 - expected_shuffled))
    # a model that ignores its actions loses nothing; one clip cannot be shuffled
    ignore = M.action_sensitivity(lambda a: target, actions, target, seed=0)
    assert ignore["mean_psnr_drop_db"] == 0.0
    single = M.action_sensitivity(lambda a: predict(a)[:1], actions[:1], target[:1])
    assert single["permutation"].tolist() == [0] and single["mean_psnr_drop_db"] == 0.0


# -- best of N ----------------------------------------------------------------------------
def test_best_of_n_picks_the_best_sample_per_clip_not_per_frame() -> None:
    target = torch.full((2, 3, 3, 16, 16), 0.5, dtype=torch.float64)
    # offsets per (sample, clip, step): sample 0 is best at step 1 of clip 0, but sample 1
    # is best on average over the clip; clip 1: sample 2 everywhere
    offsets = torch.tensor(
        [
            [[0.01, 0.3, 0.3], [0.2, 0.2, 0.2]],
            [[0.05, 0.05, 0.05], [0.1, 0.1, 0.1]],
            [[0.2, 0.2, 0.2], [0.02, 0.02, 0.02]],
        ],
        dtype=torch.float64,
    )
    samples = target[None] + offsets[..., None, None, None]
    out = M.best_of_n_metrics(samples, target)
    mse = offsets**2  # (N, B, K)
    torch.testing.assert_close(out["mean_of_samples"]["mse"], mse.mean(0))
    torch.testing.assert_close(out["mean_of_samples"]["psnr"], (-10 * torch.log10(mse)).mean(0))
    assert out["best_index"]["psnr"].tolist() == [1, 2] and out["best_index"]["mse"].tolist() == [1, 2]
    torch.testing.assert_close(out["best_of_n"]["mse"], torch.stack([mse[1, 0], mse[2, 1]]))
    torch.testing.assert_close(out["best_of_n"]["psnr"], -10 * torch.log10(torch.stack([mse[1, 0], mse[2, 1]])))
    assert set(out["best_of_n"]) == {"mse", "psnr", "ssim"}
    # the best sample is never worse than the mean of the samples
    assert (out["best_of_n"]["psnr"].mean(1) >= out["mean_of_samples"]["psnr"].mean(1)).all()


def test_best_of_n_scores_valid_steps_only() -> None:
    target = torch.full((1, 2, 3, 16, 16), 0.5, dtype=torch.float64)
    offsets = torch.tensor([[[0.2, 0.0]], [[0.1, 0.4]]], dtype=torch.float64)  # (N=2, B=1, K=2)
    samples = target[None] + offsets[..., None, None, None]
    assert M.best_of_n_metrics(samples, target, ssim=False)["best_index"]["psnr"].tolist() == [0]
    masked = M.best_of_n_metrics(samples, target, torch.tensor([[True, False]]), ssim=False)
    assert masked["best_index"]["psnr"].tolist() == [1]  # step 2 is padding
    assert math.isnan(masked["best_of_n"]["psnr"][0, 1].item())
    assert masked["best_of_n"]["mse"][0, 0].item() == pytest.approx(0.01)
    with pytest.raises(ValueError, match="samples must be"):
        M.best_of_n_metrics(target, target)


# -- LPIPS (optional, never downloaded) ---------------------------------------------------
@pytest.fixture
def fresh_lpips_cache():
    M._load_lpips_cached.cache_clear()
    yield
    M._load_lpips_cached.cache_clear()


def test_lpips_skipped_without_the_package(monkeypatch, fresh_lpips_cache) -> None:
    monkeypatch.setitem(sys.modules, "lpips", None)  # import lpips -> ModuleNotFoundError
    x = clips(B=1, K=2, H=16)
    values, note = M.lpips_per_sample(x, x)
    assert values is None and note == "LPIPS skipped: package 'lpips' not installed"
    assert M.load_lpips() == (None, note)


def _fake_lpips(tmp_path: Path, with_linear: bool = True) -> types.ModuleType:
    """A stand-in ``lpips`` package: LPIPS(net=...) with an AlexNet-like trunk ``net.slice1``
    holding layer "0" (Conv2d 3->1, 1x1); distance = mean |f(x) - f(y)|."""
    pkg = tmp_path / "lpips"
    (pkg / "weights" / "v0.1").mkdir(parents=True)
    if with_linear:
        (pkg / "weights" / "v0.1" / "alex.pth").write_bytes(b"linear layers")
    mod = types.ModuleType("lpips")
    mod.__file__ = str(pkg / "__init__.py")
    mod.__version__ = "0.0-fake"

    class LPIPS(torch.nn.Module):
        def __init__(self, net: str = "alex", version: str = "0.1", pnet_rand: bool = False, verbose: bool = True):
            super().__init__()
            assert pnet_rand, "must not ask for pretrained (downloaded) trunk weights"
            self.net = torch.nn.Module()
            self.net.slice1 = torch.nn.Sequential()
            self.net.slice1.add_module("0", torch.nn.Conv2d(3, 1, 1))

        def forward(self, a: torch.Tensor, b: torch.Tensor, normalize: bool = False) -> torch.Tensor:
            if normalize:
                a, b = 2 * a - 1, 2 * b - 1
            return (self.net.slice1(a) - self.net.slice1(b)).abs().mean(dim=(1, 2, 3), keepdim=True)

    mod.LPIPS = LPIPS
    return mod


def test_lpips_needs_local_weights(monkeypatch, tmp_path: Path, fresh_lpips_cache) -> None:
    monkeypatch.setitem(sys.modules, "lpips", _fake_lpips(tmp_path))
    monkeypatch.setenv("VISFORE_LPIPS_ALEXNET", str(tmp_path / "missing-alexnet.pth"))
    x = clips(B=1, K=2, H=16)
    values, note = M.lpips_per_sample(x, x)
    assert values is None and note.startswith("LPIPS skipped: AlexNet weights not found at")
    assert "never downloaded" in note and "\n" not in note


def test_lpips_with_local_weights(monkeypatch, tmp_path: Path, fresh_lpips_cache) -> None:
    monkeypatch.setitem(sys.modules, "lpips", _fake_lpips(tmp_path))
    trunk = tmp_path / "alexnet.pth"
    torch.save({"features.0.weight": torch.ones(1, 3, 1, 1), "features.0.bias": torch.zeros(1)}, trunk)
    monkeypatch.setenv("VISFORE_LPIPS_ALEXNET", str(trunk))
    target = torch.full((2, 2, 3, 16, 16), 0.5)
    pred = target + 0.1
    values, note = M.lpips_per_sample(pred, target, torch.tensor([[True, True], [True, False]]))
    assert "LPIPS v0.1" in note and values is not None and values.shape == (2, 2)
    # trunk loaded from the file: 1x1 conv summing the 3 channels; inputs mapped to [-1, 1]
    assert values[0, 0].item() == pytest.approx(3 * 2 * 0.1, abs=1e-5) and math.isnan(values[1, 1].item())


def test_new_metric_definitions() -> None:
    for key in (
        "foreground_psnr",
        "mask",
        "mean_frame",
        "action_sensitivity",
        "shuffled_actions",
        "lpips",
        "mean_of_samples",
        "best_of_n",
    ):
        assert key in M.METRIC_DEFINITIONS, key
    assert "0.02" in M.METRIC_DEFINITIONS["foreground_psnr"]
    assert "o_0" in M.METRIC_DEFINITIONS["foreground_psnr"]
