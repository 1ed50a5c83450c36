"""Forward-model contract, for every model of the registry: shapes, open-loop rollout, time
alignment, teacher forcing, initial copy-last behaviour (for the models that composite the
previous frame), errors, registry and (de)serialisation, autocast.

Stochastic models (``model.stochastic``: svg_lp, rssm) draw their latents from torch's global
RNG: every call goes through :func:`run`, which seeds torch first, so the comparisons below
use the same samples. Three properties cannot hold for them and are skipped there: a
sample's prediction depends on the batch it is drawn in (the noise is drawn per batch), and
extending the context by a frame changes the latents (SVG-LP infers the warm-up latents
with the posterior), so "open loop == one-step prediction from the extended context" fails.
Latent models (``model.latent``: rssm, jepa) feed back their latent prediction, not the
decoded frame, so that last property does not hold for them either (their own stepping
and leak tests are in test_latent_models.py).
"""

from __future__ import annotations

import io
import json

import pytest
import torch
from visfore_models_testutils import moving_square_clips

import visfore_models
from visfore_models import (
    MODELS,
    CDNAForwardModel,
    ConvLSTMForwardModel,
    DNAForwardModel,
    ForwardModel,
    FrameStackForwardModel,
    JEPAForwardModel,
    RNNDeconvForwardModel,
    RSSMForwardModel,
    SVGLPForwardModel,
    build_model,
    load_model,
    model_state,
)
from visfore_models.metrics import copy_last_frame_baseline, mse_per_step

A = 2
H = 32

#: small, fast configurations of every model (the defaults are checked in
#: test_parameter_count_is_small and tests/models/test_models_learning.py)
TINY: dict[str, dict] = {
    "convlstm": {"encoder_channels": [8, 8], "lstm_channels": [8], "decoder_channels": [8, 8], "num_kernels": 2},
    "rnn_deconv": {"channels": [8, 8, 8], "bottleneck_channels": 4, "latent_dim": 16, "hidden_size": 16},
    "cdna": {"lstm_channels": [4, 4, 8, 8, 8, 8, 4], "num_kernels": 2},
    "dna": {"lstm_channels": [4, 4, 8, 8, 8, 8, 4]},
    "framestack": {"channels": [8, 8, 8], "bottleneck_channels": 4, "latent_dim": 16, "hidden_size": 16},
    "svg_lp": {"channels": [8, 8, 8], "bottleneck_channels": 4, "g_dim": 16, "z_dim": 4, "rnn_size": 16},
    # free bits off here: at initialisation the KL is below 1 nat, where free bits (rightly)
    # stop the prior's gradient (test_all_parameters_receive_gradients); the floor itself is
    # tested in test_latent_models.py. 16 latents: a frame reaches the prediction only
    # through one-hot samples, and a new random frame flips at least one of 16 (30 of 30
    # seeds in the perturbation tests below) but not always one of 4 (24 of 30)
    "rssm": {"depth": 4, "deter": 16, "hidden": 16, "stoch": 16, "classes": 4, "embed_dim": 8, "free_nats": 0.0},
    "jepa": {"depth": 4, "embed_dim": 8, "deter": 16, "hidden": 16},
}
#: other non-default options, for the config round trip
OTHER: dict[str, dict] = {
    "convlstm": {"lstm_channels": [8, 8], "num_kernels": 0, "cdna_kernel_size": 3},
    "rnn_deconv": {"rnn_layers": 2, "latent_dim": 24},
    "cdna": {"num_kernels": 3, "kernel_size": 3, "generate_image": True, "lstm_kernel_size": 5},
    "dna": {"kernel_size": 3, "lstm_kernel_size": 5},
    "framestack": {"stack": 2, "core": "gru"},
    "svg_lp": {"predictor_layers": 1, "latent_layers": 2, "beta": 1e-3, "z_dim": 3},
    "rssm": {
        "stoch": 3,
        "classes": 5,
        "unimix": 0.0,
        "dyn_scale": 1.0,
        "free_nats": 0.5,
        "kl_scale": 2.0,
        "probe_dim": 3,
    },
    "jepa": {"momentum": 0.9, "sim_weight": 10.0, "var_weight": 5.0, "cov_weight": 0.5, "probe_dim": 3},
}
#: auxiliary loss terms after an eval-mode forward pass (none for the other models)
EVAL_AUX = {"svg_lp": {"kl"}, "rssm": {"kl", "embed"}}
#: and after a training-mode forward pass with targets
TRAIN_AUX = {
    "svg_lp": {"kl"},
    "rssm": {"kl", "embed"},
    "jepa": {"prediction", "variance", "covariance", "temporal_variance"},
}
#: models that composite (transformed copies of) the previous frame and start near copy-last
COPY_INIT = ("convlstm", "cdna", "dna")
#: the size constraint of each model
DIVISOR = {"convlstm": 4, "rnn_deconv": 8, "cdna": 8, "dna": 8, "framestack": 8, "svg_lp": 8, "rssm": 8, "jepa": 8}
NAMES = sorted(MODELS)


