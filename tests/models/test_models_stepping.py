"""The public stepping API of every forward model (ForwardModel.init_state / imagine /
decode): shapes, any horizon, batches of candidate sequences, determinism, and equality
with forward()."""

from __future__ import annotations

import pytest
import torch

from visfore_models import MODELS, ModelState, build_model

A, H, B, C = 2, 32, 3, 2


def _model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(name, action_dim=A, image_size=H).eval()


def _inputs(K: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    frames = torch.rand(B, C, 3, H, H, generator=g)
    past = torch.rand(B, C - 1, A, generator=g) * 2 - 1
    actions = torch.rand(B, K, A, generator=g) * 2 - 1
    return frames, past, actions


def _run(fn, *args):
    torch.manual_seed(123)  # stochastic models draw from the global RNG
    with torch.no_grad():
        return fn(*args)


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("K", [1, 4, 7])
def test_imagine_equals_forward_any_horizon(name: str, K: int) -> None:
    model = _model(name)
    frames, past, actions = _inputs(K)
    state = model.init_state(frames, past)
    assert isinstance(state, ModelState) and state.context == C and state.batch_size == B
    pred, new = _run(model.imagine, state, actions)
    expected = _run(model, frames, torch.cat([past, actions], dim=1))
    assert pred.shape == (B, K, 3, H, H) and pred.dtype == torch.float32
    assert torch.equal(pred, expected)
    assert float(pred.min()) >= 0.0 and float(pred.max()) <= 1.0
    # the new state is the window of the last C frames and the C - 1 actions between them
    window = torch.cat([frames, pred], dim=1)[:, -C:]
    assert torch.equal(new.frames, window) and torch.equal(new.actions, torch.cat([past, actions], 1)[:, -(C - 1) :])
    assert torch.equal(model.decode(new), pred[:, -1])


@pytest.mark.parametrize("name", sorted(MODELS))
def test_chained_imagine_continues_from_the_window(name: str) -> None:
    model = _model(name)
    frames, past, actions = _inputs(5)
    state = model.init_state(frames, past)
    first, state = _run(model.imagine, state, actions[:, :3])
    second, state = _run(model.imagine, state, actions[:, 3:])
    assert second.shape == (B, 2, 3, H, H)
    window = torch.cat([frames, first], dim=1)[:, -C:]
    acts = torch.cat([past, actions[:, :3]], dim=1)[:, -(C - 1) :]
    assert torch.equal(second, _run(model, window, torch.cat([acts, actions[:, 3:]], dim=1)))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_candidate_batches_and_determinism(name: str) -> None:
    model = _model(name)
    frames, past, _ = _inputs(1)
    N, K = 4, 3
    cand = torch.rand(B, N, K, A, generator=torch.Generator().manual_seed(7)) * 2 - 1
    state = model.init_state(frames, past)
    pred, new = _run(model.imagine, state, cand)
    assert pred.shape == (B, N, K, 3, H, H) and new.batch_size == B * N
    again, _ = _run(model.imagine, state, cand)
    assert torch.equal(pred, again)  # same seed, same prediction
    if not model.stochastic:  # a sample's prediction does not depend on its batch
        one = _run(model.imagine, model.init_state(frames[1:2], past[1:2]), cand[1, 2][None])[0]
        torch.testing.assert_close(pred[1, 2], one[0], rtol=1e-5, atol=1e-5)


def test_one_context_frame_needs_no_actions_and_bad_shapes_raise() -> None:
    model = _model("convlstm")
    frames = torch.rand(2, 1, 3, H, H)
    state = model.init_state(frames)
    pred, new = _run(model.imagine, state, torch.zeros(2, 2, A))
    assert pred.shape == (2, 2, 3, H, H) and new.actions.shape == (2, 0, A)
    with pytest.raises(ValueError, match="C - 1"):
        model.init_state(torch.rand(2, 2, 3, H, H), torch.zeros(2, 2, A))
    with pytest.raises(ValueError, match="needed"):
        model.init_state(torch.rand(2, 2, 3, H, H))
    with pytest.raises(ValueError):
        model.imagine(state, torch.zeros(2, A))
    with pytest.raises(ValueError, match="batch size"):
        model.imagine(state, torch.zeros(3, 4, 2, A))
