"""Forward-model contract: shapes, open-loop rollout, time alignment, teacher forcing,
initial copy-last behaviour, errors, registry and (de)serialisation."""

from __future__ import annotations

import io
import json

import pytest
import torch

import visfore_models
from visfore_models import MODELS, ConvLSTMForwardModel, ForwardModel, build_model, load_model, model_state
from visfore_models.metrics import copy_last_frame_baseline, mse_per_step
from visfore_models_testutils import moving_square_clips

A = 2
H = 32


def make_model(seed: int = 0, image_size: int | tuple[int, int] = H, action_dim: int = A) -> ForwardModel:
    torch.manual_seed(seed)
    return build_model("convlstm", action_dim=action_dim, image_size=image_size).eval()


def make_inputs(
    B: int, C: int, K: int, hw: tuple[int, int] = (H, H), action_dim: int = A, seed: int = 1
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    context = torch.rand(B, C, 3, *hw, generator=g)
    actions = torch.rand(B, C + K - 1, action_dim, generator=g) * 2 - 1
    targets = torch.rand(B, K, 3, *hw, generator=g)
    return context, actions, targets


# ---------------------------------------------------------------------------- shapes
@pytest.mark.parametrize(
    ("B", "C", "K", "hw"),
    [(1, 1, 1, (32, 32)), (2, 2, 5, (32, 32)), (3, 3, 2, (64, 64)), (1, 2, 3, (128, 128)), (2, 1, 2, (32, 48))],
)
def test_output_shape_dtype_range(B: int, C: int, K: int, hw: tuple[int, int]) -> None:
    model = make_model(image_size=hw)
    context, actions, _ = make_inputs(B, C, K, hw)
    with torch.no_grad():
        out = model(context, actions)
    assert out.shape == (B, K, 3, *hw)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_any_horizon_at_inference_is_open_loop_prefix_consistent() -> None:
    model = make_model()
    context, actions, _ = make_inputs(2, 2, 12)
    with torch.no_grad():
        long = model(context, actions)  # K = 12
        short = model(context, actions[:, : 2 + 5 - 1])  # K = 5, same inputs
    assert long.shape[1] == 12 and short.shape[1] == 5
    torch.testing.assert_close(long[:, :5], short, rtol=0, atol=1e-6)


def test_samples_are_independent() -> None:
    """No batch statistics: a sample's prediction does not depend on the rest of the batch."""
    model = make_model()
    context, actions, _ = make_inputs(3, 2, 3)
    with torch.no_grad():
        full = model(context, actions)
        single = model(context[1:2], actions[1:2])
    torch.testing.assert_close(full[1:2], single, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------- alignment
def test_alignment_by_perturbation() -> None:
    """pred[:, 0] is o_C: depends on o_{C-1} and a_{C-1}, not on a_C; pred[:, 1] depends on a_C."""
    C, K = 2, 3
    model = make_model()
    context, actions, _ = make_inputs(2, C, K)
    with torch.no_grad():
        base = model(context, actions)

        ctx2 = context.clone()
        ctx2[:, C - 1] = torch.rand_like(ctx2[:, C - 1])
        out = model(ctx2, actions)
        assert (out[:, 0] - base[:, 0]).abs().max() > 1e-4, "o_{C-1} must influence the prediction of o_C"

        act2 = actions.clone()
        act2[:, C] += 0.7  # a_C: the action taken after o_C
        out = model(context, act2)
        torch.testing.assert_close(out[:, 0], base[:, 0], rtol=0, atol=0)
        assert (out[:, 1] - base[:, 1]).abs().max() > 1e-5, "a_C must influence the prediction of o_{C+1}"

        act3 = actions.clone()
        act3[:, C - 1] -= 0.7  # a_{C-1}: leads from o_{C-1} to o_C
        out = model(context, act3)
        assert (out[:, 0] - base[:, 0]).abs().max() > 1e-5, "a_{C-1} must influence the prediction of o_C"


def test_alignment_by_gradients() -> None:
    """Exact causal structure: d pred[:, k] / d a_j == 0 for j > C - 1 + k and != 0 for j = C - 1 + k;
    under full teacher forcing d pred[:, k] / d targets[:, j] == 0 for j >= k."""
    C, K = 2, 4
    model = make_model()
    context, actions, targets = make_inputs(1, C, K)
    actions.requires_grad_(True)
    targets.requires_grad_(True)
    context.requires_grad_(True)
    out = model(context, actions, targets, teacher_forcing_prob=1.0)
    for k in range(K):
        g_a, g_t, g_c = torch.autograd.grad(out[:, k].sum(), (actions, targets, context), retain_graph=True)
        per_action = g_a.abs().sum(dim=(0, 2))
        assert per_action[C - 1 + k] > 0, f"pred of o_{C + k} must depend on a_{C - 1 + k}"
        assert (per_action[C + k :] == 0).all(), f"pred of o_{C + k} depends on a future action"
        per_target = g_t.abs().sum(dim=(0, 2, 3, 4))
        assert (per_target[k:] == 0).all(), f"pred of o_{C + k} must not see o_{C + k} or later"
        if k > 0:
            assert per_target[k - 1] > 0, f"teacher-forced pred of o_{C + k} must use o_{C + k - 1}"
        assert g_c[:, C - 1].abs().sum() > 0


def test_open_loop_ignores_targets_by_default() -> None:
    model = make_model()
    context, actions, targets = make_inputs(2, 2, 4)
    with torch.no_grad():
        a = model(context, actions)
        b = model(context, actions, targets)  # prob 0.0: targets unused
        c = model(context, actions, targets, teacher_forcing_prob=0.0)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(a, c, rtol=0, atol=0)


def test_open_loop_feeds_back_predictions() -> None:
    """Open loop: step 1 equals a one-step prediction from context extended by the model's own
    step-0 prediction (not by any true frame)."""
    C = 2
    model = make_model()
    context, actions, _ = make_inputs(2, C, 3)
    with torch.no_grad():
        out = model(context, actions)
        extended = torch.cat([context, out[:, :1]], dim=1)
        again = model(extended, actions[:, : C + 1])
    torch.testing.assert_close(again[:, 0], out[:, 1], rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------- teacher forcing
def test_full_teacher_forcing_uses_targets() -> None:
    C, K = 2, 3
    model = make_model()
    context, actions, targets = make_inputs(2, C, K)
    with torch.no_grad():
        base = model(context, actions, targets, teacher_forcing_prob=1.0)
        t2 = targets.clone()
        t2[:, 0] = torch.rand_like(t2[:, 0])
        out = model(context, actions, t2, teacher_forcing_prob=1.0)
        torch.testing.assert_close(out[:, 0], base[:, 0], rtol=0, atol=0)
        assert (out[:, 1] - base[:, 1]).abs().max() > 1e-4
        # teacher-forced step k == one-step prediction from the context extended by true frames
        for k in range(K):
            ext = torch.cat([context, targets[:, :k]], dim=1)
            one = model(ext, actions[:, : C + k])
            torch.testing.assert_close(base[:, k], one[:, 0], rtol=1e-5, atol=1e-6)
        # and it differs from open loop from step 1 on
        open_loop = model(context, actions)
        assert (open_loop[:, 1] - base[:, 1]).abs().max() > 1e-4


def test_partial_teacher_forcing_is_per_sample_and_seeded() -> None:
    C, K, B = 1, 6, 8
    model = make_model()
    context, actions, targets = make_inputs(B, C, K)
    with torch.no_grad():
        open_loop = model(context, actions)
        forced = model(context, actions, targets, teacher_forcing_prob=1.0)
        torch.manual_seed(123)
        mixed = model(context, actions, targets, teacher_forcing_prob=0.5)
        torch.manual_seed(123)
        mixed_again = model(context, actions, targets, teacher_forcing_prob=0.5)
    torch.testing.assert_close(mixed, mixed_again, rtol=0, atol=0)
    torch.testing.assert_close(mixed[:, 0], open_loop[:, 0], rtol=0, atol=0)
    # step 1 of each sample is either the forced or the open-loop value, and both occur
    d_forced = (mixed[:, 1] - forced[:, 1]).flatten(1).abs().amax(1)
    d_open = (mixed[:, 1] - open_loop[:, 1]).flatten(1).abs().amax(1)
    assert torch.all((d_forced < 1e-6) | (d_open < 1e-6))
    later = (mixed[:, 1:] - forced[:, 1:]).flatten(2).abs().amax(2)  # (B, K-1)
    assert (later < 1e-6).any() and (later > 1e-6).any()


# ---------------------------------------------------------------------------- initialisation
def test_initial_model_is_close_to_copy_last_frame() -> None:
    C, K = 2, 4
    frames, actions = moving_square_clips(8, C + K, size=64, seed=3)
    model = make_model(image_size=64)
    with torch.no_grad():
        pred = model(frames[:, :C], actions)
    baseline = copy_last_frame_baseline(frames[:, :C], K)
    to_copy = mse_per_step(pred, baseline)
    copy_error = mse_per_step(baseline, frames[:, C:])
    assert to_copy[0] < 1e-4
    assert (to_copy < 1e-3).all()
    assert (to_copy < 0.1 * copy_error).all()


def test_all_parameters_receive_gradients() -> None:
    model = make_model().train()
    context, actions, targets = make_inputs(2, 2, 3)
    out = model(context, actions)
    ((out - targets) ** 2).mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reaches {name}"


# ---------------------------------------------------------------------------- determinism
def test_seeded_determinism() -> None:
    context, actions, _ = make_inputs(2, 2, 3)
    m1, m2, m3 = make_model(seed=7), make_model(seed=7), make_model(seed=8)
    with torch.no_grad():
        o1, o2, o3 = m1(context, actions), m2(context, actions), m3(context, actions)
    torch.testing.assert_close(o1, o2, rtol=0, atol=0)
    assert not torch.equal(o1, o3)


# ---------------------------------------------------------------------------- errors
BAD_INPUTS = [
    # (context shape, actions shape, targets shape or None, message fragment)
    ((2, 2, 3, 32), (2, 3, 2), None, "context must be a (B, C, 3, H, W) tensor"),
    ((2, 2, 1, 32, 32), (2, 3, 2), None, "3 (RGB) channels"),
    ((2, 2, 3, 64, 64), (2, 3, 2), None, "must be 32x32"),
    ((2, 2, 3, 32, 32), (2, 1, 2), None, "actions length must be >= C"),
    ((2, 2, 3, 32, 32), (2, 3, 3), None, "action_dim=2"),
    ((2, 2, 3, 32, 32), (3, 3, 2), None, "batch size"),
    ((2, 2, 3, 32, 32), (2, 3), None, "actions must be a (B, C + K - 1, A) tensor"),
    ((2, 2, 3, 32, 32), (2, 3, 2), (2, 3, 3, 32, 32), "targets must have shape (2, 2, 3, 32, 32)"),
]


@pytest.mark.parametrize(("cshape", "ashape", "tshape", "fragment"), BAD_INPUTS)
def test_bad_shapes_raise_value_error(
    cshape: tuple[int, ...], ashape: tuple[int, ...], tshape: tuple[int, ...] | None, fragment: str
) -> None:
    model = make_model()
    targets = None if tshape is None else torch.rand(tshape)
    with pytest.raises(ValueError) as info:
        model(torch.rand(cshape), torch.rand(ashape), targets)
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message


def test_bad_arguments_raise_value_error() -> None:
    model = make_model()
    context, actions, targets = make_inputs(1, 2, 2)
    with pytest.raises(ValueError, match="needs targets"):
        model(context, actions, teacher_forcing_prob=0.5)
    with pytest.raises(ValueError, match=r"teacher_forcing_prob must be in \[0, 1\]"):
        model(context, actions, targets, teacher_forcing_prob=1.5)
    with pytest.raises(ValueError, match="floating"):
        model((context * 255).to(torch.uint8), actions)
    with pytest.raises(ValueError, match="divisible by 4"):
        build_model("convlstm", action_dim=2, image_size=30)
    with pytest.raises(ValueError, match="action_dim"):
        build_model("convlstm", action_dim=0, image_size=32)


# ---------------------------------------------------------------------------- registry, state
def test_registry_and_unknown_name() -> None:
    assert MODELS == {"convlstm": ConvLSTMForwardModel}
    assert visfore_models.ConvLSTMForwardModel.name == "convlstm"
    with pytest.raises(ValueError) as info:
        build_model("x", action_dim=2, image_size=32)
    assert str(info.value) == "unknown model 'x'; valid: convlstm"


def test_config_rebuilds_same_architecture() -> None:
    model = build_model("convlstm", action_dim=3, image_size=(32, 48), lstm_channels=(16, 16), num_kernels=2)
    cfg = model.config()
    assert json.loads(json.dumps(cfg)) == cfg
    clone = type(model)(**cfg)
    assert clone.config() == cfg
    assert {k: v.shape for k, v in clone.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}


def test_load_model_roundtrip_reproduces_outputs() -> None:
    model = make_model(seed=3)
    with torch.no_grad():  # make it differ from a fresh init
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    state = model_state(model)
    assert set(state) == {"name", "config", "state_dict"} and state["name"] == "convlstm"
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    restored = load_model(torch.load(buf, weights_only=True))
    assert not restored.training
    context, actions, _ = make_inputs(2, 2, 4)
    with torch.no_grad():
        torch.testing.assert_close(restored(context, actions), model(context, actions), rtol=0, atol=0)
    with pytest.raises(ValueError, match="unknown model 'nope'; valid: convlstm"):
        load_model({**state, "name": "nope"})
    with pytest.raises(ValueError, match="lacks key"):
        load_model({"name": "convlstm"})


def test_parameter_count_is_small() -> None:
    n = build_model("convlstm", action_dim=2, image_size=64).num_parameters()
    assert 100_000 < n < 1_000_000


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_runs_on_cuda_like_on_cpu() -> None:  # pragma: no cover - needs a GPU
    model = make_model()
    context, actions, _ = make_inputs(2, 2, 3)
    with torch.no_grad():
        cpu = model(context, actions)
        gpu = model.to("cuda")(context.cuda(), actions.cuda())
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-3, atol=1e-4)
    with pytest.raises(ValueError, match="model is on"):
        model(context, actions)