@pytest.fixture(params=NAMES)
def name(request: pytest.FixtureRequest) -> str:
    return request.param


def make_model(
    name: str = "convlstm",
    seed: int = 0,
    image_size: int | tuple[int, int] = H,
    action_dim: int = A,
    tiny: bool = True,
    **kwargs,
) -> ForwardModel:
    """A seeded model in eval mode: the TINY configuration (or the defaults) plus ``kwargs``."""
    torch.manual_seed(seed)
    options = {**(TINY[name] if tiny else {}), **kwargs}
    return build_model(name, action_dim=action_dim, image_size=image_size, **options).eval()


def run(model: ForwardModel, *args, seed: int = 0, **kwargs) -> torch.Tensor:
    """``model(*args, **kwargs)`` with torch seeded first (the same latent samples for a
    stochastic model in every call; no effect on a deterministic one)."""
    torch.manual_seed(seed)
    return model(*args, **kwargs)


def skip_if_stochastic(name: str, why: str) -> None:
    if MODELS[name].stochastic:
        pytest.skip(why)


def skip_if_latent(name: str, why: str) -> None:
    if MODELS[name].latent:
        pytest.skip(why)


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
    [
        (1, 1, 1, (32, 32)),
        (2, 2, 5, (32, 32)),
        (3, 3, 2, (64, 64)),
        (1, 2, 3, (128, 128)),
        (2, 1, 2, (32, 48)),
        (2, 2, 2, (16, 24)),
    ],
)
def test_output_shape_dtype_range(name: str, B: int, C: int, K: int, hw: tuple[int, int]) -> None:
    model = make_model(name, image_size=hw)
    context, actions, _ = make_inputs(B, C, K, hw)
    with torch.no_grad():
        out = run(model, context, actions)
    assert out.shape == (B, K, 3, *hw)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_any_horizon_at_inference_is_open_loop_prefix_consistent(name: str) -> None:
    model = make_model(name)
    context, actions, _ = make_inputs(2, 2, 12)
    with torch.no_grad():
        long = run(model, context, actions)  # K = 12
        short = run(model, context, actions[:, : 2 + 5 - 1])  # K = 5, same inputs
        short3 = run(model, context, actions[:, : 2 + 3 - 1])  # K = 3
        long6 = run(model, context, actions[:, : 2 + 6 - 1])  # K = 6
    assert long.shape[1] == 12 and short.shape[1] == 5
    torch.testing.assert_close(long[:, :5], short, rtol=0, atol=1e-6)
    torch.testing.assert_close(long6[:, :3], short3, rtol=0, atol=1e-6)


