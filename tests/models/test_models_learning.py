"""The convlstm model learns action-dependent motion: a short training run on a synthetic
moving-square data set (tests/models/visfore_models_testutils.py) lowers the loss and beats
the copy-last-frame baseline on held-out clips, rolled out open-loop."""

from __future__ import annotations

import pytest
import torch

from visfore_models import build_model
from visfore_models.metrics import copy_last_frame_baseline, mse_per_step, psnr_per_step
from visfore_models_testutils import moving_square_clips

C, K, SIZE = 2, 4, 32
STEPS, BATCH, LR = 60, 16, 3e-3


@pytest.mark.slow
def test_moving_square_loss_falls_and_beats_copy_last() -> None:
    train_frames, train_actions = moving_square_clips(512, C + K, size=SIZE, seed=0)
    test_frames, test_actions = moving_square_clips(64, C + K, size=SIZE, seed=1)
    test_ctx, test_tgt = test_frames[:, :C], test_frames[:, C:]

    torch.manual_seed(0)
    model = build_model("convlstm", action_dim=2, image_size=SIZE)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)

    def held_out_mse(actions: torch.Tensor) -> float:
        model.eval()
        with torch.no_grad():
            value = float(mse_per_step(model(test_ctx, actions), test_tgt).mean())
        model.train()
        return value

    before = held_out_mse(test_actions)
    g = torch.Generator().manual_seed(0)
    losses = []
    model.train()
    for _ in range(STEPS):
        idx = torch.randint(0, train_frames.shape[0], (BATCH,), generator=g)
        pred = model(train_frames[idx, :C], train_actions[idx])  # open-loop training
        loss = torch.mean((pred - train_frames[idx, C:]) ** 2)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    after = held_out_mse(test_actions)
    shuffled = held_out_mse(test_actions[torch.roll(torch.arange(64), 1)])

    model.eval()
    with torch.no_grad():
        pred = model(test_ctx, test_actions)
    psnr_model = psnr_per_step(pred, test_tgt)
    psnr_copy = psnr_per_step(copy_last_frame_baseline(test_ctx, K), test_tgt)
    print(
        f"train loss {sum(losses[:5]) / 5:.5f} -> {sum(losses[-5:]) / 5:.5f}; held-out MSE {before:.5f} -> "
        f"{after:.5f} (shuffled actions {shuffled:.5f}); PSNR model {psnr_model.tolist()} copy {psnr_copy.tolist()}"
    )
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5
    assert after < 0.8 * before
    assert after < shuffled, "the trained model should use the actions"
    assert psnr_model.mean() > psnr_copy.mean() + 1.0
    assert (psnr_model > psnr_copy).all()
