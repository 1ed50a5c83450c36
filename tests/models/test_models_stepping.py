"""The public stepping API of every forward model (ForwardModel.init_state / imagine /
decode / features / encode_goal): shapes, any horizon, batches of candidate sequences,
determinism, and equality with forward(). Pixel models keep a window of frames
(ModelState); latent models (rssm, jepa) a LatentState, whose own tests are also in
test_latent_models.py."""

from __future__ import annotations

import pytest
import torch

from visfore_models import MODELS, LatentState, ModelState, build_model

A, H, B, C = 2, 32, 3, 2
PIXEL = sorted(n for n, cls in MODELS.items() if not cls.latent)
LATENT = sorted(n for n, cls in MODELS.items() if cls.latent)


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


@pytest.mark.parametrize("name", PIXEL)
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


@pytest.mark.parametrize("name", LATENT)
@pytest.mark.parametrize("K", [1, 4, 7])
def test_latent_imagine_equals_forward_any_horizon(name: str, K: int) -> None:
    """A latent model's first imagine after init_state is forward() exactly, under one seed
    for both (init_state may draw from the RNG too: RSSM samples its posterior)."""
    model = _model(name)
    frames, past, actions = _inputs(K)
    torch.manual_seed(123)
    with torch.no_grad():
        state = model.init_state(frames, past)
        pred, new = model.imagine(state, actions)
    assert isinstance(state, LatentState) and state.batch_size == B
    assert state.deter.dim() == 2 and state.stoch.dim() == 2
    expected = _run(model, frames, torch.cat([past, actions], dim=1))
    assert pred.shape == (B, K, 3, H, H) and pred.dtype == torch.float32
    assert torch.equal(pred, expected)
    assert float(pred.min()) >= 0.0 and float(pred.max()) <= 1.0
    assert isinstance(new, LatentState) and new.batch_size == B
    torch.testing.assert_close(model.decode(new), pred[:, -1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", LATENT)
def test_chained_latent_imagine_continues_the_rollout(name: str) -> None:
    """A latent state carries the rollout: imagine(3) then imagine(2) == imagine(5) under one
    seed (the RNG draws per step are the same)."""
    model = _model(name)
    frames, past, actions = _inputs(5)
    state = _run(model.init_state, frames, past)
    torch.manual_seed(9)
    with torch.no_grad():
        first, mid = model.imagine(state, actions[:, :3])
        second, end = model.imagine(mid, actions[:, 3:])
    torch.manual_seed(9)
    with torch.no_grad():
        full, end_full = model.imagine(state, actions)
    torch.testing.assert_close(torch.cat([first, second], dim=1), full, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(end.deter, end_full.deter, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_features_and_goal_share_one_space(name: str) -> None:
    """imagine(decode=False) gives (B, [N,] K, F) features, F = feature_dim, equal to
    features() of the states stepped one at a time; encode_goal gives (B, F); a pixel
    model's features are its flattened frames."""
    model = _model(name)
    frames, past, actions = _inputs(3)
    state = _run(model.init_state, frames, past)
    F = model.feature_dim
    feats, new = _run(model.imagine, state, actions, False)
    assert feats.shape == (B, 3, F) and feats.dtype == torch.float32
    assert model.features(new).shape == (B, F)
    torch.testing.assert_close(model.features(new), feats[:, -1], rtol=1e-5, atol=1e-5)
    goal = model.encode_goal(frames[:, -1])
    assert goal.shape == (B, F) and goal.dtype == torch.float32
    N = 4
    cand = torch.rand(B, N, 3, A, generator=torch.Generator().manual_seed(2)) * 2 - 1
    feats_n, new_n = _run(model.imagine, state, cand, False)
    assert feats_n.shape == (B, N, 3, F) and new_n.batch_size == B * N
    if not model.latent:
        frames_out, _ = _run(model.imagine, state, actions)
        assert torch.equal(feats, frames_out.flatten(-3))
        assert torch.equal(goal, frames[:, -1].flatten(1))
        assert torch.equal(model.features(state), frames[:, -1].flatten(1))
    with pytest.raises(ValueError, match="frames must be a"):
        model.encode_goal(frames)
    model.after_optimizer_step()  # a no-op for every model but jepa, callable at any time


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("decode", [True, False])
def test_last_only_is_the_last_step_of_the_full_rollout(name: str, decode: bool) -> None:
    """imagine(last_only=True) returns (B, [N,] 1, ...): the last step of the full rollout
    under the same draws, and the same new state."""
    model = _model(name)
    frames, past, actions = _inputs(5)
    state = _run(model.init_state, frames, past)
    cand = torch.rand(B, 4, 5, A, generator=torch.Generator().manual_seed(3)) * 2 - 1
    for acts in (actions, cand):
        full, end_full = _run(model.imagine, state, acts, decode)
        last, end = _run(model.imagine, state, acts, decode, True)
        expected = full[..., -1:, :, :, :] if decode else full[..., -1:, :]  # step axis: -4 frames, -2 features
        assert last.shape == expected.shape and expected.shape[-4 if decode else -2] == 1
        torch.testing.assert_close(last, expected, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(model.features(end), model.features(end_full), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", PIXEL)
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