def test_samples_are_independent(name: str) -> None:
    """No batch statistics: a sample's prediction does not depend on the rest of the batch."""
    skip_if_stochastic(name, "latent noise is drawn per batch")
    model = make_model(name)
    context, actions, _ = make_inputs(3, 2, 3)
    with torch.no_grad():
        full = run(model, context, actions)
        single = run(model, context[1:2], actions[1:2])
    torch.testing.assert_close(full[1:2], single, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------- alignment
def test_alignment_by_perturbation(name: str) -> None:
    """pred[:, 0] is o_C: depends on o_{C-1} and a_{C-1}, not on a_C; pred[:, 1] depends on a_C."""
    C, K = 2, 3
    model = make_model(name)
    context, actions, _ = make_inputs(2, C, K)
    with torch.no_grad():
        base = run(model, context, actions)

        ctx2 = context.clone()
        ctx2[:, C - 1] = torch.rand_like(ctx2[:, C - 1])
        out = run(model, ctx2, actions)
        assert (out[:, 0] - base[:, 0]).abs().max() > 1e-4, "o_{C-1} must influence the prediction of o_C"

        act2 = actions.clone()
        act2[:, C] += 0.7  # a_C: the action taken after o_C
        out = run(model, context, act2)
        torch.testing.assert_close(out[:, 0], base[:, 0], rtol=0, atol=0)
        assert (out[:, 1] - base[:, 1]).abs().max() > 1e-5, "a_C must influence the prediction of o_{C+1}"

        act3 = actions.clone()
        act3[:, C - 1] -= 0.7  # a_{C-1}: leads from o_{C-1} to o_C
        out = run(model, context, act3)
        assert (out[:, 0] - base[:, 0]).abs().max() > 1e-5, "a_{C-1} must influence the prediction of o_C"


def test_alignment_by_gradients(name: str) -> None:
    """Exact causal structure: d pred[:, k] / d a_j == 0 for j > C - 1 + k and != 0 for j = C - 1 + k;
    under full teacher forcing d pred[:, k] / d targets[:, j] == 0 for j >= k (eval mode: a
    stochastic model samples from its prior)."""
    C, K = 2, 4
    model = make_model(name)
    context, actions, targets = make_inputs(1, C, K)
    actions.requires_grad_(True)
    targets.requires_grad_(True)
    context.requires_grad_(True)
    out = run(model, context, actions, targets, teacher_forcing_prob=1.0)
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


def test_open_loop_ignores_targets_by_default(name: str) -> None:
    model = make_model(name)
    context, actions, targets = make_inputs(2, 2, 4)
    with torch.no_grad():
        a = run(model, context, actions)
        b = run(model, context, actions, targets)  # prob 0.0: targets unused
        c = run(model, context, actions, targets, teacher_forcing_prob=0.0)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(a, c, rtol=0, atol=0)


def test_open_loop_feeds_back_predictions(name: str) -> None:
    """Open loop: step 1 equals a one-step prediction from context extended by the model's own
    step-0 prediction (not by any true frame)."""
    skip_if_stochastic(name, "the posterior infers the warm-up latents from the context, so extending it changes them")
    skip_if_latent(name, "a latent model feeds back its latent prediction, not the decoded frame")
    C = 2
    model = make_model(name)
    context, actions, _ = make_inputs(2, C, 3)
    with torch.no_grad():
        out = run(model, context, actions)
        extended = torch.cat([context, out[:, :1]], dim=1)
        again = run(model, extended, actions[:, : C + 1])
    torch.testing.assert_close(again[:, 0], out[:, 1], rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------- teacher forcing
def test_full_teacher_forcing_uses_targets(name: str) -> None:
    C, K = 2, 3
    model = make_model(name)
    context, actions, targets = make_inputs(2, C, K)
    with torch.no_grad():
        base = run(model, context, actions, targets, teacher_forcing_prob=1.0)
        t2 = targets.clone()
        t2[:, 0] = torch.rand_like(t2[:, 0])
        out = run(model, context, actions, t2, teacher_forcing_prob=1.0)
        torch.testing.assert_close(out[:, 0], base[:, 0], rtol=0, atol=0)
        assert (out[:, 1] - base[:, 1]).abs().max() > 1e-4
        # and it differs from open loop from step 1 on
        open_loop = run(model, context, actions)
        torch.testing.assert_close(open_loop[:, 0], base[:, 0], rtol=0, atol=0)
        assert (open_loop[:, 1] - base[:, 1]).abs().max() > 1e-4
        if not model.stochastic:
            # teacher-forced step k == one-step prediction from the context extended by true frames
            for k in range(K):
                ext = torch.cat([context, targets[:, :k]], dim=1)
                one = run(model, ext, actions[:, : C + k])
                torch.testing.assert_close(base[:, k], one[:, 0], rtol=1e-5, atol=1e-6)


def test_partial_teacher_forcing_is_per_sample_and_seeded(name: str) -> None:
    C, K, B = 1, 6, 8
    model = make_model(name)
    context, actions, targets = make_inputs(B, C, K)
    with torch.no_grad():
        open_loop = run(model, context, actions, seed=123)
        forced = run(model, context, actions, targets, teacher_forcing_prob=1.0, seed=123)
        mixed = run(model, context, actions, targets, teacher_forcing_prob=0.5, seed=123)
        mixed_again = run(model, context, actions, targets, teacher_forcing_prob=0.5, seed=123)
    torch.testing.assert_close(mixed, mixed_again, rtol=0, atol=0)
    torch.testing.assert_close(mixed[:, 0], open_loop[:, 0], rtol=0, atol=0)
    # step 1 of each sample is either the forced or the open-loop value, and both occur
    d_forced = (mixed[:, 1] - forced[:, 1]).flatten(1).abs().amax(1)
    d_open = (mixed[:, 1] - open_loop[:, 1]).flatten(1).abs().amax(1)
    assert torch.all((d_forced < 1e-6) | (d_open < 1e-6))
    assert (d_forced < 1e-6).any() and (d_open < 1e-6).any()
    later = (mixed[:, 1:] - forced[:, 1:]).flatten(2).abs().amax(2)  # (B, K-1)
    assert (later < 1e-6).any() and (later > 1e-6).any()


# ---------------------------------------------------------------------------- initialisation
@pytest.mark.parametrize("copy_name", COPY_INIT)
def test_initial_model_is_close_to_copy_last_frame(copy_name: str) -> None:
    C, K = 2, 4
    frames, actions = moving_square_clips(8, C + K, size=64, seed=3)
    model = make_model(copy_name, image_size=64, tiny=False)
    with torch.no_grad():
        pred = model(frames[:, :C], actions)
    baseline = copy_last_frame_baseline(frames[:, :C], K)
    to_copy = mse_per_step(pred, baseline)
    copy_error = mse_per_step(baseline, frames[:, C:])
    assert to_copy[0] < 1e-4
    assert (to_copy < 1e-3).all()
    assert (to_copy < 0.1 * copy_error).all()


def test_all_parameters_receive_gradients(name: str) -> None:
    """Training mode, loss = MSE + the auxiliary losses (for svg_lp and rssm the posterior
    needs the targets, the prior learns from the KL; jepa's latent losses need them beyond
    the context)."""
    model = make_model(name).train()
    context, actions, targets = make_inputs(2, 2, 3)
    out = run(model, context, actions, targets if model.stochastic or model.latent else None)
    loss = ((out - targets) ** 2).mean() + sum(model.auxiliary_losses().values())
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reaches {pname}"


def test_deterministic_models_have_no_auxiliary_losses(name: str) -> None:
    """Pixel models without latents have none; svg_lp and rssm give a KL, jepa its latent
    losses in training mode only."""
    model = make_model(name)
    assert isinstance(model.stochastic, bool) and isinstance(model.latent, bool)
    assert model.stochastic == (name in ("svg_lp", "rssm"))
    assert model.latent == (name in ("rssm", "jepa"))
    context, actions, targets = make_inputs(2, 1, 1)
    assert model.auxiliary_losses() == {}  # before any forward pass
    with torch.no_grad():
        run(model, context, actions)
    assert set(model.auxiliary_losses()) == EVAL_AUX.get(name, set())
    model.train()
    with torch.no_grad():
        run(model, context, actions, targets)
    aux = model.auxiliary_losses()
    assert set(aux) == TRAIN_AUX.get(name, set())
    assert all(v.dim() == 0 and v.dtype == torch.float32 and torch.isfinite(v) and v >= 0 for v in aux.values())


# ---------------------------------------------------------------------------- determinism
def test_seeded_determinism(name: str) -> None:
    context, actions, _ = make_inputs(2, 2, 3)
    m1, m2, m3 = make_model(name, seed=7), make_model(name, seed=7), make_model(name, seed=8)
    with torch.no_grad():
        o1, o2, o3 = run(m1, context, actions), run(m2, context, actions), run(m3, context, actions)
    torch.testing.assert_close(o1, o2, rtol=0, atol=0)
    assert not torch.equal(o1, o3)


def test_action_sensitivity(name: str) -> None:
    """Different action sequences give different predictions at every step."""
    model = make_model(name)
    context, actions, _ = make_inputs(2, 2, 4)
    other = make_inputs(2, 2, 4, seed=9)[1]
    with torch.no_grad():
        a, b = run(model, context, actions), run(model, context, other)
    assert ((a - b).flatten(2).abs().amax(2) > 1e-5).all()


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
    name: str, cshape: tuple[int, ...], ashape: tuple[int, ...], tshape: tuple[int, ...] | None, fragment: str
) -> None:
    model = make_model(name)
    targets = None if tshape is None else torch.rand(tshape)
    with pytest.raises(ValueError) as info:
        model(torch.rand(cshape), torch.rand(ashape), targets)
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message


def test_bad_arguments_raise_value_error(name: str) -> None:
    model = make_model(name)
    context, actions, targets = make_inputs(1, 2, 2)
    with pytest.raises(ValueError, match="needs targets"):
        model(context, actions, teacher_forcing_prob=0.5)
    with pytest.raises(ValueError, match=r"teacher_forcing_prob must be in \[0, 1\]"):
        model(context, actions, targets, teacher_forcing_prob=1.5)
    with pytest.raises(ValueError, match="floating"):
        model((context * 255).to(torch.uint8), actions)
    d = DIVISOR[name]
    for bad in (30, (32, 36) if d == 8 else (32, 34)):
        with pytest.raises(ValueError, match=f"divisible by {d}") as info:
            build_model(name, action_dim=2, image_size=bad)
        assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="action_dim"):
        build_model(name, action_dim=0, image_size=32)


@pytest.mark.parametrize(
    ("bad_name", "kwargs", "fragment"),
    [
        ("rnn_deconv", {"channels": [8, 8]}, "channels must be 3 positive ints"),
        ("rnn_deconv", {"rnn_layers": 0}, "rnn_layers must be a positive int"),
        ("cdna", {"lstm_channels": [8] * 6}, "lstm_channels must be 7 positive ints"),
        ("cdna", {"kernel_size": 4}, "kernel_size must be a positive odd int"),
        ("cdna", {"num_kernels": 0}, "num_kernels must be a positive int"),
        ("dna", {"kernel_size": 2}, "kernel_size must be a positive odd int"),
        ("framestack", {"core": "rnn"}, "core must be one of lstm, gru"),
        ("framestack", {"stack": 0}, "stack must be a positive int"),
        ("svg_lp", {"beta": -1.0}, "beta must be a non-negative number"),
        ("svg_lp", {"z_dim": 0}, "z_dim must be a positive int"),
    ],
)
def test_bad_options_raise_value_error(bad_name: str, kwargs: dict, fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        build_model(bad_name, action_dim=2, image_size=32, **kwargs)
    assert fragment in str(info.value) and "\n" not in str(info.value)


# ---------------------------------------------------------------------------- registry, state
def test_registry_and_unknown_name() -> None:
    assert MODELS == {
        "convlstm": ConvLSTMForwardModel,
        "rnn_deconv": RNNDeconvForwardModel,
        "cdna": CDNAForwardModel,
        "dna": DNAForwardModel,
        "framestack": FrameStackForwardModel,
        "svg_lp": SVGLPForwardModel,
        "rssm": RSSMForwardModel,
        "jepa": JEPAForwardModel,
    }
    for key, cls in MODELS.items():
        assert cls.name == key and getattr(visfore_models, cls.__name__) is cls
    assert [n for n, cls in MODELS.items() if cls.stochastic] == ["svg_lp", "rssm"]
    assert [n for n, cls in MODELS.items() if cls.latent] == ["rssm", "jepa"]
    with pytest.raises(ValueError) as info:
        build_model("x", action_dim=2, image_size=32)
    assert (
        str(info.value) == "unknown model 'x'; valid: cdna, convlstm, dna, framestack, jepa, rnn_deconv, rssm, svg_lp"
    )


def test_config_rebuilds_same_architecture(name: str) -> None:
    model = build_model(name, action_dim=3, image_size=(32, 48), **{**TINY[name], **OTHER[name]})
    cfg = model.config()
    assert json.loads(json.dumps(cfg)) == cfg
    for key, value in OTHER[name].items():
        assert cfg[key] == value
    clone = type(model)(**cfg)
    assert clone.config() == cfg
    assert {k: v.shape for k, v in clone.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    context, actions, _ = make_inputs(1, 2, 2, hw=(32, 48), action_dim=3)
    with torch.no_grad():
        out = run(model.eval(), context, actions)
    assert out.shape == (1, 2, 3, 32, 48) and 0.0 <= out.min() and out.max() <= 1.0


def test_load_model_roundtrip_reproduces_outputs(name: str) -> None:
    model = make_model(name, seed=3)
    with torch.no_grad():  # make it differ from a fresh init
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    state = model_state(model)
    assert set(state) == {"name", "config", "state_dict"} and state["name"] == name
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    restored = load_model(torch.load(buf, weights_only=True))
    assert not restored.training and type(restored) is type(model)
    context, actions, _ = make_inputs(2, 2, 4)
    with torch.no_grad():
        torch.testing.assert_close(run(restored, context, actions), run(model, context, actions), rtol=0, atol=0)
    with pytest.raises(ValueError, match="unknown model 'nope'; valid: cdna, convlstm"):
        load_model({**state, "name": "nope"})
    with pytest.raises(ValueError, match="lacks key"):
        load_model({"name": name})


def test_parameter_count_is_small(name: str) -> None:
    n = build_model(name, action_dim=2, image_size=64).num_parameters()
    print(f"{name}: {n} parameters at 64x64, A=2")
    assert 100_000 < n < 1_000_000


def test_autocast_bfloat16(name: str) -> None:
    """Forward and backward under CPU autocast (bfloat16) run, stay finite and in [0, 1]."""
    context, actions, targets = make_inputs(2, 2, 3, hw=(16, 16))
    model = make_model(name, image_size=16).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = run(model, context, actions, targets, teacher_forcing_prob=0.5)
        loss = ((out.float() - targets) ** 2).mean() + sum(model.auxiliary_losses().values())
    loss.backward()
    assert out.shape == (2, 3, 3, 16, 16)
    assert torch.isfinite(out).all() and out.min() >= 0.0 and out.max() <= 1.0
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_runs_on_cuda_like_on_cpu(name: str) -> None:  # pragma: no cover - needs a GPU
    model = make_model(name)
    context, actions, targets = make_inputs(2, 2, 3)
    with torch.no_grad():
        cpu = run(model, context, actions)
        gpu = run(model.to("cuda"), context.cuda(), actions.cuda())
        forced = run(model, context.cuda(), actions.cuda(), targets.cuda(), teacher_forcing_prob=0.5)
    assert gpu.device.type == "cuda" and forced.device.type == "cuda"
    if not model.stochastic:  # CPU and CUDA RNGs differ
        torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-3, atol=1e-4)
    with torch.autocast("cuda", dtype=torch.float16), torch.no_grad():
        half = run(model, context.cuda(), actions.cuda())
    assert torch.isfinite(half).all() and half.min() >= 0.0 and half.max() <= 1.0
    with pytest.raises(ValueError, match="model is on"):
        model(context, actions)
